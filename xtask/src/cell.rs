//! A cell: one fully resolved unit of work (usually one adapter and its evaluations), keyed by
//! the SHA-256 of its canonical JSON.

use crate::knobs::{GenerateKnobs, TrainKnobs};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Which matrix of the study a cell belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Matrix {
    /// The one-option study on MASA.
    A,
    /// ES-SDE validation and robustness.
    B,
    /// Prompt-engineering analyses of the untuned model.
    C,
}

impl Matrix {
    /// The matrix letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Matrix::A => "A",
            Matrix::B => "B",
            Matrix::C => "C",
        }
    }
}

/// How answers are decoded in one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Decoding {
    /// Greedy with the repetition penalty (the study's decoding).
    Greedy,
    /// Seeded sampling with the run's temperature and top-p.
    Sample {
        /// Sampling seed.
        seed: u64,
    },
    /// No generation: prompt and output perplexity only.
    Score,
    /// Greedy with the repetition penalty off: how much a design's scores owe to the penalty.
    GreedyNoPenalty,
}

impl Decoding {
    /// `greedy`, `sample` or `score`.
    pub fn name(self) -> &'static str {
        match self {
            Decoding::Greedy => "greedy",
            Decoding::Sample { .. } => "sample",
            Decoding::Score => "score",
            Decoding::GreedyNoPenalty => "greedy-no-penalty",
        }
    }

    /// The sampling seed, if sampled.
    pub fn seed(self) -> Option<u64> {
        match self {
            Decoding::Sample { seed } => Some(seed),
            _ => None,
        }
    }
}

/// One evaluation of a cell's model on one test set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EvalSpec {
    /// MASA test domain (`d1`, `d2`, `all`); `None` for NER and event detection.
    pub test_domain: Option<String>,
    /// Decoding.
    pub decoding: Decoding,
    /// In-context demonstrations in the prompt (0 = zero-shot or fine-tuned use).
    pub shots: u32,
}

impl EvalSpec {
    /// A short stable name, used in file names: `d1-greedy`, `d2-sample3`, `d1-greedy-2shot`.
    pub fn key(&self) -> String {
        let mut k = self.test_domain.clone().unwrap_or_else(|| "test".into());
        match self.decoding {
            Decoding::Greedy => k.push_str("-greedy"),
            Decoding::Sample { seed } => k.push_str(&format!("-sample{seed}")),
            Decoding::Score => k.push_str("-score"),
            Decoding::GreedyNoPenalty => k.push_str("-greedy-no-penalty"),
        }
        if self.shots > 0 {
            k.push_str(&format!("-{}shot", self.shots));
        }
        k
    }
}

/// Everything that determines a cell's results. Two cells with equal specs are the same cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// Matrix the cell belongs to.
    pub matrix: Matrix,
    /// Task family: `masa`, `ner` or `event`.
    pub task: String,
    /// Dataset recipe name.
    pub dataset: String,
    /// Template language.
    pub language: String,
    /// Design id or alias (resolved by `sde-format`).
    pub design: String,
    /// Instruction paraphrase (0 = the default wording).
    pub paraphrase: u32,
    /// Model reference.
    pub model: String,
    /// MASA training domain; `None` for other tasks and for untuned cells.
    pub train_domain: Option<String>,
    /// Training records (0 for untuned cells, which still draw ICL demonstrations).
    pub train_size: usize,
    /// Test records per test set (0 = whole split).
    pub test_size: usize,
    /// Seed of data subsampling.
    pub data_seed: u64,
    /// Training seed (LoRA init, dropout, shuffling).
    pub seed: u64,
    /// Fine-tuning hyper-parameters; `None` for untuned (matrix C) cells.
    pub train: Option<TrainKnobs>,
    /// Generation settings.
    pub generate: GenerateKnobs,
    /// Evaluations, in order.
    pub evals: Vec<EvalSpec>,
    /// Version of the code that produced the results (crate version + git commit).
    pub code_version: String,
}

impl CellSpec {
    /// The full SHA-256 of the canonical JSON of this spec, as hex.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&json))
    }

    /// The cell id: the first 16 hex digits of [`CellSpec::hash`] (the cell's folder name).
    pub fn id(&self) -> String {
        self.hash()[..16].to_string()
    }

    /// Whether the cell fine-tunes an adapter.
    pub fn fine_tunes(&self) -> bool {
        self.train.is_some()
    }

    /// One line for listings and progress bars.
    pub fn label(&self) -> String {
        let mut s = format!("{} {} {}", self.matrix.as_str(), self.task, self.design);
        if self.paraphrase > 0 {
            s.push_str(&format!(" p{}", self.paraphrase));
        }
        let tests: Vec<String> = self
            .evals
            .iter()
            .map(|e| e.test_domain.clone().unwrap_or_else(|| "test".into()))
            .fold(Vec::new(), |mut v, d| {
                if !v.contains(&d) {
                    v.push(d);
                }
                v
            });
        match &self.train_domain {
            Some(d) if self.fine_tunes() => s.push_str(&format!(" {d}→{}", tests.join(","))),
            _ => s.push_str(&format!(" on {}", tests.join(","))),
        }
        if self.fine_tunes() {
            s.push_str(&format!(" n={} seed={}", self.train_size, self.seed));
        } else {
            s.push_str(" untuned");
        }
        s.push_str(&format!(" [{}]", self.model));
        s
    }
}

/// One metric value, optionally with a confidence interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// The value.
    pub value: f64,
    /// Lower end of the 95% interval, if computed.
    pub ci_low: Option<f64>,
    /// Upper end of the 95% interval, if computed.
    pub ci_high: Option<f64>,
}

impl MetricValue {
    /// A value without an interval.
    pub fn plain(value: f64) -> MetricValue {
        MetricValue {
            value,
            ci_low: None,
            ci_high: None,
        }
    }
}

/// The results of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOutcome {
    /// The evaluation these results belong to.
    pub eval: EvalSpec,
    /// Test records scored.
    pub n: usize,
    /// Metrics by name (`kappa`, `accuracy`, `format_errors`, `f1_soft`, `prompt_ppl`, ...).
    pub metrics: BTreeMap<String, MetricValue>,
}

/// What fine-tuning reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Optimizer steps.
    pub steps: usize,
    /// Real tokens trained on, over all epochs (padding not counted).
    pub tokens: usize,
    /// Token positions the training passes ran: real tokens plus padding, a shared prefix
    /// counted once per batch (0 in results written before it was recorded).
    #[serde(default)]
    pub positions: usize,
    /// Loss of the first optimizer step.
    pub first_loss: f64,
    /// Loss of the last optimizer step.
    pub last_loss: f64,
    /// Samples whose prompt had to be cut to fit `max_seq_len`.
    pub truncated: usize,
    /// Wall seconds of training.
    pub seconds: f64,
}

/// Everything a runner returns for a cell (stored as `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellOutcome {
    /// Training summary, for fine-tuning cells.
    pub train: Option<TrainSummary>,
    /// One entry per evaluation of the spec.
    pub evals: Vec<EvalOutcome>,
    /// Wall seconds of the whole cell.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::{GenerateKnobs, TrainKnobs};

    fn spec() -> CellSpec {
        CellSpec {
            matrix: Matrix::A,
            task: "masa".into(),
            dataset: "synthetic-masa".into(),
            language: "en".into(),
            design: "baseline".into(),
            paraphrase: 0,
            model: "tiny-random".into(),
            train_domain: Some("d1".into()),
            train_size: 8,
            test_size: 6,
            data_seed: 7,
            seed: 1,
            train: Some(TrainKnobs {
                lora_rank: 8,
                lora_alpha: 16.0,
                lora_dropout: 0.1,
                lora_targets: vec!["q".into(), "v".into()],
                learning_rate: 1e-4,
                warmup_steps: 0,
                weight_decay: 0.0,
                max_grad_norm: 1.0,
                batch_size: 4,
                grad_accum: 1,
                epochs: 1,
                max_seq_len: 256,
                bf16_matmuls: false,
            }),
            generate: GenerateKnobs {
                max_new_tokens: 16,
                untuned_max_new_tokens: 16,
                repetition_penalty: 1.1,
                batch_size: 8,
                temperature: 0.7,
                top_p: 0.9,
            },
            evals: vec![EvalSpec {
                test_domain: Some("d1".into()),
                decoding: Decoding::Greedy,
                shots: 0,
            }],
            code_version: "xtask 0.1.0+abc".into(),
        }
    }

    #[test]
    fn hash_is_stable_and_sensitive_to_every_field() {
        let s = spec();
        // Pinned: changing the spec's schema or serialization changes every cell key, which
        // makes finished results unreachable; this must be a deliberate decision.
        assert_eq!(s.hash(), spec().hash());
        assert_eq!(s.id().len(), 16);
        let pinned = s.hash();
        assert_eq!(
            pinned, PINNED_HASH,
            "cell hash of the reference spec changed"
        );
        let mut t = spec();
        t.seed = 2;
        assert_ne!(t.hash(), pinned);
        let mut t = spec();
        t.code_version = "xtask 0.1.0+abd".into();
        assert_ne!(t.hash(), pinned);
        let mut t = spec();
        t.train.as_mut().unwrap().learning_rate = 2e-4;
        assert_ne!(t.hash(), pinned);
        let mut t = spec();
        t.evals[0].decoding = Decoding::Sample { seed: 1 };
        assert_ne!(t.hash(), pinned);
        // An opt-in knob changes the id only when on (the pinned spec has it off).
        let mut t = spec();
        t.train.as_mut().unwrap().bf16_matmuls = true;
        assert_ne!(t.hash(), pinned);
    }

    const PINNED_HASH: &str = "110780597a84aea513c3c59275bc12e64d0cf8372cd641ab742243e5eaedbf0b";

    #[test]
    fn eval_keys_are_distinct_file_names() {
        let e = |d: Decoding, shots| EvalSpec {
            test_domain: Some("d2".into()),
            decoding: d,
            shots,
        };
        assert_eq!(e(Decoding::Greedy, 0).key(), "d2-greedy");
        assert_eq!(e(Decoding::Sample { seed: 3 }, 0).key(), "d2-sample3");
        assert_eq!(e(Decoding::Greedy, 2).key(), "d2-greedy-2shot");
        assert_eq!(e(Decoding::Score, 0).key(), "d2-score");
    }
}
