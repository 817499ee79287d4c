//! Teacher-forced log-likelihoods and the study's perplexities (prompt PPL, output PPL).

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::model::{CacheReads, Llama};
use crate::prefix::{run_shared_prefix, shared_prefix_len};
use crate::tokenizer::Tokenizer;

/// Log-likelihood of one completion (or one scored span).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// `log p(token | everything before it)` for each scored token, natural log.
    pub token_logprobs: Vec<f32>,
    /// Sum of `token_logprobs`.
    pub sum: f64,
    /// Number of scored tokens.
    pub count: usize,
}

impl Scored {
    /// Mean negative log-likelihood per token (NaN when nothing was scored).
    pub fn mean_nll(&self) -> f64 {
        -self.sum / self.count as f64
    }

    /// `exp(mean NLL)`.
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }
}

/// Perplexities of a set of texts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// Perplexity of each item.
    pub per_item: Vec<f64>,
    /// Mean of the per-item perplexities.
    pub mean_of_perplexities: f64,
    /// `exp` of the token-weighted mean NLL over all items.
    pub perplexity_of_pooled_nll: f64,
}

impl PerplexityReport {
    fn new(items: &[Scored]) -> Self {
        let per_item: Vec<f64> = items.iter().map(Scored::perplexity).collect();
        let mean = per_item.iter().sum::<f64>() / per_item.len().max(1) as f64;
        let (s, n) = items
            .iter()
            .fold((0.0, 0usize), |(s, n), x| (s + x.sum, n + x.count));
        Self {
            per_item,
            mean_of_perplexities: mean,
            perplexity_of_pooled_nll: (-s / n as f64).exp(),
        }
    }
}

/// How teacher-forced scoring batches its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Sequences run together.
    pub batch_size: usize,
    /// Run a token prefix that every sequence of a batch shares once per batch (see
    /// [`crate::prefix`]); results agree with unshared runs to float rounding.
    pub share_prefix: bool,
}

impl ScoreOptions {
    /// Batches of `batch_size`, shared prefixes run once.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            share_prefix: true,
        }
    }
}

/// Log-likelihoods of `seq[start..]` given `seq[..start]` for each `(seq, start)`, batched
/// (right padding; a prefix every sequence of a batch shares runs once). `start` must be at
/// least 1.
pub fn sequence_logprobs(
    model: &Llama,
    items: &[(Vec<u32>, usize)],
    batch_size: usize,
) -> Result<Vec<Scored>> {
    sequence_logprobs_with(model, items, ScoreOptions::new(batch_size))
}

/// [`sequence_logprobs`] with explicit [`ScoreOptions`].
pub fn sequence_logprobs_with(
    model: &Llama,
    items: &[(Vec<u32>, usize)],
    options: ScoreOptions,
) -> Result<Vec<Scored>> {
    if items
        .iter()
        .any(|(seq, start)| *start == 0 && !seq.is_empty())
    {
        return Err(EngineError::invalid(
            "the first token has no context to be scored from",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(options.batch_size.max(1)) {
        out.extend(crate::kernels::in_pool_awake(|| {
            score_chunk(model, chunk, options.share_prefix)
        })?);
    }
    Ok(out)
}

/// One right-padded batch. With a shared prefix of `p` tokens, the prefix runs once and the
/// hidden states to score from are drawn from `[prefix (p rows); suffixes (b × t rows)]`.
fn score_chunk(model: &Llama, chunk: &[(Vec<u32>, usize)], share: bool) -> Result<Vec<Scored>> {
    let empty = || Scored {
        token_logprobs: vec![],
        sum: 0.0,
        count: 0,
    };
    let longest = chunk.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    if longest == 0 {
        return Ok(chunk.iter().map(|_| empty()).collect());
    }
    let p = if share {
        shared_prefix_len(&chunk.iter().map(|(s, _)| s.as_slice()).collect::<Vec<_>>())
    } else {
        0
    };
    let b = chunk.len();
    let t = longest - p;
    let hidden_size = model.config().hidden_size;
    let mut ids = vec![0u32; b * t];
    let mut mask = vec![0u32; b * t];
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, (seq, start)) in chunk.iter().enumerate() {
        let own = &seq[p.min(seq.len())..];
        ids[r * t..r * t + own.len()].copy_from_slice(own);
        mask[r * t..r * t + own.len()]
            .iter_mut()
            .for_each(|m| *m = 1);
        for (pos, tok) in seq.iter().enumerate().skip(*start) {
            let from = pos - 1;
            let row = if from < p { from } else { p + r * t + from - p };
            rows.push(row as u32);
            targets.push(*tok);
        }
    }
    let dev = model.device();
    let ids = Tensor::from_vec(ids, (b, t), dev)?;
    let mask = Tensor::from_vec(mask, (b, t), dev)?;
    let hidden = if p > 0 {
        let (hp, mut cache) =
            run_shared_prefix(model, &chunk[0].0[..p], b, p + t, CacheReads::Inference)?;
        let hs = model.forward_hidden(&ids, Some(&mask), Some(&mut cache), false)?;
        Tensor::cat(
            &[
                hp.reshape((p, hidden_size))?,
                hs.reshape((b * t, hidden_size))?,
            ],
            0,
        )?
    } else {
        // Only the positions from the first one scored reach the output head.
        let from = chunk
            .iter()
            .filter(|(seq, start)| *start < seq.len())
            .map(|(_, start)| start - 1)
            .min()
            .unwrap_or(0);
        let w = t - from;
        for row in &mut rows {
            let (r, i) = (*row as usize / t, *row as usize % t);
            *row = (r * w + i - from) as u32;
        }
        model
            .forward_hidden_from(&ids, Some(&mask), None, false, from)?
            .reshape((b * w, hidden_size))?
    };
    let mut lps: Vec<f32> = Vec::new();
    if !rows.is_empty() {
        let n = rows.len();
        let sel = hidden.index_select(&Tensor::from_vec(rows, n, dev)?, 0)?;
        let logp = crate::kernels::log_softmax_last_dim(&model.logits(&sel)?)?;
        let tg = Tensor::from_vec(targets, (n, 1), dev)?;
        lps = logp
            .gather(&tg, 1)?
            .squeeze(1)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
    }
    let mut it = lps.into_iter();
    Ok(chunk
        .iter()
        .map(|(seq, start)| {
            let k = seq.len().saturating_sub(*start);
            let token_logprobs: Vec<f32> = it.by_ref().take(k).collect();
            let sum = token_logprobs.iter().map(|x| *x as f64).sum();
            Scored {
                token_logprobs,
                sum,
                count: k,
            }
        })
        .collect())
}

/// Log-likelihood of each completion given its prompt. Prompt and completion are tokenized
/// separately (no special tokens) and concatenated, as in training samples; an empty prompt
/// is replaced by BOS (or the first completion token is not scored when there is no BOS).
pub fn score<P: AsRef<str>, C: AsRef<str>>(
    model: &Llama,
    tokenizer: &Tokenizer,
    pairs: &[(P, C)],
    batch_size: usize,
) -> Result<Vec<Scored>> {
    let mut items = Vec::with_capacity(pairs.len());
    for (p, c) in pairs {
        let mut seq = tokenizer.encode(p.as_ref(), false)?;
        if seq.is_empty() {
            seq.extend(tokenizer.bos_id());
        }
        let start = seq.len().max(1);
        seq.extend(tokenizer.encode(c.as_ref(), false)?);
        items.push((seq, start));
    }
    sequence_logprobs(model, &items, batch_size)
}

/// The study's prompt perplexity (digest §11): each prompt tokenized with special tokens,
/// mean NLL over positions 1..T−1 (the first token is not predicted), PPL = e^NLL.
pub fn prompt_perplexity<P: AsRef<str>>(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[P],
    batch_size: usize,
) -> Result<PerplexityReport> {
    let items = prompts
        .iter()
        .map(|p| Ok((tokenizer.encode(p.as_ref(), true)?, 1)))
        .collect::<Result<Vec<_>>>()?;
    Ok(PerplexityReport::new(&sequence_logprobs(
        model, &items, batch_size,
    )?))
}

/// Output perplexity: the perplexity of each target output conditioned on its prompt (pass
/// empty prompts for the unconditioned variant).
pub fn output_perplexity<P: AsRef<str>, C: AsRef<str>>(
    model: &Llama,
    tokenizer: &Tokenizer,
    pairs: &[(P, C)],
    batch_size: usize,
) -> Result<PerplexityReport> {
    Ok(PerplexityReport::new(&score(
        model, tokenizer, pairs, batch_size,
    )?))
}
