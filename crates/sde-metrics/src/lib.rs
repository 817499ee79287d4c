//! Scores of the SDE study, computed exactly as the study computes them.
//!
//! * MASA ([`score_masa`]): pooled and per-aspect 4×4 confusion matrices (label order
//!   positive, neutral, negative, unmentioned = [`Sentiment::index`]), accuracy, sentence
//!   accuracy, the study's weighted kappa with its asymmetric weights
//!   ([`STUDY_KAPPA_WEIGHTS`]), per-label precision and recall, format-error count and rate.
//! * NER and event detection ([`score_extraction`]): strict and the study's soft precision,
//!   recall and F1, undefined-type counts. Soft matching uses [`ratio`], a Ratcliff/Obershelp
//!   similarity equal to Python's `difflib.SequenceMatcher(None, a, b).ratio()`.
//! * Uncertainty ([`bootstrap_ci`], [`paired_bootstrap`]): seeded bootstrap intervals and a
//!   paired test between two designs on the same test set.
//! * [`spearman`] rank correlation for the prompt-engineering analyses.
//!
//! Inputs are plain labels (already parsed); this crate does no IO and knows no parser.
//!
//! [`Sentiment::index`]: sde_data::Sentiment::index

mod bootstrap;
mod confusion;
mod extraction;
mod masa;
mod rank;
mod similarity;

pub use bootstrap::{
    BootstrapConfig, Interval, PairedComparison, bootstrap_ci, masa_accuracy, masa_confusions,
    masa_kappa, mention_counts, paired_bootstrap, soft_f1, strict_f1,
};
pub use confusion::{ClassScores, Confusion, STUDY_KAPPA_WEIGHTS, round_to};
pub use extraction::{
    ExtractionScores, MatchCounts, Mention, MentionSample, Prf, SOFT_THRESHOLD, SoftRule,
    score_extraction, soft_counts, strict_counts,
};
pub use masa::{AspectScores, MasaSample, MasaScores, sample_confusion, score_masa};
pub use rank::{average_ranks, spearman};
pub use similarity::ratio;

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// A MASA sample has the wrong number of labels for its domain.
    #[error("sample {sample}: {field} has {found} labels, the domain has {expected} aspects")]
    AspectCount {
        /// Index of the sample in the input.
        sample: usize,
        /// `gold` or `pred`.
        field: &'static str,
        /// Number of aspects in the domain.
        expected: usize,
        /// Number of labels found.
        found: usize,
    },
    /// Two paired inputs have different lengths.
    #[error("{what}: lengths differ ({left} vs {right})")]
    LengthMismatch {
        /// The computation.
        what: &'static str,
        /// Length of the first input.
        left: usize,
        /// Length of the second input.
        right: usize,
    },
    /// Not enough values for the statistic.
    #[error("{what}: needs at least {needed} values, got {found}")]
    TooFewValues {
        /// The computation.
        what: &'static str,
        /// Minimum number of values.
        needed: usize,
        /// Number of values given.
        found: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what}: {side}[{index}] is not a finite number")]
    NotFinite {
        /// The computation.
        what: &'static str,
        /// Which input.
        side: &'static str,
        /// Position of the value.
        index: usize,
    },
    /// An input is constant, so the statistic is undefined.
    #[error("{what}: an input is constant, the statistic is undefined")]
    ConstantInput {
        /// The computation.
        what: &'static str,
    },
    /// A parameter is out of range.
    #[error("{field} = {value} is out of range (expected {expected})")]
    InvalidParameter {
        /// The parameter.
        field: &'static str,
        /// Its value.
        value: String,
        /// The allowed range.
        expected: &'static str,
    },
}
