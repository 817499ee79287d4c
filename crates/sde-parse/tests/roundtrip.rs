//! `parse(render(labels)) == labels` with status clean, for every preset and every axis
//! combination of every task and language; and no panic on cut or corrupted outputs.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use sde_data::{
    AspectLabel, Domain, Entity, Event, EventRecord, MasaRecord, NerRecord, Record, Sentiment,
    Span, TaskKind,
};
use sde_format::{
    Design, LabelForm, Language, Layout, LossOn, Placement, Reasoning, Unmentioned, render,
};
use sde_parse::{Labels, Mode, Parsed, Repair, Status, parse};

const TASKS: [TaskKind; 3] = [TaskKind::Masa, TaskKind::Ner, TaskKind::Event];
const LANGUAGES: [Language; 2] = [Language::Zh, Language::En];

/// Every axis combination (placement and loss scope included) plus every preset.
fn all_designs() -> Vec<Design> {
    let mut out = Vec::new();
    for task in TASKS {
        for language in LANGUAGES {
            for preset in Design::presets(task, language) {
                out.push(preset.design);
            }
            for placement in [Placement::InstFirst, Placement::InstLast, Placement::NoInst] {
                for loss_on in [LossOn::Completion, LossOn::PromptAndCompletion] {
                    for layout in [Layout::Natural, Layout::Lines, Layout::Json, Layout::Tuples] {
                        for unmentioned in [Unmentioned::Placeholder, Unmentioned::Omit] {
                            for labels in [LabelForm::Text, LabelForm::Numeric] {
                                for reasoning in
                                    [Reasoning::None, Reasoning::Cot, Reasoning::ReverseCot]
                                {
                                    out.push(Design {
                                        placement,
                                        loss_on,
                                        layout,
                                        unmentioned,
                                        labels,
                                        reasoning,
                                        ..Design::baseline(task, language)
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn domain_for(task: TaskKind, which: usize) -> Domain {
    match task {
        TaskKind::Masa => match which % 3 {
            0 => Domain::study_d1(),
            1 => Domain::study_d2(),
            _ => Domain::study_all(),
        },
        TaskKind::Ner => Domain::genia(),
        TaskKind::Event => Domain::maven10(),
    }
}

/// Words for review texts and NER sentences: separators, quotes and brackets included.
const TEXT_WORDS: &[&str] = &[
    "菜",
    "很好吃",
    "服务",
    "一般",
    "，",
    "：",
    "。",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "None",
    "IL-2",
    "gene",
    "NF-kappa",
    "B",
    "cells",
    ",",
    ";",
    ":",
    "(",
    ")",
    "T",
    "receptor",
    "'s",
    "x'y\"z",
    "\\",
    "food",
    "price",
    "停车",
    "价格",
    "-",
    "NONE",
    "''",
];

/// Words that can be event triggers: no separator of any event grammar inside.
const TRIGGER_WORDS: &[&str] = &[
    "attack",
    "flew",
    "came",
    "meant",
    "battle",
    "storm",
    "killed",
    "led",
    "won",
    "war",
    "地震",
    "袭击",
    "O'Neil",
    "self-defence",
    "x\"y",
    "[raid]",
    "{a}",
];

fn sentiment() -> impl Strategy<Value = Sentiment> {
    prop::sample::select(Sentiment::ALL.to_vec())
}

fn text_of(words: &[usize], vocab: &[&str]) -> Vec<String> {
    words
        .iter()
        .map(|&i| vocab[i % vocab.len()].to_string())
        .collect()
}

/// A record of the design's task with random labels, and the labels a parse must give back.
fn record(design: Design) -> impl Strategy<Value = (Design, Domain, Record, Labels)> {
    let task = design.task;
    (
        0usize..3,
        prop::collection::vec(0usize..1000, 1..25),
        prop::collection::vec(sentiment(), 11),
        prop::collection::vec((0usize..30, 1usize..4, 0usize..10), 0..8),
    )
        .prop_map(move |(which, words, sentiments, spans)| {
            let domain = domain_for(task, which);
            match task {
                TaskKind::Masa => {
                    let text = text_of(&words, TEXT_WORDS).concat();
                    let labels: Vec<AspectLabel> = domain
                        .aspects
                        .iter()
                        .zip(&sentiments)
                        .filter(|(_, s)| **s != Sentiment::Unmentioned)
                        .map(|(a, s)| AspectLabel {
                            aspect: a.key.clone(),
                            sentiment: *s,
                            evidence: None,
                        })
                        .collect();
                    let record = MasaRecord {
                        id: "r".into(),
                        text,
                        labels,
                    };
                    let expected = domain.keys().map(|k| record.sentiment(k)).collect();
                    (design, domain, Record::Masa(record), Labels::Masa(expected))
                }
                TaskKind::Ner => {
                    let tokens = text_of(&words, TEXT_WORDS);
                    let n = tokens.len();
                    let mut entities: Vec<Entity> = spans
                        .iter()
                        .map(|&(start, len, kind)| {
                            let start = start % n;
                            let end = (start + len).min(n);
                            Entity {
                                kind: domain.aspects[kind % domain.len()].key.clone(),
                                start_token: start,
                                end_token: end,
                                text: tokens[start..end].join(" "),
                            }
                        })
                        .collect();
                    entities.sort_by(|a, b| {
                        (a.start_token, a.end_token, &a.kind).cmp(&(
                            b.start_token,
                            b.end_token,
                            &b.kind,
                        ))
                    });
                    let record = NerRecord {
                        id: "r".into(),
                        text: tokens.join(" "),
                        tokens,
                        entities,
                    };
                    let expected = Labels::Ner(Vec::new());
                    (design, domain, Record::Ner(record), expected)
                }
                TaskKind::Event => {
                    let words = text_of(&words, TRIGGER_WORDS);
                    let text = words.join(" ");
                    let mut offsets = Vec::new();
                    let mut at = 0;
                    for w in &words {
                        offsets.push(at);
                        at += w.len() + 1;
                    }
                    let mut events: Vec<Event> = spans
                        .iter()
                        .map(|&(start, _, kind)| {
                            let i = start % words.len();
                            Event {
                                kind: domain.aspects[kind % domain.len()].key.clone(),
                                trigger: words[i].clone(),
                                span: Span {
                                    start: offsets[i],
                                    end: offsets[i] + words[i].len(),
                                },
                            }
                        })
                        .collect();
                    events.sort_by_key(|e| e.span.start);
                    let record = EventRecord {
                        id: "r".into(),
                        text,
                        events,
                    };
                    (
                        design,
                        domain,
                        Record::Event(record),
                        Labels::Event(Vec::new()),
                    )
                }
            }
        })
}

/// `(type, text)` pairs as a set, for NER and events.
fn pair_set(labels: &Labels) -> BTreeSet<(String, String)> {
    match labels {
        Labels::Masa(_) => BTreeSet::new(),
        Labels::Ner(e) => e.iter().map(|e| (e.kind.clone(), e.name.clone())).collect(),
        Labels::Event(e) => e
            .iter()
            .map(|e| (e.kind.clone(), e.trigger.clone()))
            .collect(),
    }
}

fn expected_pairs(record: &Record) -> BTreeSet<(String, String)> {
    match record {
        Record::Masa(_) => BTreeSet::new(),
        Record::Ner(r) => r
            .entities
            .iter()
            .map(|e| (e.kind.clone(), e.text.clone()))
            .collect(),
        Record::Event(r) => r
            .events
            .iter()
            .map(|e| (e.kind.clone(), e.trigger.clone()))
            .collect(),
    }
}

fn check_round_trip(design: &Design, domain: &Domain, record: &Record, expected: &Labels) {
    let Ok(sample) = render(record, design, domain) else {
        return;
    };
    for mode in [Mode::Strict, Mode::Lenient] {
        let parsed = parse(&sample.completion, design, domain, mode);
        assert_eq!(
            parsed.status,
            Status::Clean,
            "design {design} mode {mode:?}\ncompletion:\n{}\nissues: {:?}",
            sample.completion,
            parsed.issues
        );
        match expected {
            Labels::Masa(_) => assert_eq!(&parsed.labels, expected, "design {design}"),
            _ => {
                assert_eq!(
                    pair_set(&parsed.labels),
                    expected_pairs(record),
                    "design {design} mode {mode:?}\ncompletion:\n{}",
                    sample.completion
                );
                let n = match &parsed.labels {
                    Labels::Ner(e) => e.len(),
                    Labels::Event(e) => e.len(),
                    Labels::Masa(_) => 0,
                };
                assert_eq!(n, pair_set(&parsed.labels).len(), "duplicates kept");
            }
        }
    }
}

fn check_well_formed(parsed: &Parsed, domain: &Domain) {
    if let Labels::Masa(labels) = &parsed.labels {
        assert_eq!(labels.len(), domain.len());
    }
    if parsed.status.is_clean() {
        assert!(
            parsed.issues.iter().all(|i| matches!(
                i.kind(),
                sde_parse::IssueKind::DuplicateItem | sde_parse::IssueKind::SpanNotInText
            )),
            "clean with issues: {:?}",
            parsed.issues
        );
    }
}

fn design_strategy() -> impl Strategy<Value = Design> {
    prop::sample::select(all_designs())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn render_then_parse_gives_the_labels_back(
        (design, domain, record, expected) in design_strategy().prop_flat_map(record)
    ) {
        check_round_trip(&design, &domain, &record, &expected);
    }

    #[test]
    fn cut_and_corrupted_outputs_get_a_status_and_never_panic(
        (design, domain, record, _) in design_strategy().prop_flat_map(record),
        cut in 0.0f64..1.0,
        at in 0.0f64..1.0,
        insert in "[\\PC\n，：。,:;\"'\\[\\]{}()（）`*-]{0,12}",
    ) {
        let Ok(sample) = render(&record, &design, &domain) else { return Ok(()) };
        let completion = sample.completion;
        let cut_at = floor_char_boundary(&completion, (completion.len() as f64 * cut) as usize);
        let insert_at = floor_char_boundary(&completion, (completion.len() as f64 * at) as usize);
        let mut corrupted = completion.clone();
        corrupted.insert_str(insert_at, &insert);
        for text in [&completion[..cut_at], corrupted.as_str()] {
            for mode in [Mode::Strict, Mode::Lenient, Mode::Study] {
                let parsed = parse(text, &design, &domain, mode);
                check_well_formed(&parsed, &domain);
                prop_assert!(true, "{design} {mode:?} {text:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary text made of grammar fragments never panics and always gets one status.
    #[test]
    fn arbitrary_text_never_panics(
        design in design_strategy(),
        pieces in prop::collection::vec(prop::sample::select(FRAGMENTS.to_vec()), 0..30),
        noise in "\\PC{0,8}",
    ) {
        let domain = domain_for(design.task, 2);
        let text = format!("{}{noise}", pieces.concat());
        for mode in [Mode::Strict, Mode::Lenient, Mode::Study] {
            let mut parsed = parse(&text, &design, &domain, mode);
            check_well_formed(&parsed, &domain);
            parsed.align(&text);
        }
    }
}

/// Pieces of every grammar, for random outputs.
const FRAGMENTS: &[&str] = &[
    "食品评价",
    "：",
    "，",
    "。",
    "正面",
    "未提",
    "-2",
    "1",
    "\n",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "\"方面\": ",
    "\"情感\": ",
    "\"描述\": ",
    ", ",
    ": ",
    "; ",
    "；",
    "'DNA'",
    "'protein'",
    "Attack",
    "NONE",
    "无",
    "''",
    "\"entity_type\"",
    "\"trigger word\"",
    "```",
    "- ",
    "1. ",
    "\\",
    "\\u12",
    "aspect",
    "positive",
    "food",
    "Catastrophe",
    "0",
    "9",
    "(",
    ")",
    "null",
    "True",
    "  ",
];

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Every design, deterministically, with one fixed record of each task.
#[test]
fn every_design_round_trips_a_fixed_record() {
    let runner = &mut proptest::test_runner::TestRunner::deterministic();
    for design in all_designs() {
        for _ in 0..4 {
            let tree = record(design).new_tree(runner).unwrap();
            let (design, domain, record, expected) = tree.current();
            check_round_trip(&design, &domain, &record, &expected);
        }
    }
}

/// Lenient mode undoes a code fence, prose lines around the answer and (for Chinese MASA)
/// half-width punctuation, for any design's completion.
#[test]
fn lenient_mode_recovers_fenced_outputs_of_every_design() {
    let runner = &mut proptest::test_runner::TestRunner::deterministic();
    let mut failures = Vec::new();
    for design in all_designs() {
        for _ in 0..3 {
            let tree = record(design).new_tree(runner).unwrap();
            let (design, domain, record, expected) = tree.current();
            let Ok(sample) = render(&record, &design, &domain) else {
                continue;
            };
            if sample.completion.trim().is_empty() {
                continue;
            }
            let c = &sample.completion;
            let mut variants = vec![
                (format!("Answer:\n```\n{c}\n```"), Repair::CodeFence),
                (
                    format!("Sure! Here it is:\n{c}\nHope this helps."),
                    Repair::SurroundingProse,
                ),
            ];
            if design.layout != Layout::Natural {
                let marked: Vec<String> = c
                    .lines()
                    .enumerate()
                    .map(|(i, l)| format!("{}. {l}", i + 1))
                    .collect();
                variants.push((marked.join("\n"), Repair::ListMarkers));
            }
            if design.task == TaskKind::Masa
                && design.language == Language::Zh
                && design.reasoning == Reasoning::None
                && design.layout != Layout::Json
                && design.layout != Layout::Tuples
            {
                variants.push((
                    c.replace('：', ":").replace('，', ","),
                    Repair::PunctuationWidth,
                ));
            }
            for (wrapped, repair) in variants {
                let parsed = parse(&wrapped, &design, &domain, Mode::Lenient);
                let ok = matches!(&parsed.status, Status::Repaired { repairs } if repairs.contains(&repair))
                    && match &expected {
                        Labels::Masa(_) => parsed.labels == expected,
                        _ => pair_set(&parsed.labels) == expected_pairs(&record),
                    };
                if !ok {
                    failures.push(format!(
                        "{design}: {:?}\n{wrapped}\n{:?}",
                        parsed.status, parsed.issues
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures, first:\n{}",
        failures.len(),
        failures.first().map_or("", |s| s.as_str())
    );
}

/// The study's own parser reads every Chinese MASA preset's completions back without a
/// format error.
#[test]
fn study_mode_reads_every_chinese_masa_preset() {
    let runner = &mut proptest::test_runner::TestRunner::deterministic();
    for preset in Design::presets(TaskKind::Masa, Language::Zh) {
        for _ in 0..40 {
            let tree = record(preset.design).new_tree(runner).unwrap();
            let (design, domain, record, expected) = tree.current();
            let sample = render(&record, &design, &domain).unwrap();
            let parsed = parse(&sample.completion, &design, &domain, Mode::Study);
            assert_eq!(parsed.labels, expected, "{design}\n{}", sample.completion);
            assert_eq!(parsed.study_error, None, "{design}\n{}", sample.completion);
        }
    }
}

/// A PU output missing its first item is partial in both modes, with the other labels intact.
#[test]
fn missing_item_under_pu_is_partial_with_the_rest_read() {
    let runner = &mut proptest::test_runner::TestRunner::deterministic();
    let mut failures = Vec::new();
    for design in all_designs() {
        if design.unmentioned != Unmentioned::Placeholder
            || design.layout == Layout::Natural
            || design.layout == Layout::Tuples && design.task != TaskKind::Masa
        {
            continue;
        }
        for _ in 0..3 {
            let tree = record(design).new_tree(runner).unwrap();
            let (design, domain, record, expected) = tree.current();
            let Ok(sample) = render(&record, &design, &domain) else {
                continue;
            };
            let rest: Vec<&str> = sample.completion.lines().skip(1).collect();
            let text = rest.join("\n");
            for mode in [Mode::Strict, Mode::Lenient] {
                let parsed = parse(&text, &design, &domain, mode);
                let partial = matches!(parsed.status, Status::Partial(c) if c.missing == 1);
                let labels_ok = match (&expected, &parsed.labels) {
                    (Labels::Masa(e), Labels::Masa(p)) => {
                        p[0] == Sentiment::Unmentioned && e[1..] == p[1..]
                    }
                    _ => {
                        let first = &domain.aspects[0].key;
                        let want: BTreeSet<_> = expected_pairs(&record)
                            .into_iter()
                            .filter(|(k, _)| k != first)
                            .collect();
                        pair_set(&parsed.labels) == want
                    }
                };
                if !(partial && labels_ok) {
                    failures.push(format!(
                        "{design} {mode:?}: {:?}\n{text}\n{:?}",
                        parsed.status, parsed.labels
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures, first:\n{}",
        failures.len(),
        failures.first().map_or("", |s| s.as_str())
    );
}
