//! Column profiles computed streaming over Arrow record batches, so a file larger than memory
//! profiles in bounded memory: per column the type, counts, nulls, distinct values (exact up to
//! [`EXACT_DISTINCT_LIMIT`], HyperLogLog above), and for numbers min/max/mean/std, quantiles and a
//! histogram; for text and categories the top values and lengths.
//!
//! Numbers take two passes over the file: the first gathers moments, min/max and distinct values;
//! the second fills the histogram and, when a column has too many distinct values for exact
//! quantiles, a fine histogram ([`FINE_BINS`] bins) the quantiles are interpolated from.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::reader::BatchReader;

/// Distinct values counted exactly (and kept for exact quantiles and top values) per column.
pub const EXACT_DISTINCT_LIMIT: usize = 10_000;
/// Bins of the fine histogram approximate quantiles come from.
pub const FINE_BINS: usize = 4096;
/// Bins of the reported histogram.
pub const HISTOGRAM_BINS: usize = 20;
/// Quantile levels reported for numeric columns.
pub const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
/// Top values reported for categorical columns.
pub const TOP_VALUES: usize = 10;

/// How a column is profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Integers and floats.
    Numeric,
    /// Dates and timestamps (profiled on their integer representation, shown as dates).
    Temporal,
    /// Booleans.
    Boolean,
    /// Strings and dictionary-encoded values.
    Categorical,
    /// Anything else (lists, structs, binary): counts only.
    Other,
}

fn kind_of(t: &DataType) -> ColumnKind {
    use DataType::*;
    match t {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            ColumnKind::Numeric
        }
        Date32 | Date64 | Timestamp(..) | Time32(_) | Time64(_) | Duration(_) => {
            ColumnKind::Temporal
        }
        Boolean => ColumnKind::Boolean,
        Utf8 | LargeUtf8 | Utf8View | Dictionary(..) => ColumnKind::Categorical,
        _ => ColumnKind::Other,
    }
}

/// Equal-width histogram: `counts[i]` values in `[edges[i], edges[i+1])`, the last bin closed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bin edges (`counts.len() + 1` of them).
    pub edges: Vec<f64>,
    /// Values per bin.
    pub counts: Vec<u64>,
}

/// Statistics of a numeric (or temporal) column over its finite values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumericStats {
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (ddof = 1, as pandas); 0 for one value.
    pub std: f64,
    /// NaN values (not counted in the statistics).
    pub nan: u64,
    /// ±infinite values (not counted in the statistics).
    pub inf: u64,
    /// Zeros.
    pub zeros: u64,
    /// `(level, value)` for [`QUANTILES`] (numpy's linear interpolation).
    pub quantiles: Vec<(f64, f64)>,
    /// Whether the quantiles are exact (few distinct values) or interpolated from a fine
    /// histogram (error at most (max − min) / 4096).
    pub quantiles_exact: bool,
    /// Histogram over [min, max].
    pub histogram: Histogram,
    /// For temporal columns: min and max as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_text: Option<String>,
    /// For temporal columns: max as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_text: Option<String>,
}

/// Statistics of a categorical (text) or boolean column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategoricalStats {
    /// Most frequent values with their counts, most frequent first.
    pub top_values: Vec<(String, u64)>,
    /// Whether the counts are exact (they are unless the column has more distinct values than
    /// [`EXACT_DISTINCT_LIMIT`]; then they count only the first values seen).
    pub top_values_exact: bool,
    /// Shortest value, characters.
    pub min_length: Option<u64>,
    /// Longest value, characters.
    pub max_length: Option<u64>,
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnProfile {
    /// Column name.
    pub name: String,
    /// Arrow type.
    pub data_type: String,
    /// How it was profiled.
    pub kind: ColumnKind,
    /// Rows.
    pub count: u64,
    /// Null values.
    pub nulls: u64,
    /// Distinct non-null values.
    pub distinct: u64,
    /// Whether `distinct` is exact (else a HyperLogLog estimate, ~1% error).
    pub distinct_exact: bool,
    /// Numeric statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric: Option<NumericStats>,
    /// Categorical statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categorical: Option<CategoricalStats>,
}

/// The profile of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Rows.
    pub rows: u64,
    /// One profile per column, in file order.
    pub columns: Vec<ColumnProfile>,
}

// ------------------------------------------------------------------ HyperLogLog

/// A HyperLogLog sketch with 2^14 registers (~0.8% standard error), deterministic hashing.
#[derive(Debug, Clone)]
pub struct HyperLogLog {
    registers: Vec<u8>,
}

impl Default for HyperLogLog {
    fn default() -> Self {
        Self {
            registers: vec![0; 1 << 14],
        }
    }
}

impl HyperLogLog {
    /// Adds a value.
    pub fn insert<T: Hash + ?Sized>(&mut self, v: &T) {
        // DefaultHasher::new() uses fixed keys, so estimates are reproducible across runs.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.hash(&mut h);
        let x = h.finish();
        let idx = (x >> 50) as usize; // top 14 bits
        let rest = (x << 14) | (1 << 13);
        let rank = rest.leading_zeros() as u8 + 1;
        if let Some(r) = self.registers.get_mut(idx)
            && rank > *r
        {
            *r = rank;
        }
    }

    /// Estimated number of distinct values.
    pub fn estimate(&self) -> u64 {
        let m = self.registers.len() as f64;
        let sum: f64 = self
            .registers
            .iter()
            .map(|&r| 2f64.powi(-i32::from(r)))
            .sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&r| r == 0).count() as f64;
        let e = if raw <= 2.5 * m && zeros > 0.0 {
            m * (m / zeros).ln() // small-range correction (linear counting)
        } else {
            raw
        };
        e.round() as u64
    }
}

// ------------------------------------------------------------------ accumulators

/// Exact counts of up to `limit` distinct keys; past that, a HyperLogLog for the distinct count
/// and counts only for the keys already seen.
#[derive(Debug)]
struct Distinct<K: Hash + Eq> {
    counts: HashMap<K, u64>,
    overflow: Option<HyperLogLog>,
}

impl<K: Hash + Eq + Clone> Distinct<K> {
    fn new() -> Self {
        Self {
            counts: HashMap::new(),
            overflow: None,
        }
    }
    fn add(&mut self, k: K) {
        if let Some(c) = self.counts.get_mut(&k) {
            *c += 1;
        } else if self.counts.len() < EXACT_DISTINCT_LIMIT && self.overflow.is_none() {
            self.counts.insert(k.clone(), 1);
        } else if self.overflow.is_none() {
            let mut hll = HyperLogLog::default();
            for key in self.counts.keys() {
                hll.insert(key);
            }
            self.overflow = Some(hll);
        }
        if let Some(h) = self.overflow.as_mut() {
            h.insert(&k);
        }
    }
    fn distinct(&self) -> (u64, bool) {
        match &self.overflow {
            Some(h) => (h.estimate().max(self.counts.len() as u64), false),
            None => (self.counts.len() as u64, true),
        }
    }
}

#[derive(Debug)]
struct NumericAcc {
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    nan: u64,
    inf: u64,
    zeros: u64,
    distinct: Distinct<u64>,
    histogram: Vec<u64>,
    fine: Vec<u64>,
}

impl NumericAcc {
    fn new() -> Self {
        Self {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan: 0,
            inf: 0,
            zeros: 0,
            distinct: Distinct::new(),
            histogram: Vec::new(),
            fine: Vec::new(),
        }
    }

    fn first_pass(&mut self, v: f64) {
        if v.is_nan() {
            self.nan += 1;
            return;
        }
        if v.is_infinite() {
            self.inf += 1;
            return;
        }
        self.n += 1;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if v == 0.0 {
            self.zeros += 1;
        }
        // -0.0 and 0.0 are one value.
        self.distinct.add((v + 0.0).to_bits());
    }

    fn needs_fine(&self) -> bool {
        self.distinct.overflow.is_some()
    }

    fn second_pass(&mut self, v: f64) {
        if !v.is_finite() || self.n == 0 {
            return;
        }
        if self.histogram.is_empty() {
            self.histogram = vec![0; HISTOGRAM_BINS];
            if self.needs_fine() {
                self.fine = vec![0; FINE_BINS];
            }
        }
        self.histogram[bin(v, self.min, self.max, HISTOGRAM_BINS)] += 1;
        if !self.fine.is_empty() {
            self.fine[bin(v, self.min, self.max, FINE_BINS)] += 1;
        }
    }

    fn finish(mut self, temporal: Option<&DataType>) -> (Option<NumericStats>, u64, bool) {
        let (distinct, exact) = self.distinct.distinct();
        if self.n == 0 {
            return (None, distinct, exact);
        }
        let quantiles_exact = !self.needs_fine();
        let quantiles = if quantiles_exact {
            let mut values: Vec<(f64, u64)> = self
                .distinct
                .counts
                .iter()
                .map(|(bits, c)| (f64::from_bits(*bits), *c))
                .collect();
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            QUANTILES
                .iter()
                .map(|&q| (q, exact_quantile(&values, self.n, q)))
                .collect()
        } else {
            QUANTILES
                .iter()
                .map(|&q| {
                    (
                        q,
                        histogram_quantile(&self.fine, self.min, self.max, self.n, q),
                    )
                })
                .collect()
        };
        if self.histogram.is_empty() {
            self.histogram = vec![0; HISTOGRAM_BINS];
        }
        let edges = edges(self.min, self.max, HISTOGRAM_BINS);
        let (min_text, max_text) = match temporal {
            Some(t) => (temporal_text(self.min, t), temporal_text(self.max, t)),
            None => (None, None),
        };
        let stats = NumericStats {
            min: self.min,
            max: self.max,
            mean: self.mean,
            std: if self.n > 1 {
                (self.m2 / (self.n - 1) as f64).sqrt()
            } else {
                0.0
            },
            nan: self.nan,
            inf: self.inf,
            zeros: self.zeros,
            quantiles,
            quantiles_exact,
            histogram: Histogram {
                edges,
                counts: self.histogram,
            },
            min_text,
            max_text,
        };
        (Some(stats), distinct, exact)
    }
}

/// Bin index of `v` among `bins` equal-width bins over [lo, hi] (the last bin closed).
pub fn bin(v: f64, lo: f64, hi: f64, bins: usize) -> usize {
    if hi <= lo || bins == 0 {
        return 0;
    }
    let i = ((v - lo) / (hi - lo) * bins as f64) as usize;
    i.min(bins - 1)
}

/// `bins + 1` equal-width edges over [lo, hi] (one bin of width 1 around a constant).
pub fn edges(lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    if hi <= lo {
        return vec![lo - 0.5, lo + 0.5];
    }
    (0..=bins)
        .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
        .collect()
}

/// numpy's default ("linear") quantile from sorted distinct values with counts.
fn exact_quantile(values: &[(f64, u64)], n: u64, q: f64) -> f64 {
    let h = (n - 1) as f64 * q;
    let lo = h.floor() as u64;
    let frac = h - lo as f64;
    let at = |rank: u64| -> f64 {
        let mut seen = 0u64;
        for (v, c) in values {
            seen += c;
            if rank < seen {
                return *v;
            }
        }
        values.last().map_or(f64::NAN, |v| v.0)
    };
    let a = at(lo);
    if frac == 0.0 {
        a
    } else {
        a + frac * (at(lo + 1) - a)
    }
}

/// Quantile interpolated linearly inside the fine-histogram bin that holds it.
fn histogram_quantile(fine: &[u64], lo: f64, hi: f64, n: u64, q: f64) -> f64 {
    let target = q * (n - 1) as f64;
    let width = (hi - lo) / fine.len() as f64;
    let mut seen = 0f64;
    for (i, &c) in fine.iter().enumerate() {
        let c = c as f64;
        if c > 0.0 && seen + c > target {
            let within = (target - seen + 0.5) / c;
            return (lo + width * (i as f64 + within.clamp(0.0, 1.0))).clamp(lo, hi);
        }
        seen += c;
    }
    hi
}

fn temporal_text(v: f64, t: &DataType) -> Option<String> {
    let raw = arrow::array::Int64Array::from(vec![v as i64]);
    let typed = cast(&raw, t).ok()?;
    let text = cast(&typed, &DataType::Utf8).ok()?;
    let s = text.as_string_opt::<i32>()?;
    (!s.is_null(0)).then(|| s.value(0).to_string())
}

#[derive(Debug)]
struct CategoricalAcc {
    distinct: Distinct<String>,
    min_len: Option<u64>,
    max_len: Option<u64>,
}

impl CategoricalAcc {
    fn add(&mut self, s: &str) {
        let len = s.chars().count() as u64;
        self.min_len = Some(self.min_len.map_or(len, |m| m.min(len)));
        self.max_len = Some(self.max_len.map_or(len, |m| m.max(len)));
        self.distinct.add(s.to_string());
    }

    fn finish(self) -> (CategoricalStats, u64, bool) {
        let (distinct, exact) = self.distinct.distinct();
        let mut top: Vec<(String, u64)> = self.distinct.counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(TOP_VALUES);
        (
            CategoricalStats {
                top_values: top,
                top_values_exact: exact,
                min_length: self.min_len,
                max_length: self.max_len,
            },
            distinct,
            exact,
        )
    }
}

enum Acc {
    Numeric(NumericAcc),
    Categorical(CategoricalAcc),
    Other,
}

struct ColumnAcc {
    name: String,
    data_type: DataType,
    kind: ColumnKind,
    count: u64,
    nulls: u64,
    acc: Acc,
}

fn as_f64(col: &ArrayRef, kind: ColumnKind) -> Result<ArrayRef> {
    let via = if kind == ColumnKind::Temporal {
        cast(col, &DataType::Int64).and_then(|c| cast(&c, &DataType::Float64))
    } else {
        cast(col, &DataType::Float64)
    };
    via.map_err(|e| Error::Invalid(format!("cannot read values as numbers: {e}")))
}

impl ColumnAcc {
    fn first_pass(&mut self, col: &ArrayRef) -> Result<()> {
        self.count += col.len() as u64;
        self.nulls += col.null_count() as u64;
        match &mut self.acc {
            Acc::Numeric(a) => {
                let values = as_f64(col, self.kind)?;
                for v in values.as_primitive::<Float64Type>().iter().flatten() {
                    a.first_pass(v);
                }
            }
            Acc::Categorical(a) => {
                let text = cast(col, &DataType::Utf8)
                    .map_err(|e| Error::Invalid(format!("column '{}': {e}", self.name)))?;
                for s in text.as_string::<i32>().iter().flatten() {
                    a.add(s);
                }
            }
            Acc::Other => {}
        }
        Ok(())
    }

    fn second_pass(&mut self, col: &ArrayRef) -> Result<()> {
        if let Acc::Numeric(a) = &mut self.acc {
            let values = as_f64(col, self.kind)?;
            for v in values.as_primitive::<Float64Type>().iter().flatten() {
                a.second_pass(v);
            }
        }
        Ok(())
    }

    fn finish(self) -> ColumnProfile {
        let temporal = (self.kind == ColumnKind::Temporal).then_some(&self.data_type);
        let (numeric, categorical, distinct, distinct_exact) = match self.acc {
            Acc::Numeric(a) => {
                let (n, d, e) = a.finish(temporal);
                (n, None, d, e)
            }
            Acc::Categorical(a) => {
                let (c, d, e) = a.finish();
                (None, Some(c), d, e)
            }
            Acc::Other => (None, None, 0, false),
        };
        ColumnProfile {
            name: self.name,
            data_type: self.data_type.to_string(),
            kind: self.kind,
            count: self.count,
            nulls: self.nulls,
            distinct,
            distinct_exact,
            numeric,
            categorical,
        }
    }
}

/// Profiles a CSV or Parquet file in two streaming passes.
pub fn profile_file(path: &Path) -> Result<Profile> {
    let reader = BatchReader::open(path)?;
    let schema = reader.schema();
    let mut accs: Vec<ColumnAcc> = schema
        .fields()
        .iter()
        .map(|f| {
            let kind = kind_of(f.data_type());
            let acc = match kind {
                ColumnKind::Numeric | ColumnKind::Temporal => Acc::Numeric(NumericAcc::new()),
                ColumnKind::Categorical | ColumnKind::Boolean => Acc::Categorical(CategoricalAcc {
                    distinct: Distinct::new(),
                    min_len: None,
                    max_len: None,
                }),
                ColumnKind::Other => Acc::Other,
            };
            ColumnAcc {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                kind,
                count: 0,
                nulls: 0,
                acc,
            }
        })
        .collect();
    let mut rows = 0u64;
    for batch in reader {
        let batch: RecordBatch = batch?;
        rows += batch.num_rows() as u64;
        for (acc, col) in accs.iter_mut().zip(batch.columns()) {
            acc.first_pass(col).map_err(|e| {
                Error::Invalid(format!("{}: column '{}': {e}", path.display(), acc.name))
            })?;
        }
    }
    if accs.iter().any(|a| matches!(a.acc, Acc::Numeric(_))) {
        for batch in BatchReader::open(path)? {
            let batch = batch?;
            for (acc, col) in accs.iter_mut().zip(batch.columns()) {
                acc.second_pass(col)?;
            }
        }
    }
    Ok(Profile {
        rows,
        columns: accs.into_iter().map(ColumnAcc::finish).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn profiles_numbers_text_and_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a.csv",
            "x,city,flag\n1,Paris,true\n2,Berlin,false\n3,Paris,true\n4,,true\n,Rome,false\n",
        );
        let prof = profile_file(&p).unwrap();
        assert_eq!(prof.rows, 5);
        let x = &prof.columns[0];
        assert_eq!(
            (x.kind, x.count, x.nulls, x.distinct),
            (ColumnKind::Numeric, 5, 1, 4)
        );
        let n = x.numeric.as_ref().unwrap();
        assert_eq!((n.min, n.max, n.mean), (1.0, 4.0, 2.5));
        assert!((n.std - 1.2909944487358056).abs() < 1e-12); // pandas: Series([1,2,3,4]).std()
        assert!(n.quantiles_exact);
        assert_eq!(n.quantiles[3], (0.5, 2.5)); // numpy.quantile([1,2,3,4], .5)
        assert_eq!(n.quantiles[2], (0.25, 1.75));
        assert_eq!(n.histogram.counts.iter().sum::<u64>(), 4);
        let city = &prof.columns[1];
        assert_eq!(
            (city.kind, city.nulls, city.distinct),
            (ColumnKind::Categorical, 1, 3)
        );
        let c = city.categorical.as_ref().unwrap();
        assert_eq!(c.top_values[0], ("Paris".to_string(), 2));
        assert_eq!((c.min_length, c.max_length), (Some(4), Some(6)));
        assert_eq!(prof.columns[2].kind, ColumnKind::Boolean);
    }

    #[test]
    fn many_distinct_values_switch_to_sketches() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = String::from("v,s\n");
        for i in 0..50_000 {
            body.push_str(&format!("{i},k{i}\n"));
        }
        let prof = profile_file(&write(dir.path(), "big.csv", &body)).unwrap();
        let v = &prof.columns[0];
        assert!(!v.distinct_exact);
        let err = (v.distinct as f64 - 50_000.0).abs() / 50_000.0;
        assert!(err < 0.03, "HLL estimate {} off by {err}", v.distinct);
        let n = v.numeric.as_ref().unwrap();
        assert!(!n.quantiles_exact);
        // numpy.quantile(range(50000), .5) = 24999.5; the fine histogram is within 50000/4096.
        assert!(
            (n.quantiles[3].1 - 24_999.5).abs() < 50_000.0 / 4096.0,
            "{:?}",
            n.quantiles
        );
        assert!(!prof.columns[1].distinct_exact);
    }

    #[test]
    fn hll_is_accurate_and_deterministic() {
        let mut h = HyperLogLog::default();
        for i in 0..200_000u64 {
            h.insert(&i);
        }
        let e = h.estimate() as f64;
        assert!((e - 200_000.0).abs() / 200_000.0 < 0.02, "{e}");
        let mut h2 = HyperLogLog::default();
        for i in 0..200_000u64 {
            h2.insert(&i);
        }
        assert_eq!(h.estimate(), h2.estimate());
    }
}
