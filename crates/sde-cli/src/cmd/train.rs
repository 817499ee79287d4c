//! `sde train`, `sde predict`, `sde run`.
//!
//! Samples are JSONL rows as `sde format` writes them: `prompt`, `completion` (also read from
//! `target` or `output`), optional `loss_on` (`completion` or `prompt-and-completion`) and
//! optional `id`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::bar;
use anyhow::{Context, bail};
use clap::Args;
use sde_engine::adapter::{RUN_FILE, read_run};
use sde_engine::batch::{EncodeOptions, SpecialIds, encode_prompt, encode_texts};
use sde_engine::{
    AdamWConfig, BosPolicy, Decoding, FinishReason, GenerateConfig, LoraTarget, RunRecord,
    TrainConfig, TruncationPolicy,
};
use sde_format::LossOn;

/// One sample row of a JSONL file.
#[derive(Debug, Clone)]
struct SampleRow {
    id: String,
    prompt: String,
    completion: String,
    loss_on: Option<LossOn>,
    design: Option<String>,
}

/// Reads sample rows; errors name the file and line.
fn read_samples(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<SampleRow>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(&line).with_context(at)?;
        let text = |keys: &[&str]| -> Option<String> {
            keys.iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
        };
        let prompt = text(&["prompt", "input"])
            .with_context(|| format!("{}: field `prompt` is missing", at()))?;
        let completion = text(&["completion", "target", "output"]).unwrap_or_default();
        // `sde format` writes the design-id segment (`no-mi`, `mi`); the serde names work too.
        let loss_on = match v.get("loss_on") {
            None | Some(serde_json::Value::Null) => None,
            Some(x) => Some(match x.as_str() {
                Some("no-mi" | "completion") => LossOn::Completion,
                Some("mi" | "prompt-and-completion") => LossOn::PromptAndCompletion,
                _ => bail!(
                    "{}: field `loss_on` is {x}, expected \"no-mi\" or \"mi\"",
                    at()
                ),
            }),
        };
        let id = match v.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(x) if !x.is_null() => x.to_string(),
            _ => rows.len().to_string(),
        };
        rows.push(SampleRow {
            id,
            prompt,
            completion,
            loss_on,
            design: text(&["design"]),
        });
    }
    Ok(rows)
}

/// One line of a predictions file.
#[derive(serde::Serialize)]
struct PredictionRow<'a> {
    id: &'a str,
    prompt: &'a str,
    target: &'a str,
    prediction: String,
    finish_reason: FinishReason,
    prompt_tokens: usize,
    new_tokens: usize,
}

/// Training options shared by `sde train` and `sde run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct TrainOptions {
    /// Model: `default`, a GGUF file, an HF folder or a hub id.
    #[arg(long, default_value = "default")]
    model: String,
    /// Design id recorded with the run; defaults to the rows' `design` field.
    #[arg(long)]
    design_id: Option<String>,
    /// Loss scope for rows without `loss_on`.
    #[arg(long, value_enum, default_value = "completion")]
    loss_on: LossOnArg,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// LoRA targets, comma separated (q,k,v,o,gate,up,down).
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    targets: Vec<String>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Maximum sequence length in tokens.
    #[arg(long, default_value_t = 2048)]
    max_len: usize,
    /// BOS policy: follow the tokenizer, always, never.
    #[arg(long, value_enum, default_value = "tokenizer")]
    bos: BosArg,
    /// Over-long samples: cut the prompt from the left, or skip them.
    #[arg(long, value_enum, default_value = "cut-prompt-left")]
    truncation: TruncationArg,
    /// The study's exact No-MI mask (the last prompt token is trained too).
    #[arg(long)]
    study_exact_mask: bool,
    /// Use only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Run every training row in full, even the token prefix that a whole batch shares (by
    /// default that prefix runs once per batch: same gradients, and with LoRA dropout one
    /// mask for the shared prefix).
    #[arg(long)]
    no_prefix_sharing_in_training: bool,
    /// Run training's products with the frozen weights in bf16 with f32 sums (CPUs with
    /// AVX512-BF16 only): about 1.4 times faster; losses within 1e-4 of f32, gradients a
    /// few percent apart (docs/performance.md). Generation afterwards stays f32.
    #[arg(long)]
    bf16_matmuls: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LossOnArg {
    Completion,
    PromptAndCompletion,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BosArg {
    Tokenizer,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TruncationArg {
    CutPromptLeft,
    Skip,
}

impl TrainOptions {
    fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            max_len: self.max_len,
            bos: match self.bos {
                BosArg::Tokenizer => BosPolicy::Tokenizer,
                BosArg::Always => BosPolicy::Always,
                BosArg::Never => BosPolicy::Never,
            },
            truncation: match self.truncation {
                TruncationArg::CutPromptLeft => TruncationPolicy::CutPromptLeft,
                TruncationArg::Skip => TruncationPolicy::Skip,
            },
            study_exact_mask: self.study_exact_mask,
        }
    }

    fn train_config(&self) -> anyhow::Result<TrainConfig> {
        let targets = self
            .targets
            .iter()
            .map(|t| {
                LoraTarget::parse(t.trim())
                    .with_context(|| format!("--targets: unknown LoRA target `{t}`"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(TrainConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            targets,
            optimizer: AdamWConfig {
                lr: self.lr,
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            warmup_steps: self.warmup_steps,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            seed: self.seed,
            share_prefix: !self.no_prefix_sharing_in_training,
            bf16_matmuls: self.bf16_matmuls,
            ..TrainConfig::default()
        })
    }

    fn default_loss_on(&self) -> LossOn {
        match self.loss_on {
            LossOnArg::Completion => LossOn::Completion,
            LossOnArg::PromptAndCompletion => LossOn::PromptAndCompletion,
        }
    }
}

/// Arguments of `sde train`.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Training samples (JSONL from `sde format`).
    samples: PathBuf,
    /// Run folder to write (adapter, tokenizer, chat template, run.json).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    options: TrainOptions,
}

/// Generation options shared by `sde predict` and `sde run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PredictOptions {
    /// New-token budget.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Repetition penalty (HF semantics; 1 disables).
    #[arg(long, default_value_t = 1.1)]
    repetition_penalty: f64,
    /// Prompts per batch.
    #[arg(long, default_value_t = 8)]
    gen_batch_size: usize,
    /// Sample instead of greedy decoding.
    #[arg(long)]
    sample: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sampling nucleus mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Sampling top-k (0 keeps all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 1)]
    sample_seed: u64,
    /// Decode steps read quantized copies of the (merged) layer weights: Q8_0, or the GGUF's
    /// own Q4_1 values where they are exactly that and the CPU has AVX-512 VNNI or AVX2;
    /// prompts and the output head stay f32. Faster at small batch; the accuracy effect is
    /// measured in docs/performance.md.
    #[arg(long)]
    q8: bool,
    /// With --q8, the output head too (faster still, less faithful).
    #[arg(long, requires = "q8")]
    q8_head: bool,
    /// With --q8, the output head and the prompts too: every product of generation runs in
    /// Q8_0 (fastest; implies --q8-head).
    #[arg(long, requires = "q8")]
    q8_prompts: bool,
    /// Speculative greedy decoding with this many drafts in the first round: quantized copies
    /// of the layers (as --q8 makes them; the output head too with --q8-head) draft tokens,
    /// one f32 pass verifies them, and the output is f32 greedy decoding's. Faster at batch 1
    /// (see docs/performance.md); 0 decodes step by step.
    #[arg(long, default_value_t = 0, conflicts_with_all = ["sample", "q8_prompts"])]
    draft_tokens: usize,
    /// Run every prompt in full, even the token prefix that a whole batch shares (by default
    /// that prefix runs once per batch; results agree to float rounding).
    #[arg(long)]
    no_prefix_sharing: bool,
}

impl PredictOptions {
    fn config(&self) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            repetition_penalty: self.repetition_penalty,
            decoding: if self.sample {
                Decoding::Sample {
                    temperature: self.temperature,
                    top_p: self.top_p,
                    top_k: (self.top_k > 0).then_some(self.top_k),
                    seed: self.sample_seed,
                }
            } else {
                Decoding::Greedy
            },
            batch_size: self.gen_batch_size,
            sort_by_length: true,
            share_prefix: !self.no_prefix_sharing,
            draft_tokens: self.draft_tokens,
        }
    }
}

/// Arguments of `sde predict`.
#[derive(Debug, Args)]
pub(crate) struct PredictArgs {
    /// Samples to answer (JSONL; `completion` is kept as the target).
    samples: PathBuf,
    /// Predictions JSONL to write.
    #[arg(long)]
    out: PathBuf,
    /// Run folder from `sde train` (adapter, tokenizer, encoding options). Without it the base
    /// model answers zero-shot.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Base model; defaults to the run's, else `default`.
    #[arg(long)]
    model: Option<String>,
    /// BOS policy when there is no run folder.
    #[arg(long, value_enum, default_value = "tokenizer")]
    bos: BosArg,
    /// Use only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    options: PredictOptions,
}

/// Arguments of `sde run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Training samples (JSONL from `sde format`).
    #[arg(long)]
    train: PathBuf,
    /// Test samples (JSONL from `sde format`).
    #[arg(long)]
    test: PathBuf,
    /// Output folder: `run/` (the trained run) and `predictions.jsonl`.
    #[arg(long)]
    out: PathBuf,
    /// Use only the first N test samples.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Aspect or type list the test prompts ask about: d1, d2, all (MASA), genia (NER),
    /// maven10 (events). Default: d1, genia or maven10 by task.
    #[arg(long)]
    domain: Option<String>,
    /// Parser mode of the evaluation.
    #[arg(long, value_enum, default_value_t = super::eval::EvalMode::Study)]
    eval_mode: super::eval::EvalMode,
    #[command(flatten)]
    train_options: TrainOptions,
    #[command(flatten)]
    predict_options: PredictOptions,
}

pub(crate) fn train(args: TrainArgs) -> anyhow::Result<()> {
    train_run(&args.samples, &args.out, &args.options)
}

fn train_run(samples: &Path, out: &Path, o: &TrainOptions) -> anyhow::Result<()> {
    let rows = read_samples(samples, o.limit)?;
    if rows.is_empty() {
        bail!("{}: no samples", samples.display());
    }
    eprintln!("loading model `{}`...", o.model);
    let mut loaded = sde_engine::load(&o.model).with_context(|| format!("model `{}`", o.model))?;
    let encode = o.encode_options();
    let default_loss = o.default_loss_on();
    let (encoded, truncation) = encode_texts(
        &loaded.tokenizer,
        rows.iter().map(|r| {
            (
                r.prompt.as_str(),
                r.completion.as_str(),
                r.loss_on.unwrap_or(default_loss),
            )
        }),
        &encode,
    )?;
    if !truncation.prompt_cut.is_empty() {
        eprintln!(
            "warning: {} prompt(s) cut from the left to fit {} tokens",
            truncation.prompt_cut.len(),
            encode.max_len
        );
    }
    if !truncation.skipped.is_empty() {
        eprintln!(
            "warning: {} sample(s) skipped: their completion does not fit {} tokens",
            truncation.skipped.len(),
            encode.max_len
        );
    }
    let config = o.train_config()?;
    loaded.model.add_lora(&config.lora_config())?;
    loaded.model.set_bf16_matmuls(config.bf16_matmuls)?;
    let pad = loaded
        .tokenizer
        .pad_id()
        .or(loaded.tokenizer.eos_id())
        .unwrap_or(0);
    let total = config.total_steps(encoded.len());
    eprintln!(
        "training on {} samples: {} steps, batch {} x {} accumulation",
        encoded.len(),
        total,
        config.batch_size,
        config.grad_accum
    );
    let pb = bar(total as u64, "loss {msg}");
    // Without a terminal the bar is hidden; a line every 5% keeps logs informative.
    let log_every = (total / 20).max(1);
    let mut log = Vec::new();
    let summary = sde_engine::train(&loaded.model, &encoded, pad, &config, |s| {
        if let Ok(line) = serde_json::to_string(s) {
            log.extend_from_slice(line.as_bytes());
            log.push(b'\n');
        }
        pb.set_message(format!(
            "{:.4} lr {:.2e} | {:.0} tok/s",
            s.loss,
            s.lr,
            tokens_per_second(s)
        ));
        pb.set_position(s.step as u64);
        if pb.is_hidden() && (s.step % log_every == 0 || s.step == s.total_steps) {
            eprintln!(
                "step {}/{} loss {:.4} lr {:.2e} | {:.0} tok/s | {:.0} s",
                s.step,
                s.total_steps,
                s.loss,
                s.lr,
                tokens_per_second(s),
                s.elapsed_s
            );
        }
    })?;
    pb.finish();
    loaded.model.set_bf16_matmuls(false)?;
    eprintln!(
        "trained {} steps in {:.1} s ({:.0} tokens/s, {:.3} positions run per token); loss {:.4} -> {:.4}",
        summary.steps,
        summary.elapsed_s,
        summary.tokens as f64 / summary.elapsed_s.max(1e-9),
        summary.positions as f64 / summary.tokens.max(1) as f64,
        summary.first_loss,
        summary.last_loss
    );
    let record = RunRecord {
        design_id: o
            .design_id
            .clone()
            .or_else(|| rows.iter().find_map(|r| r.design.clone()))
            .unwrap_or_else(|| "unspecified".into()),
        design: serde_json::Value::Null,
        base_model: o.model.clone(),
        train: config,
        encode,
        chat_template: false,
        truncation: serde_json::to_value(&truncation)?,
        summary: serde_json::to_value(&summary)?,
    };
    sde_engine::save_run(out, &loaded.model, &record, &loaded.tokenizer)?;
    sde_engine::adapter::write_atomic(&out.join("train_log.jsonl"), &log)?;
    eprintln!("run written to {}", out.display());
    Ok(())
}

/// Tokens per second over the whole run so far.
fn tokens_per_second(s: &sde_engine::StepReport) -> f64 {
    s.tokens_seen as f64 / s.elapsed_s.max(1e-9)
}

pub(crate) fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let bos = match args.bos {
        BosArg::Tokenizer => BosPolicy::Tokenizer,
        BosArg::Always => BosPolicy::Always,
        BosArg::Never => BosPolicy::Never,
    };
    predict_run(
        &args.samples,
        &args.out,
        args.run.as_deref(),
        args.model.as_deref(),
        bos,
        args.limit,
        &args.options,
    )
}

fn predict_run(
    samples: &Path,
    out: &Path,
    run: Option<&Path>,
    model: Option<&str>,
    bos: BosPolicy,
    limit: Option<usize>,
    o: &PredictOptions,
) -> anyhow::Result<()> {
    let rows = read_samples(samples, limit)?;
    let record = match run {
        Some(dir) => {
            Some(read_run(dir).with_context(|| format!("{}", dir.join(RUN_FILE).display()))?)
        }
        None => None,
    };
    let spec = model
        .map(str::to_string)
        .or_else(|| record.as_ref().map(|r| r.base_model.clone()))
        .unwrap_or_else(|| "default".into());
    eprintln!("loading model `{spec}`...");
    let mut loaded = sde_engine::load(&spec).with_context(|| format!("model `{spec}`"))?;
    let mut encode = EncodeOptions {
        bos,
        ..EncodeOptions::default()
    };
    if let (Some(dir), Some(rec)) = (run, &record) {
        // Replay exactly what training saw: its tokenizer, chat template and BOS policy.
        loaded.tokenizer = sde_engine::Tokenizer::from_hf_dir(dir)?;
        sde_engine::load_adapter(&mut loaded.model, dir)?;
        loaded.model.merge_lora()?;
        encode = rec.encode.clone();
    }
    if o.q8 || o.draft_tokens > 0 {
        loaded.model.set_q8_decode(if o.q8_prompts {
            sde_engine::Q8Scope::LayersHeadAndPrompts
        } else if o.q8_head {
            sde_engine::Q8Scope::LayersAndHead
        } else {
            sde_engine::Q8Scope::Layers
        })?;
    }
    let tok = &loaded.tokenizer;
    let special = SpecialIds::of(tok)?;
    let mut prompts = Vec::with_capacity(rows.len());
    for r in &rows {
        let ids = tok.encode(&r.prompt, false)?;
        prompts.push(encode_prompt(&ids, special, &encode));
    }
    let stop: Vec<u32> = tok.eos_id().into_iter().collect();
    let config = o.config();
    let pb = bar(rows.len() as u64, "prompts");
    let start = std::time::Instant::now();
    let gens = sde_engine::generate(&loaded.model, &prompts, &stop, &config, |n| {
        pb.inc(n as u64);
        if pb.is_hidden() {
            eprintln!(
                "generated {}/{} prompts | {:.0} s",
                pb.position(),
                rows.len(),
                start.elapsed().as_secs_f64()
            );
        }
    })?;
    pb.finish();
    let new_tokens: usize = gens.iter().map(|g| g.new_tokens()).sum();
    eprintln!(
        "generated {new_tokens} tokens for {} prompts in {:.1} s",
        rows.len(),
        start.elapsed().as_secs_f64()
    );
    let mut buf = Vec::new();
    for (r, g) in rows.iter().zip(&gens) {
        let row = PredictionRow {
            id: &r.id,
            prompt: &r.prompt,
            target: &r.completion,
            prediction: tok.decode(&g.tokens, true)?,
            finish_reason: g.finish_reason,
            prompt_tokens: g.prompt_tokens,
            new_tokens: g.new_tokens(),
        };
        serde_json::to_writer(&mut buf, &row)?;
        buf.write_all(b"\n")?;
    }
    sde_engine::adapter::write_atomic(out, &buf)?;
    eprintln!("predictions written to {}", out.display());
    Ok(())
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let run_dir = args.out.join("run");
    train_run(&args.train, &run_dir, &args.train_options)?;
    let predictions = args.out.join("predictions.jsonl");
    predict_run(
        &args.test,
        &predictions,
        Some(&run_dir),
        Some(&args.train_options.model),
        BosPolicy::Tokenizer,
        args.test_limit,
        &args.predict_options,
    )?;
    let design = match &args.train_options.design_id {
        Some(id) => id.clone(),
        None => read_samples(&args.test, Some(1))?
            .into_iter()
            .find_map(|r| r.design)
            .with_context(|| {
                format!(
                    "{}: rows carry no `design` field; pass --design-id to evaluate",
                    args.test.display()
                )
            })?,
    };
    let parsed: sde_format::Design = design
        .parse()
        .map_err(|e| anyhow::anyhow!("design `{design}`: {e}"))?;
    super::eval::run(super::eval::EvalArgs {
        predictions: predictions.clone(),
        task: super::eval::EvalTask::of(parsed.task),
        design,
        domain: args.domain.clone(),
        mode: args.eval_mode,
        out: Some(args.out.join("scores.json")),
        bootstrap: 1000,
        seed: args.train_options.seed,
        against: None,
        against_design: None,
    })
}
