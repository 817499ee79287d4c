//! Parses model outputs back into labels, with exactly one [`Status`] per output.
//!
//! [`parse`] reads one generated completion under the [`Design`] it was trained on and the
//! [`Domain`] it was asked about (the aspect list for MASA, the entity-type list for NER, the
//! event-type list for event detection) and returns a [`Parsed`]:
//!
//! * [`Labels`]: for MASA one [`Sentiment`](sde_data::Sentiment) per domain aspect in domain
//!   order; for NER the `(type, name)` entities; for event detection the `(type, trigger)`
//!   events. [`Parsed::align`] adds byte (and token) spans against the source sentence.
//! * [`Status`]: clean, repaired (which repairs), partial (missing / extra / invalid keys),
//!   truncated, unparseable or empty.
//! * [`Issue`]s: everything noticed, typed so that metrics can count format errors by kind.
//!
//! Three [`Mode`]s: `Strict` (the design's exact grammar), `Lenient` (exact first, then
//! tolerant repairs and the study's relaxations) and `Study` (the study's own evaluator,
//! quirks included, to reproduce its numbers; [`study_format_error`] tells whether the study
//! counts an output as a format error).
//!
//! The parser never panics, on any input. It does no IO.
//!
//! # Grammar
//!
//! Separators, label words, placeholders, quoting and JSON keys are read from
//! [`sde_format::Grammar`], so whatever `sde_format::render` writes, [`Mode::Strict`] reads
//! back as [`Status::Clean`] with the same labels (property-tested over every preset and every
//! axis combination). NER and event lists come back as `(type, text)` pairs; duplicates are
//! removed and recorded as [`Issue::DuplicateItem`] (a status-neutral note: a sentence can
//! mention the same entity twice).
//!
//! # Lenient mode, step by step
//!
//! 1. The exact grammar; clean output stops here.
//! 2. Repaired variants read with the exact grammar: without a code fence, without up to
//!    three prose lines at either end, without list markers, with the other punctuation width.
//!    The first clean variant gives [`Status::Repaired`] naming what was undone.
//! 3. Otherwise a heuristic reader: items anywhere (JSON records, tuples, `key: value` pieces
//!    with any separator), aspect keys by the study's soft keys (and English analogues),
//!    labels by the study's synonyms, type names case-insensitively, prose dropped.
//!    Missing aspects are unmentioned; under PU they also make the output
//!    [`Status::Partial`], under OU they do not.
//!
//! # Study mode
//!
//! Reproduces `format_parser.JSON_text` with soft relaxation for MASA, the per-design
//! splitters of `ner_metric_report.py` for GENIA and `convert_to_list` of `maven_eval.py` for
//! MAVEN (digest §7). [`Parsed::study_error`] is the study's format-error verdict; for CoT and
//! R-CoT it comes from the second pass without punctuation normalisation. Where the digest
//! leaves the Python unknown, the choices are: the OU branch is parsed as intended (quirk Q1
//! fixed: Natural parse, empty pieces skipped, an empty output not an error); the JSON fallback
//! strips braces, splits on `", "` then `": "` and needs both keys; a trailing empty line of
//! a JSON output is a split error, as `eval('')` fails; event fragments on which the script
//! would crash (Q15) are skipped and recorded as [`Issue::BadItem`]. Designs the study never
//! had map to the nearest study parser (numeric labels in lines or JSON are mapped through the
//! numeric table).

mod align;
mod event;
mod grammar;
mod items;
mod json;
mod listing;
mod masa;
mod ner;
mod normalize;
mod outcome;
mod repair;
mod study_masa;
mod types;

use sde_data::{Domain, Sentiment, TaskKind};
use sde_format::Design;

pub use types::{
    EntityMention, EventMention, Issue, IssueKind, Labels, Mode, Parsed, PartialCounts, Repair,
    Status, StudyError,
};

/// Parses one model output.
///
/// `domain` lists the aspects (MASA), entity types (NER) or event types (event detection),
/// in canonical order. `design.task` selects the task.
pub fn parse(text: &str, design: &Design, domain: &Domain, mode: Mode) -> Parsed {
    if mode == Mode::Lenient {
        let strict = parse_task(text, design, domain, Mode::Strict);
        if strict.status.is_clean() {
            return strict;
        }
        if let Some(repaired) = repair::exact_after_repairs(text, design, domain) {
            return repaired;
        }
    }
    parse_task(text, design, domain, mode)
}

fn parse_task(text: &str, design: &Design, domain: &Domain, mode: Mode) -> Parsed {
    match design.task {
        TaskKind::Masa => masa::parse(text, design, domain, mode),
        TaskKind::Ner => ner::parse(text, design, domain, mode),
        TaskKind::Event => event::parse(text, design, domain, mode),
    }
}

/// Whether the study's own evaluator counts `text` as a format error, and which kind
/// (digest §7.1 for MASA, including the CoT second pass without punctuation normalisation;
/// §7.3 for event detection; for NER the `num_invalid` undefined-type count).
pub fn study_format_error(text: &str, design: &Design, domain: &Domain) -> Option<StudyError> {
    parse(text, design, domain, Mode::Study).study_error
}

/// The study's parse of a MASA *gold* target: the design's study parser without relaxation.
/// `None` where the study drops the sample from the counts (the gold string does not parse,
/// names an unknown aspect or has an unknown label). Missing aspects are unmentioned.
pub fn study_masa_gold(text: &str, design: &Design, domain: &Domain) -> Option<Vec<Sentiment>> {
    study_masa::gold(text, design, domain)
}

/// The study's parse of a *gold* target of any task, as its scripts read gold: MASA with
/// [`study_masa_gold`]; GENIA targets with the design's parser, split on `': '` (quirk Q13);
/// MAVEN targets always in the heuristic tuple format, lowercased, not stripped. `None` where
/// the study's script would drop the sample or crash on it.
pub fn study_gold(text: &str, design: &Design, domain: &Domain) -> Option<Labels> {
    match design.task {
        TaskKind::Masa => study_masa_gold(text, design, domain).map(Labels::Masa),
        TaskKind::Ner => ner::study_pairs(text, design, true).map(|pairs| {
            Labels::Ner(
                pairs
                    .into_iter()
                    .map(|(kind, name)| EntityMention {
                        kind,
                        name,
                        span: None,
                        tokens: None,
                    })
                    .collect(),
            )
        }),
        TaskKind::Event => Some(Labels::Event(
            event::study_gold_pairs(text)
                .into_iter()
                .map(|(kind, trigger)| EventMention {
                    kind,
                    trigger,
                    span: None,
                })
                .collect(),
        )),
    }
}
