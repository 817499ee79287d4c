//! Runs one benchmark workload in its own process and prints one JSON object on stdout, for
//! `cargo xtask bench` (so that each workload's peak RSS is its own).
//!
//! ```text
//! sde-bench-worker train  --batch 8 --seq 128 [--reps 3] [--steps 10] [--warmup 2] [--gguf PATH]
//! sde-bench-worker decode --batch 1 [--reps 3] [--steps 3] [--warmup 1] [--gguf PATH]
//! sde-bench-worker score  --batch 8 [--reps 3] [--steps 5] [--warmup 2] [--gguf PATH]
//! sde-bench-worker matmul [--reps 3]
//! ```
//!
//! Without `--gguf` the model has SmolLM2-135M shapes and random weights. `steps` is the
//! number of train steps, generations or scoring passes in one timed rep. The peak RSS is
//! VmHWM of `/proc/self/status`, reset after the model is loaded.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use sde_benches::{
    NEW_TOKENS, PROMPT_TOKENS, TrainStep, bench_lora, decode_prompts, random_smollm2_135m,
    run_decode, run_score, score_items,
};
use sde_engine::Llama;
use serde_json::json;

#[derive(Debug)]
struct Args {
    workload: String,
    batch: usize,
    seq: usize,
    reps: usize,
    steps: Option<usize>,
    warmup: Option<usize>,
    gguf: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let workload = it
        .next()
        .context("usage: sde-bench-worker <train|decode|score|matmul> [options]")?;
    let mut args = Args {
        workload,
        batch: 8,
        seq: 128,
        reps: 3,
        steps: None,
        warmup: None,
        gguf: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag} {value}: not a count"))
        };
        match flag.as_str() {
            "--batch" => args.batch = num()?,
            "--seq" => args.seq = num()?,
            "--reps" => args.reps = num()?.max(1),
            "--steps" => args.steps = Some(num()?.max(1)),
            "--warmup" => args.warmup = Some(num()?),
            "--gguf" => args.gguf = Some(value),
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(args)
}

/// Peak resident set size of this process in MiB (VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn load(args: &Args) -> Result<Llama> {
    Ok(match &args.gguf {
        Some(path) => {
            sde_engine::load_gguf(path)
                .with_context(|| format!("loading {path}"))?
                .model
        }
        None => random_smollm2_135m(7)?,
    })
}

/// Times `reps` reps of `steps` calls each after `warmup` calls; returns seconds per rep.
fn time_reps(
    reps: usize,
    steps: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        for _ in 0..steps {
            f()?;
        }
        out.push(start.elapsed().as_secs_f64());
    }
    Ok(out)
}

#[allow(unsafe_code)]
fn main() -> Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let args = parse_args()?;
    let started = Instant::now();
    let report = match args.workload.as_str() {
        "train" => {
            let mut model = load(&args)?;
            model.add_lora(&bench_lora())?;
            let load_s = started.elapsed().as_secs_f64();
            let mut step = TrainStep::new(&model, args.batch, args.seq, 11)?;
            let steps = args.steps.unwrap_or(10);
            reset_peak_rss();
            let mut losses = Vec::new();
            let times = time_reps(args.reps, steps, args.warmup.unwrap_or(2), || {
                losses.push(step.run(&model)?);
                Ok(())
            })?;
            json!({
                "workload": "train", "batch": args.batch, "seq": args.seq, "rep_seconds": times,
                "tokens_per_rep": steps * step.tokens, "steps_per_rep": steps, "load_seconds": load_s,
                "peak_rss_mib": peak_rss_mib(), "loss_first": losses.first(), "loss_last": losses.last(),
            })
        }
        "decode" => {
            let model = load(&args)?;
            let load_s = started.elapsed().as_secs_f64();
            let prompts = decode_prompts(&model, args.batch, 13);
            let steps = args.steps.unwrap_or(3);
            reset_peak_rss();
            let mut produced = 0;
            let times = time_reps(args.reps, steps, args.warmup.unwrap_or(1), || {
                produced = run_decode(&model, &prompts, NEW_TOKENS)?;
                Ok(())
            })?;
            json!({
                "workload": "decode", "batch": args.batch, "seq": PROMPT_TOKENS, "new_tokens": NEW_TOKENS,
                "rep_seconds": times, "tokens_per_rep": steps * produced, "steps_per_rep": steps,
                "load_seconds": load_s, "peak_rss_mib": peak_rss_mib(),
            })
        }
        "score" => {
            let model = load(&args)?;
            let load_s = started.elapsed().as_secs_f64();
            let items = score_items(&model, args.batch, 17);
            let steps = args.steps.unwrap_or(5);
            reset_peak_rss();
            let times = time_reps(args.reps, steps, args.warmup.unwrap_or(2), || {
                Ok(run_score(&model, &items).map(drop)?)
            })?;
            json!({
                "workload": "score", "batch": args.batch, "seq": PROMPT_TOKENS + NEW_TOKENS,
                "rep_seconds": times, "tokens_per_rep": steps * args.batch * (PROMPT_TOKENS + NEW_TOKENS),
                "steps_per_rep": steps, "load_seconds": load_s, "peak_rss_mib": peak_rss_mib(),
            })
        }
        "matmul" => {
            let n = 2048usize;
            let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
            let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
            a.matmul(&b)?;
            let mut gflops = Vec::new();
            for _ in 0..args.reps {
                let start = Instant::now();
                let mut calls = 0usize;
                while calls == 0 || start.elapsed().as_secs_f64() < 1.0 {
                    a.matmul(&b)?;
                    calls += 1;
                }
                gflops.push(2.0 * (n * n * n * calls) as f64 / start.elapsed().as_secs_f64() / 1e9);
            }
            json!({ "workload": "matmul", "m": n, "k": n, "n": n, "gflops": gflops })
        }
        other => bail!("unknown workload {other} (train, decode, score or matmul)"),
    };
    println!("{report}");
    Ok(())
}
