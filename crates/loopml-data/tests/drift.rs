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
