//! Linear layers with an optional LoRA adapter (PEFT conventions).

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bf16::PackedBf16;
use crate::error::{EngineError, Result};
use crate::kernels::Packed;
use crate::sgemm::{PackedRhs, View};

/// A LoRA adapter on one linear layer: `y += scale * B (A dropout(x))`.
#[derive(Debug, Clone)]
pub(crate) struct LoraAdapter {
    /// `[r, in]`, Kaiming-uniform initialised as PEFT does.
    pub(crate) a: Var,
    /// `[out, r]`, zero initialised.
    pub(crate) b: Var,
    pub(crate) scale: f64,
    pub(crate) dropout: f64,
    /// Whether `scale * B A` is currently added into the base weight.
    pub(crate) merged: bool,
}

/// A frozen linear layer (`weight` is `[out, in]`, as in PyTorch) with an optional LoRA adapter.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    /// `weight` transposed into a contiguous `[in, out]` copy, made on first use by inference
    /// (no gradient) where the engine's product does not run (there it reads `f32`):
    /// gemm reads it without repacking the weight on every call, which is what a `[out, in]`
    /// weight costs when decoding a few rows, and big products on it run faster too. Training
    /// never makes it. Reset when `weight` changes.
    weight_t: OnceLock<Tensor>,
    /// A Q8_0 copy of `weight` for decode steps ([`Linear::quantize_q8`]); `None` otherwise.
    /// Reset when `weight` changes.
    q8: Option<crate::q8::Q8Matrix>,
    /// The weight rounded to bf16 and packed as the right operand of `x W^T` (`[0]`) and of
    /// `dy W` (`[1]`), made on first use by bf16 products.
    bf16: [OnceLock<Arc<PackedBf16>>; 2],
    /// The weight packed likewise in f32 for the engine's product ([`crate::sgemm`]),
    /// made on first use where that product runs: packing it for every product cost about 5%
    /// of a train step. Inference reads it instead of `weight_t`.
    f32: [OnceLock<Arc<PackedRhs>>; 2],
    pub(crate) bias: Option<Tensor>,
    pub(crate) lora: Option<LoraAdapter>,
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            weight_t: OnceLock::new(),
            q8: None,
            bf16: Default::default(),
            f32: Default::default(),
            bias,
            lora: None,
        }
    }

    pub(crate) fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    pub(crate) fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x`: `[..., in]` → `[..., out]`, with the inference products `precision` chooses.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        train: bool,
        precision: InferencePrecision,
        rng: &Mutex<ChaCha8Rng>,
    ) -> Result<Tensor> {
        let InferencePrecision { q8_rows, bf16 } = precision;
        let dims = x.dims().to_vec();
        let in_f = *dims
            .last()
            .ok_or_else(|| EngineError::invalid("linear input is a scalar"))?;
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((n, in_f))?;
        let mut y = if let Some(q) = self
            .q8
            .as_ref()
            .filter(|_| !train && n <= q8_rows && !x.track_op())
        {
            q.forward(&x2.contiguous()?)?
        } else if !train && !x.track_op() && bf16 && n > Q8_MAX_ROWS {
            crate::kernels::packed_matmul_sum(&[(&x2, Packed::Bf16(self.bf16_packed(true)?))], &[])?
        } else if !train && !x.track_op() {
            match self.f32_packed(true)? {
                Some(p) => crate::kernels::packed_matmul_sum(&[(&x2, Packed::F32(p))], &[])?,
                None => crate::kernels::matmul(&x2.contiguous()?, self.transposed()?)?,
            }
        } else {
            crate::grad_ops::frozen_matmul(&x2, &self.weight)?
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(lora) = &self.lora
            && !lora.merged
        {
            let xin = if train && lora.dropout > 0.0 {
                dropout(&x2, lora.dropout, rng)?
            } else {
                x2
            };
            let up = xin
                .matmul(&lora.a.as_tensor().t()?)?
                .matmul(&lora.b.as_tensor().t()?)?;
            y = (y + (up * lora.scale)?)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.out_features();
        Ok(y.reshape(out_dims)?)
    }

    /// Makes (`on`) or drops the quantized copy of the weight that decode steps read. An
    /// unmerged adapter still applies on top (in f32); a merged one is taken back out where
    /// the base weight is exactly Q4_1 ([`crate::q8::Q8Matrix::with_merged_adapter`]).
    pub(crate) fn quantize_q8(&mut self, on: bool) -> Result<()> {
        self.q8 = match &self.lora {
            _ if !on => None,
            Some(lora) if lora.merged => {
                let base = (&self.weight - Self::delta(lora)?)?;
                Some(crate::q8::Q8Matrix::with_merged_adapter(
                    &self.weight,
                    &base,
                    lora.a.as_tensor(),
                    lora.b.as_tensor(),
                    lora.scale,
                )?)
            }
            _ => Some(q8_matmul(&self.weight)?),
        };
        Ok(())
    }

    /// Takes `other`'s quantized copy as this layer's (tests: drafts from other weights).
    #[cfg(test)]
    pub(crate) fn take_q8_copy_of(&mut self, other: &Linear) {
        self.q8 = other.q8.clone();
    }

    /// The format of the quantized copy ([`Linear::quantize_q8`]), if there is one.
    pub(crate) fn q8_format(&self) -> Option<&'static str> {
        self.q8.as_ref().map(crate::q8::Q8Matrix::format)
    }

    /// The contiguous `[in, out]` copy of the weight (made once).
    fn transposed(&self) -> Result<&Tensor> {
        if let Some(t) = self.weight_t.get() {
            return Ok(t);
        }
        let t = self.weight.t()?.contiguous()?;
        Ok(self.weight_t.get_or_init(|| t))
    }

    /// The weight rounded to bf16 and packed as the right operand of `x W^T` (`forward`) or
    /// of `dy W`, made on first use.
    pub(crate) fn bf16_packed(&self, forward: bool) -> Result<&PackedBf16> {
        let slot = &self.bf16[usize::from(!forward)];
        if let Some(p) = slot.get() {
            return Ok(p);
        }
        let (out_f, in_f) = (self.out_features(), self.in_features());
        let packed = crate::kernels::with_f32(&self.weight, |w| {
            if forward {
                PackedBf16::pack(w, in_f, out_f, 1, in_f)
            } else {
                PackedBf16::pack(w, out_f, in_f, in_f, 1)
            }
        })?;
        Ok(slot.get_or_init(|| Arc::new(packed)))
    }

    /// The weight packed in f32 as the right operand of `x W^T` (`forward`) or of `dy W`,
    /// made on first use; `None` where the engine's product does not run
    /// ([`crate::sgemm::supported`]). Inference makes only the forward copy; training makes
    /// both (one more copy of the weights, for a faster backward).
    pub(crate) fn f32_packed(&self, forward: bool) -> Result<Option<&PackedRhs>> {
        if !crate::sgemm::supported() || !crate::kernels::fused_ok(&self.weight) {
            return Ok(None);
        }
        let slot = &self.f32[usize::from(!forward)];
        if let Some(p) = slot.get() {
            return Ok(Some(p));
        }
        let (out_f, in_f) = (self.out_features(), self.in_features());
        let packed = crate::kernels::with_f32(&self.weight, |w| {
            PackedRhs::pack(if forward {
                View::transposed(w, in_f, out_f)
            } else {
                View::row_major(w, out_f, in_f)
            })
        })?;
        Ok(Some(slot.get_or_init(|| Arc::new(packed))))
    }

    /// Frees the bf16 copies ([`Linear::bf16_packed`]).
    pub(crate) fn drop_bf16(&mut self) {
        self.bf16 = Default::default();
    }

    /// Frees the packed f32 copies ([`Linear::f32_packed`]); they are made again on use.
    pub(crate) fn drop_f32_packed(&mut self) {
        self.f32 = Default::default();
    }

    /// Attaches a fresh adapter: A Kaiming-uniform with a = √5 (bound 1/√in), B zero.
    pub(crate) fn add_lora(
        &mut self,
        r: usize,
        scale: f64,
        dropout: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let (in_f, out_f) = (self.in_features(), self.out_features());
        let device = self.weight.device();
        let bound = 1.0 / (in_f as f64).sqrt();
        let a: Vec<f32> = (0..r * in_f)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (r, in_f), device)?)?;
        let b = Var::zeros((out_f, r), DType::F32, device)?;
        self.lora = Some(LoraAdapter {
            a,
            b,
            scale,
            dropout,
            merged: false,
        });
        Ok(())
    }

    fn delta(lora: &LoraAdapter) -> Result<Tensor> {
        Ok((lora.b.as_tensor().matmul(lora.a.as_tensor())? * lora.scale)?.detach())
    }

    pub(crate) fn merge(&mut self) -> Result<()> {
        if let Some(lora) = &mut self.lora
            && !lora.merged
        {
            self.weight = (&self.weight + Self::delta(lora)?)?.detach();
            self.weight_t = OnceLock::new();
            self.bf16 = Default::default();
            self.f32 = Default::default();
            self.q8 = None;
            lora.merged = true;
        }
        Ok(())
    }

    pub(crate) fn unmerge(&mut self) -> Result<()> {
        if let Some(lora) = &mut self.lora
            && lora.merged
        {
            self.weight = (&self.weight - Self::delta(lora)?)?.detach();
            self.weight_t = OnceLock::new();
            self.bf16 = Default::default();
            self.f32 = Default::default();
            self.q8 = None;
            lora.merged = false;
        }
        Ok(())
    }
}

/// Which copy of a frozen weight an inference product reads, by its number of rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InferencePrecision {
    /// Products of at most this many rows read the Q8_0 copy, where there is one.
    pub(crate) q8_rows: usize,
    /// Products of more than [`Q8_MAX_ROWS`] rows read the bf16 copy
    /// (`Llama::set_bf16_matmuls`).
    pub(crate) bf16: bool,
}

/// Inference products with at most this many rows (decode steps) use the Q8_0 weights when
/// the model has them; prefill and scoring stay f32 unless the scope takes prompts in too
/// ([`crate::Q8Scope::LayersHeadAndPrompts`]).
pub(crate) const Q8_MAX_ROWS: usize = 16;

/// A Q8_0 (8-bit, blocks of 32 with an f16 scale) matmul over `weight` (`[out, in]`).
pub(crate) fn q8_matmul(weight: &Tensor) -> Result<crate::q8::Q8Matrix> {
    crate::q8::Q8Matrix::new(weight)
}

/// Inverted dropout with a mask drawn from the model's seeded generator.
fn dropout(x: &Tensor, p: f64, rng: &Mutex<ChaCha8Rng>) -> Result<Tensor> {
    Ok((x * dropout_mask(x, p, rng)?)?)
}

/// Elements of a dropout mask drawn from one generator stream.
const DROPOUT_CHUNK: usize = 1 << 14;

/// One inverted-dropout draw: element `i` is dropped (0) with probability `p`, else scaled by
/// `1 / (1 - p)`.
///
/// One seed is drawn from the model's generator per draw; chunks of [`DROPOUT_CHUNK`] elements
/// then draw from their own ChaCha8 stream of that seed, in parallel, so the mask depends on the
/// seed only, not on the thread count. Each element compares 32 random bits with `p * 2^32`.
struct DropoutDraw {
    seed: u64,
    threshold: u64,
    keep: f32,
}

impl DropoutDraw {
    fn new(p: f64, rng: &Mutex<ChaCha8Rng>) -> Self {
        use rand::RngCore;
        Self {
            seed: rng.lock().unwrap_or_else(|e| e.into_inner()).next_u64(),
            threshold: (p.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64,
            keep: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// Calls `f(i, m)` for each element `i` of chunk `chunk` (of `len` elements) in order.
    fn chunk(&self, chunk: usize, len: usize, f: impl FnMut(usize, f32)) {
        self.within_chunk(chunk, 0, len, f);
    }

    /// Calls `f(j, m)` for the elements `from + j`, `j < len`, of chunk `chunk`, in order: the
    /// stream is started at the element's 64-bit word, each of which holds two elements.
    fn within_chunk(&self, chunk: usize, from: usize, len: usize, mut f: impl FnMut(usize, f32)) {
        use rand::RngCore;
        let mut g = ChaCha8Rng::seed_from_u64(self.seed);
        g.set_stream(chunk as u64);
        // The word position counts 32-bit words: one 64-bit draw per element pair.
        g.set_word_pos((from / 2 * 2) as u128);
        let mut i = from / 2 * 2;
        while i < from + len {
            let bits = g.next_u64();
            for k in 0..2 {
                if (from..from + len).contains(&(i + k)) {
                    let r = (bits >> (32 * k)) & 0xffff_ffff;
                    f(
                        i + k - from,
                        if r < self.threshold { 0.0 } else { self.keep },
                    );
                }
            }
            i += 2;
        }
    }

    /// `(x * mask, mask)` where `x` holds rows `rows[i]` of a `[full_rows, w]` tensor and the
    /// mask is those rows of the mask [`DropoutDraw::apply`] draws for the whole tensor.
    fn apply_rows(&self, x: &Tensor, rows: &[usize], full_rows: usize) -> Result<(Tensor, Tensor)> {
        use rayon::prelude::*;
        let (n, w) = x.dims2()?;
        if n != rows.len() || rows.iter().any(|&r| r >= full_rows) {
            return Err(crate::error::EngineError::invalid(format!(
                "dropout over {} rows of {full_rows}, given a [{n}, {w}] input",
                rows.len()
            )));
        }
        let (mut xin, mut mask) = (vec![0f32; n * w], vec![0f32; n * w]);
        crate::kernels::with_f32(x, |x| {
            xin.par_chunks_mut(w.max(1))
                .zip(mask.par_chunks_mut(w.max(1)))
                .enumerate()
                .for_each(|(i, (xo, mo))| {
                    let xs = &x[i * w..(i + 1) * w];
                    let mut at = 0;
                    while at < w {
                        let e = rows[i] * w + at;
                        let (chunk, from) = (e / DROPOUT_CHUNK, e % DROPOUT_CHUNK);
                        let len = (DROPOUT_CHUNK - from).min(w - at);
                        self.within_chunk(chunk, from, len, |j, m| {
                            mo[at + j] = m;
                            xo[at + j] = xs[at + j] * m;
                        });
                        at += len;
                    }
                });
        })?;
        Ok((
            Tensor::from_vec(xin, (n, w), x.device())?,
            Tensor::from_vec(mask, (n, w), x.device())?,
        ))
    }

    fn mask(&self, x: &Tensor) -> Result<Tensor> {
        use rayon::prelude::*;
        let mut mask = vec![0f32; x.elem_count()];
        mask.par_chunks_mut(DROPOUT_CHUNK)
            .enumerate()
            .for_each(|(c, out)| self.chunk(c, out.len(), |i, m| out[i] = m));
        Ok(Tensor::from_vec(mask, x.shape(), x.device())?)
    }

    /// `(x * mask, mask)` in one pass.
    fn apply(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        use rayon::prelude::*;
        let n = x.elem_count();
        let (mut xin, mut mask) = (vec![0f32; n], vec![0f32; n]);
        crate::kernels::with_f32(x, |x| {
            xin.par_chunks_mut(DROPOUT_CHUNK)
                .zip(mask.par_chunks_mut(DROPOUT_CHUNK))
                .enumerate()
                .for_each(|(c, (xo, mo))| {
                    let xs = &x[c * DROPOUT_CHUNK..c * DROPOUT_CHUNK + xo.len()];
                    self.chunk(c, xo.len(), |i, m| {
                        mo[i] = m;
                        xo[i] = xs[i] * m;
                    });
                });
        })?;
        Ok((
            Tensor::from_vec(xin, x.shape(), x.device())?,
            Tensor::from_vec(mask, x.shape(), x.device())?,
        ))
    }
}

/// An inverted-dropout mask shaped like `x` (see [`DropoutDraw`]).
pub(crate) fn dropout_mask(x: &Tensor, p: f64, rng: &Mutex<ChaCha8Rng>) -> Result<Tensor> {
    DropoutDraw::new(p, rng).mask(x)
}

/// `(dropout(x), mask)` for the same draw as [`dropout_mask`] would make, in one pass over `x`
/// (f32 CPU tensors; others multiply by the mask).
pub(crate) fn dropout_apply(
    x: &Tensor,
    p: f64,
    rng: &Mutex<ChaCha8Rng>,
) -> Result<(Tensor, Tensor)> {
    let draw = DropoutDraw::new(p, rng);
    if crate::kernels::fused_ok(x) {
        draw.apply(x)
    } else {
        let mask = draw.mask(x)?;
        Ok(((x * &mask)?, mask))
    }
}

/// [`dropout_apply`] for rows `rows` of a `[full_rows, w]` input, given only those rows as
/// `x` (`[rows.len(), w]`): the same draw from the generator, and the same mask on those rows
/// as the whole input would get.
pub(crate) fn dropout_apply_rows(
    x: &Tensor,
    rows: &[usize],
    full_rows: usize,
    p: f64,
    rng: &Mutex<ChaCha8Rng>,
) -> Result<(Tensor, Tensor)> {
    let draw = DropoutDraw::new(p, rng);
    if crate::kernels::fused_ok(x) {
        draw.apply_rows(x, rows, full_rows)
    } else {
        let w = x.dim(1)?;
        let full = Tensor::zeros((full_rows, w), x.dtype(), x.device())?;
        let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let index = Tensor::from_vec(index, rows.len(), x.device())?;
        let mask = draw.mask(&full)?.index_select(&index, 0)?;
        Ok(((x * &mask)?, mask))
    }
}

/// A seeded generator for LoRA initialisation and dropout.
pub(crate) fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::RngCore;

    #[test]
    fn dropout_masks_drop_at_rate_p_and_depend_only_on_the_seed() {
        let x = Tensor::zeros((300, 1000), DType::F32, &Device::Cpu).unwrap();
        let rng = Mutex::new(seeded_rng(3));
        let draw = |rng: &Mutex<ChaCha8Rng>| -> Vec<f32> {
            dropout_mask(&x, 0.1, rng)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = draw(&rng);
        let b = draw(&rng);
        let keep = 1.0 / 0.9f32;
        assert!(a.iter().all(|&m| m == 0.0 || m == keep));
        let dropped = a.iter().filter(|&&m| m == 0.0).count() as f64 / a.len() as f64;
        // 300k draws: the standard error of the rate is 5.5e-4.
        assert!((dropped - 0.1).abs() < 3e-3, "dropped {dropped}");
        assert_ne!(a, b, "successive masks differ");
        let again = draw(&Mutex::new(seeded_rng(3)));
        assert_eq!(a, again, "same seed, same mask");
        let none = dropout_mask(&x, 0.0, &rng).unwrap();
        assert_eq!(none.min_all().unwrap().to_scalar::<f32>().unwrap(), 1.0);
    }

    #[test]
    fn dropout_over_chosen_rows_equals_those_rows_of_the_whole_draw() {
        // An odd width, so that rows start at odd elements and cross chunk boundaries.
        let (full_rows, w) = (40, 1001);
        let x = Tensor::rand(0f32, 1.0, (full_rows, w), &Device::Cpu).unwrap();
        let rows = [0usize, 16, 17, 33, 39];
        let index = Tensor::new(&[0u32, 16, 17, 33, 39], &Device::Cpu).unwrap();
        let picked = x.index_select(&index, 0).unwrap();
        let (whole_x, whole_m) = dropout_apply(&x, 0.3, &Mutex::new(seeded_rng(5))).unwrap();
        let rng = Mutex::new(seeded_rng(5));
        let (got_x, got_m) = dropout_apply_rows(&picked, &rows, full_rows, 0.3, &rng).unwrap();
        let rows_of = |t: &Tensor| t.index_select(&index, 0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got_m.to_vec2::<f32>().unwrap(), rows_of(&whole_m));
        assert_eq!(got_x.to_vec2::<f32>().unwrap(), rows_of(&whole_x));
        // One seed drawn, as for the whole input.
        let mut after = seeded_rng(5);
        after.next_u64();
        assert_eq!(rng.lock().unwrap().next_u64(), after.next_u64());
        assert!(dropout_apply_rows(&picked, &rows, 39, 0.3, &rng).is_err());
    }
}
