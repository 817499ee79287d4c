//! A Llama-family decoder written for training: full-sequence hidden states, padding-aware
//! positions, grouped-query attention, SwiGLU MLP, optional q/k/v bias (Qwen2) and LoRA.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr_free::normal_vec;

use crate::config::{LlamaConfig, LoraConfig, LoraTarget};
use crate::error::{EngineError, Result};
use crate::grad_ops;
use crate::kernels::MatmulExt;
use crate::lora::{Linear, seeded_rng};

mod backprop;
pub use backprop::LossAndGrads;

/// Additive bias for masked attention scores. Finite, so that a fully masked row (a padding
/// query) gives a uniform softmax instead of NaN.
const MASKED: f32 = -1e9;

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Layer {
    fn linear(&self, t: LoraTarget) -> &Linear {
        match t {
            LoraTarget::Q => &self.q,
            LoraTarget::K => &self.k,
            LoraTarget::V => &self.v,
            LoraTarget::O => &self.o,
            LoraTarget::Gate => &self.gate,
            LoraTarget::Up => &self.up,
            LoraTarget::Down => &self.down,
        }
    }

    fn linear_mut(&mut self, t: LoraTarget) -> &mut Linear {
        match t {
            LoraTarget::Q => &mut self.q,
            LoraTarget::K => &mut self.k,
            LoraTarget::V => &mut self.v,
            LoraTarget::O => &mut self.o,
            LoraTarget::Gate => &mut self.gate,
            LoraTarget::Up => &mut self.up,
            LoraTarget::Down => &mut self.down,
        }
    }
}

/// A Llama-family causal LM. Base weights are plain (frozen) tensors; LoRA weights are
/// [`Var`]s.
#[derive(Debug)]
pub struct Llama {
    cfg: LlamaConfig,
    device: Device,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `None` when tied to the embedding.
    lm_head: Option<Tensor>,
    /// The output head transposed into a contiguous `[hidden, vocab]` copy, made on first use
    /// by inference where the engine's product does not run (see `Linear`).
    head_t: std::sync::OnceLock<Tensor>,
    /// The output head packed as the right operand of `x Wᵀ` for the engine's product
    /// ([`crate::sgemm`]), made on first use by inference or training where that product
    /// runs, in place of `head_t` (the same size): the head is about a fifth of a scoring
    /// pass's arithmetic, and this product ran it 1.25× as fast as gemm at 1280 rows.
    head_packed: std::sync::OnceLock<crate::sgemm::PackedRhs>,
    /// The output head packed as the right operand of `d W`, the gradient of the head's input
    /// in training, made on first use there. With `head_packed`, the two head products at
    /// 128 loss positions ran at 177 GFLOP/s where gemm ran 152-154
    /// (`examples/matmul_shapes.rs` in `benches/`, 128 rows).
    head_packed_rows: std::sync::OnceLock<crate::sgemm::PackedRhs>,
    /// Q8_0 copy of the output head for decode steps (see [`Llama::set_q8_decode`]).
    head_q8: Option<crate::q8::Q8Matrix>,
    /// Greedy decoding's screen of the f32 head (`screen.rs`), made on first use; `None`
    /// inside where the CPU cannot run it.
    head_screen: std::sync::OnceLock<Option<crate::screen::HeadScreen>>,
    /// Whether greedy decoding reads the f32 head through `head_screen`
    /// ([`Llama::set_head_screen`]).
    screen_head: bool,
    /// Which products read the Q8_0 copies.
    q8_scope: Q8Scope,
    /// Whether the decoder layers' products with their frozen weights run in bf16
    /// ([`Llama::set_bf16_matmuls`]).
    bf16: bool,
    inv_freq: Vec<f32>,
    position_scale: f32,
    lora: Option<LoraConfig>,
    differentiable: bool,
    rng: Mutex<ChaCha8Rng>,
}

/// Which weights generation reads as Q8_0 ([`Llama::set_q8_decode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Q8Scope {
    /// Everything in f32.
    #[default]
    Off,
    /// The decoder layers' projections; the output head stays f32.
    Layers,
    /// The projections and the output head.
    LayersAndHead,
    /// The projections in every product of generation, prompts (prefill) included, and the
    /// output head (on at most 16 rows at a time, as above). Scoring and training stay f32.
    LayersHeadAndPrompts,
}

/// Per-layer key/value buffers for incremental decoding, preallocated to a fixed capacity.
/// It also remembers which past positions were padding, so left-padded batches decode with the
/// right positions.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    capacity: usize,
    batch: usize,
    mask: Vec<Vec<bool>>,
    /// Which weight copies the passes over this cache read.
    reads: CacheReads,
}

/// Which weight copies the products of a pass over a [`KvCache`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheReads {
    /// Those of any inference pass: the quantized copies ([`Llama::set_q8_decode`]) for at
    /// most [`crate::lora::Q8_MAX_ROWS`] rows, f32 (or bf16) beyond.
    Inference,
    /// Generation's: with [`Q8Scope::LayersHeadAndPrompts`], prompts run in Q8_0 too.
    Generation,
    /// The f32 weights only, whatever copies the model holds (the passes whose tokens
    /// speculative decoding keeps: prompts and verification).
    Full,
}

impl KvCache {
    /// An empty cache for `batch` rows and at most `capacity` positions.
    pub fn new(model: &Llama, batch: usize, capacity: usize) -> Result<Self> {
        let cfg = model.config();
        let shape = (batch, cfg.kv_heads(), capacity, cfg.head_dim());
        let mut k = Vec::with_capacity(cfg.num_hidden_layers);
        let mut v = Vec::with_capacity(cfg.num_hidden_layers);
        for _ in 0..cfg.num_hidden_layers {
            k.push(Tensor::zeros(shape, DType::F32, model.device())?);
            v.push(Tensor::zeros(shape, DType::F32, model.device())?);
        }
        Ok(Self {
            k,
            v,
            len: 0,
            capacity,
            batch,
            mask: vec![Vec::new(); batch],
            reads: CacheReads::Inference,
        })
    }

    /// The cache, its passes reading `reads`.
    pub(crate) fn reading(mut self, reads: CacheReads) -> Self {
        self.reads = reads;
        self
    }

    /// Sets which weight copies the next passes read.
    pub(crate) fn set_reads(&mut self, reads: CacheReads) {
        self.reads = reads;
    }

    /// Forgets the positions from `len` on (their buffers are overwritten by the next pass).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        for m in &mut self.mask {
            m.truncate(self.len);
        }
    }

    /// Marks positions `from..` of `row` as padding: no later position attends to them and
    /// they count for no position id.
    pub(crate) fn hide(&mut self, row: usize, from: usize) {
        if let Some(m) = self.mask.get_mut(row) {
            m.iter_mut().skip(from).for_each(|x| *x = false);
        }
    }

    /// Makes room for at least `capacity` positions, keeping those stored.
    pub(crate) fn reserve(&mut self, capacity: usize) -> Result<()> {
        if capacity <= self.capacity {
            return Ok(());
        }
        let len = self.len;
        let grow = |t: &Tensor| -> Result<Tensor> {
            let (batch, heads, _, dim) = t.dims4()?;
            let out = Tensor::zeros((batch, heads, capacity, dim), t.dtype(), t.device())?;
            if len > 0 {
                out.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            Ok(out)
        };
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = grow(t)?;
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Keeps only the listed rows (in that order), e.g. to stop computing finished generations.
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        if rows.is_empty() || rows.iter().any(|&r| r >= self.batch) {
            return Err(EngineError::invalid(format!(
                "retain_rows {rows:?} of a cache with {} rows",
                self.batch
            )));
        }
        let device = self.k.first().map(|t| t.device().clone());
        let Some(device) = device else {
            return Ok(());
        };
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &device)?;
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.index_select(&idx, 0)?;
        }
        self.mask = rows.iter().map(|&r| self.mask[r].clone()).collect();
        self.batch = rows.len();
        Ok(())
    }

    /// A cache of `batch` rows that all start with this one-row cache's positions, with room
    /// for `capacity` positions: a prompt prefix that a whole batch shares is computed once
    /// and then copied into every row.
    pub fn fan_out(&self, batch: usize, capacity: usize) -> Result<Self> {
        if self.batch != 1 || batch == 0 || capacity < self.len {
            return Err(EngineError::invalid(format!(
                "fan_out of a {}-row cache holding {} positions to {batch} rows of capacity {capacity}",
                self.batch, self.len
            )));
        }
        let grow = |t: &Tensor| -> Result<Tensor> {
            let (_, heads, _, dim) = t.dims4()?;
            let out = Tensor::zeros((batch, heads, capacity, dim), t.dtype(), t.device())?;
            if self.len > 0 {
                let src = t
                    .narrow(2, 0, self.len)?
                    .broadcast_as((batch, heads, self.len, dim))?
                    .contiguous()?;
                out.slice_set(&src, 2, 0)?;
            }
            Ok(out)
        };
        Ok(Self {
            k: self.k.iter().map(grow).collect::<Result<_>>()?,
            v: self.v.iter().map(grow).collect::<Result<_>>()?,
            len: self.len,
            capacity,
            batch,
            mask: vec![self.mask[0].clone(); batch],
            reads: self.reads,
        })
    }

    /// Positions stored so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Empties the cache (the buffers are kept).
    pub fn reset(&mut self) {
        self.len = 0;
        self.mask.iter_mut().for_each(Vec::clear);
    }
}

/// Everything a forward pass derives from the attention mask.
struct Geometry {
    /// `[b, t, head_dim/2]` each.
    cos: Tensor,
    sin: Tensor,
    /// `[b, 1, 1, t, past + t]` additive bias.
    bias: Tensor,
    past: usize,
    /// Which weight copies the inference products read.
    precision: crate::lora::InferencePrecision,
}

/// The head `w` (`[vocab, h]`) packed into `cell` on first use, as the operand `view(w, vocab,
/// h)`, where the engine's product runs ([`crate::sgemm::supported`]).
fn packed_once<'a>(
    cell: &'a std::sync::OnceLock<crate::sgemm::PackedRhs>,
    w: &Tensor,
    view: impl for<'w> Fn(&'w [f32], usize, usize) -> crate::sgemm::View<'w>,
) -> Result<Option<&'a crate::sgemm::PackedRhs>> {
    if !crate::sgemm::supported() || !crate::kernels::fused_ok(w) {
        return Ok(None);
    }
    if let Some(p) = cell.get() {
        return Ok(Some(p));
    }
    let (vocab, h) = w.dims2()?;
    let packed = crate::kernels::with_f32(w, |w| crate::sgemm::PackedRhs::pack(view(w, vocab, h)))?;
    Ok(Some(cell.get_or_init(|| packed)))
}

impl Geometry {
    /// The geometry of positions `from..` only, as queries over all keys: their rotations and
    /// bias rows.
    fn window(&self, from: usize) -> Result<Self> {
        let w = self.cos.dim(1)? - from;
        Ok(Self {
            cos: self.cos.narrow(1, from, w)?.contiguous()?,
            sin: self.sin.narrow(1, from, w)?.contiguous()?,
            bias: self.bias.narrow(3, from, w)?.contiguous()?,
            past: self.past,
            precision: self.precision,
        })
    }
}

impl Llama {
    /// Builds a model from tensors named as in Hugging Face checkpoints
    /// (`model.layers.0.self_attn.q_proj.weight`, ...). `source_name` names the checkpoint in errors.
    pub fn from_tensors(
        cfg: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        source_name: &str,
    ) -> Result<Self> {
        cfg.validate(source_name)?;
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| EngineError::MissingTensor {
                    source_name: source_name.into(),
                    tensor: name.into(),
                })?;
            if t.dims() != shape {
                return Err(EngineError::ShapeMismatch {
                    source_name: source_name.into(),
                    tensor: name.into(),
                    expected: shape.to_vec(),
                    actual: t.dims().to_vec(),
                });
            }
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let embed = take("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let w = take(&format!("{p}.{name}.weight"), &[out, inp])?;
                let b = if bias {
                    Some(take(&format!("{p}.{name}.bias"), &[out])?)
                } else {
                    None
                };
                Ok(Linear::new(w, b))
            };
            let ab = cfg.attention_bias;
            let q = lin("self_attn.q_proj", nh * hd, h, ab)?;
            let k = lin("self_attn.k_proj", nkv * hd, h, ab)?;
            let v = lin("self_attn.v_proj", nkv * hd, h, ab)?;
            let o = lin("self_attn.o_proj", h, nh * hd, false)?;
            let gate = lin("mlp.gate_proj", cfg.intermediate_size, h, false)?;
            let up = lin("mlp.up_proj", cfg.intermediate_size, h, false)?;
            let down = lin("mlp.down_proj", h, cfg.intermediate_size, false)?;
            let input_norm = take(&format!("{p}.input_layernorm.weight"), &[h])?;
            let post_norm = take(&format!("{p}.post_attention_layernorm.weight"), &[h])?;
            layers.push(Layer {
                input_norm,
                q,
                k,
                v,
                o,
                post_norm,
                gate,
                up,
                down,
            });
        }
        let norm = take("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(take("lm_head.weight", &[cfg.vocab_size, h])?)
        };
        Ok(Self::assemble(
            cfg,
            device.clone(),
            embed,
            layers,
            norm,
            lm_head,
        ))
    }

    fn assemble(
        cfg: LlamaConfig,
        device: Device,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Option<Tensor>,
    ) -> Self {
        let (inv_freq, position_scale) = rope_frequencies(&cfg);
        Self {
            cfg,
            device,
            embed,
            layers,
            norm,
            lm_head,
            head_t: std::sync::OnceLock::new(),
            head_packed: std::sync::OnceLock::new(),
            head_packed_rows: std::sync::OnceLock::new(),
            head_q8: None,
            head_screen: std::sync::OnceLock::new(),
            screen_head: true,
            q8_scope: Q8Scope::Off,
            bf16: false,
            inv_freq,
            position_scale,
            lora: None,
            differentiable: false,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
        }
    }

    /// A model with random weights (normal, std 0.02 for matrices; norms near 1), for tests
    /// and examples.
    pub fn random(cfg: LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate("random model")?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (name, shape) in hf_tensor_shapes(&cfg) {
            let n: usize = shape.iter().product();
            let values = if name.ends_with("norm.weight") {
                normal_vec(&mut rng, n, 0.1)
                    .into_iter()
                    .map(|x| 1.0 + x)
                    .collect()
            } else {
                normal_vec(&mut rng, n, 0.02)
            };
            tensors.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Self::from_tensors(cfg, tensors, device, "random model")
    }

    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device holding the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The LoRA configuration, when an adapter is attached.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Whether the forward pass uses differentiable (composite) ops for RMSNorm, RoPE and
    /// softmax instead of the fused kernels, which have no backward pass. On by default once a
    /// LoRA adapter is attached and not merged.
    pub fn differentiable(&self) -> bool {
        self.differentiable
    }

    /// Forces differentiable ops on or off (on is needed to back-propagate into anything).
    pub fn set_differentiable(&mut self, on: bool) {
        self.differentiable = on;
    }

    /// Final hidden states after the last RMSNorm, `[b, t, hidden]`.
    ///
    /// `input_ids` is `[b, t]` (u32). `attention_mask` is `[b, t]` (1 real, 0 padding; any
    /// dtype) or `None` for all real. Position ids are `cumsum(mask) - 1` per row, so left
    /// padding gives the same results as no padding. With a `cache`, `input_ids` holds only
    /// the new tokens and `attention_mask` only their mask; the cache remembers the past.
    /// `train` enables LoRA dropout.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_hidden_from(input_ids, attention_mask, cache, train, 0)
    }

    /// [`Llama::forward_hidden`] at positions `from..t` only, `[b, t - from, hidden]`, for
    /// inference: the last layer runs its queries, output projection and MLP on those
    /// positions only (its keys and values cover all, and a cache keeps them all), as nothing
    /// reads its other outputs. (Training's window is `model::backprop`'s, which draws LoRA
    /// dropout masks as for the whole input.)
    pub(crate) fn forward_hidden_from(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        train: bool,
        from: usize,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        if t == 0 {
            return Err(EngineError::invalid("input_ids has no positions"));
        }
        if from >= t {
            return Err(EngineError::invalid(format!(
                "hidden states asked from position {from} of {t}"
            )));
        }
        if from > 0 && train {
            return Err(EngineError::invalid(
                "hidden states from a position are not taken with LoRA dropout on",
            ));
        }
        let new_mask: Vec<Vec<bool>> = match attention_mask {
            Some(m) => {
                if m.dims() != [b, t] {
                    return Err(EngineError::invalid(format!(
                        "attention_mask has shape {:?}, input_ids {:?}",
                        m.dims(),
                        [b, t]
                    )));
                }
                m.to_dtype(DType::F32)?
                    .to_vec2::<f32>()?
                    .into_iter()
                    .map(|r| r.into_iter().map(|x| x > 0.5).collect())
                    .collect()
            }
            None => vec![vec![true; t]; b],
        };
        if let Some(c) = cache.as_deref() {
            if c.batch != b {
                return Err(EngineError::invalid(format!(
                    "cache has {} rows, input {b}",
                    c.batch
                )));
            }
            if c.len + t > c.capacity {
                return Err(EngineError::CacheFull {
                    needed: c.len + t,
                    capacity: c.capacity,
                });
            }
        }
        let mut geo = self.geometry(&new_mask, cache.as_deref())?;
        match cache.as_deref().map(|c| c.reads) {
            Some(CacheReads::Generation) if self.q8_scope == Q8Scope::LayersHeadAndPrompts => {
                geo.precision.q8_rows = usize::MAX;
            }
            Some(CacheReads::Full) => {
                geo.precision.q8_rows = 0;
                geo.precision.bf16 = false;
            }
            _ => {}
        }
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let mut x = self
            .embed
            .index_select(&ids, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        let diff = self.differentiable();
        // The last layer's queries from `from` on: nothing reads its other outputs (its keys
        // and values, which a cache keeps, still cover every position).
        let window = match from {
            0 => None,
            _ => Some(geo.window(from)?),
        };
        let last = self.layers.len().saturating_sub(1);
        let first_norm = self.layers.first().map_or(&self.norm, |l| &l.input_norm);
        // `hn`: the normalized input of the next block (the final norm's output at the end).
        let mut hn = self.rms_norm(&x, first_norm, diff)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let win = window.as_ref().filter(|_| i == last);
            let residual = match win {
                Some(_) => x.narrow(1, from, t - from)?,
                None => x,
            };
            let kv = cache
                .as_deref_mut()
                .map(|c| (c.k[i].clone(), c.v[i].clone()));
            let attn = self.attention(layer, &hn, &geo, win, kv, train, diff)?;
            let (h, hm) = self.add_norm(&residual, &attn, &layer.post_norm, diff)?;
            let g = layer.gate.forward(&hm, train, geo.precision, &self.rng)?;
            let u = layer.up.forward(&hm, train, geo.precision, &self.rng)?;
            // Without autograd the fused kernel serves; with it, candle's ops record the graph.
            let act = if diff {
                (g.silu()? * u)?
            } else {
                crate::kernels::swiglu_or_generic(&g, &u)?
            };
            let m = layer.down.forward(&act, train, geo.precision, &self.rng)?;
            let next_norm = self.layers.get(i + 1).map_or(&self.norm, |l| &l.input_norm);
            (x, hn) = self.add_norm(&h, &m, next_norm, diff)?;
        }
        if let Some(c) = cache {
            for (row, m) in c.mask.iter_mut().zip(&new_mask) {
                row.extend_from_slice(m);
            }
            c.len += t;
        }
        Ok(hn)
    }

    /// The output head over hidden states `[n, hidden]` or `[b, t, hidden]` → logits with the
    /// same leading dimensions and `vocab_size` last.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.logits_reading(hidden, true)
    }

    /// [`Llama::logits`], reading the head's Q8_0 copy ([`Llama::set_q8_decode`]) only where
    /// `quantized` allows it.
    pub(crate) fn logits_reading(&self, hidden: &Tensor, quantized: bool) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        let dims = hidden.dims().to_vec();
        let h = *dims
            .last()
            .ok_or_else(|| EngineError::invalid("hidden states are a scalar"))?;
        if h != self.cfg.hidden_size {
            return Err(EngineError::invalid(format!(
                "hidden states have width {h}, model {}",
                self.cfg.hidden_size
            )));
        }
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x = hidden.reshape((n, h))?;
        let y = if let Some(q) = self
            .head_q8
            .as_ref()
            .filter(|_| quantized && n <= crate::lora::Q8_MAX_ROWS && !x.track_op())
        {
            q.forward(&x.contiguous()?)?
        } else if let Some(p) = self.head_packed(w, &x)? {
            crate::kernels::packed_matmul_sum(&[(&x, crate::kernels::Packed::F32(p))], &[])?
        } else if !x.track_op() {
            let wt = match self.head_t.get() {
                Some(t) => t,
                None => {
                    let t = w.t()?.contiguous()?;
                    self.head_t.get_or_init(|| t)
                }
            };
            crate::kernels::matmul(&x.contiguous()?, wt)?
        } else {
            grad_ops::frozen_matmul(&x, w)?
        };
        let mut out = dims;
        *out.last_mut().unwrap() = self.cfg.vocab_size;
        Ok(y.reshape(out)?)
    }

    /// The greedy tokens of the rows of `hidden` (`[m, hidden]`, final hidden states), each
    /// after HF's repetition penalty over its row of `seen`: the tokens the f32 head's logits
    /// ([`Llama::logits`]) give, found through a Q8_0 copy of the head that bounds every
    /// logit, with f32 logits only for the tokens the bounds cannot rule out (`screen.rs`).
    /// `None` where it does not apply (a Q8_0 head of [`Llama::set_q8_decode`] that `full` does
    /// not set aside, a CPU without the engine's products, a value that is not finite, the
    /// screen switched off): the caller then takes [`Llama::logits_reading`].
    pub(crate) fn screened_greedy(
        &self,
        hidden: &Tensor,
        seen: &[&[bool]],
        penalty: f64,
        full: bool,
    ) -> Result<Option<Vec<u32>>> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        if !self.screen_head
            || (self.head_q8.is_some() && !full)
            || hidden.track_op()
            || !crate::kernels::fused_ok(hidden)
            || !crate::kernels::fused_ok(w)
        {
            return Ok(None);
        }
        let (m, h) = hidden.dims2()?;
        let (vocab, wh) = w.dims2()?;
        if h != wh || seen.len() != m || seen.iter().any(|s| s.len() != vocab) {
            return Err(EngineError::invalid(format!(
                "screened head: {m} rows of width {h}, {} seen lists, head [{vocab}, {wh}]",
                seen.len()
            )));
        }
        let screen = match self.head_screen.get() {
            Some(s) => s,
            None => {
                let s =
                    crate::kernels::with_f32(w, |w| crate::screen::HeadScreen::new(w, vocab, h))?;
                self.head_screen.get_or_init(|| s)
            }
        };
        let Some(screen) = screen else {
            return Ok(None);
        };
        crate::kernels::with_f32(hidden, |x| {
            crate::kernels::with_f32(w, |w| {
                screen
                    .screen(x, m)
                    .map(|s| (0..m).map(|r| s.argmax(r, w, seen[r], penalty).0).collect())
            })
        })?
    }

    /// Whether greedy decoding reads the f32 output head through its Q8_0 screen (on by
    /// default; the tokens are the same either way, see [`Llama::screened_greedy`]).
    pub fn set_head_screen(&mut self, on: bool) {
        self.screen_head = on;
    }

    /// The output head `w` packed for `x Wᵀ` where the engine's product runs
    /// ([`crate::sgemm::supported`]) and `x` records no autograd ops.
    pub(crate) fn head_packed(
        &self,
        w: &Tensor,
        x: &Tensor,
    ) -> Result<Option<&crate::sgemm::PackedRhs>> {
        if x.track_op() {
            return Ok(None);
        }
        packed_once(&self.head_packed, w, |w, vocab, h| {
            crate::sgemm::View::transposed(w, h, vocab)
        })
    }

    /// The output head `w` packed for `d W` where the engine's product runs.
    pub(crate) fn head_packed_rows(&self, w: &Tensor) -> Result<Option<&crate::sgemm::PackedRhs>> {
        packed_once(&self.head_packed_rows, w, |w, vocab, h| {
            crate::sgemm::View::row_major(w, vocab, h)
        })
    }

    /// Attaches fresh LoRA adapters (PEFT initialisation from `cfg.seed`) to the targets of
    /// every layer, replacing any existing adapter.
    pub fn add_lora(&mut self, cfg: &LoraConfig) -> Result<()> {
        if cfg.r == 0 {
            return Err(EngineError::invalid("LoRA rank must be positive"));
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(EngineError::invalid(format!(
                "LoRA dropout {} is not in [0, 1)",
                cfg.dropout
            )));
        }
        let mut targets = cfg.targets.clone();
        targets.sort();
        targets.dedup();
        let mut rng = seeded_rng(cfg.seed);
        for layer in &mut self.layers {
            for t in LoraTarget::ALL {
                let lin = layer.linear_mut(t);
                lin.unmerge()?;
                lin.lora = None;
                if targets.contains(&t) {
                    lin.add_lora(cfg.r, cfg.scale(), cfg.dropout, &mut rng)?;
                }
            }
        }
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = seeded_rng(cfg.seed.wrapping_add(1));
        self.lora = Some(LoraConfig {
            targets,
            ..cfg.clone()
        });
        self.differentiable = true;
        Ok(())
    }

    /// Removes the adapters (unmerging them first).
    pub fn remove_lora(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for t in LoraTarget::ALL {
                let lin = layer.linear_mut(t);
                lin.unmerge()?;
                lin.lora = None;
            }
        }
        self.lora = None;
        self.differentiable = false;
        Ok(())
    }

    /// The LoRA weights with their PEFT names
    /// (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`), layer by layer,
    /// targets in q, k, v, o, gate, up, down order, A before B.
    pub fn lora_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if let Some(l) = &layer.linear(t).lora {
                    let p = format!("base_model.model.model.layers.{i}.{}", t.module_path());
                    out.push((format!("{p}.lora_A.weight"), l.a.clone()));
                    out.push((format!("{p}.lora_B.weight"), l.b.clone()));
                }
            }
        }
        out
    }

    /// Adds `scale * B A` into the base weights (inference without the adapter's extra matmuls).
    pub fn merge_lora(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for t in LoraTarget::ALL {
                layer.linear_mut(t).merge()?;
            }
        }
        self.differentiable = false;
        Ok(())
    }

    /// Decode steps (at most 16 new rows) read quantized copies of the weights named by
    /// `scope` (Q8_0, or for layers that are exactly Q4_1 on a CPU with AVX-512 VNNI or AVX2,
    /// those 4-bit values: [`Llama::quantized_layer_formats`]): a quarter of the f32
    /// weight traffic or less, which is what bounds decoding at small batch. Prompts
    /// (prefill), scoring and training stay f32, except that [`Q8Scope::LayersHeadAndPrompts`]
    /// runs generation's prompts quantized too (with AVX-512 VNNI, the products of many rows
    /// run several times faster than in f32; with AVX2 alone, about as fast as f32 in Q8_0 and
    /// faster in Q4_1). Merge LoRA first ([`Llama::merge_lora`]); merging or unmerging
    /// afterwards drops the layer copies.
    ///
    /// Measured on the default model's greedy fixtures, whose layers keep the GGUF's exact
    /// Q4_1 values (see `q8.rs`): with AVX-512 VNNI, 56 of 56 reference tokens come before
    /// the first divergence with [`Q8Scope::Layers`], 56 with [`Q8Scope::LayersAndHead`] and
    /// 29 with [`Q8Scope::LayersHeadAndPrompts`] (its prompts' activations rounded to 8 bits
    /// too); with AVX2 but no AVX-512 (Zen 3), 56, 29 and 48. Layers rounded to Q8_0 instead
    /// gave 48, 48 and 48 with VNNI; candle's Q8_0 kernel, used on CPUs with neither, sums the
    /// quantized product in another order and gave 43 and 35 for the first two: a token's
    /// fate at a thin margin turns on the order. See `docs/performance.md` for speed and a
    /// fidelity measure on the benchmark's prompts.
    pub fn set_q8_decode(&mut self, scope: Q8Scope) -> Result<()> {
        let layers = scope != Q8Scope::Off;
        for layer in &mut self.layers {
            for t in LoraTarget::ALL {
                layer.linear_mut(t).quantize_q8(layers)?;
            }
        }
        self.q8_scope = scope;
        self.head_q8 = if matches!(
            scope,
            Q8Scope::LayersAndHead | Q8Scope::LayersHeadAndPrompts
        ) {
            Some(crate::lora::q8_matmul(
                self.lm_head.as_ref().unwrap_or(&self.embed),
            )?)
        } else {
            None
        };
        Ok(())
    }

    /// Takes `other`'s quantized layer copies and scope as this model's (tests: speculative
    /// decoding with drafts from other weights).
    #[cfg(test)]
    pub(crate) fn take_q8_copies_of(&mut self, other: &Llama) {
        for (a, b) in self.layers.iter_mut().zip(&other.layers) {
            for t in LoraTarget::ALL {
                a.linear_mut(t).take_q8_copy_of(b.linear(t));
            }
        }
        self.q8_scope = other.q8_scope;
    }

    /// The formats of the decoder layers' quantized copies ([`Llama::set_q8_decode`]), each
    /// once in the order first met: `"Q4_1"` where a weight is exactly Q4_1 and the CPU has
    /// AVX-512 VNNI or AVX2, else `"Q8_0"`; empty when there are none.
    pub fn quantized_layer_formats(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for layer in &self.layers {
            for t in LoraTarget::ALL {
                if let Some(f) = layer.linear(t).q8_format()
                    && !out.contains(&f)
                {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Runs the decoder layers' products with their frozen weights in bf16 (f32 sums) on CPUs
    /// with AVX512-BF16: training's forward and input-gradient products, and inference
    /// products of more than 16 rows (scoring, prompts). Twice the arithmetic rate of f32;
    /// the weights are rounded to bf16 and packed on first use (two copies of 2 bytes a
    /// weight; turning it off frees them, and turning it on frees the f32 packed copies until
    /// an f32 product packs them again). Attention, LoRA factors, norms and the output
    /// head stay f32, as do decode steps. Off by default; `docs/performance.md` measures
    /// what it changes.
    pub fn set_bf16_matmuls(&mut self, on: bool) -> Result<()> {
        if on && !(self.device.is_cpu() && crate::bf16::supported()) {
            return Err(EngineError::invalid(
                "bf16 matmuls need the CPU device on a CPU with AVX512-BF16",
            ));
        }
        // Each precision's packed copies of the weights go when the other takes over (f32
        // inference makes its own again on first use).
        for layer in &mut self.layers {
            for t in LoraTarget::ALL {
                let lin = layer.linear_mut(t);
                if on {
                    lin.drop_f32_packed();
                } else {
                    lin.drop_bf16();
                }
            }
        }
        self.bf16 = on;
        Ok(())
    }

    /// Whether [`Llama::set_bf16_matmuls`] is on.
    pub fn bf16_matmuls(&self) -> bool {
        self.bf16
    }

    /// Subtracts merged adapters from the base weights again.
    pub fn unmerge_lora(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            for t in LoraTarget::ALL {
                layer.linear_mut(t).unmerge()?;
            }
        }
        self.differentiable = self.lora.is_some();
        Ok(())
    }

    /// The base weights with their Hugging Face names (merged adapters included, unmerged ones
    /// not). A tied output head is not listed.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), l.input_norm.clone()));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                l.post_norm.clone(),
            ));
            for t in LoraTarget::ALL {
                let lin = l.linear(t);
                out.push((
                    format!("{p}.{}.weight", t.module_path()),
                    lin.weight.clone(),
                ));
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{}.bias", t.module_path()), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".into(), self.norm.clone()));
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".into(), h.clone()));
        }
        out
    }

    /// `residual + delta` and its RMSNorm with weight `w`: one fused pass without autograd.
    fn add_norm(
        &self,
        residual: &Tensor,
        delta: &Tensor,
        w: &Tensor,
        diff: bool,
    ) -> Result<(Tensor, Tensor)> {
        if diff {
            let x = (residual + delta)?;
            let y = self.rms_norm(&x, w, diff)?;
            return Ok((x, y));
        }
        let eps = self.cfg.rms_norm_eps as f32;
        crate::kernels::add_rms_norm_or_generic(residual, delta, w, eps)
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor, diff: bool) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps;
        if diff {
            Ok(grad_ops::rms_norm(x, w, eps)?)
        } else {
            Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
        }
    }

    fn geometry(&self, new_mask: &[Vec<bool>], cache: Option<&KvCache>) -> Result<Geometry> {
        match cache {
            Some(c) => self.geometry_after(new_mask, &c.mask),
            None => self.geometry_after(new_mask, &vec![Vec::new(); new_mask.len()]),
        }
    }

    /// The geometry of new positions (`new_mask`, one row per sequence) that follow `past`
    /// positions (one mask row per sequence, all of the same length).
    fn geometry_after(&self, new_mask: &[Vec<bool>], past_mask: &[Vec<bool>]) -> Result<Geometry> {
        let b = new_mask.len();
        let t = new_mask[0].len();
        let past = past_mask.first().map_or(0, Vec::len);
        let total = past + t;
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        let mut bias = vec![MASKED; b * t * total];
        for (row, m) in new_mask.iter().enumerate() {
            let mut seen = past_mask[row].iter().filter(|x| **x).count();
            for (i, real) in m.iter().enumerate() {
                if *real {
                    seen += 1;
                }
                let pos = seen.saturating_sub(1) as f32 * self.position_scale;
                for f in &self.inv_freq {
                    let a = pos * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
                let q = past + i;
                let base = (row * t + i) * total;
                for j in 0..=q {
                    let key_real = if j < past {
                        past_mask[row][j]
                    } else {
                        m[j - past]
                    };
                    if key_real {
                        bias[base + j] = 0.0;
                    }
                }
            }
        }
        let cos = Tensor::from_vec(cos, (b, t, half), &self.device)?;
        let sin = Tensor::from_vec(sin, (b, t, half), &self.device)?;
        let bias = Tensor::from_vec(bias, (b, 1, 1, t, total), &self.device)?;
        Ok(Geometry {
            cos,
            sin,
            bias,
            past,
            precision: crate::lora::InferencePrecision {
                q8_rows: crate::lora::Q8_MAX_ROWS,
                bf16: self.bf16,
            },
        })
    }

    fn rope(&self, x: &Tensor, geo: &Geometry, diff: bool) -> Result<Tensor> {
        if diff {
            Ok(grad_ops::rope(x, &geo.cos, &geo.sin)?)
        } else {
            Ok(candle_nn::rotary_emb::rope(
                &x.contiguous()?,
                &geo.cos,
                &geo.sin,
            )?)
        }
    }

    /// Self-attention of `x` `[b, t, hidden]`; with `window` (the geometry of the last `tq`
    /// positions, [`Geometry::window`]) only those positions query, and the output is
    /// `[b, tq, hidden]`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        geo: &Geometry,
        window: Option<&Geometry>,
        kv: Option<(Tensor, Tensor)>,
        train: bool,
        diff: bool,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let rep = nh / nkv;
        let (xq, qgeo) = match window {
            Some(w) => {
                let tq = w.cos.dim(1)?;
                (x.narrow(1, t - tq, tq)?.contiguous()?, w)
            }
            None => (x.clone(), geo),
        };
        let tq = xq.dim(1)?;
        // Projections to rotated heads: in one pass without autograd ([`crate::rope`]).
        let rotated = |y: Tensor, t: usize, heads: usize, g: &Geometry| -> Result<Tensor> {
            let s = crate::rope::HeadsOf { g: b, t, heads, hd };
            let fused = if diff {
                None
            } else {
                crate::rope::rotated_heads(&y.reshape((b * t, heads * hd))?, 0, s, &g.cos, &g.sin)?
            };
            match fused {
                Some(r) => Ok(r),
                None => {
                    let y = y
                        .reshape((b, t, heads, hd))?
                        .transpose(1, 2)?
                        .contiguous()?;
                    self.rope(&y, g, diff)
                }
            }
        };
        let q = rotated(
            layer.q.forward(&xq, train, geo.precision, &self.rng)?,
            tq,
            nh,
            qgeo,
        )?;
        let k = rotated(
            layer.k.forward(x, train, geo.precision, &self.rng)?,
            t,
            nkv,
            geo,
        )?;
        let v = layer
            .v
            .forward(x, train, geo.precision, &self.rng)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        // With a cache (generation, shared prefixes) nothing is differentiated: the products
        // read the cache in place through the gemm kernels instead of copying it.
        let cached = kv.is_some();
        let (k, v) = match kv {
            Some((kb, vb)) => {
                kb.slice_set(&k.contiguous()?, 2, geo.past)?;
                vb.slice_set(&v, 2, geo.past)?;
                let total = geo.past + t;
                (kb.narrow(2, 0, total)?, vb.narrow(2, 0, total)?)
            }
            None => (k, v),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let q = (q * scale)?.reshape((b, nkv, rep * tq, hd))?;
        let fused = if cached {
            crate::cached_attention::cached_attention(&q, &k, &v, &qgeo.bias, tq)?
        } else {
            None
        };
        let fused = match fused {
            None if !diff => crate::attention::attend(&q, &k, &v, &qgeo.bias, rep)?.map(|(o, _)| o),
            done => done,
        };
        let out = match fused {
            Some(out) => out,
            None => self.attention_products(&q, &k, &v, qgeo, tq, cached, diff)?,
        };
        let out = out
            .reshape((b, nh, tq, hd))?
            .transpose(1, 2)?
            .reshape((b, tq, nh * hd))?;
        layer.o.forward(&out, train, geo.precision, &self.rng)
    }

    /// `softmax(q kᵀ + bias) v` through the general products: `q` `[b, nkv, rep·t, hd]` for
    /// `t` new positions, `k` and `v` `[b, nkv, total, hd]`; `[b, nkv, rep·t, hd]`.
    #[allow(clippy::too_many_arguments)]
    fn attention_products(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        geo: &Geometry,
        t: usize,
        cached: bool,
        diff: bool,
    ) -> Result<Tensor> {
        let (b, nkv, rows, _) = q.dims4()?;
        let (rep, total) = (rows / t, k.dim(2)?);
        let scores = if cached {
            q.mm(&k.t()?)?
        } else {
            q.matmul(&k.t()?)?
        };
        let scores = scores.reshape((b, nkv, rep, t, total))?;
        let probs = if diff {
            grad_ops::softmax_last_dim(&scores.broadcast_add(&geo.bias)?)?
        } else {
            crate::kernels::masked_softmax_or_generic(&scores, &geo.bias)?
        };
        let probs = probs.reshape((b, nkv, rep * t, total))?;
        Ok(if cached {
            probs.mm(v)?
        } else {
            probs.matmul(&v.contiguous()?)?
        })
    }
}

/// Names and shapes of every base tensor, in Hugging Face naming.
pub(crate) fn hf_tensor_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let (nh, nkv, im) = (
        cfg.num_attention_heads,
        cfg.kv_heads(),
        cfg.intermediate_size,
    );
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![nh * hd, h]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![nkv * hd, h]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![nkv * hd, h]));
        if cfg.attention_bias {
            out.push((format!("{p}.self_attn.q_proj.bias"), vec![nh * hd]));
            out.push((format!("{p}.self_attn.k_proj.bias"), vec![nkv * hd]));
            out.push((format!("{p}.self_attn.v_proj.bias"), vec![nkv * hd]));
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, nh * hd]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![im, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![im, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, im]));
    }
    out.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
    }
    out
}

/// Inverse frequencies (HF: `1 / theta^(2i/d)`, computed in f32) with any llama3 scaling
/// applied, and the factor that divides positions (linear scaling).
fn rope_frequencies(cfg: &LlamaConfig) -> (Vec<f32>, f32) {
    let d = cfg.head_dim();
    let mut inv: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32))
        .collect();
    let mut pos_scale = 1.0f32;
    if let Some(s) = &cfg.rope_scaling {
        match s.rope_type.as_str() {
            "linear" => pos_scale = 1.0 / s.factor as f32,
            "llama3" => {
                let low = s.low_freq_factor.unwrap_or(1.0);
                let high = s.high_freq_factor.unwrap_or(4.0);
                let old = s.original_max_position_embeddings.unwrap_or(8192) as f64;
                let low_wl = old / low;
                let high_wl = old / high;
                for f in &mut inv {
                    let wl = 2.0 * std::f64::consts::PI / *f as f64;
                    let fv = *f as f64;
                    *f = if wl < high_wl {
                        *f
                    } else if wl > low_wl {
                        (fv / s.factor) as f32
                    } else {
                        let smooth = (old / wl - low) / (high - low);
                        ((1.0 - smooth) * fv / s.factor + smooth * fv) as f32
                    };
                }
            }
            _ => {}
        }
    }
    (inv, pos_scale)
}

/// Normal samples without an extra dependency (Box–Muller on the seeded generator).
mod rand_distr_free {
    use rand::Rng;

    pub(super) fn normal_vec<R: Rng>(rng: &mut R, n: usize, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1: f64 = rng.random::<f64>().max(1e-12);
                let u2: f64 = rng.random();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect()
    }
}

/// The device the engine computes on: CUDA device 0 when built with the `cuda` feature (and
/// one is present), otherwise the CPU.
pub fn default_device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::cuda_if_available(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// A prompt pass into a cache that runs the last layer on the last position only gives
    /// that position's hidden state and the same cache as the full pass, so that the decode
    /// step after it is unchanged too (left padding included).
    #[test]
    fn windowed_prompt_pass_fills_the_cache_as_the_full_pass() {
        let cfg = LlamaConfig::tiny(96, 64, 3, 4, 2);
        let model = Llama::random(cfg, 11, &Device::Cpu).unwrap();
        let (b, t) = (2, 9);
        let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 37 + 5) % 96).collect();
        let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap();
        let mask: Vec<u32> = (0..b * t).map(|i| u32::from(i >= 3)).collect();
        let mask = Tensor::from_vec(mask, (b, t), &Device::Cpu).unwrap();
        let next = Tensor::from_vec(vec![7u32, 8], (b, 1), &Device::Cpu).unwrap();
        let ones = Tensor::ones((b, 1), DType::U32, &Device::Cpu).unwrap();
        let run = |from: usize| {
            let mut cache = KvCache::new(&model, b, t + 1).unwrap();
            let h = model
                .forward_hidden_from(&ids, Some(&mask), Some(&mut cache), false, from)
                .unwrap();
            let step = model
                .forward_hidden(&next, Some(&ones), Some(&mut cache), false)
                .unwrap();
            (h.narrow(1, h.dim(1).unwrap() - 1, 1).unwrap(), step, cache)
        };
        let (full, full_step, full_cache) = run(0);
        let (last, last_step, last_cache) = run(t - 1);
        assert_eq!(max_diff(&last, &full), 0.0);
        assert_eq!(max_diff(&last_step, &full_step), 0.0);
        for (a, b) in full_cache.k.iter().zip(&last_cache.k) {
            assert_eq!(max_diff(a, b), 0.0);
        }
        for (a, b) in full_cache.v.iter().zip(&last_cache.v) {
            assert_eq!(max_diff(a, b), 0.0);
        }
        assert_eq!(full_cache.mask, last_cache.mask);
        assert_eq!(full_cache.len, last_cache.len);
    }

    /// [`Q8Scope::LayersHeadAndPrompts`] takes generation's prompts into Q8_0 and nothing
    /// else: a prompt longer than a decode step runs f32 under the narrower scopes and in
    /// scoring (a cache not made by generation), and in Q8_0 (close, not equal) in generation.
    #[test]
    fn only_generation_prompts_run_in_q8_under_the_prompts_scope() {
        let cfg = LlamaConfig::tiny(96, 64, 2, 4, 2);
        let mut model = Llama::random(cfg, 7, &Device::Cpu).unwrap();
        let t = crate::lora::Q8_MAX_ROWS + 8;
        let ids: Vec<u32> = (0..t as u32).map(|i| (i * 37 + 5) % 96).collect();
        let ids = Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap();
        let run = |model: &Llama, generation: bool| {
            let mut cache = KvCache::new(model, 1, t).unwrap();
            if generation {
                cache = cache.reading(CacheReads::Generation);
            }
            model
                .forward_hidden(&ids, None, Some(&mut cache), false)
                .unwrap()
        };
        let f32_hidden = run(&model, false);
        assert!(model.quantized_layer_formats().is_empty());
        model.set_q8_decode(Q8Scope::LayersAndHead).unwrap();
        // Random weights are not Q4_1.
        assert_eq!(model.quantized_layer_formats(), ["Q8_0"]);
        assert_eq!(max_diff(&run(&model, true), &f32_hidden), 0.0);
        model.set_q8_decode(Q8Scope::LayersHeadAndPrompts).unwrap();
        assert_eq!(max_diff(&run(&model, false), &f32_hidden), 0.0);
        let q8_hidden = run(&model, true);
        let diff = max_diff(&q8_hidden, &f32_hidden);
        let scale = max_diff(&f32_hidden, &f32_hidden.zeros_like().unwrap());
        assert!(diff > 0.0, "the prompt did not run in Q8_0");
        assert!(
            diff < 0.05 * scale,
            "Q8_0 prompt far from f32: {diff} at scale {scale}"
        );
    }
}
