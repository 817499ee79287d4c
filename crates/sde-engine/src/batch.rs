//! From rendered samples to training batches: tokenization, loss masks, truncation, length
//! bucketing and right-padded collation.
//!
//! Prompt and completion are tokenized separately and joined as token sequences, so the loss mask
//! is exact at the seam even where BPE would have merged the two texts differently.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use sde_format::LossOn;

use crate::Tokenizer;
use crate::error::{EngineError, Result};
use crate::prefix::shared_prefix_len;

/// Whether a BOS token starts every training sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BosPolicy {
    /// Prepend BOS exactly when the tokenizer's own `add_special_tokens` encoding does (the HF
    /// tokenizer of SmolLM2 does not; Llama-2's does). This is the default.
    #[default]
    Tokenizer,
    /// Always prepend the tokenizer's BOS token.
    Always,
    /// Never prepend BOS.
    Never,
}

/// What happens to a sample longer than the maximum sequence length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TruncationPolicy {
    /// Drop prompt tokens from the left (after BOS) until the sample fits; a sample whose
    /// completion and EOS alone do not fit is skipped. The completion is never cut.
    #[default]
    CutPromptLeft,
    /// Skip every sample that does not fit.
    Skip,
}

/// How samples are turned into token sequences and loss masks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncodeOptions {
    /// Maximum sequence length in tokens, BOS and EOS included.
    pub max_len: usize,
    /// BOS handling.
    pub bos: BosPolicy,
    /// Truncation of over-long samples.
    pub truncation: TruncationPolicy,
    /// Reproduce the study's No-MI mask exactly: the last prompt token is also a loss target
    /// (digest quirk Q9). Off by default.
    pub study_exact_mask: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            max_len: 2048,
            bos: BosPolicy::Tokenizer,
            truncation: TruncationPolicy::CutPromptLeft,
            study_exact_mask: false,
        }
    }
}

/// Special token ids the encoder needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// BOS id, when the model has one.
    pub bos: Option<u32>,
    /// EOS id appended to every completion and trained.
    pub eos: u32,
    /// Whether the tokenizer's `add_special_tokens` encoding starts with BOS.
    pub tokenizer_adds_bos: bool,
}

/// One training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedSample {
    /// Index of the sample in the input list.
    pub index: usize,
    /// Token ids: \[BOS\] prompt completion EOS.
    pub input_ids: Vec<u32>,
    /// `loss_mask[i]` is true when token `i` is a loss target (predicted from tokens `..i`);
    /// `loss_mask[0]` is always false.
    pub loss_mask: Vec<bool>,
    /// Number of tokens before the completion (BOS and prompt).
    pub prompt_len: usize,
    /// Prompt tokens dropped from the left to fit `max_len`.
    pub prompt_tokens_cut: usize,
}

impl EncodedSample {
    /// Number of loss targets.
    pub fn n_loss_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|m| **m).count()
    }
}

/// What encoding did to over-long samples.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TruncationReport {
    /// Indices of samples whose prompt was cut from the left.
    pub prompt_cut: Vec<usize>,
    /// Indices of samples skipped because they could not fit.
    pub skipped: Vec<usize>,
}

impl TruncationReport {
    /// True when no sample was changed or skipped.
    pub fn is_clean(&self) -> bool {
        self.prompt_cut.is_empty() && self.skipped.is_empty()
    }
}

/// The prompt ids a model sees at inference: exactly the prompt part of a training sequence
/// built with the same options (BOS policy included), never truncated.
pub fn encode_prompt(prompt_ids: &[u32], special: SpecialIds, opts: &EncodeOptions) -> Vec<u32> {
    let opts = EncodeOptions {
        max_len: usize::MAX,
        ..opts.clone()
    };
    // With no length limit `encode_ids` always returns a sequence.
    encode_ids(0, prompt_ids, &[], LossOn::Completion, special, &opts).map_or_else(
        || prompt_ids.to_vec(),
        |enc| enc.input_ids[..enc.prompt_len].to_vec(),
    )
}

/// Joins already tokenized prompt and completion into one training sequence.
///
/// Returns `None` when the sample cannot fit under the options (it must then be skipped).
pub fn encode_ids(
    index: usize,
    prompt_ids: &[u32],
    completion_ids: &[u32],
    loss_on: LossOn,
    special: SpecialIds,
    opts: &EncodeOptions,
) -> Option<EncodedSample> {
    let bos = match opts.bos {
        BosPolicy::Never => None,
        BosPolicy::Always => special.bos,
        BosPolicy::Tokenizer => special.bos.filter(|_| special.tokenizer_adds_bos),
    };
    // A prompt that already starts with BOS (rendered with the token in its text) keeps it once.
    let prompt_ids = match (bos, prompt_ids.first()) {
        (Some(b), Some(&first)) if first == b => &prompt_ids[1..],
        _ => prompt_ids,
    };
    let n_bos = usize::from(bos.is_some());
    let fixed = n_bos + completion_ids.len() + 1;
    let mut cut = 0;
    if fixed + prompt_ids.len() > opts.max_len {
        if opts.truncation == TruncationPolicy::Skip {
            return None;
        }
        cut = fixed + prompt_ids.len() - opts.max_len;
        // Keep at least one context token so the first completion token is predicted.
        if cut > prompt_ids.len() || n_bos + prompt_ids.len() - cut == 0 {
            return None;
        }
    }
    let prompt_kept = &prompt_ids[cut..];
    let prompt_len = n_bos + prompt_kept.len();
    let mut input_ids = Vec::with_capacity(prompt_len + completion_ids.len() + 1);
    input_ids.extend(bos);
    input_ids.extend_from_slice(prompt_kept);
    input_ids.extend_from_slice(completion_ids);
    input_ids.push(special.eos);
    let loss_mask: Vec<bool> = (0..input_ids.len())
        .map(|i| {
            if i == 0 {
                return false;
            }
            match loss_on {
                LossOn::PromptAndCompletion => true,
                LossOn::Completion => {
                    i >= prompt_len || (opts.study_exact_mask && i + 1 == prompt_len)
                }
            }
        })
        .collect();
    Some(EncodedSample {
        index,
        input_ids,
        loss_mask,
        prompt_len,
        prompt_tokens_cut: cut,
    })
}

/// Encodes many samples already tokenized, collecting the truncation report.
pub fn encode_all<'a>(
    samples: impl IntoIterator<Item = (&'a [u32], &'a [u32], LossOn)>,
    special: SpecialIds,
    opts: &EncodeOptions,
) -> (Vec<EncodedSample>, TruncationReport) {
    let mut out = Vec::new();
    let mut report = TruncationReport::default();
    for (i, (p, c, loss_on)) in samples.into_iter().enumerate() {
        match encode_ids(i, p, c, loss_on, special, opts) {
            Some(s) => {
                if s.prompt_tokens_cut > 0 {
                    report.prompt_cut.push(i);
                }
                out.push(s);
            }
            None => report.skipped.push(i),
        }
    }
    (out, report)
}

impl SpecialIds {
    /// The special ids of `tokenizer`; whether it adds BOS is observed from its own
    /// `add_special_tokens` encoding, not assumed.
    pub fn of(tokenizer: &Tokenizer) -> Result<Self> {
        let eos = tokenizer.eos_id().ok_or_else(|| {
            EngineError::invalid("the tokenizer has no EOS token to end completions")
        })?;
        let bos = tokenizer.bos_id();
        let with = tokenizer.encode("a", true)?;
        let without = tokenizer.encode("a", false)?;
        let tokenizer_adds_bos =
            bos.is_some() && with.first() == bos.as_ref() && without.first() != bos.as_ref();
        Ok(Self {
            bos,
            eos,
            tokenizer_adds_bos,
        })
    }
}

/// Tokenizes prompt and completion texts separately (no special tokens) and encodes them.
pub fn encode_texts<'a>(
    tokenizer: &Tokenizer,
    samples: impl IntoIterator<Item = (&'a str, &'a str, LossOn)>,
    opts: &EncodeOptions,
) -> Result<(Vec<EncodedSample>, TruncationReport)> {
    let special = SpecialIds::of(tokenizer)?;
    let mut tokenized = Vec::new();
    for (prompt, completion, loss_on) in samples {
        tokenized.push((
            tokenizer.encode(prompt, false)?,
            tokenizer.encode(completion, false)?,
            loss_on,
        ));
    }
    Ok(encode_all(
        tokenized
            .iter()
            .map(|(p, c, l)| (p.as_slice(), c.as_slice(), *l)),
        special,
        opts,
    ))
}

/// Groups sample indices into batches of similar length.
///
/// Indices are shuffled with `seed`, cut into windows of `window` batches, sorted by length
/// inside each window and chunked; the batch order is then shuffled again. With `shuffle` false
/// the order is kept and batches are consecutive runs of samples.
pub fn length_bucketed_batches(
    lengths: &[usize],
    batch_size: usize,
    window: usize,
    shuffle: bool,
    seed: u64,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    if !shuffle {
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    let span = batch_size * window.max(1);
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(span) {
        // Stable sort: ties keep their shuffled order.
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// A right-padded training batch on a device.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// `[b, t]` u32 token ids, right padded.
    pub input_ids: Tensor,
    /// `[b, t]` u32, 1 on real tokens and 0 on padding.
    pub attention_mask: Tensor,
    /// Flat indices into `b * t` of the positions whose *next* token is a loss target.
    pub loss_positions: Tensor,
    /// The loss targets, one per entry of `loss_positions`.
    pub targets: Tensor,
    /// Number of loss targets.
    pub n_loss_tokens: usize,
    /// Number of real (non-padding) tokens.
    pub n_tokens: usize,
    /// Leading tokens that every row shares (an instruction placed first), which the
    /// hand-written training pass runs once for the whole batch; 0 runs every row in full
    /// (see [`crate::prefix::shared_prefix_len`]).
    pub shared_prefix: usize,
}

impl TrainBatch {
    /// Token positions the training pass runs: every row padded to the longest, with a shared
    /// prefix run once for the batch.
    pub fn n_positions(&self) -> usize {
        let (b, t) = self.input_ids.dims2().unwrap_or((0, 0));
        let p = self.shared_prefix.min(t);
        if p > 0 { p + b * (t - p) } else { b * t }
    }

    /// The same batch with every row run in full.
    pub fn without_prefix_sharing(mut self) -> Self {
        self.shared_prefix = 0;
        self
    }
}

/// Right-pads samples into one batch, lists the loss positions and measures the prefix that
/// every row shares.
pub fn collate(samples: &[&EncodedSample], pad_id: u32, device: &Device) -> Result<TrainBatch> {
    let b = samples.len();
    if b == 0 {
        return Err(EngineError::invalid("cannot collate an empty batch"));
    }
    let t = samples.iter().map(|s| s.input_ids.len()).max().unwrap_or(0);
    let mut ids = vec![pad_id; b * t];
    let mut mask = vec![0u32; b * t];
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let mut n_tokens = 0;
    for (row, s) in samples.iter().enumerate() {
        let base = row * t;
        for (i, &tok) in s.input_ids.iter().enumerate() {
            ids[base + i] = tok;
            mask[base + i] = 1;
            if s.loss_mask[i] {
                positions.push((base + i - 1) as u32);
                targets.push(tok);
            }
        }
        n_tokens += s.input_ids.len();
    }
    let n_loss_tokens = targets.len();
    let rows: Vec<&[u32]> = samples.iter().map(|s| s.input_ids.as_slice()).collect();
    Ok(TrainBatch {
        input_ids: Tensor::from_vec(ids, (b, t), device)?,
        attention_mask: Tensor::from_vec(mask, (b, t), device)?,
        loss_positions: Tensor::from_vec(positions, n_loss_tokens, device)?,
        targets: Tensor::from_vec(targets, n_loss_tokens, device)?,
        n_loss_tokens,
        n_tokens,
        shared_prefix: shared_prefix_len(&rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: SpecialIds = SpecialIds {
        bos: Some(1),
        eos: 2,
        tokenizer_adds_bos: false,
    };

    fn opts(max_len: usize) -> EncodeOptions {
        EncodeOptions {
            max_len,
            ..EncodeOptions::default()
        }
    }

    #[test]
    fn inference_prompt_is_the_training_prefix_and_never_truncated() {
        let always = EncodeOptions {
            bos: BosPolicy::Always,
            ..opts(64)
        };
        let train = encode_ids(0, &[10, 11], &[20], LossOn::Completion, SP, &always).unwrap();
        let prompt = encode_prompt(&[10, 11], SP, &always);
        assert_eq!(prompt, train.input_ids[..train.prompt_len]);
        assert_eq!(prompt, vec![1, 10, 11]);
        // Longer than max_len: inference keeps the whole prompt.
        let long: Vec<u32> = (10..20).collect();
        assert_eq!(encode_prompt(&long, SP, &opts(4)), long);
        assert_eq!(encode_prompt(&[], SP, &always), vec![1]);
    }

    #[test]
    fn no_mi_mask_covers_completion_and_eos_only() {
        let s = encode_ids(
            0,
            &[10, 11, 12],
            &[20, 21],
            LossOn::Completion,
            SP,
            &opts(64),
        )
        .unwrap();
        assert_eq!(s.input_ids, vec![10, 11, 12, 20, 21, 2]);
        assert_eq!(s.loss_mask, vec![false, false, false, true, true, true]);
        assert_eq!(s.prompt_len, 3);
    }

    #[test]
    fn study_exact_mask_adds_last_prompt_token() {
        let o = EncodeOptions {
            study_exact_mask: true,
            ..opts(64)
        };
        let s = encode_ids(0, &[10, 11, 12], &[20], LossOn::Completion, SP, &o).unwrap();
        assert_eq!(s.loss_mask, vec![false, false, true, true, true]);
    }

    #[test]
    fn mi_mask_covers_every_token_but_the_first() {
        let o = EncodeOptions {
            bos: BosPolicy::Always,
            ..opts(64)
        };
        let s = encode_ids(0, &[10, 11], &[20], LossOn::PromptAndCompletion, SP, &o).unwrap();
        assert_eq!(s.input_ids, vec![1, 10, 11, 20, 2]);
        assert_eq!(s.loss_mask, vec![false, true, true, true, true]);
    }

    #[test]
    fn bos_follows_policy_and_is_never_doubled() {
        let adds = SpecialIds {
            tokenizer_adds_bos: true,
            ..SP
        };
        let s = encode_ids(0, &[1, 10], &[20], LossOn::Completion, adds, &opts(64)).unwrap();
        assert_eq!(s.input_ids, vec![1, 10, 20, 2]);
        let s = encode_ids(0, &[10], &[20], LossOn::Completion, adds, &opts(64)).unwrap();
        assert_eq!(s.input_ids, vec![1, 10, 20, 2]);
        let s = encode_ids(0, &[10], &[20], LossOn::Completion, SP, &opts(64)).unwrap();
        assert_eq!(s.input_ids, vec![10, 20, 2]);
    }

    #[test]
    fn truncation_cuts_prompt_from_left_and_never_the_completion() {
        let o = EncodeOptions {
            bos: BosPolicy::Always,
            ..opts(5)
        };
        let s = encode_ids(3, &[10, 11, 12, 13], &[20, 21], LossOn::Completion, SP, &o).unwrap();
        assert_eq!(s.input_ids, vec![1, 13, 20, 21, 2]);
        assert_eq!(s.prompt_tokens_cut, 3);
        assert_eq!(s.loss_mask, vec![false, false, true, true, true]);
        // The completion and EOS alone do not fit with any context: skipped.
        assert!(encode_ids(0, &[10], &[20, 21, 22, 23, 24], LossOn::Completion, SP, &o).is_none());
        let skip = EncodeOptions {
            truncation: TruncationPolicy::Skip,
            ..o
        };
        assert!(
            encode_ids(
                0,
                &[10, 11, 12, 13],
                &[20, 21],
                LossOn::Completion,
                SP,
                &skip
            )
            .is_none()
        );
    }

    #[test]
    fn encode_all_reports_cuts_and_skips() {
        let p: Vec<Vec<u32>> = vec![vec![10], vec![10, 11, 12, 13, 14], vec![10]];
        let c: Vec<Vec<u32>> = vec![vec![20], vec![20], vec![20, 21, 22, 23, 24, 25]];
        let (enc, rep) = encode_all(
            p.iter()
                .zip(&c)
                .map(|(p, c)| (p.as_slice(), c.as_slice(), LossOn::Completion)),
            SP,
            &opts(5),
        );
        assert_eq!(enc.len(), 2);
        assert_eq!(rep.prompt_cut, vec![1]);
        assert_eq!(rep.skipped, vec![2]);
    }

    #[test]
    fn buckets_are_deterministic_complete_and_sorted_within_windows() {
        let lengths: Vec<usize> = (0..37).map(|i| (i * 7919) % 101).collect();
        let a = length_bucketed_batches(&lengths, 4, 3, true, 42);
        assert_eq!(a, length_bucketed_batches(&lengths, 4, 3, true, 42));
        assert_ne!(a, length_bucketed_batches(&lengths, 4, 3, true, 43));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..37).collect::<Vec<_>>());
        for b in &a {
            assert!(b.windows(2).all(|w| lengths[w[0]] <= lengths[w[1]]));
        }
        let plain = length_bucketed_batches(&lengths, 4, 3, false, 0);
        assert_eq!(plain[0], vec![0, 1, 2, 3]);
    }

    #[test]
    fn collate_right_pads_and_lists_positions_before_targets() {
        let a = encode_ids(0, &[10, 11], &[20], LossOn::Completion, SP, &opts(64)).unwrap();
        let b = encode_ids(1, &[10], &[20, 21], LossOn::Completion, SP, &opts(64)).unwrap();
        let batch = collate(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(
            batch.input_ids.to_vec2::<u32>().unwrap(),
            vec![vec![10, 11, 20, 2], vec![10, 20, 21, 2]]
        );
        // Row 0: targets at 2, 3 -> positions 1, 2. Row 1: targets at 1, 2, 3 -> positions 4, 5, 6.
        assert_eq!(
            batch.loss_positions.to_vec1::<u32>().unwrap(),
            vec![1, 2, 4, 5, 6]
        );
        assert_eq!(
            batch.targets.to_vec1::<u32>().unwrap(),
            vec![20, 2, 20, 21, 2]
        );
        let c = encode_ids(2, &[10], &[20], LossOn::Completion, SP, &opts(64)).unwrap();
        let batch = collate(&[&a, &c], 0, &Device::Cpu).unwrap();
        assert_eq!(
            batch.attention_mask.to_vec2::<u32>().unwrap()[1],
            vec![1, 1, 1, 0]
        );
        assert_eq!(batch.n_loss_tokens, 4);
        assert_eq!(batch.n_tokens, 7);
    }

    #[test]
    fn positions_count_padding_and_a_shared_prefix_once() {
        let prompt: Vec<u32> = (10..20).collect();
        let long =
            encode_ids(0, &prompt, &[30, 31, 32], LossOn::Completion, SP, &opts(64)).unwrap();
        let short = encode_ids(1, &prompt, &[40], LossOn::Completion, SP, &opts(64)).unwrap();
        // 10 prompt tokens + completion + EOS (no BOS with this tokenizer): 14 and 12 tokens,
        // the prompt shared.
        let batch = collate(&[&long, &short], 0, &Device::Cpu).unwrap();
        assert_eq!((batch.n_tokens, batch.shared_prefix), (26, 10));
        assert_eq!(batch.n_positions(), 10 + 2 * (14 - 10));
        assert_eq!(batch.without_prefix_sharing().n_positions(), 2 * 14);
    }
}
