//! MASA scores: pooled and per-aspect confusion, accuracy, sentence accuracy, weighted kappa
//! and format errors, as the study's scorer computes them.

use sde_data::Sentiment;
use serde::{Deserialize, Serialize};

use crate::MetricsError;
use crate::confusion::{ClassScores, Confusion, round_to};

/// One scored MASA output: gold and predicted sentiment per aspect, in the domain's aspect
/// order, plus whether parsing the output hit any format error.
///
/// Predictions are final labels: a parser that could not read an aspect reports it as
/// [`Sentiment::Unmentioned`] and sets `format_error` (the study's soft rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasaSample {
    /// Gold labels, one per aspect; `None` when the gold target itself could not be parsed,
    /// in which case the sample adds nothing to the aspect counts (as in the study).
    pub gold: Option<Vec<Sentiment>>,
    /// Predicted labels, one per aspect.
    pub pred: Vec<Sentiment>,
    /// Whether parsing the prediction produced any format error.
    pub format_error: bool,
}

/// Scores of one aspect (or of all aspects pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AspectScores {
    /// Aspect name, or `ALL` for the pooled slice.
    pub aspect: String,
    /// Rows = gold, columns = prediction.
    pub confusion: Confusion,
    /// Micro accuracy over (sample, aspect) pairs; `None` when nothing was counted.
    pub accuracy: Option<f64>,
    /// The study's weighted kappa at full precision.
    pub kappa: f64,
    /// Precision and recall per label.
    pub classes: [ClassScores; 4],
}

impl AspectScores {
    fn from_confusion(aspect: String, confusion: Confusion) -> Self {
        AspectScores {
            aspect,
            accuracy: confusion.accuracy(),
            kappa: confusion.study_kappa(),
            classes: confusion.class_scores(),
            confusion,
        }
    }

    /// Kappa rounded to 4 decimals, as the study reports it.
    pub fn kappa_reported(&self) -> f64 {
        round_to(self.kappa, 4)
    }
}

/// Every MASA number the study computes for one prediction file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasaScores {
    /// Number of samples scored.
    pub samples: usize,
    /// Samples whose gold could be parsed (the denominator of sentence accuracy).
    pub gold_samples: usize,
    /// Samples with any format error in the prediction.
    pub format_errors: usize,
    /// `format_errors / samples` (0 for no samples).
    pub format_error_rate: f64,
    /// Samples with every aspect right / `gold_samples`; `None` when there are none.
    pub sentence_accuracy: Option<f64>,
    /// All aspects pooled (the study's `ALL` slice: the reported kappa and accuracy).
    pub pooled: AspectScores,
    /// One entry per aspect, in domain order.
    pub per_aspect: Vec<AspectScores>,
}

impl MasaScores {
    /// Pooled weighted kappa rounded to 4 decimals (the study's reported `κ`).
    pub fn kappa_reported(&self) -> f64 {
        self.pooled.kappa_reported()
    }

    /// Pooled accuracy rounded to 4 decimals (the study's reported `acc`); 0 when empty.
    pub fn accuracy_reported(&self) -> f64 {
        round_to(self.pooled.accuracy.unwrap_or(0.0), 4)
    }
}

/// The confusion matrix of one sample (all aspects), checking label counts.
pub fn sample_confusion(
    aspect_count: usize,
    index: usize,
    sample: &MasaSample,
) -> Result<Confusion, MetricsError> {
    check_len(index, "pred", aspect_count, sample.pred.len())?;
    let mut m = Confusion::default();
    if let Some(gold) = &sample.gold {
        check_len(index, "gold", aspect_count, gold.len())?;
        for (&g, &p) in gold.iter().zip(&sample.pred) {
            m.add(g, p);
        }
    }
    Ok(m)
}

fn check_len(
    sample: usize,
    field: &'static str,
    expected: usize,
    found: usize,
) -> Result<(), MetricsError> {
    if expected == found {
        Ok(())
    } else {
        Err(MetricsError::AspectCount {
            sample,
            field,
            expected,
            found,
        })
    }
}

/// Scores MASA samples over `aspects` (names in domain order, used for labelling only).
///
/// Errors when a sample does not carry exactly one gold and one predicted label per aspect.
pub fn score_masa<S: AsRef<str>>(
    aspects: &[S],
    samples: &[MasaSample],
) -> Result<MasaScores, MetricsError> {
    let mut per_aspect = vec![Confusion::default(); aspects.len()];
    let mut pooled = Confusion::default();
    let mut gold_samples = 0;
    let mut sentence_correct = 0;
    let mut format_errors = 0;
    for (index, sample) in samples.iter().enumerate() {
        pooled.merge(&sample_confusion(aspects.len(), index, sample)?);
        if sample.format_error {
            format_errors += 1;
        }
        let Some(gold) = &sample.gold else { continue };
        gold_samples += 1;
        let mut all_right = true;
        for (k, (&g, &p)) in gold.iter().zip(&sample.pred).enumerate() {
            per_aspect[k].add(g, p);
            all_right &= g == p;
        }
        if all_right {
            sentence_correct += 1;
        }
    }
    Ok(MasaScores {
        samples: samples.len(),
        gold_samples,
        format_errors,
        format_error_rate: if samples.is_empty() {
            0.0
        } else {
            format_errors as f64 / samples.len() as f64
        },
        sentence_accuracy: (gold_samples > 0)
            .then(|| sentence_correct as f64 / gold_samples as f64),
        pooled: AspectScores::from_confusion("ALL".to_owned(), pooled),
        per_aspect: aspects
            .iter()
            .zip(per_aspect)
            .map(|(name, m)| AspectScores::from_confusion(name.as_ref().to_owned(), m))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Sentiment::{Negative as Neg, Neutral as Neu, Positive as Pos, Unmentioned as Unm};

    fn sample(gold: &[Sentiment], pred: &[Sentiment], format_error: bool) -> MasaSample {
        MasaSample {
            gold: Some(gold.to_vec()),
            pred: pred.to_vec(),
            format_error,
        }
    }

    #[test]
    fn counts_by_hand() {
        let samples = vec![
            sample(&[Pos, Unm], &[Pos, Unm], false),
            sample(&[Neg, Neu], &[Neg, Unm], true),
            sample(&[Pos, Pos], &[Neu, Pos], false),
            MasaSample {
                gold: None,
                pred: vec![Pos, Pos],
                format_error: false,
            },
        ];
        let s = score_masa(&["food", "price"], &samples).unwrap();
        assert_eq!(s.samples, 4);
        assert_eq!(s.gold_samples, 3);
        assert_eq!(s.format_errors, 1);
        assert_eq!(s.format_error_rate, 0.25);
        assert_eq!(s.sentence_accuracy, Some(1.0 / 3.0));
        assert_eq!(s.pooled.confusion.total(), 6);
        assert_eq!(s.pooled.accuracy, Some(4.0 / 6.0));
        let food = &s.per_aspect[0];
        assert_eq!(food.aspect, "food");
        assert_eq!(
            food.confusion.counts,
            [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
        );
        assert_eq!(food.accuracy, Some(2.0 / 3.0));
        let price = &s.per_aspect[1];
        assert_eq!(
            price.confusion.counts,
            [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1]]
        );
        // Pooled: gold rows pos 3, neu 1, neg 1, unm 1; pred cols pos 2, neu 1, neg 1, unm 2.
        // p_o = (2 + 0.5 + 0.67 + 1 + 1) / 6; p_e = Σ w_ij r_i c_j / 36.
        let rows = [3.0, 1.0, 1.0, 1.0];
        let cols = [2.0, 1.0, 1.0, 2.0];
        let w = crate::STUDY_KAPPA_WEIGHTS;
        let p_o = (2.0 + 0.5 + 0.67 + 1.0 + 1.0) / 6.0;
        let mut p_e = 0.0;
        for i in 0..4 {
            for j in 0..4 {
                p_e += w[i][j] * rows[i] * cols[j];
            }
        }
        p_e /= 36.0;
        assert!((s.pooled.kappa - (p_o - p_e) / (1.0 - p_e)).abs() < 1e-12);
    }

    #[test]
    fn wrong_label_count_is_an_error() {
        let samples = vec![sample(&[Pos], &[Pos, Neg], false)];
        let err = score_masa(&["food", "price"], &samples).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sample 0: gold has 1 labels, the domain has 2 aspects"
        );
    }

    #[test]
    fn empty_input() {
        let s = score_masa::<&str>(&[], &[]).unwrap();
        assert_eq!(s.samples, 0);
        assert_eq!(s.sentence_accuracy, None);
        assert_eq!(s.pooled.accuracy, None);
        assert_eq!(s.kappa_reported(), 0.0);
    }
}
