//! How much padding length-bucketed batches leave, and what shared-prefix batching saves, on
//! real training samples: `cargo run --release -p sde-benches --example padding --
//! [--batch 4] [--window 16] [--model default] SAMPLES.jsonl...`.
//!
//! Each file holds rendered samples, one JSON object a line with `prompt`, `completion` and
//! `loss_on` (the `samples.jsonl` of a `cargo xtask reproduce` cell, or `sde format` output).
//! For each file it prints the real tokens of one epoch and the token positions the training
//! pass runs: rows padded to the longest of their batch (packing could save at most that
//! padding), and the same with the shared prefix run once per batch.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use sde_engine::batch::{EncodeOptions, collate, encode_texts, length_bucketed_batches};
use sde_format::Sample;

struct Args {
    batch: usize,
    window: usize,
    model: String,
    max_len: usize,
    files: Vec<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        batch: 4,
        window: 16,
        model: "default".into(),
        max_len: 512,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--batch" => a.batch = value("--batch")?.parse()?,
            "--window" => a.window = value("--window")?.parse()?,
            "--model" => a.model = value("--model")?,
            "--max-len" => a.max_len = value("--max-len")?.parse()?,
            _ if arg.starts_with("--") => bail!("unknown option {arg}"),
            _ => a.files.push(arg.into()),
        }
    }
    if a.files.is_empty() {
        bail!("give one or more samples.jsonl files");
    }
    Ok(a)
}

fn read_samples(path: &PathBuf) -> Result<Vec<Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

#[allow(unsafe_code)]
fn main() -> Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let a = args()?;
    let tokenizer = sde_engine::load(&a.model)
        .with_context(|| format!("loading `{}`", a.model))?
        .tokenizer;
    let pad = tokenizer.pad_id().or(tokenizer.eos_id()).unwrap_or(0);
    let opts = EncodeOptions {
        max_len: a.max_len,
        ..EncodeOptions::default()
    };
    println!(
        "batch {}, bucketing window {} batches, one epoch (seed 0)",
        a.batch, a.window
    );
    println!(
        "| samples | n | real tokens | padded positions | padding | with shared prefix | vs real |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut all_real, mut all_padded, mut all_shared) = (0usize, 0usize, 0usize);
    for file in &a.files {
        let samples = read_samples(file)?;
        let (encoded, _) = encode_texts(
            &tokenizer,
            samples
                .iter()
                .map(|s| (s.prompt.as_str(), s.completion.as_str(), s.loss_on)),
            &opts,
        )?;
        let lengths: Vec<usize> = encoded.iter().map(|s| s.input_ids.len()).collect();
        let (mut real, mut padded, mut shared) = (0usize, 0usize, 0usize);
        for indices in length_bucketed_batches(&lengths, a.batch, a.window, true, 0) {
            let rows: Vec<_> = indices.iter().map(|&i| &encoded[i]).collect();
            let batch = collate(&rows, pad, &candle_core::Device::Cpu)?;
            real += batch.n_tokens;
            shared += batch.n_positions();
            padded += batch.without_prefix_sharing().n_positions();
        }
        all_real += real;
        all_padded += padded;
        all_shared += shared;
        println!(
            "| {} | {} | {real} | {padded} | {:+.1}% | {shared} | {:+.1}% |",
            file.display(),
            encoded.len(),
            100.0 * (padded as f64 / real as f64 - 1.0),
            100.0 * (shared as f64 / real as f64 - 1.0),
        );
    }
    println!(
        "| all | | {all_real} | {all_padded} | {:+.1}% | {all_shared} | {:+.1}% |",
        100.0 * (all_padded as f64 / all_real as f64 - 1.0),
        100.0 * (all_shared as f64 / all_real as f64 - 1.0),
    );
    Ok(())
}
