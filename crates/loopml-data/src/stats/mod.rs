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

/// A sorted copy (ascending; -0.0 and 0.0 compare equal wherever it matters).
fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v
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
