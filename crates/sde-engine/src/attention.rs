//! Causal attention over f32 CPU buffers, with every product restricted to the keys its
//! queries can see: a training step's attention and its backward, and inference's attention
//! over prompts (without a cache, or blocks of more than a few positions over one).
//!
//! In every layout a query at position `i` of a group whose `tq` queries follow
//! `past = tk - tq` keys sees keys `0..=past + i` at most (the bias masks the rest). The
//! general batched products compute the whole `tq × tk` square and the softmax then zeroes
//! the masked part. Here the queries go in blocks of [`BLOCK`] rows, each block's products
//! stop at the last key its last query sees, and the key gradients go in blocks of keys that
//! start at the first query seeing them: at `past = 0` and 128 positions that is 10 of 16
//! blocks of the square.
//!
//! Invariant: the results equal the full products, softmax and softmax backward up to float
//! summation order. The one difference is a query whose every key is masked (a row of left
//! padding): the full softmax spreads it evenly over all `tk` keys, this one over the keys up
//! to its block's end. No real position reads that output, and in training its gradient is
//! exactly zero (no loss position reads a padding position), so the gradients are the same.
#![allow(unsafe_code)]

use candle_core::Tensor;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::{
    Operand, dot_lanes, fused_ok, gemm_strided, softmax_biased_in_place, with_f32,
};

/// Query rows per block of the forward products and of the query gradients; keys per block
/// of the key and value gradients.
const BLOCK: usize = 32;

/// A bias at or below this masks its key (the model's masked bias is `-1e9`).
const MASKED_AT_MOST: f32 = -1e8;

/// The sizes of one attention group: `g` sequences, `nkv` key/value heads each shared by
/// `rep` query heads, `tq` queries after `tk - tq` earlier keys, head width `hd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    g: usize,
    nkv: usize,
    rep: usize,
    tq: usize,
    tk: usize,
    hd: usize,
}

impl Dims {
    fn past(&self) -> usize {
        self.tk - self.tq
    }

    fn query_heads(&self) -> usize {
        self.g * self.nkv * self.rep
    }

    /// Panics unless `qs` is `[g, nkv, rep·tq, hd]` and `k`, `v` are `[g, nkv, tk, hd]`.
    fn check(&self, qs: &[f32], k: &[f32], v: &[f32]) {
        let kv_len = self.g * self.nkv * self.tk * self.hd;
        assert!(
            qs.len() == self.query_heads() * self.tq * self.hd
                && k.len() == kv_len
                && v.len() == kv_len,
            "attention buffers do not fit {self:?}"
        );
    }

    /// Query head `h`'s rows (`tq` of width `w`) of a `[g, nkv, rep·tq, w]` buffer.
    fn head<'a>(&self, x: &'a [f32], h: usize, w: usize) -> &'a [f32] {
        &x[h * self.tq * w..(h + 1) * self.tq * w]
    }

    /// The keys (or values) that query head `h` reads in a `[g, nkv, tk, hd]` buffer.
    fn keys_of<'a>(&self, x: &'a [f32], h: usize) -> &'a [f32] {
        let kv = h / self.rep;
        &x[kv * self.tk * self.hd..(kv + 1) * self.tk * self.hd]
    }

    /// The query blocks `(first row, rows, keys seen by the block)`.
    fn query_blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> {
        let (tq, tk, past) = (self.tq, self.tk, self.past());
        (0..tq).step_by(BLOCK).map(move |i0| {
            let rows = BLOCK.min(tq - i0);
            (i0, rows, tk.min(past + i0 + rows))
        })
    }
}

/// Whether every bias entry past a query's causal limit masks its key, so that skipping
/// those keys leaves the softmax as it is. `bias` is `[groups, tq, tk]`.
fn causal(bias: &[f32], d: Dims) -> bool {
    let (tq, tk, past) = (d.tq, d.tk, d.past());
    bias.chunks_exact(tq * tk).all(|group| {
        group
            .chunks_exact(tk)
            .enumerate()
            .all(|(i, row)| row[past + i + 1..].iter().all(|&b| b <= MASKED_AT_MOST))
    })
}

/// `softmax(q kᵀ + bias) v` per query head: `qs` `[g, nkv, rep·tq, hd]` (scaled, rotated),
/// `k` and `v` `[g, nkv, tk, hd]`, `bias` `[g or 1, tq, tk]`. Returns the output
/// `[g, nkv, rep·tq, hd]` and the probabilities `[g, nkv, rep·tq, tk]`, zero past each
/// block's last key.
fn forward(d: Dims, qs: &[f32], k: &[f32], v: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (tq, tk, hd, heads) = (d.tq, d.tk, d.hd, d.query_heads());
    d.check(qs, k, v);
    let shared_bias = bias.len() == tq * tk;
    assert!(shared_bias || bias.len() == d.g * tq * tk);
    let mut out = vec![0f32; heads * tq * hd];
    let mut probs = vec![0f32; heads * tq * tk];
    out.par_chunks_mut(tq * hd)
        .zip(probs.par_chunks_mut(tq * tk))
        .enumerate()
        .for_each(|(h, (oh, ph))| {
            let (qh, kh, vh) = (d.head(qs, h, hd), d.keys_of(k, h), d.keys_of(v, h));
            let group = if shared_bias { 0 } else { h / (d.nkv * d.rep) };
            let bh = &bias[group * tq * tk..(group + 1) * tq * tk];
            for (i0, rows, keys) in d.query_blocks() {
                let kt = Operand::rows_of(kh, hd, 0, keys, hd).t();
                gemm_strided(
                    &mut ph[i0 * tk..],
                    tk,
                    Operand::rows_of(qh, hd, i0, rows, hd),
                    kt,
                    false,
                    1.0,
                    Parallelism::None,
                );
                for i in i0..i0 + rows {
                    softmax_biased_in_place(
                        &mut ph[i * tk..i * tk + keys],
                        &bh[i * tk..i * tk + keys],
                    );
                }
                gemm_strided(
                    &mut oh[i0 * hd..],
                    hd,
                    Operand::rows_of(ph, tk, i0, rows, keys),
                    Operand::rows_of(vh, hd, 0, keys, hd),
                    false,
                    1.0,
                    Parallelism::None,
                );
            }
        });
    (out, probs)
}

/// Backward of [`forward`] for the output gradient `d_o` `[g, nkv, rep·tq, hd]`: gradients of
/// the rotated queries (unscaled: `scale` is the factor `qs` carries), keys and values, in the
/// layouts of `qs`, `k` and `v`.
fn backward(
    d: Dims,
    qs: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    d_o: &[f32],
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (tq, tk, hd, heads) = (d.tq, d.tk, d.hd, d.query_heads());
    d.check(qs, k, v);
    assert!(d_o.len() == qs.len() && probs.len() == heads * tq * tk);
    // Score gradients, zero where no block computes them (masked keys).
    let mut ds = vec![0f32; heads * tq * tk];
    let mut dq = vec![0f32; heads * tq * hd];
    dq.par_chunks_mut(tq * hd)
        .zip(ds.par_chunks_mut(tq * tk))
        .enumerate()
        .for_each(|(h, (dqh, dsh))| {
            let (doh, ph) = (d.head(d_o, h, hd), d.head(probs, h, tk));
            let (kh, vh) = (d.keys_of(k, h), d.keys_of(v, h));
            for (i0, rows, keys) in d.query_blocks() {
                gemm_strided(
                    &mut dsh[i0 * tk..],
                    tk,
                    Operand::rows_of(doh, hd, i0, rows, hd),
                    Operand::rows_of(vh, hd, 0, keys, hd).t(),
                    false,
                    1.0,
                    Parallelism::None,
                );
                for i in i0..i0 + rows {
                    let (pr, dr) = (&ph[i * tk..i * tk + keys], &mut dsh[i * tk..i * tk + keys]);
                    let s = dot_lanes(pr, dr);
                    for (dv, &pv) in dr.iter_mut().zip(pr) {
                        *dv = pv * (*dv - s);
                    }
                }
                gemm_strided(
                    &mut dqh[i0 * hd..],
                    hd,
                    Operand::rows_of(dsh, tk, i0, rows, keys),
                    Operand::rows_of(kh, hd, 0, keys, hd),
                    false,
                    scale,
                    Parallelism::None,
                );
            }
        });
    let mut dk = vec![0f32; k.len()];
    let mut dv = vec![0f32; k.len()];
    let past = d.past();
    let tasks: Vec<(usize, usize, &mut [f32], &mut [f32])> = dk
        .chunks_mut(tk * hd)
        .zip(dv.chunks_mut(tk * hd))
        .enumerate()
        .flat_map(|(kv, (dkh, dvh))| {
            dkh.chunks_mut(BLOCK * hd)
                .zip(dvh.chunks_mut(BLOCK * hd))
                .enumerate()
                .map(move |(j, (dkb, dvb))| (kv, j * BLOCK, dkb, dvb))
        })
        .collect();
    let ds = &ds[..];
    tasks.into_par_iter().for_each(|(kv, j0, dkb, dvb)| {
        let keys = dkb.len() / hd;
        // The first query that sees key `j0`; later ones see the whole block or part of it
        // (their scores past their limit are 0 in `ds` and `probs`).
        let first = j0.saturating_sub(past);
        let rows = tq - first;
        for r in 0..d.rep {
            let h = kv * d.rep + r;
            let at = h * tq + first;
            // dK += dSᵀ qs and dV += Pᵀ dO over the block's keys.
            for (dst, weights, rhs) in [(&mut *dkb, ds, qs), (&mut *dvb, probs, d_o)] {
                gemm_strided(
                    dst,
                    hd,
                    Operand::rows_of(&weights[j0..], tk, at, rows, keys).t(),
                    Operand::rows_of(rhs, hd, at, rows, hd),
                    r > 0,
                    1.0,
                    Parallelism::None,
                );
            }
        }
    });
    (dq, dk, dv)
}

/// The sizes of `qs` `[g, nkv, rep·tq, hd]` over `k` `[g, nkv, tk, hd]`, if they fit.
fn dims_of(qs: &Tensor, k: &Tensor, rep: usize) -> Option<Dims> {
    let ((g, nkv, rows, hd), (gk, nk, tk, hk)) = (qs.dims4().ok()?, k.dims4().ok()?);
    let tq = rows / rep.max(1);
    let fits = rep > 0 && rows % rep == 0 && (gk, nk, hk) == (g, nkv, hd) && tq <= tk;
    let d = Dims {
        g,
        nkv,
        rep,
        tq,
        tk,
        hd,
    };
    (fits && d.query_heads() * tq * tk * hd > 0).then_some(d)
}

/// [`forward`] on tensors: `qs` `[g, nkv, rep·tq, hd]`, `k` and `v` `[g, nkv, tk, hd]`,
/// `bias` `[g or 1, 1, 1, tq, tk]`. Returns the output and the probabilities, or `None`
/// where it does not apply (not f32 on the CPU, other shapes, a bias that does not mask
/// every key past a query's causal limit): the caller then takes the general products.
pub(crate) fn attend(
    qs: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: &Tensor,
    rep: usize,
) -> Result<Option<(Tensor, Tensor)>> {
    let Some(d) = dims_of(qs, k, rep) else {
        return Ok(None);
    };
    let bias_fits = matches!(bias.dims5(), Ok((gb, 1, 1, bq, bk))
        if (gb == 1 || gb == d.g) && (bq, bk) == (d.tq, d.tk));
    if !bias_fits || v.dims() != k.dims() || ![qs, k, v, bias].iter().all(|t| fused_ok(t)) {
        return Ok(None);
    }
    let done = with_f32(bias, |b| -> Result<_> {
        if !causal(b, d) {
            return Ok(None);
        }
        let run = |q: &[f32]| with_f32(k, |k| with_f32(v, |v| forward(d, q, k, v, b)));
        Ok(Some(with_f32(qs, run)???))
    })??;
    let Some((out, probs)) = done else {
        return Ok(None);
    };
    let dev = qs.device();
    Ok(Some((
        Tensor::from_vec(out, qs.dims(), dev)?,
        Tensor::from_vec(probs, (d.g, d.nkv, d.rep * d.tq, d.tk), dev)?,
    )))
}

/// [`backward`] on tensors laid out as in [`attend`], after [`attend`] gave `probs`: the
/// gradients of the unscaled queries `[g, nkv, rep·tq, hd]`, keys and values.
pub(crate) fn attend_backward(
    qs: &Tensor,
    k: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    d_o: &Tensor,
    rep: usize,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let d = dims_of(qs, k, rep).ok_or_else(|| {
        crate::error::EngineError::invalid("causal attention backward: shapes do not fit")
    })?;
    let (dq, dk, dv) = with_f32(qs, |q| {
        with_f32(k, |k| {
            with_f32(v, |v| {
                with_f32(probs, |p| {
                    with_f32(d_o, |o| backward(d, q, k, v, p, o, scale))
                })
            })
        })
    })?????;
    let dev = qs.device();
    Ok((
        Tensor::from_vec(dq, qs.dims(), dev)?,
        Tensor::from_vec(dk, k.dims(), dev)?,
        Tensor::from_vec(dv, k.dims(), dev)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgemm::tests::values;

    /// The full-square attention in f64: output, probabilities and the three gradients.
    #[allow(clippy::type_complexity)]
    fn reference(
        d: Dims,
        qs: &[f32],
        k: &[f32],
        v: &[f32],
        bias: &[f32],
        d_o: &[f32],
        scale: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let Dims {
            nkv,
            rep,
            tq,
            tk,
            hd,
            ..
        } = d;
        let heads = d.query_heads();
        let (mut out, mut probs) = (vec![0.0; heads * tq * hd], vec![0.0; heads * tq * tk]);
        let (mut dq, mut dk, mut dv) = (
            vec![0.0; heads * tq * hd],
            vec![0.0; k.len()],
            vec![0.0; k.len()],
        );
        for h in 0..heads {
            let kv = h / rep;
            let group = if bias.len() == tq * tk {
                0
            } else {
                h / (nkv * rep)
            };
            for i in 0..tq {
                let row = (h * tq + i) * tk;
                let mut s: Vec<f64> = (0..tk)
                    .map(|j| {
                        (0..hd)
                            .map(|c| {
                                qs[(h * tq + i) * hd + c] as f64 * k[(kv * tk + j) * hd + c] as f64
                            })
                            .sum::<f64>()
                            + bias[(group * tq + i) * tk + j] as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum: f64 = s.iter().sum();
                for j in 0..tk {
                    probs[row + j] = s[j] / sum;
                }
                for c in 0..hd {
                    out[(h * tq + i) * hd + c] = (0..tk)
                        .map(|j| probs[row + j] * v[(kv * tk + j) * hd + c] as f64)
                        .sum();
                }
                let dp: Vec<f64> = (0..tk)
                    .map(|j| {
                        (0..hd)
                            .map(|c| {
                                d_o[(h * tq + i) * hd + c] as f64 * v[(kv * tk + j) * hd + c] as f64
                            })
                            .sum()
                    })
                    .collect();
                let dot: f64 = (0..tk).map(|j| dp[j] * probs[row + j]).sum();
                for j in 0..tk {
                    let dsj = probs[row + j] * (dp[j] - dot);
                    for c in 0..hd {
                        dq[(h * tq + i) * hd + c] += dsj * k[(kv * tk + j) * hd + c] as f64 * scale;
                        dk[(kv * tk + j) * hd + c] += dsj * qs[(h * tq + i) * hd + c] as f64;
                        dv[(kv * tk + j) * hd + c] +=
                            probs[row + j] * d_o[(h * tq + i) * hd + c] as f64;
                    }
                }
            }
        }
        (out, probs, dq, dk, dv)
    }

    fn assert_close(name: &str, got: &[f32], want: &[f64], skip: impl Fn(usize) -> bool) {
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if skip(i) {
                continue;
            }
            assert!(
                (g as f64 - w).abs() <= 2e-5 + 2e-5 * w.abs(),
                "{name}[{i}]: {g} against {w}"
            );
        }
    }

    /// Causal attention with `past` earlier keys, right padding in the second sequence
    /// and, with `left_pad`, a first query of the last sequence whose keys are all masked.
    fn case(g: usize, tq: usize, past: usize, shared_bias: bool, left_pad: bool) {
        let d = Dims {
            g,
            nkv: 2,
            rep: 3,
            tq,
            tk: past + tq,
            hd: 8,
        };
        let (tk, hd) = (d.tk, d.hd);
        let heads = d.query_heads();
        let groups = if shared_bias { 1 } else { g };
        let mut bias = vec![-1e9f32; groups * tq * tk];
        let mut dead_rows = Vec::new();
        for b in 0..groups {
            let real = if b == 1 { tq - 5 } else { tq };
            for i in 0..tq {
                if left_pad && b == groups - 1 && i == 0 {
                    dead_rows.push(b);
                    continue;
                }
                for j in 0..=past + i {
                    if j < past + real && !(left_pad && b == groups - 1 && j == past) {
                        bias[(b * tq + i) * tk + j] = 0.0;
                    }
                }
            }
        }
        let scale = 0.35;
        let qs = values(heads * tq * hd, 1);
        let k = values(g * 2 * tk * hd, 2);
        let v = values(g * 2 * tk * hd, 3);
        let mut d_o = values(heads * tq * hd, 4);
        // A query whose keys are all masked has no output gradient.
        let dead = |h: usize, i: usize| {
            let group = if shared_bias { 0 } else { h / (d.nkv * d.rep) };
            i == 0 && dead_rows.contains(&group)
        };
        for h in 0..heads {
            if dead(h, 0) {
                d_o[h * tq * hd..(h * tq + 1) * hd].fill(0.0);
            }
        }
        assert!(causal(&bias, d));
        let (out, probs) = forward(d, &qs, &k, &v, &bias);
        let (dq, dk, dv) = backward(d, &qs, &k, &v, &probs, &d_o, scale as f32);
        let (ro, rp, rdq, rdk, rdv) = reference(d, &qs, &k, &v, &bias, &d_o, scale);
        let at = |w: usize| move |i: usize| dead((i / w) / tq, (i / w) % tq);
        assert_close("out", &out, &ro, at(hd));
        assert_close("probs", &probs, &rp, at(tk));
        assert_close("dq", &dq, &rdq, |_| false);
        assert_close("dk", &dk, &rdk, |_| false);
        assert_close("dv", &dv, &rdv, |_| false);
        // Masked scores past every block's end are exactly zero.
        for (i, &p) in probs.iter().enumerate() {
            let (row, j) = (i / tk, i % tk);
            if j > past + row % tq && !dead(row / tq, row % tq) {
                assert_eq!(p, 0.0, "probs[{i}]");
            }
        }
    }

    #[test]
    fn equals_the_full_square_on_every_layout() {
        case(3, 70, 0, false, false);
        case(2, 45, 20, false, true);
        case(1, 33, 17, true, false);
        case(2, BLOCK, 0, true, true);
        case(2, 5, 3, false, false);
    }

    #[test]
    fn a_bias_that_lets_a_query_see_a_later_key_is_refused() {
        let d = Dims {
            g: 1,
            nkv: 1,
            rep: 1,
            tq: 4,
            tk: 6,
            hd: 2,
        };
        let mut bias = vec![-1e9f32; 24];
        for i in 0..4 {
            for j in 0..=2 + i {
                bias[i * 6 + j] = 0.0;
            }
        }
        assert!(causal(&bias, d));
        bias[6 + 5] = 0.0;
        assert!(!causal(&bias, d));
        let dev = candle_core::Device::Cpu;
        let t = |n: usize, shape: &[usize]| Tensor::from_vec(values(n, 9), shape, &dev).unwrap();
        let (q, k) = (t(8, &[1, 1, 4, 2]), t(12, &[1, 1, 6, 2]));
        let bias = Tensor::from_vec(bias, (1, 1, 1, 4, 6), &dev).unwrap();
        assert!(attend(&q, &k, &k, &bias, 1).unwrap().is_none());
    }
}
