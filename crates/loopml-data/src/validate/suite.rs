//! Expectation suites: the YAML shape (GX names and kwargs), parsing with per-entry errors, and
//! writing back to YAML.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// A named list of expectations, read from YAML (`name:` and `expectations:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suite {
    /// The suite's name.
    pub name: String,
    /// The expectations, evaluated in order.
    pub expectations: Vec<Expectation>,
}

/// One expectation: the GX expectation type (snake case) and its kwargs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// The column exists.
    ExpectColumnToExist(ColumnArgs),
    /// The table's columns equal (or include, when `exact_match: false`) a set.
    ExpectTableColumnsToMatchSet(ColumnSetArgs),
    /// The row count lies in a range.
    ExpectTableRowCountToBeBetween(RangeArgs),
    /// Values are not null (nulls are the unexpected values).
    ExpectColumnValuesToNotBeNull(MapArgs),
    /// Values are null.
    ExpectColumnValuesToBeNull(MapArgs),
    /// Non-null values lie in a range.
    ExpectColumnValuesToBeBetween(BetweenArgs),
    /// Non-null values belong to a set (inline, or another file's column via `value_set_from`).
    ExpectColumnValuesToBeInSet(InSetArgs),
    /// Non-null values do not belong to a set.
    ExpectColumnValuesToNotBeInSet(InSetArgs),
    /// Non-null values (as text) contain a match of a regex.
    ExpectColumnValuesToMatchRegex(RegexArgs),
    /// Non-null values (as text) contain no match of a regex.
    ExpectColumnValuesToNotMatchRegex(RegexArgs),
    /// Non-null values are unique (every row of a duplicated value is unexpected).
    ExpectColumnValuesToBeUnique(MapArgs),
    /// Combinations of several columns are unique.
    ExpectCompoundColumnsToBeUnique(CompoundArgs),
    /// The column's type is one of int/float/string/bool/date/timestamp (or an Arrow type name).
    ExpectColumnValuesToBeOfType(TypeArgs),
    /// The mean lies in a range.
    ExpectColumnMeanToBeBetween(AggregateArgs),
    /// The median lies in a range.
    ExpectColumnMedianToBeBetween(AggregateArgs),
    /// The sample standard deviation lies in a range.
    ExpectColumnStdevToBeBetween(AggregateArgs),
    /// The minimum lies in a range.
    ExpectColumnMinToBeBetween(AggregateArgs),
    /// The maximum lies in a range.
    ExpectColumnMaxToBeBetween(AggregateArgs),
    /// The sum lies in a range.
    ExpectColumnSumToBeBetween(AggregateArgs),
    /// Each listed quantile lies in its range.
    ExpectColumnQuantileValuesToBeBetween(QuantileArgs),
    /// Every distinct non-null value belongs to the set.
    ExpectColumnDistinctValuesToBeInSet(ValueSetArgs),
    /// The distinct non-null values equal the set.
    ExpectColumnDistinctValuesToEqualSet(ValueSetArgs),
    /// The distinct non-null values include the set.
    ExpectColumnDistinctValuesToContainSet(ValueSetArgs),
    /// Text lengths (in characters) of non-null values lie in a range.
    ExpectColumnValueLengthsToBeBetween(BetweenArgs),
    /// Non-null values parse with a strftime format.
    ExpectColumnValuesToMatchStrftimeFormat(StrftimeArgs),
    /// Column A is greater than (or equal to, with `or_equal`) column B; `ignore_row_if` picks the
    /// rows left out (by default those where both are missing).
    ExpectColumnPairValuesAToBeGreaterThanB(PairArgs),
}

/// Kwargs naming one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnArgs {
    /// The column.
    pub column: String,
}

/// Kwargs of a row-by-row expectation with no other parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapArgs {
    /// The column.
    pub column: String,
    /// Fraction of (non-null) values that must pass; 1.0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// Kwargs of `expect_table_columns_to_match_set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSetArgs {
    /// The expected column names.
    pub column_set: Vec<String>,
    /// Whether extra columns fail the expectation (default true).
    #[serde(default = "yes")]
    pub exact_match: bool,
}

fn yes() -> bool {
    true
}

/// A numeric range; an absent bound is open, `strict_*` makes a bound exclusive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeArgs {
    /// Lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<f64>,
    /// Upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// Whether the lower bound is exclusive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_min: bool,
    /// Whether the upper bound is exclusive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_max: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RangeArgs {
    /// Whether `v` lies in the range.
    pub fn contains(&self, v: f64) -> bool {
        let lo = match self.min_value {
            Some(m) if self.strict_min => v > m,
            Some(m) => v >= m,
            None => true,
        };
        let hi = match self.max_value {
            Some(m) if self.strict_max => v < m,
            Some(m) => v <= m,
            None => true,
        };
        lo && hi && !v.is_nan()
    }
}

/// Kwargs of a row-by-row range expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BetweenArgs {
    /// The column.
    pub column: String,
    /// Lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<f64>,
    /// Upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// Whether the lower bound is exclusive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_min: bool,
    /// Whether the upper bound is exclusive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_max: bool,
    /// Fraction of non-null values that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// Kwargs of an aggregate range expectation (mean, median, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateArgs {
    /// The column.
    pub column: String,
    /// Lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<f64>,
    /// Upper bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<f64>,
    /// Whether the lower bound is exclusive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_min: bool,
    /// Whether the upper bound is exclusive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict_max: bool,
}

/// Where a value set comes from when it is another dataset's column (a foreign key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSource {
    /// CSV or Parquet file, relative to the suite file's directory (local runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A stored dataset version (`NAME@N`, or `NAME` for the latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The column holding the allowed values.
    pub column: String,
}

impl SetSource {
    /// Where the values come from, for messages.
    pub fn describe(&self) -> String {
        match (&self.file, &self.dataset) {
            (Some(f), _) => format!("file {f}"),
            (None, Some(d)) => format!("dataset {d}"),
            (None, None) => "nothing".into(),
        }
    }
}

/// Kwargs of `expect_column_values_to_(not_)be_in_set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InSetArgs {
    /// The column.
    pub column: String,
    /// The set, inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_set: Vec<Value>,
    /// The set, read from another file's column (added to `value_set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_set_from: Option<SetSource>,
    /// Fraction of non-null values that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// Kwargs of the distinct-values expectations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSetArgs {
    /// The column.
    pub column: String,
    /// The set.
    pub value_set: Vec<Value>,
}

/// Kwargs of the regex expectations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexArgs {
    /// The column.
    pub column: String,
    /// The pattern (Rust `regex` syntax, searched anywhere in the value like GX's `re.search`).
    pub regex: String,
    /// Fraction of non-null values that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// Kwargs of `expect_compound_columns_to_be_unique`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompoundArgs {
    /// The columns forming the key.
    pub column_list: Vec<String>,
    /// Fraction of rows that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// Kwargs of `expect_column_values_to_be_of_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeArgs {
    /// The column.
    pub column: String,
    /// int, float, string, bool, date, timestamp, or an Arrow type name (e.g. `Int64`).
    pub type_: String,
}

/// Quantiles and the range each must lie in (`null` bounds are open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantileRanges {
    /// Quantiles in [0, 1].
    pub quantiles: Vec<f64>,
    /// One `[min, max]` per quantile.
    pub value_ranges: Vec<[Option<f64>; 2]>,
}

/// Kwargs of `expect_column_quantile_values_to_be_between`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantileArgs {
    /// The column.
    pub column: String,
    /// The quantiles and their ranges.
    pub quantile_ranges: QuantileRanges,
}

/// Kwargs of `expect_column_values_to_match_strftime_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrftimeArgs {
    /// The column.
    pub column: String,
    /// The format, e.g. `%Y-%m-%d %H:%M:%S`.
    pub strftime_format: String,
    /// Fraction of non-null values that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// Kwargs of `expect_column_pair_values_a_to_be_greater_than_b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairArgs {
    /// Column A.
    #[serde(rename = "column_A")]
    pub column_a: String,
    /// Column B.
    #[serde(rename = "column_B")]
    pub column_b: String,
    /// Whether A == B passes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub or_equal: bool,
    /// Which rows are left out of the comparison (GX's default: those where both are missing;
    /// a compared row with one missing value fails).
    #[serde(default, skip_serializing_if = "IgnoreRowIf::is_default")]
    pub ignore_row_if: IgnoreRowIf,
    /// Fraction of compared rows that must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mostly: Option<f64>,
}

/// GX's `ignore_row_if` for column-pair expectations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreRowIf {
    /// Skip rows where both values are missing (GX's default).
    #[default]
    BothValuesAreMissing,
    /// Skip rows where either value is missing.
    EitherValueIsMissing,
    /// Compare every row.
    Neither,
}

impl IgnoreRowIf {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: String,
    #[serde(default)]
    expectations: Vec<Value>,
}

impl Expectation {
    /// The GX expectation type, e.g. `expect_column_values_to_be_between`.
    pub fn expectation_type(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.keys().next().cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The kwargs as JSON, as written in the suite.
    pub fn kwargs(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The columns whose values this expectation reads (schema-only expectations included).
    pub fn columns(&self) -> Vec<String> {
        let kwargs = self.kwargs();
        let mut out = Vec::new();
        for key in ["column", "column_A", "column_B"] {
            if let Some(c) = kwargs.get(key).and_then(Value::as_str) {
                out.push(c.to_string());
            }
        }
        if let Some(list) = kwargs.get("column_list").and_then(Value::as_array) {
            out.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
        }
        out
    }

    /// The `mostly` parameter, if this expectation has one.
    pub fn mostly(&self) -> Option<f64> {
        use Expectation::*;
        match self {
            ExpectColumnValuesToNotBeNull(a)
            | ExpectColumnValuesToBeNull(a)
            | ExpectColumnValuesToBeUnique(a) => a.mostly,
            ExpectColumnValuesToBeBetween(a) | ExpectColumnValueLengthsToBeBetween(a) => a.mostly,
            ExpectColumnValuesToBeInSet(a) | ExpectColumnValuesToNotBeInSet(a) => a.mostly,
            ExpectColumnValuesToMatchRegex(a) | ExpectColumnValuesToNotMatchRegex(a) => a.mostly,
            ExpectCompoundColumnsToBeUnique(a) => a.mostly,
            ExpectColumnValuesToMatchStrftimeFormat(a) => a.mostly,
            ExpectColumnPairValuesAToBeGreaterThanB(a) => a.mostly,
            _ => None,
        }
    }
}

impl Suite {
    /// Parses a suite from YAML; errors name `source` (the file) and the failing entry's index.
    pub fn from_yaml(text: &str, source: &str) -> Result<Self> {
        let raw: RawSuite = serde_saphyr::from_str(text)
            .map_err(|e| Error::Invalid(format!("{source}: not a valid expectation suite: {e}")))?;
        let mut expectations = Vec::with_capacity(raw.expectations.len());
        for (i, entry) in raw.expectations.into_iter().enumerate() {
            let name = match &entry {
                Value::Object(m) if m.len() == 1 => m.keys().next().cloned().unwrap_or_default(),
                _ => {
                    return Err(Error::Invalid(format!(
                        "{source}: expectation {i}: expected a single `expect_…: {{kwargs}}` entry"
                    )));
                }
            };
            let e: Expectation = serde_json::from_value(entry)
                .map_err(|e| Error::Invalid(format!("{source}: expectation {i} ({name}): {e}")))?;
            e.check()
                .map_err(|m| Error::Invalid(format!("{source}: expectation {i} ({name}): {m}")))?;
            expectations.push(e);
        }
        Ok(Self {
            name: raw.name,
            expectations,
        })
    }

    /// Writes the suite as YAML (each expectation as one flow-style line, which YAML reads back).
    pub fn to_yaml(&self) -> String {
        let mut out = format!(
            "name: {}\nexpectations:\n",
            serde_json::to_string(&self.name).unwrap_or_default()
        );
        for e in &self.expectations {
            out.push_str("  - ");
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
        out
    }
}

impl Expectation {
    fn check(&self) -> std::result::Result<(), String> {
        if let Some(m) = self.mostly()
            && !(0.0..=1.0).contains(&m)
        {
            return Err(format!("mostly must lie in [0, 1], got {m}"));
        }
        match self {
            Expectation::ExpectColumnValuesToMatchRegex(a)
            | Expectation::ExpectColumnValuesToNotMatchRegex(a) => regex::Regex::new(&a.regex)
                .map(|_| ())
                .map_err(|e| format!("invalid regex: {e}")),
            Expectation::ExpectColumnQuantileValuesToBeBetween(a) => {
                let q = &a.quantile_ranges;
                if q.quantiles.len() != q.value_ranges.len() {
                    return Err("quantiles and value_ranges differ in length".into());
                }
                if q.quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
                    return Err("quantiles must lie in [0, 1]".into());
                }
                Ok(())
            }
            Expectation::ExpectColumnValuesToMatchStrftimeFormat(a) => {
                super::strftime::Format::parse(&a.strftime_format).map(|_| ())
            }
            Expectation::ExpectColumnValuesToBeInSet(a)
            | Expectation::ExpectColumnValuesToNotBeInSet(a) => match &a.value_set_from {
                Some(src) if src.file.is_some() == src.dataset.is_some() => {
                    Err("value_set_from needs exactly one of `file` and `dataset`".into())
                }
                Some(SetSource {
                    dataset: Some(d), ..
                }) => crate::versions::parse_reference(d)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                _ => Ok(()),
            },
            Expectation::ExpectCompoundColumnsToBeUnique(a) if a.column_list.is_empty() => {
                Err("column_list is empty".into())
            }
            _ => Ok(()),
        }
    }
}

macro_rules! range_of {
    ($t:ty) => {
        impl $t {
            /// The bounds as a range.
            pub fn range(&self) -> RangeArgs {
                RangeArgs {
                    min_value: self.min_value,
                    max_value: self.max_value,
                    strict_min: self.strict_min,
                    strict_max: self.strict_max,
                }
            }
        }
    };
}
range_of!(BetweenArgs);
range_of!(AggregateArgs);

impl Suite {
    fn set_sources(&self) -> impl Iterator<Item = &SetSource> {
        self.expectations.iter().filter_map(|e| match e {
            Expectation::ExpectColumnValuesToBeInSet(a)
            | Expectation::ExpectColumnValuesToNotBeInSet(a) => a.value_set_from.as_ref(),
            _ => None,
        })
    }

    /// The local files the suite's `value_set_from` entries name.
    pub fn file_sets(&self) -> Vec<String> {
        self.set_sources().filter_map(|s| s.file.clone()).collect()
    }

    /// The stored dataset versions the suite's `value_set_from` entries name.
    pub fn dataset_sets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .set_sources()
            .filter_map(|s| s.dataset.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod fuzz;
