//! The real runner end to end on the tiny random model and synthetic data: every kind of cell
//! (fine-tuned MASA with an out-of-domain test, NER and event detection with sampled decoding
//! and greedy decoding without the repetition penalty, untuned perplexity / zero-shot / ICL) produces its files and metrics in range.

use xtask::cell::CellSpec;
use xtask::knobs::Knobs;
use xtask::orchestrate::{self, RunOptions};
use xtask::real::RealRunner;

/// A preset with `--set` overrides, and its cells.
fn plan(preset: &str, sets: &[&str]) -> (Knobs, Vec<CellSpec>) {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let knobs = Knobs::resolve(preset, None, &sets).unwrap();
    let cells = xtask::matrix::cells(&knobs, "test").unwrap();
    (knobs, cells)
}

/// Runs every cell with the real runner into a fresh folder; every cell must succeed.
fn run_all(knobs: &Knobs, cells: &[CellSpec]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let runner = RealRunner::new(knobs).unwrap();
    let opts = RunOptions {
        out: dir.path().to_path_buf(),
        shard: None,
        fail_fast: true,
        report: true,
        max_cells: None,
    };
    let summary = orchestrate::run(knobs, cells, &runner, &opts).unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.ran, cells.len());
    dir
}

#[test]
fn real_runner_covers_every_kind_of_cell() {
    let sets = [
        "a.designs=[\"baseline\", \"no-inst\"]",
        "a.settings=[\"D11\", \"D12\"]",
        "b.tasks=[\"ner\", \"event\"]",
        "b.designs=[\"es-sde\"]",
        "b.size_sweep=[]",
        "b.paraphrases=[1]",
        "c.designs=[\"lines\"]",
        "data.test_size=4",
        "generate.max_new_tokens=8",
    ];
    let (knobs, cells) = plan("smoke", &sets);
    assert!(
        cells
            .iter()
            .flat_map(|c| &c.evals)
            .any(|e| e.decoding == xtask::cell::Decoding::GreedyNoPenalty),
        "the smoke preset covers greedy decoding without the penalty"
    );
    let dir = run_all(&knobs, &cells);

    for (cell, outcome) in orchestrate::collect(dir.path(), &cells).unwrap() {
        let d = dir.path().join("cells").join(cell.id());
        assert!(d.join("samples.jsonl").is_file() || !cell.fine_tunes());
        if cell.fine_tunes() {
            assert!(d.join("adapter").join("adapter_config.json").is_file());
            assert!(
                d.join("adapter")
                    .join("adapter_model.safetensors")
                    .is_file()
            );
            let t = outcome.train.as_ref().unwrap();
            assert!(t.steps > 0 && t.first_loss.is_finite() && t.last_loss.is_finite());
        }
        assert_eq!(outcome.evals.len(), cell.evals.len());
        for e in &outcome.evals {
            assert_eq!(e.n, 4);
            let m = |k: &str| {
                e.metrics
                    .get(k)
                    .unwrap_or_else(|| panic!("{} lacks {k}: {:?}", cell.label(), e.metrics))
                    .value
            };
            match (cell.task.as_str(), e.eval.decoding.name()) {
                (_, "score") => assert!(m("prompt_ppl") > 1.0 && m("output_ppl") > 1.0),
                ("masa", _) => {
                    assert!((-1.0..=1.0).contains(&m("kappa")));
                    assert!((0.0..=1.0).contains(&m("accuracy")));
                    assert!((0.0..=4.0).contains(&m("format_errors")));
                }
                _ => {
                    assert!((0.0..=1.0).contains(&m("f1_soft")));
                    assert!((0.0..=1.0).contains(&m("f1_strict")));
                }
            }
            if e.eval.decoding.name() != "score" {
                assert!(
                    d.join(format!("predictions-{}.jsonl", e.eval.key()))
                        .is_file()
                );
            }
        }
    }
    assert!(dir.path().join("report.html").is_file());
}

/// The `real` preset's datasets, read from `SDE_DATA_ROOT`, go through every kind of cell on the
/// tiny random model: MASA on SemEval-2014 and MAMS with an out-of-domain test, nested NER on
/// GENIA, event detection on the MAVEN parts, MASA-11 on MAMS, and the untuned analyses.
#[test]
fn real_preset_runs_on_the_shared_datasets() {
    if sde_data::data_root_from_env().is_none() {
        eprintln!("note: SDE_DATA_ROOT is not set; skipping a real-dataset test");
        return;
    }
    let sets = [
        "models=[\"tiny-random\"]",
        "a.designs=[\"baseline\"]",
        "a.settings=[\"D11\", \"D12\"]",
        "a.train_sizes=[6]",
        "b.tasks=[\"ner\", \"event\", \"review11\"]",
        "b.designs=[\"es-sde\"]",
        "b.train_size=6",
        "b.size_sweep=[]",
        "b.sampling_seeds=[]",
        "b.paraphrases=[]",
        "c.designs=[\"lines\"]",
        "c.shots=[1]",
        "data.test_size=3",
        "train.max_seq_len=1024",
        "generate.max_new_tokens=8",
        "generate.untuned_max_new_tokens=8",
    ];
    let (knobs, cells) = plan("real", &sets);
    let datasets: std::collections::BTreeSet<&str> =
        cells.iter().map(|c| c.dataset.as_str()).collect();
    assert_eq!(
        datasets.into_iter().collect::<Vec<_>>(),
        [
            "genia-raw",
            "mams-acsa",
            "maven-fewshot-pooled",
            "semeval14-restaurants"
        ]
    );
    let dir = run_all(&knobs, &cells);
    for (cell, outcome) in orchestrate::collect(dir.path(), &cells).unwrap() {
        let d = dir.path().join("cells").join(cell.id());
        assert_eq!(outcome.evals.len(), cell.evals.len(), "{}", cell.label());
        for e in &outcome.evals {
            assert_eq!(e.n, 3, "{}", cell.label());
            if e.eval.decoding.name() == "score" {
                continue;
            }
            let preds =
                std::fs::read_to_string(d.join(format!("predictions-{}.jsonl", e.eval.key())))
                    .unwrap();
            assert_eq!(preds.lines().count(), 3, "{}", cell.label());
            // Every prediction row carries the real record it was made for.
            for line in preds.lines() {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                let id = row["id"].as_str().unwrap();
                assert!(
                    id.starts_with(&format!("{}/", cell.dataset)),
                    "{id} in {}",
                    cell.label()
                );
                assert!(!row["target"].as_str().unwrap().is_empty(), "{id}");
            }
        }
    }
    assert!(dir.path().join("results.parquet").is_file());
}
