//! Location tests Evidently offers: Mann–Whitney U (`mannw`, alternative "less") and Student's
//! two-sample t-test (`t_test`).

use super::special::{ndtr, student_t_sf};
use super::{TestResult, check_samples, np_sum, sorted};
use crate::error::{Error, Result};

/// `scipy.stats.mannwhitneyu(reference, current, alternative="less")`, as Evidently's `mannw`.
///
/// The statistic is U of the reference sample. The p-value is exact when either sample has at
/// most 8 values and there are no ties (the null distribution counted exactly, SciPy's `_MWU`),
/// else the normal approximation with tie correction and continuity correction.
pub fn mann_whitney_u_less(reference: &[f64], current: &[f64]) -> Result<TestResult> {
    check_samples(reference, current)?;
    let xs = sorted(reference);
    let ys = sorted(current);
    let (n1, n2) = (xs.len(), ys.len());
    // Rank sum of the reference and the tie groups of the pooled sample.
    let (mut i, mut j) = (0usize, 0usize);
    let mut r1 = 0.0f64;
    let mut tie_term = 0.0f64;
    let mut ties = false;
    while i < n1 || j < n2 {
        let v = match (xs.get(i), ys.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let below = (i + j) as f64;
        let (i0, j0) = (i, j);
        while i < n1 && xs[i] == v {
            i += 1;
        }
        while j < n2 && ys[j] == v {
            j += 1;
        }
        let t = ((i - i0) + (j - j0)) as f64;
        if t > 1.0 {
            ties = true;
        }
        tie_term += t * t * t - t;
        r1 += (i - i0) as f64 * (below + (t + 1.0) / 2.0);
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u1 = r1 - f1 * (f1 + 1.0) / 2.0;
    let u2 = f1 * f2 - u1;
    let exact = !((n1 > 8 && n2 > 8) || ties);
    let p = if exact {
        mwu_exact_sf(u2, n1, n2)
    } else {
        let mu = f1 * f2 / 2.0;
        let n = f1 + f2;
        let s = (f1 * f2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
        let z = (u2 - mu - 0.5) / s;
        ndtr(-z)
    };
    Ok(TestResult {
        statistic: u1,
        p_value: p.clamp(0.0, 1.0),
    })
}

/// `Pr(U >= u)` under the null for sample sizes n1, n2 (no ties): coefficients of the Gaussian
/// binomial `[n1+n2 choose n1]_q`, counted exactly in 128-bit integers (in floating point when
/// the table would exceed 4M entries, i.e. one sample beyond ~500k values).
fn mwu_exact_sf(u: f64, n1: usize, n2: usize) -> f64 {
    let (a, b) = (n1.min(n2), n1.max(n2));
    let max_u = a * b;
    let k = u.ceil().max(0.0) as usize;
    if max_u <= 1 << 22 {
        let poly = gaussian_binomial::<i128>(a, b);
        let total: i128 = poly.iter().sum();
        let hits: i128 = poly.iter().skip(k).sum();
        hits as f64 / total as f64
    } else {
        let poly = gaussian_binomial::<f64>(a, b);
        let total: f64 = poly.iter().sum();
        let hits: f64 = poly.iter().skip(k).sum();
        hits / total
    }
}

/// Coefficients of `Π_{i=1..a} (1 − q^{b+i}) / (1 − q^i)` up to degree `a·b`, one factor at a
/// time; every partial product is itself a Gaussian binomial, so the coefficients stay bounded
/// by C(b+i, i).
fn gaussian_binomial<T>(a: usize, b: usize) -> Vec<T>
where
    T: Copy + Default + From<u8> + std::ops::AddAssign + std::ops::SubAssign,
{
    let max_u = a * b;
    let mut poly = vec![T::default(); max_u + 1];
    poly[0] = T::from(1u8);
    for i in 1..=a {
        let shift = b + i;
        for d in (shift..=max_u).rev() {
            let lower = poly[d - shift];
            poly[d] -= lower;
        }
        for d in i..=max_u {
            let lower = poly[d - i];
            poly[d] += lower;
        }
    }
    poly
}

/// `scipy.stats.ttest_ind(reference, current)` (pooled variance), Evidently's `t_test`.
///
/// Needs at least three values in total, and not both samples constant at the same value
/// ([`Error::Statistic`] otherwise; SciPy returns NaN there).
pub fn t_test_ind(reference: &[f64], current: &[f64]) -> Result<TestResult> {
    check_samples(reference, current)?;
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    let df = n1 + n2 - 2.0;
    if df <= 0.0 {
        return Err(Error::Statistic(
            "the t-test needs at least three values in total".into(),
        ));
    }
    let mean_var = |xs: &[f64]| {
        let n = xs.len() as f64;
        let m = np_sum(xs) / n;
        let sq: Vec<f64> = xs.iter().map(|x| (x - m) * (x - m)).collect();
        let v = if xs.len() > 1 {
            np_sum(&sq) / (n - 1.0)
        } else {
            0.0
        };
        (m, v)
    };
    let (m1, v1) = mean_var(reference);
    let (m2, v2) = mean_var(current);
    let svar = ((n1 - 1.0) * v1 + (n2 - 1.0) * v2) / df;
    let denom = (svar * (1.0 / n1 + 1.0 / n2)).sqrt();
    if denom == 0.0 && m1 == m2 {
        return Err(Error::Statistic(
            "the t-test is undefined when both samples hold one and the same value".into(),
        ));
    }
    // Two different constants give t = ±inf and p = 0, as in SciPy.
    let t = (m1 - m2) / denom;
    Ok(TestResult {
        statistic: t,
        p_value: (2.0 * student_t_sf(df, t.abs())).clamp(0.0, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_mwu_distribution_sums_to_one() {
        assert_eq!(mwu_exact_sf(0.0, 3, 4), 1.0);
        // U can reach 12 in exactly one of C(7, 3) = 35 arrangements.
        assert!((mwu_exact_sf(12.0, 3, 4) - 1.0 / 35.0).abs() < 1e-15);
    }
}
