//! The real pipeline behind [`CellRunner`]: sde-data (records) → sde-format (samples) →
//! sde-engine (LoRA training, generation, perplexity) → sde-parse (labels) → sde-metrics.

use crate::cell::{
    CellOutcome, CellSpec, Decoding, EvalOutcome, EvalSpec, MetricValue, TrainSummary,
};
use crate::knobs::Knobs;
use crate::runner::{CellContext, CellRunner};
use crate::store::write_atomic;
use anyhow::{Context, Result, anyhow, bail};
use sde_data::{Domain, Recipe, Record, TaskKind};
use sde_engine::batch::{SpecialIds, encode_prompt, encode_texts};
use sde_engine::{
    AdamWConfig, EncodeOptions, FinishReason, GenerateConfig, Llama, LlamaConfig, LoraTarget,
    RunRecord, TrainConfig,
};
use sde_format::{Context as RenderContext, Design, Language, Sample};
use sde_metrics::{BootstrapConfig, MasaSample, Mention, MentionSample, SoftRule};
use sde_parse::{Labels, Mode};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs cells through the workspace crates.
#[derive(Debug)]
pub struct RealRunner {
    data_root: Option<PathBuf>,
    tiny_dir: tempdir::TempDir,
}

/// A self-deleting folder for the tiny model's tokenizer files.
mod tempdir {
    use std::path::{Path, PathBuf};

    /// A folder removed on drop.
    #[derive(Debug)]
    pub(super) struct TempDir(PathBuf);

    impl TempDir {
        /// A fresh folder under the system temporary folder.
        pub(super) fn new(prefix: &str) -> std::io::Result<TempDir> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }

        /// The folder.
        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl RealRunner {
    /// Prepares the runner: checks that every dataset the knobs name has a recipe and that
    /// real datasets have a data root.
    pub fn new(knobs: &Knobs) -> Result<RealRunner> {
        let data_root = knobs.data_root().map(PathBuf::from);
        let mut names: Vec<&String> = knobs.data.masa.iter().collect();
        names.extend([&knobs.data.ner, &knobs.data.event, &knobs.data.review11]);
        for name in names {
            let recipe = Recipe::find(name).with_context(|| format!("dataset recipe `{name}`"))?;
            if recipe.needs_data_root() && data_root.is_none() {
                bail!(
                    "dataset `{name}` reads real files: set SDE_DATA_ROOT or --set data.data_root=DIR"
                );
            }
        }
        let tiny_dir =
            tempdir::TempDir::new("sde-tiny-tokenizer").context("creating a temporary folder")?;
        write_tiny_tokenizer(tiny_dir.path())?;
        Ok(RealRunner {
            data_root,
            tiny_dir,
        })
    }

    fn load_model(&self, spec: &str) -> Result<(Llama, sde_engine::Tokenizer)> {
        if spec == "tiny-random" {
            let tok = sde_engine::Tokenizer::from_hf_dir(self.tiny_dir.path())?;
            let cfg = LlamaConfig::tiny(tok.vocab_size(), 64, 2, 4, 2);
            let model = Llama::random(cfg, 0, &sde_engine::default_device()?)?;
            return Ok((model, tok));
        }
        let loaded = sde_engine::load(engine_spec(spec))
            .with_context(|| format!("loading model `{spec}`"))?;
        Ok((loaded.model, loaded.tokenizer))
    }
}

/// The engine's generation settings for one evaluation of a cell: the cell's knobs, the
/// evaluation's decoding, and no repetition penalty for [`Decoding::GreedyNoPenalty`].
fn generate_config(cell: &CellSpec, decoding: Decoding) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: cell.generate.max_new_tokens,
        repetition_penalty: if decoding == Decoding::GreedyNoPenalty {
            1.0
        } else {
            cell.generate.repetition_penalty
        },
        decoding: match decoding {
            Decoding::Sample { seed } => sde_engine::Decoding::Sample {
                temperature: cell.generate.temperature,
                top_p: cell.generate.top_p,
                top_k: None,
                seed,
            },
            Decoding::Greedy | Decoding::GreedyNoPenalty | Decoding::Score => {
                sde_engine::Decoding::Greedy
            }
        },
        batch_size: cell.generate.batch_size,
        sort_by_length: true,
        share_prefix: true,
        draft_tokens: 0,
    }
}

/// The model spec `sde_engine::load` (and so `sde predict --run`) resolves for a matrix's
/// model name: `smollm2-135m` is the embedded default, `hf:` and `gguf:` prefixes are dropped.
/// `tiny-random` has no engine spec and stays as it is.
fn engine_spec(model: &str) -> &str {
    match model {
        "smollm2-135m" | "default" => "default",
        s => s
            .strip_prefix("hf:")
            .or_else(|| s.strip_prefix("gguf:"))
            .unwrap_or(s),
    }
}

/// GPT-2's byte → printable character table (byte-level BPE alphabet).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(&cs) {
        table[*b as usize] = char::from_u32(*c).unwrap_or(' ');
    }
    table
}

/// Writes a byte-level tokenizer (3 special tokens + 256 bytes, no merges) as an HF folder's
/// `tokenizer.json` and `tokenizer_config.json`: the tokenizer of the `tiny-random` model.
fn write_tiny_tokenizer(dir: &Path) -> Result<()> {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let mut vocab = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert(s.to_string(), i.into());
    }
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), (i + specials.len()).into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    });
    let config = serde_json::json!({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"
    });
    write_atomic(
        &dir.join("tokenizer.json"),
        serde_json::to_string(&tokenizer)?.as_bytes(),
    )?;
    write_atomic(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string(&config)?.as_bytes(),
    )
}

/// A deterministic permutation of `0..n` (SplitMix64-driven Fisher–Yates).
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn task_kind(task: &str) -> Result<TaskKind> {
    Ok(match task {
        "masa" => TaskKind::Masa,
        "ner" => TaskKind::Ner,
        "event" => TaskKind::Event,
        other => bail!("unknown task `{other}`"),
    })
}

/// Resolves a design alias or id for a task and language, with a paraphrase.
pub fn resolve_design(task: &str, language: &str, design: &str, paraphrase: u32) -> Result<Design> {
    let task = task_kind(task)?;
    let language = match language {
        "zh" => Language::Zh,
        _ => Language::En,
    };
    let d = Design::preset(task, language, design)
        .or_else(|_| Design::parse_for(design, task, Some(language)))
        .map_err(|e| anyhow!("design `{design}`: {e}"))?;
    if paraphrase == 0 {
        return Ok(d);
    }
    let p =
        u8::try_from(paraphrase).map_err(|_| anyhow!("paraphrase {paraphrase} is too large"))?;
    d.with_paraphrase(p)
        .map_err(|e| anyhow!("design `{design}` paraphrase {paraphrase}: {e}"))
}

fn write_jsonl(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut buf, r)?;
        buf.write_all(b"\n")?;
    }
    write_atomic(path, &buf)
}

struct Data {
    train: Vec<Record>,
    test: Vec<Record>,
}

impl RealRunner {
    fn data(&self, cell: &CellSpec, recipe: &Recipe) -> Result<Data> {
        let root = self.data_root.as_deref();
        let load = |split: &str| {
            recipe
                .load_split(split, root)
                .with_context(|| format!("dataset `{}` split `{split}`", recipe.name))
        };
        let names = recipe.split_names();
        // Recipes without a train split (the MAVEN parts) train on their dev split.
        let train_split = ["train", "dev"].into_iter().find(|s| names.contains(s));
        let train_all = match train_split {
            Some(s) => load(s)?,
            None => Vec::new(),
        };
        let test_split = ["test", "dev"]
            .into_iter()
            .find(|s| names.contains(s) && Some(*s) != train_split)
            .ok_or_else(|| anyhow!("dataset `{}` has no test or dev split", recipe.name))?;
        let test_all = load(test_split)?;
        let pick = |all: Vec<Record>, n: usize, salt: u64| -> Vec<Record> {
            let order = shuffled(all.len(), cell.data_seed ^ salt);
            let take = if n == 0 { all.len() } else { n.min(all.len()) };
            order[..take].iter().map(|&i| all[i].clone()).collect()
        };
        let demos = cell
            .evals
            .iter()
            .map(|e| e.shots as usize)
            .max()
            .unwrap_or(0);
        let train_n = cell.train_size.max(demos);
        if train_n > train_all.len() {
            bail!(
                "dataset `{}` has {} training records, the cell needs {train_n}",
                recipe.name,
                train_all.len()
            );
        }
        Ok(Data {
            train: pick(train_all, train_n, 1),
            test: pick(test_all, cell.test_size, 2),
        })
    }
}

fn domain(recipe: &Recipe, name: Option<&str>) -> Result<Domain> {
    Ok(recipe.domain(name.unwrap_or("all"))?)
}

impl CellRunner for RealRunner {
    fn name(&self) -> &'static str {
        "real"
    }

    fn run(&self, cell: &CellSpec, ctx: &CellContext<'_>) -> Result<CellOutcome> {
        let started = Instant::now();
        ctx.progress.stage("data", 1);
        let recipe = Recipe::find(&cell.dataset)
            .with_context(|| format!("dataset recipe `{}`", cell.dataset))?;
        let data = self.data(cell, &recipe)?;
        let design = resolve_design(&cell.task, &cell.language, &cell.design, cell.paraphrase)?;
        let train_domain = domain(&recipe, cell.train_domain.as_deref())?;
        let samples: Vec<Sample> = data.train[..cell.train_size]
            .iter()
            .map(|r| sde_format::render(r, &design, &train_domain))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("rendering training samples: {e}"))?;
        let rows: Vec<serde_json::Value> = data.train[..cell.train_size]
            .iter()
            .zip(&samples)
            .map(|(r, s)| serde_json::json!({"id": r.id(), "prompt": s.prompt, "completion": s.completion, "loss_on": s.loss_on}))
            .collect();
        write_jsonl(&ctx.dir.join("samples.jsonl"), &rows)?;
        ctx.progress.inc(1);

        ctx.progress.stage("load model", 1);
        let (mut model, tokenizer) = self.load_model(&cell.model)?;
        ctx.progress.inc(1);
        let encode = EncodeOptions {
            max_len: cell.train.as_ref().map_or(usize::MAX, |t| t.max_seq_len),
            ..EncodeOptions::default()
        };
        let train = match &cell.train {
            None => None,
            Some(t) => {
                let (encoded, truncation) = encode_texts(
                    &tokenizer,
                    samples
                        .iter()
                        .map(|s| (s.prompt.as_str(), s.completion.as_str(), s.loss_on)),
                    &encode,
                )?;
                let targets = t
                    .lora_targets
                    .iter()
                    .map(|n| {
                        LoraTarget::parse(n)
                            .ok_or_else(|| anyhow!("train.lora_targets: unknown target `{n}`"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let config = TrainConfig {
                    r: t.lora_rank,
                    alpha: t.lora_alpha,
                    dropout: t.lora_dropout,
                    targets,
                    optimizer: AdamWConfig {
                        lr: t.learning_rate,
                        weight_decay: t.weight_decay,
                        ..AdamWConfig::default()
                    },
                    epochs: t.epochs,
                    batch_size: t.batch_size,
                    grad_accum: t.grad_accum,
                    warmup_steps: t.warmup_steps,
                    max_grad_norm: (t.max_grad_norm > 0.0).then_some(t.max_grad_norm),
                    seed: cell.seed,
                    bf16_matmuls: t.bf16_matmuls,
                    ..TrainConfig::default()
                };
                model.add_lora(&config.lora_config())?;
                model.set_bf16_matmuls(config.bf16_matmuls)?;
                let pad = tokenizer.pad_id().or(tokenizer.eos_id()).unwrap_or(0);
                ctx.progress
                    .stage("train", config.total_steps(encoded.len()) as u64);
                let summary =
                    sde_engine::train(&model, &encoded, pad, &config, |_| ctx.progress.inc(1))?;
                model.set_bf16_matmuls(false)?;
                let record = RunRecord {
                    design_id: design.to_string(),
                    design: serde_json::to_value(design)?,
                    base_model: engine_spec(&cell.model).to_owned(),
                    train: config,
                    encode: encode.clone(),
                    chat_template: false,
                    truncation: serde_json::to_value(&truncation)?,
                    summary: serde_json::to_value(&summary)?,
                };
                sde_engine::save_run(&ctx.dir.join("adapter"), &model, &record, &tokenizer)?;
                model.merge_lora()?;
                Some(TrainSummary {
                    steps: summary.steps,
                    tokens: summary.tokens,
                    positions: summary.positions,
                    first_loss: summary.first_loss,
                    last_loss: summary.last_loss,
                    truncated: truncation.prompt_cut.len() + truncation.skipped.len(),
                    seconds: summary.elapsed_s,
                })
            }
        };

        let mut evals = Vec::new();
        for eval in &cell.evals {
            evals.push(self.evaluate(
                cell,
                eval,
                &design,
                &recipe,
                &train_domain,
                &data,
                &model,
                &tokenizer,
                &encode,
                ctx,
            )?);
        }
        Ok(CellOutcome {
            train,
            evals,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

impl RealRunner {
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        cell: &CellSpec,
        eval: &EvalSpec,
        design: &Design,
        recipe: &Recipe,
        train_domain: &Domain,
        data: &Data,
        model: &Llama,
        tokenizer: &sde_engine::Tokenizer,
        encode: &EncodeOptions,
        ctx: &CellContext<'_>,
    ) -> Result<EvalOutcome> {
        let key = eval.key();
        let test_domain = match &eval.test_domain {
            Some(d) => domain(recipe, Some(d))?,
            None => train_domain.clone(),
        };
        let context = RenderContext::ood(train_domain, &test_domain);
        let demos: Vec<&Record> = data.train.iter().take(eval.shots as usize).collect();
        let samples: Vec<Sample> = data
            .test
            .iter()
            .map(|r| {
                if demos.is_empty() {
                    sde_format::render_with(r, design, &context)
                } else {
                    sde_format::render_icl(r, &demos, design, &context)
                }
            })
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("rendering test samples ({key}): {e}"))?;
        let n = samples.len();
        let mut metrics = BTreeMap::new();
        let gen_batch = cell.generate.batch_size;
        if eval.decoding == Decoding::Score {
            ctx.progress.stage(&key, 2);
            let prompts: Vec<&str> = samples.iter().map(|s| s.prompt.as_str()).collect();
            let pp = sde_engine::prompt_perplexity(model, tokenizer, &prompts, gen_batch)?;
            ctx.progress.inc(1);
            let pairs: Vec<(&str, &str)> = samples
                .iter()
                .map(|s| (s.prompt.as_str(), s.completion.as_str()))
                .collect();
            let op = sde_engine::output_perplexity(model, tokenizer, &pairs, gen_batch)?;
            ctx.progress.inc(1);
            metrics.insert(
                "prompt_ppl".into(),
                MetricValue::plain(pp.mean_of_perplexities),
            );
            metrics.insert(
                "prompt_ppl_pooled".into(),
                MetricValue::plain(pp.perplexity_of_pooled_nll),
            );
            metrics.insert(
                "output_ppl".into(),
                MetricValue::plain(op.mean_of_perplexities),
            );
            metrics.insert(
                "output_ppl_pooled".into(),
                MetricValue::plain(op.perplexity_of_pooled_nll),
            );
            return Ok(EvalOutcome {
                eval: eval.clone(),
                n,
                metrics,
            });
        }

        ctx.progress.stage(&key, n as u64);
        let special = SpecialIds::of(tokenizer)?;
        let mut prompts = Vec::with_capacity(n);
        for s in &samples {
            let ids = tokenizer.encode(&s.prompt, false)?;
            prompts.push(encode_prompt(&ids, special, encode));
        }
        let stop: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        let config = generate_config(cell, eval.decoding);
        let gens = sde_engine::generate(model, &prompts, &stop, &config, |k| {
            ctx.progress.inc(k as u64)
        })?;
        let mut predictions = Vec::with_capacity(n);
        let mut rows = Vec::with_capacity(n);
        let mut truncated = 0usize;
        let mut new_tokens = 0usize;
        for ((record, sample), g) in data.test.iter().zip(&samples).zip(&gens) {
            let text = tokenizer.decode(&g.tokens, true)?;
            let finish = match g.finish_reason {
                FinishReason::Eos => "eos",
                FinishReason::Length => {
                    truncated += 1;
                    "length"
                }
            };
            new_tokens += g.new_tokens();
            rows.push(serde_json::json!({
                "id": record.id(), "prompt": sample.prompt, "target": sample.completion,
                "prediction": text, "finish_reason": finish,
                "prompt_tokens": g.prompt_tokens, "new_tokens": g.new_tokens(),
            }));
            predictions.push(text);
        }
        write_jsonl(&ctx.dir.join(format!("predictions-{key}.jsonl")), &rows)?;
        metrics.insert(
            "hit_token_limit".into(),
            MetricValue::plain(truncated as f64),
        );
        metrics.insert(
            "mean_new_tokens".into(),
            MetricValue::plain(new_tokens as f64 / n.max(1) as f64),
        );
        let boot = BootstrapConfig {
            resamples: 200,
            confidence: 0.95,
            seed: cell.seed,
        };
        let ci = |interval: Result<sde_metrics::Interval, sde_metrics::MetricsError>,
                  value: f64| match interval {
            Ok(i) => MetricValue {
                value,
                ci_low: Some(i.lower),
                ci_high: Some(i.upper),
            },
            Err(_) => MetricValue::plain(value),
        };
        match design.task {
            TaskKind::Masa => {
                let keys: Vec<&str> = test_domain.keys().collect();
                let scored: Vec<MasaSample> = data
                    .test
                    .iter()
                    .zip(&predictions)
                    .map(|(record, text)| {
                        let gold = match record {
                            Record::Masa(m) => Some(keys.iter().map(|k| m.sentiment(k)).collect()),
                            _ => None,
                        };
                        let parsed = sde_parse::parse(text, design, &test_domain, Mode::Study);
                        let pred = match parsed.labels {
                            Labels::Masa(v) => v,
                            _ => vec![sde_data::Sentiment::Unmentioned; keys.len()],
                        };
                        MasaSample {
                            gold,
                            pred,
                            format_error: parsed.study_error.is_some(),
                        }
                    })
                    .collect();
                let s = sde_metrics::score_masa(&keys, &scored)?;
                let confusions = sde_metrics::masa_confusions(keys.len(), &scored)?;
                let kappa = s.pooled.kappa;
                let acc = s.pooled.accuracy.unwrap_or(0.0);
                metrics.insert(
                    "kappa".into(),
                    ci(
                        sde_metrics::bootstrap_ci(n, sde_metrics::masa_kappa(&confusions), &boot),
                        kappa,
                    ),
                );
                metrics.insert(
                    "accuracy".into(),
                    ci(
                        sde_metrics::bootstrap_ci(
                            n,
                            sde_metrics::masa_accuracy(&confusions),
                            &boot,
                        ),
                        acc,
                    ),
                );
                metrics.insert(
                    "sentence_accuracy".into(),
                    MetricValue::plain(s.sentence_accuracy.unwrap_or(0.0)),
                );
                metrics.insert(
                    "format_errors".into(),
                    MetricValue::plain(s.format_errors as f64),
                );
                metrics.insert(
                    "format_error_rate".into(),
                    MetricValue::plain(s.format_error_rate),
                );
            }
            TaskKind::Ner | TaskKind::Event => {
                let rule = if design.task == TaskKind::Ner {
                    SoftRule::Ner
                } else {
                    SoftRule::Event
                };
                let types: Vec<&str> = test_domain.keys().collect();
                let scored: Vec<MentionSample> = data
                    .test
                    .iter()
                    .zip(&predictions)
                    .map(|(record, text)| {
                        let gold = match record {
                            Record::Ner(r) => r
                                .entities
                                .iter()
                                .map(|e| Mention::new(&e.kind, &e.text))
                                .collect(),
                            Record::Event(r) => r
                                .events
                                .iter()
                                .map(|e| Mention::new(&e.kind, &e.trigger))
                                .collect(),
                            Record::Masa(_) => Vec::new(),
                        };
                        let parsed = sde_parse::parse(text, design, &test_domain, Mode::Study);
                        let pred = match parsed.labels {
                            Labels::Ner(v) => v
                                .into_iter()
                                .map(|m| Mention::new(m.kind, m.name))
                                .collect(),
                            Labels::Event(v) => v
                                .into_iter()
                                .map(|m| Mention::new(m.kind, m.trigger))
                                .collect(),
                            Labels::Masa(_) => Vec::new(),
                        };
                        MentionSample {
                            gold,
                            pred,
                            format_error: parsed.study_error.is_some(),
                        }
                    })
                    .collect();
                let s = sde_metrics::score_extraction(&types, &scored, rule);
                let counts = sde_metrics::mention_counts(&scored, rule);
                metrics.insert(
                    "f1_strict".into(),
                    ci(
                        sde_metrics::bootstrap_ci(n, sde_metrics::strict_f1(&counts), &boot),
                        s.strict.f1,
                    ),
                );
                metrics.insert(
                    "f1_soft".into(),
                    ci(
                        sde_metrics::bootstrap_ci(n, sde_metrics::soft_f1(&counts), &boot),
                        s.soft.f1,
                    ),
                );
                metrics.insert(
                    "precision_soft".into(),
                    MetricValue::plain(s.soft.precision),
                );
                metrics.insert("recall_soft".into(), MetricValue::plain(s.soft.recall));
                metrics.insert(
                    "format_errors".into(),
                    MetricValue::plain(s.format_errors as f64),
                );
                metrics.insert(
                    "format_error_rate".into(),
                    MetricValue::plain(s.format_error_rate),
                );
            }
        }
        Ok(EvalOutcome {
            eval: eval.clone(),
            n,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_permutations_and_seeded() {
        let a = shuffled(50, 7);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, shuffled(50, 7));
        assert_ne!(a, shuffled(50, 8));
    }

    #[test]
    fn every_design_of_the_presets_resolves() {
        for preset in Knobs::PRESETS {
            let k = Knobs::resolve(preset, None, &[]).unwrap();
            for d in k.a.designs.iter().chain(&k.c.designs) {
                resolve_design("masa", "en", d, 0).unwrap();
            }
            for t in &k.b.tasks {
                let task = if t == "review11" { "masa" } else { t.as_str() };
                for d in &k.b.designs {
                    for &p in k.b.paraphrases.iter().chain(&[0]) {
                        resolve_design(task, "en", d, p).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn full_design_ids_resolve_too() {
        let d = resolve_design("masa", "en", "masa.en.inst-first.json.ou", 0).unwrap();
        assert_eq!(
            d,
            resolve_design("masa", "en", "masa.en.inst-first.json.ou", 0).unwrap()
        );
        resolve_design("masa", "en", "masa.en.lines.num", 0).unwrap();
        assert!(resolve_design("masa", "en", "no-such-design", 0).is_err());
    }

    #[test]
    fn the_tiny_tokenizer_round_trips_text() {
        let dir = tempdir::TempDir::new("tiny-tok-test").unwrap();
        write_tiny_tokenizer(dir.path()).unwrap();
        let tok = sde_engine::Tokenizer::from_hf_dir(dir.path()).unwrap();
        let text = "food: positive, price: négatif 价格";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids.len(), text.len());
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
        assert!(tok.eos_id().is_some() && tok.pad_id().is_some());
    }

    #[test]
    fn a_cells_run_record_names_a_model_the_engine_resolves() {
        assert_eq!(engine_spec("smollm2-135m"), "default");
        assert_eq!(
            engine_spec("hf:HuggingFaceTB/SmolLM2-360M"),
            "HuggingFaceTB/SmolLM2-360M"
        );
        assert_eq!(engine_spec("gguf:/models/m.gguf"), "/models/m.gguf");
        assert_eq!(engine_spec("org/name"), "org/name");
    }

    #[test]
    fn only_the_penalty_free_decoding_turns_the_penalty_off() {
        let knobs = Knobs::resolve("default", None, &[]).unwrap();
        let cell = crate::matrix::cells(&knobs, "v")
            .unwrap()
            .into_iter()
            .find(|c| c.matrix == crate::cell::Matrix::B)
            .unwrap();
        assert_eq!(cell.generate.repetition_penalty, 1.1);
        let greedy = generate_config(&cell, Decoding::Greedy);
        assert_eq!(greedy.repetition_penalty, 1.1);
        assert!(matches!(greedy.decoding, sde_engine::Decoding::Greedy));
        let free = generate_config(&cell, Decoding::GreedyNoPenalty);
        assert_eq!(free.repetition_penalty, 1.0);
        assert!(matches!(free.decoding, sde_engine::Decoding::Greedy));
        let sampled = generate_config(&cell, Decoding::Sample { seed: 3 });
        assert_eq!(sampled.repetition_penalty, 1.1);
        assert!(matches!(
            sampled.decoding,
            sde_engine::Decoding::Sample { seed: 3, .. }
        ));
        assert_eq!(greedy.batch_size, cell.generate.batch_size);
    }
}
