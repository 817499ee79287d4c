//! The 4×4 MASA confusion matrix and the study's weighted Cohen's kappa.

use sde_data::Sentiment;
use serde::{Deserialize, Serialize};

/// The study's agreement weights, rows = gold, columns = prediction, in [`Sentiment::ALL`]
/// order (positive, neutral, negative, unmentioned).
///
/// The matrix is deliberately not symmetric: a gold-neutral row uses 0.67 where the
/// prediction-neutral column uses 0.5. This is what the study's scorer does, and it is what
/// reproduces its released kappa values.
pub const STUDY_KAPPA_WEIGHTS: [[f64; 4]; 4] = [
    [1.0, 0.5, 0.0, 0.5],
    [0.67, 1.0, 0.67, 0.67],
    [0.0, 0.5, 1.0, 0.5],
    [0.5, 0.67, 0.5, 1.0],
];

/// Counts of (gold, prediction) sentiment pairs; rows = gold, columns = prediction, both in
/// [`Sentiment::index`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// `counts[gold][pred]`.
    pub counts: [[u64; 4]; 4],
}

/// Precision and recall of one label, `None` where the denominator is zero (the study prints
/// `nan` there).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// The label.
    pub label: Sentiment,
    /// How many predictions carry the label (column sum).
    pub predicted: u64,
    /// How many gold labels are this label (row sum).
    pub gold: u64,
    /// Correct / predicted.
    pub precision: Option<f64>,
    /// Correct / gold.
    pub recall: Option<f64>,
}

impl Confusion {
    /// A matrix from explicit counts (`counts[gold][pred]`).
    pub fn from_counts(counts: [[u64; 4]; 4]) -> Self {
        Confusion { counts }
    }

    /// Counts one (gold, prediction) pair.
    pub fn add(&mut self, gold: Sentiment, pred: Sentiment) {
        self.counts[gold.index()][pred.index()] += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Confusion) {
        for (row, other_row) in self.counts.iter_mut().zip(&other.counts) {
            for (cell, other_cell) in row.iter_mut().zip(other_row) {
                *cell += other_cell;
            }
        }
    }

    /// Number of pairs counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Number of pairs on the diagonal.
    pub fn correct(&self) -> u64 {
        (0..4).map(|i| self.counts[i][i]).sum()
    }

    /// Gold counts per label (row sums).
    pub fn gold_totals(&self) -> [u64; 4] {
        let mut r = [0; 4];
        for (i, row) in self.counts.iter().enumerate() {
            r[i] = row.iter().sum();
        }
        r
    }

    /// Prediction counts per label (column sums).
    pub fn predicted_totals(&self) -> [u64; 4] {
        let mut c = [0; 4];
        for row in &self.counts {
            for (j, n) in row.iter().enumerate() {
                c[j] += n;
            }
        }
        c
    }

    /// Correct / total; `None` for an empty matrix.
    pub fn accuracy(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.correct() as f64 / total as f64)
    }

    /// The study's weighted kappa ([`STUDY_KAPPA_WEIGHTS`]) at full precision.
    pub fn study_kappa(&self) -> f64 {
        self.weighted_kappa(&STUDY_KAPPA_WEIGHTS)
    }

    /// Weighted Cohen's kappa with agreement weights `w[gold][pred]`:
    /// `p_o = Σ w·n / N`, `p_e = Σ w·r_i·c_j / N²`, `κ = (p_o − p_e) / (1 − p_e)`.
    ///
    /// Returns 0 when `1 − p_e` is 0 (the study's convention) or the matrix is empty.
    pub fn weighted_kappa(&self, w: &[[f64; 4]; 4]) -> f64 {
        let n = self.total();
        if n == 0 {
            return 0.0;
        }
        let n = n as f64;
        let rows = self.gold_totals();
        let cols = self.predicted_totals();
        let mut observed = 0.0;
        let mut expected = 0.0;
        for i in 0..4 {
            for j in 0..4 {
                observed += w[i][j] * self.counts[i][j] as f64;
                expected += w[i][j] * rows[i] as f64 * cols[j] as f64;
            }
        }
        let p_o = observed / n;
        let p_e = expected / (n * n);
        if 1.0 - p_e == 0.0 {
            0.0
        } else {
            (p_o - p_e) / (1.0 - p_e)
        }
    }

    /// Precision and recall of every label, in [`Sentiment::ALL`] order.
    pub fn class_scores(&self) -> [ClassScores; 4] {
        let rows = self.gold_totals();
        let cols = self.predicted_totals();
        Sentiment::ALL.map(|label| {
            let i = label.index();
            let hit = self.counts[i][i] as f64;
            ClassScores {
                label,
                predicted: cols[i],
                gold: rows[i],
                precision: (cols[i] > 0).then(|| hit / cols[i] as f64),
                recall: (rows[i] > 0).then(|| hit / rows[i] as f64),
            }
        })
    }
}

/// Rounds like Python's `round(x, digits)`: to the nearest decimal of the exact binary value,
/// ties to even.
pub fn round_to(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: [[u64; 4]; 4] = [[92, 1, 2, 5], [12, 3, 4, 3], [5, 0, 7, 3], [4, 0, 1, 158]];

    #[test]
    fn demo_matrix_kappa_matches_the_study() {
        let m = Confusion::from_counts(DEMO);
        let k = m.study_kappa();
        assert!((k - 0.763910).abs() < 5e-7, "{k}");
        assert_eq!(round_to(k, 4), 0.7639);
        assert_eq!(m.total(), 300);
        assert_eq!(m.correct(), 260);
        assert_eq!(round_to(m.accuracy().unwrap(), 4), 0.8667);
    }

    #[test]
    fn asymmetric_weights_matter() {
        // Transposing the matrix changes kappa because the weights are not symmetric.
        let mut t = [[0u64; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                t[j][i] = DEMO[i][j];
            }
        }
        let a = Confusion::from_counts(DEMO).study_kappa();
        let b = Confusion::from_counts(t).study_kappa();
        assert!((a - b).abs() > 1e-4, "{a} vs {b}");
    }

    #[test]
    fn two_by_two_by_hand() {
        // gold pos: 3 pred pos, 1 pred neg; gold neg: 1 pred pos, 5 pred neg. N = 10.
        let mut m = Confusion::default();
        for (g, p, n) in [
            (Sentiment::Positive, Sentiment::Positive, 3),
            (Sentiment::Positive, Sentiment::Negative, 1),
            (Sentiment::Negative, Sentiment::Positive, 1),
            (Sentiment::Negative, Sentiment::Negative, 5),
        ] {
            for _ in 0..n {
                m.add(g, p);
            }
        }
        // Weights between pos and neg are 0, so this is plain kappa:
        // p_o = 0.8; rows (4, 6), cols (4, 6): p_e = (16 + 36) / 100 = 0.52;
        // kappa = 0.28 / 0.48.
        let k = m.study_kappa();
        assert!((k - 0.28 / 0.48).abs() < 1e-12, "{k}");
        let cs = m.class_scores();
        assert_eq!(cs[0].precision, Some(0.75));
        assert_eq!(cs[0].recall, Some(0.75));
        assert_eq!(cs[2].precision, Some(5.0 / 6.0));
        assert_eq!(cs[1].precision, None);
        assert_eq!(cs[1].recall, None);
    }

    #[test]
    fn partial_credit_by_hand() {
        // One gold-neutral predicted unmentioned, one gold-unmentioned predicted neutral.
        let mut m = Confusion::default();
        m.add(Sentiment::Neutral, Sentiment::Unmentioned);
        m.add(Sentiment::Unmentioned, Sentiment::Neutral);
        // p_o = (0.67 + 0.67) / 2 = 0.67; rows = cols = (0,1,0,1):
        // p_e = (w11 + w13 + w31 + w33) / 4 = (1 + 0.67 + 0.67 + 1) / 4 = 0.835.
        let k = m.study_kappa();
        let expected = (0.67 - 0.835) / (1.0 - 0.835);
        assert!((k - expected).abs() < 1e-12, "{k}");
    }

    #[test]
    fn degenerate_matrices() {
        assert_eq!(Confusion::default().study_kappa(), 0.0);
        assert_eq!(Confusion::default().accuracy(), None);
        // All mass in one cell: p_e = 1, kappa defined as 0.
        let mut m = Confusion::default();
        m.add(Sentiment::Unmentioned, Sentiment::Unmentioned);
        assert_eq!(m.study_kappa(), 0.0);
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_to(0.76391, 4), 0.7639);
        assert_eq!(round_to(0.86666666, 4), 0.8667);
        assert_eq!(round_to(2.5, 0), 2.0);
        assert_eq!(round_to(0.125, 2), 0.12);
        assert_eq!(round_to(0.375, 2), 0.38);
    }
}
