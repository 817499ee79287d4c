//! NER and event-detection scores: strict and the study's soft precision, recall and F1.
//!
//! Both tasks reduce to typed strings per sentence: an entity is (type, name), an event is
//! (type, trigger). Types and strings are lowercased before matching, as in the study.
//!
//! * **Strict**: exact (type, string) match, multiset-aware: an item counts
//!   `min(#predicted, #gold)` times, so duplicated predictions never earn extra credit.
//! * **Soft NER** (the study's rule from "Is Information Extraction Solved by ChatGPT?"): each
//!   predicted name (trimmed) is compared with every gold name of the same sentence by
//!   [`crate::ratio`]; if the best ratio is above 0.5 and one string contains the other, the
//!   prediction takes the gold name (first best on ties). Then strict matching.
//! * **Soft ED** (the study's MAVEN rule): predictions are deduplicated; each unique
//!   prediction's trigger is replaced by the most similar gold trigger of the sentence when
//!   the ratio is above 0.5 (no containment condition). A unique prediction is correct when
//!   the resulting (type, trigger) is among the gold events; false positives are all raw
//!   predictions that are not correct, duplicates included.

use serde::{Deserialize, Serialize};

use crate::confusion::round_to;
use crate::similarity::ratio;

/// The similarity a soft match must exceed.
pub const SOFT_THRESHOLD: f64 = 0.5;

/// A typed string: an entity (type, name) or an event (type, trigger).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mention {
    /// Entity or event type, e.g. `protein` or `Attack`.
    pub kind: String,
    /// Entity name or trigger text.
    pub text: String,
}

impl Mention {
    /// A mention from its type and text.
    pub fn new(kind: impl Into<String>, text: impl Into<String>) -> Self {
        Mention {
            kind: kind.into(),
            text: text.into(),
        }
    }

    fn lowercased(&self) -> Mention {
        Mention::new(self.kind.to_lowercase(), self.text.to_lowercase())
    }
}

/// Gold and predicted mentions of one sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MentionSample {
    /// Gold mentions (duplicates allowed).
    pub gold: Vec<Mention>,
    /// Predicted mentions, in output order (duplicates allowed).
    pub pred: Vec<Mention>,
    /// Whether parsing the prediction produced any format error.
    pub format_error: bool,
}

/// Which soft-matching rule a task uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SoftRule {
    /// Ratio > 0.5 and containment, then multiset matching (GENIA NER).
    Ner,
    /// Ratio > 0.5, deduplicated predictions, duplicates counted as false positives (MAVEN ED).
    Event,
}

/// Additive match counts. False positives and false negatives are derived so that sums over
/// sentences reproduce the study's corpus totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchCounts {
    /// Correct predictions.
    pub tp: u64,
    /// All predictions (duplicates included).
    pub predicted: u64,
    /// All gold mentions.
    pub gold: u64,
}

impl MatchCounts {
    /// Adds another sentence's (or corpus's) counts.
    pub fn add(&mut self, other: MatchCounts) {
        self.tp += other.tp;
        self.predicted += other.predicted;
        self.gold += other.gold;
    }

    /// Predictions that are not correct.
    pub fn fp(&self) -> u64 {
        self.predicted.saturating_sub(self.tp)
    }

    /// Gold mentions not found. (The study's soft ED rule can credit two predictions to one
    /// gold trigger; the difference is then clamped at zero for the whole corpus.)
    pub fn fn_(&self) -> u64 {
        self.gold.saturating_sub(self.tp)
    }

    /// `tp / (tp + fp)`, 0 when nothing was predicted.
    pub fn precision(&self) -> f64 {
        let d = self.tp + self.fp();
        if d == 0 {
            0.0
        } else {
            self.tp as f64 / d as f64
        }
    }

    /// `tp / (tp + fn)`, 0 when there is no gold.
    pub fn recall(&self) -> f64 {
        let d = self.tp + self.fn_();
        if d == 0 {
            0.0
        } else {
            self.tp as f64 / d as f64
        }
    }

    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// Precision, recall and F1 of these counts.
    pub fn scores(&self) -> Prf {
        Prf {
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
            tp: self.tp,
            fp: self.fp(),
            fn_: self.fn_(),
        }
    }
}

/// Precision, recall and F1 at full precision, with the counts behind them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Prf {
    /// The same scores rounded to `digits` decimals (the NER report uses 5).
    pub fn rounded(&self, digits: usize) -> Prf {
        Prf {
            precision: round_to(self.precision, digits),
            recall: round_to(self.recall, digits),
            f1: round_to(self.f1, digits),
            ..*self
        }
    }
}

/// Strict and soft scores of a NER or ED prediction file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractionScores {
    /// Which soft rule was applied.
    pub rule: SoftRule,
    /// Number of sentences.
    pub samples: usize,
    /// Sentences with a format error.
    pub format_errors: usize,
    /// `format_errors / samples` (0 for no samples).
    pub format_error_rate: f64,
    /// Predicted mentions whose type is not one of the task's types (still false positives).
    pub undefined_type: u64,
    /// Exact (type, string) matching.
    pub strict: Prf,
    /// The study's soft matching.
    pub soft: Prf,
}

/// Strict counts of one sentence: multiset intersection of lowercased (type, string) pairs.
pub fn strict_counts(sample: &MentionSample) -> MatchCounts {
    let gold: Vec<Mention> = sample.gold.iter().map(Mention::lowercased).collect();
    let pred: Vec<Mention> = sample.pred.iter().map(Mention::lowercased).collect();
    multiset_counts(&gold, &pred)
}

/// `tp = Σ_item min(#pred, #gold)`.
fn multiset_counts(gold: &[Mention], pred: &[Mention]) -> MatchCounts {
    let mut remaining: Vec<Option<&Mention>> = gold.iter().map(Some).collect();
    let mut tp = 0;
    for p in pred {
        if let Some(slot) = remaining.iter_mut().find(|g| g.is_some_and(|g| g == p)) {
            *slot = None;
            tp += 1;
        }
    }
    MatchCounts {
        tp,
        predicted: pred.len() as u64,
        gold: gold.len() as u64,
    }
}

/// Index of the first maximal similarity between `text` and `candidates`, if above the
/// threshold.
fn best_candidate(text: &str, candidates: &[String]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let r = ratio(text, c);
        if best.is_none_or(|(_, b)| r > b) {
            best = Some((i, r));
        }
    }
    best.filter(|&(_, r)| r > SOFT_THRESHOLD).map(|(i, _)| i)
}

/// Soft counts of one sentence under `rule`.
pub fn soft_counts(sample: &MentionSample, rule: SoftRule) -> MatchCounts {
    let gold: Vec<Mention> = sample.gold.iter().map(Mention::lowercased).collect();
    let gold_texts: Vec<String> = gold.iter().map(|g| g.text.clone()).collect();
    match rule {
        SoftRule::Ner => {
            let pred: Vec<Mention> = sample
                .pred
                .iter()
                .map(|p| {
                    let p = p.lowercased();
                    let name = p.text.trim();
                    let replaced = best_candidate(name, &gold_texts).and_then(|i| {
                        let target = gold_texts[i].trim();
                        (target != name && (target.contains(name) || name.contains(target)))
                            .then(|| target.to_owned())
                    });
                    Mention::new(p.kind, replaced.unwrap_or_else(|| name.to_owned()))
                })
                .collect();
            multiset_counts(&gold, &pred)
        }
        SoftRule::Event => {
            let mut unique: Vec<Mention> = Vec::new();
            for p in sample.pred.iter().map(Mention::lowercased) {
                if !unique.contains(&p) {
                    unique.push(p);
                }
            }
            let tp = unique
                .into_iter()
                .map(|mut p| {
                    if let Some(i) = best_candidate(&p.text, &gold_texts) {
                        p.text = gold_texts[i].trim().to_owned();
                    }
                    p
                })
                .filter(|p| gold.contains(p))
                .count() as u64;
            MatchCounts {
                tp,
                predicted: sample.pred.len() as u64,
                gold: gold.len() as u64,
            }
        }
    }
}

/// Scores sentences under strict and soft matching; `types` are the task's types (for the
/// undefined-type count; compared case-insensitively).
pub fn score_extraction<S: AsRef<str>>(
    types: &[S],
    samples: &[MentionSample],
    rule: SoftRule,
) -> ExtractionScores {
    let types: Vec<String> = types.iter().map(|t| t.as_ref().to_lowercase()).collect();
    let mut strict = MatchCounts::default();
    let mut soft = MatchCounts::default();
    let mut undefined_type = 0;
    let mut format_errors = 0;
    for s in samples {
        strict.add(strict_counts(s));
        soft.add(soft_counts(s, rule));
        undefined_type += s
            .pred
            .iter()
            .filter(|p| !types.contains(&p.kind.to_lowercase()))
            .count() as u64;
        format_errors += usize::from(s.format_error);
    }
    ExtractionScores {
        rule,
        samples: samples.len(),
        format_errors,
        format_error_rate: if samples.is_empty() {
            0.0
        } else {
            format_errors as f64 / samples.len() as f64
        },
        undefined_type,
        strict: strict.scores(),
        soft: soft.scores(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, text: &str) -> Mention {
        Mention::new(kind, text)
    }

    fn s(gold: Vec<Mention>, pred: Vec<Mention>) -> MentionSample {
        MentionSample {
            gold,
            pred,
            format_error: false,
        }
    }

    #[test]
    fn strict_is_multiset_aware_and_case_insensitive() {
        // gold: A x2, B; pred: A x3, b (lowercase), C.
        let sample = s(
            vec![m("protein", "A"), m("protein", "A"), m("DNA", "B")],
            vec![
                m("protein", "a"),
                m("Protein", "A"),
                m("protein", "A"),
                m("dna", "b"),
                m("DNA", "C"),
            ],
        );
        let c = strict_counts(&sample);
        assert_eq!((c.tp, c.fp(), c.fn_()), (3, 2, 0));
        // Duplicated prediction, single gold: one credit.
        let c = strict_counts(&s(
            vec![m("protein", "il-2")],
            vec![m("protein", "il-2"), m("protein", "il-2")],
        ));
        assert_eq!((c.tp, c.fp(), c.fn_()), (1, 1, 0));
        // Type must match.
        let c = strict_counts(&s(vec![m("protein", "il-2")], vec![m("dna", "il-2")]));
        assert_eq!((c.tp, c.fp(), c.fn_()), (0, 1, 1));
    }

    #[test]
    fn prf_by_hand() {
        let c = MatchCounts {
            tp: 3,
            predicted: 5,
            gold: 4,
        };
        let p = c.scores();
        assert_eq!(p.precision, 0.6);
        assert_eq!(p.recall, 0.75);
        assert!((p.f1 - 2.0 * 0.6 * 0.75 / 1.35).abs() < 1e-15);
        assert_eq!(p.rounded(5).f1, 0.66667);
        let z = MatchCounts::default().scores();
        assert_eq!((z.precision, z.recall, z.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn soft_ner_needs_similarity_and_containment() {
        let gold = vec![m("protein", "IL-2"), m("DNA", "IL-2 gene")];
        // "il-2 gene promoter" contains "il-2 gene" (ratio 2*9/27 = 0.667): replaced, correct.
        // "il-3" is similar to "il-2" (0.75) but neither contains the other: not replaced.
        // " il-2 " is trimmed, then equal: correct.
        let sample = s(
            gold,
            vec![
                m("DNA", "IL-2 gene promoter"),
                m("protein", "IL-3"),
                m("protein", " il-2 "),
            ],
        );
        let soft = soft_counts(&sample, SoftRule::Ner);
        assert_eq!((soft.tp, soft.fp(), soft.fn_()), (2, 1, 0));
        let strict = strict_counts(&sample);
        assert_eq!((strict.tp, strict.fp(), strict.fn_()), (0, 3, 2));
    }

    #[test]
    fn soft_ner_short_containment_below_threshold_is_not_replaced() {
        // "b" in "nf-kappa b": contained but ratio 2/11 <= 0.5.
        let sample = s(vec![m("protein", "nf-kappa b")], vec![m("protein", "b")]);
        assert_eq!(soft_counts(&sample, SoftRule::Ner).tp, 0);
    }

    #[test]
    fn soft_ner_trims_predictions_but_not_gold() {
        // The study trims the predicted name only; an untrimmed gold name then never matches.
        let sample = s(vec![m("protein", " il-2")], vec![m("protein", " il-2")]);
        assert_eq!(strict_counts(&sample).tp, 1);
        assert_eq!(soft_counts(&sample, SoftRule::Ner).tp, 0);
    }

    #[test]
    fn soft_ner_type_still_matters() {
        let sample = s(vec![m("protein", "il-2")], vec![m("dna", "il-2 protein")]);
        assert_eq!(soft_counts(&sample, SoftRule::Ner).tp, 0);
    }

    #[test]
    fn soft_event_dedups_and_counts_duplicates_as_false_positives() {
        let gold = vec![m("Attack", "invaded"), m("Motion", "came")];
        // "invade" -> "invaded" (ratio 12/13): correct; its duplicate is a false positive;
        // "went" vs "came": ratio 0.25, stays, wrong. No containment needed: "fought"
        // vs gold "fight" would be replaced too (ratio 2*4/11 = 0.727).
        let sample = s(
            gold,
            vec![
                m("attack", "invade"),
                m("attack", "invade"),
                m("motion", "went"),
            ],
        );
        let c = soft_counts(&sample, SoftRule::Event);
        assert_eq!((c.tp, c.predicted, c.gold), (1, 3, 2));
        assert_eq!((c.fp(), c.fn_()), (2, 1));
        let c = soft_counts(
            &s(vec![m("Attack", "fight")], vec![m("Attack", "fought")]),
            SoftRule::Event,
        );
        assert_eq!(c.tp, 1);
        // The NER rule needs containment, so the same pair does not match there.
        let c = soft_counts(
            &s(vec![m("Attack", "fight")], vec![m("Attack", "fought")]),
            SoftRule::Ner,
        );
        assert_eq!(c.tp, 0);
    }

    #[test]
    fn soft_event_without_gold_does_not_fail() {
        let c = soft_counts(&s(vec![], vec![m("Attack", "x")]), SoftRule::Event);
        assert_eq!((c.tp, c.fp(), c.fn_()), (0, 1, 0));
    }

    #[test]
    fn undefined_types_are_counted_and_false_positive() {
        let samples = vec![s(
            vec![m("protein", "a")],
            vec![m("protein", "a"), m("gene", "b"), m("PROTEIN", "c")],
        )];
        let r = score_extraction(&["DNA", "protein"], &samples, SoftRule::Ner);
        assert_eq!(r.undefined_type, 1);
        assert_eq!((r.strict.tp, r.strict.fp, r.strict.fn_), (1, 2, 0));
    }
}
