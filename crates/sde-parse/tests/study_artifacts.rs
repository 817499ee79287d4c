//! The study's released predictions, parsed with the study's own rules.
//!
//! Needs `SDE_DATA_ROOT` (the shared datasets folder); skips with a note when it is unset.

use std::path::PathBuf;

use sde_data::{Domain, Sentiment, TaskKind};
use sde_format::{Design, Language};
use sde_parse::{Labels, Mode, Status, parse, study_format_error, study_gold, study_masa_gold};

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
    Domain::study_d1()
}

fn inst_last() -> Design {
    Design::preset(TaskKind::Masa, Language::Zh, "instruction-last").unwrap()
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
    let design = Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap();
    let domain = Domain::maven10();
    let mut gold_events = 0;
    let mut predicted = 0;
    for row in &rows {
        let gold = study_gold(row["target"].as_str().unwrap(), &design, &domain).unwrap();
        let Labels::Event(g) = &gold else { panic!() };
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
