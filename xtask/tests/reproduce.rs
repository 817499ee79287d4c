//! End-to-end behaviour of `cargo xtask reproduce` with the fake cell runner: the files and
//! their schema, resumption after a kill, sharding plus merging, and failures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xtask::cell::{CellOutcome, CellSpec};
use xtask::knobs::Knobs;
use xtask::orchestrate::{self, RunOptions};
use xtask::results;
use xtask::runner::{CellContext, CellRunner, FakeRunner};

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("SDE_CODE_VERSION", "test-version")
        .env("NO_COLOR", "1");
    c
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running xtask");
    assert!(
        out.status.success(),
        "xtask failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn smoke_plan() -> Vec<CellSpec> {
    let knobs = Knobs::resolve("smoke", None, &["runner=fake".into()]).unwrap();
    xtask::matrix::cells(&knobs, "test-version").unwrap()
}

fn cell_ids(out: &Path) -> BTreeSet<String> {
    std::fs::read_dir(out.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("done").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn smoke_preset_writes_every_output_with_the_expected_schema() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    run_ok(
        xtask()
            .args([
                "reproduce",
                "--preset",
                "smoke",
                "--runner",
                "fake",
                "--out",
            ])
            .arg(&out),
    );

    let plan = smoke_plan();
    assert_eq!(cell_ids(&out).len(), plan.len());
    for cell in &plan {
        let d = out.join("cells").join(cell.id());
        for f in ["cell.json", "samples.jsonl", "metrics.json", "done"] {
            assert!(d.join(f).is_file(), "{} lacks {f}", d.display());
        }
        if cell.fine_tunes() {
            assert!(d.join("adapter/adapter_config.json").is_file());
        }
        let stored: CellSpec =
            serde_json::from_str(&std::fs::read_to_string(d.join("cell.json")).unwrap()).unwrap();
        assert_eq!(&stored, cell);
        assert_eq!(stored.id(), cell.id());
    }

    // results.parquet: the schema, and one row per cell, evaluation and metric.
    let rows = results::read_parquet(&out.join("results.parquet")).unwrap();
    let file = std::fs::File::open(out.join("results.parquet")).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let expected: Vec<String> = results::schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, expected);
    for col in [
        "matrix",
        "design",
        "placement",
        "loss_on",
        "layout",
        "unmentioned",
        "label_form",
        "reasoning",
        "setting",
        "metric",
        "value",
        "ci_low",
    ] {
        assert!(names.iter().any(|n| n == col), "missing column {col}");
    }
    let mut expected_rows = 0;
    for cell in &plan {
        let o: CellOutcome = serde_json::from_str(
            &std::fs::read_to_string(out.join("cells").join(cell.id()).join("metrics.json"))
                .unwrap(),
        )
        .unwrap();
        expected_rows += o.evals.iter().map(|e| e.metrics.len()).sum::<usize>();
    }
    assert_eq!(rows.len(), expected_rows);
    let matrices: BTreeSet<&str> = rows.iter().map(|r| r.matrix.as_str()).collect();
    assert_eq!(matrices, BTreeSet::from(["A", "B", "C"]));
    // Matrix A: all four settings; No-Inst in-domain only; design axes filled in.
    let settings = |d: &str| -> BTreeSet<String> {
        rows.iter()
            .filter(|r| r.matrix == "A" && r.design == d)
            .filter_map(|r| r.setting.clone())
            .collect()
    };
    assert_eq!(
        settings("baseline"),
        BTreeSet::from(["D11", "D12", "D21", "D22"].map(String::from))
    );
    assert_eq!(
        settings("no-inst"),
        BTreeSet::from(["D11", "D22"].map(String::from))
    );
    let lines = rows.iter().find(|r| r.design == "lines").unwrap();
    assert_eq!(lines.layout.as_deref(), Some("lines"));
    assert_eq!(lines.placement.as_deref(), Some("inst-last"));
    // Matrix B: three tasks, sampled decoding, a paraphrase and a second size.
    let b: Vec<_> = rows.iter().filter(|r| r.matrix == "B").collect();
    assert_eq!(
        b.iter().map(|r| r.task.as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["event", "masa", "ner"])
    );
    assert!(
        b.iter()
            .any(|r| r.decoding == "sample" && r.decode_seed == Some(1))
    );
    assert!(b.iter().any(|r| r.paraphrase == 1));
    assert!(b.iter().any(|r| r.metric == "f1_soft"));
    // Matrix C: perplexities, zero-shot and 1-shot scores of the untuned model.
    let c: Vec<_> = rows.iter().filter(|r| r.matrix == "C").collect();
    assert!(c.iter().all(|r| r.tuning == "untuned"));
    assert!(c.iter().any(|r| r.metric == "prompt_ppl"));
    assert!(c.iter().any(|r| r.metric == "output_ppl"));
    assert!(c.iter().any(|r| r.metric == "kappa" && r.shots == 1));

    // Tables in the study's layout, plots and the report.
    let a_md = std::fs::read_dir(out.join("tables"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("a-")
                && p.extension().unwrap() == "md"
        })
        .expect("a matrix A table");
    let md = std::fs::read_to_string(&a_md).unwrap();
    assert!(
        md.contains("| design | D11 κ | D11 acc | D11 #fmt | D22 κ |"),
        "{md}"
    );
    assert!(md.contains("| no-inst |"));
    let csv = std::fs::read_to_string(a_md.with_extension("csv")).unwrap();
    assert!(
        csv.starts_with("design,D11 κ,D11 acc,D11 #fmt,D22 κ"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 11, "header + ten designs");
    let tables_md = std::fs::read_to_string(out.join("tables.md")).unwrap();
    for heading in ["Matrix A", "Matrix B", "Matrix C", "Spearman"] {
        assert!(tables_md.contains(heading), "tables.md lacks {heading}");
    }
    // The smoke preset also decodes B's main adapters without the repetition penalty.
    let b_ner = std::fs::read_to_string(
        std::fs::read_dir(out.join("tables"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("b-ner-") && name.ends_with(".md")
            })
            .expect("a matrix B NER table"),
    )
    .unwrap();
    let header = b_ner.lines().find(|l| l.starts_with("| design |")).unwrap();
    assert!(
        header.contains("| f1_soft sampled n=8 | f1_soft no penalty n=8 | f1_soft paraphrase 1 |"),
        "{header}"
    );
    assert!(b_ner.contains("Sampled: mean ± sd") && b_ner.contains("No penalty: greedy"));
    let es = b_ner.lines().find(|l| l.starts_with("| es-sde |")).unwrap();
    assert!(!es.contains('–'), "every column has a value: {es}");
    let plots: Vec<_> = std::fs::read_dir(out.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for prefix in ["a-bars-", "a-id-ood-", "b-", "c-pe-"] {
        let p = plots
            .iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} plot"));
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{}",
            p.display()
        );
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Matrix A") && html.contains("<table>"));
    assert_eq!(html.matches("<figure>").count(), plots.len());
    assert!(out.join("knobs.toml").is_file());
}

#[test]
fn killed_run_resumes_without_losing_or_repeating_cells() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let log = dir.path().join("runner.log");
    let args = |c: &mut Command| {
        c.args([
            "reproduce",
            "--preset",
            "smoke",
            "--runner",
            "fake",
            "--set",
            "fake.delay_ms=300",
            "--set",
        ])
        .arg(format!("fake.log={}", log.display()))
        .arg("--out")
        .arg(&out);
    };
    let mut cmd = xtask();
    args(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let starts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("start "))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while starts() < 4 {
        assert!(Instant::now() < deadline, "the run did not get going");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let finished_before = cell_ids(&out);
    assert!(finished_before.len() >= 3 && finished_before.len() < smoke_plan().len());

    let mut cmd = xtask();
    args(&mut cmd);
    run_ok(&mut cmd);

    let plan: BTreeSet<String> = smoke_plan().iter().map(|c| c.id()).collect();
    assert_eq!(
        cell_ids(&out),
        plan,
        "every cell finished exactly once on disk"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut started: BTreeMap<&str, usize> = BTreeMap::new();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines() {
        let (kind, id) = line.split_once(' ').unwrap();
        *match kind {
            "start" => &mut started,
            _ => &mut finished,
        }
        .entry(id)
        .or_default() += 1;
    }
    // No cell lost: every cell ran to the end once. No cell repeated: only the cell in flight
    // at the kill was started twice.
    assert_eq!(
        finished
            .keys()
            .map(|k| k.to_string())
            .collect::<BTreeSet<_>>(),
        plan
    );
    assert!(
        finished.values().all(|&n| n == 1),
        "a finished cell ran again: {finished:?}"
    );
    let restarted: Vec<_> = started.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        restarted.len() <= 1,
        "more than the interrupted cell restarted: {restarted:?}"
    );
    for (id, _) in &restarted {
        assert!(!finished_before.contains(**id));
    }
    // The report covers the whole matrix.
    let rows = results::read_parquet(&out.join("results.parquet")).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.cell.clone()).collect::<BTreeSet<_>>(),
        plan
    );
}

#[test]
fn shards_partition_the_matrix_and_merge_gathers_them() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    run_ok(
        xtask()
            .args([
                "reproduce",
                "--preset",
                "smoke",
                "--runner",
                "fake",
                "--out",
            ])
            .arg(&whole),
    );
    let mut shard_dirs = Vec::new();
    let mut seen = BTreeSet::new();
    for k in 0..3 {
        let d = dir.path().join(format!("shard{k}"));
        run_ok(
            xtask()
                .args([
                    "reproduce",
                    "--preset",
                    "smoke",
                    "--runner",
                    "fake",
                    "--shard",
                    &format!("{k}/3"),
                    "--out",
                ])
                .arg(&d),
        );
        let ids = cell_ids(&d);
        assert!(!ids.is_empty());
        assert!(seen.is_disjoint(&ids), "a cell ran in two shards");
        seen.extend(ids);
        assert!(
            !d.join("report.html").exists(),
            "shards leave the report to the merge"
        );
        shard_dirs.push(d);
    }
    assert_eq!(seen, cell_ids(&whole));
    let merged = dir.path().join("merged");
    run_ok(
        xtask()
            .args(["merge", "--out"])
            .arg(&merged)
            .args(&shard_dirs),
    );
    assert_eq!(cell_ids(&merged), seen);
    let key = |r: &results::Row| {
        format!(
            "{} {} {:?} {:?} {} {}",
            r.cell, r.metric, r.test_domain, r.decode_seed, r.shots, r.value
        )
    };
    let a: BTreeSet<String> = results::read_parquet(&whole.join("results.parquet"))
        .unwrap()
        .iter()
        .map(key)
        .collect();
    let b: BTreeSet<String> = results::read_parquet(&merged.join("results.parquet"))
        .unwrap()
        .iter()
        .map(key)
        .collect();
    assert_eq!(a, b);
    assert!(merged.join("report.html").is_file());
}

#[test]
fn dry_run_lists_every_cell_with_an_estimate_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let text = run_ok(
        xtask()
            .args(["reproduce", "--preset", "default", "--dry-run", "--out"])
            .arg(&out),
    );
    let knobs = Knobs::resolve("default", None, &[]).unwrap();
    let plan = xtask::matrix::cells(&knobs, "test-version").unwrap();
    for c in &plan {
        assert!(
            text.contains(&c.id()),
            "{} missing from the listing",
            c.id()
        );
    }
    assert!(text.contains("matrix A:") && text.contains("matrix B:") && text.contains("matrix C:"));
    assert!(text.contains(&format!("total: {} cells (0 done), estimated ", plan.len())));
    assert!(!out.exists());
}

/// A runner whose cells take a set multiple of their estimated time; the first cell it runs
/// takes ten times longer than the others (a suspended machine).
struct Slow(f64, std::sync::atomic::AtomicBool);

impl CellRunner for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn run(&self, cell: &CellSpec, ctx: &CellContext<'_>) -> anyhow::Result<CellOutcome> {
        let mut outcome = FakeRunner.run(cell, ctx)?;
        let stalled = !self.1.swap(true, std::sync::atomic::Ordering::Relaxed);
        let factor = if stalled { 10.0 * self.0 } else { self.0 };
        outcome.seconds = factor * xtask::cost::estimate(cell, &ctx.knobs.cost).seconds;
        Ok(outcome)
    }
}

#[test]
fn dry_run_shows_what_finished_cells_took_and_the_time_left_at_their_pace() {
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs::resolve("smoke", None, &["runner=fake".into()]).unwrap();
    let cells = xtask::matrix::cells(&knobs, "v").unwrap();
    let opts = RunOptions {
        out: dir.path().to_path_buf(),
        shard: None,
        fail_fast: false,
        report: false,
        max_cells: Some(3),
    };
    orchestrate::run(&knobs, &cells, &Slow(1.5, Default::default()), &opts).unwrap();

    let text = orchestrate::dry_run(&knobs, &cells, dir.path());
    let est = |c: &CellSpec| xtask::cost::estimate(c, &knobs.cost).seconds;
    for (i, c) in cells.iter().enumerate() {
        let row = text.lines().find(|l| l.contains(&c.id())).unwrap();
        let took = xtask::cost::human_duration(if i == 0 { 15.0 } else { 1.5 } * est(c));
        if i < 3 {
            assert!(row.contains(&format!("{took}  done")), "{row}");
        } else {
            assert!(row.contains("  -  todo"), "{row}");
        }
    }
    let done: f64 = cells[..3].iter().map(est).sum();
    let took = 15.0 * est(&cells[0]) + 1.5 * (est(&cells[1]) + est(&cells[2]));
    let left: f64 = cells[3..].iter().map(est).sum();
    let expected = format!(
        "finished: 3 cells took {} against an estimated {} (median ×1.50); at each matrix's pace {} left",
        xtask::cost::human_duration(took),
        xtask::cost::human_duration(done),
        xtask::cost::human_duration(1.5 * left)
    );
    assert!(text.contains(&expected), "{text}");
}

#[test]
fn a_matrix_with_enough_finished_cells_is_forecast_at_its_own_pace() {
    use xtask::cell::Matrix::{A, B, C};
    let paces = orchestrate::Paces::from_cells([
        (A, 20.0, 10.0),
        (A, 40.0, 20.0),
        (A, 20.0, 10.0),
        (A, 60.0, 30.0),
        (B, 5.0, 10.0),
        (B, 10.0, 20.0),
        (B, 5.0, 10.0),
        (C, 10.0, 10.0),
    ])
    .unwrap();
    // Ratios 2, 2, 2, 2, 0.5, 0.5, 0.5, 1: the overall median is 1.5.
    assert_eq!(paces.overall.cells, 8);
    assert_eq!(paces.overall.ratio, 1.5);
    assert_eq!(paces.overall.took, 170.0);
    assert_eq!(paces.overall.estimated, 120.0);
    assert_eq!(paces.ratio_for(A), 2.0);
    assert_eq!(paces.ratio_for(B), 0.5);
    // C has one finished cell (×1): too few, so it goes at the overall median.
    assert_eq!(paces.by_matrix[&C].ratio, 1.0);
    assert_eq!(paces.ratio_for(C), 1.5);
    let left = paces.seconds_left([(A, 100.0), (B, 100.0), (C, 100.0), (C, 50.0)]);
    assert_eq!(left, 200.0 + 50.0 + 225.0);
    assert!(orchestrate::Paces::from_cells([]).is_none());
}

/// A runner that fails on chosen cells and counts invocations.
struct Flaky {
    fail: BTreeSet<String>,
    calls: std::sync::Mutex<Vec<String>>,
}

impl CellRunner for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn run(&self, cell: &CellSpec, ctx: &CellContext<'_>) -> anyhow::Result<CellOutcome> {
        self.calls.lock().unwrap().push(cell.id());
        if self.fail.contains(&cell.id()) {
            anyhow::bail!("injected failure");
        }
        FakeRunner.run(cell, ctx)
    }
}

#[test]
fn a_failed_cell_does_not_stop_the_others_and_is_retried_alone() {
    let dir = tempfile::tempdir().unwrap();
    let knobs = Knobs::resolve(
        "smoke",
        None,
        &[
            "runner=fake".into(),
            "b.enabled=false".into(),
            "c.enabled=false".into(),
        ],
    )
    .unwrap();
    let cells = xtask::matrix::cells(&knobs, "v").unwrap();
    let bad = cells[2].id();
    let opts = RunOptions {
        out: dir.path().to_path_buf(),
        shard: None,
        fail_fast: false,
        report: true,
        max_cells: None,
    };
    let flaky = Flaky {
        fail: BTreeSet::from([bad.clone()]),
        calls: Default::default(),
    };
    let s = orchestrate::run(&knobs, &cells, &flaky, &opts).unwrap();
    assert_eq!((s.ran, s.failed.len()), (cells.len() - 1, 1));
    assert!(
        dir.path()
            .join("cells")
            .join(&bad)
            .join("error.txt")
            .is_file()
    );
    assert!(
        std::fs::read_to_string(dir.path().join("report.html"))
            .unwrap()
            .contains("injected failure")
    );

    let healed = Flaky {
        fail: BTreeSet::new(),
        calls: Default::default(),
    };
    let s = orchestrate::run(&knobs, &cells, &healed, &opts).unwrap();
    assert_eq!((s.skipped, s.ran, s.failed.len()), (cells.len() - 1, 1, 0));
    assert_eq!(*healed.calls.lock().unwrap(), vec![bad.clone()]);
    assert!(
        !dir.path()
            .join("cells")
            .join(&bad)
            .join("error.txt")
            .exists()
    );
}
