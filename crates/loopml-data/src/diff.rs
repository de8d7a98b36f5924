//! `loopml data diff`: what changed between two datasets — schema (added, removed and retyped
//! columns), row counts, and per common column the change in nulls, distinct values, mean and
//! spread, with the drift verdict of the same method `loopml data drift` uses.

use std::path::Path;

use serde::Serialize;

use crate::drift::{DriftOptions, drift_files};
use crate::error::Result;
use crate::profile::{ColumnProfile, profile_file};

/// One column present on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnChange {
    /// Column.
    pub column: String,
    /// Arrow type before → after (equal when unchanged).
    pub data_type: (String, String),
    /// Share of nulls before → after.
    pub null_share: (f64, f64),
    /// Distinct values before → after.
    pub distinct: (u64, u64),
    /// Mean before → after (numeric columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<(f64, f64)>,
    /// Standard deviation before → after (numeric columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<(f64, f64)>,
    /// Drift method, score and verdict, when the column could be compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<(String, f64, bool)>,
}

/// Everything that changed from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetDiff {
    /// Rows before → after.
    pub rows: (u64, u64),
    /// Columns only in the new data.
    pub added_columns: Vec<String>,
    /// Columns only in the old data.
    pub removed_columns: Vec<String>,
    /// Columns whose type changed.
    pub retyped_columns: Vec<String>,
    /// Common columns, in the old data's order.
    pub columns: Vec<ColumnChange>,
}

fn null_share(c: &ColumnProfile) -> f64 {
    if c.count == 0 {
        0.0
    } else {
        c.nulls as f64 / c.count as f64
    }
}

/// Compares two CSV or Parquet files.
pub fn diff_files(old: &Path, new: &Path) -> Result<DatasetDiff> {
    let a = profile_file(old)?;
    let b = profile_file(new)?;
    let find =
        |p: &crate::profile::Profile, n: &str| p.columns.iter().find(|c| c.name == n).cloned();
    let added_columns: Vec<String> = b
        .columns
        .iter()
        .filter(|c| find(&a, &c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    let removed_columns: Vec<String> = a
        .columns
        .iter()
        .filter(|c| find(&b, &c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    let mut retyped_columns = Vec::new();
    let mut common = Vec::new();
    for ca in &a.columns {
        if let Some(cb) = find(&b, &ca.name) {
            if ca.kind != cb.kind {
                retyped_columns.push(ca.name.clone());
            } else {
                common.push(ca.name.clone());
            }
        }
    }
    let drift = if common.is_empty() || a.rows == 0 || b.rows == 0 {
        None
    } else {
        drift_files(
            old,
            new,
            &DriftOptions {
                columns: Some(common.clone()),
                ..DriftOptions::default()
            },
        )
        .ok()
    };
    let mut columns = Vec::new();
    for ca in &a.columns {
        let Some(cb) = find(&b, &ca.name) else {
            continue;
        };
        let numeric = ca.numeric.as_ref().zip(cb.numeric.as_ref());
        columns.push(ColumnChange {
            column: ca.name.clone(),
            data_type: (ca.data_type.clone(), cb.data_type.clone()),
            null_share: (null_share(ca), null_share(&cb)),
            distinct: (ca.distinct, cb.distinct),
            mean: numeric.map(|(x, y)| (x.mean, y.mean)),
            std: numeric.map(|(x, y)| (x.std, y.std)),
            drift: drift.as_ref().and_then(|d| {
                d.columns
                    .iter()
                    .find(|c| c.column == ca.name)
                    .map(|c| (c.method.to_string(), c.score, c.drifted))
            }),
        });
    }
    Ok(DatasetDiff {
        rows: (a.rows, b.rows),
        added_columns,
        removed_columns,
        retyped_columns,
        columns,
    })
}

impl DatasetDiff {
    /// A readable summary for terminals.
    pub fn summary(&self) -> String {
        let mut o = format!("rows: {} → {}\n", self.rows.0, self.rows.1);
        for (label, cols) in [
            ("added columns", &self.added_columns),
            ("removed columns", &self.removed_columns),
            ("columns whose type changed", &self.retyped_columns),
        ] {
            if !cols.is_empty() {
                o.push_str(&format!("{label}: {}\n", cols.join(", ")));
            }
        }
        o.push_str(&format!(
            "\n{:<24} {:>15} {:>17} {:>27}  {}\n",
            "column", "nulls %", "distinct", "mean", "drift"
        ));
        for c in &self.columns {
            let mean = c
                .mean
                .map(|(x, y)| format!("{x:.4} → {y:.4}"))
                .unwrap_or_default();
            let drift = c
                .drift
                .as_ref()
                .map(|(m, s, d)| format!("{m} {s:.4}{}", if *d { " DRIFT" } else { "" }))
                .unwrap_or_default();
            o.push_str(&format!(
                "{:<24} {:>15} {:>17} {:>27}  {}\n",
                c.column,
                format!(
                    "{:.1} → {:.1}",
                    c.null_share.0 * 100.0,
                    c.null_share.1 * 100.0
                ),
                format!("{} → {}", c.distinct.0, c.distinct.1),
                mean,
                drift
            ));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_rows_and_column_changes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        let mut sa = String::from("x,gone,t\n");
        let mut sb = String::from("x,new,t\n");
        for i in 0..100 {
            sa.push_str(&format!("{i},1,a\n"));
            sb.push_str(&format!("{},2,{}\n", i + 500, i % 2));
        }
        sb.push_str(",2,1\n");
        std::fs::write(&a, sa).unwrap();
        std::fs::write(&b, sb).unwrap();
        let d = diff_files(&a, &b).unwrap();
        assert_eq!(d.rows, (100, 101));
        assert_eq!(d.added_columns, ["new"]);
        assert_eq!(d.removed_columns, ["gone"]);
        assert_eq!(d.retyped_columns, ["t"]);
        let x = &d.columns[0];
        assert_eq!(x.column, "x");
        assert!(x.null_share.1 > 0.0);
        assert!(x.mean.unwrap().1 > 500.0);
        assert!(x.drift.as_ref().unwrap().2, "a +500 shift drifts");
        assert!(d.summary().contains("removed columns: gone"));
    }
}
