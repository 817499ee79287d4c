//! The LoRA training loop: bucketed batches, masked loss normalised over the accumulation
//! window, gradient clipping, AdamW with a linear schedule.

use std::time::Instant;

use candle_core::Var;

use crate::batch::{EncodedSample, collate, length_bucketed_batches};
use crate::error::{EngineError, Result};
use crate::optim::{AdamW, AdamWConfig, GradAccumulator, clip_global_norm, linear_lr};
use crate::{Llama, LoraConfig, LoraTarget};

/// Training hyper-parameters. The defaults are the study's (digest §5).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha (the update is scaled by `alpha / r`).
    pub alpha: f64,
    /// Dropout on the LoRA input.
    pub dropout: f64,
    /// Projections that get an adapter.
    pub targets: Vec<LoraTarget>,
    /// Optimizer settings.
    pub optimizer: AdamWConfig,
    /// Passes over the data.
    pub epochs: usize,
    /// Samples per forward/backward pass.
    pub batch_size: usize,
    /// Micro-batches summed into one optimizer step.
    pub grad_accum: usize,
    /// Linear warmup steps before the linear decay.
    pub warmup_steps: usize,
    /// Global gradient-norm clip; `None` disables clipping.
    pub max_grad_norm: Option<f64>,
    /// Seed of every random choice: shuffling, LoRA initialisation, dropout.
    pub seed: u64,
    /// Shuffle samples (within length buckets) each epoch.
    pub shuffle: bool,
    /// Length-bucketing window, in batches: samples are sorted by length inside windows of
    /// `bucket_window * batch_size` shuffled samples. 1 disables bucketing.
    pub bucket_window: usize,
    /// Run the token prefix that every sample of a batch shares (an instruction placed
    /// first) once per batch. Gradients are unchanged; with LoRA dropout the shared prefix
    /// gets one dropout mask for the whole batch instead of one per row.
    #[serde(default = "share_prefix_default")]
    pub share_prefix: bool,
    /// Run the products with the frozen weights in bf16 ([`Llama::set_bf16_matmuls`], which
    /// the caller turns on first; [`train`] checks that the two agree). About 1.4 times
    /// faster on CPUs with AVX512-BF16; losses within 1e-4 of f32, gradients a few percent
    /// apart (see `docs/performance.md`).
    #[serde(default)]
    pub bf16_matmuls: bool,
}

fn share_prefix_default() -> bool {
    true
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            dropout: 0.1,
            targets: LoraTarget::ALL.to_vec(),
            optimizer: AdamWConfig::default(),
            epochs: 1,
            batch_size: 4,
            grad_accum: 1,
            warmup_steps: 0,
            max_grad_norm: Some(1.0),
            seed: 42,
            shuffle: true,
            bucket_window: 16,
            share_prefix: true,
            bf16_matmuls: false,
        }
    }
}

impl TrainConfig {
    /// The LoRA configuration this training run adds to the model.
    pub fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.targets.clone(),
            seed: self.seed,
        }
    }

    /// Number of optimizer steps for `n_samples` samples.
    pub fn total_steps(&self, n_samples: usize) -> usize {
        let batches = n_samples.div_ceil(self.batch_size.max(1));
        batches.div_ceil(self.grad_accum.max(1)) * self.epochs
    }
}

/// Progress of one optimizer step, reported to the caller.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepReport {
    /// 1-based optimizer step.
    pub step: usize,
    /// Total optimizer steps.
    pub total_steps: usize,
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean loss per loss token over the step's samples.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Loss tokens in the step.
    pub loss_tokens: usize,
    /// Real tokens processed in the step.
    pub tokens: usize,
    /// Real tokens processed since training started.
    pub tokens_seen: usize,
    /// Seconds since training started.
    pub elapsed_s: f64,
}

/// Summary of a finished training run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainSummary {
    /// Optimizer steps done.
    pub steps: usize,
    /// Samples trained on (per epoch).
    pub samples: usize,
    /// Real tokens processed.
    pub tokens: usize,
    /// Token positions the training passes ran: real tokens plus padding, with a shared
    /// prefix counted once per batch. `positions / tokens` above 1 is padding waste; below 1,
    /// the saving of prefix sharing.
    pub positions: usize,
    /// Loss of the first step.
    pub first_loss: f64,
    /// Mean loss of the last step.
    pub last_loss: f64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

/// Trains the LoRA variables of `model` on `samples`. The model must already carry LoRA layers
/// ([`Llama::add_lora`] with [`TrainConfig::lora_config`]). `on_step` sees every optimizer step.
pub fn train(
    model: &Llama,
    samples: &[EncodedSample],
    pad_id: u32,
    config: &TrainConfig,
    mut on_step: impl FnMut(&StepReport),
) -> Result<TrainSummary> {
    if samples.is_empty() {
        return Err(EngineError::invalid("no training samples"));
    }
    let named = model.lora_vars();
    if named.is_empty() {
        return Err(EngineError::invalid(
            "the model has no LoRA layers to train",
        ));
    }
    if config.bf16_matmuls != model.bf16_matmuls() {
        return Err(EngineError::invalid(format!(
            "the training config has bf16_matmuls {} but the model {}: call \
             Llama::set_bf16_matmuls({}) first",
            config.bf16_matmuls,
            model.bf16_matmuls(),
            config.bf16_matmuls
        )));
    }
    let vars: Vec<Var> = named.into_iter().map(|(_, v)| v).collect();
    let mut optimizer = AdamW::new(vars.clone(), config.optimizer)?;
    let mut acc = GradAccumulator::new(vars.len());
    let lengths: Vec<usize> = samples.iter().map(|s| s.input_ids.len()).collect();
    let total_steps = config.total_steps(samples.len());
    let device = model.device().clone();
    let start = Instant::now();
    let (mut step, mut batch_no, mut tokens_total, mut positions) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    for epoch in 0..config.epochs {
        let batches = length_bucketed_batches(
            &lengths,
            config.batch_size,
            config.bucket_window,
            config.shuffle,
            config.seed.wrapping_add(epoch as u64),
        );
        for window in batches.chunks(config.grad_accum.max(1)) {
            let n_window: usize = window
                .iter()
                .flatten()
                .map(|&i| samples[i].n_loss_tokens())
                .sum();
            let (mut loss_sum, mut tokens) = (0f64, 0usize);
            for indices in window {
                batch_no += 1;
                let rows: Vec<&EncodedSample> = indices.iter().map(|&i| &samples[i]).collect();
                let mut batch = collate(&rows, pad_id, &device)?;
                if !config.share_prefix {
                    batch = batch.without_prefix_sharing();
                }
                tokens += batch.n_tokens;
                if batch.n_loss_tokens == 0 {
                    continue;
                }
                positions += batch.n_positions();
                let step_out = model.lora_loss_and_grads(&batch, n_window)?;
                let value = step_out.loss;
                if !value.is_finite() {
                    return Err(EngineError::NonFiniteLoss {
                        step: step + 1,
                        batch: batch_no,
                        value,
                    });
                }
                loss_sum += value;
                acc.add_tensors(step_out.grads)?;
            }
            let mut grads = acc.take(&vars)?;
            let grad_norm = match config.max_grad_norm {
                Some(max) => clip_global_norm(&mut grads, max)?,
                None => crate::optim::global_norm(&grads)?,
            };
            let lr = linear_lr(config.optimizer.lr, step, config.warmup_steps, total_steps);
            optimizer.step(&grads, lr)?;
            step += 1;
            tokens_total += tokens;
            if step == 1 {
                first_loss = loss_sum;
            }
            last_loss = loss_sum;
            on_step(&StepReport {
                step,
                total_steps,
                epoch,
                loss: loss_sum,
                lr,
                grad_norm,
                loss_tokens: n_window,
                tokens,
                tokens_seen: tokens_total,
                elapsed_s: start.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(TrainSummary {
        steps: step,
        samples: samples.len(),
        tokens: tokens_total,
        positions,
        first_loss,
        last_loss,
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}
