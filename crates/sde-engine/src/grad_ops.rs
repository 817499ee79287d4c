//! Fused RMSNorm, RoPE and softmax with a backward pass. candle's fused kernels have none, so
//! the forward runs the fused kernel and [`AttachGrad`] ties its result to the input with a
//! hand-written gradient. The composite (differentiable) formulas stay as the fallback on
//! devices where the attaching op has no kernel.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, D, Layout, Result, Shape, Tensor};

/// Which function's gradient to attach.
#[derive(Debug, Clone)]
enum Grad {
    /// `y = softmax(x)` over the last dimension.
    Softmax,
    /// `y = x / rms(x) * w`.
    RmsNorm { w: Tensor, eps: f64 },
    /// `y = rope(x, cos, sin)` (rotate-half convention).
    Rope { cos: Tensor, sin: Tensor },
}

/// `attach(x, y)` returns `y` unchanged; its gradient with respect to `x` is the gradient of
/// the function that computed `y` from `x`.
#[derive(Debug, Clone)]
struct AttachGrad(Grad);

impl CustomOp2 for AttachGrad {
    fn name(&self) -> &'static str {
        "attach-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (start, end) = l2
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("attach-grad: y not contiguous"))?;
        let data = match s2 {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
            other => candle_core::bail!("attach-grad: unsupported dtype {:?}", other.dtype()),
        };
        Ok((data, l2.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        y: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = match &self.0 {
            Grad::Softmax => {
                let gy = (g * y)?.sum_keepdim(D::Minus1)?;
                (y * g.broadcast_sub(&gy)?)?
            }
            Grad::RmsNorm { w, eps } => {
                let h = x.dim(D::Minus1)? as f64;
                let r = ((x.sqr()?.sum_keepdim(D::Minus1)? / h)? + *eps)?
                    .sqrt()?
                    .recip()?;
                let xhat = x.broadcast_mul(&r)?;
                let gw = g.broadcast_mul(w)?;
                let m = ((&gw * &xhat)?.sum_keepdim(D::Minus1)? / h)?;
                (gw - xhat.broadcast_mul(&m)?)?.broadcast_mul(&r)?
            }
            Grad::Rope { cos, sin } => {
                candle_nn::rotary_emb::rope(&g.contiguous()?, cos, &sin.neg()?)?
            }
        };
        Ok((Some(dx), None))
    }
}

fn attach(x: &Tensor, y: &Tensor, grad: Grad) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.apply_op2(y, AttachGrad(grad))
    } else {
        candle_core::bail!("attach-grad runs on the CPU only")
    }
}

/// `x @ w^T` where `w` is a frozen weight: the backward pass propagates to `x` only.
/// candle's own matmul backward also computes the weight's gradient (a matmul as large as
/// the forward one) even when nothing asks for it.
#[derive(Debug, Clone, Copy)]
struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: x is [{m}, {k}], w is [{n}, {k2}]");
        }
        let wt = wl.transpose(0, 1)?;
        let y = x.matmul(w, (1, m, n, k), xl, &wt)?;
        Ok((y, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.matmul(w)?), None))
    }
}

/// `x @ w^T` for `x: [m, k]` and a frozen `w: [n, k]`; differentiable with respect to `x`
/// only. Off the CPU it is candle's matmul (which also computes the unused weight gradient).
pub(crate) fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op2(w, FrozenMatmul)
    } else {
        x.matmul(&w.t()?)
    }
}

/// Softmax over the last dimension, differentiable.
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let y = candle_nn::ops::softmax_last_dim(&x)?;
    if x.device().is_cpu() {
        attach(&x, &y, Grad::Softmax)
    } else {
        candle_nn::ops::softmax(&x, D::Minus1)
    }
}

/// RMSNorm, differentiable with respect to `x` (the weight is frozen).
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.device().is_cpu() {
        let y = candle_nn::ops::rms_norm(&x, w, eps as f32)?;
        attach(&x, &y, Grad::RmsNorm { w: w.clone(), eps })
    } else {
        let h = x.dim(D::Minus1)? as f64;
        let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / h)?;
        x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
    }
}

/// RoPE (rotate-half convention) with `cos`/`sin` of shape `[b, t, d/2]`, differentiable.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if x.device().is_cpu() {
        let y = candle_nn::rotary_emb::rope(&x, cos, sin)?;
        attach(
            &x,
            &y,
            Grad::Rope {
                cos: cos.clone(),
                sin: sin.clone(),
            },
        )
    } else {
        let half = x.dim(D::Minus1)? / 2;
        let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
        let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rot.broadcast_mul(&sin)?
    }
}
