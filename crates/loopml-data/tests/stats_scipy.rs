//! loopml's drift statistics against SciPy 1.17 / Evidently 0.7.23 reference values
//! (`tests/fixtures/scipy_reference.json`, produced by `tests/fixtures/gen_scipy_fixtures.py`).
//!
//! Tolerances: statistics and distances agree to 1e-9 relative, p-values to 1e-6 relative.
//! Values near zero are compared absolutely instead: a statistic within 1e-12 and a p-value
//! within 1e-12 of SciPy's counts as equal (SciPy computes many p-values as `1 − cdf`, so its
//! own absolute error there is ~1e-16 and relative comparison of a 1e-14 p-value is noise).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use loopml_data::stats::{
    self, CategoryCount, DriftMethod, KsMethod, anderson_ksamp, cramer_von_mises_2samp,
    energy_distance, evidently_binned_counts, histogram_bin_edges_sturges, ks_2samp,
    mann_whitney_u_less, t_test_ind, wasserstein_distance,
};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/scipy_reference.json");

const STAT_RTOL: f64 = 1e-9;
const STAT_ATOL: f64 = 1e-12;
const P_RTOL: f64 = 1e-6;
const P_ATOL: f64 = 1e-12;

fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => panic!("unexpected number string {other}"),
        },
        other => panic!("not a number: {other}"),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

/// Collects comparisons; keeps the worst relative error per quantity and every failure.
#[derive(Default)]
struct Checker {
    /// Worst (relative, absolute) difference per quantity.
    worst: BTreeMap<String, (f64, f64)>,
    count: usize,
    failures: Vec<String>,
}

impl Checker {
    fn check(&mut self, case: &str, what: &str, got: f64, want: f64, is_p: bool) {
        self.count += 1;
        let (rtol, atol) = if is_p {
            (P_RTOL, P_ATOL)
        } else {
            (STAT_RTOL, STAT_ATOL)
        };
        let ok = if want.is_nan() {
            got.is_nan()
        } else if want.is_infinite() {
            got == want
        } else {
            let d = (got - want).abs();
            let rel = if want == 0.0 { d } else { d / want.abs() };
            let w = self.worst.entry(what.to_string()).or_insert((0.0, 0.0));
            w.0 = w.0.max(rel);
            w.1 = w.1.max(d);
            d <= atol || rel <= rtol
        };
        if !ok {
            self.failures
                .push(format!("{case}: {what} = {got:e}, SciPy {want:e}"));
        }
    }

    fn expect_error<T: std::fmt::Debug>(
        &mut self,
        case: &str,
        what: &str,
        r: loopml_data::Result<T>,
    ) {
        self.count += 1;
        if let Ok(v) = r {
            self.failures.push(format!(
                "{case}: {what} = {v:?}, SciPy raised or returned NaN"
            ));
        }
    }

    fn finish(self) {
        println!(
            "{} comparisons; worst relative / absolute difference:",
            self.count
        );
        for (k, (rel, abs)) in &self.worst {
            println!("  {k:<28} {rel:.3e}  {abs:.3e}");
        }
        assert!(
            self.failures.is_empty(),
            "{} mismatches:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

#[test]
fn fixture_records_its_provenance() {
    let doc = fixture();
    assert_eq!(doc["scipy"], "1.17.1");
    assert!(doc["numpy"].as_str().unwrap().starts_with("2."));
    assert!(doc["numeric"].as_array().unwrap().len() >= 30);
    assert!(doc["categorical"].as_array().unwrap().len() >= 10);
}

#[test]
fn numeric_statistics_match_scipy() {
    let doc = fixture();
    let mut c = Checker::default();
    let mut ks_methods = BTreeMap::<&str, usize>::new();
    for case in doc["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = nums(&case["reference"]);
        let k = nums(&case["current"]);

        let ks = ks_2samp(&r, &k).unwrap();
        c.check(
            name,
            "ks.statistic",
            ks.statistic,
            num(&case["ks"]["statistic"]),
            false,
        );
        c.check(
            name,
            "ks.pvalue",
            ks.p_value,
            num(&case["ks"]["pvalue"]),
            true,
        );
        let want_method = match case["ks"]["method"].as_str().unwrap() {
            "exact" => KsMethod::Exact,
            _ => KsMethod::Asymptotic,
        };
        assert_eq!(ks.method, want_method, "{name}: KS method");
        *ks_methods
            .entry(if want_method == KsMethod::Exact {
                "exact"
            } else {
                "asymptotic"
            })
            .or_default() += 1;

        c.check(
            name,
            "wasserstein_distance",
            wasserstein_distance(&r, &k).unwrap(),
            num(&case["wasserstein"]),
            false,
        );
        c.check(
            name,
            "energy_distance",
            energy_distance(&r, &k).unwrap(),
            num(&case["energy"]),
            false,
        );

        let ad = &case["anderson"];
        if ad.get("error").is_some() {
            c.expect_error(name, "anderson_ksamp", anderson_ksamp(&r, &k));
        } else {
            let got = anderson_ksamp(&r, &k).unwrap();
            c.check(
                name,
                "anderson.statistic",
                got.statistic,
                num(&ad["statistic"]),
                false,
            );
            c.check(
                name,
                "anderson.pvalue",
                got.significance_level,
                num(&ad["pvalue"]),
                true,
            );
        }

        let cvm = &case["cramer_von_mises"];
        if cvm.get("error").is_some() {
            c.expect_error(name, "cramer_von_mises", cramer_von_mises_2samp(&r, &k));
        } else {
            let got = cramer_von_mises_2samp(&r, &k).unwrap();
            let tag = cvm["method"].as_str().unwrap();
            c.check(
                name,
                "cvm.statistic",
                got.statistic,
                num(&cvm["statistic"]),
                false,
            );
            c.check(
                name,
                &format!("cvm.pvalue ({tag})"),
                got.p_value,
                num(&cvm["pvalue"]),
                true,
            );
        }

        let mw = &case["mannwhitneyu_less"];
        let got = mann_whitney_u_less(&r, &k).unwrap();
        c.check(
            name,
            "mannwhitneyu.statistic",
            got.statistic,
            num(&mw["statistic"]),
            false,
        );
        c.check(
            name,
            "mannwhitneyu.pvalue",
            got.p_value,
            num(&mw["pvalue"]),
            true,
        );

        let tt = &case["ttest_ind"];
        if tt.get("error").is_some() {
            c.expect_error(name, "ttest_ind", t_test_ind(&r, &k));
        } else {
            let got = t_test_ind(&r, &k).unwrap();
            c.check(
                name,
                "ttest.statistic",
                got.statistic,
                num(&tt["statistic"]),
                false,
            );
            c.check(name, "ttest.pvalue", got.p_value, num(&tt["pvalue"]), true);
        }
    }
    println!("KS cases by SciPy method: {ks_methods:?}");
    assert!(ks_methods.get("asymptotic").copied().unwrap_or(0) >= 3);
    c.finish();
}

#[test]
fn sturges_edges_match_numpy() {
    let doc = fixture();
    for case in doc["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut all = nums(&case["reference"]);
        all.extend(nums(&case["current"]));
        let want = nums(&case["sturges_edges"]);
        let got = histogram_bin_edges_sturges(&all).unwrap();
        // Bit-for-bit: the bin count and np.linspace's arithmetic are reproduced exactly.
        assert_eq!(got, want, "{name}: Sturges edges");
    }
}

#[test]
fn evidently_numeric_scores_match() {
    let doc = fixture();
    let mut c = Checker::default();
    for case in doc["numeric"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = nums(&case["reference"]);
        let k = nums(&case["current"]);
        let ev = &case["evidently"];
        for (method, key) in [
            (DriftMethod::Wasserstein, "wasserstein"),
            (DriftMethod::JensenShannon, "jensenshannon"),
            (DriftMethod::Psi, "psi"),
            (DriftMethod::KlDiv, "kl_div"),
            (DriftMethod::Hellinger, "hellinger"),
        ] {
            let got = method.score_numeric(&r, &k).unwrap();
            c.check(name, key, got, num(&ev[key]), false);
        }
        c.check(
            name,
            "z (numeric)",
            DriftMethod::Z.score_numeric(&r, &k).unwrap(),
            num(&ev["z"]),
            true,
        );
        if let Some(chi) = ev.get("chisquare") {
            let counts: Vec<CategoryCount> = stats::distinct_value_counts(&r, &k)
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            let got = stats::chi_square(&counts).unwrap();
            c.check(
                name,
                "chisquare.statistic",
                got.statistic,
                num(&chi["statistic"]),
                false,
            );
            c.check(
                name,
                "chisquare.pvalue",
                got.p_value,
                num(&chi["pvalue"]),
                true,
            );
        } else {
            c.expect_error(
                name,
                "chisquare",
                DriftMethod::ChiSquare.score_numeric(&r, &k),
            );
        }
        // The binned counts behind JS/PSI/KL sum to each side's size.
        let b = evidently_binned_counts(&r, &k).unwrap();
        let (sr, sc) = b
            .counts
            .iter()
            .fold((0, 0), |(a, b), x| (a + x.reference, b + x.current));
        assert_eq!((sr as usize, sc as usize), (r.len(), k.len()), "{name}");
    }
    c.finish();
}

#[test]
fn evidently_categorical_scores_match() {
    let doc = fixture();
    let mut c = Checker::default();
    for case in doc["categorical"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let counts: Vec<CategoryCount> = case["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| CategoryCount::new(p[0].as_u64().unwrap(), p[1].as_u64().unwrap()))
            .collect();
        if let Some(chi) = case.get("chisquare") {
            let got = stats::chi_square(&counts).unwrap();
            c.check(
                name,
                "chisquare.statistic",
                got.statistic,
                num(&chi["statistic"]),
                false,
            );
            c.check(
                name,
                "chisquare.pvalue",
                got.p_value,
                num(&chi["pvalue"]),
                true,
            );
        } else {
            c.expect_error(name, "chisquare", stats::chi_square(&counts));
        }
        for (method, key, is_p) in [
            (DriftMethod::Z, "z", true),
            (DriftMethod::JensenShannon, "jensenshannon", false),
            (DriftMethod::Psi, "psi", false),
            (DriftMethod::KlDiv, "kl_div", false),
            (DriftMethod::Hellinger, "hellinger", false),
        ] {
            let got = method.score_categorical(&counts).unwrap();
            c.check(name, key, got, num(&case[key]), is_p);
        }
    }
    c.finish();
}
