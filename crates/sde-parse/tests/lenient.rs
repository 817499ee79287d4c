//! Hand-written outputs: what strict and lenient parsing make of typical model mistakes.

use sde_data::{Domain, Sentiment, TaskKind};
use sde_format::{Design, Language};
use sde_parse::{IssueKind, Labels, Mode, Parsed, PartialCounts, Repair, Status, parse};

use Sentiment::{Negative as Neg, Neutral as Neu, Positive as Pos, Unmentioned as Unm};

fn masa(preset: &str) -> Design {
    Design::preset(TaskKind::Masa, Language::Zh, preset).unwrap()
}

fn d1() -> Domain {
    Domain::study_d1()
}

fn masa_labels(p: &Parsed) -> Vec<Sentiment> {
    match &p.labels {
        Labels::Masa(l) => l.clone(),
        other => panic!("not MASA: {other:?}"),
    }
}

fn repairs(p: &Parsed) -> Vec<Repair> {
    match &p.status {
        Status::Repaired { repairs } => repairs.clone(),
        other => panic!("expected repaired, got {other:?} ({:?})", p.issues),
    }
}

const CLEAN: &str = "食品评价：正面，饮品评价：未提及，价格水平：负面，卫生情况：未提及，服务人员态度：中性，停车方便程度：未提及。";
const LABELS: [Sentiment; 6] = [Pos, Unm, Neg, Unm, Neu, Unm];

#[test]
fn clean_output_is_clean_in_every_mode() {
    for mode in [Mode::Strict, Mode::Lenient, Mode::Study] {
        let p = parse(CLEAN, &masa("baseline"), &d1(), mode);
        assert_eq!(p.status, Status::Clean, "{mode:?}");
        assert_eq!(masa_labels(&p), LABELS);
    }
}

#[test]
fn code_fence_and_surrounding_prose_are_dropped() {
    let text = format!("好的，以下是分析结果：\n```\n{CLEAN}\n```\n希望对你有帮助。");
    let p = parse(&text, &masa("baseline"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    let r = repairs(&p);
    assert!(
        r.contains(&Repair::CodeFence) && r.contains(&Repair::SurroundingProse),
        "{r:?}"
    );
    let p = parse(
        &format!("分析如下：{CLEAN}"),
        &masa("baseline"),
        &d1(),
        Mode::Lenient,
    );
    assert_eq!(masa_labels(&p), LABELS);
    assert!(repairs(&p).contains(&Repair::SurroundingProse));
}

#[test]
fn half_width_punctuation_is_read_in_lenient_mode_only() {
    let text = CLEAN
        .replace('：', ":")
        .replace('，', ",")
        .replace('。', ".");
    let strict = parse(&text, &masa("baseline"), &d1(), Mode::Strict);
    assert!(strict.status.is_format_error());
    let p = parse(&text, &masa("baseline"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    assert!(repairs(&p).contains(&Repair::PunctuationWidth));
    // The study's own parser turns every aspect into unmentioned (quirk Q2).
    let s = parse(&text, &masa("baseline"), &d1(), Mode::Study);
    assert_eq!(masa_labels(&s), [Unm; 6]);
    assert!(s.is_study_format_error());
}

#[test]
fn bullets_and_numbering_are_removed() {
    let text = "1. 食品评价：正面\n2. 饮品评价：未提及\n3. 价格水平：负面\n4. 卫生情况：未提及\n5. 服务人员态度：中性\n6. 停车方便程度：未提及";
    let p = parse(text, &masa("lines"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    assert_eq!(repairs(&p), [Repair::ListMarkers]);
    let bullets = text
        .replace(|c: char| c.is_ascii_digit(), "")
        .replace(". ", "- ");
    let p = parse(&bullets, &masa("lines"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
}

#[test]
fn synonyms_and_soft_keys_follow_the_study() {
    let text = "食品：积极，饮品评价：未提及，价格：偏负面，卫生情况：未提及，服务：中性，停车方便程度：未提及。";
    let p = parse(text, &masa("baseline"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    let r = repairs(&p);
    assert!(
        r.contains(&Repair::KeyRelaxed) && r.contains(&Repair::LabelRelaxed),
        "{r:?}"
    );
    assert_eq!(
        masa_labels(&parse(text, &masa("baseline"), &d1(), Mode::Study)),
        LABELS
    );
    let strict = parse(text, &masa("baseline"), &d1(), Mode::Strict);
    assert!(matches!(strict.status, Status::Partial(_)));
}

#[test]
fn missing_aspect_is_a_format_error_under_pu_only() {
    let text = "食品评价：正面，价格水平：负面，服务人员态度：中性。";
    let pu = parse(text, &masa("baseline"), &d1(), Mode::Lenient);
    assert_eq!(
        pu.status,
        Status::Partial(PartialCounts {
            missing: 3,
            ..Default::default()
        })
    );
    assert_eq!(masa_labels(&pu), LABELS);
    assert_eq!(pu.count(IssueKind::MissingKey), 3);
    let ou = parse(text, &masa("ou"), &d1(), Mode::Strict);
    assert_eq!(ou.status, Status::Clean);
    assert_eq!(masa_labels(&ou), LABELS);
    // An empty OU answer says nothing is mentioned.
    assert_eq!(
        parse("", &masa("ou"), &d1(), Mode::Strict).status,
        Status::Clean
    );
}

#[test]
fn cut_outputs_are_truncated() {
    for cut in [
        "食品评价：正面，饮品评价：未提",
        "食品评价：正面，饮品",
        "食品评价：正面，",
    ] {
        for mode in [Mode::Strict, Mode::Lenient] {
            let p = parse(cut, &masa("baseline"), &d1(), mode);
            assert_eq!(
                p.status,
                Status::Truncated,
                "{cut} {mode:?}: {:?}",
                p.issues
            );
            assert_eq!(masa_labels(&p)[0], Pos);
        }
    }
    let json =
        "{\"方面\": \"食品评价\", \"情感\": \"正面\"}\n{\"方面\": \"饮品评价\", \"情感\": \"未";
    let p = parse(json, &masa("json"), &d1(), Mode::Lenient);
    assert_eq!(p.status, Status::Truncated);
}

#[test]
fn json_repairs() {
    let text = "{'方面': '食品评价', '情感': '正面',}\n{方面: 饮品评价, 情感: 未提及}\n{\"方面\": \"价格水平\", \"情感\": \"负面\"}\n{\"方面\": \"卫生情况\", \"情感\": \"未提及\"}\n{\"方面\": \"服务人员态度\", \"情感\": \"中性\"}\n{\"方面\": \"停车方便程度\", \"情感\": \"未提及\"}";
    let p = parse(text, &masa("json"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    let r = repairs(&p);
    for want in [
        Repair::JsonSingleQuotes,
        Repair::JsonTrailingComma,
        Repair::JsonUnquoted,
    ] {
        assert!(r.contains(&want), "{r:?}");
    }
    // One flat object is read too.
    let flat = r#"{"食品评价": "正面", "饮品评价": "未提及", "价格水平": "负面", "卫生情况": "未提及", "服务人员态度": "中性", "停车方便程度": "未提及"}"#;
    let p = parse(flat, &masa("json"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
}

#[test]
fn evidence_in_a_design_without_reasoning_is_stripped() {
    let text = CLEAN
        .trim_end_matches('。')
        .split('，')
        .map(|kv| {
            let (k, v) = kv.split_once('：').unwrap();
            format!("{{\"方面\": \"{k}\", \"描述\": \"菜很好吃，服务一般\", \"情感\": \"{v}\"}}")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let p = parse(&text, &masa("json"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    assert!(repairs(&p).contains(&Repair::EvidenceStripped));
    // Under CoT the same output is the design's own grammar.
    let cot = parse(&text, &masa("cot"), &d1(), Mode::Strict);
    assert_eq!(cot.status, Status::Clean);
    assert_eq!(masa_labels(&cot), LABELS);
}

#[test]
fn duplicate_keys_first_wins() {
    let text = CLEAN.replacen("饮品评价：未提及", "食品评价：负面", 1);
    let p = parse(&text, &masa("ou"), &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
    assert_eq!(p.count(IssueKind::DuplicateKey), 1);
    assert!(repairs(&p).contains(&Repair::DuplicateKey));
    let strict = parse(&text, &masa("ou"), &d1(), Mode::Strict);
    assert!(matches!(strict.status, Status::Partial(c) if c.extra == 1));
}

#[test]
fn empty_and_unparseable() {
    assert_eq!(
        parse("", &masa("baseline"), &d1(), Mode::Lenient).status,
        Status::Empty
    );
    assert_eq!(
        parse(" \n", &masa("baseline"), &d1(), Mode::Strict).status,
        Status::Empty
    );
    let p = parse("我不知道", &masa("baseline"), &d1(), Mode::Lenient);
    assert_eq!(p.status, Status::Unparseable);
    assert_eq!(masa_labels(&p), [Unm; 6]);
}

#[test]
fn english_analogues() {
    let design = Design::preset(TaskKind::Masa, Language::En, "lines").unwrap();
    let text = "Food: Positive\nBeverage: not mentioned\nPrice: negative\nhygiene: unmentioned\nstaff: neutral\nparking: unmentioned";
    let p = parse(text, &design, &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&p), LABELS);
}

fn ner_pairs(p: &Parsed) -> Vec<(String, String)> {
    match &p.labels {
        Labels::Ner(e) => e.iter().map(|e| (e.kind.clone(), e.name.clone())).collect(),
        Labels::Event(e) => e
            .iter()
            .map(|e| (e.kind.clone(), e.trigger.clone()))
            .collect(),
        Labels::Masa(_) => panic!("MASA"),
    }
}

fn pair(k: &str, n: &str) -> (String, String) {
    (k.to_string(), n.to_string())
}

#[test]
fn ner_tuples_lenient_and_alignment() {
    let design = Design::preset(TaskKind::Ner, Language::En, "heuristic").unwrap();
    let genia = Domain::genia();
    let strict = parse(
        "[\"protein\",\"IL-2\"]\n[\"DNA\",\"IL-2 gene\"]",
        &design,
        &genia,
        Mode::Strict,
    );
    assert_eq!(strict.status, Status::Clean);
    let text = "Here are the entities:\n[\"protein\", \"IL-2\"]\n['DNA', 'IL-2 gene']\n[\"protein\", \"IL-2\"]\n[\"virus\", \"HIV\"]";
    let mut p = parse(text, &design, &genia, Mode::Lenient);
    assert_eq!(
        ner_pairs(&p),
        [
            pair("protein", "IL-2"),
            pair("DNA", "IL-2 gene"),
            pair("virus", "HIV")
        ]
    );
    assert_eq!(p.count(IssueKind::DuplicateItem), 1);
    assert_eq!(p.count(IssueKind::UndefinedType), 1);
    assert!(matches!(p.status, Status::Partial(c) if c.extra == 1));
    p.align("the IL-2 gene encodes IL-2");
    let Labels::Ner(e) = &p.labels else { panic!() };
    // The first occurrence on word boundaries; the nested gene span is kept.
    assert_eq!(e[0].span.map(|s| (s.start, s.end)), Some((4, 8)));
    assert_eq!(e[0].tokens, Some((1, 2)));
    assert_eq!(e[1].tokens, Some((1, 3)));
    assert_eq!(p.count(IssueKind::SpanNotInText), 1);
}

#[test]
fn ner_grouped_designs() {
    let genia = Domain::genia();
    let good1 = Design::preset(TaskKind::Ner, Language::En, "good1").unwrap();
    let text = "'DNA': 'IL-2 gene'\n'RNA': ''\n'protein': 'NF-kappa B', 'IL-2'\n'cell_type': ''\n'cell_line': ''";
    let p = parse(text, &good1, &genia, Mode::Strict);
    assert_eq!(p.status, Status::Clean);
    assert_eq!(
        ner_pairs(&p),
        [
            pair("DNA", "IL-2 gene"),
            pair("protein", "NF-kappa B"),
            pair("protein", "IL-2")
        ]
    );
    let study = parse(text, &good1, &genia, Mode::Study);
    assert_eq!(ner_pairs(&study).len(), 3);
    // Missing lines under PU; unquoted names and Protein in another case, leniently.
    let sloppy = "DNA: IL-2 gene\nProtein: NF-kappa B, IL-2";
    let p = parse(sloppy, &good1, &genia, Mode::Lenient);
    assert_eq!(
        ner_pairs(&p),
        [
            pair("DNA", "IL-2 gene"),
            pair("protein", "NF-kappa B"),
            pair("protein", "IL-2")
        ]
    );
    assert!(matches!(p.status, Status::Partial(c) if c.missing == 3));
    let weak1 = Design::preset(TaskKind::Ner, Language::En, "weak1").unwrap();
    let p = parse(
        "'DNA': 'IL-2 gene'; 'protein': 'NF-kappa B', 'IL-2'",
        &weak1,
        &genia,
        Mode::Strict,
    );
    assert_eq!(p.status, Status::Clean);
    assert_eq!(ner_pairs(&p).len(), 3);
    // Study weak1 splits predictions on ':' and keeps empty names (quirk Q13).
    let p = parse("'DNA': 'a'; 'RNA': ''", &weak1, &genia, Mode::Study);
    assert_eq!(ner_pairs(&p), [pair("DNA", "a"), pair("RNA", "")]);
}

#[test]
fn event_formats() {
    let maven = Domain::maven10();
    let heuristic = Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap();
    let p = parse(
        "Output: [\"Attack\", \"attacked\"]",
        &heuristic,
        &maven,
        Mode::Lenient,
    );
    assert_eq!(ner_pairs(&p), [pair("Attack", "attacked")]);
    assert!(repairs(&p).contains(&Repair::SurroundingProse));
    assert_eq!(
        parse("[]", &heuristic, &maven, Mode::Strict).status,
        Status::Clean
    );
    let lines = Design::preset(TaskKind::Event, Language::En, "maven-lines").unwrap();
    let text = "Catastrophe: NONE\nattack: attacked, raid\nHostile_encounter: NONE\nCausation: NONE\nProcess_start: NONE\nCompetition: NONE\nMotion: NONE\nSocial_event: NONE\nKilling: NONE\nConquering: NONE";
    let p = parse(text, &lines, &maven, Mode::Lenient);
    assert_eq!(
        ner_pairs(&p),
        [pair("Attack", "attacked"), pair("Attack", "raid")]
    );
    assert_eq!(repairs(&p), [Repair::KeyRelaxed]);
    let numerical = Design::preset(TaskKind::Event, Language::En, "numerical").unwrap();
    let p = parse(
        "0: NONE; 1: raid; 2: NONE; 3: NONE; 4: NONE; 5: NONE; 6: NONE; 7: NONE; 8: NONE; 9: NONE",
        &numerical,
        &maven,
        Mode::Strict,
    );
    assert_eq!(p.status, Status::Clean);
    assert_eq!(ner_pairs(&p), [pair("Attack", "raid")]);
    let s = parse("0: NONE; 1: raid", &numerical, &maven, Mode::Study);
    assert_eq!(ner_pairs(&s), [pair("attack", "raid")]);
    let json = Design::preset(TaskKind::Event, Language::En, "maven-json").unwrap();
    let s = parse(
        "{\"event_type\": \"Attack\", \"trigger word\": [\"raid\"]}\nnot json",
        &json,
        &maven,
        Mode::Study,
    );
    assert_eq!(s.study_error, Some(sde_parse::StudyError::EvalError));
    assert_eq!(
        parse("", &heuristic, &maven, Mode::Study).study_error,
        Some(sde_parse::StudyError::EmptyOutput)
    );
}

#[test]
fn study_gold_reads_targets_as_the_scripts_do() {
    let genia = Domain::genia();
    let weak1 = Design::preset(TaskKind::Ner, Language::En, "weak1").unwrap();
    let gold =
        sde_parse::study_gold("'DNA': 'IL-2 gene'; 'protein': 'a:b', 'c'", &weak1, &genia).unwrap();
    let Labels::Ner(e) = gold else { panic!() };
    let pairs: Vec<_> = e
        .iter()
        .map(|e| (e.kind.as_str(), e.name.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("DNA", "IL-2 gene"), ("protein", "a:b"), ("protein", "c")]
    );
    // Predictions split on ':' and lose the rest of the name (quirk Q13).
    let p = parse("'protein': 'a:b', 'c'", &weak1, &genia, Mode::Study);
    assert_eq!(ner_pairs(&p), [pair("protein", "a")]);
    // A target without ': ' crashes the script; no gold.
    assert!(sde_parse::study_gold("'DNA' 'x'", &weak1, &genia).is_none());
    let maven = Domain::maven10();
    let heuristic = Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap();
    let gold = sde_parse::study_gold("[\"Motion\", \" Flew\"]\n[]", &heuristic, &maven).unwrap();
    let Labels::Event(e) = gold else { panic!() };
    assert_eq!(
        (e[0].kind.as_str(), e[0].trigger.as_str()),
        ("motion", " flew")
    );
    assert_eq!(e.len(), 1);
}

#[test]
fn ner_heuristic_empty_answers() {
    let design = Design::preset(TaskKind::Ner, Language::En, "heuristic").unwrap();
    let genia = Domain::genia();
    // The heuristic prompt asks for "[]" when there is none, but the target is empty (Q11).
    assert_eq!(
        parse("", &design, &genia, Mode::Strict).status,
        Status::Clean
    );
    assert!(
        parse("[]", &design, &genia, Mode::Strict)
            .status
            .is_format_error()
    );
    let none = parse("[]", &design, &genia, Mode::Lenient);
    assert_eq!(repairs(&none), [Repair::Separators]);
    assert!(ner_pairs(&none).is_empty());
}

#[test]
fn cot_punctuation_slips_are_study_format_errors_but_still_scored() {
    let design = masa("cot");
    let records: Vec<String> = CLEAN
        .trim_end_matches('。')
        .split('，')
        .map(|kv| {
            let (k, v) = kv.split_once('：').unwrap();
            format!("{{\"方面\": \"{k}\", \"描述\": \"x\", \"情感\": \"{v}\"}}")
        })
        .collect();
    let clean = records.join("\n");
    let slipped = records.join(", ");
    let p = parse(&clean, &design, &d1(), Mode::Study);
    assert_eq!((masa_labels(&p), p.study_error), (LABELS.to_vec(), None));
    // The first pass normalises `}, {` and scores the labels; the second pass, without
    // normalisation, counts the slip.
    let p = parse(&slipped, &design, &d1(), Mode::Study);
    assert_eq!(masa_labels(&p), LABELS);
    assert!(p.study_error.is_some());
    assert_eq!(
        sde_parse::study_format_error(&slipped, &design, &d1()),
        p.study_error
    );
    // Lenient mode reads the records and names the repair.
    let l = parse(&slipped, &design, &d1(), Mode::Lenient);
    assert_eq!(masa_labels(&l), LABELS);
    assert!(repairs(&l).contains(&Repair::Separators));
}
