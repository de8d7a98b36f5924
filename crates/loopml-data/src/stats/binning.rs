//! Histogram helpers with NumPy's exact semantics (`np.linspace`, `np.histogram_bin_edges(...,
//! bins="sturges")`, `np.histogram` with explicit edges) and Evidently's bucketing of a numeric
//! column for PSI, KL and Jensen–Shannon (`stattests/utils.py::get_binned_data`).

use super::{CategoryCount, check_samples, sorted};
use crate::error::{Error, Result};

/// `np.linspace(start, stop, num, endpoint=True)`: `i * step + start`, last point set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = num.saturating_sub(1);
    let delta = stop - start;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64).collect();
    if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            // NumPy's special case for denormal ranges (gh-5437).
            for v in &mut y {
                *v = *v / div as f64 * delta;
            }
        } else {
            for v in &mut y {
                *v *= step;
            }
        }
    } else {
        for v in &mut y {
            *v *= delta;
        }
    }
    for v in &mut y {
        *v += start;
    }
    if num > 1
        && let Some(last) = y.last_mut()
    {
        *last = stop;
    }
    y
}

/// How many equal-width bins NumPy's Sturges rule gives `n` values spanning `min..=max`.
///
/// Width = range / (log2(n) + 1); bins = ceil(range / width), or 1 when the range is 0.
pub fn sturges_bin_count(n: usize, min: f64, max: f64) -> usize {
    let ptp = max - min;
    let width = ptp / ((n as f64).log2() + 1.0);
    if width != 0.0 && width.is_finite() {
        // `ceil` of a positive finite ratio; the cast saturates rather than wraps.
        (ptp / width).ceil() as usize
    } else {
        1
    }
}

/// `np.histogram_bin_edges(a, bins="sturges")` for data of size `n` with the given min and max.
///
/// A zero range widens to `[min - 0.5, max + 0.5]` with one bin, as NumPy does. This is the
/// streaming form: a first pass collects min, max and count, a second pass calls
/// [`histogram_bin`] per value.
pub fn sturges_edges(min: f64, max: f64, n: usize) -> Result<Vec<f64>> {
    if n == 0 {
        return Err(Error::Statistic("cannot bin an empty sample".into()));
    }
    if !(min.is_finite() && max.is_finite() && (max - min).is_finite()) || min > max {
        return Err(Error::Invalid(format!(
            "histogram range [{min}, {max}] is not a finite, ordered range"
        )));
    }
    let bins = sturges_bin_count(n, min, max);
    let (first, last) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let edges = linspace(first, last, bins + 1);
    if edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::Statistic(format!(
            "too many bins for data range: cannot create {bins} finite-sized bins"
        )));
    }
    Ok(edges)
}

/// `np.histogram_bin_edges(values, bins="sturges")`.
pub fn histogram_bin_edges_sturges(values: &[f64]) -> Result<Vec<f64>> {
    let (min, max) = min_max(values)?;
    sturges_edges(min, max, values.len())
}

/// Which bin of `edges` holds `value` under `np.histogram` rules: bins are half-open
/// `[e_i, e_{i+1})` except the last, which also holds its right edge; `None` outside the edges.
pub fn histogram_bin(value: f64, edges: &[f64]) -> Option<usize> {
    let last = edges.len().checked_sub(1)?;
    if last == 0 {
        return None;
    }
    // Number of edges <= value.
    let at_or_below = edges.partition_point(|e| *e <= value);
    if at_or_below == 0 {
        None
    } else if at_or_below > last {
        // value >= last edge: only the last edge itself is inside.
        (value == edges[last]).then_some(last - 1)
    } else {
        Some(at_or_below - 1)
    }
}

/// `np.histogram(values, bins=edges)[0]`: counts per bin; values outside the edges are dropped.
pub fn histogram(values: &[f64], edges: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; edges.len().saturating_sub(1)];
    for &v in values {
        if let Some(i) = histogram_bin(v, edges)
            && let Some(c) = counts.get_mut(i)
        {
            *c += 1;
        }
    }
    counts
}

/// `np.histogram(..., density=True)[0]` from counts: `count / width / total` per bin.
pub fn histogram_density(counts: &[u64], edges: &[f64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(edges.windows(2))
        .map(|(&c, w)| c as f64 / (w[1] - w[0]) / total as f64)
        .collect()
}

/// Distinct values of `reference ∪ current` in ascending order with their count on each side
/// (pandas `value_counts` over the union of keys; -0.0 and 0.0 are one value).
pub fn distinct_value_counts(reference: &[f64], current: &[f64]) -> Vec<(f64, CategoryCount)> {
    let r = sorted(reference);
    let c = sorted(current);
    let (mut i, mut j) = (0usize, 0usize);
    let mut out: Vec<(f64, CategoryCount)> = Vec::new();
    while i < r.len() || j < c.len() {
        let v = match (r.get(i), c.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let i0 = i;
        while i < r.len() && r[i] == v {
            i += 1;
        }
        let j0 = j;
        while j < c.len() && c[j] == v {
            j += 1;
        }
        out.push((v, CategoryCount::new((i - i0) as u64, (j - j0) as u64)));
    }
    out
}

/// What the buckets of a [`BinnedCounts`] are.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Buckets {
    /// Equal-width bins with these edges (one more edge than buckets).
    Edges(Vec<f64>),
    /// One bucket per distinct value, ascending.
    Values(Vec<f64>),
}

/// Per-bucket reference and current counts of a numeric column, as Evidently bins it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BinnedCounts {
    /// The buckets, in order.
    pub buckets: Buckets,
    /// The counts, one per bucket.
    pub counts: Vec<CategoryCount>,
}

/// Evidently's `get_binned_data` for a numeric column (used by PSI, KL and Jensen–Shannon).
///
/// More than 20 distinct reference values: Sturges edges over the concatenation of both samples
/// and `np.histogram` per side. Otherwise one bucket per distinct value of either side.
pub fn evidently_binned_counts(reference: &[f64], current: &[f64]) -> Result<BinnedCounts> {
    check_samples(reference, current)?;
    if distinct_more_than(reference, 20) {
        let (rmin, rmax) = min_max(reference)?;
        let (cmin, cmax) = min_max(current)?;
        let edges = sturges_edges(
            rmin.min(cmin),
            rmax.max(cmax),
            reference.len() + current.len(),
        )?;
        let r = histogram(reference, &edges);
        let c = histogram(current, &edges);
        let counts = r
            .into_iter()
            .zip(c)
            .map(|(a, b)| CategoryCount::new(a, b))
            .collect();
        Ok(BinnedCounts {
            buckets: Buckets::Edges(edges),
            counts,
        })
    } else {
        let (values, counts) = distinct_value_counts(reference, current)
            .into_iter()
            .unzip();
        Ok(BinnedCounts {
            buckets: Buckets::Values(values),
            counts,
        })
    }
}

/// Whether `xs` holds more than `limit` distinct values (stops counting once it does).
fn distinct_more_than(xs: &[f64], limit: usize) -> bool {
    let s = sorted(xs);
    let mut distinct = 0usize;
    for (k, v) in s.iter().enumerate() {
        if k == 0 || *v != s[k - 1] {
            distinct += 1;
            if distinct > limit {
                return true;
            }
        }
    }
    false
}

/// Minimum and maximum of a non-empty sample.
fn min_max(xs: &[f64]) -> Result<(f64, f64)> {
    let first = *xs
        .first()
        .ok_or_else(|| Error::Statistic("cannot bin an empty sample".into()))?;
    Ok(xs
        .iter()
        .fold((first, first), |(lo, hi), &x| (lo.min(x), hi.max(x))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_ends_exactly_at_stop() {
        let e = linspace(0.0, 1.0, 4);
        assert_eq!(e, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(linspace(2.0, 3.0, 1), vec![2.0]);
    }

    #[test]
    fn sturges_matches_numpy_counts() {
        // np.histogram_bin_edges(np.arange(10.), 'sturges') has 5 bins (log2(10)+1 = 4.32).
        assert_eq!(sturges_bin_count(10, 0.0, 9.0), 5);
        // A constant sample: one bin of width 1 around the value.
        assert_eq!(sturges_edges(3.0, 3.0, 7).unwrap(), vec![2.5, 3.5]);
        // A range wider than f64 can hold is refused rather than binned into NaN edges.
        assert!(sturges_edges(-f64::MAX, f64::MAX, 3).is_err());
    }

    #[test]
    fn histogram_last_bin_is_closed() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(
            histogram(&[0.0, 0.5, 1.0, 2.0, 2.5, -1.0], &edges),
            vec![2, 2]
        );
        assert_eq!(histogram_bin(2.0, &edges), Some(1));
        assert_eq!(histogram_bin(1.0, &edges), Some(1));
        assert_eq!(histogram_bin(2.0000001, &edges), None);
    }

    #[test]
    fn distinct_counts_merge_both_sides() {
        let v = distinct_value_counts(&[1.0, 2.0, 2.0, -0.0], &[0.0, 3.0]);
        assert_eq!(
            v,
            vec![
                (-0.0, CategoryCount::new(1, 1)),
                (1.0, CategoryCount::new(1, 0)),
                (2.0, CategoryCount::new(2, 0)),
                (3.0, CategoryCount::new(0, 1)),
            ]
        );
    }
}
