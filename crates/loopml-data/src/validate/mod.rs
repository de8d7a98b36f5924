//! Expectation suites (GX names, kwargs and result shapes) read from YAML, evaluated in one
//! streaming pass over a dataset's record batches, and suggested from a reference profile.

mod evaluate;
mod result;
mod strftime;
mod suite;

pub use evaluate::{
    PARTIAL_UNEXPECTED, SetResolver, files_in, validate_file, validate_with_suite_file,
};
pub use result::{ExceptionInfo, ExpectationResult, ResultDetails, Statistics, ValidationResult};
pub use strftime::Format as StrftimeFormat;
pub use suite::*;

use crate::profile::{ColumnKind, Profile};

/// Largest number of distinct values for which `suggest_suite` proposes an in-set expectation.
pub const SUGGEST_SET_LIMIT: usize = crate::profile::TOP_VALUES;

/// Proposes a suite from a reference profile: the column set, not-null (with `mostly` when the
/// reference had nulls), numeric ranges, small categorical sets and uniqueness.
pub fn suggest_suite(name: &str, profile: &Profile) -> Suite {
    let mut expectations = vec![Expectation::ExpectTableColumnsToMatchSet(ColumnSetArgs {
        column_set: profile.columns.iter().map(|c| c.name.clone()).collect(),
        exact_match: true,
    })];
    for c in &profile.columns {
        let column = c.name.clone();
        let non_null = c.count.saturating_sub(c.nulls);
        let mostly = if c.nulls == 0 {
            None
        } else if c.count > 0 {
            // Round down to 2 decimals so the reference itself passes.
            Some((non_null as f64 / c.count as f64 * 100.0).floor() / 100.0)
        } else {
            None
        };
        if non_null == 0 {
            continue;
        }
        expectations.push(Expectation::ExpectColumnValuesToNotBeNull(MapArgs {
            column: column.clone(),
            mostly,
        }));
        if c.kind == ColumnKind::Numeric
            && let Some(n) = &c.numeric
        {
            expectations.push(Expectation::ExpectColumnValuesToBeBetween(BetweenArgs {
                column: column.clone(),
                min_value: Some(n.min),
                max_value: Some(n.max),
                strict_min: false,
                strict_max: false,
                mostly: None,
            }));
        }
        if c.kind == ColumnKind::Categorical
            && c.distinct_exact
            && (c.distinct as usize) <= SUGGEST_SET_LIMIT
            && c.distinct < non_null
            && let Some(cat) = &c.categorical
            && cat.top_values_exact
        {
            expectations.push(Expectation::ExpectColumnValuesToBeInSet(InSetArgs {
                column: column.clone(),
                value_set: cat
                    .top_values
                    .iter()
                    .map(|(v, _)| serde_json::Value::String(v.clone()))
                    .collect(),
                value_set_from: None,
                mostly: None,
            }));
        }
        if c.distinct_exact && c.distinct == non_null && non_null > 1 {
            expectations.push(Expectation::ExpectColumnValuesToBeUnique(MapArgs {
                column,
                mostly: None,
            }));
        }
    }
    Suite {
        name: name.to_string(),
        expectations,
    }
}
