//! Order statistics over benchmark samples: medians, percentiles and spread.
//!
//! Percentiles interpolate linearly between closest ranks (the "type 7" estimator of R and
//! NumPy's default), so small samples give stable, unsurprising values.

use serde::Serialize;

/// The summary every reported series carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The smallest sample.
    pub min: f64,
    /// The 25th percentile.
    pub p25: f64,
    /// The median.
    pub median: f64,
    /// The 75th percentile.
    pub p75: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The largest sample.
    pub max: f64,
    /// The arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none (or any is NaN).
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let sum: f64 = sorted.iter().sum();
        Some(Self {
            n: sorted.len(),
            min: sorted[0],
            p25: percentile(&sorted, 25.0),
            median: percentile(&sorted, 50.0),
            p75: percentile(&sorted, 75.0),
            p90: percentile(&sorted, 90.0),
            max: sorted[sorted.len() - 1],
            mean: sum / count_as_f64(sorted.len()),
        })
    }

    /// The interquartile range, `p75 - p25`.
    pub fn iqr(&self) -> f64 {
        self.p75 - self.p25
    }
}

/// The `p`th percentile (0..=100) of an ascending, non-empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let last = sorted.len() - 1;
    let rank = p.clamp(0.0, 100.0) / 100.0 * count_as_f64(last);
    let below = rank.floor();
    let frac = rank - below;
    // `below` is in 0..=last, so the index fits; the float-to-int cast saturates anyway.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = below as usize;
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

/// Element-wise `a[i] - b[i]` over the common length: overheads of paired, interleaved trials.
pub fn paired_differences(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// A sample count as `f64`; counts here are far below 2^52, where the conversion is exact.
pub fn count_as_f64(n: usize) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((percentile(&sorted, 90.0) - 9.1).abs() < 1e-9);
        assert!((percentile(&sorted, 25.0) - 3.25).abs() < 1e-9);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 100.0), 10.0);
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let s = Summary::of(&[7.5]).unwrap();
        assert_eq!(
            (s.min, s.p25, s.median, s.p90, s.max),
            (7.5, 7.5, 7.5, 7.5, 7.5)
        );
        assert_eq!(s.iqr(), 0.0);
    }

    #[test]
    fn iqr_and_mean() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(s.iqr(), 2.0);
        assert_eq!(s.mean, 3.0);
        assert_eq!(s.n, 5);
    }

    #[test]
    fn unsorted_input_and_outliers() {
        let s = Summary::of(&[100.0, 1.0, 2.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.0);
        assert_eq!(s.max, 100.0);
    }

    #[test]
    fn empty_or_nan_has_no_summary() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn paired_differences_use_common_length() {
        assert_eq!(
            paired_differences(&[5.0, 7.0, 9.0], &[1.0, 2.0]),
            vec![4.0, 5.0]
        );
    }
}
