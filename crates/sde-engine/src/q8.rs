//! Q8_0 weights for generation: products of decode steps' few rows (at most
//! [`crate::lora::Q8_MAX_ROWS`]), and of whole prompts where the scope says so
//! ([`crate::Q8Scope::LayersHeadAndPrompts`]), against an 8-bit copy of a weight matrix.
//!
//! The numbers are Q8_0's (ggml): weights and inputs are quantized in blocks of 32 along the
//! inner dimension, each block with one scale (`max |x| / 127`, kept at f16 precision), and
//! each block's dot product is exact in integers. On x86-64 with AVX-512 VNNI or AVX2 the
//! weights are packed ([`PackedQ8`]): sixteen output columns side by side, four inner positions
//! per 32-bit lane, so that one load of weights serves a tile of input rows. With VNNI one
//! `vpdpbusd` does 64 multiply-adds; with AVX2 each half of the sixteen columns takes
//! `vpsignb`, `vpmaddubsw` and `vpmaddwd` for 32 (ggml's sign trick keeps the 16-bit pair sums
//! from saturating). Elsewhere candle's Q8_0 matmul runs instead, one row and one column at a
//! time.
//!
//! Weights that are exactly Q4_1 (the default model's layers: its GGUF stores them so, and
//! loading dequantizes them to f32) keep their 4-bit values instead
//! ([`PackedIsa::Avx512VnniQ4_1`], [`PackedIsa::Avx2Q4_1`]): the weights are then not rounded
//! at all, only the inputs, and a decode step reads 20 bytes a block of 32 instead of 34 (it
//! waits on memory: on the default model at batch 1 with VNNI, a step took about 30% less
//! time). With AVX2 the product also takes half the instructions of Q8_0's; with VNNI it
//! takes a few more (the nibbles' unpacking, the minimum's term), about 10% less
//! throughput for prompts' many rows. A merged LoRA adapter is taken back out of such a
//! weight and added beside the product ([`Q8Matrix::with_merged_adapter`]).
//!
//! Invariant: every path computes the same quantized product for a given weight format (Q8_0
//! or Q4_1); they differ only in float summation order (tested below).
#![allow(unsafe_code)]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};
use half::f16;
use rayon::prelude::*;

use crate::error::{EngineError, Result};

/// Inner positions per quantization block.
const BLOCK: usize = 32;
/// Output columns per packed group (one 512-bit register of i32 or f32; two 256-bit ones).
const GROUP: usize = 16;
/// Input rows that share one load of a weight group.
const ROW_TILE: usize = 8;
/// Input rows that every group of columns of a product takes in turn (prompts): their
/// quantized values (at most 64 × 1536 × 2 bytes) stay in L2.
const ROW_BLOCK: usize = 64;
/// Weight elements at or above which a product is split over the threads.
const PARALLEL_MIN_WEIGHTS: usize = 256 * 1024;
/// Rows per product with candle's Q8_0 kernels on a GPU (see [`Q8Matrix::forward`]).
const DEVICE_MAX_ROWS: usize = 8;
/// How far ahead of the block it reads the VNNI Q4_1 product prefetches the weights (8
/// blocks). A decode step at batch 1 on the default model ran 8-17% more tokens/s with it
/// (1024 to 4096 did as well); the same for the Q8_0 product gained nothing.
const Q4_1_PREFETCH_BYTES: usize = 2048;
/// Input rows quantized per task when there are more than this many.
const QUANTIZE_ROWS_PER_TASK: usize = 64;

/// A weight matrix (`[out, in]`) quantized to Q8_0 for products of a few rows.
#[derive(Debug, Clone)]
pub(crate) enum Q8Matrix {
    /// Packed for AVX-512 VNNI or AVX2 (shared by clones of the model).
    Packed(std::sync::Arc<PackedQ8>),
    /// candle's Q8_0 matmul (a GPU, a CPU with neither, or an inner size that is not a
    /// multiple of 32).
    Candle(QMatMul),
}

/// The instructions a [`PackedQ8`] product runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackedIsa {
    /// AVX-512 F, BW and VNNI: inputs as unsigned bytes (`q + 128`), `vpdpbusd`.
    Avx512Vnni,
    /// AVX2, FMA and F16C: signed inputs, `vpmaddubsw` on `|x|` and the sign-adjusted weights.
    Avx2,
    /// AVX2, FMA and F16C against weights that are exactly Q4_1 (ggml's 4-bit values
    /// `0..=15` with a scale and a minimum per block of 32; see [`PackedQ8::from_q4_1`]):
    /// `vpmaddubsw` takes the weights as its unsigned operand, so no sign is moved, and a
    /// block's pair sums add up in 16 bits without saturating. Half the instructions of
    /// [`PackedIsa::Avx2`] per product and 20 bytes a block instead of 34.
    Avx2Q4_1,
    /// AVX-512 F, BW and VNNI against weights that are exactly Q4_1: `vpdpbusd` takes the
    /// 4-bit weights as its unsigned operand and the inputs as signed bytes, so that nothing
    /// is offset; 20 bytes a block instead of 34, for products that wait on memory.
    Avx512VnniQ4_1,
}

impl PackedIsa {
    /// Bytes of one quantized input block: the values, and for AVX2 their magnitudes too.
    fn input_block_bytes(self) -> usize {
        match self {
            PackedIsa::Avx512Vnni | PackedIsa::Avx2Q4_1 | PackedIsa::Avx512VnniQ4_1 => BLOCK,
            PackedIsa::Avx2 => 2 * BLOCK,
        }
    }

    /// The product against exactly-Q4_1 weights that goes with this Q8_0 one (the VNNI one
    /// quantizes its inputs with AVX2, as the AVX2 products do).
    fn q4_1(self) -> Option<Self> {
        match self {
            PackedIsa::Avx512Vnni => avx2_available().then_some(PackedIsa::Avx512VnniQ4_1),
            PackedIsa::Avx2 => Some(PackedIsa::Avx2Q4_1),
            PackedIsa::Avx2Q4_1 | PackedIsa::Avx512VnniQ4_1 => None,
        }
    }

    /// Whether the weights are Q4_1 (4-bit values, a scale and a minimum per block).
    fn is_q4_1(self) -> bool {
        matches!(self, PackedIsa::Avx2Q4_1 | PackedIsa::Avx512VnniQ4_1)
    }

    /// Where inner position `i` of column `c` (within its group of 16) lies in a block of
    /// Q4_1 weights packed for this product (see [`PackedQ8::from_q4_1`]): the byte, and the
    /// shift of its nibble.
    fn q4_1_nibble(self, c: usize, i: usize) -> (usize, u32) {
        match self {
            PackedIsa::Avx512VnniQ4_1 => ((i % 16) / 4 * 64 + c * 4 + i % 4, 4 * (i / 16) as u32),
            _ => ((i / 4) * 32 + (c % 8) * 4 + i % 4, 4 * (c / 8) as u32),
        }
    }

    /// The best packed product this CPU runs, if any.
    fn detect() -> Option<Self> {
        if vnni_available() {
            Some(PackedIsa::Avx512Vnni)
        } else if avx2_available() {
            Some(PackedIsa::Avx2)
        } else {
            None
        }
    }
}

impl Q8Matrix {
    /// Quantizes `weight` (`[out, in]`, f32). Where the CPU has AVX-512 VNNI or AVX2 and the
    /// weight is exactly Q4_1 (as the default model's layers are, dequantized from its GGUF),
    /// it keeps those 4-bit values instead: no rounding of the weights at all.
    pub(crate) fn new(weight: &Tensor) -> Result<Self> {
        if let Some(p) = Self::q4_1(weight)? {
            return Ok(Q8Matrix::Packed(std::sync::Arc::new(p)));
        }
        let (n, k) = weight.dims2()?;
        if let Some(isa) = PackedIsa::detect().filter(|_| weight.device().is_cpu())
            && k % BLOCK == 0
            && n > 0
        {
            let w = weight.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            return Ok(Q8Matrix::Packed(std::sync::Arc::new(PackedQ8::quantize(
                &w, n, k, isa,
            ))));
        }
        let q = QTensor::quantize(&weight.contiguous()?, GgmlDType::Q8_0)?;
        Ok(Q8Matrix::Candle(QMatMul::from_qtensor(q)?))
    }

    /// For a weight with a merged LoRA adapter, `weight = base + scale · B A` (`a` `[r, in]`,
    /// `b` `[out, r]`): where `base` is exactly Q4_1 and the CPU takes the Q4_1 product
    /// ([`Q8Matrix::new`]), packs `base` and adds the adapter's product to every product in f32
    /// (`r · (in + out)` multiply-adds a row, against `in · out` for the weight); otherwise
    /// quantizes `weight` as [`Q8Matrix::new`] does.
    pub(crate) fn with_merged_adapter(
        weight: &Tensor,
        base: &Tensor,
        a: &Tensor,
        b: &Tensor,
        scale: f64,
    ) -> Result<Self> {
        if let Some(mut p) = Self::q4_1(base)? {
            let bt = (b.t()? * scale)?.contiguous()?;
            p.adapter = Some(LowRank {
                a: a.contiguous()?.flatten_all()?.to_vec1()?,
                bt: bt.flatten_all()?.to_vec1()?,
            });
            return Ok(Q8Matrix::Packed(std::sync::Arc::new(p)));
        }
        Self::new(weight)
    }

    /// `weight` packed as Q4_1 where it is exactly that and the CPU takes a Q4_1 product
    /// (AVX-512 VNNI, or AVX2); `None` otherwise.
    fn q4_1(weight: &Tensor) -> Result<Option<PackedQ8>> {
        let (n, k) = weight.dims2()?;
        let Some(isa) = PackedIsa::detect().and_then(PackedIsa::q4_1) else {
            return Ok(None);
        };
        if !weight.device().is_cpu() || k % BLOCK != 0 || n == 0 {
            return Ok(None);
        }
        let w = weight.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(PackedQ8::from_q4_1(&w, n, k, isa))
    }

    /// The weights' format: `"Q4_1"` or `"Q8_0"`.
    pub(crate) fn format(&self) -> &'static str {
        match self {
            Q8Matrix::Packed(p) if p.isa.is_q4_1() => "Q4_1",
            _ => "Q8_0",
        }
    }

    /// `x` (`[m, in]`) times the transposed weight: `[m, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            // On a GPU, candle 0.11 takes more than 8 rows to its matrix kernel (MMQ). Run
            // as the default model's fixture tests (several models on one GPU, tests in
            // parallel), its greedy continuations varied between runs, from 0 to 56 of 56
            // reference tokens; rows taken 8 at a time (its vector kernel, MMVQ) gave 48 of
            // 56 in every run. Products of random matrices agree either way
            // (`cuda_q8_products_are_close_to_f32`); the cause is not established.
            Q8Matrix::Candle(q) if !x.device().is_cpu() && x.dim(0)? > DEVICE_MAX_ROWS => {
                let m = x.dim(0)?;
                let parts = (0..m)
                    .step_by(DEVICE_MAX_ROWS)
                    .map(|r| q.forward(&x.narrow(0, r, DEVICE_MAX_ROWS.min(m - r))?))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Tensor::cat(&parts, 0)?)
            }
            Q8Matrix::Candle(q) => Ok(q.forward(x)?),
            Q8Matrix::Packed(q) => {
                let (m, k) = x.dims2()?;
                if k != q.k {
                    return Err(EngineError::invalid(format!(
                        "Q8 product: input width {k}, weight width {}",
                        q.k
                    )));
                }
                let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let mut out = vec![0f32; m * q.n];
                q.matmul(&xs, m, &mut out);
                Ok(Tensor::from_vec(out, (m, q.n), x.device())?)
            }
        }
    }
}

fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One block of 32 values as Q8_0: the f16-rounded scale and the quantized values.
pub(crate) fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    f16::from_f32(d).to_f32()
}

/// [`quantize_block`] with AVX-512, writing the quantized values as unsigned bytes
/// (`q + 128`), the form `vpdpbusd` takes its first operand in.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_block_offset(x: &[f32], u: &mut [u8]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() == BLOCK && u.len() == BLOCK);
    // SAFETY: both slices hold exactly one block (asserted).
    let (a, b) = unsafe {
        (
            _mm512_loadu_ps(x.as_ptr()),
            _mm512_loadu_ps(x.as_ptr().add(16)),
        )
    };
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    let d = amax / 127.0;
    let id = _mm512_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    // Rounds half away from zero, as `f32::round` does: truncate, then step away from zero
    // where the dropped fraction (exact in f32) is at least one half. Adding ±0.5 before
    // truncating would not do: the sum itself rounds, just below the halves.
    let sign = _mm512_set1_epi32(i32::MIN);
    let one = _mm512_set1_ps(1.0);
    let half = _mm512_set1_ps(0.5);
    let round = |v: __m512| {
        let s = _mm512_mul_ps(v, id);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(s, t)), half);
        let step = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_and_si512(_mm512_castps_si512(s), sign),
            _mm512_castps_si512(one),
        ));
        _mm512_cvttps_epi32(_mm512_mask_add_ps(t, up, t, step))
    };
    let flip = _mm_set1_epi8(i8::MIN);
    let (lo, hi) = (
        _mm_xor_si128(_mm512_cvtepi32_epi8(round(a)), flip),
        _mm_xor_si128(_mm512_cvtepi32_epi8(round(b)), flip),
    );
    // SAFETY: `u` holds 32 bytes (asserted).
    unsafe {
        _mm_storeu_si128(u.as_mut_ptr().cast(), lo);
        _mm_storeu_si128(u.as_mut_ptr().add(16).cast(), hi);
    }
    f16::from_f32(d).to_f32()
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn quantize_block_offset(_: &[f32], _: &mut [u8]) -> f32 {
    unreachable!("VNNI Q8 weights are only made on x86-64")
}

/// Weights packed for the AVX-512 VNNI and AVX2 products: for each group of 16 output columns
/// and each block of 32 inner positions, 8 chunks of 64 bytes, chunk `j` holding inner
/// positions `4j..4j+4` of each of the 16 columns (AVX2 reads each chunk as two halves of 8
/// columns).
#[derive(Debug)]
pub(crate) struct PackedQ8 {
    isa: PackedIsa,
    n: usize,
    k: usize,
    qs: Vec<i8>,
    /// Weight scale per (group, block, column).
    scales: Vec<f16>,
    /// The sum of the column's quantized weights in the block, per (group, block, column):
    /// VNNI takes its inputs as unsigned bytes (`q + 128`), and 128 × this takes the offset
    /// back out.
    sums: Vec<i16>,
    /// For Q4_1 weights, the Q4_1 minimum per (group, block, column); `qs` then
    /// holds two 4-bit values a byte (see [`PackedQ8::from_q4_1`]) and `scales` Q4_1's scales.
    mins: Vec<f16>,
    /// A merged LoRA adapter that the packed weights leave out (see
    /// [`Q8Matrix::with_merged_adapter`]), added to every product in f32.
    adapter: Option<LowRank>,
}

/// `scale · B A` as `x (B A)ᵀ` needs it: `a` is A (`[r, k]`), `bt` is `scale · Bᵀ` (`[r, n]`).
#[derive(Debug)]
struct LowRank {
    a: Vec<f32>,
    bt: Vec<f32>,
}

impl LowRank {
    /// Adds `x Aᵀ (scale · Bᵀ)` to `out` (`[m, n]`), `x` being `[m, k]`.
    fn add_product(&self, x: &[f32], k: usize, n: usize, out: &mut [f32]) {
        let add_row = |(x, out): (&[f32], &mut [f32])| {
            for (a, bt) in self.a.chunks_exact(k).zip(self.bt.chunks_exact(n)) {
                let xa = crate::kernels::dot_lanes(x, a);
                for (o, &b) in out.iter_mut().zip(bt) {
                    *o += xa * b;
                }
            }
        };
        // Multiply-adds: rows × r × (k + n).
        let work = out.len() / n * self.a.len() / k * (k + n);
        if work >= PARALLEL_MIN_WEIGHTS && rayon::current_num_threads() > 1 {
            x.par_chunks(k).zip(out.par_chunks_mut(n)).for_each(add_row);
        } else {
            x.chunks(k).zip(out.chunks_mut(n)).for_each(add_row);
        }
    }
}

impl PackedQ8 {
    /// `w` (`[n, k]`) quantized to Q8_0 and packed for the best product this CPU runs; `None`
    /// where it runs none or `k` is not a multiple of 32.
    pub(crate) fn q8_0(w: &[f32], n: usize, k: usize) -> Option<Self> {
        let isa =
            PackedIsa::detect().filter(|_| k.is_multiple_of(BLOCK) && n > 0 && w.len() == n * k)?;
        Some(Self::quantize(w, n, k, isa))
    }

    /// Packs `w` (`[n, k]`, `k` a multiple of 32) for products with `isa`, which the CPU must
    /// have.
    fn quantize(w: &[f32], n: usize, k: usize, isa: PackedIsa) -> Self {
        let (groups, blocks) = (n.div_ceil(GROUP), k / BLOCK);
        let mut qs = vec![0i8; groups * blocks * GROUP * BLOCK];
        let mut scales = vec![f16::ZERO; groups * blocks * GROUP];
        let mut sums = vec![0i16; groups * blocks * GROUP];
        let mut q = [0i8; BLOCK];
        for col in 0..n {
            let (g, c) = (col / GROUP, col % GROUP);
            for b in 0..blocks {
                let start = col * k + b * BLOCK;
                let d = quantize_block(&w[start..start + BLOCK], &mut q);
                let gb = g * blocks + b;
                scales[gb * GROUP + c] = f16::from_f32(d);
                sums[gb * GROUP + c] = q.iter().map(|&v| v as i16).sum::<i16>();
                for (i, &v) in q.iter().enumerate() {
                    qs[gb * GROUP * BLOCK + (i / 4) * GROUP * 4 + c * 4 + i % 4] = v;
                }
            }
        }
        PackedQ8 {
            isa,
            n,
            k,
            qs,
            scales,
            sums,
            mins: Vec::new(),
            adapter: None,
        }
    }

    /// Packs `w` (`[n, k]`, `k` a multiple of 32) as Q4_1 for `isa` (a Q4_1 product the CPU
    /// has) if every block of 32 along `k` is exactly `d · q + m` with `q` in `0..=15` and
    /// `d`, `m` at f16 precision, as ggml's dequantization writes it (up to a relative `2⁻⁸`
    /// of `d`, which a merged adapter taken back out stays far within); `None` otherwise.
    ///
    /// Layout: 256 bytes for each group of 16 columns and each block. For
    /// [`PackedIsa::Avx2Q4_1`], 8 chunks of 32 bytes: byte `4c + i` of chunk `j` holds inner
    /// position `4j + i` of column `c` in its low nibble and of column `c + 8` in its high
    /// nibble. For [`PackedIsa::Avx512VnniQ4_1`], 4 chunks of 64 bytes: byte `4c + i` of chunk
    /// `j` holds inner position `4j + i` of column `c` in its low nibble and `16 + 4j + i` in
    /// its high nibble.
    pub(crate) fn from_q4_1(w: &[f32], n: usize, k: usize, isa: PackedIsa) -> Option<Self> {
        debug_assert!(isa.is_q4_1());
        let (groups, blocks) = (n.div_ceil(GROUP), k / BLOCK);
        let mut qs = vec![0i8; groups * blocks * GROUP * BLOCK / 2];
        let mut scales = vec![f16::ZERO; groups * blocks * GROUP];
        let mut mins = vec![f16::ZERO; groups * blocks * GROUP];
        for col in 0..n {
            let (g, c) = (col / GROUP, col % GROUP);
            for b in 0..blocks {
                let start = col * k + b * BLOCK;
                let (d, m, q) = q4_1_block(&w[start..start + BLOCK])?;
                let gb = g * blocks + b;
                scales[gb * GROUP + c] = d;
                mins[gb * GROUP + c] = m;
                for (i, &v) in q.iter().enumerate() {
                    let (at, shift) = isa.q4_1_nibble(c, i);
                    qs[gb * GROUP * BLOCK / 2 + at] |= (v << shift) as i8;
                }
            }
        }
        Some(PackedQ8 {
            isa,
            n,
            k,
            qs,
            scales,
            sums: Vec::new(),
            mins,
            adapter: None,
        })
    }

    /// `out[m, n] = x[m, k] · Wᵀ`, both quantized to Q8_0.
    pub(crate) fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let blocks = self.k / BLOCK;
        // Inputs with one scale per (row, block): unsigned bytes (q + 128) for VNNI; for AVX2
        // the signed values' bits followed by their magnitudes (computed once here rather
        // than for every group of columns).
        let isa = self.isa;
        let block_bytes = isa.input_block_bytes();
        let mut xq = vec![0u8; m * blocks * block_bytes];
        let mut xd = vec![0f32; m * blocks];
        // Q4_1 also takes each input block's sum (times its scale), for the weights' minimum.
        let mut xs = vec![0f32; m * blocks];
        let quantize_rows = |(x, (xq, (xd, xs))): (&[f32], (&mut [u8], ScalesAndSums<'_>))| {
            for (((chunk, u), d), s) in x
                .chunks_exact(BLOCK)
                .zip(xq.chunks_exact_mut(block_bytes))
                .zip(xd.iter_mut())
                .zip(xs.iter_mut())
            {
                // SAFETY: packed weights are only made for an ISA the CPU has.
                *d = unsafe {
                    match isa {
                        PackedIsa::Avx512Vnni => quantize_block_offset(chunk, u),
                        PackedIsa::Avx2 => {
                            let (q, abs) = u.split_at_mut(BLOCK);
                            let d = quantize_block_avx2(chunk, q);
                            for (a, &v) in abs.iter_mut().zip(q.iter()) {
                                *a = (v as i8).unsigned_abs();
                            }
                            d
                        }
                        PackedIsa::Avx2Q4_1 | PackedIsa::Avx512VnniQ4_1 => {
                            let d = quantize_block_avx2(chunk, u);
                            let sum: i32 = u.iter().map(|&v| v as i8 as i32).sum();
                            *s = d * sum as f32;
                            d
                        }
                    }
                };
            }
        };
        // Prompts bring many rows: their quantization is split over the threads too.
        let rows_per_task = QUANTIZE_ROWS_PER_TASK;
        if m > rows_per_task && rayon::current_num_threads() > 1 {
            let n = rows_per_task * self.k;
            x.par_chunks(n)
                .zip(
                    xq.par_chunks_mut(rows_per_task * blocks * block_bytes).zip(
                        xd.par_chunks_mut(rows_per_task * blocks)
                            .zip(xs.par_chunks_mut(rows_per_task * blocks)),
                    ),
                )
                .for_each(quantize_rows);
        } else {
            quantize_rows((x, (&mut xq, (&mut xd, &mut xs))));
        }
        let groups = self.n.div_ceil(GROUP);
        let out_addr = out.as_mut_ptr() as usize;
        // Rows in blocks that stay in cache while every group of columns passes over them.
        let run = |gs: std::ops::Range<usize>| {
            for rb in (0..m).step_by(ROW_BLOCK) {
                for g in gs.clone() {
                    for r0 in (rb..m.min(rb + ROW_BLOCK)).step_by(ROW_TILE) {
                        let rows = ROW_TILE.min(m - r0);
                        // SAFETY: the CPU has the ISA (checked when this matrix was made); a tile
                        // writes only columns of group `g`, which no other task touches, and stays
                        // inside `out` (`m * n` elements).
                        let t = Tile {
                            g,
                            r0,
                            rows,
                            xq: &xq,
                            xd: &xd,
                            xs: &xs,
                            out: out_addr as *mut f32,
                            m,
                        };
                        unsafe {
                            match isa {
                                PackedIsa::Avx512Vnni => tile(self, t),
                                PackedIsa::Avx2 => tile_avx2::<false>(self, t),
                                PackedIsa::Avx2Q4_1 => tile_avx2::<true>(self, t),
                                PackedIsa::Avx512VnniQ4_1 => tile_q4_1(self, t),
                            }
                        }
                    }
                }
            }
        };
        if self.n * self.k >= PARALLEL_MIN_WEIGHTS && rayon::current_num_threads() > 1 {
            let per = groups.div_ceil(rayon::current_num_threads() * 2).max(1);
            (0..groups.div_ceil(per))
                .into_par_iter()
                .for_each(|i| run(i * per..groups.min((i + 1) * per)));
        } else {
            run(0..groups);
        }
        if let Some(adapter) = &self.adapter {
            adapter.add_product(x, self.k, self.n, out);
        }
    }
}

/// Quantized inputs' scales and scaled sums, one each per (row, block).
type ScalesAndSums<'a> = (&'a mut [f32], &'a mut [f32]);

/// One tile of a packed product: rows `r0..r0 + rows` of the `[m, n]` output `out`, for the 16
/// columns of group `g`, from the quantized inputs `xq` and their per-block scales `xd`.
#[derive(Clone, Copy)]
struct Tile<'a> {
    g: usize,
    r0: usize,
    rows: usize,
    xq: &'a [u8],
    xd: &'a [f32],
    /// Each input block's scale times the sum of its values (Q4_1 weights only).
    xs: &'a [f32],
    out: *mut f32,
    m: usize,
}

/// [`quantize_block`] with AVX2, writing the signed values' bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(x: &[f32], u: &mut [u8]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() == BLOCK && u.len() == BLOCK);
    // SAFETY: `x` holds exactly one block (asserted).
    let v: [__m256; 4] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) });
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let abs = |v: __m256| _mm256_and_ps(v, abs_mask);
    let m = _mm256_max_ps(
        _mm256_max_ps(abs(v[0]), abs(v[1])),
        _mm256_max_ps(abs(v[2]), abs(v[3])),
    );
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)));
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    // Half away from zero, as in `quantize_block_offset`.
    let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let one = _mm256_set1_ps(1.0);
    let half = _mm256_set1_ps(0.5);
    let round = |v: __m256| {
        let s = _mm256_mul_ps(v, id);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs(_mm256_sub_ps(s, t)), half);
        let step = _mm256_or_ps(_mm256_and_ps(s, sign), one);
        _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)))
    };
    let (a, b) = (
        _mm256_packs_epi32(round(v[0]), round(v[1])),
        _mm256_packs_epi32(round(v[2]), round(v[3])),
    );
    // The packs interleave 128-bit lanes; this puts the 32 bytes back in order.
    let q = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(a, b),
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    );
    // SAFETY: `u` holds 32 bytes (asserted).
    unsafe { _mm256_storeu_si256(u.as_mut_ptr().cast(), q) };
    f16::from_f32(d).to_f32()
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn quantize_block_avx2(_: &[f32], _: &mut [u8]) -> f32 {
    unreachable!("packed Q8 weights are only made on x86-64")
}

/// [`tile`] with AVX2: `|x|` times the weights with the sign of `x` applied (`vpmaddubsw` takes
/// its first operand unsigned; Q8_0 values stay within ±127, so a pair of products cannot
/// saturate 16 bits), or with `Q4_1` [`rows_avx2_q4_1`]; [`QUAD`] rows at a time and then one by
/// one. (One instance per format: with both in one function, decode ran about 5% slower.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<const Q4_1: bool>(w: &PackedQ8, tile: Tile<'_>) {
    let mut r = 0;
    while r < tile.rows {
        let (first, quad) = (tile.r0 + r, r + QUAD <= tile.rows);
        // SAFETY: the caller's contract, for rows `first..` of the tile.
        unsafe {
            match (Q4_1, quad) {
                (false, true) => rows_avx2::<QUAD>(w, tile, first),
                (false, false) => rows_avx2::<1>(w, tile, first),
                (true, true) => rows_avx2_q4_1::<QUAD>(w, tile, first),
                (true, false) => rows_avx2_q4_1::<1>(w, tile, first),
            }
        }
        r += if quad { QUAD } else { 1 };
    }
}

/// Rows of an AVX2 tile that share each load of the weights.
const QUAD: usize = 4;

/// Rows `first..first + R` of [`tile_avx2`], both halves of the group's 16 columns from each
/// broadcast input.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn rows_avx2<const R: usize>(w: &PackedQ8, tile: Tile<'_>, first: usize) {
    use std::arch::x86_64::*;
    let Tile {
        g, xq, xd, out, m, ..
    } = tile;
    let blocks = w.k / BLOCK;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..blocks {
        let gb = g * blocks + b;
        let wq = w.qs[gb * GROUP * BLOCK..(gb + 1) * GROUP * BLOCK].as_ptr();
        let xp: [*const i32; R] = std::array::from_fn(|r| {
            let at = ((first + r) * blocks + b) * 2 * BLOCK;
            xq[at..at + 2 * BLOCK].as_ptr().cast()
        });
        let mut sum = [[_mm256_setzero_si256(); 2]; R];
        for j in 0..BLOCK / 4 {
            // SAFETY (all loads): the group's block holds 8 chunks of 64 bytes (both halves),
            // 16 scales; each row's block 32 input bytes and their 32 magnitudes.
            let w0 = unsafe { _mm256_loadu_si256(wq.add(j * 64).cast()) };
            let w1 = unsafe { _mm256_loadu_si256(wq.add(j * 64 + 32).cast()) };
            for (sum, xp) in sum.iter_mut().zip(&xp) {
                let x = _mm256_set1_epi32(unsafe { xp.add(j).read_unaligned() });
                let ax = _mm256_set1_epi32(unsafe { xp.add(BLOCK / 4 + j).read_unaligned() });
                let p0 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, x));
                let p1 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, x));
                sum[0] = _mm256_add_epi32(sum[0], _mm256_madd_epi16(p0, ones));
                sum[1] = _mm256_add_epi32(sum[1], _mm256_madd_epi16(p1, ones));
            }
        }
        let sc = w.scales[gb * GROUP..].as_ptr();
        let sc: [__m256; 2] = std::array::from_fn(|h| {
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(sc.add(h * 8).cast()) })
        });
        for (r, (acc, sum)) in acc.iter_mut().zip(&sum).enumerate() {
            let d = _mm256_set1_ps(xd[(first + r) * blocks + b]);
            for h in 0..2 {
                let s = _mm256_mul_ps(sc[h], d);
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[h]), s, acc[h]);
            }
        }
    }
    // SAFETY: the caller's contract: rows `first..first + R` of group `g` lie inside `out`.
    unsafe { store_rows_avx2(w, g, first, m, out, &acc) };
}

/// Writes the accumulators of rows `first..first + R` for group `g`'s 16 columns (fewer in a
/// partial last group) into `out` (`[m, n]`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_rows_avx2<const R: usize>(
    w: &PackedQ8,
    g: usize,
    first: usize,
    m: usize,
    out: *mut f32,
    acc: &[[std::arch::x86_64::__m256; 2]; R],
) {
    use std::arch::x86_64::*;
    for h in 0..GROUP / 8 {
        let c0 = g * GROUP + h * 8;
        if c0 >= w.n {
            break;
        }
        let cols = 8.min(w.n - c0);
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(cols as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        for (r, acc) in acc.iter().enumerate() {
            debug_assert!((first + r) * w.n + c0 + cols <= m * w.n);
            let dst = unsafe { out.add((first + r) * w.n + c0) };
            // A masked store takes many cycles on AMD's cores: only the last columns pay it.
            if cols == 8 {
                unsafe { _mm256_storeu_ps(dst, acc[h]) };
            } else {
                unsafe { _mm256_maskstore_ps(dst, mask, acc[h]) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_avx2<const Q4_1: bool>(_: &PackedQ8, _: Tile<'_>) {
    unreachable!("packed Q8 weights are only made on x86-64")
}

/// A block of 32 weights as Q4_1: its scale `d`, minimum `m` and 4-bit values `q`, such that
/// each weight is `q · d + m` as ggml dequantizes it (f32 arithmetic on the f16 values), up
/// to `d / 256`; `None` if there are no such values.
fn q4_1_block(w: &[f32]) -> Option<(f16, f16, [u8; BLOCK])> {
    let (lo, hi) = w
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    // ggml's quantizer maps the block's minimum to 0 and its maximum to 15.
    let m = f16::from_f32(lo);
    let d = f16::from_f32((hi - m.to_f32()) / 15.0);
    let (mf, df) = (m.to_f32(), d.to_f32());
    if !(mf.is_finite() && df.is_finite() && df >= 0.0) {
        return None;
    }
    let tolerance = df / 256.0 + mf.abs() * f32::EPSILON;
    let mut q = [0u8; BLOCK];
    for (q, &v) in q.iter_mut().zip(w) {
        let level = if df > 0.0 {
            ((v - mf) / df).round()
        } else {
            0.0
        };
        if !(0.0..=15.0).contains(&level) || (level * df + mf - v).abs() > tolerance {
            return None;
        }
        *q = level as u8;
    }
    Some((d, m, q))
}

/// Rows `first..first + R` of [`tile_avx2`] for [`PackedIsa::Avx2Q4_1`] weights. Per block, `Σ w x = d_w d_x Σ q q_x + m_w ·
/// d_x Σ q_x`: the integer sums take `vpmaddubsw` (weights unsigned, inputs signed) into 16
/// bits, where a block's 16 pair sums stay within ±30480, and one `vpmaddwd` a block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn rows_avx2_q4_1<const R: usize>(w: &PackedQ8, tile: Tile<'_>, first: usize) {
    use std::arch::x86_64::*;
    let Tile {
        g,
        xq,
        xd,
        xs,
        out,
        m,
        ..
    } = tile;
    let blocks = w.k / BLOCK;
    let ones = _mm256_set1_epi16(1);
    let nibble = _mm256_set1_epi8(0x0f);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..blocks {
        let gb = g * blocks + b;
        let wq = w.qs[gb * GROUP * BLOCK / 2..(gb + 1) * GROUP * BLOCK / 2].as_ptr();
        let xp: [*const i32; R] = std::array::from_fn(|r| {
            let at = ((first + r) * blocks + b) * BLOCK;
            xq[at..at + BLOCK].as_ptr().cast()
        });
        let mut sum = [[_mm256_setzero_si256(); 2]; R];
        // A bound the compiler cannot see: unrolled, the loop hoisted all eight loads and
        // spilled registers, and ran about a third slower.
        for j in 0..std::hint::black_box(BLOCK / 4) {
            // SAFETY (all loads): the group's block holds 8 chunks of 32 bytes, 16 scales and
            // 16 minimums; each row's block 32 input bytes.
            let packed = unsafe { _mm256_loadu_si256(wq.add(j * 32).cast()) };
            let w0 = _mm256_and_si256(packed, nibble);
            let w1 = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), nibble);
            for (sum, xp) in sum.iter_mut().zip(&xp) {
                let x = _mm256_set1_epi32(unsafe { xp.add(j).read_unaligned() });
                sum[0] = _mm256_add_epi16(sum[0], _mm256_maddubs_epi16(w0, x));
                sum[1] = _mm256_add_epi16(sum[1], _mm256_maddubs_epi16(w1, x));
            }
        }
        let load = |v: &[f16], h: usize| {
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v[gb * GROUP + h * 8..].as_ptr().cast()) })
        };
        let sc = [load(&w.scales, 0), load(&w.scales, 1)];
        let mn = [load(&w.mins, 0), load(&w.mins, 1)];
        for (r, (acc, sum)) in acc.iter_mut().zip(&sum).enumerate() {
            let at = (first + r) * blocks + b;
            let (d, s) = (_mm256_set1_ps(xd[at]), _mm256_set1_ps(xs[at]));
            for h in 0..2 {
                let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum[h], ones));
                acc[h] = _mm256_fmadd_ps(dot, _mm256_mul_ps(sc[h], d), acc[h]);
                acc[h] = _mm256_fmadd_ps(mn[h], s, acc[h]);
            }
        }
    }
    // SAFETY: as in `rows_avx2`.
    unsafe { store_rows_avx2(w, g, first, m, out, &acc) };
}

/// Rows `r0..r0 + rows` of the product for the 16 columns of group `g`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile(w: &PackedQ8, tile: Tile<'_>) {
    use std::arch::x86_64::*;
    let Tile {
        g,
        r0,
        rows,
        xq,
        xd,
        ..
    } = tile;
    let blocks = w.k / BLOCK;
    let mut acc = [_mm512_setzero_ps(); ROW_TILE];
    for b in 0..blocks {
        let gb = g * blocks + b;
        let wq = w.qs[gb * GROUP * BLOCK..(gb + 1) * GROUP * BLOCK].as_ptr();
        // SAFETY (all loads): each slice holds exactly what is read (16 × 32 bytes of weights,
        // 16 offsets, 16 scales, 32 input bytes a row).
        let wv: [__m512i; 8] =
            std::array::from_fn(|j| unsafe { _mm512_loadu_si512(wq.add(j * 64).cast()) });
        let sums = unsafe { _mm256_loadu_si256(w.sums[gb * GROUP..].as_ptr().cast()) };
        let off = _mm512_slli_epi32::<7>(_mm512_cvtepi16_epi32(sums));
        let sc =
            _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(w.scales[gb * GROUP..].as_ptr().cast()) });
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let row = r0 + r;
            let xp = xq[(row * blocks + b) * BLOCK..].as_ptr().cast::<i32>();
            let x = |j: usize| _mm512_set1_epi32(unsafe { xp.add(j).read_unaligned() });
            // Two chains of four, so that one row does not wait on eight in a row.
            let mut lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x(0), wv[0]);
            let mut hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x(4), wv[4]);
            for j in 1..4 {
                lo = _mm512_dpbusd_epi32(lo, x(j), wv[j]);
                hi = _mm512_dpbusd_epi32(hi, x(j + 4), wv[j + 4]);
            }
            let dot = _mm512_sub_epi32(_mm512_add_epi32(lo, hi), off);
            let s = _mm512_mul_ps(sc, _mm512_set1_ps(xd[row * blocks + b]));
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, *acc);
        }
    }
    // SAFETY: as for this function.
    unsafe { store_group(w, &tile, &acc) };
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(_: &PackedQ8, _: Tile<'_>) {
    unreachable!("VNNI Q8 weights are only made on x86-64")
}

/// [`tile`] for [`PackedIsa::Avx512VnniQ4_1`] weights. Per block, `Σ w x = d_w d_x Σ q q_x +
/// m_w · d_x Σ q_x`: `vpdpbusd` sums the 4-bit weights (unsigned) times the inputs (signed)
/// into 32 bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_q4_1(w: &PackedQ8, tile: Tile<'_>) {
    use std::arch::x86_64::*;
    let Tile {
        g,
        r0,
        rows,
        xq,
        xd,
        xs,
        ..
    } = tile;
    let blocks = w.k / BLOCK;
    let nibble = _mm512_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); ROW_TILE];
    for b in 0..blocks {
        let gb = g * blocks + b;
        let wq = w.qs[gb * GROUP * BLOCK / 2..(gb + 1) * GROUP * BLOCK / 2].as_ptr();
        // Decode steps stream the weights from memory (see `Q4_1_PREFETCH_BYTES`).
        let ahead = wq.wrapping_add(Q4_1_PREFETCH_BYTES);
        for line in 0..GROUP * BLOCK / 2 / 64 {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
        }
        // Register `j`: inner positions `4j..4j + 4` of the 16 columns.
        let mut wv = [_mm512_setzero_si512(); 8];
        for j in 0..4 {
            // SAFETY (all loads): the group's block holds 4 chunks of 64 bytes, 16 scales and
            // 16 minimums; each row's block 32 input bytes.
            let packed = unsafe { _mm512_loadu_si512(wq.add(j * 64).cast()) };
            wv[j] = _mm512_and_si512(packed, nibble);
            wv[j + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(packed), nibble);
        }
        let load = |v: &[f16]| {
            _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(v[gb * GROUP..].as_ptr().cast()) })
        };
        let (sc, mn) = (load(&w.scales), load(&w.mins));
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let at = (r0 + r) * blocks + b;
            let xp = xq[at * BLOCK..].as_ptr().cast::<i32>();
            let x = |j: usize| _mm512_set1_epi32(unsafe { xp.add(j).read_unaligned() });
            // Two chains of four, so that one row does not wait on eight in a row.
            let mut lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[0], x(0));
            let mut hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[4], x(4));
            for j in 1..4 {
                lo = _mm512_dpbusd_epi32(lo, wv[j], x(j));
                hi = _mm512_dpbusd_epi32(hi, wv[j + 4], x(j + 4));
            }
            let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
            *acc = _mm512_fmadd_ps(dot, _mm512_mul_ps(sc, _mm512_set1_ps(xd[at])), *acc);
            *acc = _mm512_fmadd_ps(mn, _mm512_set1_ps(xs[at]), *acc);
        }
    }
    // SAFETY: as for this function.
    unsafe { store_group(w, &tile, &acc) };
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_q4_1(_: &PackedQ8, _: Tile<'_>) {
    unreachable!("VNNI Q4_1 weights are only made on x86-64")
}

/// Writes a VNNI tile's sums (`acc[r]`: row `tile.r0 + r`, the 16 columns of group `tile.g`,
/// masked to the matrix's columns) into the output.
///
/// # Safety
/// The CPU has AVX-512 F, and `tile.out` holds the `[tile.m, w.n]` output.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_group(w: &PackedQ8, tile: &Tile<'_>, acc: &[std::arch::x86_64::__m512; ROW_TILE]) {
    use std::arch::x86_64::*;
    let (g, r0, m) = (tile.g, tile.r0, tile.m);
    let cols = GROUP.min(w.n - g * GROUP);
    let mask: __mmask16 = if cols == GROUP {
        0xffff
    } else {
        (1u16 << cols) - 1
    };
    for (r, acc) in acc.iter().enumerate().take(tile.rows) {
        debug_assert!((r0 + r) * w.n + g * GROUP + cols <= m * w.n);
        // SAFETY: the row's 16 columns of group `g` (masked to the matrix) lie inside `out`.
        unsafe { _mm512_mask_storeu_ps(tile.out.add((r0 + r) * w.n + g * GROUP), mask, *acc) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// The packed ISAs this CPU runs.
    fn isas() -> Vec<PackedIsa> {
        let mut v = Vec::new();
        if vnni_available() {
            v.push(PackedIsa::Avx512Vnni);
        }
        if avx2_available() {
            v.push(PackedIsa::Avx2);
        }
        if v.is_empty() {
            eprintln!("note: neither AVX-512 VNNI nor AVX2 here; the packed paths are not tested");
        }
        v
    }

    /// The Q4_1 products this CPU runs.
    fn q4_1_isas() -> Vec<PackedIsa> {
        let v: Vec<PackedIsa> = isas().into_iter().filter_map(PackedIsa::q4_1).collect();
        if v.is_empty() {
            eprintln!("note: neither AVX-512 VNNI nor AVX2 here; the Q4_1 products are not tested");
        }
        v
    }

    /// Each packed product equals candle's Q8_0 product (the same quantization) up to float
    /// summation order, for row counts around the tile size and a column count that leaves
    /// a partial group (and a partial half group).
    #[test]
    fn packed_products_equal_candles_q8_0() {
        for isa in isas() {
            for (n, k) in [(40, 64), (1536, 576), (600, 96), (4, 32)] {
                let wv = random(n * k, 1);
                let ours =
                    Q8Matrix::Packed(std::sync::Arc::new(PackedQ8::quantize(&wv, n, k, isa)));
                let w = Tensor::from_vec(wv, (n, k), &Device::Cpu).unwrap();
                let theirs =
                    QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
                for m in [1, 3, 8, 9, 16, 70] {
                    let x = Tensor::from_vec(random(m * k, 2 + m as u64), (m, k), &Device::Cpu)
                        .unwrap();
                    let a = ours.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                    let b = theirs.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                    for (ra, rb) in a.iter().zip(&b) {
                        for (va, vb) in ra.iter().zip(rb) {
                            assert!(
                                (va - vb).abs() <= 1e-4 * (1.0 + vb.abs()),
                                "{isa:?} n {n} k {k} m {m}: {va} vs {vb}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// `w` (`[n, k]`) rounded to Q4_1 and dequantized by candle (ggml's code): weights that are
    /// exactly Q4_1, as a GGUF's are.
    fn q4_1_weights(n: usize, k: usize, seed: u64) -> Vec<f32> {
        let w = Tensor::from_vec(random(n * k, seed), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        q.dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Weights that are exactly Q4_1 are found to be, also after an adapter was added and
    /// subtracted again (float rounding), with ggml's own 4-bit values, in each Q4_1 layout;
    /// others are not.
    #[test]
    fn q4_1_weights_are_recovered_exactly() {
        let (n, k) = (24, 96);
        let w = q4_1_weights(n, k, 11);
        let t = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let theirs = QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
        let requantized = theirs
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap();
        assert_eq!(requantized.to_vec1::<f32>().unwrap(), w);
        let delta: Vec<f32> = random(n * k, 12).iter().map(|v| v * 0.3).collect();
        let noisy: Vec<f32> = w.iter().zip(&delta).map(|(w, d)| (w + d) - d).collect();
        assert_ne!(noisy, w, "the round trip should leave some noise");
        let merged: Vec<f32> = w.iter().zip(&delta).map(|(w, d)| w + d * 0.01).collect();
        for isa in [PackedIsa::Avx2Q4_1, PackedIsa::Avx512VnniQ4_1] {
            let p = PackedQ8::from_q4_1(&w, n, k, isa).expect("exact Q4_1 weights");
            // Unpack ours and compare with the weights (what candle's quantizer makes of them).
            let blocks = k / BLOCK;
            let mut back = vec![0f32; n * k];
            for col in 0..n {
                let (g, c) = (col / GROUP, col % GROUP);
                for b in 0..blocks {
                    let gb = g * blocks + b;
                    let (d, m) = (
                        p.scales[gb * GROUP + c].to_f32(),
                        p.mins[gb * GROUP + c].to_f32(),
                    );
                    for i in 0..BLOCK {
                        let (at, shift) = isa.q4_1_nibble(c, i);
                        let byte = p.qs[gb * GROUP * BLOCK / 2 + at] as u8;
                        let q = (byte >> shift) & 15;
                        back[col * k + b * BLOCK + i] = q as f32 * d + m;
                    }
                }
            }
            assert_eq!(back, w, "{isa:?}");
            // An adapter merged and taken out again leaves rounding noise.
            let q = PackedQ8::from_q4_1(&noisy, n, k, isa).expect("Q4_1 up to rounding");
            assert_eq!(q.qs, p.qs);
            assert_eq!(q.scales, p.scales);
            assert_eq!(q.mins, p.mins);
            // Merged in, or never Q4_1: not recovered.
            assert!(PackedQ8::from_q4_1(&merged, n, k, isa).is_none());
            assert!(PackedQ8::from_q4_1(&random(n * k, 13), n, k, isa).is_none());
        }
    }

    /// Each Q4_1 product equals the exact integer sums of its quantized operands, scaled per
    /// block (computed here in f64), and stays within the inputs' Q8 error of the f32 product.
    #[test]
    fn q4_1_products_equal_their_definition() {
        for isa in q4_1_isas() {
            for (n, k) in [(40, 64), (1536, 576), (600, 96), (4, 32), (576, 1536)] {
                let wv = q4_1_weights(n, k, 21);
                let p = PackedQ8::from_q4_1(&wv, n, k, isa).unwrap();
                let ours = Q8Matrix::Packed(std::sync::Arc::new(p));
                let w = Tensor::from_vec(wv.clone(), (n, k), &Device::Cpu).unwrap();
                for m in [1, 3, 8, 9, 16, 70] {
                    let xv = random(m * k, 30 + m as u64);
                    let x = Tensor::from_vec(xv.clone(), (m, k), &Device::Cpu).unwrap();
                    let got = ours.forward(&x).unwrap().to_vec2::<f32>().unwrap();
                    for (r, got) in got.iter().enumerate() {
                        let mut xq = vec![0i8; k];
                        let xd: Vec<f32> = (0..k / BLOCK)
                            .map(|b| {
                                let at = r * k + b * BLOCK;
                                quantize_block(
                                    &xv[at..at + BLOCK],
                                    &mut xq[b * BLOCK..(b + 1) * BLOCK],
                                )
                            })
                            .collect();
                        for c in 0..n {
                            let mut want = 0f64;
                            for b in 0..k / BLOCK {
                                let ws = &wv[c * k + b * BLOCK..c * k + (b + 1) * BLOCK];
                                let (d, mn, q) = q4_1_block(ws).unwrap();
                                let xs = &xq[b * BLOCK..(b + 1) * BLOCK];
                                let dot: i32 =
                                    q.iter().zip(xs).map(|(&q, &x)| q as i32 * x as i32).sum();
                                let sum: i32 = xs.iter().map(|&x| x as i32).sum();
                                want += d.to_f64() * xd[b] as f64 * dot as f64
                                    + mn.to_f64() * xd[b] as f64 * sum as f64;
                            }
                            let v = got[c] as f64;
                            assert!(
                                (v - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{isa:?} n {n} k {k} m {m} row {r} col {c}: {v} vs {want}"
                            );
                        }
                    }
                    let (err, scale) = error_and_scale(&ours, &x, &w);
                    assert!(
                        err <= 0.01 * scale,
                        "{isa:?} n {n} k {k} m {m}: error {err} at scale {scale}"
                    );
                }
            }
        }
    }

    /// A merged adapter over Q4_1 weights is taken back out: the product is the Q4_1 product
    /// of the base weights plus the adapter's in f32, and close to the merged weight's.
    #[test]
    fn merged_adapter_is_taken_out_of_q4_1_weights() {
        let (n, k, r, scale) = (48, 96, 4, 2.0);
        let dev = &Device::Cpu;
        let base = Tensor::from_vec(q4_1_weights(n, k, 41), (n, k), dev).unwrap();
        let a = Tensor::from_vec(random(r * k, 42), (r, k), dev).unwrap();
        let b = Tensor::from_vec(random(n * r, 43), (n, r), dev).unwrap();
        let delta = (b.matmul(&a).unwrap() * scale).unwrap();
        let merged = (&base + &delta).unwrap();
        let unmerged = (&merged - &delta).unwrap();
        let q = Q8Matrix::with_merged_adapter(&merged, &unmerged, &a, &b, scale).unwrap();
        let base_only = Q8Matrix::new(&base).unwrap();
        let q4_1 = PackedIsa::detect().and_then(PackedIsa::q4_1);
        if let Some(isa) = q4_1 {
            match &q {
                Q8Matrix::Packed(p) => {
                    assert_eq!(p.isa, isa);
                    assert!(p.adapter.is_some());
                }
                other => panic!("expected packed Q4_1, made {other:?}"),
            }
        }
        for m in [1, 5, 70] {
            let x = Tensor::from_vec(random(m * k, 44 + m as u64), (m, k), dev).unwrap();
            let got = q.forward(&x).unwrap();
            if q4_1.is_some() {
                let lora = x
                    .matmul(&a.t().unwrap())
                    .unwrap()
                    .matmul(&b.t().unwrap())
                    .unwrap();
                let want = (base_only.forward(&x).unwrap() + (lora * scale).unwrap()).unwrap();
                let diff = (&got - &want).unwrap().abs().unwrap().max_all().unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-4, "m {m}: {diff}");
            }
            let (err, scale) = error_and_scale(&q, &x, &merged);
            assert!(err <= 0.01 * scale, "m {m}: error {err} at scale {scale}");
        }
    }

    /// The CPU's best packed product is the one made.
    #[test]
    fn the_best_packed_isa_is_chosen() {
        let w = Tensor::from_vec(random(64 * 64, 3), (64, 64), &Device::Cpu).unwrap();
        match (Q8Matrix::new(&w).unwrap(), PackedIsa::detect()) {
            (Q8Matrix::Packed(p), Some(isa)) => assert_eq!(p.isa, isa),
            (Q8Matrix::Candle(_), None) => {}
            (m, isa) => panic!("{isa:?} detected, but made {m:?}"),
        }
        // Weights that are exactly Q4_1 keep their 4-bit values.
        let w = Tensor::from_vec(q4_1_weights(64, 64, 4), (64, 64), &Device::Cpu).unwrap();
        match (Q8Matrix::new(&w).unwrap(), PackedIsa::detect()) {
            (Q8Matrix::Packed(p), Some(isa)) => assert_eq!(Some(p.isa), isa.q4_1()),
            (Q8Matrix::Candle(_), None) => {}
            (m, isa) => panic!("{isa:?} detected, but made {m:?}"),
        }
    }

    /// The vector input quantizations give the scalar one's values and scale, ties and zeros
    /// included.
    #[test]
    fn vector_quantization_equals_scalar() {
        let mut blocks: Vec<Vec<f32>> = (0..200).map(|i| random(BLOCK, 100 + i)).collect();
        blocks.push(vec![0.0; BLOCK]);
        // Exact halves after scaling: max 127 makes the scale 1.
        blocks.push((0..BLOCK).map(|i| i as f32 - 15.5).collect());
        blocks.last_mut().unwrap()[0] = 127.0;
        blocks.push(blocks.last().unwrap().iter().map(|v| -v).collect());
        // Just below the halves, where adding 0.5 before truncating rounds the wrong way.
        let below = |v: f32| f32::from_bits(v.to_bits() - 1);
        let mut near: Vec<f32> = (0..BLOCK).map(|i| below(i as f32 * 3.0 + 0.5)).collect();
        near[BLOCK - 1] = 127.0;
        blocks.push(near.iter().map(|v| -v).collect());
        blocks.push(near);
        for isa in isas() {
            for x in &blocks {
                let mut q = [0i8; BLOCK];
                let d = quantize_block(x, &mut q);
                let mut u = [0u8; BLOCK];
                // SAFETY: `isas` lists only what the CPU has.
                let (dv, back): (f32, Vec<i8>) = unsafe {
                    match isa {
                        PackedIsa::Avx512Vnni => (
                            quantize_block_offset(x, &mut u),
                            u.iter().map(|&b| (b ^ 0x80) as i8).collect(),
                        ),
                        PackedIsa::Avx2 | PackedIsa::Avx2Q4_1 | PackedIsa::Avx512VnniQ4_1 => (
                            quantize_block_avx2(x, &mut u),
                            u.iter().map(|&b| b as i8).collect(),
                        ),
                    }
                };
                assert_eq!(d.to_bits(), dv.to_bits(), "{isa:?}");
                assert_eq!(back, q, "{isa:?}: block {x:?}");
            }
        }
    }

    /// On a CUDA device too, for the default model's shapes and row counts on both sides of
    /// candle's switch from its vector kernel to its matrix kernel (8 rows), the Q8 product
    /// stays within Q8's error of the f32 product (twice that where a few channels are far
    /// larger than the rest: their blocks' other values lose precision).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_q8_products_are_close_to_f32() {
        let dev =
            Device::new_cuda(0).expect("tests built with the cuda feature need CUDA device 0");
        for (n, k) in [(1536, 576), (576, 1536), (192, 576), (49152, 576)] {
            let w = Tensor::from_vec(random(n * k, 7), (n, k), &dev).unwrap();
            let q = Q8Matrix::new(&w).unwrap();
            for (m, outliers) in [(1, false), (8, false), (9, false), (40, false), (130, true)] {
                let mut xv = random(m * k, 8 + m as u64);
                if outliers {
                    for row in xv.chunks_mut(k) {
                        row[7] = 800.0;
                        row[300] = -400.0;
                    }
                }
                let x = Tensor::from_vec(xv, (m, k), &dev).unwrap();
                let (err, scale) = error_and_scale(&q, &x, &w);
                let bound = if outliers { 0.02 } else { 0.01 };
                assert!(
                    err <= bound * scale,
                    "n {n} k {k} m {m}: error {err} at scale {scale}"
                );
            }
        }
    }

    /// Quantization error stays at Q8_0's size: against the f32 product, within 1% of the
    /// output's scale.
    #[test]
    fn q8_product_is_close_to_f32() {
        let (n, k, m) = (64, 128, 4);
        let w = Tensor::from_vec(random(n * k, 5), (n, k), &Device::Cpu).unwrap();
        let x = Tensor::from_vec(random(m * k, 6), (m, k), &Device::Cpu).unwrap();
        let (err, scale) = error_and_scale(&Q8Matrix::new(&w).unwrap(), &x, &w);
        assert!(err <= 0.01 * scale, "error {err} at scale {scale}");
    }

    /// The largest difference between `q`'s product with `x` and the f32 product `x · wᵀ`, and
    /// the largest magnitude of the latter.
    fn error_and_scale(q: &Q8Matrix, x: &Tensor, w: &Tensor) -> (f32, f32) {
        let got = q.forward(x).unwrap();
        let f = x.matmul(&w.t().unwrap()).unwrap();
        let err = (got - &f).unwrap().abs().unwrap().max_all().unwrap();
        let scale = f.abs().unwrap().max_all().unwrap();
        (
            err.to_scalar::<f32>().unwrap(),
            scale.to_scalar::<f32>().unwrap(),
        )
    }
}
