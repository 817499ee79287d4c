//! Masked next-token cross-entropy evaluated only where the loss is.
//!
//! The vocabulary projection is the most expensive matmul of a small model; only the hidden
//! states whose next token is a loss target are projected, so a No-MI batch pays for a few
//! completion tokens instead of every position.

use candle_core::{D, DType, Tensor};

use crate::error::Result;

/// Gathers the hidden states at `positions` (flat indices into `b * t`) from `[b, t, h]`.
pub fn gather_positions(hidden: &Tensor, positions: &Tensor) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    Ok(hidden.reshape((b * t, h))?.index_select(positions, 0)?)
}

/// Sum over rows of `-log softmax(logits)[target]`, computed in f32.
///
/// `logits` is `[n, vocab]` and `targets` `[n]` u32. Returns a scalar tensor.
pub fn nll_sum(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?;
    Ok(picked.sum_all()?.neg()?)
}

/// Masked next-token loss of one micro-batch, divided by `normaliser`.
///
/// `project` maps gathered hidden states `[n, h]` to logits `[n, vocab]` (the model's `lm_head`).
/// `normaliser` is the number of loss tokens of the whole accumulation window, so that summing
/// the micro-batch losses gives the mean over that window.
pub fn masked_loss(
    hidden: &Tensor,
    positions: &Tensor,
    targets: &Tensor,
    normaliser: usize,
    project: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let picked = gather_positions(hidden, positions)?;
    let logits = project(&picked)?;
    let sum = nll_sum(&logits, targets)?;
    Ok((sum / normaliser.max(1) as f64)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn nll_matches_a_hand_computation() {
        let logits = Tensor::new(&[[0.0f32, 1.0, 2.0], [3.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[2u32, 1], &Device::Cpu).unwrap();
        let got = nll_sum(&logits, &targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lse0 = (1f64 + 1f64.exp() + 2f64.exp()).ln();
        let lse1 = (3f64.exp() + 2.0).ln();
        let want = (lse0 - 2.0) + lse1;
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn masked_loss_uses_only_listed_positions_and_flows_gradients() {
        let dev = Device::Cpu;
        // b = 1, t = 3, h = 2; identity projection: logits = hidden.
        let h = Var::from_tensor(
            &Tensor::new(&[[[1.0f32, 0.0], [0.0, 5.0], [2.0, 2.0]]], &dev).unwrap(),
        )
        .unwrap();
        let pos = Tensor::new(&[1u32], &dev).unwrap();
        let tgt = Tensor::new(&[0u32], &dev).unwrap();
        let loss = masked_loss(h.as_tensor(), &pos, &tgt, 2, |x| Ok(x.clone())).unwrap();
        let want = ((1f64 + 5f64.exp()).ln() - 0.0) / 2.0;
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-5);
        let g = loss.backward().unwrap();
        let gh = g.get(h.as_tensor()).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(gh[0][0], vec![0.0, 0.0]);
        assert_eq!(gh[0][2], vec![0.0, 0.0]);
        let p0 = 1.0 / (1.0 + 5f64.exp());
        assert!((gh[0][1][0] as f64 - (p0 - 1.0) / 2.0).abs() < 1e-6);
    }
}
