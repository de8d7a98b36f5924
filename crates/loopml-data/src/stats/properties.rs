//! Property tests of the drift statistics: no drift between identical samples, certain drift
//! for a one-sigma shift, and symmetry where a statistic is symmetric.

use proptest::prelude::*;

use super::*;

/// SplitMix64 → uniform(0, 1] → Box–Muller: reproducible normal samples from a proptest seed.
fn normals(seed: u64, n: usize, mean: f64) -> Vec<f64> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            mean + (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

/// The methods Evidently applies to continuous numeric data (chi-square and Z only see numeric
/// columns with at most 5 distinct values, where they treat values as categories).
const CONTINUOUS: [DriftMethod; 11] = [
    DriftMethod::Ks,
    DriftMethod::Wasserstein,
    DriftMethod::JensenShannon,
    DriftMethod::Psi,
    DriftMethod::KlDiv,
    DriftMethod::Hellinger,
    DriftMethod::Anderson,
    DriftMethod::CramerVonMises,
    DriftMethod::EnergyDistance,
    DriftMethod::MannWhitney,
    DriftMethod::TTest,
];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300) || (a - b).abs() <= 1e-15
}

/// Distinct values (a sample of distinct reals has no ties, as continuous data).
fn distinct_sample() -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-1e3f64..1e3, 2..120).prop_map(|mut v| {
        v.sort_unstable_by(f64::total_cmp);
        v.dedup();
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn identical_samples_never_drift(xs in distinct_sample()) {
        prop_assume!(xs.len() >= 2);
        let mut shuffled = xs.clone();
        shuffled.reverse();
        for m in DriftMethod::ALL {
            let v = m.detect_numeric(&xs, &shuffled, None).unwrap();
            prop_assert!(!v.drifted, "{m} drifted on identical samples: {v:?}");
        }
    }

    #[test]
    fn proportional_counts_never_drift(
        counts in proptest::collection::vec(1u64..500, 2..30),
        factor in 1u64..5,
    ) {
        let c: Vec<CategoryCount> =
            counts.iter().map(|&r| CategoryCount::new(r, r * factor)).collect();
        for m in DriftMethod::ALL.into_iter().filter(|m| m.supports(ColumnKind::Categorical)) {
            let v = m.detect_categorical(&c, None).unwrap();
            prop_assert!(!v.drifted, "{m} drifted on proportional counts: {v:?}");
        }
    }

    #[test]
    fn one_sigma_shift_always_drifts(seed in any::<u64>()) {
        let reference = normals(seed, 500, 0.0);
        let current = normals(seed ^ 0xDEAD_BEEF, 500, 1.0);
        for m in CONTINUOUS {
            let v = m.detect_numeric(&reference, &current, None).unwrap();
            prop_assert!(v.drifted, "{m} missed a one-sigma shift: {v:?}");
        }
    }

    #[test]
    fn symmetric_statistics_are_symmetric(
        a in proptest::collection::vec(-50f64..50.0, 2..80),
        b in proptest::collection::vec(-50f64..50.0, 2..80),
    ) {
        let ab = ks_2samp(&a, &b).unwrap();
        let ba = ks_2samp(&b, &a).unwrap();
        prop_assert_eq!(ab.statistic, ba.statistic);
        prop_assert!(close(ab.p_value, ba.p_value), "KS p {} vs {}", ab.p_value, ba.p_value);
        for f in [wasserstein_distance, energy_distance, hellinger_numeric] {
            let (x, y) = (f(&a, &b).unwrap(), f(&b, &a).unwrap());
            prop_assert!(close(x, y), "{x} vs {y}");
        }
        let (x, y) = (anderson_ksamp(&a, &b).unwrap(), anderson_ksamp(&b, &a).unwrap());
        prop_assert!(close(x.statistic, y.statistic));
        let (x, y) = (cramer_von_mises_2samp(&a, &b).unwrap(), cramer_von_mises_2samp(&b, &a).unwrap());
        prop_assert!(close(x.statistic, y.statistic) && close(x.p_value, y.p_value));
        let (x, y) = (t_test_ind(&a, &b).unwrap(), t_test_ind(&b, &a).unwrap());
        prop_assert!(close(x.statistic, -y.statistic) && close(x.p_value, y.p_value));
        let binned = evidently_binned_counts(&a, &b).unwrap();
        let swapped = BinnedCounts {
            buckets: binned.buckets.clone(),
            counts: binned.counts.iter().map(|c| CategoryCount::new(c.current, c.reference)).collect(),
        };
        for (x, y) in [
            (binned.jensen_shannon().unwrap(), swapped.jensen_shannon().unwrap()),
            (binned.psi().unwrap(), swapped.psi().unwrap()),
        ] {
            prop_assert!(close(x, y), "{x} vs {y}");
        }
    }

    #[test]
    fn categorical_distances_are_symmetric(
        pairs in proptest::collection::vec((0u64..200, 0u64..200), 1..40),
    ) {
        let c: Vec<CategoryCount> = pairs.iter().map(|&(r, k)| CategoryCount::new(r, k)).collect();
        let s: Vec<CategoryCount> = pairs.iter().map(|&(r, k)| CategoryCount::new(k, r)).collect();
        prop_assume!(count_totals(&c).is_ok());
        for f in [jensen_shannon, psi, hellinger_categorical] {
            let (x, y) = (f(&c).unwrap(), f(&s).unwrap());
            prop_assert!(close(x, y), "{x} vs {y}");
        }
        let (x, y) = (z_test(&c).unwrap(), z_test(&s).unwrap());
        prop_assert!(close(x.p_value, y.p_value));
    }

    #[test]
    fn histograms_count_every_value_once(xs in proptest::collection::vec(-1e6f64..1e6, 1..300)) {
        let edges = histogram_bin_edges_sturges(&xs).unwrap();
        prop_assert!(edges.windows(2).all(|w| w[0] < w[1]));
        let counts = histogram(&xs, &edges);
        prop_assert_eq!(counts.iter().sum::<u64>(), xs.len() as u64);
        for &x in &xs {
            let i = histogram_bin(x, &edges).unwrap();
            prop_assert!(edges[i] <= x && (x < edges[i + 1] || (i + 2 == edges.len() && x == edges[i + 1])));
        }
    }
}
