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
//! Invariant: every path computes the same quantized product; they differ only in float
//! summation order (tested below).
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
}

impl PackedIsa {
    /// Bytes of one quantized input block: the values, and for AVX2 their magnitudes too.
    fn input_block_bytes(self) -> usize {
        match self {
            PackedIsa::Avx512Vnni => BLOCK,
            PackedIsa::Avx2 => 2 * BLOCK,
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
    /// Quantizes `weight` (`[out, in]`, f32).
    pub(crate) fn new(weight: &Tensor) -> Result<Self> {
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
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
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
}

impl PackedQ8 {
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
        }
    }

    /// `out[m, n] = x[m, k] · Wᵀ`, both quantized to Q8_0.
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let blocks = self.k / BLOCK;
        // Inputs with one scale per (row, block): unsigned bytes (q + 128) for VNNI; for AVX2
        // the signed values' bits followed by their magnitudes (computed once here rather
        // than for every group of columns).
        let isa = self.isa;
        let block_bytes = isa.input_block_bytes();
        let mut xq = vec![0u8; m * blocks * block_bytes];
        let mut xd = vec![0f32; m * blocks];
        let quantize_rows = |(x, (xq, xd)): (&[f32], (&mut [u8], &mut [f32]))| {
            for ((chunk, u), d) in x
                .chunks_exact(BLOCK)
                .zip(xq.chunks_exact_mut(block_bytes))
                .zip(xd.iter_mut())
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
                    xq.par_chunks_mut(rows_per_task * blocks * block_bytes)
                        .zip(xd.par_chunks_mut(rows_per_task * blocks)),
                )
                .for_each(quantize_rows);
        } else {
            quantize_rows((x, (&mut xq, &mut xd)));
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
                            out: out_addr as *mut f32,
                            m,
                        };
                        unsafe {
                            match isa {
                                PackedIsa::Avx512Vnni => tile(self, t),
                                PackedIsa::Avx2 => tile_avx2(self, t),
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
    }
}

/// One tile of a packed product: rows `r0..r0 + rows` of the `[m, n]` output `out`, for the 16
/// columns of group `g`, from the quantized inputs `xq` and their per-block scales `xd`.
#[derive(Clone, Copy)]
struct Tile<'a> {
    g: usize,
    r0: usize,
    rows: usize,
    xq: &'a [u8],
    xd: &'a [f32],
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
/// saturate 16 bits), [`QUAD`] rows at a time and then one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2(w: &PackedQ8, tile: Tile<'_>) {
    let mut r = 0;
    while r + QUAD <= tile.rows {
        // SAFETY: the caller's contract, for rows r0 + r .. r0 + r + QUAD of the tile.
        unsafe { rows_avx2::<QUAD>(w, tile, tile.r0 + r) };
        r += QUAD;
    }
    while r < tile.rows {
        unsafe { rows_avx2::<1>(w, tile, tile.r0 + r) };
        r += 1;
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
unsafe fn tile_avx2(_: &PackedQ8, _: Tile<'_>) {
    unreachable!("packed Q8 weights are only made on x86-64")
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
        out,
        m,
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
    let cols = GROUP.min(w.n - g * GROUP);
    let mask: __mmask16 = if cols == GROUP {
        0xffff
    } else {
        (1u16 << cols) - 1
    };
    for (r, acc) in acc.iter().enumerate().take(rows) {
        debug_assert!((r0 + r) * w.n + g * GROUP + cols <= m * w.n);
        unsafe { _mm512_mask_storeu_ps(out.add((r0 + r) * w.n + g * GROUP), mask, *acc) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(_: &PackedQ8, _: Tile<'_>) {
    unreachable!("VNNI Q8 weights are only made on x86-64")
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

    /// The CPU's best packed product is the one made.
    #[test]
    fn the_best_packed_isa_is_chosen() {
        let w = Tensor::from_vec(random(64 * 64, 3), (64, 64), &Device::Cpu).unwrap();
        match (Q8Matrix::new(&w).unwrap(), PackedIsa::detect()) {
            (Q8Matrix::Packed(p), Some(isa)) => assert_eq!(p.isa, isa),
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
                        PackedIsa::Avx2 => (
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
