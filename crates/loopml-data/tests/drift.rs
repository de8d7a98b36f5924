//! Drift reports on files written here: Evidently's default methods, verdicts, errors.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use loopml_data::drift::{DriftOptions, drift_files};
use loopml_data::stats::DriftMethod;

fn write(dir: &std::path::Path, name: &str, rows: &[String]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("x,city,code\n{}\n", rows.join("\n"))).unwrap();
    p
}

fn rows(n: usize, shift: f64, flip: bool) -> Vec<String> {
    (0..n)
        .map(|i| {
            // A deterministic, roughly uniform spread.
            let x = ((i * 7919) % 1000) as f64 / 10.0 + shift;
            let city = if flip {
                ["Oslo", "Rome"][i % 2]
            } else {
                ["Paris", "Rome", "Oslo"][i % 3]
            };
            format!("{x},{city},{}", i % 3)
        })
        .collect()
}

#[test]
fn small_samples_use_ks_chisquare_and_detect_shift() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "ref.csv", &rows(500, 0.0, false));
    let same = write(dir.path(), "same.csv", &rows(500, 0.0, false));
    let shifted = write(dir.path(), "cur.csv", &rows(500, 40.0, true));
    let report = drift_files(&r, &same, &DriftOptions::default()).unwrap();
    let methods: Vec<&str> = report.columns.iter().map(|c| c.method).collect();
    // x: numeric, > 5 distinct, ≤ 1000 rows → ks; city: categorical, 3 values → chisquare;
    // code: integer with 3 distinct values → categorical → chisquare.
    assert_eq!(methods, ["ks", "chisquare", "chisquare"]);
    assert!(report.columns.iter().all(|c| !c.drifted));
    assert!(!report.dataset_drift);
    let report = drift_files(&r, &shifted, &DriftOptions::default()).unwrap();
    assert!(report.columns[0].drifted && report.columns[1].drifted);
    assert!(!report.columns[2].drifted);
    assert_eq!(report.drifted_columns, 2);
    assert!(report.dataset_drift);
    assert!(report.summary().contains("DATASET DRIFT"));
    assert_eq!(report.columns[0].plot.reference.len(), 20);
}

#[test]
fn large_samples_use_wasserstein_and_jensen_shannon() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "ref.csv", &rows(2000, 0.0, false));
    let c = write(dir.path(), "cur.csv", &rows(2000, 0.0, false));
    let report = drift_files(&r, &c, &DriftOptions::default()).unwrap();
    let methods: Vec<&str> = report.columns.iter().map(|c| c.method).collect();
    assert_eq!(methods, ["wasserstein", "jensenshannon", "jensenshannon"]);
    assert!(
        report
            .columns
            .iter()
            .all(|c| c.score.abs() < 1e-12 && !c.drifted)
    );
    let opts = DriftOptions {
        method: Some(DriftMethod::Psi),
        ..DriftOptions::default()
    };
    let report = drift_files(&r, &c, &opts).unwrap();
    assert!(report.columns.iter().all(|c| c.method == "psi"));
}

#[test]
fn missing_and_mismatched_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let r = write(dir.path(), "ref.csv", &rows(50, 0.0, false));
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "x,town\n1,a\n").unwrap();
    let err = drift_files(&r, &other, &DriftOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("other.csv") && err.contains("'city'"), "{err}");
    let typed = dir.path().join("typed.csv");
    std::fs::write(&typed, "x,city,code\nabc,Paris,1\n").unwrap();
    let err = drift_files(&r, &typed, &DriftOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("'x'") && err.contains("numeric"), "{err}");
    let bad_share = DriftOptions {
        drift_share: 2.0,
        ..DriftOptions::default()
    };
    assert!(drift_files(&r, &r, &bad_share).is_err());
}

/// Writes a Parquet file with `cols` float columns, one integer code column and one string
/// column; `shift` moves every other float column.
fn write_parquet(path: &std::path::Path, rows: usize, cols: usize, shift: f64) {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;
    let mut fields: Vec<(String, ArrayRef)> = Vec::new();
    for c in 0..cols {
        let s = if c % 2 == 0 { shift } else { 0.0 };
        let v: Vec<Option<f64>> = (0..rows)
            .map(|i| match i % 97 {
                0 => None,
                1 => Some(f64::NAN),
                _ => Some(((i * (7919 + c)) % 1000) as f64 / 100.0 + s),
            })
            .collect();
        fields.push((format!("f{c}"), Arc::new(Float64Array::from(v))));
    }
    let codes: Vec<i64> = (0..rows).map(|i| (i % 4) as i64).collect();
    fields.push(("code".into(), Arc::new(Int64Array::from(codes))));
    let words: Vec<&str> = (0..rows)
        .map(|i| ["red", "green", "blue"][if shift > 0.0 && i % 2 == 0 { 0 } else { i % 3 }])
        .collect();
    fields.push(("colour".into(), Arc::new(StringArray::from(words))));
    let batch = arrow::array::RecordBatch::try_from_iter(fields).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_columns_read_in_groups_give_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (dir.path().join("r.parquet"), dir.path().join("c.parquet"));
    write_parquet(&r, 3000, 7, 0.0);
    write_parquet(&c, 2500, 7, 2.0);
    let whole = drift_files(&r, &c, &DriftOptions::default()).unwrap();
    let one_by_one = drift_files(
        &r,
        &c,
        &DriftOptions {
            memory_budget_bytes: 1,
            ..DriftOptions::default()
        },
    )
    .unwrap();
    assert_eq!(whole, one_by_one);
    assert_eq!((whole.reference_rows, whole.current_rows), (3000, 2500));
    let names: Vec<&str> = whole.columns.iter().map(|c| c.column.as_str()).collect();
    assert_eq!(
        names,
        ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "code", "colour"]
    );
    for col in &whole.columns[..7] {
        assert_eq!(col.method, "wasserstein");
        assert_eq!(
            col.drifted,
            col.column != "f1" && col.column != "f3" && col.column != "f5"
        );
        // Nulls and NaN are dropped: 2 of every 97 rows.
        assert!(col.reference_count < 3000 && col.reference_count > 2900);
    }
    assert_eq!(whole.columns[7].kind, "categorical");
    assert_eq!(whole.columns[7].distinct, 4);
    assert!(!whole.columns[7].drifted);
    assert!(whole.columns[8].drifted, "{:?}", whole.columns[8]);
    // Only the asked-for columns, in the asked-for order.
    let some = drift_files(
        &r,
        &c,
        &DriftOptions {
            columns: Some(vec!["colour".into(), "f2".into()]),
            memory_budget_bytes: 1,
            ..DriftOptions::default()
        },
    )
    .unwrap();
    let names: Vec<&str> = some.columns.iter().map(|c| c.column.as_str()).collect();
    assert_eq!(names, ["colour", "f2"]);
}
