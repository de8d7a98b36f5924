//! Tests and distances on per-category (or per-bucket) counts, as Evidently computes them:
//! chi-square, two-proportion Z-test, Jensen–Shannon, PSI, KL divergence and Hellinger.
//!
//! Categories with a zero count on both sides are skipped: Evidently only sees the union of the
//! categories that occur, so a zero/zero entry from a fixed category list must not change a score.
//! Histogram buckets are different: Evidently keeps empty Sturges bins, and they change KL through
//! the zero fill, so [`BinnedCounts`] scores keep every bucket.

use super::binning::{
    BinnedCounts, distinct_value_counts, histogram, histogram_density, sturges_edges,
};
use super::special::{chi2_sf, ndtr};
use super::{CategoryCount, TestResult, check_samples, count_totals, np_sum};
use crate::error::{Error, Result};

/// The categories that occur on at least one side.
fn present(counts: &[CategoryCount]) -> impl Iterator<Item = &CategoryCount> {
    counts.iter().filter(|c| c.reference > 0 || c.current > 0)
}

/// Per-side frequencies `count / total` of the present categories (of every bucket when
/// `keep_empty`).
fn frequencies(counts: &[CategoryCount], keep_empty: bool) -> Result<(Vec<f64>, Vec<f64>)> {
    let (nr, nc) = count_totals(counts)?;
    Ok(counts
        .iter()
        .filter(|c| keep_empty || c.reference > 0 || c.current > 0)
        .map(|c| (c.reference as f64 / nr as f64, c.current as f64 / nc as f64))
        .unzip())
}

/// Evidently's zero fill for PSI and KL: empty buckets get `min_nonzero / 1e6` when the smallest
/// non-zero frequency is at most 1e-4, else 1e-4 (per side).
fn zero_fill(p: &mut [f64]) {
    let min_nonzero = p
        .iter()
        .copied()
        .filter(|x| *x != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min_nonzero.is_finite() {
        return;
    }
    let fill = if min_nonzero <= 0.0001 {
        min_nonzero / 1e6
    } else {
        0.0001
    };
    for x in p.iter_mut().filter(|x| **x == 0.0) {
        *x = fill;
    }
}

/// `scipy.special.rel_entr(x, y)`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Divides each element by the (pairwise) sum, as SciPy normalises distributions.
fn normalise(p: &[f64]) -> Vec<f64> {
    let s = np_sum(p);
    p.iter().map(|x| x / s).collect()
}

/// Evidently's `chisquare` test: expected = reference counts × n_cur / n_ref over the union of
/// categories, `scipy.stats.chisquare(f_obs=current, f_exp=expected)`.
///
/// A category absent from the reference makes the statistic infinite and the p-value 0, as in
/// SciPy. Fewer than two categories is an [`Error::Statistic`] (SciPy returns NaN there).
pub fn chi_square(counts: &[CategoryCount]) -> Result<TestResult> {
    let (nr, nc) = count_totals(counts)?;
    let k_norm = nc as f64 / nr as f64;
    let terms: Vec<f64> = present(counts)
        .map(|c| {
            let exp = c.reference as f64 * k_norm;
            let d = c.current as f64 - exp;
            d * d / exp
        })
        .collect();
    if terms.len() < 2 {
        return Err(Error::Statistic(
            "chi-square needs at least two categories".into(),
        ));
    }
    let statistic = np_sum(&terms);
    let dof = (terms.len() - 1) as f64;
    Ok(TestResult {
        statistic,
        p_value: chi2_sf(dof, statistic),
    })
}

/// Evidently's `z` test: the first present category (pass categories in ascending sort order)
/// is coded 0 and every other category 1, then a pooled two-proportion Z-test with a two-sided
/// normal p-value `2·(1 − Φ(|z|))`.
///
/// When both sides hold one and the same single category the p-value is 1 (and the statistic 0).
pub fn z_test(counts: &[CategoryCount]) -> Result<TestResult> {
    let (nr, nc) = count_totals(counts)?;
    let mut it = present(counts);
    let first = it
        .next()
        .ok_or_else(|| Error::Statistic("no categories".into()))?;
    let ref_kinds = present(counts).filter(|c| c.reference > 0).count();
    let cur_kinds = present(counts).filter(|c| c.current > 0).count();
    let same_single = ref_kinds == 1
        && cur_kinds == 1
        && present(counts).any(|c| c.reference > 0 && c.current > 0);
    if same_single {
        return Ok(TestResult {
            statistic: 0.0,
            p_value: 1.0,
        });
    }
    let (n1, n2) = (nr as f64, nc as f64);
    let p1 = (nr - first.reference) as f64 / n1;
    let p2 = (nc - first.current) as f64 / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    Ok(TestResult {
        statistic: z,
        p_value: 2.0 * (1.0 - ndtr(z.abs())),
    })
}

/// `scipy.spatial.distance.jensenshannon(p_ref, p_cur)` (natural log) on the per-side
/// frequencies, without Evidently's zero fill: the Jensen–Shannon *distance*.
pub fn jensen_shannon(counts: &[CategoryCount]) -> Result<f64> {
    js_from(frequencies(counts, false)?)
}

/// Evidently's PSI: `Σ (ref_i − cur_i) · ln(ref_i / cur_i)` on zero-filled frequencies.
pub fn psi(counts: &[CategoryCount]) -> Result<f64> {
    psi_from(frequencies(counts, false)?)
}

/// Evidently's `kl_div`: `scipy.stats.entropy(ref, cur)` (natural log) on zero-filled
/// frequencies, i.e. KL(ref ‖ cur).
pub fn kl_div(counts: &[CategoryCount]) -> Result<f64> {
    kl_from(frequencies(counts, false)?)
}

impl BinnedCounts {
    /// Jensen–Shannon distance over these buckets (Evidently's `jensenshannon`).
    pub fn jensen_shannon(&self) -> Result<f64> {
        js_from(frequencies(&self.counts, true)?)
    }

    /// PSI over these buckets, empty buckets zero-filled (Evidently's `psi`).
    pub fn psi(&self) -> Result<f64> {
        psi_from(frequencies(&self.counts, true)?)
    }

    /// KL(ref ‖ cur) over these buckets, empty buckets zero-filled (Evidently's `kl_div`).
    pub fn kl_div(&self) -> Result<f64> {
        kl_from(frequencies(&self.counts, true)?)
    }
}

fn js_from((p, q): (Vec<f64>, Vec<f64>)) -> Result<f64> {
    let p = normalise(&p);
    let q = normalise(&q);
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let left: Vec<f64> = p.iter().zip(&m).map(|(a, b)| rel_entr(*a, *b)).collect();
    let right: Vec<f64> = q.iter().zip(&m).map(|(a, b)| rel_entr(*a, *b)).collect();
    let js = np_sum(&left) + np_sum(&right);
    Ok((js / 2.0).sqrt())
}

fn psi_from((mut p, mut q): (Vec<f64>, Vec<f64>)) -> Result<f64> {
    zero_fill(&mut p);
    zero_fill(&mut q);
    let terms: Vec<f64> = p
        .iter()
        .zip(&q)
        .map(|(r, c)| (r - c) * (r / c).ln())
        .collect();
    Ok(np_sum(&terms))
}

fn kl_from((mut p, mut q): (Vec<f64>, Vec<f64>)) -> Result<f64> {
    zero_fill(&mut p);
    zero_fill(&mut q);
    let p = normalise(&p);
    let q = normalise(&q);
    let terms: Vec<f64> = p.iter().zip(&q).map(|(a, b)| rel_entr(*a, *b)).collect();
    Ok(np_sum(&terms))
}

/// `√(1 − clip(Σ w_i·√(p_i q_i), 0, 1))`, summed in order as Evidently's Python loop does.
fn hellinger_from(p: &[f64], q: &[f64], width: f64) -> f64 {
    let mut bc = 0.0f64;
    for (a, b) in p.iter().zip(q) {
        bc += (a * b).sqrt() * width;
    }
    (1.0 - bc.clamp(0.0, 1.0)).sqrt()
}

/// Evidently's Hellinger distance for a categorical column: `√(1 − Σ √(p_i q_i))` on the
/// per-side frequencies (no zero fill).
pub fn hellinger_categorical(counts: &[CategoryCount]) -> Result<f64> {
    let (p, q) = frequencies(counts, false)?;
    Ok(hellinger_from(&p, &q, 1.0))
}

/// Evidently's Hellinger distance for a numeric column, including its binning quirk: Sturges
/// edges over the *distinct* values of both samples (so the bin count follows the number of
/// distinct values, not of rows), `np.histogram(..., density=True)` per side, and the densities
/// weighted by the mean bin width.
pub fn hellinger_numeric(reference: &[f64], current: &[f64]) -> Result<f64> {
    check_samples(reference, current)?;
    let keys = distinct_value_counts(reference, current);
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Err(Error::Statistic("no values to bin".into()));
    };
    let edges = sturges_edges(first.0, last.0, keys.len())?;
    let h1 = histogram_density(&histogram(reference, &edges), &edges);
    let h2 = histogram_density(&histogram(current, &edges), &edges);
    let (lo, hi) = (edges[0], edges[edges.len() - 1]);
    let width = (hi - lo) / (edges.len() - 1) as f64;
    Ok(hellinger_from(&h1, &h2, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(pairs: &[(u64, u64)]) -> Vec<CategoryCount> {
        pairs
            .iter()
            .map(|&(r, c)| CategoryCount::new(r, c))
            .collect()
    }

    #[test]
    fn chi_square_known_value() {
        // chisquare([10, 20, 30], [20, 20, 20]) = (10.0, 0.006737946999085467)
        let r = chi_square(&cc(&[(20, 10), (20, 20), (20, 30)])).unwrap();
        assert_eq!(r.statistic, 10.0);
        assert!((r.p_value - 0.006_737_946_999_085_467).abs() < 1e-16);
    }

    #[test]
    fn chi_square_category_missing_from_reference_is_certain_drift() {
        let r = chi_square(&cc(&[(10, 5), (0, 5)])).unwrap();
        assert_eq!((r.statistic, r.p_value), (f64::INFINITY, 0.0));
        assert!(chi_square(&cc(&[(3, 4)])).is_err());
    }

    #[test]
    fn zero_zero_categories_are_ignored() {
        let a = cc(&[(5, 3), (2, 6)]);
        let b = cc(&[(0, 0), (5, 3), (0, 0), (2, 6)]);
        assert_eq!(psi(&a).unwrap(), psi(&b).unwrap());
        assert_eq!(z_test(&a).unwrap(), z_test(&b).unwrap());
    }

    #[test]
    fn z_test_single_shared_value_is_p_one() {
        let r = z_test(&cc(&[(0, 0), (7, 9)])).unwrap();
        assert_eq!(r.p_value, 1.0);
    }

    #[test]
    fn identical_distributions_have_zero_distances() {
        let c = cc(&[(10, 20), (30, 60), (5, 10)]);
        assert!(jensen_shannon(&c).unwrap().abs() < 1e-12);
        assert!(psi(&c).unwrap().abs() < 1e-15);
        assert!(kl_div(&c).unwrap().abs() < 1e-15);
        assert!(hellinger_categorical(&c).unwrap() < 1e-7);
    }
}
