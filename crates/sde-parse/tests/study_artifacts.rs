//! The study's released predictions, parsed with the study's own rules.
//!
//! Needs `SDE_DATA_ROOT` (the shared datasets folder); skips with a note when it is unset.

use std::path::PathBuf;

use sde_data::{Domain, Sentiment, TaskKind};
use sde_format::{Design, LabelForm, Language, Layout, LossOn, Placement, Reasoning, Unmentioned};
use sde_parse::{Labels, Mode, Status, parse, study_format_error, study_masa_gold};

fn data_root() -> Option<PathBuf> {
    match std::env::var_os("SDE_DATA_ROOT") {
        Some(root) => Some(PathBuf::from(root)),
        None => {
            eprintln!("SDE_DATA_ROOT is unset: skipping the study-artifact tests");
            None
        }
    }
}

fn d1() -> Domain {
    let aspects = [
        ("food", "food", "食品评价"),
        ("drinks", "drinks", "饮品评价"),
        ("price", "price", "价格水平"),
        ("hygiene", "hygiene", "卫生情况"),
        ("staff", "staff", "服务人员态度"),
        ("parking", "parking", "停车方便程度"),
    ];
    Domain {
        name: "d1".into(),
        aspects: aspects
            .iter()
            .map(|(k, en, zh)| sde_data::AspectDef {
                key: (*k).into(),
                en: (*en).into(),
                zh: (*zh).into(),
            })
            .collect(),
    }
}

fn inst_last() -> Design {
    Design {
        task: TaskKind::Masa,
        language: Language::Zh,
        placement: Placement::InstLast,
        loss_on: LossOn::Completion,
        layout: Layout::Natural,
        unmentioned: Unmentioned::Placeholder,
        labels: LabelForm::Text,
        reasoning: Reasoning::None,
    }
}

fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn masa_inst_last_reproduces_the_released_confusion_matrix() {
    let Some(root) = data_root() else { return };
    let rows = read_jsonl(&root.join(
        "sde_paper_artifacts/MASA/instruction-last_d1_500_internlm-chat_d1_predictions.json",
    ));
    assert_eq!(rows.len(), 50);
    let design = inst_last();
    let domain = d1();
    let mut confusion = [[0u32; 4]; 4];
    let mut format_errors = 0;
    let mut sentence_correct = 0;
    for row in &rows {
        let gold = study_masa_gold(row["target"].as_str().unwrap(), &design, &domain).unwrap();
        let prediction = row["prediction"].as_str().unwrap();
        let parsed = parse(prediction, &design, &domain, Mode::Study);
        let Labels::Masa(pred) = &parsed.labels else {
            panic!("not MASA")
        };
        if study_format_error(prediction, &design, &domain).is_some() {
            format_errors += 1;
        }
        for (g, p) in gold.iter().zip(pred) {
            confusion[g.index()][p.index()] += 1;
        }
        sentence_correct += u32::from(gold == *pred);
        // The released outputs are all well-formed.
        assert_eq!(
            parse(prediction, &design, &domain, Mode::Strict).status,
            Status::Clean
        );
    }
    assert_eq!(format_errors, 0);
    assert_eq!(
        confusion,
        [[92, 1, 2, 5], [12, 3, 4, 3], [5, 0, 7, 3], [4, 0, 1, 158]]
    );
    let correct: u32 = (0..4).map(|i| confusion[i][i]).sum();
    assert_eq!(correct, 260);
    assert_eq!(sentence_correct, 20);
    let _ = Sentiment::ALL;
}

#[test]
fn maven_heuristic_predictions_parse_under_the_study_rules() {
    let Some(root) = data_root() else { return };
    let rows = read_jsonl(&root.join("sde_paper_artifacts/MAVEN/prediction_heuristic_llama2.json"));
    assert_eq!(rows.len(), 100);
    let design = Design {
        task: TaskKind::Event,
        language: Language::En,
        placement: Placement::InstFirst,
        loss_on: LossOn::Completion,
        layout: Layout::Tuples,
        unmentioned: Unmentioned::Omit,
        labels: LabelForm::Text,
        reasoning: Reasoning::None,
    };
    let domain = Domain {
        name: "maven10".into(),
        aspects: [
            "Catastrophe",
            "Attack",
            "Hostile_encounter",
            "Causation",
            "Process_start",
            "Competition",
            "Motion",
            "Social_event",
            "Killing",
            "Conquering",
        ]
        .iter()
        .map(|k| sde_data::AspectDef {
            key: (*k).into(),
            en: (*k).into(),
            zh: (*k).into(),
        })
        .collect(),
    };
    let mut gold_events = 0;
    let mut predicted = 0;
    for row in &rows {
        let gold = parse(
            row["target"].as_str().unwrap(),
            &design,
            &domain,
            Mode::Study,
        );
        let Labels::Event(g) = &gold.labels else {
            panic!()
        };
        gold_events += g.len();
        let pred = row["prediction"].as_str().unwrap();
        let parsed = parse(pred, &design, &domain, Mode::Study);
        assert_eq!(parsed.study_error, None, "{pred}");
        let Labels::Event(p) = &parsed.labels else {
            panic!()
        };
        predicted += p.len();
        // Lenient and strict agree on these well-formed outputs.
        let strict = parse(pred, &design, &domain, Mode::Strict);
        assert!(strict.status.is_clean(), "{pred}: {:?}", strict.status);
    }
    assert_eq!(gold_events, 147);
    assert!(predicted >= 100);
}
