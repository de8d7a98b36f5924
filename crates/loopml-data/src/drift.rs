//! Dataset drift between a reference and a current file: per column, the method Evidently 0.7
//! would choose (or the one asked for), its score, threshold and verdict, and dataset drift when
//! the share of drifted columns reaches `drift_share` (0.5 by default), as Evidently decides it.
//! Each column also carries the data for a reference-vs-current distribution plot.

use std::collections::{BTreeMap, HashMap};
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
    /// Parquet columns are read in groups whose values fit in this many bytes.
    pub memory_budget_bytes: u64,
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
            memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
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
    /// Finite values, -0.0 folded into 0.0; sorted once collected.
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

impl Physical {
    fn is_numeric(self) -> bool {
        matches!(self, Physical::Float | Physical::Integer)
    }
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

/// Reads `wanted` columns of one file (only those are decoded from Parquet) and returns, in the
/// order of `wanted`, each column's values, plus the file's row count.
fn collect(path: &Path, wanted: &[(String, Physical)]) -> Result<(Vec<Side>, u64)> {
    let names: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
    let reader = BatchReader::open_columns(path, &names)?;
    let schema = reader.schema();
    let mut idx = Vec::with_capacity(wanted.len());
    for name in &names {
        let Some((i, _)) = schema.column_with_name(name) else {
            return Err(crate::reader::missing_column(path, &schema, name));
        };
        idx.push(i);
    }
    let mut out: Vec<Side> = wanted.iter().map(|_| Side::default()).collect();
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        for (((name, phys), &i), side) in wanted.iter().zip(&idx).zip(out.iter_mut()) {
            let col = batch.column(i);
            let bad = |e: arrow::error::ArrowError| {
                Error::Invalid(format!("{}: column '{name}': {e}", path.display()))
            };
            match phys {
                Physical::Float | Physical::Integer => {
                    let f = cast(col, &DataType::Float64).map_err(bad)?;
                    let f = f.as_primitive::<Float64Type>();
                    side.non_null += (f.len() - f.null_count()) as u64;
                    side.numbers.reserve(f.len());
                    if f.null_count() == 0 {
                        side.numbers
                            .extend(f.values().iter().filter(|v| v.is_finite()).map(|v| v + 0.0));
                    } else {
                        side.numbers.extend(
                            f.iter()
                                .flatten()
                                .filter(|v| v.is_finite())
                                .map(|v| v + 0.0),
                        );
                    }
                }
                Physical::Text | Physical::Boolean => {
                    let s = cast(col, &DataType::Utf8).map_err(bad)?;
                    for v in s.as_string::<i32>().iter().flatten() {
                        side.non_null += 1;
                        match side.categories.get_mut(v) {
                            Some(n) => *n += 1,
                            None => {
                                side.categories.insert(v.to_string(), 1);
                            }
                        }
                    }
                }
                Physical::Other => {
                    side.non_null += (col.len() - col.null_count()) as u64;
                }
            }
        }
    }
    for side in &mut out {
        stats::sort_f64(&mut side.numbers);
    }
    Ok((out, rows))
}

/// Distinct values of two sorted slices together (both free of NaN and -0.0). The merge is
/// written without data-dependent branches: on interleaved data a branchy merge mispredicts
/// about every other step.
fn distinct_sorted(a: &[f64], b: &[f64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0usize);
    let mut last = f64::NAN;
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let take_a = x <= y;
        let v = if take_a { x } else { y };
        i += usize::from(take_a);
        j += usize::from(!take_a);
        n += usize::from(v != last);
        last = v;
    }
    for &v in a[i..].iter().chain(&b[j..]) {
        n += usize::from(v != last);
        last = v;
    }
    n
}

/// Bytes a column's values take in memory while it is checked (8 per numeric value, a rough
/// figure for categorical counts).
fn column_cost(phys: Physical, rows: u64) -> u64 {
    if phys.is_numeric() {
        rows * 8
    } else {
        rows / 8
    }
}

/// Default memory budget for the values held at once; Parquet columns are read in groups under
/// it.
pub const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 128 << 20;

/// What became of one column.
enum Outcome {
    Checked(Box<ColumnDrift>),
    Skipped(String),
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
///
/// Parquet columns are read in groups that fit `opts.memory_budget_bytes` (only the group's columns
/// are decoded), so memory stays flat however many columns a file has; CSV files are parsed once.
/// Reference and current are read at the same time, and each group's columns are checked in
/// parallel.
pub fn drift_files(reference: &Path, current: &Path, opts: &DriftOptions) -> Result<DriftReport> {
    if !(0.0..=1.0).contains(&opts.drift_share) {
        return Err(Error::Invalid(format!(
            "drift share must be between 0 and 1, got {}",
            opts.drift_share
        )));
    }
    let ref_reader = BatchReader::open(reference)?;
    let cur_reader = BatchReader::open(current)?;
    let (ref_schema, cur_schema) = (ref_reader.schema(), cur_reader.schema());
    let columns: Vec<String> = match &opts.columns {
        Some(c) if !c.is_empty() => c.clone(),
        _ => ref_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    };
    let mut typed = Vec::with_capacity(columns.len());
    for name in &columns {
        let Some((_, rf)) = ref_schema.column_with_name(name) else {
            return Err(crate::reader::missing_column(reference, &ref_schema, name));
        };
        let Some((_, cf)) = cur_schema.column_with_name(name) else {
            return Err(crate::reader::missing_column(current, &cur_schema, name));
        };
        let (rp, cp) = (physical(rf.data_type()), physical(cf.data_type()));
        if rp.is_numeric() != cp.is_numeric() && rp != Physical::Other && cp != Physical::Other {
            let word = |p: Physical| if p.is_numeric() { "numeric" } else { "text" };
            return Err(Error::Invalid(format!(
                "column '{name}' is {} in {} but {} in {}",
                word(rp),
                reference.display(),
                word(cp),
                current.display()
            )));
        }
        typed.push((name.clone(), rp, cp));
    }
    // Group the columns: all at once for CSV (each pass parses every line), else under the
    // memory budget.
    let rows_hint = ref_reader.total_rows().unwrap_or(0) + cur_reader.total_rows().unwrap_or(0);
    let grouped = ref_reader.format() == crate::reader::FileFormat::Parquet
        && cur_reader.format() == crate::reader::FileFormat::Parquet;
    drop((ref_reader, cur_reader));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut used = 0u64;
    for (i, (_, rp, _)) in typed.iter().enumerate() {
        let cost = column_cost(*rp, rows_hint);
        match groups.last_mut() {
            Some(g) if !grouped || used + cost <= opts.memory_budget_bytes => {
                g.push(i);
                used += cost;
            }
            _ => {
                groups.push(vec![i]);
                used = cost;
            }
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut outcomes: Vec<Option<Outcome>> = typed.iter().map(|_| None).collect();
    let (mut reference_rows, mut current_rows) = (0, 0);
    for group in &groups {
        let want_ref: Vec<(String, Physical)> = group
            .iter()
            .map(|&i| (typed[i].0.clone(), typed[i].1))
            .collect();
        let want_cur: Vec<(String, Physical)> = group
            .iter()
            .map(|&i| (typed[i].0.clone(), typed[i].2))
            .collect();
        let (refs, curs) = std::thread::scope(|s| {
            let r = s.spawn(|| collect(reference, &want_ref));
            let c = collect(current, &want_cur);
            let r = r
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("reading the reference failed".into())));
            (r, c)
        });
        let (refs, rr) = refs?;
        let (curs, cr) = curs?;
        if rr == 0 {
            return Err(Error::Invalid(format!(
                "{}: has no rows",
                reference.display()
            )));
        }
        if cr == 0 {
            return Err(Error::Invalid(format!(
                "{}: has no rows",
                current.display()
            )));
        }
        (reference_rows, current_rows) = (rr, cr);
        // Check the group's columns on every core; results land in column order.
        let jobs: Vec<(usize, Side, Side)> = group
            .iter()
            .copied()
            .zip(refs.into_iter().zip(curs))
            .map(|(i, (r, c))| (i, r, c))
            .collect();
        let jobs = std::sync::Mutex::new(jobs);
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.min(group.len()) {
                s.spawn(|| {
                    loop {
                        let job = jobs.lock().ok().and_then(|mut j| j.pop());
                        let Some((i, r, c)) = job else { break };
                        let (name, rp, _) = &typed[i];
                        let outcome = check_column(name, *rp, &r, &c, opts);
                        drop((r, c));
                        if let Ok(mut out) = results.lock() {
                            out.push((i, outcome));
                        }
                    }
                });
            }
        });
        for (i, outcome) in results.into_inner().unwrap_or_default() {
            outcomes[i] = Some(outcome?);
        }
    }
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for ((name, _, _), outcome) in typed.iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Checked(c)) => out.push(*c),
            Some(Outcome::Skipped(why)) => skipped.push((name.clone(), why)),
            None => {
                return Err(Error::Invalid(format!(
                    "column '{name}' was not checked (a worker thread failed)"
                )));
            }
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

/// Checks one column from both sides' values.
fn check_column(
    name: &str,
    rp: Physical,
    rs: &Side,
    cs: &Side,
    opts: &DriftOptions,
) -> Result<Outcome> {
    if rp == Physical::Other {
        return Ok(Outcome::Skipped("unsupported type".to_string()));
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
    if rp.is_numeric() {
        let (r, c) = (&rs.numbers, &cs.numbers);
        if r.is_empty() || c.is_empty() {
            return Ok(Outcome::Skipped("no finite values on one side".to_string()));
        }
        let distinct = distinct_sorted(r, c);
        let as_category = rp == Physical::Integer && distinct <= INTEGER_CARDINALITY_LIMIT;
        let kind = if as_category {
            ColumnKind::Categorical
        } else {
            ColumnKind::Numerical
        };
        let method = method_for(kind, r.len(), distinct);
        let verdict = method
            .detect_numeric(r, c, threshold)
            .map_err(|e| Error::Invalid(format!("column '{name}': {e}")))?;
        return Ok(Outcome::Checked(Box::new(ColumnDrift {
            column: name.to_string(),
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
            distinct,
            plot: numeric_plot(r, c),
        })));
    }
    // Evidently treats a string column as text (not checked here) when more than half of its
    // values are distinct.
    let total_non_null = rs.non_null + cs.non_null;
    let mut all: BTreeMap<&str, CategoryCount> = BTreeMap::new();
    for (k, v) in &rs.categories {
        all.entry(k).or_default().reference = *v;
    }
    for (k, v) in &cs.categories {
        all.entry(k).or_default().current = *v;
    }
    if rp == Physical::Text && all.len() as u64 * 2 > total_non_null {
        return Ok(Outcome::Skipped(
            "text column (more than half of its values are distinct): text drift is not computed"
                .to_string(),
        ));
    }
    if rs.non_null == 0 || cs.non_null == 0 {
        return Ok(Outcome::Skipped("no values on one side".to_string()));
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
    Ok(Outcome::Checked(Box::new(ColumnDrift {
        column: name.to_string(),
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
    })))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_counts_the_union_of_two_sorted_slices() {
        assert_eq!(distinct_sorted(&[], &[]), 0);
        assert_eq!(distinct_sorted(&[1.0, 1.0, 2.0], &[]), 2);
        assert_eq!(distinct_sorted(&[], &[3.0, 3.0]), 1);
        assert_eq!(
            distinct_sorted(&[1.0, 2.0, 2.0, 5.0], &[2.0, 3.0, 5.0, 9.0]),
            5
        );
        assert_eq!(distinct_sorted(&[0.0, 0.0], &[0.0]), 1);
        let a: Vec<f64> = (0..1000).map(|i| f64::from(i / 3)).collect();
        let b: Vec<f64> = (0..1000).map(|i| f64::from(i / 2) + 0.5).collect();
        let mut all: Vec<u64> = a.iter().chain(&b).map(|x| x.to_bits()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(distinct_sorted(&a, &b), all.len());
    }
}
