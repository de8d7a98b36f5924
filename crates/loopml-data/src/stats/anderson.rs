//! k-sample Anderson–Darling test for two samples, as `scipy.stats.anderson_ksamp([ref, cur])`
//! computes it by default (midrank statistic of Scholz & Stephens 1987, eq. 7; p-value
//! interpolated from their Table 2 and capped to [0.001, 0.25]).

use super::{check_samples, np_sum, sorted};
use crate::error::{Error, Result};

/// Significance levels of Scholz & Stephens' Table 2, as SciPy lists them.
const SIG: [f64; 7] = [0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001];
const B0: [f64; 7] = [0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085];
const B1: [f64; 7] = [-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615];
const B2: [f64; 7] = [-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154];

/// The result of [`anderson_ksamp`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AndersonResult {
    /// The normalised k-sample statistic `(A²akN − (k−1)) / σ`.
    pub statistic: f64,
    /// SciPy's `significance_level` (= `pvalue`): interpolated, capped at 0.25 and floored at
    /// 0.001 (SciPy warns when it caps; the value is what Evidently reports).
    pub significance_level: f64,
}

/// `scipy.stats.anderson_ksamp([reference, current])` with its defaults (midrank variant,
/// tabulated p-value).
///
/// Needs at least two distinct values and four values in total (SciPy raises or returns NaN
/// below that); both cases are [`Error::Statistic`].
pub fn anderson_ksamp(reference: &[f64], current: &[f64]) -> Result<AndersonResult> {
    check_samples(reference, current)?;
    let samples = [sorted(reference), sorted(current)];
    let mut z: Vec<f64> = samples.concat();
    z.sort_unstable_by(f64::total_cmp);
    let n_total = z.len();
    // Distinct values with the number of values below each and its multiplicity.
    let mut zstar: Vec<(f64, usize, usize)> = Vec::new();
    let mut i = 0usize;
    while i < n_total {
        let v = z[i];
        let start = i;
        while i < n_total && z[i] == v {
            i += 1;
        }
        zstar.push((v, start, i - start));
    }
    if zstar.len() < 2 {
        return Err(Error::Statistic(
            "anderson_ksamp needs more than one distinct observation".into(),
        ));
    }
    if n_total < 4 {
        return Err(Error::Statistic(
            "anderson_ksamp needs at least 4 observations in total".into(),
        ));
    }
    let nf = n_total as f64;
    let all_distinct = n_total == zstar.len();
    let mut a2akn = 0.0f64;
    for s in &samples {
        let ni = s.len() as f64;
        let mut inner = Vec::with_capacity(zstar.len());
        let mut pos = 0usize; // values of s below the current distinct value
        for &(v, left, count) in &zstar {
            while pos < s.len() && s[pos] < v {
                pos += 1;
            }
            let mut upto = pos;
            while upto < s.len() && s[upto] == v {
                upto += 1;
            }
            let fij = (upto - pos) as f64;
            let mij = upto as f64 - fij / 2.0;
            let lj = if all_distinct { 1.0 } else { count as f64 };
            let bj = left as f64 + lj / 2.0;
            let num = nf * mij - bj * ni;
            inner.push(lj / nf * num * num / (bj * (nf - bj) - nf * lj / 4.0));
        }
        a2akn += np_sum(&inner) / ni;
    }
    a2akn *= (nf - 1.0) / nf;

    let k = 2.0f64;
    let h_inv: f64 = 1.0 / samples[0].len() as f64 + 1.0 / samples[1].len() as f64;
    // hs_cs = cumsum(1 / [N-1, N-2, ..., 2]); h = hs_cs[-1] + 1; g = Σ hs_cs / [2, ..., N-1].
    let mut cum = 0.0f64;
    let mut g_terms = Vec::with_capacity(n_total.saturating_sub(2));
    for (idx, denom) in (2..n_total).rev().enumerate() {
        cum += 1.0 / denom as f64;
        g_terms.push(cum / (idx + 2) as f64);
    }
    let h = cum + 1.0;
    let g = np_sum(&g_terms);
    let a = (4.0 * g - 6.0) * (k - 1.0) + (10.0 - 6.0 * g) * h_inv;
    let b = (2.0 * g - 4.0) * k * k + 8.0 * h * k + (2.0 * g - 14.0 * h - 4.0) * h_inv - 8.0 * h
        + 4.0 * g
        - 6.0;
    let c = (6.0 * h + 2.0 * g - 2.0) * k * k
        + (4.0 * h - 4.0 * g + 6.0) * k
        + (2.0 * h - 6.0) * h_inv
        + 4.0 * h;
    let d = (2.0 * h + 6.0) * k * k - 4.0 * h * k;
    let sigmasq =
        (a * nf.powi(3) + b * nf.powi(2) + c * nf + d) / ((nf - 1.0) * (nf - 2.0) * (nf - 3.0));
    let m = k - 1.0;
    let a2 = (a2akn - m) / sigmasq.sqrt();

    let critical: [f64; 7] = std::array::from_fn(|i| B0[i] + B1[i] / m.sqrt() + B2[i] / m);
    let cmin = critical.iter().copied().fold(f64::INFINITY, f64::min);
    let cmax = critical.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let p = if a2 < cmin {
        0.25
    } else if a2 > cmax {
        0.001
    } else {
        let logsig: [f64; 7] = SIG.map(f64::ln);
        let coef = polyfit2(&critical, &logsig);
        (((coef[0] * a2) + coef[1]) * a2 + coef[2]).exp()
    };
    Ok(AndersonResult {
        statistic: a2,
        significance_level: p,
    })
}

/// Least-squares quadratic `np.polyfit(x, y, 2)` (highest power first), by Householder QR on
/// NumPy's column-scaled Vandermonde matrix.
#[allow(clippy::needless_range_loop)] // textbook Householder QR reads best with indices
fn polyfit2(x: &[f64; 7], y: &[f64; 7]) -> [f64; 3] {
    const R: usize = 7;
    const C: usize = 3;
    let mut a = [[0.0f64; C]; R];
    for (row, &xi) in a.iter_mut().zip(x) {
        *row = [xi * xi, xi, 1.0];
    }
    let mut scale = [0.0f64; C];
    for (j, s) in scale.iter_mut().enumerate() {
        *s = a.iter().map(|r| r[j] * r[j]).sum::<f64>().sqrt();
        for r in a.iter_mut() {
            r[j] /= *s;
        }
    }
    let mut b = *y;
    for j in 0..C {
        let norm = (j..R).map(|i| a[i][j] * a[i][j]).sum::<f64>().sqrt();
        let alpha = if a[j][j] > 0.0 { -norm } else { norm };
        let mut v = [0.0f64; R];
        for i in j..R {
            v[i] = a[i][j];
        }
        v[j] -= alpha;
        let vnorm2: f64 = (j..R).map(|i| v[i] * v[i]).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        for col in j..C {
            let dot: f64 = (j..R).map(|i| v[i] * a[i][col]).sum();
            let f = 2.0 * dot / vnorm2;
            for i in j..R {
                a[i][col] -= f * v[i];
            }
        }
        let dot: f64 = (j..R).map(|i| v[i] * b[i]).sum();
        let f = 2.0 * dot / vnorm2;
        for i in j..R {
            b[i] -= f * v[i];
        }
    }
    let mut coef = [0.0f64; C];
    for j in (0..C).rev() {
        let s: f64 = ((j + 1)..C).map(|k| a[j][k] * coef[k]).sum();
        coef[j] = (b[j] - s) / a[j][j];
    }
    for (c, s) in coef.iter_mut().zip(scale) {
        *c /= s;
    }
    coef
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polyfit_recovers_an_exact_quadratic() {
        let x = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        let y = x.map(|v| 2.0 * v * v - 3.0 * v + 0.5);
        let c = polyfit2(&x, &y);
        for (got, want) in c.iter().zip([2.0, -3.0, 0.5]) {
            assert!((got - want).abs() < 1e-12, "{c:?}");
        }
    }

    #[test]
    fn tiny_samples_match_scipy() {
        // anderson_ksamp([[1., 2.], [3., 4.]]) -> 1.5427784316797186, 0.07502559142197442
        let r = anderson_ksamp(&[1.0, 2.0], &[3.0, 4.0]).unwrap();
        assert!((r.statistic - 1.542_778_431_679_718_6).abs() < 1e-12);
        assert!((r.significance_level - 0.075_025_591_421_974_42).abs() < 1e-12);
        assert!(anderson_ksamp(&[1.0, 2.0], &[3.0]).is_err());
        assert!(anderson_ksamp(&[1.0, 1.0], &[1.0, 1.0]).is_err());
    }
}
