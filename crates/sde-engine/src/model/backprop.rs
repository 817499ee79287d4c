//! The LoRA training step with a hand-written backward pass.
//!
//! candle's autograd is general and pays for it here: its matmul backward also computes the
//! gradient of every frozen weight (as many FLOPs as the forward matmul), and every gradient is
//! accumulated into a freshly zeroed tensor. This pass knows the model: the forward keeps
//! exactly the activations the backward needs, the backward propagates through a frozen
//! linear with one matmul (`dx = dy W`), and only the LoRA factors get weight gradients.
//!
//! A token prefix that every row shares ([`TrainBatch::shared_prefix`]) runs once: the batch
//! is laid out flat as `[prefix; each row's own tokens]` and attention runs in two groups.
//!
//! Where the loss reads no row's first positions (a loss on the completion only), the last
//! layer's keys and values still cover every position, but its queries, output projection
//! and MLP run only from the first position the loss reads ([`Window`]): nothing else reads
//! the last layer's other outputs. On the benchmark's loss over the last 32 of 128 tokens that
//! skips about 2% of a step's FLOPs.
//!
//! Invariant: the gradients equal those of `forward_hidden` + `masked_loss` + autograd (tested
//! to float tolerance in `tests/train_gradients.rs`), including the order in which LoRA
//! dropout masks are drawn. With a shared prefix they are equal without dropout; with dropout
//! the prefix gets one mask for the batch instead of one per row.

use candle_core::{D, DType, Tensor};

use super::{Geometry, Layer, Llama};
use crate::attention;
use crate::batch::TrainBatch;
use crate::error::{EngineError, Result};
use crate::kernels::{self, MatmulExt, Packed, matmul_sum};
use crate::lora::{Linear, dropout_apply, dropout_apply_rows};
use crate::rope::{self, HeadsOf};

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
    /// The LoRA dropout mask (0 or `1/(1-p)`) and `x * mask`, when dropout was applied.
    dropout: Option<(Tensor, Tensor)>,
    /// `dropout(x) @ A^T`, `[n, r]`.
    xa: Option<Tensor>,
}

struct LayerSaved {
    x: Tensor,
    r1: Tensor,
    q: LinearSaved,
    k: LinearSaved,
    v: LinearSaved,
    /// One entry per attention group of the [`Layout`].
    attn: Vec<AttnPart>,
    o: LinearSaved,
    x_mid: Tensor,
    r2: Tensor,
    gate: LinearSaved,
    up: LinearSaved,
    g: Tensor,
    u: Tensor,
    down: LinearSaved,
}

/// How a batch's tokens are laid out in the flat `[n, hidden]` activations.
enum Layout {
    /// `b` right-padded rows of `t` tokens, each attending to itself.
    Padded { b: usize, t: usize, geo: Geometry },
    /// `p` prefix tokens that every row shares, run once, then `b` right-padded rows of the
    /// remaining `s` tokens, each attending to the prefix and to itself.
    Shared {
        p: usize,
        b: usize,
        s: usize,
        prefix: Geometry,
        suffix: Geometry,
    },
}

/// The positions of the last layer that the loss reads, when they are fewer than all: the
/// last `w` positions of each of the `b` right-padded rows of `t` (a padded [`Layout`]). Past
/// the last layer's keys and values, nothing else reads the other positions, so its queries,
/// output projection and MLP run on the window only.
struct Window {
    b: usize,
    t: usize,
    w: usize,
    /// Flat indices into `[b * t]` of the window's positions, row by row.
    rows: Vec<usize>,
    /// The same indices as a u32 tensor.
    index: Tensor,
    /// The window's queries: their rotations (`[b, w, head_dim/2]`) and bias rows
    /// (`[b, 1, 1, w, t]`).
    geo: Geometry,
}

impl Window {
    /// The window of a padded layout whose loss reads the flat `positions`; `None` where the
    /// loss reads a row's first position or no position.
    fn of(layout: &Layout, positions: &[u32]) -> Result<Option<Self>> {
        let Layout::Padded { b, t, geo } = layout else {
            return Ok(None);
        };
        let (b, t) = (*b, *t);
        let Some(first) = positions.iter().map(|&f| f as usize % t).min() else {
            return Ok(None);
        };
        if first == 0 {
            return Ok(None);
        }
        let w = t - first;
        let rows: Vec<usize> = (0..b).flat_map(|r| r * t + first..(r + 1) * t).collect();
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            geo.cos.device(),
        )?;
        let geo = geo.window(first)?;
        Ok(Some(Self {
            b,
            t,
            w,
            rows,
            index,
            geo,
        }))
    }

    /// Flat positions in `[b * t]` as positions in the window's `[b * w]` rows.
    fn positions(&self, positions: &[u32]) -> Vec<u32> {
        let first = self.t - self.w;
        positions
            .iter()
            .map(|&f| {
                let (r, i) = (f as usize / self.t, f as usize % self.t);
                (r * self.w + i - first) as u32
            })
            .collect()
    }

    /// `[b * w, h]` window rows scattered into zeros of `[b * t, h]`, plus `base` if given.
    fn scatter(&self, rows: &Tensor, base: Option<&Tensor>) -> Result<Tensor> {
        let base = match base {
            Some(t) => t.clone(),
            None => Tensor::zeros((self.b * self.t, rows.dim(1)?), rows.dtype(), rows.device())?,
        };
        Ok(base.index_add(&self.index, rows, 0)?)
    }
}

/// One attention group: `g` sequences of `tq` queries over `tk` keys.
struct AttnPart {
    g: usize,
    tq: usize,
    /// Scaled, rotated queries `[g, nkv, rep * tq, hd]`.
    qs: Tensor,
    /// Rotated keys `[g, nkv, tk, hd]`.
    k: Tensor,
    /// Values `[g, nkv, tk, hd]`.
    v: Tensor,
    /// Attention probabilities `[g, nkv, rep * tq, tk]`.
    probs: Tensor,
    /// Whether [`crate::attention`] computed them (the backward then goes through it too).
    causal: bool,
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
        if rayon::current_thread_index().is_none() {
            return crate::kernels::in_pool_awake(|| self.lora_loss_and_grads(batch, normaliser));
        }
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
        let (layout, ids, loss_positions) = self.train_layout(batch)?;
        let h = self.cfg.hidden_size;
        let mut x = self.embed.index_select(&ids, 0)?;
        let positions = loss_positions.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let window = Window::of(&layout, &positions)?;
        let last = self.layers.len().saturating_sub(1);

        let mut saved = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let win = window.as_ref().filter(|_| i == last);
            let (next, s) = self.layer_forward(layer, &x, &layout, win)?;
            saved.push(s);
            x = next;
        }
        // With a window, `x` holds its rows only.
        let loss_positions = match &window {
            Some(w) => {
                let p = w.positions(&positions);
                let len = p.len();
                Tensor::from_vec(p, len, x.device())?
            }
            None => loss_positions,
        };
        let n = x.dim(0)?;

        // Final norm, head at the loss positions, cross-entropy.
        let (hf, rf) = rms_forward(&x, &self.norm, self.cfg.rms_norm_eps)?;
        let w_head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let picked = hf.index_select(&loss_positions, 0)?;
        let logits = match self.head_packed(w_head, &picked)? {
            Some(p) => kernels::packed_matmul_sum(&[(&picked, Packed::F32(p))], &[])?,
            None => picked.mm(&w_head.t()?)?,
        };
        let norm = normaliser.max(1) as f64;
        let target_ids = batch.targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let (loss, dlogits) =
            match kernels::nll_and_grad(&logits, &target_ids, (1.0 / norm) as f32)? {
                Some((nll, dlogits)) => (nll / norm, dlogits),
                None => {
                    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                    let targets = batch.targets.to_dtype(DType::U32)?.unsqueeze(1)?;
                    let nll = log_probs.gather(&targets, 1)?.sum_all()?.neg()?;
                    let loss = nll.to_dtype(DType::F64)?.to_scalar::<f64>()? / norm;
                    let onehot = Tensor::ones(targets.dims(), DType::F32, logits.device())?;
                    let dlogits = log_probs
                        .exp()?
                        .scatter_add(&targets, &onehot.neg()?, 1)?
                        .affine(1.0 / norm, 0.0)?;
                    (loss, dlogits)
                }
            };
        let dpicked = match self.head_packed_rows(w_head)? {
            Some(p) => kernels::packed_matmul_sum(&[(&dlogits, Packed::F32(p))], &[])?,
            None => dlogits.mm(w_head)?,
        };
        let dhf = Tensor::zeros((n, h), DType::F32, x.device())?.index_add(
            &loss_positions,
            &dpicked,
            0,
        )?;
        let zeros = dhf.zeros_like()?;
        let mut dx = rms_backward_add(&x, &rf, &self.norm, &dhf, &zeros)?;

        let mut per_layer: Vec<Vec<(LoraGrads, usize)>> = Vec::with_capacity(self.layers.len());
        for (i, (layer, s)) in self.layers.iter().zip(saved).enumerate().rev() {
            let win = window.as_ref().filter(|_| i == last);
            let (next, grads) = self.layer_backward(layer, s, &dx, &layout, i > 0, win)?;
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

    /// The flat token ids, their layout and the loss positions re-indexed into it. With a
    /// shared prefix of `p` tokens the flat order is the prefix, then each row's remaining
    /// `t - p` positions; a loss position inside the prefix is listed once per row, so its
    /// gradient counts once per row as in the padded layout.
    fn train_layout(&self, batch: &TrainBatch) -> Result<(Layout, Tensor, Tensor)> {
        let (b, t) = batch.input_ids.dims2()?;
        let mask: Vec<Vec<bool>> = batch
            .attention_mask
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|r| r.into_iter().map(|x| x > 0.5).collect())
            .collect();
        let p = batch.shared_prefix;
        if p == 0 {
            let geo = self.geometry(&mask, None)?;
            let ids = batch.input_ids.to_dtype(DType::U32)?.flatten_all()?;
            return Ok((
                Layout::Padded { b, t, geo },
                ids,
                batch.loss_positions.clone(),
            ));
        }
        let rows = batch.input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let fits = p < t
            && mask.iter().all(|m| m[..=p].iter().all(|x| *x))
            && rows.iter().all(|r| r[..p] == rows[0][..p]);
        if !fits {
            return Err(EngineError::invalid(format!(
                "shared_prefix {p}: the rows do not all start with the same {p} real tokens \
                 followed by at least one more"
            )));
        }
        let s = t - p;
        let mut ids = rows[0][..p].to_vec();
        for r in &rows {
            ids.extend_from_slice(&r[p..]);
        }
        let positions: Vec<u32> = batch
            .loss_positions
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|f| {
                let (r, i) = (f as usize / t, f as usize % t);
                (if i < p { i } else { p + r * s + i - p }) as u32
            })
            .collect();
        let prefix = self.geometry_after(&[vec![true; p]], &[Vec::new()])?;
        let suffix_mask: Vec<Vec<bool>> = mask.iter().map(|m| m[p..].to_vec()).collect();
        let suffix = self.geometry_after(&suffix_mask, &vec![vec![true; p]; b])?;
        let device = batch.input_ids.device();
        let n_pos = positions.len();
        Ok((
            Layout::Shared {
                p,
                b,
                s,
                prefix,
                suffix,
            },
            Tensor::from_vec(ids, p + b * s, device)?,
            Tensor::from_vec(positions, n_pos, device)?,
        ))
    }

    /// One layer's forward pass; with a `window`, its output holds the window's rows only.
    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        layout: &Layout,
        window: Option<&Window>,
    ) -> Result<(Tensor, LayerSaved)> {
        let eps = self.cfg.rms_norm_eps;
        let (hn, r1) = rms_forward(x, &layer.input_norm, eps)?;
        let rows = |t: &Tensor| -> Result<Tensor> {
            match window {
                Some(w) => Ok(t.index_select(&w.index, 0)?),
                None => Ok(t.clone()),
            }
        };
        let (q, qsv) = self.linear_forward(&layer.q, &rows(&hn)?, window)?;
        let (k, ksv) = self.linear_forward(&layer.k, &hn, None)?;
        let (v, vsv) = self.linear_forward(&layer.v, &hn, None)?;
        let (attn, parts) = self.attention_forward(&q, &k, &v, layout, window)?;
        let (o, osv) = self.linear_forward(&layer.o, &attn, window)?;
        let x_mid = (rows(x)? + o)?;
        let (hn2, r2) = rms_forward(&x_mid, &layer.post_norm, eps)?;
        let (g, gsv) = self.linear_forward(&layer.gate, &hn2, window)?;
        let (u, usv) = self.linear_forward(&layer.up, &hn2, window)?;
        let act = kernels::swiglu_or_generic(&g, &u)?;
        let (m, dsv) = self.linear_forward(&layer.down, &act, window)?;
        let out = (&x_mid + m)?;
        Ok((
            out,
            LayerSaved {
                x: x.clone(),
                r1,
                q: qsv,
                k: ksv,
                v: vsv,
                attn: parts,
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

    /// Backward of [`Llama::layer_forward`]: with a `window`, `dout` holds the window's rows
    /// and the input gradient all rows.
    fn layer_backward(
        &self,
        layer: &Layer,
        s: LayerSaved,
        dout: &Tensor,
        layout: &Layout,
        need_input_grad: bool,
        window: Option<&Window>,
    ) -> Result<(Tensor, Vec<(LoraGrads, usize)>)> {
        let mut grads = Vec::with_capacity(7);

        // MLP.
        let (dact, gd) = linears_backward(&[(&layer.down, &s.down, dout)], true, self.bf16)?;
        push(&mut grads, gd, 6);
        let (dg, du) = swiglu_backward(&s.g, &s.u, &dact.expect("asked for"))?;
        let (dhn2, gg) = linears_backward(
            &[(&layer.gate, &s.gate, &dg), (&layer.up, &s.up, &du)],
            true,
            self.bf16,
        )?;
        push(&mut grads, gg, 4);
        let dhn2 = dhn2.expect("asked for");
        let dx_mid = rms_backward_add(&s.x_mid, &s.r2, &layer.post_norm, &dhn2, dout)?;

        // Attention.
        let (dattn, go) = linears_backward(&[(&layer.o, &s.o, &dx_mid)], true, self.bf16)?;
        push(&mut grads, go, 3);
        let (dq, dk, dv) =
            self.attention_backward(&dattn.expect("asked for"), &s.attn, layout, window)?;
        let (dhn1, dx_mid) = match window {
            None => {
                let (dhn1, gqkv) = linears_backward(
                    &[
                        (&layer.q, &s.q, &dq),
                        (&layer.k, &s.k, &dk),
                        (&layer.v, &s.v, &dv),
                    ],
                    need_input_grad,
                    self.bf16,
                )?;
                push(&mut grads, gqkv, 0);
                (dhn1, dx_mid)
            }
            // The queries read the window's rows, the keys and values all rows.
            Some(w) => {
                let (dhq, gq) =
                    linears_backward(&[(&layer.q, &s.q, &dq)], need_input_grad, self.bf16)?;
                push(&mut grads, gq, 0);
                let (dhkv, gkv) = linears_backward(
                    &[(&layer.k, &s.k, &dk), (&layer.v, &s.v, &dv)],
                    need_input_grad,
                    self.bf16,
                )?;
                push(&mut grads, gkv, 1);
                let dhn1 = match (dhq, dhkv) {
                    (Some(dhq), Some(dhkv)) => Some(w.scatter(&dhq, Some(&dhkv))?),
                    _ => None,
                };
                (dhn1, w.scatter(&dx_mid, None)?)
            }
        };
        let dx = match dhn1 {
            Some(dhn1) => rms_backward_add(&s.x, &s.r1, &layer.input_norm, &dhn1, &dx_mid)?,
            None => dx_mid,
        };
        Ok((dx, grads))
    }

    /// Attention over flat projections `q` `[n, nh * hd]`, `k` and `v` `[n, nkv * hd]`:
    /// RoPE, scaled dot products, masked softmax, weighted values; returns the flat output
    /// `[n, nh * hd]` and one [`AttnPart`] per group of the layout. With a `window`, `q` and
    /// the output hold the window's rows only.
    fn attention_forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        layout: &Layout,
        window: Option<&Window>,
    ) -> Result<(Tensor, Vec<AttnPart>)> {
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let heads = |y: &Tensor, start: usize, g: usize, t: usize, n: usize| -> Result<Tensor> {
            Ok(y.narrow(0, start, g * t)?
                .reshape((g, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        // Rows to rotated heads in one pass where it applies ([`crate::rope`]).
        let rot = |y: &Tensor,
                   start: usize,
                   g: usize,
                   t: usize,
                   n: usize,
                   geo: &Geometry|
         -> Result<Tensor> {
            let s = HeadsOf { g, t, heads: n, hd };
            match rope::rotated_heads(y, start, s, &geo.cos, &geo.sin)? {
                Some(r) => Ok(r),
                None => Ok(candle_nn::rotary_emb::rope(
                    &heads(y, start, g, t, n)?,
                    &geo.cos,
                    &geo.sin,
                )?),
            }
        };
        match layout {
            Layout::Padded { b, t, geo } => {
                let (b, t) = (*b, *t);
                let (tq, qgeo) = window.map_or((t, geo), |w| (w.w, &w.geo));
                let qh = rot(q, 0, b, tq, nh, qgeo)?;
                let kh = rot(k, 0, b, t, nkv, geo)?;
                let vh = heads(v, 0, b, t, nkv)?;
                let (out, part) = self.attend(qh, kh, vh, &qgeo.bias)?;
                Ok((out, vec![part]))
            }
            Layout::Shared {
                p,
                b,
                s,
                prefix,
                suffix,
            } => {
                let (p, b, s) = (*p, *b, *s);
                let qp = rot(q, 0, 1, p, nh, prefix)?;
                let kp = rot(k, 0, 1, p, nkv, prefix)?;
                let vp = heads(v, 0, 1, p, nkv)?;
                let qs = rot(q, p, b, s, nh, suffix)?;
                let ks = rot(k, p, b, s, nkv, suffix)?;
                let vs = heads(v, p, b, s, nkv)?;
                let widen = |pre: &Tensor, own: Tensor| -> Result<Tensor> {
                    let pre = pre.broadcast_as((b, nkv, p, hd))?.contiguous()?;
                    Ok(Tensor::cat(&[&pre, &own], 2)?.contiguous()?)
                };
                let kcat = widen(&kp, ks)?;
                let vcat = widen(&vp, vs)?;
                let (out_p, part_p) = self.attend(qp, kp, vp, &prefix.bias)?;
                let (out_s, part_s) = self.attend(qs, kcat, vcat, &suffix.bias)?;
                Ok((Tensor::cat(&[out_p, out_s], 0)?, vec![part_p, part_s]))
            }
        }
    }

    /// One attention group: rotated queries `[g, nh, tq, hd]`, keys and values
    /// `[g, nkv, tk, hd]`, additive bias `[g, 1, 1, tq, tk]` → output `[g * tq, nh * hd]`.
    fn attend(&self, q: Tensor, k: Tensor, v: Tensor, bias: &Tensor) -> Result<(Tensor, AttnPart)> {
        let (g, _, tq, _) = q.dims4()?;
        let tk = k.dim(2)?;
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let rep = nh / nkv;
        let scale = 1.0 / (hd as f64).sqrt();
        let qs = (q * scale)?.reshape((g, nkv, rep * tq, hd))?;
        let (out, probs, causal) = match attention::attend(&qs, &k, &v, bias, rep)? {
            Some((out, probs)) => (out, probs, true),
            None => {
                let scores = qs.mm(&k.t()?)?.reshape((g, nkv, rep, tq, tk))?;
                let probs = kernels::masked_softmax_or_generic(&scores, bias)?.reshape((
                    g,
                    nkv,
                    rep * tq,
                    tk,
                ))?;
                (probs.mm(&v)?, probs, false)
            }
        };
        let out = out
            .reshape((g, nh, tq, hd))?
            .transpose(1, 2)?
            .reshape((g * tq, nh * hd))?;
        Ok((
            out,
            AttnPart {
                g,
                tq,
                qs,
                k,
                v,
                probs,
                causal,
            },
        ))
    }

    /// Backward of [`Llama::attention_forward`]: the flat gradients of `q`, `k` and `v`.
    fn attention_backward(
        &self,
        dattn: &Tensor,
        parts: &[AttnPart],
        layout: &Layout,
        window: Option<&Window>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let flat = |d: Tensor, g: usize, t: usize, n: usize| -> Result<Tensor> {
            Ok(d.transpose(1, 2)?.reshape((g * t, n * hd))?)
        };
        // Head gradients rotated back into flat rows, in one pass where it applies.
        let unrot = |d: Tensor, geo: &Geometry, g: usize, t: usize, n: usize| -> Result<Tensor> {
            match rope::unrotated_rows(&d, &geo.cos, &geo.sin)? {
                Some(r) => Ok(r),
                None => flat(
                    candle_nn::rotary_emb::rope(&d.contiguous()?, &geo.cos, &geo.sin.neg()?)?,
                    g,
                    t,
                    n,
                ),
            }
        };
        match (layout, parts) {
            (Layout::Padded { b, t, geo }, [part]) => {
                let (b, t) = (*b, *t);
                let (tq, qgeo) = window.map_or((t, geo), |w| (w.w, &w.geo));
                let (dq, dk, dv) = self.attend_backward(part, dattn)?;
                Ok((
                    unrot(dq, qgeo, b, tq, nh)?,
                    unrot(dk, geo, b, t, nkv)?,
                    flat(dv, b, t, nkv)?,
                ))
            }
            (
                Layout::Shared {
                    p,
                    b,
                    s,
                    prefix,
                    suffix,
                },
                [part_p, part_s],
            ) => {
                let (p, b, s) = (*p, *b, *s);
                let (dqs, dkcat, dvcat) =
                    self.attend_backward(part_s, &dattn.narrow(0, p, b * s)?)?;
                let (dqp, dkp, dvp) = self.attend_backward(part_p, &dattn.narrow(0, 0, p)?)?;
                let dkp = (dkp + dkcat.narrow(2, 0, p)?.sum_keepdim(0)?)?;
                let dvp = (dvp + dvcat.narrow(2, 0, p)?.sum_keepdim(0)?)?;
                let dks = dkcat.narrow(2, p, s)?;
                let dvs = dvcat.narrow(2, p, s)?;
                let join =
                    |a: Tensor, c: Tensor| -> Result<Tensor> { Ok(Tensor::cat(&[a, c], 0)?) };
                Ok((
                    join(unrot(dqp, prefix, 1, p, nh)?, unrot(dqs, suffix, b, s, nh)?)?,
                    join(
                        unrot(dkp, prefix, 1, p, nkv)?,
                        unrot(dks, suffix, b, s, nkv)?,
                    )?,
                    join(flat(dvp, 1, p, nkv)?, flat(dvs.contiguous()?, b, s, nkv)?)?,
                ))
            }
            _ => Err(EngineError::invalid(
                "attention groups do not match the layout",
            )),
        }
    }

    /// Backward of [`Llama::attend`] for the output gradient `[g * tq, nh * hd]`: gradients of
    /// the rotated queries `[g, nh, tq, hd]`, rotated keys and values `[g, nkv, tk, hd]`.
    fn attend_backward(&self, part: &AttnPart, dout: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        let rep = nh / nkv;
        let (g, tq) = (part.g, part.tq);
        let d_o = dout
            .reshape((g, tq, nh, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((g, nkv, rep * tq, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        if part.causal {
            let (dq, dk, dv) = attention::attend_backward(
                &part.qs,
                &part.k,
                &part.v,
                &part.probs,
                &d_o,
                rep,
                scale as f32,
            )?;
            return Ok((dq.reshape((g, nh, tq, hd))?, dk, dv));
        }
        let dprobs = d_o.mm(&part.v.t()?)?;
        let dv = part.probs.t()?.mm(&d_o)?;
        let dscores = softmax_backward(&part.probs, &dprobs)?;
        let dq = (dscores.mm(&part.k)? * scale)?.reshape((g, nh, tq, hd))?;
        let dk = dscores.t()?.mm(&part.qs)?;
        Ok((dq, dk, dv))
    }

    /// The packed copy of a frozen weight that the forward product reads, if any: bf16 when
    /// asked for, else f32 where the engine's own product runs. The backward's copy is made
    /// here too, next to the forward's: made during the first backward, while that step's
    /// activations were being freed, the copies took their place and the second step faulted
    /// in about 420 MiB of fresh pages for its own (b4x128).
    fn packed<'a>(&self, lin: &'a Linear) -> Result<Option<Packed<'a>>> {
        Ok(if self.bf16 {
            lin.bf16_packed(false)?;
            Some(Packed::Bf16(lin.bf16_packed(true)?))
        } else {
            lin.f32_packed(false)?;
            lin.f32_packed(true)?.map(Packed::F32)
        })
    }

    /// `y = x W^T (+ bias) + scale * dropout(x) A^T B^T`, keeping what the backward needs.
    /// With a `window`, `x` holds its rows, and the dropout mask is those rows of the one the
    /// whole input would get.
    fn linear_forward(
        &self,
        lin: &Linear,
        x: &Tensor,
        window: Option<&Window>,
    ) -> Result<(Tensor, LinearSaved)> {
        let mut saved = LinearSaved {
            x: x.clone(),
            dropout: None,
            xa: None,
        };
        let wt = lin.weight.t()?;
        let mut y = match &lin.lora {
            Some(lora) => {
                let a = lora.a.as_tensor().detach();
                let bt = lora.b.as_tensor().detach().t()?;
                if lora.dropout > 0.0 {
                    let (xin, mask) = match window {
                        Some(w) => {
                            dropout_apply_rows(x, &w.rows, w.b * w.t, lora.dropout, &self.rng)?
                        }
                        None => dropout_apply(x, lora.dropout, &self.rng)?,
                    };
                    saved.dropout = Some((mask, xin));
                }
                let xin = saved.dropout.as_ref().map_or(x, |(_, xin)| xin);
                let xa = lora_down(xin, &a)?;
                let xa_scaled = (&xa * lora.scale)?;
                saved.xa = Some(xa);
                match self.packed(lin)? {
                    Some(p) => kernels::packed_matmul_sum(&[(x, p)], &[(&xa_scaled, &bt)])?,
                    None => matmul_sum(&[(x, &wt), (&xa_scaled, &bt)])?,
                }
            }
            None => match self.packed(lin)? {
                Some(p) => kernels::packed_matmul_sum(&[(x, p)], &[])?,
                None => x.mm(&wt)?,
            },
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
    bf16: bool,
) -> Result<(Option<Tensor>, Vec<Option<LoraGrads>>)> {
    let mut grads = Vec::with_capacity(parts.len());
    let mut owned: Vec<(Tensor, Tensor)> = Vec::new();
    let mut packed: Vec<(&Tensor, Packed<'_>)> = Vec::new();
    let mut masked: Vec<Tensor> = Vec::new();
    for (lin, s, dy) in parts {
        let dy = *dy;
        if need_dx && bf16 {
            packed.push((dy, Packed::Bf16(lin.bf16_packed(false)?)));
        } else if need_dx {
            match lin.f32_packed(false)? {
                Some(p) => packed.push((dy, Packed::F32(p))),
                None => owned.push((dy.clone(), lin.weight.clone())),
            }
        }
        match (&lin.lora, &s.xa) {
            (Some(lora), Some(xa)) => {
                let a = lora.a.as_tensor().detach();
                let bm = lora.b.as_tensor().detach();
                let (dyb, gb) = lora_up_backward(dy, &bm, xa, lora.scale)?;
                let xin = s.dropout.as_ref().map_or(&s.x, |(_, xin)| xin);
                let ga = lora_down_grad(&dyb, xin)?;
                if need_dx {
                    match &s.dropout {
                        Some((m, _)) => masked.push((dyb.mm(&a)? * m)?),
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
    let mut dx = if packed.is_empty() {
        matmul_sum(&terms)?
    } else {
        kernels::packed_matmul_sum(&packed, &terms)?
    };
    for m in masked {
        dx = (dx + m)?;
    }
    Ok((Some(dx), grads))
}

/// An adapter's down projection `x Aᵀ` (`A` `[r, in]`).
fn lora_down(x: &Tensor, a: &Tensor) -> Result<Tensor> {
    let at = a.t()?;
    match kernels::low_rank_products(x, Some(&at), None)? {
        Some((Some(xa), _)) => Ok(xa),
        _ => x.mm(&at),
    }
}

/// Backward of an adapter's up projection `scale · (x Aᵀ) Bᵀ` for its output gradient `dy`:
/// `(scale · dy B, scale · dyᵀ (x Aᵀ))`, the gradient of `x Aᵀ` and of `B`.
fn lora_up_backward(dy: &Tensor, b: &Tensor, xa: &Tensor, scale: f64) -> Result<(Tensor, Tensor)> {
    let (bs, xas) = ((b * scale)?, (xa * scale)?);
    match kernels::low_rank_products(dy, Some(&bs), Some(&xas))? {
        Some((Some(dyb), Some(gb))) => Ok((dyb, gb)),
        _ => Ok((dy.mm(&bs)?, dy.t()?.mm(&xas)?)),
    }
}

/// The gradient of an adapter's `A` from the gradient `dxa` of `x Aᵀ`: `dxaᵀ x` (`[r, in]`).
fn lora_down_grad(dxa: &Tensor, x: &Tensor) -> Result<Tensor> {
    match kernels::low_rank_products(x, None, Some(dxa))? {
        Some((_, Some(gt))) => Ok(gt.t()?.contiguous()?),
        _ => dxa.t()?.mm(x),
    }
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
