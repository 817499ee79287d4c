//! Greedy decoding's f32 output head read through a Q8_0 copy, with the f32 head's choices.
//!
//! A decode step's f32 head reads the whole `[vocab, hidden]` matrix (113 MB for
//! SmolLM2-135M, a fifth of the step's bytes) to find one argmax per row. Here the Q8_0 copy (a
//! quarter of those bytes) gives every token's logit within a proven radius; only the tokens
//! whose upper bound reaches the best lower bound get their f32 logit, computed as the f32
//! head's product computes it ([`crate::sgemm::dots_as_product`]: the same bits). Every other
//! token's f32 logit lies strictly below the largest, so the argmax (after HF's repetition
//! penalty, which keeps the logits' order) is the f32 head's.
//!
//! The radius of token `i` for a row `x` (`x̂` its Q8_0 rounding, `ŵ_i` the token's):
//! `x·w_i − x̂·ŵ_i = (w_i − ŵ_i)·x + ŵ_i·(x − x̂)`, so by Cauchy–Schwarz on each term
//! `|x·w_i − x̂·ŵ_i| ≤ ‖w_i − ŵ_i‖ ‖x‖ + ‖ŵ_i‖ ‖x − x̂‖`. To that come the f32 sums' rounding:
//! the f32 head's chain of fused multiply-adds is within `k·2⁻²⁴ ‖w_i‖ ‖x‖` of `x·w_i`
//! (`k` = 576: 3.4e-5) and the quantized product's per-block sums within `(blocks + 2)·2⁻²⁴
//! ‖ŵ_i‖ ‖x̂‖` (2e-6), both inside the `1e-4` allowed for each.
//!
//! Invariant: with the screen, greedy decoding chooses the tokens the f32 head chooses, on
//! every input (tested on near-ties built to sit inside the radius, and on the default
//! model's prompts).

use crate::q8::PackedQ8;
use crate::sgemm::dots_as_product;

/// Allowance for the f32 sums' rounding, relative to `‖w‖ ‖x‖` and `‖ŵ‖ ‖x̂‖` (see the module
/// documentation).
const ROUNDING: f32 = 1e-4;

/// A Q8_0 copy of an output head and, per token, the norms its radius needs.
#[derive(Debug)]
pub(crate) struct HeadScreen {
    q8: PackedQ8,
    vocab: usize,
    hidden: usize,
    /// `‖w_i − ŵ_i‖`, rounded up.
    err: Vec<f32>,
    /// `‖ŵ_i‖`, rounded up.
    norm_q: Vec<f32>,
    /// `‖w_i‖`, rounded up.
    norm: Vec<f32>,
}

/// One screened step: the Q8_0 logits of its rows and the norms of their radii.
pub(crate) struct Screened<'a> {
    screen: &'a HeadScreen,
    /// The rows' hidden states, `[m, hidden]`.
    x: &'a [f32],
    /// `[m, vocab]`.
    approx: Vec<f32>,
    /// Per row: `(‖x‖, ‖x − x̂‖, ‖x̂‖)`, rounded up.
    norms: Vec<(f32, f32, f32)>,
}

impl HeadScreen {
    /// The screen of the head `w` (`[vocab, hidden]`, row-major): `None` where the CPU has no
    /// packed Q8_0 product or no engine product ([`crate::sgemm::supported`]), where `hidden`
    /// is not a multiple of 32, or where a weight is not finite.
    pub(crate) fn new(w: &[f32], vocab: usize, hidden: usize) -> Option<Self> {
        if !crate::sgemm::supported()
            || w.len() != vocab * hidden
            || w.iter().any(|v| !v.is_finite())
        {
            return None;
        }
        let q8 = PackedQ8::q8_0(w, vocab, hidden)?;
        let mut err = Vec::with_capacity(vocab);
        let mut norm_q = Vec::with_capacity(vocab);
        let mut norm = Vec::with_capacity(vocab);
        for row in w.chunks_exact(hidden) {
            let n = quantized_norms(row);
            norm.push(n.0);
            err.push(n.1);
            norm_q.push(n.2);
        }
        Some(Self {
            q8,
            vocab,
            hidden,
            err,
            norm_q,
            norm,
        })
    }

    /// The Q8_0 logits of the `m` rows of `x` (`[m, hidden]`); `None` where a value is not
    /// finite (the caller then takes the f32 head).
    pub(crate) fn screen<'a>(&'a self, x: &'a [f32], m: usize) -> Option<Screened<'a>> {
        assert_eq!(x.len(), m * self.hidden, "screen: rows of the wrong width");
        let norms: Vec<(f32, f32, f32)> =
            x.chunks_exact(self.hidden).map(quantized_norms).collect();
        if norms.iter().any(|n| !n.0.is_finite()) {
            return None;
        }
        let mut approx = vec![0f32; m * self.vocab];
        self.q8.matmul(x, m, &mut approx);
        if approx.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Screened {
            screen: self,
            x,
            approx,
            norms,
        })
    }
}

impl Screened<'_> {
    /// The f32 head's greedy token for row `row` after HF's repetition penalty over `seen`
    /// ([`crate::generate::apply_repetition_penalty`]), `w` being the head the screen was
    /// made from; and how many tokens needed their f32 logit.
    pub(crate) fn argmax(
        &self,
        row: usize,
        w: &[f32],
        seen: &[bool],
        penalty: f64,
    ) -> (u32, usize) {
        let (vocab, h) = (self.screen.vocab, self.screen.hidden);
        let (lo, hi) = self.bounds(row, seen, penalty);
        let floor = lo.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let candidates: Vec<usize> = (0..vocab).filter(|&i| hi[i] >= floor).collect();
        let x = &self.x[row * h..(row + 1) * h];
        let wrow = |i: usize| &w[i * h..(i + 1) * h];
        let mut exact = Vec::with_capacity(candidates.len());
        let mut chunks = candidates.chunks_exact(8);
        for c in &mut chunks {
            exact.extend(dots_as_product(
                x,
                std::array::from_fn::<_, 8, _>(|j| wrow(c[j])),
            ));
        }
        for &i in chunks.remainder() {
            exact.extend(dots_as_product(x, [wrow(i)]));
        }
        let mut penalized = exact;
        let seen_of: Vec<bool> = candidates.iter().map(|&i| seen[i]).collect();
        crate::generate::apply_repetition_penalty(&mut penalized, &seen_of, penalty);
        let best = crate::generate::argmax(&penalized) as usize;
        (candidates[best] as u32, candidates.len())
    }
}

impl Screened<'_> {
    /// Bounds on every token's f32 logit for row `row`, after the repetition penalty over
    /// `seen`: `lo[i] ≤ logit[i] ≤ hi[i]`.
    fn bounds(&self, row: usize, seen: &[bool], penalty: f64) -> (Vec<f32>, Vec<f32>) {
        let s = self.screen;
        let vocab = s.vocab;
        let approx = &self.approx[row * vocab..(row + 1) * vocab];
        let (nx, nd, nxh) = self.norms[row];
        let mut lo = vec![0f32; vocab];
        let mut hi = vec![0f32; vocab];
        for i in 0..vocab {
            let radius = (s.err[i] * nx + s.norm_q[i] * nd) * (1.0 + ROUNDING)
                + ROUNDING * (s.norm[i] * nx + s.norm_q[i] * nxh);
            // Room for the rounding of the bounds themselves (at most 2⁻²⁴ of their size).
            let r = radius + 1e-6 * (approx[i].abs() + radius);
            lo[i] = approx[i] - r;
            hi[i] = approx[i] + r;
        }
        crate::generate::apply_repetition_penalty(&mut lo, seen, penalty);
        crate::generate::apply_repetition_penalty(&mut hi, seen, penalty);
        (lo, hi)
    }
}

/// `(‖v‖, ‖v − v̂‖, ‖v̂‖)` for `v̂` the Q8_0 rounding of `v` (blocks of 32; a shorter tail is
/// not quantized by any caller), each rounded up.
fn quantized_norms(v: &[f32]) -> (f32, f32, f32) {
    let (mut n, mut e, mut q) = (0f64, 0f64, 0f64);
    let mut qs = [0i8; 32];
    for block in v.chunks(32) {
        let d = crate::q8::quantize_block(block, &mut qs[..block.len()]) as f64;
        for (&x, &qv) in block.iter().zip(&qs) {
            let xh = d * qv as f64;
            n += (x as f64) * (x as f64);
            e += (x as f64 - xh) * (x as f64 - xh);
            q += xh * xh;
        }
    }
    let up = |s: f64| (s.sqrt() * (1.0 + 1e-6)) as f32;
    (up(n), up(e), up(q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{apply_repetition_penalty, argmax};
    use crate::sgemm::tests::values;
    use crate::sgemm::{PackedRhs, View, gemm_packed};

    /// The f32 head's logits, as [`crate::model::Llama::logits`] computes them.
    fn dense(w: &[f32], vocab: usize, h: usize, x: &[f32], m: usize) -> Vec<f32> {
        let packed = PackedRhs::pack(View::transposed(w, h, vocab));
        let mut out = vec![0f32; m * vocab];
        gemm_packed(&mut out, View::row_major(x, m, h), &packed, false, true);
        out
    }

    /// A head whose tokens come in groups of near-copies (a few ulps apart, and exact copies)
    /// and rows aimed along the input's own quantization error, so that the Q8_0 logits tie
    /// within groups and the activation term of the radius is nearly reached.
    fn adversarial_head(vocab: usize, h: usize, x: &[f32], seed: u64) -> Vec<f32> {
        let base = values(vocab * h, seed);
        let mut w = base.clone();
        let mut qs = [0i8; 32];
        let mut x_err = vec![0f32; h];
        for (b, block) in x.chunks(32).enumerate() {
            let d = crate::q8::quantize_block(block, &mut qs);
            for (j, (&v, &q)) in block.iter().zip(&qs).enumerate() {
                x_err[b * 32 + j] = v - d * q as f32;
            }
        }
        let scale = 0.5
            / x_err
                .iter()
                .map(|e| e.abs())
                .fold(0f32, f32::max)
                .max(1e-30);
        for (i, row) in w.chunks_exact_mut(h).enumerate() {
            match i % 8 {
                // Aimed along `x − x̂`.
                0 => row.iter_mut().zip(&x_err).for_each(|(r, e)| *r = e * scale),
                // Near-copies of the group's first row: one ulp up in a few places.
                1..=5 => {
                    let first = (i / 8) * 8 * h + h;
                    row.copy_from_slice(&base[first..first + h]);
                    for j in (i % 8..h).step_by(7) {
                        row[j] = f32::from_bits(row[j].to_bits() + (i % 3) as u32);
                    }
                }
                // An exact copy of the previous row: a true tie.
                6 => {
                    let prev = base[(i - 1) * h..i * h].to_vec();
                    row.copy_from_slice(&prev);
                }
                _ => {}
            }
        }
        // Row 6 of each group copies row 5 as it is now (after its ulp changes).
        for g in 0..vocab / 8 {
            let (a, b) = w.split_at_mut((g * 8 + 6) * h);
            b[..h].copy_from_slice(&a[(g * 8 + 5) * h..]);
        }
        w
    }

    #[test]
    fn every_logit_lies_within_its_bounds() {
        if !crate::sgemm::supported() {
            eprintln!("note: this CPU lacks AVX2 or FMA; the f32 head is not screened");
            return;
        }
        let (vocab, h, m) = (512, 96, 4);
        for seed in 0..6 {
            let mut x = values(m * h, 1000 + seed);
            // Heavy tails: an outlier per row, as hidden states have.
            for r in 0..m {
                x[r * h + (seed as usize * 7 + r) % h] *= 40.0;
            }
            let w = adversarial_head(vocab, h, &x[..h], seed);
            let Some(screen) = HeadScreen::new(&w, vocab, h) else {
                eprintln!("note: no packed Q8_0 product on this CPU");
                return;
            };
            let exact = dense(&w, vocab, h, &x, m);
            let s = screen.screen(&x, m).unwrap();
            let mut tightest = 0f32;
            for r in 0..m {
                let (lo, hi) = s.bounds(r, &vec![false; vocab], 1.0);
                for i in 0..vocab {
                    let e = exact[r * vocab + i];
                    assert!(
                        lo[i] <= e && e <= hi[i],
                        "seed {seed} row {r} token {i}: {e} not in [{}, {}]",
                        lo[i],
                        hi[i]
                    );
                    tightest =
                        tightest.max((e - s.approx[r * vocab + i]).abs() / (hi[i] - lo[i]) * 2.0);
                }
            }
            // The bound is not idle: some token uses a good share of its radius.
            assert!(
                tightest > 0.2,
                "seed {seed}: largest share of a radius used {tightest}"
            );
        }
    }

    #[test]
    fn screened_choices_equal_the_f32_heads_on_near_ties() {
        if !crate::sgemm::supported() {
            eprintln!("note: this CPU lacks AVX2 or FMA; the f32 head is not screened");
            return;
        }
        let (vocab, h, m) = (256, 64, 6);
        for seed in 0..8 {
            let x = values(m * h, 2000 + seed);
            let w = adversarial_head(vocab, h, &x[..h], 50 + seed);
            let Some(screen) = HeadScreen::new(&w, vocab, h) else {
                return;
            };
            let exact = dense(&w, vocab, h, &x, m);
            let s = screen.screen(&x, m).unwrap();
            for r in 0..m {
                for penalty in [1.0, 1.1, 1.8] {
                    let seen: Vec<bool> = (0..vocab)
                        .map(|i| (i * 7 + r + seed as usize).is_multiple_of(5))
                        .collect();
                    let mut l = exact[r * vocab..(r + 1) * vocab].to_vec();
                    apply_repetition_penalty(&mut l, &seen, penalty);
                    let (tok, candidates) = s.argmax(r, &w, &seen, penalty);
                    assert_eq!(tok, argmax(&l), "seed {seed} row {r} penalty {penalty}");
                    assert!(candidates >= 1);
                }
            }
        }
        // Exact copies tie: the first index wins, as `torch.argmax` (and `argmax`) take it.
        let x = values(h, 7);
        let mut w = values(vocab * h, 8);
        let best = (0..vocab)
            .max_by(|&a, &b| {
                let d = |i: usize| crate::sgemm::dots_as_product(&x, [&w[i * h..(i + 1) * h]])[0];
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let copy = w[best * h..(best + 1) * h].to_vec();
        w[(vocab - 1) * h..].copy_from_slice(&copy);
        let screen = HeadScreen::new(&w, vocab, h).unwrap();
        let s = screen.screen(&x, 1).unwrap();
        assert_eq!(
            s.argmax(0, &w, &vec![false; vocab], 1.0).0 as usize,
            best.min(vocab - 1)
        );
    }

    #[test]
    fn a_clear_winner_needs_few_exact_logits() {
        if !crate::sgemm::supported() {
            eprintln!("note: this CPU lacks AVX2 or FMA; the f32 head is not screened");
            return;
        }
        let (vocab, h) = (4096, 128);
        let x = values(h, 11);
        let mut w: Vec<f32> = values(vocab * h, 12).iter().map(|v| v * 0.05).collect();
        // Token 77 points along `x`.
        for (r, &v) in w[77 * h..78 * h].iter_mut().zip(&x) {
            *r = v * 0.5;
        }
        let Some(screen) = HeadScreen::new(&w, vocab, h) else {
            return;
        };
        let s = screen.screen(&x, 1).unwrap();
        let (tok, candidates) = s.argmax(0, &w, &vec![false; vocab], 1.0);
        assert_eq!(tok, 77);
        assert!(candidates < vocab / 100, "{candidates} candidates");
    }
}
