//! Two-sample drift statistics (the methods Evidently 0.7 offers), checked against SciPy.
//!
//! Numeric methods take the reference and current samples as `&[f64]` with NaN and ±inf already
//! removed by the caller (a non-finite value is rejected with [`Error::Invalid`]); an empty
//! sample is rejected with [`Error::Statistic`]. Categorical methods take one
//! [`CategoryCount`] per category, so streaming counters feed them without materialising rows.
//! Every function reproduces the SciPy / Evidently computation it is named after, branch for
//! branch (see each function's doc for the code path it follows).

mod anderson;
mod binning;
mod categorical;
mod cvm;
mod distance;
mod kolmogorov;
mod ks;
mod location;
mod method;
#[cfg(test)]
mod properties;
mod special;

pub use anderson::{AndersonResult, anderson_ksamp};
pub use binning::{
    BinnedCounts, Buckets, distinct_value_counts, evidently_binned_counts, histogram,
    histogram_bin, histogram_bin_edges_sturges, histogram_density, linspace, sturges_bin_count,
    sturges_edges,
};
pub use categorical::{
    chi_square, hellinger_categorical, hellinger_numeric, jensen_shannon, kl_div, psi, z_test,
};
pub use cvm::cramer_von_mises_2samp;
pub use distance::{energy_distance, wasserstein_distance, wasserstein_normed};
pub use ks::{KsMethod, KsResult, ks_2samp};
pub use location::{mann_whitney_u_less, t_test_ind};
pub use method::{ColumnKind, DriftMethod, DriftVerdict, DriftWhen, default_method};

use crate::error::{Error, Result};

/// How often one category (or one histogram bucket) occurs in the reference and current data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CategoryCount {
    /// Occurrences in the reference data.
    pub reference: u64,
    /// Occurrences in the current data.
    pub current: u64,
}

impl CategoryCount {
    /// A category seen `reference` times in the reference data and `current` times now.
    pub const fn new(reference: u64, current: u64) -> Self {
        Self { reference, current }
    }
}

/// A test statistic with its p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TestResult {
    /// The test statistic.
    pub statistic: f64,
    /// The p-value of the statistic under the null hypothesis "same distribution".
    pub p_value: f64,
}

/// Rejects empty or non-finite samples; `what` names the sample in the error.
fn check_sample(what: &str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(Error::Statistic(format!("the {what} sample is empty")));
    }
    if let Some(x) = xs.iter().find(|x| !x.is_finite()) {
        return Err(Error::Invalid(format!(
            "the {what} sample holds a non-finite value ({x}); drop NaN and ±inf first"
        )));
    }
    Ok(())
}

/// Checks both samples of a two-sample statistic.
fn check_samples(reference: &[f64], current: &[f64]) -> Result<()> {
    check_sample("reference", reference)?;
    check_sample("current", current)
}

/// The values in ascending order (-0.0 and 0.0 compare equal wherever it matters): borrowed
/// when already sorted (callers that sort once pay nothing here), else a sorted copy.
fn sorted(xs: &[f64]) -> std::borrow::Cow<'_, [f64]> {
    if xs.is_sorted_by(|a, b| a <= b) {
        std::borrow::Cow::Borrowed(xs)
    } else {
        let mut v = xs.to_vec();
        sort_f64(&mut v);
        std::borrow::Cow::Owned(v)
    }
}

/// Sorts ascending. Without NaN, a plain `<` comparison (about 1.5× faster than
/// `f64::total_cmp`; -0.0 and 0.0 then compare equal); with NaN, `total_cmp`.
pub fn sort_f64(xs: &mut [f64]) {
    use std::cmp::Ordering;
    if xs.iter().any(|x| x.is_nan()) {
        xs.sort_unstable_by(f64::total_cmp);
    } else {
        xs.sort_unstable_by(|a, b| {
            if a < b {
                Ordering::Less
            } else if a > b {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
    }
}

/// Totals of both sides of category counts, ignoring categories absent on both sides.
fn count_totals(counts: &[CategoryCount]) -> Result<(u64, u64)> {
    let (mut r, mut c) = (0u64, 0u64);
    for k in counts {
        r = r.checked_add(k.reference).ok_or_else(overflow)?;
        c = c.checked_add(k.current).ok_or_else(overflow)?;
    }
    if r == 0 {
        return Err(Error::Statistic("the reference data has no values".into()));
    }
    if c == 0 {
        return Err(Error::Statistic("the current data has no values".into()));
    }
    Ok((r, c))
}

/// The error for counts whose total does not fit in 64 bits.
fn overflow() -> Error {
    Error::Invalid("category counts overflow 64 bits".into())
}

/// Pairwise summation as NumPy's `np.sum` does it (blocks of 128 unrolled by 8), so long sums
/// keep NumPy's accuracy (error O(log n) ulps rather than O(n)).
fn np_sum(xs: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = xs.len();
    if n < 8 {
        let mut s = -0.0;
        for &x in xs {
            s += x;
        }
        s
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&xs[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += xs[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += xs[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_sum(&xs[..n2]) + np_sum(&xs[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_f64_sorts_like_total_cmp() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut xs: Vec<f64> = (0..20_000)
            .map(|i| match i % 7 {
                0 => f64::from_bits(next()),
                1 => -0.0,
                2 => 0.0,
                3 => f64::INFINITY,
                4 => -((next() % 1000) as f64),
                _ => (next() % 100_000) as f64 / 7.0,
            })
            .filter(|x| !x.is_nan())
            .collect();
        let mut want = xs.clone();
        want.sort_unstable_by(f64::total_cmp);
        sort_f64(&mut xs);
        assert_eq!(xs, want); // -0.0 == 0.0
        let mut with_nan = vec![1.0, f64::NAN, -1.0];
        sort_f64(&mut with_nan);
        assert_eq!(&with_nan[..2], &[-1.0, 1.0]);
        let mut same = vec![2.5; 10_000];
        sort_f64(&mut same);
        assert!(same.iter().all(|&x| x == 2.5));
        assert!(matches!(sorted(&want), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn np_sum_matches_plain_sum_on_exact_values() {
        let xs: Vec<f64> = (0..1000).map(f64::from).collect();
        assert_eq!(np_sum(&xs), 499_500.0);
        assert_eq!(np_sum(&xs[..5]), 10.0);
        assert_eq!(np_sum(&xs[..100]), 4950.0);
    }

    #[test]
    fn empty_and_non_finite_samples_are_rejected() {
        assert!(matches!(
            check_samples(&[], &[1.0]),
            Err(Error::Statistic(_))
        ));
        assert!(matches!(
            check_samples(&[1.0], &[f64::NAN]),
            Err(Error::Invalid(_))
        ));
        assert!(check_samples(&[1.0], &[2.0]).is_ok());
    }
}
