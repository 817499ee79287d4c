//! Strict and soft matching against counts computed by the study's own Python matching rules
//! (GENIA `report_metric` and MAVEN `get_correct_list`, `SequenceMatcher` included) on 200
//! random sentences with duplicates, near-miss names, case and whitespace variants and
//! undefined types (`data/study_matching.json`).

use sde_metrics::{Mention, MentionSample, SoftRule, score_extraction};
use serde::Deserialize;

#[derive(Deserialize)]
struct Sentence {
    gold: Vec<(String, String)>,
    pred: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Expected {
    ner_tp: u64,
    ner_fp: u64,
    ner_fn: u64,
    ner_soft_tp: u64,
    ner_soft_fp: u64,
    ner_soft_fn: u64,
    undefined: u64,
    ev_soft_tp: u64,
    ev_soft_fp: u64,
    ev_soft_fn: u64,
}

#[derive(Deserialize)]
struct Table {
    types: Vec<String>,
    ner: Vec<Sentence>,
    event: Vec<Sentence>,
    expected: Expected,
}

fn samples(sentences: &[Sentence]) -> Vec<MentionSample> {
    let mentions = |v: &[(String, String)]| v.iter().map(|(k, t)| Mention::new(k, t)).collect();
    sentences
        .iter()
        .map(|s| MentionSample {
            gold: mentions(&s.gold),
            pred: mentions(&s.pred),
            format_error: false,
        })
        .collect()
}

fn table() -> Table {
    serde_json::from_str(include_str!("data/study_matching.json")).expect("table parses")
}

#[test]
fn ner_matches_the_study_report() {
    let t = table();
    let s = score_extraction(&t.types, &samples(&t.ner), SoftRule::Ner);
    let e = &t.expected;
    assert_eq!(
        (s.strict.tp, s.strict.fp, s.strict.fn_),
        (e.ner_tp, e.ner_fp, e.ner_fn)
    );
    assert_eq!(
        (s.soft.tp, s.soft.fp, s.soft.fn_),
        (e.ner_soft_tp, e.ner_soft_fp, e.ner_soft_fn)
    );
    assert_eq!(s.undefined_type, e.undefined);
    // The soft rule must matter on this table.
    assert!(s.soft.tp > s.strict.tp);
}

#[test]
fn event_soft_matches_the_study_evaluator() {
    let t = table();
    let s = score_extraction(&t.types, &samples(&t.event), SoftRule::Event);
    let e = &t.expected;
    assert_eq!(
        (s.soft.tp, s.soft.fp, s.soft.fn_),
        (e.ev_soft_tp, e.ev_soft_fp, e.ev_soft_fn)
    );
}
