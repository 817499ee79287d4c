//! Seeded bootstrap confidence intervals and the paired bootstrap test.
//!
//! Resampling is over test samples (sentences or reviews): each replicate draws `n` sample
//! indices with replacement from a ChaCha8 stream seeded by [`BootstrapConfig::seed`], so the
//! same seed gives the same interval on every platform. A statistic is any function of a list
//! of sample indices; [`masa_kappa`], [`masa_accuracy`], [`soft_f1`] and [`strict_f1`] build
//! the usual ones from per-sample data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::MetricsError;
use crate::confusion::Confusion;
use crate::extraction::{MatchCounts, MentionSample, SoftRule, soft_counts, strict_counts};
use crate::masa::{MasaSample, sample_confusion};

/// How many replicates to draw, at which confidence, from which seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of bootstrap replicates (at least 1).
    pub resamples: usize,
    /// Two-sided confidence level in (0, 1), e.g. 0.95.
    pub confidence: f64,
    /// Seed of the resampling stream.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    /// 1000 replicates, 95 %, seed 42.
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            confidence: 0.95,
            seed: 42,
        }
    }
}

impl BootstrapConfig {
    fn validate(&self) -> Result<(), MetricsError> {
        if self.resamples == 0 {
            return Err(MetricsError::InvalidParameter {
                field: "resamples",
                value: self.resamples.to_string(),
                expected: "at least 1",
            });
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(MetricsError::InvalidParameter {
                field: "confidence",
                value: self.confidence.to_string(),
                expected: "strictly between 0 and 1",
            });
        }
        Ok(())
    }
}

/// A point estimate with a percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The statistic on the full test set.
    pub estimate: f64,
    /// Lower percentile bound.
    pub lower: f64,
    /// Upper percentile bound.
    pub upper: f64,
    /// Confidence level of the bounds.
    pub confidence: f64,
    /// Replicates drawn.
    pub resamples: usize,
}

/// Result of a paired bootstrap comparison of design A against design B.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// `stat(A) − stat(B)` on the full test set, with a percentile interval.
    pub delta: Interval,
    /// Two-sided p-value of "no difference": the share of replicates whose delta lies at
    /// least `|delta|` away from the observed delta (the shifted-null bootstrap of
    /// Berg-Kirkpatrick et al., 2012). It is at least `1 / resamples`.
    pub p_value: f64,
    /// Share of replicates in which A scored strictly higher than B.
    pub a_wins: f64,
}

/// Draws `cfg.resamples` index lists of length `n` and evaluates `statistic` on each.
fn replicates(
    n: usize,
    cfg: &BootstrapConfig,
    mut statistic: impl FnMut(&[usize]) -> f64,
) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut indices = vec![0usize; n];
    (0..cfg.resamples)
        .map(|_| {
            for slot in indices.iter_mut() {
                *slot = rng.random_range(0..n);
            }
            statistic(&indices)
        })
        .collect()
}

/// Linear-interpolated quantile of sorted values (numpy's default method).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn interval(estimate: f64, mut values: Vec<f64>, cfg: &BootstrapConfig) -> Interval {
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - cfg.confidence) / 2.0;
    Interval {
        estimate,
        lower: quantile(&values, tail),
        upper: quantile(&values, 1.0 - tail),
        confidence: cfg.confidence,
        resamples: cfg.resamples,
    }
}

fn check_nonempty(n: usize) -> Result<(), MetricsError> {
    if n == 0 {
        Err(MetricsError::TooFewValues {
            what: "bootstrap",
            needed: 1,
            found: 0,
        })
    } else {
        Ok(())
    }
}

/// Percentile bootstrap interval of `statistic` over `n` test samples.
///
/// `statistic` receives the indices of one replicate (with repetitions); called with
/// `0..n` it must give the point estimate.
pub fn bootstrap_ci(
    n: usize,
    statistic: impl Fn(&[usize]) -> f64,
    cfg: &BootstrapConfig,
) -> Result<Interval, MetricsError> {
    cfg.validate()?;
    check_nonempty(n)?;
    let all: Vec<usize> = (0..n).collect();
    let estimate = statistic(&all);
    let values = replicates(n, cfg, &statistic);
    Ok(interval(estimate, values, cfg))
}

/// Paired bootstrap test: both designs are scored on the same resampled test samples.
///
/// `stat_a` and `stat_b` take the same index lists, so sample `i` must be the same test item
/// for both.
pub fn paired_bootstrap(
    n: usize,
    stat_a: impl Fn(&[usize]) -> f64,
    stat_b: impl Fn(&[usize]) -> f64,
    cfg: &BootstrapConfig,
) -> Result<PairedComparison, MetricsError> {
    cfg.validate()?;
    check_nonempty(n)?;
    let all: Vec<usize> = (0..n).collect();
    let observed = stat_a(&all) - stat_b(&all);
    let deltas = replicates(n, cfg, |idx| stat_a(idx) - stat_b(idx));
    let extreme = deltas
        .iter()
        .filter(|&&d| (d - observed).abs() >= observed.abs())
        .count();
    let wins = deltas.iter().filter(|&&d| d > 0.0).count();
    let r = cfg.resamples as f64;
    Ok(PairedComparison {
        p_value: (extreme.max(1) as f64 / r).min(1.0),
        a_wins: wins as f64 / r,
        delta: interval(observed, deltas, cfg),
    })
}

/// Per-sample confusion matrices, checked against the aspect count.
pub fn masa_confusions(
    aspect_count: usize,
    samples: &[MasaSample],
) -> Result<Vec<Confusion>, MetricsError> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| sample_confusion(aspect_count, i, s))
        .collect()
}

fn pooled(confusions: &[Confusion], indices: &[usize]) -> Confusion {
    let mut m = Confusion::default();
    for &i in indices {
        m.merge(&confusions[i]);
    }
    m
}

/// Statistic: the study's pooled weighted kappa of the chosen samples.
pub fn masa_kappa(confusions: &[Confusion]) -> impl Fn(&[usize]) -> f64 + '_ {
    move |idx| pooled(confusions, idx).study_kappa()
}

/// Statistic: pooled aspect accuracy of the chosen samples (0 if nothing is counted).
pub fn masa_accuracy(confusions: &[Confusion]) -> impl Fn(&[usize]) -> f64 + '_ {
    move |idx| pooled(confusions, idx).accuracy().unwrap_or(0.0)
}

/// Per-sample (strict, soft) match counts.
pub fn mention_counts(
    samples: &[MentionSample],
    rule: SoftRule,
) -> Vec<(MatchCounts, MatchCounts)> {
    samples
        .iter()
        .map(|s| (strict_counts(s), soft_counts(s, rule)))
        .collect()
}

/// Statistic: strict micro F1 of the chosen samples.
pub fn strict_f1(counts: &[(MatchCounts, MatchCounts)]) -> impl Fn(&[usize]) -> f64 + '_ {
    move |idx| {
        let mut c = MatchCounts::default();
        idx.iter().for_each(|&i| c.add(counts[i].0));
        c.f1()
    }
}

/// Statistic: soft micro F1 of the chosen samples.
pub fn soft_f1(counts: &[(MatchCounts, MatchCounts)]) -> impl Fn(&[usize]) -> f64 + '_ {
    move |idx| {
        let mut c = MatchCounts::default();
        idx.iter().for_each(|&i| c.add(counts[i].1));
        c.f1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(values: &[f64]) -> impl Fn(&[usize]) -> f64 + '_ {
        move |idx| idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64
    }

    #[test]
    fn quantile_matches_numpy() {
        // numpy.quantile([1, 2, 3, 4], [0.025, 0.5, 0.975]) = [1.075, 2.5, 3.925]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile(&v, 0.025) - 1.075).abs() < 1e-12);
        assert!((quantile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.975) - 3.925).abs() < 1e-12);
    }

    #[test]
    fn seeded_and_reproducible() {
        let v: Vec<f64> = (0..50).map(|i| (i % 7) as f64).collect();
        let cfg = BootstrapConfig::default();
        let a = bootstrap_ci(v.len(), mean(&v), &cfg).unwrap();
        let b = bootstrap_ci(v.len(), mean(&v), &cfg).unwrap();
        assert_eq!(a, b);
        let c = bootstrap_ci(v.len(), mean(&v), &BootstrapConfig { seed: 7, ..cfg }).unwrap();
        assert_ne!(a.lower, c.lower);
        assert!(a.lower < a.estimate && a.estimate < a.upper, "{a:?}");
        // Standard error of the mean is about sd / sqrt(n) = 2.0 / 7.07 ≈ 0.28, so a 95 %
        // interval is roughly ±0.55 wide; accept a generous band.
        let half = (a.upper - a.lower) / 2.0;
        assert!(half > 0.35 && half < 0.8, "{a:?}");
    }

    #[test]
    fn constant_statistic_has_a_point_interval() {
        let v = vec![1.0; 10];
        let i = bootstrap_ci(10, mean(&v), &BootstrapConfig::default()).unwrap();
        assert_eq!((i.lower, i.estimate, i.upper), (1.0, 1.0, 1.0));
    }

    #[test]
    fn paired_test_detects_a_consistent_gap_and_not_noise() {
        let a: Vec<f64> = (0..100)
            .map(|i| if i % 10 < 8 { 1.0 } else { 0.0 })
            .collect();
        let b: Vec<f64> = (0..100)
            .map(|i| if i % 10 < 5 { 1.0 } else { 0.0 })
            .collect();
        let cfg = BootstrapConfig::default();
        let r = paired_bootstrap(100, mean(&a), mean(&b), &cfg).unwrap();
        assert!((r.delta.estimate - 0.3).abs() < 1e-12);
        assert!(r.p_value <= 0.002, "{r:?}");
        assert_eq!(r.a_wins, 1.0);
        let same = paired_bootstrap(100, mean(&a), mean(&a), &cfg).unwrap();
        assert_eq!(same.p_value, 1.0);
        assert_eq!(same.delta.estimate, 0.0);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let v = [1.0];
        let cfg = BootstrapConfig {
            confidence: 1.0,
            ..Default::default()
        };
        assert!(bootstrap_ci(1, mean(&v), &cfg).is_err());
        let cfg = BootstrapConfig {
            resamples: 0,
            ..Default::default()
        };
        assert!(bootstrap_ci(1, mean(&v), &cfg).is_err());
        assert!(bootstrap_ci(0, mean(&v), &BootstrapConfig::default()).is_err());
    }
}
