//! Batched generation: left-padded prompts (a prefix that every row shares runs once), a KV
//! cache, greedy decoding with HF's repetition penalty or seeded sampling (temperature, top-k,
//! top-p), stop on EOS or a token budget.
//!
//! Each row has its own sampling generator seeded from the run seed and the row's index in the
//! input, so the output of a prompt does not depend on the batch it lands in.

use candle_core::{IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{EngineError, Result};
use crate::model::CacheReads;
use crate::prefix::{run_shared_prefix, shared_prefix_len};
use crate::{KvCache, Llama};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Decoding {
    /// The most likely token (after the repetition penalty).
    Greedy,
    /// Sampling from the warped distribution.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Nucleus mass; 1 keeps every token.
        top_p: f64,
        /// Keep only the `top_k` most likely tokens; `None` keeps all.
        top_k: Option<usize>,
        /// Seed of the per-row generators.
        seed: u64,
    },
}

/// Generation settings. The defaults are the study's (digest §6).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerateConfig {
    /// New-token budget per prompt.
    pub max_new_tokens: usize,
    /// HF repetition penalty over prompt and generated tokens (1 disables it).
    pub repetition_penalty: f64,
    /// Greedy or sampling.
    pub decoding: Decoding,
    /// Prompts decoded together.
    pub batch_size: usize,
    /// Sort prompts by length before batching (less padding; output order is unchanged).
    pub sort_by_length: bool,
    /// Run a token prefix that every prompt of a batch shares (an instruction placed first,
    /// in-context demonstrations) once per batch instead of once per row.
    #[serde(default = "share_prefix_default")]
    pub share_prefix: bool,
    /// Speculative greedy decoding: each round, the model's quantized copies
    /// ([`Llama::set_q8_decode`]) draft tokens one step at a time, and one f32 pass over all
    /// of them keeps the longest run that f32 greedy decoding chooses too, plus its next
    /// token. The tokens are f32 greedy decoding's (prompts and verification read the f32
    /// weights only); a round costs a few f32 steps' time, which at small batch waits on
    /// reading the weights, plus the cheap quantized steps. This is the first round's number
    /// of drafts; then, as transformers' assisted generation schedules them, two more after a
    /// round where every row kept all of its drafts and one fewer (at least one) after any
    /// other. 0 (the default) decodes one f32 or quantized step at a time as the model is
    /// set. Needs greedy decoding and quantized copies.
    #[serde(default)]
    pub draft_tokens: usize,
}

fn share_prefix_default() -> bool {
    true
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 200,
            repetition_penalty: 1.1,
            decoding: Decoding::Greedy,
            batch_size: 8,
            sort_by_length: true,
            share_prefix: true,
            draft_tokens: 0,
        }
    }
}

/// Why generation of one prompt stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_new_tokens` was reached.
    Length,
}

/// The generated continuation of one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// New tokens, without the stop token.
    pub tokens: Vec<u32>,
    /// The stop token, when the row stopped on one.
    pub stop_token: Option<u32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
}

impl Generation {
    /// New tokens counted as the model produced them (the stop token included).
    pub fn new_tokens(&self) -> usize {
        self.tokens.len() + usize::from(self.stop_token.is_some())
    }
}

/// Applies HF's repetition penalty in place: the logit of every token in `seen` is divided by
/// `penalty` when positive and multiplied by it when negative. Each token is penalised once.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[bool], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let p = penalty as f32;
    for (l, &s) in logits.iter_mut().zip(seen) {
        if s {
            *l = if *l < 0.0 { *l * p } else { *l / p };
        }
    }
}

/// Index of the largest logit; the first one on ties (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Samples a token after HF's warpers, in HF's order: temperature, top-k, top-p.
pub fn sample(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: f64,
    rng: &mut ChaCha8Rng,
) -> u32 {
    let t = temperature.max(1e-6);
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / t).collect();
    // Ascending order, as HF's top-p warper sorts.
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| scaled[a].total_cmp(&scaled[b]).then(b.cmp(&a)));
    let mut keep = vec![true; scaled.len()];
    if let Some(k) = top_k {
        let k = k.clamp(1, scaled.len());
        for &i in &order[..scaled.len() - k] {
            keep[i] = false;
        }
    }
    let softmax = |keep: &[bool]| -> Vec<f64> {
        let max = scaled
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| *s)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scaled
            .iter()
            .zip(keep)
            .map(|(s, k)| if *k { (s - max).exp() } else { 0.0 })
            .collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect()
    };
    if top_p < 1.0 {
        let probs = softmax(&keep);
        let mut cum = 0.0;
        let last = order.len() - 1;
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if cum <= 1.0 - top_p && rank != last {
                keep[i] = false;
            }
        }
    }
    let probs = softmax(&keep);
    let u: f64 = rng.random();
    let mut cum = 0.0;
    let mut fallback = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > 0.0 {
            fallback = i;
            cum += p;
            if u < cum {
                return i as u32;
            }
        }
    }
    fallback as u32
}

/// The generator of row `index` under `seed`.
pub fn row_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// How many draft tokens speculative decoding proposed and how many f32 verification kept
/// ([`GenerateConfig::draft_tokens`]); zero without drafts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DraftCounts {
    /// Draft tokens run through the f32 verification.
    pub proposed: usize,
    /// Those that f32 greedy decoding chose too.
    pub kept: usize,
}

impl DraftCounts {
    /// The share of proposed drafts kept (1 when none were proposed).
    pub fn kept_share(&self) -> f64 {
        if self.proposed == 0 {
            1.0
        } else {
            self.kept as f64 / self.proposed as f64
        }
    }
}

/// Generates a continuation for every prompt, `config.batch_size` prompts at a time.
///
/// `prompts` are token ids (special tokens included as the caller wants them); `stop_ids` end a
/// row. `on_done` is told how many prompts finished after each batch. Results are in input
/// order. The model is used as it is: merge LoRA first ([`Llama::merge_lora`]) for speed.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    stop_ids: &[u32],
    config: &GenerateConfig,
    on_done: impl FnMut(usize),
) -> Result<Vec<Generation>> {
    Ok(generate_counting_drafts(model, prompts, stop_ids, config, on_done)?.0)
}

/// [`generate`], also counting speculative decoding's drafts.
pub fn generate_counting_drafts(
    model: &Llama,
    prompts: &[Vec<u32>],
    stop_ids: &[u32],
    config: &GenerateConfig,
    mut on_done: impl FnMut(usize),
) -> Result<(Vec<Generation>, DraftCounts)> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(EngineError::invalid(format!("prompt {i} has no tokens")));
    }
    if config.draft_tokens > 0 {
        if config.decoding != Decoding::Greedy {
            return Err(EngineError::invalid(
                "draft_tokens needs greedy decoding (sampling keeps no draft)",
            ));
        }
        if model.quantized_layer_formats().is_empty() {
            return Err(EngineError::invalid(
                "draft_tokens needs the model's quantized copies to draft with (Llama::set_q8_decode)",
            ));
        }
    }
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    if config.sort_by_length {
        order.sort_by_key(|&i| std::cmp::Reverse(prompts[i].len()));
    }
    let mut out: Vec<Option<Generation>> = vec![None; prompts.len()];
    let mut drafts = DraftCounts::default();
    for chunk in order.chunks(config.batch_size.max(1)) {
        let rows: Vec<(usize, &[u32])> =
            chunk.iter().map(|&i| (i, prompts[i].as_slice())).collect();
        let batch = crate::kernels::in_pool_awake(|| {
            generate_batch(model, &rows, stop_ids, config, &mut drafts)
        })?;
        for (&i, g) in chunk.iter().zip(batch) {
            out[i] = Some(g);
        }
        on_done(chunk.len());
    }
    Ok((out.into_iter().flatten().collect(), drafts))
}

/// One left-padded batch; `rows` pairs each prompt with its index in the whole input (which
/// seeds its sampling generator).
fn generate_batch(
    model: &Llama,
    rows: &[(usize, &[u32])],
    stop_ids: &[u32],
    config: &GenerateConfig,
    drafts: &mut DraftCounts,
) -> Result<Vec<Generation>> {
    let b = rows.len();
    let vocab = model.config().vocab_size;
    let shared = if config.share_prefix {
        shared_prefix_len(&rows.iter().map(|(_, p)| *p).collect::<Vec<_>>())
    } else {
        0
    };
    let t = rows
        .iter()
        .map(|(_, p)| p.len() - shared)
        .max()
        .unwrap_or(0);
    let pad = stop_ids.first().copied().unwrap_or(0);
    let mut ids = vec![pad; b * t];
    let mut mask = vec![0u32; b * t];
    let mut seen = vec![vec![false; vocab]; b];
    for (r, (_, p)) in rows.iter().enumerate() {
        for &tok in *p {
            if (tok as usize) >= vocab {
                return Err(EngineError::invalid(format!(
                    "prompt token {tok} is outside the vocabulary ({vocab})"
                )));
            }
            seen[r][tok as usize] = true;
        }
        let own = &p[shared..];
        let off = r * t + t - own.len();
        ids[off..off + own.len()].copy_from_slice(own);
        mask[off..off + own.len()].iter_mut().for_each(|m| *m = 1);
    }
    let device = model.device();
    let speculative = config.draft_tokens > 0;
    // Speculative decoding keeps f32 greedy decoding's tokens: its prompts run in f32.
    let reads = if speculative {
        CacheReads::Full
    } else {
        CacheReads::Generation
    };
    let capacity = shared + t + config.max_new_tokens.max(1) + config.draft_tokens;
    let mut cache = if shared > 0 {
        run_shared_prefix(model, &rows[0].1[..shared], b, capacity, reads)?.1
    } else {
        KvCache::new(model, b, capacity)?.reading(reads)
    };
    let ids = Tensor::from_vec(ids, (b, t), device)?;
    let mask = Tensor::from_vec(mask, (b, t), device)?;
    // Only the last position's hidden state reaches the output head.
    let hidden = model.forward_hidden_from(&ids, Some(&mask), Some(&mut cache), false, t - 1)?;
    let hidden = hidden.i((.., 0, ..))?.contiguous()?;
    let mut gens: Vec<Generation> = rows
        .iter()
        .map(|(_, p)| Generation {
            tokens: Vec::new(),
            stop_token: None,
            finish_reason: FinishReason::Length,
            prompt_tokens: p.len(),
        })
        .collect();
    if speculative {
        if config.max_new_tokens > 0 {
            let lists: Vec<&[bool]> = seen.iter().map(Vec::as_slice).collect();
            let first = greedy_rows(model, &hidden, &lists, config.repetition_penalty, true)?;
            let mut rows = Rows {
                seen,
                gens,
                stop_ids,
                max_new_tokens: config.max_new_tokens,
            };
            decode_speculative(model, &mut cache, first, &mut rows, config, drafts)?;
            gens = rows.gens;
        }
        return Ok(gens);
    }
    let mut slots: Vec<usize> = (0..b).collect();
    let mut head = StepHead::new(model, &hidden, &slots, &seen, config)?;
    let mut rngs: Vec<ChaCha8Rng> = rows
        .iter()
        .map(|(i, _)| match config.decoding {
            Decoding::Sample { seed, .. } => row_rng(seed, *i),
            Decoding::Greedy => row_rng(0, *i),
        })
        .collect();
    let mut active = vec![config.max_new_tokens > 0; b];
    // Cache row i holds prompt row slots[i]; finished rows leave the cache so that the
    // remaining steps compute only unfinished ones.
    for step in 0..config.max_new_tokens {
        let rows_logits = match &head {
            StepHead::Logits(l) => l.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?,
            StepHead::Chosen(_) => Vec::new(),
        };
        let mut next = vec![pad; slots.len()];
        for (i, &r) in slots.iter().enumerate() {
            let tok = if let StepHead::Chosen(tokens) = &head {
                tokens[i]
            } else {
                let mut l = rows_logits[i].clone();
                apply_repetition_penalty(&mut l, &seen[r], config.repetition_penalty);
                match config.decoding {
                    Decoding::Greedy => argmax(&l),
                    Decoding::Sample {
                        temperature,
                        top_p,
                        top_k,
                        ..
                    } => sample(&l, temperature, top_k, top_p, &mut rngs[r]),
                }
            };
            next[i] = tok;
            seen[r][tok as usize] = true;
            if stop_ids.contains(&tok) {
                gens[r].stop_token = Some(tok);
                gens[r].finish_reason = FinishReason::Eos;
                active[r] = false;
            } else {
                gens[r].tokens.push(tok);
            }
        }
        if step + 1 == config.max_new_tokens || !active.iter().any(|a| *a) {
            break;
        }
        let keep: Vec<usize> = (0..slots.len()).filter(|&i| active[slots[i]]).collect();
        if keep.len() < slots.len() {
            cache.retain_rows(&keep)?;
            next = keep.iter().map(|&i| next[i]).collect();
            slots = keep.iter().map(|&i| slots[i]).collect();
        }
        let n = slots.len();
        let next = Tensor::from_vec(next, (n, 1), device)?;
        let ones = Tensor::ones((n, 1), candle_core::DType::U32, device)?;
        let hidden = model.forward_hidden(&next, Some(&ones), Some(&mut cache), false)?;
        head = StepHead::new(
            model,
            &hidden.i((.., 0, ..))?.contiguous()?,
            &slots,
            &seen,
            config,
        )?;
    }
    Ok(gens)
}

/// What a step's output head gives: logits, or for greedy decoding through the screened
/// head ([`Llama::screened_greedy`]) the chosen tokens themselves.
enum StepHead {
    Logits(Tensor),
    Chosen(Vec<u32>),
}

impl StepHead {
    /// The head over `hidden` (`[rows, hidden]`), row `i` being prompt row `slots[i]`.
    fn new(
        model: &Llama,
        hidden: &Tensor,
        slots: &[usize],
        seen: &[Vec<bool>],
        config: &GenerateConfig,
    ) -> Result<Self> {
        if config.decoding == Decoding::Greedy {
            let seen: Vec<&[bool]> = slots.iter().map(|&r| seen[r].as_slice()).collect();
            if let Some(tokens) =
                model.screened_greedy(hidden, &seen, config.repetition_penalty, false)?
            {
                return Ok(StepHead::Chosen(tokens));
            }
        }
        Ok(StepHead::Logits(model.logits(hidden)?))
    }
}

/// The greedy token of each row of `hidden` (`[m, hidden]`, final hidden states) after the
/// repetition penalty over its list in `seen`; `full` reads the f32 head whatever quantized
/// copy the model holds.
fn greedy_rows(
    model: &Llama,
    hidden: &Tensor,
    seen: &[&[bool]],
    penalty: f64,
    full: bool,
) -> Result<Vec<u32>> {
    if let Some(tokens) = model.screened_greedy(hidden, seen, penalty, full)? {
        return Ok(tokens);
    }
    let logits = model
        .logits_reading(hidden, !full)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec2::<f32>()?;
    Ok(logits
        .into_iter()
        .zip(seen)
        .map(|(mut l, s)| {
            apply_repetition_penalty(&mut l, s, penalty);
            argmax(&l)
        })
        .collect())
}

/// What speculative decoding tracks per prompt row of a batch.
struct Rows<'a> {
    /// Tokens each row has seen (prompt and output), for the repetition penalty.
    seen: Vec<Vec<bool>>,
    gens: Vec<Generation>,
    stop_ids: &'a [u32],
    max_new_tokens: usize,
}

impl Rows<'_> {
    /// Appends `token` to row `r`; whether the row is finished (a stop token or its budget).
    fn emit(&mut self, r: usize, token: u32) -> bool {
        self.seen[r][token as usize] = true;
        let g = &mut self.gens[r];
        if self.stop_ids.contains(&token) {
            g.stop_token = Some(token);
            g.finish_reason = FinishReason::Eos;
        } else {
            g.tokens.push(token);
        }
        self.finished(r)
    }

    /// Whether row `r` has stopped or spent its budget.
    fn finished(&self, r: usize) -> bool {
        self.gens[r].stop_token.is_some() || self.gens[r].new_tokens() >= self.max_new_tokens
    }
}

/// Speculative greedy decoding after the prompt pass ([`GenerateConfig::draft_tokens`]).
/// `first` holds each row's first new token (from the prompt pass); the cache holds the prompts
/// and reads the f32 weights only.
///
/// A round: the quantized copies run `k` decode steps from each row's next token (`k` as
/// [`GenerateConfig::draft_tokens`] schedules it), drafting `d_1..d_k`; the cache forgets
/// them; one f32 pass over `[next, d_1..d_k]` gives f32 greedy decoding's token after each of
/// them, `g_1..g_{k+1}`. Where `d_1..d_j` equal `g_1..g_j` and `d_{j+1}` does not (or `j = k`),
/// a row keeps `g_1..g_{j+1}`: the f32 keys and values of `next, d_1..d_j` stand, and
/// `g_{j+1}` is its next input. Rows of a batch keep different counts: the cache keeps the
/// longest, and marks the others' extra positions as padding.
fn decode_speculative(
    model: &Llama,
    cache: &mut KvCache,
    first: Vec<u32>,
    rows: &mut Rows<'_>,
    config: &GenerateConfig,
    drafts_counted: &mut DraftCounts,
) -> Result<()> {
    let device = model.device();
    let hidden_size = model.config().hidden_size;
    let penalty = config.repetition_penalty;
    let mut slots: Vec<usize> = (0..first.len()).collect();
    let mut next = first;
    let mut wanted = config.draft_tokens;
    for (r, &tok) in next.iter().enumerate() {
        rows.emit(r, tok);
    }
    loop {
        let keep: Vec<usize> = (0..slots.len())
            .filter(|&i| !rows.finished(slots[i]))
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        if keep.len() < slots.len() {
            cache.retain_rows(&keep)?;
            next = keep.iter().map(|&i| next[i]).collect();
            slots = keep.iter().map(|&i| slots[i]).collect();
        }
        let n = slots.len();
        // Drafts beyond the budget of every row would be thrown away.
        let budget = slots
            .iter()
            .map(|&r| rows.max_new_tokens - rows.gens[r].new_tokens())
            .max()
            .unwrap_or(1);
        let k = wanted.min(budget - 1);
        let start = cache.len();
        if start + k + 1 > cache.capacity() {
            cache.reserve(start + k + 1 + rows.max_new_tokens)?;
        }

        let mut drafts: Vec<Vec<u32>> = vec![Vec::with_capacity(k); n];
        if k > 0 {
            let mut draft_seen: Vec<Vec<bool>> =
                slots.iter().map(|&r| rows.seen[r].clone()).collect();
            cache.set_reads(CacheReads::Inference);
            let mut input = next.clone();
            for _ in 0..k {
                let ids = Tensor::from_vec(input, (n, 1), device)?;
                let hidden = model.forward_hidden(&ids, None, Some(cache), false)?;
                let lists: Vec<&[bool]> = draft_seen.iter().map(Vec::as_slice).collect();
                let hidden = hidden.i((.., 0, ..))?.contiguous()?;
                input = greedy_rows(model, &hidden, &lists, penalty, false)?;
                for (i, &tok) in input.iter().enumerate() {
                    draft_seen[i][tok as usize] = true;
                    drafts[i].push(tok);
                }
            }
            cache.set_reads(CacheReads::Full);
            cache.truncate(start);
        }

        let mut ids = Vec::with_capacity(n * (k + 1));
        let mut lists: Vec<Vec<bool>> = Vec::with_capacity(n * (k + 1));
        for (i, &r) in slots.iter().enumerate() {
            ids.push(next[i]);
            ids.extend_from_slice(&drafts[i]);
            let mut s = rows.seen[r].clone();
            for j in 0..=k {
                if j > 0 {
                    s[drafts[i][j - 1] as usize] = true;
                }
                lists.push(s.clone());
            }
        }
        let ids = Tensor::from_vec(ids, (n, k + 1), device)?;
        let hidden = model
            .forward_hidden(&ids, None, Some(cache), false)?
            .reshape((n * (k + 1), hidden_size))?;
        let lists: Vec<&[bool]> = lists.iter().map(Vec::as_slice).collect();
        let chosen = greedy_rows(model, &hidden, &lists, penalty, true)?;

        // `kept[i]`: the positions of this round whose keys and values stand for row `i`.
        let mut kept = vec![0; n];
        for (i, &r) in slots.iter().enumerate() {
            drafts_counted.proposed += k;
            for j in 0..=k {
                let tok = chosen[i * (k + 1) + j];
                kept[i] = j + 1;
                next[i] = tok;
                let finished = rows.emit(r, tok);
                if j < k && drafts[i][j] == tok {
                    drafts_counted.kept += 1;
                } else {
                    break;
                }
                if finished {
                    break;
                }
            }
        }
        wanted = if kept.iter().all(|&kept| kept == k + 1) {
            wanted + 2
        } else {
            wanted.saturating_sub(1).max(1)
        };
        let longest = kept.iter().copied().max().unwrap_or(0);
        cache.truncate(start + longest);
        for (i, &kept) in kept.iter().enumerate() {
            cache.hide(i, start + kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drafts from other weights (halfway to another model's, quantized) are often wrong:
    /// speculative decoding turns them down, rows of a batch keep different numbers of them
    /// (their extra cache positions hidden), and the tokens are still f32 greedy decoding's.
    #[test]
    fn drafts_from_other_weights_still_give_f32_greedy_tokens() {
        use crate::{LlamaConfig, Q8Scope};
        use candle_core::Device;
        const MIX: f64 = 2.0;
        let cfg = LlamaConfig::tiny(96, 64, 2, 4, 2);
        let mut model = Llama::random(cfg.clone(), 9, &Device::Cpu).unwrap();
        let other: std::collections::HashMap<String, Tensor> =
            Llama::random(cfg.clone(), 10, &Device::Cpu)
                .unwrap()
                .named_tensors()
                .into_iter()
                .collect();
        // Past another model's weights, as far again as those are from this one's: a tiny
        // random model's layers steer its tokens little, so nearer weights draft them all.
        let mixed: std::collections::HashMap<String, Tensor> = model
            .named_tensors()
            .into_iter()
            .map(|(name, w)| {
                let mix = ((w * (1.0 - MIX)).unwrap() + (&other[&name] * MIX).unwrap()).unwrap();
                (name, mix)
            })
            .collect();
        let mut drafter = Llama::from_tensors(cfg, mixed, &Device::Cpu, "mixed").unwrap();
        drafter.set_q8_decode(Q8Scope::Layers).unwrap();
        let prompts: Vec<Vec<u32>> = (0..7u32)
            .map(|i| {
                (0..(3 + i * 2))
                    .map(|k| 3 + (i * 17 + k * 7) % 90)
                    .collect()
            })
            .collect();
        for penalty in [1.0, 1.1] {
            let plain = GenerateConfig {
                max_new_tokens: 24,
                repetition_penalty: penalty,
                batch_size: 4,
                ..GenerateConfig::default()
            };
            let mut reference = Vec::new();
            for p in &prompts {
                let one = GenerateConfig {
                    batch_size: 1,
                    ..plain.clone()
                };
                reference
                    .extend(generate(&model, std::slice::from_ref(p), &[2], &one, |_| {}).unwrap());
            }
            model.take_q8_copies_of(&drafter);
            let spec = GenerateConfig {
                draft_tokens: 3,
                ..plain
            };
            let (got, counts) =
                generate_counting_drafts(&model, &prompts, &[2], &spec, |_| {}).unwrap();
            model.set_q8_decode(Q8Scope::Off).unwrap();
            assert_eq!(got, reference, "penalty {penalty}");
            let share = counts.kept_share();
            eprintln!("penalty {penalty}: {counts:?}");
            assert!(
                share > 0.05 && share < 0.95,
                "penalty {penalty}: {counts:?}"
            );
        }
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut l = vec![2.0f32, -2.0, 3.0];
        apply_repetition_penalty(&mut l, &[true, true, false], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 3.0]);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_and_top_k_restrict_the_support() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut seen = [false; 4];
        let mut rng = row_rng(7, 0);
        for _ in 0..500 {
            seen[sample(&logits, 1.0, None, 0.8, &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true, true, false, false]);
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[sample(&logits, 1.0, Some(1), 1.0, &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true, false, false, false]);
        let mut seen = [false; 4];
        for _ in 0..2000 {
            seen[sample(&logits, 1.0, None, 1.0, &mut rng) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn row_generators_are_seeded_and_independent() {
        let a: Vec<u32> = (0..8).map(|_| row_rng(1, 3).random()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(row_rng(1, 3).random::<u64>(), row_rng(1, 4).random::<u64>());
        assert_ne!(row_rng(1, 3).random::<u64>(), row_rng(2, 3).random::<u64>());
    }
}
