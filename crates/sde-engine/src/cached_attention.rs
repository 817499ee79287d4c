//! Attention of a few new positions (decode steps) over a KV cache, in one pass per (row, kv
//! head) with no intermediate tensors.
//!
//! The general products cost a gemm call per (row, kv head) and per product, which for a
//! decode step's three query rows is mostly the call and its packing, not arithmetic. With
//! AVX-512 a group's scores are taken sixteen keys at a time, their sixteen partial-sum
//! registers reduced together into one register of scores (fifteen additions instead of a
//! horizontal sum per key), and the probabilities times the values accumulate in registers.
//!
//! Invariant: every path equals the general products and
//! [`masked_softmax`](crate::kernels::masked_softmax) up to float summation order (tested
//! below).
#![allow(unsafe_code)]

use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::{batch_layout, dot_lanes, fused_ok, softmax_biased_in_place, with_f32};

/// Query rows per (row, kv head) up to which [`cached_attention`] applies: decode steps
/// (`rep` rows per new position). Longer blocks of new positions go through
/// [`crate::kernels::matmul`].
const CACHED_ATTENTION_MAX_ROWS: usize = 32;

/// FLOPs of one [`cached_attention`] call from which its (row, kv head) pairs are spread over
/// the threads: a decode step at batch 1 (three groups of three rows over 160 positions of
/// 64) is above it. Its keys and values come from L3 or memory, the layer's weights having
/// passed through the caches since, so two threads read them faster than one.
const CACHED_ATTENTION_PARALLEL_FLOPS: usize = 1 << 17;

/// `softmax(q kᵀ + bias) v` for a few new positions over a KV cache, in one pass per (row,
/// kv head) with no intermediate tensors: `q` `[b, nkv, rep·t, hd]` (already scaled, row
/// `i` of a head group being position `i % t`), `k` and `v` `[b, nkv, total, hd]` (views
/// into a cache: one uniform batch stride, contiguous rows), `bias` `[b, 1, 1, t, total]`.
/// Returns `[b, nkv, rep·t, hd]`, equal to the products and
/// [`masked_softmax`](crate::kernels::masked_softmax) up to float summation order. `None`
/// where it does not apply (other devices or dtypes, other layouts, more than
/// [`CACHED_ATTENTION_MAX_ROWS`] rows): the caller then takes the generic path.
pub(crate) fn cached_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    t: usize,
) -> Result<Option<Tensor>> {
    let (Ok((b, nkv, rows, hd)), Ok((_, _, total, _))) = (q.dims4(), k.dims4()) else {
        return Ok(None);
    };
    if !fused_ok(q)
        || !fused_ok(k)
        || !fused_ok(v)
        || !fused_ok(bias)
        || t == 0
        || b * nkv * total * hd == 0
        || rows % t != 0
        || rows > CACHED_ATTENTION_MAX_ROWS
        || k.dims() != [b, nkv, total, hd]
        || v.dims() != k.dims()
        || bias.dims() != [b, 1, 1, t, total]
    {
        return Ok(None);
    }
    let (sk, lk) = k.storage_and_layout();
    let (sv, lv) = v.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(kd)), Storage::Cpu(CpuStorage::F32(vd))) = (&*sk, &*sv)
    else {
        return Ok(None);
    };
    let (Some((_, _, _, krs, 1, kbs)), Some((_, _, _, vrs, 1, vbs))) =
        (batch_layout(lk), batch_layout(lv))
    else {
        return Ok(None);
    };
    let (kd, vd) = (&kd[lk.start_offset()..], &vd[lv.start_offset()..]);
    let extent = |rs: usize, bs: usize| (b * nkv - 1) * bs + (total - 1) * rs + hd;
    assert!(extent(krs, kbs) <= kd.len() && extent(vrs, vbs) <= vd.len());
    let mut out = vec![0f32; b * nkv * rows * hd];
    with_f32(q, |q| {
        with_f32(bias, |bias| {
            let avx512 = avx512_applies(hd);
            let work = |(g, og): (usize, &mut [f32])| {
                let group = Group {
                    q: &q[g * rows * hd..(g + 1) * rows * hd],
                    k: &kd[g * kbs..],
                    krs,
                    v: &vd[g * vbs..],
                    vrs,
                    bias: &bias[(g / nkv) * t * total..(g / nkv + 1) * t * total],
                    total,
                    hd,
                    t,
                };
                let mut p = vec![0f32; rows * total];
                if avx512 {
                    // SAFETY: `avx512_applies` checked the CPU; the views hold `total` rows
                    // of `hd` (the extents asserted above).
                    unsafe { group_avx512(&group, &mut p, og) }
                } else {
                    group_portable(&group, &mut p, og);
                }
            };
            if 4 * b * nkv * rows * total * hd >= CACHED_ATTENTION_PARALLEL_FLOPS {
                out.par_chunks_mut(rows * hd).enumerate().for_each(work);
            } else {
                out.chunks_mut(rows * hd).enumerate().for_each(work);
            }
        })
    })??;
    drop((sk, sv));
    Ok(Some(Tensor::from_vec(out, (b, nkv, rows, hd), q.device())?))
}

/// One (row, kv head) group of [`cached_attention`]: its query rows, its cache views and the
/// bias rows of its sequence.
struct Group<'a> {
    /// `[rows, hd]`, row `i` being new position `i % t`.
    q: &'a [f32],
    /// Key `j` at `k[j * krs..j * krs + hd]`.
    k: &'a [f32],
    krs: usize,
    /// Value `j` at `v[j * vrs..j * vrs + hd]`.
    v: &'a [f32],
    vrs: usize,
    /// `[t, total]`.
    bias: &'a [f32],
    total: usize,
    hd: usize,
    t: usize,
}

/// Whether [`group_avx512`] runs here for heads of `hd`: AVX-512 F, `hd` a multiple of 16
/// up to [`AVX512_MAX_HEAD_DIM`].
fn avx512_applies(hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        hd.is_multiple_of(16)
            && hd <= AVX512_MAX_HEAD_DIM
            && *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = hd;
        false
    }
}

/// The widest head [`group_avx512`] takes: one row's head is its value accumulators, 16 lanes
/// a register, compiled for each width.
const AVX512_MAX_HEAD_DIM: usize = 128;

/// A group's attention into `out` (`[rows, hd]`, zeroed), `p` (`[rows, total]`) holding its
/// probabilities on the way.
fn group_portable(g: &Group<'_>, p: &mut [f32], out: &mut [f32]) {
    let Group {
        q,
        k,
        krs,
        v,
        vrs,
        bias,
        total,
        hd,
        t,
    } = *g;
    for j in 0..total {
        let kj = &k[j * krs..j * krs + hd];
        for (r, qr) in q.chunks_exact(hd).enumerate() {
            p[r * total + j] = dot_lanes(qr, kj);
        }
    }
    for (r, pr) in p.chunks_exact_mut(total).enumerate() {
        softmax_biased_in_place(pr, &bias[(r % t) * total..(r % t + 1) * total]);
    }
    for j in 0..total {
        let vj = &v[j * vrs..j * vrs + hd];
        for (r, or) in out.chunks_exact_mut(hd).enumerate() {
            let pj = p[r * total + j];
            if pj != 0.0 {
                for (o, &x) in or.iter_mut().zip(vj) {
                    *o += pj * x;
                }
            }
        }
    }
}

/// [`group_portable`] with AVX-512 F, for `hd` a multiple of 16 up to
/// [`AVX512_MAX_HEAD_DIM`].
///
/// # Safety
/// The CPU has AVX-512 F, and `g`'s views hold `total` keys and values of `hd` each.
#[cfg(target_arch = "x86_64")]
unsafe fn group_avx512(g: &Group<'_>, p: &mut [f32], out: &mut [f32]) {
    // SAFETY (all): as the caller promises; the width is the one compiled for.
    unsafe {
        match g.hd / 16 {
            1 => group_avx512_of::<1>(g, p, out),
            2 => group_avx512_of::<2>(g, p, out),
            3 => group_avx512_of::<3>(g, p, out),
            4 => group_avx512_of::<4>(g, p, out),
            5 => group_avx512_of::<5>(g, p, out),
            6 => group_avx512_of::<6>(g, p, out),
            7 => group_avx512_of::<7>(g, p, out),
            8 => group_avx512_of::<8>(g, p, out),
            _ => unreachable!("head width {} beyond the AVX-512 group's", g.hd),
        }
    }
}

/// [`group_avx512`] for heads of `16 · C`.
///
/// # Safety
/// As for [`group_avx512`], and `g.hd == 16 * C`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn group_avx512_of<const C: usize>(g: &Group<'_>, p: &mut [f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let Group {
        q,
        k,
        krs,
        v,
        vrs,
        bias,
        total,
        hd,
        t,
    } = *g;
    debug_assert_eq!(hd, 16 * C);
    debug_assert!((total - 1) * krs + hd <= k.len() && (total - 1) * vrs + hd <= v.len());
    for (r, qr) in q.chunks_exact(hd).enumerate() {
        let qr = qr.as_ptr();
        let pr = &mut p[r * total..(r + 1) * total];
        for j0 in (0..total).step_by(16) {
            let keys = 16.min(total - j0);
            let mut partial = [_mm512_setzero_ps(); 16];
            for (i, acc) in partial.iter_mut().enumerate().take(keys) {
                // SAFETY: key `j0 + i < total` and its `hd` values lie inside `k`; the query
                // row holds `hd`.
                unsafe {
                    let kj = k.as_ptr().add((j0 + i) * krs);
                    let mut a = _mm512_mul_ps(_mm512_loadu_ps(qr), _mm512_loadu_ps(kj));
                    for c in 1..C {
                        a = _mm512_fmadd_ps(
                            _mm512_loadu_ps(qr.add(16 * c)),
                            _mm512_loadu_ps(kj.add(16 * c)),
                            a,
                        );
                    }
                    *acc = a;
                }
            }
            let scores = sum_each(&partial);
            // SAFETY: lanes `0..keys` lie inside `pr` (`j0 + keys <= total`).
            unsafe {
                _mm512_mask_storeu_ps(
                    pr.as_mut_ptr().add(j0),
                    ((1u32 << keys) - 1) as __mmask16,
                    scores,
                )
            };
        }
        softmax_biased_in_place(pr, &bias[(r % t) * total..(r % t + 1) * total]);
    }
    for (pr, or) in p.chunks_exact(total).zip(out.chunks_exact_mut(hd)) {
        let mut acc = [_mm512_setzero_ps(); C];
        for (j, &pj) in pr.iter().enumerate() {
            let w = _mm512_set1_ps(pj);
            // SAFETY: value `j < total` and its `hd` values lie inside `v`.
            let vj = unsafe { v.as_ptr().add(j * vrs) };
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(w, unsafe { _mm512_loadu_ps(vj.add(16 * c)) }, *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: `or` holds `hd` values.
            unsafe { _mm512_storeu_ps(or.as_mut_ptr().add(16 * c), *a) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn group_avx512(_: &Group<'_>, _: &mut [f32], _: &mut [f32]) {
    unreachable!("the AVX-512 group runs only on x86-64")
}

/// Lane `i` of the result is the sum of the sixteen lanes of `v[i]`: pairs of registers are
/// interleaved and added, halving the registers and doubling what each lane sums, four times.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_each(v: &[std::arch::x86_64::__m512; 16]) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // Per 128-bit chunk, [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
    let pairs: [__m512; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    });
    // Per 128-bit chunk, the chunk's sums of four registers in order.
    let quads: [__m512; 4] = std::array::from_fn(|i| {
        let (a, b) = (
            _mm512_castps_pd(pairs[2 * i]),
            _mm512_castps_pd(pairs[2 * i + 1]),
        );
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)),
        )
    });
    // Chunks: [a's chunks 0 + 1, a's chunks 2 + 3, b's chunks 0 + 1, b's chunks 2 + 3].
    let halves = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    };
    let octs = [halves(quads[0], quads[1]), halves(quads[2], quads[3])];
    halves(octs[0], octs[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::masked_softmax;
    use crate::kernels::tests::close;
    use candle_core::Device;

    /// Decode-step attention over a cache view (capacity beyond its length, left padding
    /// masked, one row all masked) equals the general products and softmax; blocks beyond
    /// its row limit and non-matching shapes are declined.
    #[test]
    fn cached_attention_equals_products_and_masked_softmax() {
        let dev = Device::Cpu;
        let (b, nkv, rep, hd, cap, total) = (3, 2, 3, 64, 40, 29);
        for t in [1, 2] {
            let q = Tensor::randn(0f32, 1.0, (b, nkv, rep * t, hd), &dev).unwrap();
            let kc = Tensor::randn(0f32, 1.0, (b, nkv, cap, hd), &dev).unwrap();
            let vc = Tensor::randn(0f32, 1.0, (b, nkv, cap, hd), &dev).unwrap();
            let (k, v) = (
                kc.narrow(2, 0, total).unwrap(),
                vc.narrow(2, 0, total).unwrap(),
            );
            let mut bias = vec![0f32; b * t * total];
            for row in 0..b {
                for i in 0..t {
                    for j in 0..total {
                        // Row 1 starts with 5 padding positions; row 2's first query is a
                        // padding position that sees nothing.
                        let masked =
                            j > total - t + i || (row == 1 && j < 5) || (row == 2 && i == 0);
                        if masked {
                            bias[(row * t + i) * total + j] = -1e9;
                        }
                    }
                }
            }
            let bias = Tensor::from_vec(bias, (b, 1, 1, t, total), &dev).unwrap();
            let got = cached_attention(&q, &k, &v, &bias, t).unwrap().unwrap();
            let scores = q
                .matmul(&k.t().unwrap())
                .unwrap()
                .reshape((b, nkv, rep, t, total))
                .unwrap();
            let probs = masked_softmax(&scores, &bias)
                .unwrap()
                .unwrap()
                .reshape((b, nkv, rep * t, total))
                .unwrap();
            let want = probs.matmul(&v.contiguous().unwrap()).unwrap();
            assert_eq!(got.dims(), want.dims());
            close(&got, &want);
        }
        let q = Tensor::zeros(
            (1, 1, CACHED_ATTENTION_MAX_ROWS + 1, 8),
            candle_core::DType::F32,
            &dev,
        )
        .unwrap();
        let k = Tensor::zeros((1, 1, 4, 8), candle_core::DType::F32, &dev).unwrap();
        let bias = Tensor::zeros((1, 1, 1, 1, 4), candle_core::DType::F32, &dev).unwrap();
        assert!(cached_attention(&q, &k, &k, &bias, 1).unwrap().is_none());
        let q = q.narrow(2, 0, 3).unwrap();
        assert!(cached_attention(&q, &k, &k, &bias, 1).unwrap().is_some());
        assert!(cached_attention(&q, &k, &k, &bias, 2).unwrap().is_none());
    }

    /// The AVX-512 group equals the portable one, for key counts around its blocks of 16,
    /// several head widths, key and value rows wider than a head (a cache's heads side by
    /// side) and masked keys.
    #[test]
    fn avx512_group_equals_portable_group() {
        if !avx512_applies(64) {
            eprintln!("skipped: no AVX-512 here");
            return;
        }
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for hd in [16, 64, 128, AVX512_MAX_HEAD_DIM] {
            for total in [1, 15, 16, 17, 40, 161] {
                for (rows, t) in [(3, 1), (6, 2), (1, 1)] {
                    let stride = hd + 16;
                    let q: Vec<f32> = (0..rows * hd).map(|_| next()).collect();
                    let k: Vec<f32> = (0..total * stride).map(|_| next()).collect();
                    let v: Vec<f32> = (0..total * stride).map(|_| next()).collect();
                    let bias: Vec<f32> = (0..t * total)
                        .map(|i| {
                            if i % 7 == 3 && i % total != 0 {
                                -1e9
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let g = Group {
                        q: &q,
                        k: &k,
                        krs: stride,
                        v: &v,
                        vrs: stride,
                        bias: &bias,
                        total,
                        hd,
                        t,
                    };
                    let (mut p1, mut p2) = (vec![0f32; rows * total], vec![0f32; rows * total]);
                    let (mut o1, mut o2) = (vec![0f32; rows * hd], vec![0f32; rows * hd]);
                    group_portable(&g, &mut p1, &mut o1);
                    // SAFETY: AVX-512 F is here (checked above); the views hold `total` rows.
                    unsafe { group_avx512(&g, &mut p2, &mut o2) };
                    for (a, b) in p1.iter().zip(&p2).chain(o1.iter().zip(&o2)) {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                            "hd {hd} total {total} rows {rows}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
