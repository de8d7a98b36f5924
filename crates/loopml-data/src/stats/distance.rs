//! CDF distances between two samples (`scipy.stats._stats_py._cdf_distance`): Wasserstein-1
//! and the energy distance, plus Evidently's normed Wasserstein.

use super::{check_samples, np_sum, sorted};
use crate::error::Result;

/// `∫ |F_u − F_v|^p` over the merged support, as `_cdf_distance` before its final root.
fn cdf_distance_integral(u: &[f64], v: &[f64], p: u8) -> f64 {
    let us = sorted(u);
    let vs = sorted(v);
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut terms = Vec::with_capacity(us.len() + vs.len());
    let mut prev: Option<(f64, f64)> = None; // (value, |ΔF| at it)
    while i < us.len() || j < vs.len() {
        let x = match (us.get(i), vs.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < us.len() && us[i] <= x {
            i += 1;
        }
        while j < vs.len() && vs[j] <= x {
            j += 1;
        }
        if let Some((x0, diff)) = prev {
            let delta = x - x0;
            terms.push(if p == 1 {
                diff * delta
            } else {
                diff * diff * delta
            });
        }
        prev = Some((x, (i as f64 / nu - j as f64 / nv).abs()));
    }
    np_sum(&terms)
}

/// `scipy.stats.wasserstein_distance(reference, current)`: the first Wasserstein distance
/// between the two empirical distributions.
pub fn wasserstein_distance(reference: &[f64], current: &[f64]) -> Result<f64> {
    check_samples(reference, current)?;
    Ok(cdf_distance_integral(reference, current, 1))
}

/// Evidently's `wasserstein` score: `wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)`
/// with NumPy's population standard deviation.
pub fn wasserstein_normed(reference: &[f64], current: &[f64]) -> Result<f64> {
    let w = wasserstein_distance(reference, current)?;
    let n = reference.len() as f64;
    let mean = np_sum(reference) / n;
    let sq: Vec<f64> = reference.iter().map(|x| (x - mean) * (x - mean)).collect();
    let std = (np_sum(&sq) / n).sqrt();
    Ok(w / std.max(0.001))
}

/// `scipy.stats.energy_distance(reference, current)`: `√2 · (∫ (F_u − F_v)²)^½`.
pub fn energy_distance(reference: &[f64], current: &[f64]) -> Result<f64> {
    check_samples(reference, current)?;
    Ok(std::f64::consts::SQRT_2 * cdf_distance_integral(reference, current, 2).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scipy_docstring_examples() {
        assert_eq!(
            wasserstein_distance(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]).unwrap(),
            5.0
        );
        // energy_distance([0], [2]) == 2.0000000000000004
        assert_eq!(
            energy_distance(&[0.0], &[2.0]).unwrap(),
            2.000_000_000_000_000_4
        );
    }
}
