//! `cargo xtask learns`: the check that fine-tuning teaches the default model something.
//!
//! Renders the synthetic MASA set under one design, fine-tunes the model on the first
//! `--train` samples, and scores it against the untuned model on the same `--test` prompts.
//! Every step runs the `sde` binary (release build), so the check exercises exactly what a
//! user runs; each step is skipped when its output exists, so an interrupted check resumes.
//! Passes when the tuned model's kappa interval lies above the zero-shot one and format errors
//! do not increase; writes `learns.json` with both sides' figures.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

/// Options of `cargo xtask learns`.
#[derive(Debug, Args)]
pub struct LearnsArgs {
    /// Working folder (samples, run, predictions, scores, `learns.json`).
    #[arg(long, default_value = "target/learns")]
    out: PathBuf,
    /// Dataset recipe.
    #[arg(long, default_value = "synthetic-masa")]
    recipe: String,
    /// Design id or preset.
    #[arg(long, default_value = "masa.en.inst-first.no-mi.lines")]
    design: String,
    /// Training domain (and the domain the test prompts ask about).
    #[arg(long, default_value = "d1")]
    domain: String,
    /// Training samples (the first N of the train split).
    #[arg(long, default_value_t = 1000)]
    train: usize,
    /// Test samples (the first N of the test split).
    #[arg(long, default_value_t = 100)]
    test: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// New-token budget of the answers.
    #[arg(long, default_value_t = 80)]
    max_new_tokens: usize,
    /// Model (`default`, a GGUF file, an HF folder or a hub id).
    #[arg(long, default_value = "default")]
    model: String,
}

/// The `sde` binary of this workspace, built in release mode.
fn sde_binary(root: &Path) -> Result<PathBuf> {
    let status = crate::cargo_command()
        .args(["build", "--release", "-p", "sde-cli"])
        .current_dir(root)
        .status()
        .context("building sde")?;
    if !status.success() {
        bail!("building sde failed");
    }
    Ok(root.join("target/release/sde"))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("learns: {what}");
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `sde format` for one split and keeps the first `n` rows (written atomically).
fn format_split(sde: &Path, a: &LearnsArgs, split: &str, n: usize, path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    eprintln!("learns: sde format {} --split {split}", a.recipe);
    let out = Command::new(sde)
        .args(["format", &a.recipe, "--design", &a.design, "--domain"])
        .arg(&a.domain)
        .args(["--split", split])
        .output()
        .context("running sde format")?;
    if !out.status.success() {
        bail!(
            "sde format failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout).context("sde format output is not UTF-8")?;
    let rows: Vec<&str> = text.lines().take(n).collect();
    if rows.len() < n {
        bail!(
            "split `{split}` of {} has {} rows, need {n}",
            a.recipe,
            rows.len()
        );
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, rows.join("\n") + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// Kappa (with interval), accuracy and format errors from an `sde eval` / `sde run` JSON file.
fn summary(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let masa = &v["masa"];
    let kappa = &v["intervals"]["kappa"];
    Ok(json!({
        "kappa": masa["pooled"]["kappa"],
        "kappa_lower": kappa["lower"],
        "kappa_upper": kappa["upper"],
        "accuracy": masa["pooled"]["accuracy"],
        "format_errors": masa["format_errors"],
        "samples": masa["samples"],
        "statuses": v["statuses"],
    }))
}

/// `cargo xtask learns`.
pub fn learns(a: &LearnsArgs) -> Result<bool> {
    let root = std::env::current_dir()?;
    let sde = sde_binary(&root)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let train = a.out.join("train.jsonl");
    let test = a.out.join("test.jsonl");
    format_split(&sde, a, "train", a.train, &train)?;
    format_split(&sde, a, "test", a.test, &test)?;

    let tuned_scores = a.out.join("tuned/scores.json");
    if !tuned_scores.exists() {
        run(
            Command::new(&sde)
                .arg("run")
                .arg("--train")
                .arg(&train)
                .arg("--test")
                .arg(&test)
                .arg("--out")
                .arg(a.out.join("tuned"))
                .args(["--model", &a.model, "--domain", &a.domain])
                .args(["--lr", &a.lr.to_string(), "--warmup-steps", "10"])
                .args(["--epochs", &a.epochs.to_string(), "--batch-size", "4"])
                .args(["--max-new-tokens", &a.max_new_tokens.to_string()])
                .args(["--seed", "42"]),
            "sde run (fine-tune, predict, evaluate)",
        )?;
    }
    let zs_pred = a.out.join("zeroshot.jsonl");
    if !zs_pred.exists() {
        run(
            Command::new(&sde)
                .arg("predict")
                .arg(&test)
                .args(["--model", &a.model])
                .args(["--max-new-tokens", &a.max_new_tokens.to_string()])
                .arg("--out")
                .arg(&zs_pred),
            "sde predict (zero-shot)",
        )?;
    }
    let zs_scores = a.out.join("zeroshot.eval.json");
    if !zs_scores.exists() {
        run(
            Command::new(&sde)
                .args(["eval", "--task", "masa", "--design", &a.design])
                .args(["--domain", &a.domain])
                .arg(&zs_pred),
            "sde eval (zero-shot)",
        )?;
    }
    let tuned = summary(&tuned_scores)?;
    let zero = summary(&zs_scores)?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let pass = f(&tuned, "kappa_lower") > f(&zero, "kappa_upper")
        && f(&tuned, "format_errors") <= f(&zero, "format_errors");
    let report = json!({
        "recipe": a.recipe, "design": a.design, "domain": a.domain, "model": a.model,
        "train": a.train, "test": a.test, "lr": a.lr, "epochs": a.epochs,
        "zero_shot": zero, "tuned": tuned, "pass": pass,
    });
    let path = a.out.join("learns.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("| | kappa | 95% interval | accuracy | format errors |");
    println!("|---|---|---|---|---|");
    for (name, v) in [("zero-shot", &zero), ("fine-tuned", &tuned)] {
        println!(
            "| {name} | {:.3} | [{:.3}, {:.3}] | {:.3} | {} of {} |",
            f(v, "kappa"),
            f(v, "kappa_lower"),
            f(v, "kappa_upper"),
            f(v, "accuracy"),
            f(v, "format_errors"),
            f(v, "samples")
        );
    }
    println!(
        "{}: wrote {}",
        if pass { "it learns" } else { "NO CLEAR MARGIN" },
        path.display()
    );
    Ok(pass)
}
