//! Workloads shared by the criterion benchmarks (`benches/benches/`) and by the worker binary
//! that `cargo xtask bench` runs once per workload (`sde-bench-worker`).
//!
//! Every workload follows the protocol of `docs/performance.md`: SmolLM2-135M shapes, LoRA
//! r 8 / alpha 16 / dropout 0 on all seven projections, AdamW at 1e-4, loss on the last 32
//! tokens, greedy decoding of 32 new tokens after a 128-token prompt, teacher-forced scoring
//! of a 32-token answer after a 128-token prompt. Inputs are random token ids: the data does
//! not change the speed.

pub mod corpus;

use candle_core::Var;
use sde_engine::batch::{EncodedSample, TrainBatch, collate};
use sde_engine::optim::AdamW;
use sde_engine::{
    AdamWConfig, Decoding, DraftCounts, GenerateConfig, Llama, LlamaConfig, LoraConfig, LoraTarget,
    Result, ScoreOptions, generate_counting_drafts, sequence_logprobs_with,
};

/// Loss targets per training sequence (the last tokens of each row).
pub const LOSS_TOKENS: usize = 32;
/// Prompt length of the decode and scoring workloads.
pub const PROMPT_TOKENS: usize = 128;
/// New tokens of the decode workload, and answer tokens of the scoring workload.
pub const NEW_TOKENS: usize = 32;

/// The architecture of SmolLM2-135M (30 layers, hidden 576, MLP 1536, 9 query and 3 key/value
/// heads, vocabulary 49152, tied embeddings).
pub fn smollm2_135m_config() -> LlamaConfig {
    LlamaConfig {
        model_type: "llama".into(),
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: Some(3),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        rope_scaling: None,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        attention_bias: false,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: Some(2),
    }
}

/// A model with SmolLM2-135M shapes and random weights, on the engine's default device.
pub fn random_smollm2_135m(seed: u64) -> Result<Llama> {
    Llama::random(smollm2_135m_config(), seed, &sde_engine::default_device()?)
}

/// The LoRA adapter of the benchmarks: r 8, alpha 16, no dropout, all seven projections.
pub fn bench_lora() -> LoraConfig {
    LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
        seed: 42,
    }
}

/// A small deterministic generator (SplitMix64) for token ids, so the workloads need no
/// random-number crate.
#[derive(Debug, Clone)]
pub struct Ids(u64);

impl Ids {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` token ids drawn uniformly from the ordinary vocabulary (ids 100 and above, below
    /// `vocab`), so that no special token appears.
    pub fn tokens(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        let span = (vocab.saturating_sub(100)).max(1) as u64;
        (0..n)
            .map(|_| (100 + self.next_u64() % span) as u32)
            .collect()
    }

    /// `batch` rows of `len` token ids (see [`Ids::tokens`]) that all start with the same
    /// `shared` ids; with `shared` 0 the rows are drawn one after the other.
    pub fn rows(&mut self, batch: usize, len: usize, shared: usize, vocab: usize) -> Vec<Vec<u32>> {
        let prefix = self.tokens(shared.min(len), vocab);
        (0..batch)
            .map(|_| {
                let mut row = prefix.clone();
                row.extend(self.tokens(len - prefix.len(), vocab));
                row
            })
            .collect()
    }
}

/// One LoRA training step repeated on a fixed batch: forward, masked loss on the last
/// [`LOSS_TOKENS`] tokens of each row, backward, AdamW update. No gradient clipping, as in
/// the Python peer.
#[derive(Debug)]
pub struct TrainStep {
    optimizer: AdamW,
    batch: TrainBatch,
    /// Tokens per step (`batch × seq`).
    pub tokens: usize,
}

impl TrainStep {
    /// A step over `batch` random sequences of `seq` tokens whose first `shared` tokens are the
    /// same in every row. `model` must carry a LoRA adapter ([`Llama::add_lora`] with
    /// [`bench_lora`]).
    pub fn new(model: &Llama, batch: usize, seq: usize, shared: usize, seed: u64) -> Result<Self> {
        let vars: Vec<Var> = model.lora_vars().into_iter().map(|(_, v)| v).collect();
        if vars.is_empty() {
            return Err(sde_engine::EngineError::InvalidInput {
                message: "the benchmark model has no LoRA adapter".into(),
            });
        }
        let optimizer = AdamW::new(
            vars.clone(),
            AdamWConfig {
                lr: 1e-4,
                ..AdamWConfig::default()
            },
        )?;
        let vocab = model.config().vocab_size;
        let samples: Vec<EncodedSample> = Ids::new(seed)
            .rows(batch, seq, shared, vocab)
            .into_iter()
            .enumerate()
            .map(|(index, input_ids)| {
                let loss_from = seq.saturating_sub(LOSS_TOKENS).max(1);
                EncodedSample {
                    index,
                    input_ids,
                    loss_mask: (0..seq).map(|i| i >= loss_from).collect(),
                    prompt_len: loss_from,
                    prompt_tokens_cut: 0,
                }
            })
            .collect();
        let rows: Vec<&EncodedSample> = samples.iter().collect();
        let batch = collate(&rows, 0, model.device())?;
        Ok(Self {
            optimizer,
            tokens: batch.n_tokens,
            batch,
        })
    }

    /// The loss and LoRA gradients of this step's batch, without an optimizer step.
    pub fn loss_and_grads(&self, model: &Llama) -> Result<sde_engine::model::LossAndGrads> {
        let b = &self.batch;
        model.lora_loss_and_grads(b, b.n_loss_tokens)
    }

    /// Runs one step and returns the loss (mean over the loss tokens).
    pub fn run(&mut self, model: &Llama) -> Result<f64> {
        let b = &self.batch;
        let out = model.lora_loss_and_grads(b, b.n_loss_tokens)?;
        let (value, grads) = (out.loss, out.grads);
        self.optimizer.step(&grads, 1e-4)?;
        Ok(value)
    }
}

/// Tokens that every prompt of the shared-prefix workloads starts with (in-context
/// demonstrations, or an instruction placed first), out of [`PROMPT_TOKENS`].
pub const SHARED_PREFIX_TOKENS: usize = 96;

/// `batch` random prompts of [`PROMPT_TOKENS`] tokens whose first `shared` are the same.
pub fn decode_prompts(model: &Llama, batch: usize, shared: usize, seed: u64) -> Vec<Vec<u32>> {
    Ids::new(seed).rows(batch, PROMPT_TOKENS, shared, model.config().vocab_size)
}

/// Greedy decoding of exactly `new_tokens` per prompt (no stop token, no repetition penalty),
/// all prompts in one batch. Returns the number of new tokens produced.
pub fn run_decode(model: &Llama, prompts: &[Vec<u32>], new_tokens: usize) -> Result<usize> {
    run_decode_with(model, prompts, new_tokens, true)
}

/// [`run_decode`] with shared-prefix batching on or off.
pub fn run_decode_with(
    model: &Llama,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    share_prefix: bool,
) -> Result<usize> {
    Ok(greedy_tokens(model, prompts, new_tokens, share_prefix)?
        .iter()
        .map(Vec::len)
        .sum())
}

/// The new tokens of [`run_decode_with`], per prompt.
pub fn greedy_tokens(
    model: &Llama,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    share_prefix: bool,
) -> Result<Vec<Vec<u32>>> {
    Ok(greedy_tokens_drafting(model, prompts, new_tokens, share_prefix, 0)?.0)
}

/// [`greedy_tokens`] with speculative decoding's `draft_tokens` (0: none), and its counts.
pub fn greedy_tokens_drafting(
    model: &Llama,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    share_prefix: bool,
    draft_tokens: usize,
) -> Result<(Vec<Vec<u32>>, DraftCounts)> {
    let config = GenerateConfig {
        max_new_tokens: new_tokens,
        repetition_penalty: 1.0,
        decoding: Decoding::Greedy,
        batch_size: prompts.len().max(1),
        sort_by_length: false,
        share_prefix,
        draft_tokens,
    };
    let (out, counts) = generate_counting_drafts(model, prompts, &[], &config, |_| {})?;
    Ok((out.into_iter().map(|g| g.tokens).collect(), counts))
}

/// The share of `reference`'s tokens that `got` reproduces before the first divergence, over
/// all rows: how faithfully a cheaper decode (Q8_0 weights) follows the f32 one.
pub fn share_before_divergence(got: &[Vec<u32>], reference: &[Vec<u32>]) -> f64 {
    let total: usize = reference.iter().map(Vec::len).sum();
    let same: usize = got
        .iter()
        .zip(reference)
        .map(|(g, r)| g.iter().zip(r).take_while(|(a, b)| a == b).count())
        .sum();
    if total == 0 {
        1.0
    } else {
        same as f64 / total as f64
    }
}

/// `batch` random sequences of [`PROMPT_TOKENS`] + [`NEW_TOKENS`] tokens, the first `shared`
/// the same in every row, whose last [`NEW_TOKENS`] are scored.
pub fn score_items(
    model: &Llama,
    batch: usize,
    shared: usize,
    seed: u64,
) -> Vec<(Vec<u32>, usize)> {
    let len = PROMPT_TOKENS + NEW_TOKENS;
    Ids::new(seed)
        .rows(batch, len, shared, model.config().vocab_size)
        .into_iter()
        .map(|row| (row, PROMPT_TOKENS))
        .collect()
}

/// Teacher-forced log-likelihoods of the items in one batch; returns the summed log-likelihood.
pub fn run_score(model: &Llama, items: &[(Vec<u32>, usize)]) -> Result<f64> {
    run_score_with(model, items, true)
}

/// [`run_score`] with shared-prefix batching on or off.
pub fn run_score_with(
    model: &Llama,
    items: &[(Vec<u32>, usize)],
    share_prefix: bool,
) -> Result<f64> {
    let options = ScoreOptions {
        batch_size: items.len().max(1),
        share_prefix,
    };
    Ok(sequence_logprobs_with(model, items, options)?
        .iter()
        .map(|s| s.sum)
        .sum())
}
