//! The LoRA training step with a hand-written backward pass.
//!
//! candle's autograd is general and pays for it here: its matmul backward also computes the
//! gradient of every frozen weight (as many FLOPs as the forward matmul), and every gradient is
//! accumulated into a freshly zeroed tensor. This pass knows the model: the forward keeps
//! exactly the activations the backward needs, the backward propagates through a frozen
//! linear with one matmul (`dx = dy W`), and only the LoRA factors get weight gradients.
//!
//! Invariant: the gradients equal those of `forward_hidden` + `masked_loss` + autograd (tested
//! to float tolerance in `tests/train_gradients.rs`), including the order in which LoRA
//! dropout masks are drawn.

use candle_core::{D, DType, Tensor};

use super::{Geometry, Layer, Llama};
use crate::batch::TrainBatch;
use crate::error::{EngineError, Result};
use crate::kernels::{self, MatmulExt, matmul_sum};
use crate::lora::{Linear, dropout_mask};

/// The loss of one micro-batch and the gradients of the LoRA factors.
#[derive(Debug)]
pub struct LossAndGrads {
    /// Summed next-token loss over the batch's loss positions, divided by the normaliser.
    pub loss: f64,
    /// One gradient per entry of [`Llama::lora_vars`], in that order.
    pub grads: Vec<Tensor>,
}

/// What the backward pass of one linear layer needs from its forward pass.
struct LinearSaved {
    /// The layer input.
    x: Tensor,
    /// The LoRA dropout mask (0 or `1/(1-p)`) when dropout was applied.
    mask: Option<Tensor>,
    /// `dropout(x) @ A^T`, `[n, r]`.
    xa: Option<Tensor>,
}

struct LayerSaved {
    x: Tensor,
    r1: Tensor,
    q: LinearSaved,
    k: LinearSaved,
    v: LinearSaved,
    /// Scaled, rotated queries `[b, nkv, rep * t, hd]`.
    qs: Tensor,
    /// Rotated keys `[b, nkv, t, hd]`.
    kr: Tensor,
    /// Values `[b, nkv, t, hd]`.
    vh: Tensor,
    /// Attention probabilities `[b, nkv, rep * t, t]`.
    probs: Tensor,
    o: LinearSaved,
    x_mid: Tensor,
    r2: Tensor,
    gate: LinearSaved,
    up: LinearSaved,
    g: Tensor,
    u: Tensor,
    down: LinearSaved,
}

/// Gradients of one linear's LoRA factors.
struct LoraGrads {
    a: Tensor,
    b: Tensor,
}

impl Llama {
    /// Forward pass, masked next-token loss and backward pass of one training micro-batch
    /// (LoRA dropout on), without candle's autograd. The loss is summed over the batch's loss
    /// positions and divided by `normaliser` (the loss tokens of the accumulation window).
    pub fn lora_loss_and_grads(
        &self,
        batch: &TrainBatch,
        normaliser: usize,
    ) -> Result<LossAndGrads> {
        if self.lora.is_none() {
            return Err(EngineError::invalid(
                "the model has no LoRA layers to train",
            ));
        }
        if self.layers.iter().any(|l| {
            [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                .iter()
                .any(|lin| lin.lora.as_ref().is_some_and(|a| a.merged))
        }) {
            return Err(EngineError::invalid(
                "LoRA is merged into the weights; unmerge it before training",
            ));
        }
        let (b, t) = batch.input_ids.dims2()?;
        let mask: Vec<Vec<bool>> = batch
            .attention_mask
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|r| r.into_iter().map(|x| x > 0.5).collect())
            .collect();
        let geo = self.geometry(&mask, None)?;
        let h = self.cfg.hidden_size;
        let ids = batch.input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let mut x = self.embed.index_select(&ids, 0)?;

        let mut saved = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (next, s) = self.layer_forward(layer, &x, &geo, b, t)?;
            saved.push(s);
            x = next;
        }

        // Final norm, head at the loss positions, cross-entropy.
        let (hf, rf) = rms_forward(&x, &self.norm, self.cfg.rms_norm_eps)?;
        let w_head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let picked = hf.index_select(&batch.loss_positions, 0)?;
        let logits = picked.mm(&w_head.t()?)?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let targets = batch.targets.to_dtype(DType::U32)?.unsqueeze(1)?;
        let nll = log_probs.gather(&targets, 1)?.sum_all()?.neg()?;
        let norm = normaliser.max(1) as f64;
        let loss = nll.to_dtype(DType::F64)?.to_scalar::<f64>()? / norm;

        let onehot = Tensor::ones(targets.dims(), DType::F32, logits.device())?;
        let dlogits = log_probs
            .exp()?
            .scatter_add(&targets, &onehot.neg()?, 1)?
            .affine(1.0 / norm, 0.0)?;
        let dpicked = dlogits.mm(w_head)?;
        let dhf = Tensor::zeros((b * t, h), DType::F32, x.device())?.index_add(
            &batch.loss_positions,
            &dpicked,
            0,
        )?;
        let zeros = dhf.zeros_like()?;
        let mut dx = rms_backward_add(&x, &rf, &self.norm, &dhf, &zeros)?;

        let mut per_layer: Vec<Vec<(LoraGrads, usize)>> = Vec::with_capacity(self.layers.len());
        for (i, (layer, s)) in self.layers.iter().zip(saved).enumerate().rev() {
            let (next, grads) = self.layer_backward(layer, s, &dx, &geo, b, t, i > 0)?;
            per_layer.push(grads);
            dx = next;
        }
        per_layer.reverse();

        let mut grads = Vec::new();
        for layer_grads in per_layer {
            let mut layer_grads = layer_grads;
            layer_grads.sort_by_key(|(_, order)| *order);
            for (g, _) in layer_grads {
                grads.push(g.a);
                grads.push(g.b);
            }
        }
        Ok(LossAndGrads { loss, grads })
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        geo: &Geometry,
        b: usize,
        t: usize,
    ) -> Result<(Tensor, LayerSaved)> {
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let rep = nh / nkv;
        let eps = self.cfg.rms_norm_eps;
        let (hn, r1) = rms_forward(x, &layer.input_norm, eps)?;
        let (q, qsv) = self.linear_forward(&layer.q, &hn)?;
        let (k, ksv) = self.linear_forward(&layer.k, &hn)?;
        let (v, vsv) = self.linear_forward(&layer.v, &hn)?;
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = candle_nn::rotary_emb::rope(&heads(q, nh)?, &geo.cos, &geo.sin)?;
        let kr = candle_nn::rotary_emb::rope(&heads(k, nkv)?, &geo.cos, &geo.sin)?;
        let vh = heads(v, nkv)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let qs = (q * scale)?.reshape((b, nkv, rep * t, hd))?;
        let scores = qs
            .mm(&kr.t()?)?
            .reshape((b, nkv, rep, t, t))?
            .broadcast_add(&geo.bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, nkv, rep * t, t))?;
        let attn = probs
            .mm(&vh)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b * t, nh * hd))?;
        let (o, osv) = self.linear_forward(&layer.o, &attn)?;
        let x_mid = (x + o)?;
        let (hn2, r2) = rms_forward(&x_mid, &layer.post_norm, eps)?;
        let (g, gsv) = self.linear_forward(&layer.gate, &hn2)?;
        let (u, usv) = self.linear_forward(&layer.up, &hn2)?;
        let act = swiglu(&g, &u)?;
        let (m, dsv) = self.linear_forward(&layer.down, &act)?;
        let out = (&x_mid + m)?;
        Ok((
            out,
            LayerSaved {
                x: x.clone(),
                r1,
                q: qsv,
                k: ksv,
                v: vsv,
                qs,
                kr,
                vh,
                probs,
                o: osv,
                x_mid,
                r2,
                gate: gsv,
                up: usv,
                g,
                u,
                down: dsv,
            },
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        layer: &Layer,
        s: LayerSaved,
        dout: &Tensor,
        geo: &Geometry,
        b: usize,
        t: usize,
        need_input_grad: bool,
    ) -> Result<(Tensor, Vec<(LoraGrads, usize)>)> {
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let rep = nh / nkv;
        let mut grads = Vec::with_capacity(7);

        // MLP.
        let (dact, gd) = linears_backward(&[(&layer.down, &s.down, dout)], true)?;
        push(&mut grads, gd, 6);
        let (dg, du) = swiglu_backward(&s.g, &s.u, &dact.expect("asked for"))?;
        let (dhn2, gg) = linears_backward(
            &[(&layer.gate, &s.gate, &dg), (&layer.up, &s.up, &du)],
            true,
        )?;
        push(&mut grads, gg, 4);
        let dhn2 = dhn2.expect("asked for");
        let dx_mid = rms_backward_add(&s.x_mid, &s.r2, &layer.post_norm, &dhn2, dout)?;

        // Attention.
        let (dattn, go) = linears_backward(&[(&layer.o, &s.o, &dx_mid)], true)?;
        push(&mut grads, go, 3);
        let d_o = dattn
            .expect("asked for")
            .reshape((b, t, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, nkv, rep * t, hd))?;
        let dprobs = d_o.mm(&s.vh.t()?)?;
        let dv = s.probs.t()?.mm(&d_o)?;
        let dscores = softmax_backward(&s.probs, &dprobs)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let dq = (dscores.mm(&s.kr)? * scale)?.reshape((b, nh, t, hd))?;
        let dk = dscores.t()?.mm(&s.qs)?;
        let neg_sin = geo.sin.neg()?;
        let dq = candle_nn::rotary_emb::rope(&dq.contiguous()?, &geo.cos, &neg_sin)?;
        let dk = candle_nn::rotary_emb::rope(&dk.contiguous()?, &geo.cos, &neg_sin)?;
        let flat = |d: Tensor, n: usize| -> Result<Tensor> {
            Ok(d.transpose(1, 2)?.reshape((b * t, n * hd))?)
        };
        let (dq, dk, dv) = (flat(dq, nh)?, flat(dk, nkv)?, flat(dv, nkv)?);
        let (dhn1, gqkv) = linears_backward(
            &[
                (&layer.q, &s.q, &dq),
                (&layer.k, &s.k, &dk),
                (&layer.v, &s.v, &dv),
            ],
            need_input_grad,
        )?;
        push(&mut grads, gqkv, 0);
        let dx = match dhn1 {
            Some(dhn1) => rms_backward_add(&s.x, &s.r1, &layer.input_norm, &dhn1, &dx_mid)?,
            None => dx_mid,
        };
        Ok((dx, grads))
    }

    /// `y = x W^T (+ bias) + scale * dropout(x) A^T B^T`, keeping what the backward needs.
    fn linear_forward(&self, lin: &Linear, x: &Tensor) -> Result<(Tensor, LinearSaved)> {
        let mut saved = LinearSaved {
            x: x.clone(),
            mask: None,
            xa: None,
        };
        let wt = lin.weight.t()?;
        let mut y = match &lin.lora {
            Some(lora) => {
                let a = lora.a.as_tensor().detach();
                let bt = lora.b.as_tensor().detach().t()?;
                let mask = if lora.dropout > 0.0 {
                    Some(dropout_mask(x, lora.dropout, &self.rng)?)
                } else {
                    None
                };
                let xin = match &mask {
                    Some(m) => (x * m)?,
                    None => x.clone(),
                };
                let xa = xin.mm(&a.t()?)?;
                let xa_scaled = (&xa * lora.scale)?;
                saved.mask = mask;
                saved.xa = Some(xa);
                matmul_sum(&[(x, &wt), (&xa_scaled, &bt)])?
            }
            None => x.mm(&wt)?,
        };
        if let Some(bias) = &lin.bias {
            y = y.broadcast_add(bias)?;
        }
        Ok((y, saved))
    }
}

/// Files the gradients of consecutive targets starting at `first` (q, k, v, o, gate, up,
/// down = 0..7) for the final ordering.
fn push(grads: &mut Vec<(LoraGrads, usize)>, gs: Vec<Option<LoraGrads>>, first: usize) {
    for (i, g) in gs.into_iter().enumerate() {
        if let Some(g) = g {
            grads.push((g, first + i));
        }
    }
}

/// Backward of [`Llama::linear_forward`] for several linears that read the same input: the
/// LoRA factors' gradients of each, and (when asked) the input gradient summed over all of
/// them in one buffer (`Σ dy_i W_i + scale * (dy_i B_i) A_i`). The frozen weights get none.
fn linears_backward(
    parts: &[(&Linear, &LinearSaved, &Tensor)],
    need_dx: bool,
) -> Result<(Option<Tensor>, Vec<Option<LoraGrads>>)> {
    let mut grads = Vec::with_capacity(parts.len());
    let mut owned: Vec<(Tensor, Tensor)> = Vec::new();
    let mut masked: Vec<Tensor> = Vec::new();
    for (lin, s, dy) in parts {
        let dy = *dy;
        if need_dx {
            owned.push((dy.clone(), lin.weight.clone()));
        }
        match (&lin.lora, &s.xa) {
            (Some(lora), Some(xa)) => {
                let a = lora.a.as_tensor().detach();
                let bm = lora.b.as_tensor().detach();
                let gb = (dy.t()?.mm(xa)? * lora.scale)?;
                let dyb = (dy.mm(&bm)? * lora.scale)?;
                let xin = match &s.mask {
                    Some(m) => (&s.x * m)?,
                    None => s.x.clone(),
                };
                let ga = dyb.t()?.mm(&xin)?;
                if need_dx {
                    match &s.mask {
                        Some(m) => masked.push((dyb.mm(&a)? * m)?),
                        None => owned.push((dyb, a)),
                    }
                }
                grads.push(Some(LoraGrads { a: ga, b: gb }));
            }
            _ => grads.push(None),
        }
    }
    if !need_dx {
        return Ok((None, grads));
    }
    let terms: Vec<(&Tensor, &Tensor)> = owned.iter().map(|(a, b)| (a, b)).collect();
    let mut dx = matmul_sum(&terms)?;
    for m in masked {
        dx = (dx + m)?;
    }
    Ok((Some(dx), grads))
}

/// `y = x / rms(x) * w`; returns `y` and `1 / rms(x)` (`[n, 1]`).
fn rms_forward(x: &Tensor, w: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    if kernels::fused_ok(x) {
        return kernels::rms_forward(x, w, eps);
    }
    let h = x.dim(D::Minus1)? as f64;
    let r = ((x.sqr()?.sum_keepdim(D::Minus1)? / h)? + eps)?
        .sqrt()?
        .recip()?;
    let y = x.broadcast_mul(&r)?.broadcast_mul(w)?;
    Ok((y, r))
}

/// `resid` plus the gradient of [`rms_forward`] with respect to `x`.
fn rms_backward_add(
    x: &Tensor,
    r: &Tensor,
    w: &Tensor,
    g: &Tensor,
    resid: &Tensor,
) -> Result<Tensor> {
    if kernels::fused_ok(x) {
        return kernels::rms_backward_add(x, r, w, g, resid);
    }
    let h = x.dim(D::Minus1)? as f64;
    let xhat = x.broadcast_mul(r)?;
    let gw = g.broadcast_mul(w)?;
    let m = ((&gw * &xhat)?.sum_keepdim(D::Minus1)? / h)?;
    Ok((resid + (gw - xhat.broadcast_mul(&m)?)?.broadcast_mul(r)?)?)
}

/// Gradient of softmax over the last dimension: `p * (dp - sum(dp * p))`.
fn softmax_backward(p: &Tensor, dp: &Tensor) -> Result<Tensor> {
    if kernels::fused_ok(p) {
        return kernels::softmax_backward(p, dp);
    }
    let s = (dp * p)?.sum_keepdim(D::Minus1)?;
    Ok((p * dp.broadcast_sub(&s)?)?)
}

/// `silu(g) * u`.
fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if kernels::fused_ok(g) {
        return kernels::swiglu(g, u);
    }
    Ok((g.silu()? * u)?)
}

/// Gradients of `silu(g) * u` with respect to `g` and `u`.
fn swiglu_backward(g: &Tensor, u: &Tensor, d: &Tensor) -> Result<(Tensor, Tensor)> {
    if kernels::fused_ok(g) {
        return kernels::swiglu_backward(g, u, d);
    }
    let sg = candle_nn::ops::sigmoid(g)?;
    let silu = (g * &sg)?;
    // silu'(g) = sg * (1 + g * (1 - sg))
    let dsilu = (&sg * ((g * (1.0 - &sg)?)? + 1.0)?)?;
    let dg = ((d * u)? * dsilu)?;
    let du = (d * silu)?;
    Ok((dg, du))
}
