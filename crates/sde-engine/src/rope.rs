//! Rotary position embedding fused with the change of layout around attention.
//!
//! Attention reads projections per head (`[g, heads, t, hd]`) while the linear layers write
//! them per position (`[g·t, heads·hd]`). Done with candle's ops, a training step first
//! copies each projection into the head layout, then rotates it in a second pass (and the
//! backward makes the same two passes the other way). Here one pass reads the flat rows and
//! writes the rotated heads, or reads head gradients and writes flat rows rotated back.
//!
//! The rotation is the one of `candle_nn::rotary_emb::rope` (halves, not interleaved pairs):
//! for angle `θ_j`, `(x_j, x_{j+hd/2}) → (x_j cos θ_j − x_{j+hd/2} sin θ_j, x_{j+hd/2} cos θ_j
//! + x_j sin θ_j)`. Its transpose, the rotation by `−θ`, carries gradients back.
//!
//! Invariant: the results are candle's `rope` of the copied heads (or its inverse) to the
//! last bit: the same products and sums, in the same order (tested below).

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::{fused_ok, with_f32};

/// Outputs below this many elements are rotated on the calling thread: a decode step's
/// heads (576 elements at batch 1) cost less than handing them to the pool.
const PARALLEL_FROM: usize = 1 << 14;

/// The sizes of one group of rows: `g` sequences of `t` positions, `heads` heads of width
/// `hd`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadsOf {
    /// Sequences.
    pub g: usize,
    /// Positions per sequence.
    pub t: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub hd: usize,
}

/// Rows `start..start + g·t` of the flat projection `y` (`[n, heads·hd]`) as rotated heads
/// `[g, heads, t, hd]`, with `cos` and `sin` `[g, t, hd/2]`; `None` where the fused pass does
/// not apply (another device or dtype, an odd head width, or shapes that do not fit).
pub(crate) fn rotated_heads(
    y: &Tensor,
    start: usize,
    s: HeadsOf,
    cos: &Tensor,
    sin: &Tensor,
) -> Result<Option<Tensor>> {
    let HeadsOf { g, t, heads, hd } = s;
    let half = hd / 2;
    let fits = [y, cos, sin].iter().all(|x| fused_ok(x))
        && hd % 2 == 0
        && y.dims2()
            .is_ok_and(|(n, w)| w == heads * hd && start + g * t <= n)
        && cos.dims() == [g, t, half]
        && sin.dims() == [g, t, half];
    if !fits {
        return Ok(None);
    }
    let mut out = vec![0f32; g * heads * t * hd];
    with_f32(y, |y| {
        with_f32(cos, |cos| {
            with_f32(sin, |sin| {
                let head = |(gh, block): (usize, &mut [f32])| {
                    let (gi, h) = (gh / heads, gh % heads);
                    for (ti, o) in block.chunks_exact_mut(hd).enumerate() {
                        let row = start + gi * t + ti;
                        let x = &y[row * heads * hd + h * hd..][..hd];
                        let at = (gi * t + ti) * half;
                        rotate(o, x, &cos[at..at + half], &sin[at..at + half], false);
                    }
                };
                if out.len() < PARALLEL_FROM {
                    out.chunks_mut(t * hd).enumerate().for_each(head);
                } else {
                    out.par_chunks_mut(t * hd).enumerate().for_each(head);
                }
            })
        })
    })???;
    Ok(Some(Tensor::from_vec(out, (g, heads, t, hd), y.device())?))
}

/// Head gradients `d` (`[g, heads, t, hd]`) rotated back (by the opposite angles) into flat
/// rows `[g·t, heads·hd]`, with `cos` and `sin` `[g, t, hd/2]`; `None` where the fused pass
/// does not apply.
pub(crate) fn unrotated_rows(d: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Option<Tensor>> {
    let Ok((g, heads, t, hd)) = d.dims4() else {
        return Ok(None);
    };
    let half = hd / 2;
    let fits = [d, cos, sin].iter().all(|x| fused_ok(x))
        && hd % 2 == 0
        && cos.dims() == [g, t, half]
        && sin.dims() == [g, t, half];
    if !fits {
        return Ok(None);
    }
    let w = heads * hd;
    let mut out = vec![0f32; g * t * w];
    with_f32(d, |d| {
        with_f32(cos, |cos| {
            with_f32(sin, |sin| {
                let row = |(row, o): (usize, &mut [f32])| {
                    let (gi, ti) = (row / t, row % t);
                    let at = row * half;
                    for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
                        let x = &d[((gi * heads + h) * t + ti) * hd..][..hd];
                        rotate(oh, x, &cos[at..at + half], &sin[at..at + half], true);
                    }
                };
                if out.len() < PARALLEL_FROM {
                    out.chunks_mut(w).enumerate().for_each(row);
                } else {
                    out.par_chunks_mut(w).enumerate().for_each(row);
                }
            })
        })
    })???;
    Ok(Some(Tensor::from_vec(out, (g * t, w), d.device())?))
}

/// One head: `out = rope(x)`, or the rotation by the opposite angles with `inverse`.
#[inline(always)]
fn rotate(out: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], inverse: bool) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    // candle computes `x1·cos − x2·sin` and `x2·cos + x1·sin`; the inverse negates `sin`.
    if inverse {
        for j in 0..half {
            let (c, s) = (cos[j], -sin[j]);
            o1[j] = x1[j] * c - x2[j] * s;
            o2[j] = x2[j] * c + x1[j] * s;
        }
    } else {
        for j in 0..half {
            let (c, s) = (cos[j], sin[j]);
            o1[j] = x1[j] * c - x2[j] * s;
            o2[j] = x2[j] * c + x1[j] * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn candle_heads(y: &Tensor, start: usize, s: HeadsOf) -> Tensor {
        y.narrow(0, start, s.g * s.t)
            .unwrap()
            .reshape((s.g, s.t, s.heads, s.hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    }

    #[test]
    fn rotated_heads_equal_candles_rope_of_the_copied_heads_bit_for_bit() {
        let dev = Device::Cpu;
        let s = HeadsOf {
            g: 3,
            t: 5,
            heads: 4,
            hd: 8,
        };
        let y = Tensor::randn(0f32, 1.0, (2 + s.g * s.t + 1, s.heads * s.hd), &dev).unwrap();
        let cos = Tensor::randn(0f32, 1.0, (s.g, s.t, s.hd / 2), &dev).unwrap();
        let sin = Tensor::randn(0f32, 1.0, (s.g, s.t, s.hd / 2), &dev).unwrap();
        let want = candle_nn::rotary_emb::rope(&candle_heads(&y, 2, s), &cos, &sin).unwrap();
        let got = rotated_heads(&y, 2, s, &cos, &sin).unwrap().unwrap();
        assert_eq!(got.dims(), want.dims());
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&got), bits(&want));

        // Back: candle's rope with `-sin`, then the flat layout.
        let d = Tensor::randn(0f32, 1.0, (s.g, s.heads, s.t, s.hd), &dev).unwrap();
        let want = candle_nn::rotary_emb::rope(&d, &cos, &sin.neg().unwrap())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((s.g * s.t, s.heads * s.hd))
            .unwrap();
        let got = unrotated_rows(&d, &cos, &sin).unwrap().unwrap();
        assert_eq!(bits(&got), bits(&want));
    }

    #[test]
    fn shapes_that_do_not_fit_take_the_general_path() {
        let dev = Device::Cpu;
        let s = HeadsOf {
            g: 1,
            t: 4,
            heads: 2,
            hd: 4,
        };
        let y = Tensor::zeros((3, 8), candle_core::DType::F32, &dev).unwrap();
        let cs = Tensor::zeros((1, 4, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(
            rotated_heads(&y, 0, s, &cs, &cs).unwrap().is_none(),
            "too few rows"
        );
        let y = Tensor::zeros((4, 8), candle_core::DType::F64, &dev).unwrap();
        assert!(rotated_heads(&y, 0, s, &cs, &cs).unwrap().is_none(), "f64");
        let d = Tensor::zeros((1, 2, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let wrong = Tensor::zeros((1, 3, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(unrotated_rows(&d, &wrong, &wrong).unwrap().is_none());
    }
}
