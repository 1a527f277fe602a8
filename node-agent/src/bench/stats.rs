//! Median and p99 of a set of samples (seconds per operation).

/// Median (mean of the two middle values for an even count) and the 99th percentile by
/// nearest rank (the smallest sample with at least 99 % of samples at or below it).
/// `None` for no samples.
pub fn median_p99(samples: &[f64]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    // Nearest rank: ceil(0.99 n), 1-based. Integer arithmetic avoids 0.99 * 100 = 98.999….
    let rank = (99 * n).div_ceil(100).max(1);
    Some((median, s[rank - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_by_nearest_rank() {
        assert_eq!(median_p99(&[]), None);
        assert_eq!(median_p99(&[3.0]), Some((3.0, 3.0)));
        assert_eq!(median_p99(&[4.0, 1.0, 3.0, 2.0]), Some((2.5, 4.0)));
        // 1..=100: median 50.5, p99 is the 99th value.
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(median_p99(&v), Some((50.5, 99.0)));
        // 1..=200: p99 is the 198th value.
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(median_p99(&v), Some((100.5, 198.0)));
        // Fewer than 100 samples: p99 is the maximum.
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(median_p99(&v).map(|(_, p)| p), Some(50.0));
    }
}
