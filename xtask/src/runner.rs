//! The per-cell work behind a trait, and the fake runner used by tests and demos.

use crate::cell::{CellOutcome, CellSpec, Decoding, EvalOutcome, MetricValue, TrainSummary};
use crate::knobs::Knobs;
use crate::store::write_atomic;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Stage-level progress of the cell in flight (drawn as the per-cell bar).
pub trait Progress {
    /// A new stage (`data`, `train`, `generate d1`, ...) with `total` steps (0 = unknown).
    fn stage(&self, name: &str, total: u64);
    /// `n` more steps of the current stage are done.
    fn inc(&self, n: u64);
}

/// A progress sink that draws nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: u64) {}
    fn inc(&self, _n: u64) {}
}

/// What a runner gets besides the spec.
pub struct CellContext<'a> {
    /// The cell's folder; write samples, adapter and predictions here (atomically).
    pub dir: &'a Path,
    /// The run's knobs (for settings that do not change results, e.g. the data root).
    pub knobs: &'a Knobs,
    /// Per-cell progress.
    pub progress: &'a dyn Progress,
}

/// Runs one cell: data → samples → (train) → generate or score → parse → metrics.
pub trait CellRunner {
    /// Short name shown in logs and the report.
    fn name(&self) -> &'static str;
    /// Runs the cell and returns its metrics; files go to `ctx.dir`.
    fn run(&self, cell: &CellSpec, ctx: &CellContext<'_>) -> Result<CellOutcome>;
}

/// A deterministic stand-in for the real pipeline: writes every file a real cell writes,
/// with plausible metrics derived from the design and the cell's hash.
#[derive(Debug, Clone, Default)]
pub struct FakeRunner;

/// Design effects on kappa used by the fake runner, shaped like the study's findings.
fn fake_effect(design: &str) -> f64 {
    match design {
        "inst-first" => 0.03,
        "no-inst" => -0.04,
        "mi" => -0.07,
        "lines" => 0.02,
        "json" => -0.01,
        "ou" => -0.08,
        "num" => -0.03,
        "cot" => -0.02,
        "rcot" => 0.0,
        "es-sde" => 0.06,
        "ew-sde" => -0.08,
        _ => 0.0,
    }
}

/// A number in `[0, 1)` from a hash of `parts`.
fn unit(parts: &[&str]) -> f64 {
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

fn append_log(path: &str, line: &str) -> Result<()> {
    if path.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening fake-runner log {path}"))?;
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("writing fake-runner log {path}"))
}

impl CellRunner for FakeRunner {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn run(&self, cell: &CellSpec, ctx: &CellContext<'_>) -> Result<CellOutcome> {
        let started = Instant::now();
        let id = cell.id();
        append_log(&ctx.knobs.fake.log, &format!("start {id}"))?;
        let stages = 1 + usize::from(cell.fine_tunes()) + cell.evals.len();
        let pause = Duration::from_millis(ctx.knobs.fake.delay_ms / stages as u64);
        let n_test = if cell.test_size == 0 {
            100
        } else {
            cell.test_size
        };

        ctx.progress.stage("data", 1);
        let samples: String = (0..cell.train_size.max(1))
            .map(|i| format!("{{\"id\":\"fake/{i}\",\"prompt\":\"…\",\"completion\":\"…\"}}\n"))
            .collect();
        write_atomic(&ctx.dir.join("samples.jsonl"), samples.as_bytes())?;
        std::thread::sleep(pause);
        ctx.progress.inc(1);

        let train = if let Some(t) = &cell.train {
            let steps = cell.train_size.div_ceil(t.batch_size * t.grad_accum).max(1);
            ctx.progress.stage("train", steps as u64);
            std::thread::sleep(pause);
            ctx.progress.inc(steps as u64);
            write_atomic(
                &ctx.dir.join("adapter").join("adapter_config.json"),
                format!("{{\"r\": {}, \"fake\": true}}\n", t.lora_rank).as_bytes(),
            )?;
            let first = 2.0 + unit(&[&id, "loss"]);
            Some(TrainSummary {
                steps,
                tokens: cell.train_size * 120,
                positions: cell.train_size * 124,
                first_loss: first,
                last_loss: first * 0.35,
                truncated: 0,
                seconds: pause.as_secs_f64(),
            })
        } else {
            None
        };

        let mut evals = Vec::new();
        for eval in &cell.evals {
            let key = eval.key();
            ctx.progress.stage(&key, n_test as u64);
            std::thread::sleep(pause);
            ctx.progress.inc(n_test as u64);
            let noise = |what: &str| unit(&[&id, &key, what]) - 0.5;
            let mut metrics = BTreeMap::new();
            let ood = eval.test_domain.is_some() && eval.test_domain != cell.train_domain;
            if eval.decoding == Decoding::Score {
                metrics.insert(
                    "prompt_ppl".into(),
                    MetricValue::plain(12.0 + 20.0 * unit(&[&cell.design, "pp"]) + noise("pp")),
                );
                metrics.insert(
                    "output_ppl".into(),
                    MetricValue::plain(4.0 + 10.0 * unit(&[&cell.design, "op"]) + noise("op")),
                );
            } else {
                let skill = if cell.fine_tunes() {
                    0.72 - if ood { 0.15 } else { 0.0 }
                } else if eval.shots > 0 {
                    0.12
                } else {
                    0.04
                };
                let v = (skill + fake_effect(&cell.design) + 0.06 * noise("v")).clamp(0.0, 1.0);
                let half = 0.08 / (n_test as f64).sqrt().max(1.0) + 0.02;
                let ci = |v: f64| MetricValue {
                    value: v,
                    ci_low: Some((v - half).max(0.0)),
                    ci_high: Some((v + half).min(1.0)),
                };
                let errors = ((1.0 - v) * n_test as f64 * 0.2 * unit(&[&id, &key, "fe"])).floor();
                if cell.task == "masa" {
                    metrics.insert("kappa".into(), ci(v));
                    metrics.insert("accuracy".into(), ci((0.35 + 0.6 * v).min(1.0)));
                } else {
                    metrics.insert("f1_strict".into(), ci(v * 0.85));
                    metrics.insert("f1_soft".into(), ci(v));
                }
                metrics.insert("format_errors".into(), MetricValue::plain(errors));
                metrics.insert(
                    "format_error_rate".into(),
                    MetricValue::plain(errors / n_test as f64),
                );
                let preds: String = (0..n_test)
                    .map(|i| {
                        format!("{{\"id\":\"fake/{i}\",\"prediction\":\"…\",\"finish\":\"eos\"}}\n")
                    })
                    .collect();
                write_atomic(
                    &ctx.dir.join(format!("predictions-{key}.jsonl")),
                    preds.as_bytes(),
                )?;
            }
            evals.push(EvalOutcome {
                eval: eval.clone(),
                n: n_test,
                metrics,
            });
        }
        append_log(&ctx.knobs.fake.log, &format!("finish {id}"))?;
        Ok(CellOutcome {
            train,
            evals,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
