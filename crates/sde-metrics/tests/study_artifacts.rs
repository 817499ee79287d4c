//! The study's released prediction files, scored with the study's own (soft) rules, must give
//! the study's published numbers.
//!
//! Reads `$SDE_DATA_ROOT/sde_paper_artifacts`; when `SDE_DATA_ROOT` is unset the tests print a
//! note and return.

use std::path::PathBuf;

use sde_data::{Domain, Sentiment, TaskKind};
use sde_format::{Design, Language};
use sde_metrics::{
    BootstrapConfig, Confusion, MasaSample, Mention, MentionSample, SoftRule, bootstrap_ci,
    masa_confusions, masa_kappa, round_to, score_extraction, score_masa,
};
use sde_parse::{Labels, Mode};

fn artifacts() -> Option<PathBuf> {
    match std::env::var_os("SDE_DATA_ROOT").filter(|v| !v.is_empty()) {
        Some(root) => Some(PathBuf::from(root).join("sde_paper_artifacts")),
        None => {
            eprintln!("note: SDE_DATA_ROOT is not set; skipping the study-artifact checks");
            None
        }
    }
}

fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn field<'a>(row: &'a serde_json::Value, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("missing string field {name}"))
}

#[test]
fn masa_inst_last_predictions_reproduce_the_study() {
    let Some(dir) = artifacts() else { return };
    let rows =
        read_jsonl(&dir.join("MASA/instruction-last_d1_500_internlm-chat_d1_predictions.json"));
    let design = Design::preset(TaskKind::Masa, Language::Zh, "baseline").unwrap();
    let domain = Domain::study_d1();
    let samples: Vec<MasaSample> = rows
        .iter()
        .map(|row| {
            let parsed = sde_parse::parse(field(row, "prediction"), &design, &domain, Mode::Study);
            let Labels::Masa(pred) = parsed.labels.clone() else {
                panic!("MASA design gave non-MASA labels")
            };
            MasaSample {
                gold: sde_parse::study_masa_gold(field(row, "target"), &design, &domain),
                pred,
                format_error: parsed.is_study_format_error(),
            }
        })
        .collect();
    let names: Vec<&str> = domain.aspects.iter().map(|a| a.zh.as_str()).collect();
    let s = score_masa(&names, &samples).unwrap();

    assert_eq!(s.samples, 50);
    assert_eq!(s.gold_samples, 50);
    assert_eq!(s.format_errors, 0);
    assert_eq!(s.accuracy_reported(), 0.8667);
    assert_eq!(s.kappa_reported(), 0.7639);
    assert!(
        (s.pooled.kappa - 0.763910).abs() < 5e-7,
        "{}",
        s.pooled.kappa
    );
    assert_eq!(
        s.pooled.confusion,
        Confusion::from_counts([[92, 1, 2, 5], [12, 3, 4, 3], [5, 0, 7, 3], [4, 0, 1, 158]])
    );
    assert_eq!(s.sentence_accuracy, Some(0.4));

    // Per-label precision / recall as the study's report prints them (4 d.p.).
    let expected = [
        (Sentiment::Positive, 0.8142, 0.92),
        (Sentiment::Neutral, 0.75, 0.1364),
        (Sentiment::Negative, 0.5, 0.4667),
        (Sentiment::Unmentioned, 0.9349, 0.9693),
    ];
    for (c, (label, p, r)) in s.pooled.classes.iter().zip(expected) {
        assert_eq!(c.label, label);
        assert_eq!(round_to(c.precision.unwrap(), 4), p, "{label:?}");
        assert_eq!(round_to(c.recall.unwrap(), 4), r, "{label:?}");
    }

    // Per-aspect kappa and accuracy from the study's report.
    let per_aspect = [
        ("食品评价", 0.5682, 0.82),
        ("饮品评价", 0.7123, 0.86),
        ("价格水平", 0.7763, 0.86),
        ("卫生情况", 0.6671, 0.9),
        ("服务人员态度", 0.6516, 0.78),
        ("停车方便程度", 0.852, 0.98),
    ];
    assert_eq!(s.per_aspect.len(), per_aspect.len());
    for (a, (name, kappa, acc)) in s.per_aspect.iter().zip(per_aspect) {
        assert_eq!(a.aspect, name);
        assert_eq!(a.kappa_reported(), kappa, "{name}");
        assert_eq!(round_to(a.accuracy.unwrap(), 4), acc, "{name}");
    }
    // Food: no gold or predicted "unmentioned", so that label has no precision or recall.
    assert_eq!(s.per_aspect[0].classes[3].precision, None);
    assert_eq!(s.per_aspect[0].classes[3].recall, None);

    // Seeded bootstrap: the same seed gives the same interval (pinned to catch any change in
    // the resampling stream), and the interval brackets the point estimate.
    let confusions = masa_confusions(names.len(), &samples).unwrap();
    let cfg = BootstrapConfig::default();
    let ci = bootstrap_ci(samples.len(), masa_kappa(&confusions), &cfg).unwrap();
    assert_eq!(ci.estimate, s.pooled.kappa);
    assert!(ci.lower < ci.estimate && ci.estimate < ci.upper, "{ci:?}");
    assert_eq!(
        (round_to(ci.lower, 4), round_to(ci.upper, 4)),
        (0.6911, 0.8317)
    );
}

fn events(labels: Labels) -> Vec<Mention> {
    match labels {
        Labels::Event(events) => events
            .into_iter()
            .map(|e| Mention::new(e.kind, e.trigger))
            .collect(),
        other => panic!("event design gave {other:?}"),
    }
}

#[test]
fn maven_heuristic_predictions_reproduce_the_study() {
    let Some(dir) = artifacts() else { return };
    let gold_rows = read_jsonl(&dir.join("MAVEN/heuristic_test.json"));
    let pred_rows = read_jsonl(&dir.join("MAVEN/prediction_heuristic_llama2.json"));
    assert_eq!(gold_rows.len(), 100);
    assert_eq!(pred_rows.len(), 100);
    let design = Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap();
    let domain = Domain::maven10();
    let samples: Vec<MentionSample> = gold_rows
        .iter()
        .zip(&pred_rows)
        .map(|(g, p)| {
            // The prediction file repeats the gold as `target`.
            assert_eq!(field(g, "output"), field(p, "target"));
            let gold = sde_parse::parse(field(g, "output"), &design, &domain, Mode::Study);
            let pred = sde_parse::parse(field(p, "prediction"), &design, &domain, Mode::Study);
            MentionSample {
                format_error: pred.is_study_format_error(),
                gold: events(gold.labels),
                pred: events(pred.labels),
            }
        })
        .collect();
    let types: Vec<&str> = domain.keys().collect();
    let s = score_extraction(&types, &samples, SoftRule::Event);

    assert_eq!(s.samples, 100);
    assert_eq!(s.format_errors, 0);
    assert_eq!(samples.iter().map(|x| x.gold.len()).sum::<usize>(), 147);
    // The study's `prediction_heuristic_llama2_soft_f1.txt`: P/R/F1 printed by Python.
    assert_eq!((s.soft.tp, s.soft.fp, s.soft.fn_), (67, 35, 80));
    assert_eq!(s.soft.precision, 0.6568627450980392);
    assert_eq!(s.soft.recall, 0.4557823129251701);
    assert_eq!(s.soft.f1, 0.5381526104417671);
    // On this file no trigger is near enough to be rescued: strict equals soft.
    assert_eq!((s.strict.tp, s.strict.fp, s.strict.fn_), (67, 35, 80));
    assert_eq!(s.undefined_type, 0);
}
