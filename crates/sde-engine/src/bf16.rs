//! Products with a frozen matrix in bf16, accumulated in f32, on CPUs with AVX512-BF16.
//!
//! `vdpbf16ps` multiplies pairs of bf16 values and adds both products to an f32 lane: twice
//! the arithmetic of an f32 FMA per instruction. A frozen weight is rounded to bf16 and packed
//! once ([`PackedBf16`]); each product rounds its f32 input to bf16 on the way into the kernel
//! and writes (or adds to) an f32 output. The rounding is round-to-nearest-even, as in
//! PyTorch's bf16 autocast; the sum runs in f32.
//!
//! Layouts, with `k2 = ceil(k / 2)` pairs of the inner dimension:
//! - the packed matrix is panels of [`NR`] columns; panel `j` holds, for each pair `p`, the
//!   `NR` columns' values at rows `2p` and `2p + 1` as one `u32` each (low half first);
//! - the input is packed per block of [`MR`] rows: for each pair `p`, the `MR` rows' values at
//!   columns `2p` and `2p + 1`, so the kernel broadcasts one `u32` per row.
//!
//! Invariant: the result equals the f32 product of the bf16-rounded operands up to f32
//! summation order (tested below against a scalar reference).
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Columns of the packed matrix per panel: two 16-lane registers.
pub const NR: usize = 32;
/// Input rows per kernel call.
pub const MR: usize = 12;
/// Pairs of the inner dimension per block: the kernel's panel of the packed matrix
/// (`KC_PAIRS * NR * 4` bytes = 16 KiB) stays in the L1 cache.
const KC_PAIRS: usize = 128;
/// Input rows per block packed at a time (a multiple of [`MR`]).
const MC: usize = 8 * MR;

/// Whether this CPU runs the bf16 kernels (AVX512-F and AVX512-BF16).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as its 16 bits.
pub fn to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1));
    (rounded >> 16) as u16
}

/// The f32 value of bf16 bits.
pub fn from_bf16_bits(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// A `[k, n]` matrix rounded to bf16 and packed for [`matmul_into`].
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    k: usize,
    n: usize,
    k2: usize,
    panels: usize,
    data: Vec<u32>,
}

impl PackedBf16 {
    /// Packs the `[k, n]` matrix whose element `(r, c)` is `src[r * row_stride + c * col_stride]`.
    /// A row-major weight `w: [out, in]` packs as `w^T` with strides `(1, in)`, and as `w`
    /// with strides `(in, 1)`.
    ///
    /// # Panics
    /// If an element index falls outside `src`.
    pub fn pack(src: &[f32], k: usize, n: usize, row_stride: usize, col_stride: usize) -> Self {
        if k > 0 && n > 0 {
            assert!(
                (k - 1) * row_stride + (n - 1) * col_stride < src.len(),
                "PackedBf16::pack: [{k}, {n}] with strides ({row_stride}, {col_stride}) \
                 overruns {} elements",
                src.len()
            );
        }
        let k2 = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        let mut data = vec![0u32; panels * k2 * NR];
        data.par_chunks_mut(k2 * NR)
            .enumerate()
            .for_each(|(j, panel)| {
                for p in 0..k2 {
                    for c in 0..NR {
                        let col = j * NR + c;
                        if col >= n {
                            break;
                        }
                        let at = |r: usize| {
                            if r < k {
                                u32::from(to_bf16_bits(src[r * row_stride + col * col_stride]))
                            } else {
                                0
                            }
                        };
                        panel[p * NR + c] = at(2 * p) | (at(2 * p + 1) << 16);
                    }
                }
            });
        Self {
            k,
            n,
            k2,
            panels,
            data,
        }
    }

    /// Rows of the packed matrix (the inner dimension of a product).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns of the packed matrix (the output width of a product).
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// `dst = a @ b` (or `dst += a @ b` with `accumulate`) for a row-major `a: [m, k]` in f32, a
/// packed `b: [k, n]` and a row-major `dst: [m, n]`, on all of rayon's threads for big
/// products.
///
/// # Panics
/// If the sizes disagree, or if the CPU lacks AVX512-BF16 (see [`supported`]).
pub fn matmul_into(dst: &mut [f32], a: &[f32], m: usize, b: &PackedBf16, accumulate: bool) {
    let (k, n) = (b.k, b.n);
    assert_eq!(a.len(), m * k, "matmul_into: a is not [{m}, {k}]");
    assert_eq!(dst.len(), m * n, "matmul_into: dst is not [{m}, {n}]");
    assert!(supported(), "matmul_into: this CPU lacks AVX512-BF16");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let flops = 2 * m * n * k;
    let rows_per = if threads == 1 || flops < 8_000_000 {
        m
    } else {
        m.div_ceil(threads).div_ceil(MR) * MR
    };
    let work = |(dc, ac): (&mut [f32], &[f32])| {
        let rows = ac.len() / k;
        // SAFETY: `supported()` was checked above; the slices have the sizes asserted there.
        unsafe { rows_into(dc, ac, rows, b, accumulate) }
    };
    if rows_per >= m {
        work((dst, a));
    } else {
        dst.par_chunks_mut(rows_per * n)
            .zip(a.par_chunks(rows_per * k))
            .for_each(work);
    }
}

/// One thread's share: rows of `a` and `dst`, blocked by [`MC`] rows and [`KC_PAIRS`] pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn rows_into(dst: &mut [f32], a: &[f32], m: usize, b: &PackedBf16, accumulate: bool) {
    let (k, n, k2) = (b.k, b.n, b.k2);
    let mut packed = vec![0u32; MC.div_ceil(MR) * MR * k2];
    for i0 in (0..m).step_by(MC) {
        let mc = MC.min(m - i0);
        let blocks = mc.div_ceil(MR);
        pack_rows(&mut packed, &a[i0 * k..(i0 + mc) * k], mc, k, k2);
        for p0 in (0..k2).step_by(KC_PAIRS) {
            let kc = KC_PAIRS.min(k2 - p0);
            let add = accumulate || p0 > 0;
            for j in 0..b.panels {
                let bp = &b.data[(j * k2 + p0) * NR..(j * k2 + p0 + kc) * NR];
                let cols = NR.min(n - j * NR);
                for ib in 0..blocks {
                    let rows = MR.min(mc - ib * MR);
                    let ap = &packed[(ib * k2 + p0) * MR..(ib * k2 + p0 + kc) * MR];
                    let c0 = (i0 + ib * MR) * n + j * NR;
                    // SAFETY: the tile's rows `< rows` and columns `< cols` lie inside
                    // `dst` (row `i0 + ib * MR + r < m`, column `j * NR + c < n`).
                    unsafe {
                        kernel(
                            kc,
                            ap.as_ptr(),
                            bp.as_ptr(),
                            dst.as_mut_ptr().add(c0),
                            n,
                            rows,
                            cols,
                            add,
                        );
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn rows_into(_: &mut [f32], _: &[f32], _: usize, _: &PackedBf16, _: bool) {
    unreachable!("supported() is false off x86_64")
}

/// Packs `mc` rows of `a` (`[mc, k]`, row-major) into blocks of [`MR`] rows, pairs of columns
/// as one `u32`, padding missing rows and the odd last column with zeros.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn pack_rows(packed: &mut [u32], a: &[f32], mc: usize, k: usize, k2: usize) {
    use std::arch::x86_64::*;
    let blocks = mc.div_ceil(MR);
    let mut row = vec![0u32; k2];
    for ib in 0..blocks {
        let block = &mut packed[ib * k2 * MR..(ib + 1) * k2 * MR];
        for r in 0..MR {
            let i = ib * MR + r;
            if i >= mc {
                for p in 0..k2 {
                    block[p * MR + r] = 0;
                }
                continue;
            }
            let src = &a[i * k..(i + 1) * k];
            let mut c = 0;
            while c + 32 <= k {
                // SAFETY: `c + 32 <= k` keeps both loads inside `src`, and the store of 16
                // pairs inside `row` (`c / 2 + 16 <= k2`).
                unsafe {
                    let lo = _mm512_loadu_ps(src.as_ptr().add(c));
                    let hi = _mm512_loadu_ps(src.as_ptr().add(c + 16));
                    let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(row.as_mut_ptr().add(c / 2).cast(), v);
                }
                c += 32;
            }
            while c < k {
                let lo = u32::from(to_bf16_bits(src[c]));
                let hi = if c + 1 < k {
                    u32::from(to_bf16_bits(src[c + 1]))
                } else {
                    0
                };
                row[c / 2] = lo | (hi << 16);
                c += 2;
            }
            for (p, v) in row.iter().enumerate() {
                block[p * MR + r] = *v;
            }
        }
    }
}

/// `c[r, 0..cols] (+)= Σ_p a[p, r] · b[p, 0..cols]` for `r < rows` over `kc` pairs: an
/// `MR x NR` tile in 24 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY (whole body): the caller passes `kc * MR` packed input values at `a`, `kc * NR`
    // packed matrix values at `b`, and a tile of `rows x cols` floats at `c` with row stride
    // `ldc`; the masked loads and stores touch only columns `< cols`.
    unsafe {
        for p in 0..kc {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            let ap = a.add(p * MR);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
                acc_r[0] = _mm512_dpbf16_ps(acc_r[0], av, b0);
                acc_r[1] = _mm512_dpbf16_ps(acc_r[1], av, b1);
            }
        }
        let m0: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        let m1: __mmask16 = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            let cr = c.add(r * ldc);
            let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
            if accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr.add(16)));
            }
            _mm512_mask_storeu_ps(cr, m0, v0);
            _mm512_mask_storeu_ps(cr.add(16), m1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `a @ b` with both operands rounded to bf16, summed in f64.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let r = |x: f32| f64::from(from_bf16_bits(to_bf16_bits(x)));
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| r(a[i * k + p]) * r(b[p * n + j])).sum();
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(to_bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even one (1 + 2^-6).
        assert_eq!(
            from_bf16_bits(to_bf16_bits(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(from_bf16_bits(to_bf16_bits(-2.5)), -2.5);
        assert!(from_bf16_bits(to_bf16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn products_equal_the_rounded_reference_for_ragged_shapes() {
        if !supported() {
            eprintln!("skipped: this CPU lacks AVX512-BF16");
            return;
        }
        // Odd k, rows not a multiple of MR, columns not a multiple of NR, several k blocks.
        for &(m, k, n) in &[
            (1, 1, 1),
            (13, 7, 33),
            (25, 301, 70),
            (200, 577, 96),
            (5, 64, 16),
        ] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let want = reference(&a, &b, m, k, n);
            let packed = PackedBf16::pack(&b, k, n, n, 1);
            let mut got = vec![f32::NAN; m * n];
            matmul_into(&mut got, &a, m, &packed, false);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * (k as f32).sqrt() * 4.0,
                    "[{m}, {k}] x [{k}, {n}] at {i}: {g} vs {w}"
                );
            }
            // Accumulating adds the product once more.
            matmul_into(&mut got, &a, m, &packed, true);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() <= 1e-5 * (k as f32).sqrt() * 8.0);
            }
        }
    }

    #[test]
    fn a_transposed_pack_multiplies_by_the_transpose() {
        if !supported() {
            eprintln!("skipped: this CPU lacks AVX512-BF16");
            return;
        }
        // w: [out = 40, in = 50] row-major; x @ w^T packs w with strides (1, in).
        let (m, inp, out) = (30, 50, 40);
        let w = data(out * inp, 3);
        let x = data(m * inp, 4);
        let mut wt = vec![0f32; inp * out];
        for o in 0..out {
            for i in 0..inp {
                wt[i * out + o] = w[o * inp + i];
            }
        }
        let want = reference(&x, &wt, m, inp, out);
        let packed = PackedBf16::pack(&w, inp, out, 1, inp);
        let mut got = vec![0f32; m * out];
        matmul_into(&mut got, &x, m, &packed, false);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4, "{g} vs {w}");
        }
    }
}
