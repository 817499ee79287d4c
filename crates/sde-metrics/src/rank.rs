//! Spearman rank correlation, for comparing prompt-engineering rankings with fine-tuned ones.

use crate::MetricsError;

/// 1-based ranks with ties given the average of the positions they span
/// (`scipy.stats.rankdata(method="average")`).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share the mean of ranks start+1..=end.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's ρ: the Pearson correlation of the average ranks of `x` and `y`.
///
/// Errors when the lengths differ, there are fewer than 2 pairs, a value is not finite, or
/// either side is constant (ρ undefined).
pub fn spearman(x: &[f64], y: &[f64]) -> Result<f64, MetricsError> {
    if x.len() != y.len() {
        return Err(MetricsError::LengthMismatch {
            what: "spearman",
            left: x.len(),
            right: y.len(),
        });
    }
    if x.len() < 2 {
        return Err(MetricsError::TooFewValues {
            what: "spearman",
            needed: 2,
            found: x.len(),
        });
    }
    for (side, values) in [("x", x), ("y", y)] {
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(MetricsError::NotFinite {
                what: "spearman",
                side,
                index,
            });
        }
    }
    let rx = average_ranks(x);
    let ry = average_ranks(y);
    let n = x.len() as f64;
    let mx = rx.iter().sum::<f64>() / n;
    let my = ry.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return Err(MetricsError::ConstantInput { what: "spearman" });
    }
    Ok(sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_with_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 30.0, 20.0, 20.0]),
            vec![1.5, 4.0, 1.5, 6.0, 4.0, 4.0]
        );
    }

    #[test]
    fn perfect_and_reversed() {
        assert_eq!(
            spearman(&[1.0, 2.0, 3.0], &[10.0, 100.0, 1000.0]).unwrap(),
            1.0
        );
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), -1.0);
    }

    #[test]
    fn with_ties_by_hand() {
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic = 0.9486832980505138
        // ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): cov = 4.5, var_x = 4.5, var_y = 5.
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-15);
        assert!((r - 0.9486832980505138).abs() < 1e-12);
    }

    #[test]
    fn bad_input() {
        assert!(spearman(&[1.0], &[1.0]).is_err());
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_err());
        let e = spearman(&[1.0, f64::NAN], &[1.0, 2.0]).unwrap_err();
        assert_eq!(e.to_string(), "spearman: x[1] is not a finite number");
    }
}
