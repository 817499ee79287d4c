//! Linear layers with an optional LoRA adapter (PEFT conventions).

use std::sync::{Mutex, OnceLock};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{EngineError, Result};

/// A LoRA adapter on one linear layer: `y += scale * B (A dropout(x))`.
#[derive(Debug, Clone)]
pub(crate) struct LoraAdapter {
    /// `[r, in]`, Kaiming-uniform initialised as PEFT does.
    pub(crate) a: Var,
    /// `[out, r]`, zero initialised.
    pub(crate) b: Var,
    pub(crate) scale: f64,
    pub(crate) dropout: f64,
    /// Whether `scale * B A` is currently added into the base weight.
    pub(crate) merged: bool,
}

/// A frozen linear layer (`weight` is `[out, in]`, as in PyTorch) with an optional LoRA adapter.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    pub(crate) weight: Tensor,
    /// `weight` transposed into a contiguous `[in, out]` copy, made on first use by inference
    /// (no gradient): gemm reads it without repacking the weight on every call, which is what
    /// a `[out, in]` weight costs when decoding a few rows, and big products on it run faster
    /// too. Training never makes it. Reset when `weight` changes.
    weight_t: OnceLock<Tensor>,
    /// A Q8_0 copy of `weight` for decode steps ([`Linear::quantize_q8`]); `None` otherwise.
    /// Reset when `weight` changes.
    q8: Option<QMatMul>,
    pub(crate) bias: Option<Tensor>,
    pub(crate) lora: Option<LoraAdapter>,
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            weight_t: OnceLock::new(),
            q8: None,
            bias,
            lora: None,
        }
    }

    pub(crate) fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    pub(crate) fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x`: `[..., in]` → `[..., out]`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        train: bool,
        rng: &Mutex<ChaCha8Rng>,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_f = *dims
            .last()
            .ok_or_else(|| EngineError::invalid("linear input is a scalar"))?;
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((n, in_f))?;
        let mut y = if let Some(q) = self
            .q8
            .as_ref()
            .filter(|_| !train && n <= Q8_MAX_ROWS && !x.track_op())
        {
            q.forward(&x2.contiguous()?)?
        } else if !train && !x.track_op() {
            crate::kernels::matmul(&x2.contiguous()?, self.transposed()?)?
        } else {
            crate::grad_ops::frozen_matmul(&x2, &self.weight)?
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(lora) = &self.lora
            && !lora.merged
        {
            let xin = if train && lora.dropout > 0.0 {
                dropout(&x2, lora.dropout, rng)?
            } else {
                x2
            };
            let up = xin
                .matmul(&lora.a.as_tensor().t()?)?
                .matmul(&lora.b.as_tensor().t()?)?;
            y = (y + (up * lora.scale)?)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().unwrap() = self.out_features();
        Ok(y.reshape(out_dims)?)
    }

    /// Makes (`on`) or drops the Q8_0 copy of the weight that decode steps read. An unmerged
    /// adapter still applies on top (in f32).
    pub(crate) fn quantize_q8(&mut self, on: bool) -> Result<()> {
        self.q8 = if on {
            Some(q8_matmul(&self.weight)?)
        } else {
            None
        };
        Ok(())
    }

    /// The contiguous `[in, out]` copy of the weight (made once).
    fn transposed(&self) -> Result<&Tensor> {
        if let Some(t) = self.weight_t.get() {
            return Ok(t);
        }
        let t = self.weight.t()?.contiguous()?;
        Ok(self.weight_t.get_or_init(|| t))
    }

    /// Attaches a fresh adapter: A Kaiming-uniform with a = √5 (bound 1/√in), B zero.
    pub(crate) fn add_lora(
        &mut self,
        r: usize,
        scale: f64,
        dropout: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let (in_f, out_f) = (self.in_features(), self.out_features());
        let device = self.weight.device();
        let bound = 1.0 / (in_f as f64).sqrt();
        let a: Vec<f32> = (0..r * in_f)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (r, in_f), device)?)?;
        let b = Var::zeros((out_f, r), DType::F32, device)?;
        self.lora = Some(LoraAdapter {
            a,
            b,
            scale,
            dropout,
            merged: false,
        });
        Ok(())
    }

    fn delta(lora: &LoraAdapter) -> Result<Tensor> {
        Ok((lora.b.as_tensor().matmul(lora.a.as_tensor())? * lora.scale)?.detach())
    }

    pub(crate) fn merge(&mut self) -> Result<()> {
        if let Some(lora) = &mut self.lora
            && !lora.merged
        {
            self.weight = (&self.weight + Self::delta(lora)?)?.detach();
            self.weight_t = OnceLock::new();
            self.q8 = None;
            lora.merged = true;
        }
        Ok(())
    }

    pub(crate) fn unmerge(&mut self) -> Result<()> {
        if let Some(lora) = &mut self.lora
            && lora.merged
        {
            self.weight = (&self.weight - Self::delta(lora)?)?.detach();
            self.weight_t = OnceLock::new();
            self.q8 = None;
            lora.merged = false;
        }
        Ok(())
    }
}

/// Inference products with at most this many rows (decode steps) use the Q8_0 weights when
/// the model has them; prefill and scoring stay f32.
pub(crate) const Q8_MAX_ROWS: usize = 16;

/// A Q8_0 (8-bit, blocks of 32 with an f16 scale) matmul over `weight` (`[out, in]`).
pub(crate) fn q8_matmul(weight: &Tensor) -> Result<QMatMul> {
    let q = QTensor::quantize(&weight.contiguous()?, GgmlDType::Q8_0)?;
    Ok(QMatMul::from_qtensor(q)?)
}

/// Inverted dropout with a mask drawn from the model's seeded generator.
fn dropout(x: &Tensor, p: f64, rng: &Mutex<ChaCha8Rng>) -> Result<Tensor> {
    Ok((x * dropout_mask(x, p, rng)?)?)
}

/// An inverted-dropout mask shaped like `x`: 0 with probability `p`, else `1 / (1 - p)`.
pub(crate) fn dropout_mask(x: &Tensor, p: f64, rng: &Mutex<ChaCha8Rng>) -> Result<Tensor> {
    let n = x.elem_count();
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = {
        let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
        (0..n)
            .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
            .collect()
    };
    Ok(Tensor::from_vec(mask, x.shape(), &Device::Cpu)?.to_device(x.device())?)
}

/// A seeded generator for LoRA initialisation and dropout.
pub(crate) fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
