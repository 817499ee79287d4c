//! Every knob of a study run, the four presets, and how overrides are applied.
//!
//! A run's knobs are resolved in three layers: the preset's values, then a TOML file
//! (`--config file.toml`), then `--set key=value` pairs (dotted keys, TOML values).
//! Unknown keys are errors that name the key, so a typo never silently runs the wrong study.

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which cell runner executes the cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerKind {
    /// The real pipeline: data, format, engine (train, generate, score), parse, metrics.
    Real,
    /// A deterministic stand-in that writes every file with synthetic metrics (tests, demos).
    Fake,
}

/// All knobs of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// Name of the preset the run started from (`smoke`, `default`, `real`, `paper`).
    pub preset: String,
    /// Which runner executes cells.
    pub runner: RunnerKind,
    /// Models every matrix uses unless it names its own: `tiny-random`, `smollm2-135m`
    /// (the embedded default), `hf:<repo id>`, or a path to a `.gguf` file or an HF folder.
    pub models: Vec<String>,
    /// Training seeds; every fine-tuning cell runs once per seed.
    pub seeds: Vec<u64>,
    /// Which data the matrices use.
    pub data: DataKnobs,
    /// LoRA fine-tuning hyper-parameters.
    pub train: TrainKnobs,
    /// Generation settings.
    pub generate: GenerateKnobs,
    /// Matrix A: the one-option study on MASA.
    pub a: MatrixAKnobs,
    /// Matrix B: ES-SDE validation and robustness.
    pub b: MatrixBKnobs,
    /// Matrix C: prompt-engineering analyses of the untuned model.
    pub c: MatrixCKnobs,
    /// Throughput assumptions behind `--dry-run` estimates and progress ETAs.
    pub cost: CostKnobs,
    /// Settings of the fake runner (ignored by the real one).
    pub fake: FakeKnobs,
}

/// Data sources. Dataset names are recipe names under `datasets/` (synthetic sets need no
/// data root; real ones read their files from `data_root`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataKnobs {
    /// Folder with the public datasets; empty means the `SDE_DATA_ROOT` environment variable.
    pub data_root: String,
    /// Template language (`en` or `zh`).
    pub language: String,
    /// MASA datasets of matrices A and C; each must define the aspect subsets `d1` and `d2`.
    pub masa: Vec<String>,
    /// Nested-NER dataset of matrix B.
    pub ner: String,
    /// Event-detection dataset of matrix B.
    pub event: String,
    /// MASA dataset of matrix B's all-aspect task (the study's "Review11"); uses domain `all`.
    pub review11: String,
    /// Test records per test set (0 = the whole test split).
    pub test_size: usize,
    /// Seed for sampling training and test subsets.
    pub data_seed: u64,
}

/// LoRA fine-tuning hyper-parameters (defaults: the study's, digest section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainKnobs {
    /// LoRA rank.
    pub lora_rank: usize,
    /// LoRA alpha.
    pub lora_alpha: f64,
    /// LoRA dropout.
    pub lora_dropout: f64,
    /// Modules LoRA adapts.
    pub lora_targets: Vec<String>,
    /// Peak learning rate (linear decay).
    pub learning_rate: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub max_grad_norm: f64,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Longest training sequence in tokens (longer prompts are cut, never completions).
    pub max_seq_len: usize,
    /// Run training's products with the frozen weights in bf16 (f32 sums) on CPUs with
    /// AVX512-BF16 (`Llama::set_bf16_matmuls`): about 1.4 times faster training, with the
    /// rounding effects measured in `docs/performance.md` and `docs/guide.md`. Evaluation
    /// stays f32. Off, it is left out of the cell spec, so cell ids stay as they were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bf16_matmuls: bool,
}

/// Generation settings (defaults: the study's, digest section 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateKnobs {
    /// Most new tokens per answer of a fine-tuned model (the study: 200).
    pub max_new_tokens: usize,
    /// Most new tokens per answer of an untuned model, zero-shot and in context (matrix C;
    /// the study: 128). Untuned models rarely stop on their own, so this bounds C's cost.
    pub untuned_max_new_tokens: usize,
    /// Repetition penalty (1.0 = off).
    pub repetition_penalty: f64,
    /// Prompts per generation batch.
    pub batch_size: usize,
    /// Temperature of sampled decoding (robustness study).
    pub temperature: f64,
    /// Nucleus mass of sampled decoding.
    pub top_p: f64,
}

/// Matrix A: baseline and one-option variants × settings × sizes × models × seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixAKnobs {
    /// Whether matrix A runs.
    pub enabled: bool,
    /// Design ids or aliases, in table order.
    pub designs: Vec<String>,
    /// Settings, each `D<train><test>` over domains 1 and 2 (`D11`, `D22`, `D12`, `D21`).
    pub settings: Vec<String>,
    /// Training-set sizes.
    pub train_sizes: Vec<usize>,
    /// Designs without an instruction: evaluated in-domain only.
    pub in_domain_only: Vec<String>,
    /// Models of this matrix (empty = the top-level `models`).
    pub models: Vec<String>,
}

/// Matrix B: heuristic vs EW-SDE vs ES-SDE on three tasks, with robustness sweeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixBKnobs {
    /// Whether matrix B runs.
    pub enabled: bool,
    /// Tasks: any of `ner`, `event`, `review11`.
    pub tasks: Vec<String>,
    /// Design ids or aliases.
    pub designs: Vec<String>,
    /// Training size of the main comparison.
    pub train_size: usize,
    /// Further training sizes of the size sweep.
    pub size_sweep: Vec<usize>,
    /// Seeds of sampled decoding, applied to the main comparison's adapters.
    pub sampling_seeds: Vec<u64>,
    /// Instruction paraphrases (1, 2, ...; 0 is the default wording and always runs).
    pub paraphrases: Vec<u32>,
    /// Also decode the main comparison's adapters greedily with the repetition penalty off
    /// (a decoding-sensitivity check the study did not run).
    #[serde(default)]
    pub greedy_without_penalty: bool,
    /// Models of this matrix (empty = the top-level `models`).
    pub models: Vec<String>,
}

/// Matrix C: perplexities, zero-shot and k-shot ICL of the untuned model, per design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixCKnobs {
    /// Whether matrix C runs.
    pub enabled: bool,
    /// Design ids or aliases.
    pub designs: Vec<String>,
    /// MASA domains to analyse (`d1`, `d2`).
    pub domains: Vec<String>,
    /// Whether prompt and output perplexity are measured.
    pub perplexity: bool,
    /// Whether the untuned model is scored zero-shot.
    pub zero_shot: bool,
    /// Demonstrations of the ICL runs (empty = no ICL).
    pub shots: Vec<u32>,
    /// Models of this matrix (empty = the top-level `models`).
    pub models: Vec<String>,
}

/// Throughput assumptions for estimates (tokens per second on the target machine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostKnobs {
    /// Training throughput (forward + backward) in tokens per second.
    pub train_tokens_per_s: f64,
    /// Generation throughput in new tokens per second.
    pub generate_tokens_per_s: f64,
    /// Forward-only throughput (prefill, perplexity) in tokens per second.
    pub score_tokens_per_s: f64,
    /// Fixed cost per cell (model load, data, merging) in seconds.
    pub cell_overhead_s: f64,
}

/// Settings of the fake runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeKnobs {
    /// Milliseconds each fake cell sleeps (spread over its stages).
    pub delay_ms: u64,
    /// File the fake runner appends `start <cell>` / `finish <cell>` lines to (empty = none).
    pub log: String,
}

/// The designs of the option study, in the study's table order.
const OPTION_DESIGNS: [&str; 10] = [
    "baseline",
    "inst-first",
    "no-inst",
    "mi",
    "lines",
    "json",
    "ou",
    "num",
    "cot",
    "rcot",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Knobs {
    /// Names of the built-in presets.
    pub const PRESETS: [&'static str; 4] = ["smoke", "default", "real", "paper"];

    /// The knobs of a built-in preset.
    pub fn preset(name: &str) -> Result<Knobs> {
        let base = Knobs::default_preset();
        Ok(match name {
            "default" => base,
            "smoke" => Knobs {
                preset: "smoke".into(),
                models: strings(&["tiny-random"]),
                seeds: vec![1],
                data: DataKnobs {
                    test_size: 6,
                    ..base.data
                },
                train: TrainKnobs {
                    max_seq_len: 1024,
                    bf16_matmuls: false,
                    ..base.train
                },
                generate: GenerateKnobs {
                    max_new_tokens: 16,
                    untuned_max_new_tokens: 16,
                    ..base.generate
                },
                a: MatrixAKnobs {
                    train_sizes: vec![8],
                    ..base.a
                },
                b: MatrixBKnobs {
                    train_size: 8,
                    size_sweep: vec![12],
                    sampling_seeds: vec![1],
                    paraphrases: vec![1],
                    greedy_without_penalty: true,
                    ..base.b
                },
                c: MatrixCKnobs {
                    domains: strings(&["d1"]),
                    shots: vec![1],
                    ..base.c
                },
                cost: CostKnobs {
                    train_tokens_per_s: 20_000.0,
                    generate_tokens_per_s: 2_000.0,
                    score_tokens_per_s: 50_000.0,
                    cell_overhead_s: 0.5,
                },
                ..base
            },
            "real" => Knobs {
                preset: "real".into(),
                data: DataKnobs {
                    masa: strings(&["mams-acsa", "semeval14-restaurants"]),
                    ner: "genia-raw".into(),
                    event: "maven-fewshot-pooled".into(),
                    review11: "mams-acsa".into(),
                    ..base.data
                },
                ..base
            },
            "paper" => Knobs {
                preset: "paper".into(),
                models: strings(&[
                    "hf:meta-llama/Llama-2-7b-chat-hf",
                    "hf:Qwen/Qwen1.5-4B-Chat",
                ]),
                seeds: vec![42],
                data: DataKnobs {
                    masa: strings(&["mams-acsa", "semeval14-restaurants"]),
                    ner: "genia-raw".into(),
                    event: "maven-fewshot-pooled".into(),
                    review11: "mams-acsa".into(),
                    test_size: 0,
                    ..base.data
                },
                // The study's training (digest §5): lr 1e-4, one epoch, no warm-up.
                train: TrainKnobs {
                    learning_rate: 1e-4,
                    warmup_steps: 0,
                    epochs: 1,
                    ..base.train.clone()
                },
                generate: GenerateKnobs {
                    max_new_tokens: 200,
                    untuned_max_new_tokens: 128,
                    ..base.generate
                },
                a: MatrixAKnobs {
                    train_sizes: vec![500, 1000],
                    ..base.a
                },
                b: MatrixBKnobs {
                    train_size: 500,
                    size_sweep: vec![1000, 4000],
                    sampling_seeds: vec![1, 2, 3, 4, 5],
                    paraphrases: vec![1, 2],
                    ..base.b
                },
                c: MatrixCKnobs {
                    shots: vec![2],
                    ..base.c
                },
                cost: CostKnobs {
                    train_tokens_per_s: 6_000.0,
                    generate_tokens_per_s: 400.0,
                    score_tokens_per_s: 20_000.0,
                    cell_overhead_s: 60.0,
                },
                ..base
            },
            other => bail!(
                "unknown preset `{other}` (expected one of: {})",
                Knobs::PRESETS.join(", ")
            ),
        })
    }

    /// The `default` preset: SmolLM2-135M on synthetic data, sized for one working day on
    /// two CPU cores under the default cost model.
    fn default_preset() -> Knobs {
        Knobs {
            preset: "default".into(),
            runner: RunnerKind::Real,
            models: strings(&["smollm2-135m"]),
            seeds: vec![42],
            data: DataKnobs {
                data_root: String::new(),
                language: "en".into(),
                masa: strings(&["synthetic-masa"]),
                ner: "synthetic-ner".into(),
                event: "synthetic-event".into(),
                review11: "synthetic-masa".into(),
                test_size: 48,
                data_seed: 7,
            },
            train: TrainKnobs {
                lora_rank: 8,
                lora_alpha: 16.0,
                lora_dropout: 0.1,
                lora_targets: strings(&["q", "k", "v", "o", "gate", "up", "down"]),
                // The study's 1e-4 and one epoch leave SmolLM2-135M at kappa ~0 on a few hundred
                // synthetic MASA samples; measured on 240 D1 samples of the baseline design
                // (80 test): 5e-4 x 2 epochs kappa 0.03, 1e-3 x 2 epochs 0.14, 1e-3 x 3 epochs
                // 0.39 [0.32, 0.46].
                learning_rate: 1e-3,
                warmup_steps: 10,
                weight_decay: 0.0,
                max_grad_norm: 1.0,
                batch_size: 4,
                grad_accum: 1,
                epochs: 3,
                max_seq_len: 512,
                bf16_matmuls: false,
            },
            // The study's budgets: CoT answers run to about 170 tokens.
            generate: GenerateKnobs {
                max_new_tokens: 200,
                untuned_max_new_tokens: 128,
                repetition_penalty: 1.1,
                batch_size: 8,
                temperature: 0.7,
                top_p: 0.9,
            },
            a: MatrixAKnobs {
                enabled: true,
                designs: strings(&OPTION_DESIGNS),
                settings: strings(&["D11", "D22", "D12", "D21"]),
                train_sizes: vec![90, 180],
                in_domain_only: strings(&["no-inst"]),
                models: Vec::new(),
            },
            b: MatrixBKnobs {
                enabled: true,
                tasks: strings(&["ner", "event", "review11"]),
                designs: strings(&["heuristic", "ew-sde", "es-sde"]),
                train_size: 120,
                size_sweep: vec![60],
                sampling_seeds: vec![1, 2],
                paraphrases: vec![1],
                greedy_without_penalty: false,
                models: Vec::new(),
            },
            c: MatrixCKnobs {
                enabled: true,
                designs: strings(&OPTION_DESIGNS),
                domains: strings(&["d1"]),
                perplexity: true,
                zero_shot: true,
                shots: vec![2],
                models: Vec::new(),
            },
            // Measured on 2 cores (AMD EPYC, Zen 4): training on the default run's first cell
            // (LoRA dropout 0.1, real sample lengths: 254 tokens/s); greedy f32 decode b8 and
            // scoring b8 by `cargo xtask bench` (docs/performance.md).
            cost: CostKnobs {
                train_tokens_per_s: 255.0,
                generate_tokens_per_s: 72.0,
                score_tokens_per_s: 623.0,
                cell_overhead_s: 10.0,
            },
            fake: FakeKnobs {
                delay_ms: 0,
                log: String::new(),
            },
        }
    }

    /// Resolves a preset, then an optional TOML file, then `key=value` overrides.
    pub fn resolve(preset: &str, config: Option<&Path>, sets: &[String]) -> Result<Knobs> {
        let knobs = Knobs::preset(preset)?;
        let mut tree = toml::Value::try_from(&knobs).context("serializing preset knobs")?;
        list_opt_in_knobs(&mut tree);
        if let Some(path) = config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let file: toml::Value = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            merge_tree(&mut tree, file, "")
                .with_context(|| format!("applying config file {}", path.display()))?;
        }
        for set in sets {
            apply_set(&mut tree, set)?;
        }
        let knobs: Knobs = tree.try_into().context("knobs after overrides")?;
        knobs.validate()?;
        Ok(knobs)
    }

    /// Checks what deserialization cannot.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            bail!("`seeds` is empty: give at least one training seed");
        }
        for s in &self.a.settings {
            parse_setting(s)?;
        }
        for t in &self.b.tasks {
            if !["ner", "event", "review11"].contains(&t.as_str()) {
                bail!("b.tasks: unknown task `{t}` (expected ner, event or review11)");
            }
        }
        if !["en", "zh"].contains(&self.data.language.as_str()) {
            bail!(
                "data.language: `{}` (expected en or zh)",
                self.data.language
            );
        }
        if self.train.batch_size == 0 || self.generate.batch_size == 0 {
            bail!("train.batch_size and generate.batch_size must be at least 1");
        }
        let c = &self.cost;
        for (k, v) in [
            ("cost.train_tokens_per_s", c.train_tokens_per_s),
            ("cost.generate_tokens_per_s", c.generate_tokens_per_s),
            ("cost.score_tokens_per_s", c.score_tokens_per_s),
        ] {
            if v.is_nan() || v <= 0.0 {
                bail!("{k} must be positive, got {v}");
            }
        }
        Ok(())
    }

    /// The resolved knobs as TOML (written next to the results).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("serializing knobs")
    }

    /// The data root: the knob, else `SDE_DATA_ROOT`, else `None`.
    pub fn data_root(&self) -> Option<String> {
        if !self.data.data_root.is_empty() {
            return Some(self.data.data_root.clone());
        }
        std::env::var("SDE_DATA_ROOT")
            .ok()
            .filter(|s| !s.is_empty())
    }
}

/// A MASA setting `D<train><test>` as (train domain, test domain), e.g. `D12` → (`d1`, `d2`).
pub fn parse_setting(s: &str) -> Result<(String, String)> {
    let digits = s
        .strip_prefix('D')
        .or_else(|| s.strip_prefix('d'))
        .filter(|d| d.len() == 2 && d.chars().all(|c| c == '1' || c == '2'))
        .ok_or_else(|| anyhow!("setting `{s}`: expected D11, D22, D12 or D21"))?;
    let mut c = digits.chars();
    let (train, test) = (c.next().unwrap_or('1'), c.next().unwrap_or('1'));
    Ok((format!("d{train}"), format!("d{test}")))
}

/// The setting name of a (train, test) domain pair, e.g. (`d1`, `d2`) → `D12`.
pub fn setting_name(train: &str, test: &str) -> String {
    let strip = |d: &str| d.trim_start_matches(['d', 'D']).to_string();
    format!("D{}{}", strip(train), strip(test))
}

/// Applies one `key=value` override; the value is read as TOML, else taken as a string.
pub fn apply_set(tree: &mut toml::Value, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set `{set}`: expected key=value"))?;
    let key = key.trim();
    let value = parse_value(raw.trim());
    let mut node = tree;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set `{key}`: `{}` is not a table", parts[..i].join(".")))?;
        let Some(child) = table.get_mut(*part) else {
            bail!("--set `{key}`: unknown knob `{}`", parts[..=i].join("."));
        };
        node = child;
    }
    *node = coerce(node, value).with_context(|| format!("--set `{key}`"))?;
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Opt-in knobs are left out of the serialized knobs (and so of cell specs) while off, which
/// kept the ids of cells run before they existed; config files and `--set` address them anyway.
fn list_opt_in_knobs(tree: &mut toml::Value) {
    if let Some(train) = tree.get_mut("train").and_then(toml::Value::as_table_mut) {
        train
            .entry("bf16_matmuls")
            .or_insert(toml::Value::Boolean(false));
    }
}

/// Makes `value` fit the type of the knob it replaces (an integer where a float is expected,
/// a single item where a list is expected).
fn coerce(old: &toml::Value, value: toml::Value) -> Result<toml::Value> {
    use toml::Value as V;
    Ok(match (old, value) {
        (V::Float(_), V::Integer(i)) => V::Float(i as f64),
        (V::Array(_), v @ V::Array(_)) => v,
        (V::Array(items), v) => V::Array(vec![coerce_item(items.first(), v)?]),
        (V::String(_), V::Integer(i)) => V::String(i.to_string()),
        (V::Table(_), v) if !v.is_table() => bail!("is a table of knobs, not a value"),
        (old, v) if std::mem::discriminant(old) == std::mem::discriminant(&v) => v,
        (old, v) => bail!("expected a {}, got `{v}`", old.type_str()),
    })
}

fn coerce_item(template: Option<&toml::Value>, value: toml::Value) -> Result<toml::Value> {
    match template {
        Some(t) => coerce(t, value),
        None => Ok(value),
    }
}

fn merge_tree(base: &mut toml::Value, over: toml::Value, path: &str) -> Result<()> {
    match over {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let full = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let base_table = base
                    .as_table_mut()
                    .ok_or_else(|| anyhow!("`{path}` is not a table"))?;
                let Some(slot) = base_table.get_mut(&k) else {
                    bail!("unknown knob `{full}`");
                };
                if v.is_table() {
                    merge_tree(slot, v, &full)?;
                } else {
                    *slot = coerce(slot, v).with_context(|| format!("knob `{full}`"))?;
                }
            }
            Ok(())
        }
        _ => bail!("`{path}` must be a table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_validates() {
        for p in Knobs::PRESETS {
            let k = Knobs::resolve(p, None, &[]).unwrap();
            assert_eq!(k.preset, p);
        }
        assert!(Knobs::preset("nope").is_err());
    }

    #[test]
    fn sets_override_nested_knobs_with_type_coercion() {
        let sets = [
            "a.train_sizes=[10, 20]".to_string(),
            "train.learning_rate=1".to_string(),
            "models=hf:org/model".to_string(),
            "runner=fake".to_string(),
            "b.enabled=false".to_string(),
            "train.bf16_matmuls=true".to_string(),
        ];
        assert!(
            !Knobs::resolve("smoke", None, &[])
                .unwrap()
                .train
                .bf16_matmuls
        );
        let k = Knobs::resolve("smoke", None, &sets).unwrap();
        assert!(
            k.train.bf16_matmuls,
            "an opt-in knob left out of the tree is still set"
        );
        assert_eq!(k.a.train_sizes, vec![10, 20]);
        assert_eq!(k.train.learning_rate, 1.0);
        assert_eq!(k.models, vec!["hf:org/model".to_string()]);
        assert_eq!(k.runner, RunnerKind::Fake);
        assert!(!k.b.enabled);
    }

    #[test]
    fn unknown_or_mistyped_knobs_are_errors_naming_the_key() {
        let e = Knobs::resolve("smoke", None, &["a.train_size=3".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("a.train_size"), "{e:#}");
        let e = Knobs::resolve("smoke", None, &["b.enabled=maybe".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("b.enabled"), "{e:#}");
        assert!(Knobs::resolve("smoke", None, &["a.settings=D13".into()]).is_err());
    }

    #[test]
    fn config_file_overrides_preset_and_sets_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "seeds = [3, 4]\n[a]\ntrain_sizes = [50]\n").unwrap();
        let k = Knobs::resolve("default", Some(&path), &["seeds=[9]".into()]).unwrap();
        assert_eq!(k.a.train_sizes, vec![50]);
        assert_eq!(k.seeds, vec![9]);
        std::fs::write(&path, "[a]\ntrain_sise = [50]\n").unwrap();
        let e = Knobs::resolve("default", Some(&path), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("a.train_sise"), "{e:#}");
    }

    #[test]
    fn settings_parse_both_ways() {
        assert_eq!(parse_setting("D12").unwrap(), ("d1".into(), "d2".into()));
        assert_eq!(setting_name("d2", "d1"), "D21");
        assert!(parse_setting("D3").is_err());
    }
}
