//! Evaluating a suite in one streaming pass: every expectation keeps an accumulator that each
//! record batch updates. Memory is bounded except where an expectation needs a set or the values
//! themselves: unique / compound-unique keep a count per distinct key, distinct-value expectations
//! keep the distinct values, and median / quantiles keep the referenced column's non-null values
//! (8 bytes a row, so the result is exact).

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use regex::Regex;
use serde_json::Value;

use super::result::{ExceptionInfo, ExpectationResult, ResultDetails, ValidationResult};
use super::strftime::Format;
use super::suite::{Expectation, IgnoreRowIf, QuantileRanges, RangeArgs, SetSource, Suite};
use crate::reader::BatchReader;
use crate::{Error, Result};

/// How many unexpected values a result lists.
pub const PARTIAL_UNEXPECTED: usize = 20;

/// Finds the file behind a `value_set_from` entry.
pub type SetResolver<'a> = dyn Fn(&SetSource) -> Result<PathBuf> + 'a;

/// Resolves `value_set_from: {file}` relative to `base_dir` (normally the suite file's folder);
/// `dataset` entries are an error (only the server resolves those).
pub fn files_in(base_dir: &Path) -> impl Fn(&SetSource) -> Result<PathBuf> + '_ {
    move |src| match (&src.file, &src.dataset) {
        (Some(f), _) => Ok(base_dir.join(f)),
        (None, Some(d)) => Err(Error::Invalid(format!(
            "value_set_from names the stored dataset {d}: validate a stored version (NAME@N) so \
             the server resolves it, or use `file:`"
        ))),
        (None, None) => Err(Error::Invalid(
            "value_set_from names no file or dataset".into(),
        )),
    }
}

/// Validates a CSV or Parquet file against a suite in one pass; `sets` finds the files behind
/// `value_set_from` entries (see [`files_in`]).
pub fn validate_file(
    path: &Path,
    suite: &Suite,
    sets: &SetResolver<'_>,
) -> Result<ValidationResult> {
    let schema = BatchReader::open(path)?.schema();
    let mut accs: Vec<Acc> = suite
        .expectations
        .iter()
        .map(|e| Acc::build(e, &schema, sets))
        .collect();
    // Decode only the columns some expectation reads (the first one when none does, to count
    // rows); the others are stood in for by an all-null array nothing looks at.
    let mut wanted: Vec<String> = suite
        .expectations
        .iter()
        .flat_map(Expectation::columns)
        .filter(|c| schema.column_with_name(c).is_some())
        .collect();
    if wanted.is_empty() {
        wanted.push(schema.field(0).name().clone());
    }
    let reader = BatchReader::open_columns(path, &wanted)?;
    let projected = reader.schema();
    let position: Vec<Option<usize>> = schema
        .fields()
        .iter()
        .map(|f| projected.index_of(f.name()).ok())
        .collect();
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        let absent = arrow::array::new_null_array(&DataType::Null, batch.num_rows());
        let arrays: Vec<ArrayRef> = position
            .iter()
            .map(|p| p.map_or_else(|| absent.clone(), |j| batch.column(j).clone()))
            .collect();
        let cols: Vec<Col<'_>> = arrays.iter().map(Col::new).collect();
        for acc in &mut accs {
            // A column of the wrong kind fails its own expectation, not the whole suite.
            if let Err(e) = acc.update(&batch, &cols) {
                *acc = failed(e.to_string());
            }
        }
    }
    let results = suite
        .expectations
        .iter()
        .zip(accs)
        .map(|(e, acc)| {
            let (success, result, exception) = acc.finish(rows, e.mostly().unwrap_or(1.0));
            ExpectationResult {
                expectation_type: e.expectation_type(),
                kwargs: e.kwargs(),
                success,
                result,
                exception_info: exception.map(|m| ExceptionInfo {
                    raised_exception: true,
                    exception_message: m,
                }),
            }
        })
        .collect();
    Ok(ValidationResult::new(suite.name.clone(), results))
}

/// Validates a suite file (YAML) against a data file; `value_set_from` paths are relative to the
/// suite file's directory.
pub fn validate_with_suite_file(data: &Path, suite_file: &Path) -> Result<ValidationResult> {
    let text = std::fs::read_to_string(suite_file)
        .map_err(|e| Error::Invalid(format!("{}: cannot read: {e}", suite_file.display())))?;
    let suite = Suite::from_yaml(&text, &suite_file.display().to_string())?;
    let base = suite_file.parent().unwrap_or_else(|| Path::new("."));
    validate_file(data, &suite, &files_in(base))
}

// ------------------------------------------------------------------ column views

/// A column of one batch with lazily computed numeric and text views.
struct Col<'a> {
    array: &'a ArrayRef,
    numeric: bool,
    f: OnceCell<Option<Float64Array>>,
    t: OnceCell<Option<StringArray>>,
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric()
}

impl<'a> Col<'a> {
    fn new(array: &'a ArrayRef) -> Self {
        Self {
            array,
            numeric: is_numeric(array.data_type()),
            f: OnceCell::new(),
            t: OnceCell::new(),
        }
    }
    fn f64(&self) -> Option<&Float64Array> {
        self.f
            .get_or_init(|| {
                if !self.numeric {
                    return None;
                }
                cast(self.array, &DataType::Float64)
                    .ok()
                    .and_then(|a| a.as_any().downcast_ref::<Float64Array>().cloned())
            })
            .as_ref()
    }
    fn text(&self) -> Result<&StringArray> {
        self.t
            .get_or_init(|| {
                cast(self.array, &DataType::Utf8)
                    .ok()
                    .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
            })
            .as_ref()
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "values of type {} cannot be read as text",
                    self.array.data_type()
                ))
            })
    }
    /// Null, or NaN in a float column (pandas' notion of missing, which GX uses).
    fn missing(&self, i: usize) -> bool {
        self.array.is_null(i) || self.f64().is_some_and(|f| f.value(i).is_nan())
    }
    fn number(&self, i: usize) -> Option<f64> {
        self.f64().map(|f| f.value(i))
    }
    fn key(&self, i: usize) -> Result<String> {
        match self.number(i) {
            Some(v) => Ok(fmt_num(v)),
            None => Ok(self.text()?.value(i).to_string()),
        }
    }
    fn json(&self, i: usize) -> Result<Value> {
        if self.array.is_null(i) {
            return Ok(Value::Null);
        }
        match self.number(i) {
            Some(v) => Ok(num_json(v)),
            None => Ok(Value::String(self.text()?.value(i).to_string())),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn num_json(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The set key of a suite value, compared with `Col::key` of a column (numeric or not).
fn json_key(v: &Value, numeric: bool) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Number(n) => n.as_f64().map(fmt_num),
        Value::String(s) if numeric => Some(s.parse::<f64>().map_or_else(|_| s.clone(), fmt_num)),
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

// ------------------------------------------------------------------ accumulators

#[derive(Default)]
struct MapCounts {
    elements: u64,
    missing: u64,
    unexpected: u64,
    partial: Vec<Value>,
}

impl MapCounts {
    fn fail(&mut self, v: impl FnOnce() -> Result<Value>) -> Result<()> {
        self.unexpected += 1;
        if self.partial.len() < PARTIAL_UNEXPECTED {
            self.partial.push(v()?);
        }
        Ok(())
    }

    /// GX map semantics: the fraction of non-null rows that pass must reach `mostly`; with no
    /// non-null rows the expectation holds vacuously. `over_all` counts nulls as elements
    /// (not-null / be-null expectations).
    fn finish(self, mostly: f64, over_all: bool) -> (bool, ResultDetails) {
        let base = if over_all {
            self.elements
        } else {
            self.elements - self.missing
        };
        let pct = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                100.0 * n as f64 / d as f64
            }
        };
        let success = base == 0 || (base - self.unexpected) as f64 / base as f64 >= mostly;
        (
            success,
            ResultDetails {
                element_count: Some(self.elements),
                unexpected_count: Some(self.unexpected),
                unexpected_percent: Some(pct(self.unexpected, base)),
                missing_count: (!over_all).then_some(self.missing),
                missing_percent: (!over_all).then_some(pct(self.missing, self.elements)),
                partial_unexpected_list: Some(self.partial),
                observed_value: None,
            },
        )
    }
}

enum RowCheck {
    Between(RangeArgs),
    InSet(HashSet<String>, bool),
    Regex(Regex, bool),
    Length(RangeArgs),
    Strftime(Format),
}

#[derive(Clone, Copy)]
enum Moment {
    Mean,
    Stdev,
    Min,
    Max,
    Sum,
}

#[derive(Clone, Copy, PartialEq)]
enum DistinctRule {
    InSet,
    Equal,
    Contain,
}

enum Acc {
    Done(bool, ResultDetails, Option<String>),
    RowCount(RangeArgs),
    Nulls {
        col: usize,
        want_null: bool,
        counts: MapCounts,
    },
    Rows {
        col: usize,
        check: RowCheck,
        counts: MapCounts,
    },
    Unique {
        cols: Vec<usize>,
        seen: HashMap<String, (u64, Value)>,
        rows: u64,
        missing: u64,
    },
    Moments {
        col: usize,
        what: Moment,
        range: RangeArgs,
        n: u64,
        mean: f64,
        m2: f64,
        min: f64,
        max: f64,
        sum: f64,
    },
    Values {
        col: usize,
        values: Vec<f64>,
        median: Option<RangeArgs>,
        quantiles: Option<QuantileRanges>,
    },
    Distinct {
        col: usize,
        rule: DistinctRule,
        raw_set: Vec<Value>,
        seen: HashMap<String, Value>,
        numeric: bool,
    },
    Pair {
        a: usize,
        b: usize,
        or_equal: bool,
        ignore_row_if: IgnoreRowIf,
        counts: MapCounts,
    },
}

fn failed(message: String) -> Acc {
    Acc::Done(false, ResultDetails::default(), Some(message))
}

fn observed(success: bool, v: Value) -> Acc {
    Acc::Done(
        success,
        ResultDetails {
            observed_value: Some(v),
            ..ResultDetails::default()
        },
        None,
    )
}

fn type_matches(t: &DataType, want: &str) -> bool {
    use DataType::*;
    match want.to_ascii_lowercase().as_str() {
        "int" | "integer" => t.is_integer(),
        "float" | "double" | "number" => t.is_floating() || matches!(t, Decimal128(..)),
        "string" | "str" | "text" => {
            matches!(t, Utf8 | LargeUtf8 | Utf8View | Dictionary(..))
        }
        "bool" | "boolean" => matches!(t, Boolean),
        "date" => matches!(t, Date32 | Date64),
        "timestamp" | "datetime" => matches!(t, Timestamp(..)),
        other => format!("{t:?}").to_ascii_lowercase() == other,
    }
}

fn read_set(sets: &SetResolver<'_>, src: &SetSource) -> Result<HashSet<String>> {
    let path = sets(src)?;
    let column = src.column.as_str();
    let reader = BatchReader::open(&path)?;
    let idx = reader.schema().index_of(column).map_err(|_| {
        Error::Invalid(format!(
            "{}: column '{column}' does not exist",
            path.display()
        ))
    })?;
    let mut set = HashSet::new();
    for batch in reader {
        let batch = batch?;
        let col = Col::new(batch.column(idx));
        for i in 0..batch.num_rows() {
            if !col.missing(i) {
                set.insert(col.key(i)?);
            }
        }
    }
    Ok(set)
}

impl Acc {
    fn build(e: &Expectation, schema: &Schema, sets: &SetResolver<'_>) -> Acc {
        match Self::try_build(e, schema, sets) {
            Ok(acc) => acc,
            Err(err) => failed(err.to_string()),
        }
    }

    fn try_build(e: &Expectation, schema: &Schema, sets: &SetResolver<'_>) -> Result<Acc> {
        use Expectation::*;
        let idx = |name: &str| {
            schema.index_of(name).map_err(|_| {
                Error::Invalid(format!(
                    "column '{name}' does not exist (columns: {})",
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        let rows = |col, check| Acc::Rows {
            col,
            check,
            counts: MapCounts::default(),
        };
        let moments = |col, what, range| Acc::Moments {
            col,
            what,
            range,
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
        };
        Ok(match e {
            ExpectColumnToExist(a) => {
                let ok = schema.index_of(&a.column).is_ok();
                observed(ok, Value::Bool(ok))
            }
            ExpectTableColumnsToMatchSet(a) => {
                let have: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                let want: HashSet<&str> = a.column_set.iter().map(String::as_str).collect();
                let all_present = want.iter().all(|w| have.iter().any(|h| h == w));
                let no_extra = have.iter().all(|h| want.contains(h.as_str()));
                observed(
                    all_present && (!a.exact_match || no_extra),
                    Value::from(have),
                )
            }
            ExpectColumnValuesToBeOfType(a) => {
                let t = schema.field(idx(&a.column)?).data_type();
                observed(type_matches(t, &a.type_), Value::from(format!("{t:?}")))
            }
            ExpectTableRowCountToBeBetween(a) => Acc::RowCount(a.clone()),
            ExpectColumnValuesToNotBeNull(a) | ExpectColumnValuesToBeNull(a) => Acc::Nulls {
                col: idx(&a.column)?,
                want_null: matches!(e, ExpectColumnValuesToBeNull(_)),
                counts: MapCounts::default(),
            },
            ExpectColumnValuesToBeBetween(a) => rows(idx(&a.column)?, RowCheck::Between(a.range())),
            ExpectColumnValueLengthsToBeBetween(a) => {
                rows(idx(&a.column)?, RowCheck::Length(a.range()))
            }
            ExpectColumnValuesToBeInSet(a) | ExpectColumnValuesToNotBeInSet(a) => {
                let col = idx(&a.column)?;
                let numeric = is_numeric(schema.field(col).data_type());
                let mut set: HashSet<String> = a
                    .value_set
                    .iter()
                    .filter_map(|v| json_key(v, numeric))
                    .collect();
                if let Some(src) = &a.value_set_from {
                    set.extend(read_set(sets, src)?);
                }
                rows(
                    col,
                    RowCheck::InSet(set, matches!(e, ExpectColumnValuesToNotBeInSet(_))),
                )
            }
            ExpectColumnValuesToMatchRegex(a) | ExpectColumnValuesToNotMatchRegex(a) => {
                let re = Regex::new(&a.regex)
                    .map_err(|err| Error::Invalid(format!("invalid regex: {err}")))?;
                rows(
                    idx(&a.column)?,
                    RowCheck::Regex(re, matches!(e, ExpectColumnValuesToNotMatchRegex(_))),
                )
            }
            ExpectColumnValuesToMatchStrftimeFormat(a) => rows(
                idx(&a.column)?,
                RowCheck::Strftime(Format::parse(&a.strftime_format).map_err(Error::Invalid)?),
            ),
            ExpectColumnValuesToBeUnique(a) => Acc::Unique {
                cols: vec![idx(&a.column)?],
                seen: HashMap::new(),
                rows: 0,
                missing: 0,
            },
            ExpectCompoundColumnsToBeUnique(a) => Acc::Unique {
                cols: a
                    .column_list
                    .iter()
                    .map(|c| idx(c))
                    .collect::<Result<_>>()?,
                seen: HashMap::new(),
                rows: 0,
                missing: 0,
            },
            ExpectColumnMeanToBeBetween(a) => moments(idx(&a.column)?, Moment::Mean, a.range()),
            ExpectColumnStdevToBeBetween(a) => moments(idx(&a.column)?, Moment::Stdev, a.range()),
            ExpectColumnMinToBeBetween(a) => moments(idx(&a.column)?, Moment::Min, a.range()),
            ExpectColumnMaxToBeBetween(a) => moments(idx(&a.column)?, Moment::Max, a.range()),
            ExpectColumnSumToBeBetween(a) => moments(idx(&a.column)?, Moment::Sum, a.range()),
            ExpectColumnMedianToBeBetween(a) => Acc::Values {
                col: idx(&a.column)?,
                values: Vec::new(),
                median: Some(a.range()),
                quantiles: None,
            },
            ExpectColumnQuantileValuesToBeBetween(a) => Acc::Values {
                col: idx(&a.column)?,
                values: Vec::new(),
                median: None,
                quantiles: Some(a.quantile_ranges.clone()),
            },
            ExpectColumnDistinctValuesToBeInSet(a)
            | ExpectColumnDistinctValuesToEqualSet(a)
            | ExpectColumnDistinctValuesToContainSet(a) => {
                let col = idx(&a.column)?;
                Acc::Distinct {
                    col,
                    rule: match e {
                        ExpectColumnDistinctValuesToBeInSet(_) => DistinctRule::InSet,
                        ExpectColumnDistinctValuesToEqualSet(_) => DistinctRule::Equal,
                        _ => DistinctRule::Contain,
                    },
                    raw_set: a.value_set.clone(),
                    seen: HashMap::new(),
                    numeric: is_numeric(schema.field(col).data_type()),
                }
            }
            ExpectColumnPairValuesAToBeGreaterThanB(a) => Acc::Pair {
                a: idx(&a.column_a)?,
                b: idx(&a.column_b)?,
                or_equal: a.or_equal,
                ignore_row_if: a.ignore_row_if,
                counts: MapCounts::default(),
            },
        })
    }

    fn update(&mut self, batch: &RecordBatch, cols: &[Col<'_>]) -> Result<()> {
        let n = batch.num_rows();
        match self {
            Acc::Done(..) | Acc::RowCount(_) => {}
            Acc::Nulls {
                col,
                want_null,
                counts,
            } => {
                let c = &cols[*col];
                counts.elements += n as u64;
                for i in 0..n {
                    if c.missing(i) != *want_null {
                        counts.fail(|| c.json(i))?;
                    }
                }
            }
            Acc::Rows { col, check, counts } => {
                let c = &cols[*col];
                counts.elements += n as u64;
                for i in 0..n {
                    if c.missing(i) {
                        counts.missing += 1;
                        continue;
                    }
                    let ok = match check {
                        RowCheck::Between(r) => match c.number(i) {
                            Some(v) => r.contains(v),
                            None => c
                                .text()?
                                .value(i)
                                .parse::<f64>()
                                .is_ok_and(|v| r.contains(v)),
                        },
                        RowCheck::Length(r) => {
                            r.contains(c.text()?.value(i).chars().count() as f64)
                        }
                        RowCheck::InSet(set, negate) => set.contains(&c.key(i)?) != *negate,
                        RowCheck::Regex(re, negate) => re.is_match(c.text()?.value(i)) != *negate,
                        RowCheck::Strftime(f) => f.matches(c.text()?.value(i)),
                    };
                    if !ok {
                        counts.fail(|| c.json(i))?;
                    }
                }
            }
            Acc::Unique {
                cols: idx,
                seen,
                rows,
                missing,
            } => {
                *rows += n as u64;
                for i in 0..n {
                    if idx.iter().all(|&k| cols[k].missing(i)) {
                        *missing += 1;
                        continue;
                    }
                    if idx.len() == 1 {
                        let c = &cols[idx[0]];
                        match seen.entry(c.key(i)?) {
                            std::collections::hash_map::Entry::Occupied(mut e) => {
                                e.get_mut().0 += 1
                            }
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert((1, c.json(i)?));
                            }
                        }
                    } else {
                        let mut key = String::new();
                        for &k in idx.iter() {
                            if cols[k].missing(i) {
                                key.push('\u{0}');
                            } else {
                                key.push_str(&cols[k].key(i)?);
                            }
                            key.push('\u{1f}');
                        }
                        match seen.get_mut(&key) {
                            Some(e) => e.0 += 1,
                            None => {
                                let v = idx
                                    .iter()
                                    .map(|&k| cols[k].json(i))
                                    .collect::<Result<Vec<_>>>()?;
                                seen.insert(key, (1, Value::from(v)));
                            }
                        }
                    }
                }
            }
            Acc::Moments {
                col,
                n: count,
                mean,
                m2,
                min,
                max,
                sum,
                ..
            } => {
                let c = &cols[*col];
                let Some(f) = c.f64() else {
                    return Err(Error::Invalid(format!(
                        "column of type {} is not numeric",
                        c.array.data_type()
                    )));
                };
                for i in 0..n {
                    if c.missing(i) {
                        continue;
                    }
                    let v = f.value(i);
                    *count += 1;
                    let d = v - *mean;
                    *mean += d / *count as f64;
                    *m2 += d * (v - *mean);
                    *min = min.min(v);
                    *max = max.max(v);
                    *sum += v;
                }
            }
            Acc::Values { col, values, .. } => {
                let c = &cols[*col];
                let Some(f) = c.f64() else {
                    return Err(Error::Invalid(format!(
                        "column of type {} is not numeric",
                        c.array.data_type()
                    )));
                };
                values.extend((0..n).filter(|&i| !c.missing(i)).map(|i| f.value(i)));
            }
            Acc::Distinct { col, seen, .. } => {
                let c = &cols[*col];
                for i in 0..n {
                    if !c.missing(i) {
                        let k = c.key(i)?;
                        if let std::collections::hash_map::Entry::Vacant(slot) = seen.entry(k) {
                            slot.insert(c.json(i)?);
                        }
                    }
                }
            }
            Acc::Pair {
                a,
                b,
                or_equal,
                ignore_row_if,
                counts,
            } => {
                let (ca, cb) = (&cols[*a], &cols[*b]);
                counts.elements += n as u64;
                for i in 0..n {
                    let (ma, mb) = (ca.missing(i), cb.missing(i));
                    let ignored = match ignore_row_if {
                        IgnoreRowIf::BothValuesAreMissing => ma && mb,
                        IgnoreRowIf::EitherValueIsMissing => ma || mb,
                        IgnoreRowIf::Neither => false,
                    };
                    if ignored {
                        counts.missing += 1;
                        continue;
                    }
                    // A missing value on a compared row fails, as GX's comparison with NaN does.
                    if ma || mb {
                        counts.fail(|| Ok(Value::from(vec![ca.json(i)?, cb.json(i)?])))?;
                        continue;
                    }
                    let ord = match (ca.number(i), cb.number(i)) {
                        (Some(x), Some(y)) => x.partial_cmp(&y),
                        _ => Some(ca.text()?.value(i).cmp(cb.text()?.value(i))),
                    };
                    let ok = match ord {
                        Some(std::cmp::Ordering::Greater) => true,
                        Some(std::cmp::Ordering::Equal) => *or_equal,
                        _ => false,
                    };
                    if !ok {
                        counts.fail(|| Ok(Value::from(vec![ca.json(i)?, cb.json(i)?])))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self, total_rows: u64, mostly: f64) -> (bool, ResultDetails, Option<String>) {
        let obs = |ok: bool, v: Value| {
            (
                ok,
                ResultDetails {
                    observed_value: Some(v),
                    ..ResultDetails::default()
                },
                None,
            )
        };
        match self {
            Acc::Done(ok, d, e) => (ok, d, e),
            Acc::RowCount(r) => obs(r.contains(total_rows as f64), Value::from(total_rows)),
            Acc::Nulls { counts, .. } => {
                let (ok, d) = counts.finish(mostly, true);
                (ok, d, None)
            }
            Acc::Rows { counts, .. } | Acc::Pair { counts, .. } => {
                let (ok, d) = counts.finish(mostly, false);
                (ok, d, None)
            }
            Acc::Unique {
                seen,
                rows,
                missing,
                ..
            } => {
                let mut counts = MapCounts {
                    elements: rows,
                    missing,
                    ..MapCounts::default()
                };
                let mut dups: Vec<(u64, Value)> =
                    seen.into_values().filter(|(c, _)| *c > 1).collect();
                dups.sort_by_key(|d| std::cmp::Reverse(d.0));
                for (c, v) in dups {
                    counts.unexpected += c;
                    if counts.partial.len() < PARTIAL_UNEXPECTED {
                        counts.partial.push(v);
                    }
                }
                let (ok, d) = counts.finish(mostly, false);
                (ok, d, None)
            }
            Acc::Moments {
                what,
                range,
                n,
                mean,
                m2,
                min,
                max,
                sum,
                ..
            } => {
                let v = match what {
                    _ if n == 0 => None,
                    Moment::Mean => Some(mean),
                    Moment::Stdev if n > 1 => Some((m2 / (n - 1) as f64).sqrt()),
                    Moment::Stdev => None,
                    Moment::Min => Some(min),
                    Moment::Max => Some(max),
                    Moment::Sum => Some(sum),
                };
                match v {
                    Some(v) => obs(range.contains(v), num_json(v)),
                    None => obs(false, Value::Null),
                }
            }
            Acc::Values {
                mut values,
                median,
                quantiles,
                ..
            } => {
                values.sort_by(f64::total_cmp);
                if let Some(r) = median {
                    return match quantile(&values, 0.5) {
                        Some(m) => obs(r.contains(m), num_json(m)),
                        None => obs(false, Value::Null),
                    };
                }
                let Some(q) = quantiles else {
                    return obs(false, Value::Null);
                };
                let got: Vec<Option<f64>> =
                    q.quantiles.iter().map(|&p| quantile(&values, p)).collect();
                let ok = got.iter().zip(&q.value_ranges).all(|(v, [lo, hi])| {
                    v.is_some_and(|v| {
                        RangeArgs {
                            min_value: *lo,
                            max_value: *hi,
                            ..RangeArgs::default()
                        }
                        .contains(v)
                    })
                });
                obs(
                    ok,
                    serde_json::json!({
                        "quantiles": q.quantiles,
                        "values": got.into_iter().map(|v| v.map_or(Value::Null, num_json)).collect::<Vec<_>>(),
                    }),
                )
            }
            Acc::Distinct {
                rule,
                raw_set,
                seen,
                numeric,
                ..
            } => {
                let want: HashSet<String> = raw_set
                    .iter()
                    .filter_map(|v| json_key(v, numeric))
                    .collect();
                let within = seen.keys().all(|k| want.contains(k));
                let covers = want.iter().all(|k| seen.contains_key(k));
                let ok = match rule {
                    DistinctRule::InSet => within,
                    DistinctRule::Equal => within && covers,
                    DistinctRule::Contain => covers,
                };
                let mut observed: Vec<(String, Value)> = seen.into_iter().collect();
                observed.sort_by(|a, b| a.0.cmp(&b.0));
                obs(
                    ok,
                    Value::from(observed.into_iter().map(|(_, v)| v).collect::<Vec<_>>()),
                )
            }
        }
    }
}

/// Linear-interpolation quantile of sorted values (NumPy's default, which GX's pandas path uses).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (a, b) = (sorted.get(lo)?, sorted.get(hi)?);
    Some(a + (b - a) * (pos - lo as f64))
}
