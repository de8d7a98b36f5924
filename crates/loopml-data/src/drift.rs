//! Dataset drift between a reference and a current file: per column, the method Evidently 0.7
//! would choose (or the one asked for), its score, threshold and verdict, and dataset drift when
//! the share of drifted columns reaches `drift_share` (0.5 by default), as Evidently decides it.
//! Each column also carries the data for a reference-vs-current distribution plot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::reader::BatchReader;
use crate::stats::{self, CategoryCount, ColumnKind, DriftMethod};

/// Integer columns with at most this many distinct values are categorical (Evidently's
/// `INTEGER_CARDINALITY_LIMIT`).
pub const INTEGER_CARDINALITY_LIMIT: usize = 10;
/// Bins of the numeric distribution plots.
pub const PLOT_BINS: usize = 20;
/// Categories shown in categorical plots.
pub const PLOT_CATEGORIES: usize = 20;

/// What to compute.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// Only these columns (default: every column of the reference).
    pub columns: Option<Vec<String>>,
    /// One method for every column (default: Evidently's choice per column).
    pub method: Option<DriftMethod>,
    /// Method per column, overriding `method`.
    pub per_column_method: HashMap<String, DriftMethod>,
    /// One threshold for every column (default: the method's).
    pub threshold: Option<f64>,
    /// Threshold per column.
    pub per_column_threshold: HashMap<String, f64>,
    /// Dataset drift when the share of drifted columns is at least this.
    pub drift_share: f64,
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            columns: None,
            method: None,
            per_column_method: HashMap::new(),
            threshold: None,
            per_column_threshold: HashMap::new(),
            drift_share: 0.5,
        }
    }
}

/// Data for one column's reference-vs-current plot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistributionPlot {
    /// Bar labels (bin ranges or category values).
    pub labels: Vec<String>,
    /// Share of reference values per bar.
    pub reference: Vec<f64>,
    /// Share of current values per bar.
    pub current: Vec<f64>,
}

/// One column's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    /// Column.
    pub column: String,
    /// `numerical` or `categorical`.
    pub kind: &'static str,
    /// Method name (`ks`, `wasserstein`, …).
    pub method: &'static str,
    /// Method as Evidently displays it ("K-S p_value", …).
    pub method_display: &'static str,
    /// The score: a p-value or a distance.
    pub score: f64,
    /// Whether `score` is a p-value.
    pub score_is_p_value: bool,
    /// Threshold it was judged against.
    pub threshold: f64,
    /// Verdict.
    pub drifted: bool,
    /// Reference values used (after dropping nulls, NaN and ±inf).
    pub reference_count: usize,
    /// Current values used.
    pub current_count: usize,
    /// Distinct values of reference and current together.
    pub distinct: usize,
    /// Plot data.
    pub plot: DistributionPlot,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// Reference file.
    pub reference: String,
    /// Current file.
    pub current: String,
    /// Rows of the reference.
    pub reference_rows: u64,
    /// Rows of the current data.
    pub current_rows: u64,
    /// Per column, in reference order.
    pub columns: Vec<ColumnDrift>,
    /// Columns not checked, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Drifted columns.
    pub drifted_columns: usize,
    /// Drifted share of checked columns.
    pub share: f64,
    /// Threshold on the share.
    pub drift_share: f64,
    /// Dataset drift (`share ≥ drift_share`).
    pub dataset_drift: bool,
}

/// Collected values of one column on one side.
#[derive(Debug, Default)]
struct Side {
    numbers: Vec<f64>,
    categories: HashMap<String, u64>,
    non_null: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Physical {
    Float,
    Integer,
    Text,
    Boolean,
    Other,
}

fn physical(t: &DataType) -> Physical {
    use DataType::*;
    match t {
        Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..)
        | Decimal256(..) => Physical::Float,
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => Physical::Integer,
        Utf8 | LargeUtf8 | Utf8View | Dictionary(..) => Physical::Text,
        Boolean => Physical::Boolean,
        _ => Physical::Other,
    }
}

/// Per column: its physical type and collected values.
type Collected = HashMap<String, (Physical, Side)>;

fn collect(path: &Path, wanted: &[String]) -> Result<(Collected, u64)> {
    let reader = BatchReader::open(path)?;
    let schema = reader.schema();
    let mut out: Collected = HashMap::new();
    let mut idx = Vec::new();
    for name in wanted {
        let Some((i, f)) = schema.column_with_name(name) else {
            return Err(Error::Invalid(format!(
                "{}: has no column '{name}' (columns: {})",
                path.display(),
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        idx.push((i, name.clone()));
        out.insert(name.clone(), (physical(f.data_type()), Side::default()));
    }
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        for (i, name) in &idx {
            let col = batch.column(*i);
            let Some((phys, side)) = out.get_mut(name) else {
                continue;
            };
            match phys {
                Physical::Float | Physical::Integer => {
                    let f = cast(col, &DataType::Float64).map_err(|e| {
                        Error::Invalid(format!("{}: column '{name}': {e}", path.display()))
                    })?;
                    for v in f.as_primitive::<Float64Type>().iter().flatten() {
                        side.non_null += 1;
                        if v.is_finite() {
                            side.numbers.push(v);
                        }
                    }
                }
                Physical::Text | Physical::Boolean => {
                    let s = cast(col, &DataType::Utf8).map_err(|e| {
                        Error::Invalid(format!("{}: column '{name}': {e}", path.display()))
                    })?;
                    for v in s.as_string::<i32>().iter().flatten() {
                        side.non_null += 1;
                        *side.categories.entry(v.to_string()).or_insert(0) += 1;
                    }
                }
                Physical::Other => {
                    side.non_null += (col.len() - col.null_count()) as u64;
                }
            }
        }
    }
    Ok((out, rows))
}

fn numeric_plot(r: &[f64], c: &[f64]) -> DistributionPlot {
    let lo = r.iter().chain(c).copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().chain(c).copied().fold(f64::NEG_INFINITY, f64::max);
    let edges = crate::profile::edges(lo, hi, PLOT_BINS);
    let bins = edges.len() - 1;
    let share = |xs: &[f64]| -> Vec<f64> {
        let mut counts = vec![0u64; bins];
        for &x in xs {
            counts[crate::profile::bin(x, lo, hi, bins)] += 1;
        }
        let n = xs.len().max(1) as f64;
        counts.iter().map(|&k| k as f64 / n).collect()
    };
    DistributionPlot {
        labels: edges
            .windows(2)
            .map(|w| format!("{}–{}", short_num(w[0]), short_num(w[1])))
            .collect(),
        reference: share(r),
        current: share(c),
    }
}

fn short_num(v: f64) -> String {
    if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn categorical_plot(keys: &[String], counts: &[CategoryCount]) -> DistributionPlot {
    let nr = counts.iter().map(|c| c.reference).sum::<u64>().max(1) as f64;
    let nc = counts.iter().map(|c| c.current).sum::<u64>().max(1) as f64;
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| {
        (counts[b].reference + counts[b].current)
            .cmp(&(counts[a].reference + counts[a].current))
            .then_with(|| keys[a].cmp(&keys[b]))
    });
    order.truncate(PLOT_CATEGORIES);
    DistributionPlot {
        labels: order.iter().map(|&i| keys[i].clone()).collect(),
        reference: order
            .iter()
            .map(|&i| counts[i].reference as f64 / nr)
            .collect(),
        current: order
            .iter()
            .map(|&i| counts[i].current as f64 / nc)
            .collect(),
    }
}

/// Computes the drift report of `current` against `reference` (CSV or Parquet files).
pub fn drift_files(reference: &Path, current: &Path, opts: &DriftOptions) -> Result<DriftReport> {
    if !(0.0..=1.0).contains(&opts.drift_share) {
        return Err(Error::Invalid(format!(
            "drift share must be between 0 and 1, got {}",
            opts.drift_share
        )));
    }
    let columns: Vec<String> = match &opts.columns {
        Some(c) if !c.is_empty() => c.clone(),
        _ => BatchReader::open(reference)?
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    };
    let (mut refs, reference_rows) = collect(reference, &columns)?;
    let (mut curs, current_rows) = collect(current, &columns)?;
    if reference_rows == 0 {
        return Err(Error::Invalid(format!(
            "{}: has no rows",
            reference.display()
        )));
    }
    if current_rows == 0 {
        return Err(Error::Invalid(format!(
            "{}: has no rows",
            current.display()
        )));
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for name in &columns {
        let (Some((rp, rs)), Some((cp, cs))) = (refs.remove(name), curs.remove(name)) else {
            continue;
        };
        let numeric_r = matches!(rp, Physical::Float | Physical::Integer);
        let numeric_c = matches!(cp, Physical::Float | Physical::Integer);
        if numeric_r != numeric_c {
            return Err(Error::Invalid(format!(
                "column '{name}' is {} in {} but {} in {}",
                if numeric_r { "numeric" } else { "text" },
                reference.display(),
                if numeric_c { "numeric" } else { "text" },
                current.display()
            )));
        }
        if rp == Physical::Other {
            skipped.push((name.clone(), "unsupported type".to_string()));
            continue;
        }
        let method_for = |kind: ColumnKind, n_ref: usize, n_unique: usize| {
            opts.per_column_method
                .get(name)
                .copied()
                .or(opts.method)
                .unwrap_or_else(|| stats::default_method(kind, n_ref, n_unique))
        };
        let threshold = opts
            .per_column_threshold
            .get(name)
            .copied()
            .or(opts.threshold);
        if numeric_r {
            let (r, c) = (&rs.numbers, &cs.numbers);
            if r.is_empty() || c.is_empty() {
                skipped.push((name.clone(), "no finite values on one side".to_string()));
                continue;
            }
            let mut distinct: HashSet<u64> = HashSet::new();
            for v in r.iter().chain(c) {
                distinct.insert((v + 0.0).to_bits());
            }
            let as_category =
                rp == Physical::Integer && distinct.len() <= INTEGER_CARDINALITY_LIMIT;
            let kind = if as_category {
                ColumnKind::Categorical
            } else {
                ColumnKind::Numerical
            };
            let method = method_for(kind, r.len(), distinct.len());
            let verdict = method
                .detect_numeric(r, c, threshold)
                .map_err(|e| Error::Invalid(format!("column '{name}': {e}")))?;
            out.push(ColumnDrift {
                column: name.clone(),
                kind: if as_category {
                    "categorical"
                } else {
                    "numerical"
                },
                method: method.name(),
                method_display: method.display_name(),
                score: verdict.score,
                score_is_p_value: method.is_p_value(),
                threshold: verdict.threshold,
                drifted: verdict.drifted,
                reference_count: r.len(),
                current_count: c.len(),
                distinct: distinct.len(),
                plot: numeric_plot(r, c),
            });
        } else {
            // Evidently treats a string column as text (not checked here) when more than half
            // of its values are distinct.
            let total_non_null = rs.non_null + cs.non_null;
            let mut all: BTreeMap<&str, CategoryCount> = BTreeMap::new();
            for (k, v) in &rs.categories {
                all.entry(k).or_default().reference = *v;
            }
            for (k, v) in &cs.categories {
                all.entry(k).or_default().current = *v;
            }
            if rp == Physical::Text && all.len() as u64 * 2 > total_non_null {
                skipped.push((
                    name.clone(),
                    "text column (more than half of its values are distinct): text drift is \
                     not computed"
                        .to_string(),
                ));
                continue;
            }
            if rs.non_null == 0 || cs.non_null == 0 {
                skipped.push((name.clone(), "no values on one side".to_string()));
                continue;
            }
            let keys: Vec<String> = all.keys().map(|k| (*k).to_string()).collect();
            let counts: Vec<CategoryCount> = all.values().copied().collect();
            let method = method_for(ColumnKind::Categorical, rs.non_null as usize, keys.len());
            if !method.supports(ColumnKind::Categorical) {
                return Err(Error::Invalid(format!(
                    "column '{name}' is categorical; method `{}` needs numbers",
                    method.name()
                )));
            }
            let verdict = method
                .detect_categorical(&counts, threshold)
                .map_err(|e| Error::Invalid(format!("column '{name}': {e}")))?;
            out.push(ColumnDrift {
                column: name.clone(),
                kind: "categorical",
                method: method.name(),
                method_display: method.display_name(),
                score: verdict.score,
                score_is_p_value: method.is_p_value(),
                threshold: verdict.threshold,
                drifted: verdict.drifted,
                reference_count: rs.non_null as usize,
                current_count: cs.non_null as usize,
                distinct: keys.len(),
                plot: categorical_plot(&keys, &counts),
            });
        }
    }
    let drifted = out.iter().filter(|c| c.drifted).count();
    let share = if out.is_empty() {
        0.0
    } else {
        drifted as f64 / out.len() as f64
    };
    Ok(DriftReport {
        reference: reference.display().to_string(),
        current: current.display().to_string(),
        reference_rows,
        current_rows,
        dataset_drift: !out.is_empty() && share >= opts.drift_share,
        columns: out,
        skipped,
        drifted_columns: drifted,
        share,
        drift_share: opts.drift_share,
    })
}

impl DriftReport {
    /// A table for terminals.
    pub fn summary(&self) -> String {
        let mut o = format!(
            "Drift of {} ({} rows) against {} ({} rows)\n\n{:<28} {:<12} {:<32} {:>12} {:>10}  {}\n",
            self.current,
            self.current_rows,
            self.reference,
            self.reference_rows,
            "column",
            "type",
            "method",
            "score",
            "threshold",
            "drift"
        );
        for c in &self.columns {
            o.push_str(&format!(
                "{:<28} {:<12} {:<32} {:>12.6} {:>10}  {}\n",
                c.column,
                c.kind,
                c.method_display,
                c.score,
                c.threshold,
                if c.drifted { "DRIFT" } else { "-" }
            ));
        }
        for (name, why) in &self.skipped {
            o.push_str(&format!("{name:<28} skipped: {why}\n"));
        }
        o.push_str(&format!(
            "\nDrifted columns: {} of {} (share {:.3}; dataset drift when ≥ {}): {}\n",
            self.drifted_columns,
            self.columns.len(),
            self.share,
            self.drift_share,
            if self.dataset_drift {
                "DATASET DRIFT"
            } else {
                "no dataset drift"
            }
        ));
        o
    }
}
