//! AdamW with PyTorch semantics, the linear learning-rate schedule of HF's Trainer, global-norm
//! gradient clipping and gradient accumulation.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::Result;

/// AdamW hyper-parameters (PyTorch's `torch.optim.AdamW`; HF Trainer defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`: linear warmup over `warmup`
/// steps, then linear decay to zero at `total` (HF `get_linear_schedule_with_warmup`).
pub fn linear_lr(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let remaining = total.saturating_sub(step) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    peak * (remaining / span).max(0.0)
}

/// AdamW over a fixed list of variables, bias-corrected, with decoupled weight decay.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: usize,
    config: AdamWConfig,
}

impl AdamW {
    /// Creates the optimizer with zero moments.
    pub fn new(vars: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        let first = vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let second = first.clone();
        Ok(Self {
            vars,
            first,
            second,
            step: 0,
            config,
        })
    }

    /// Number of updates done so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The optimized variables, in order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `vars()[i]`.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (i, var) in self.vars.iter().enumerate() {
            let g = grads[i].to_dtype(var.dtype())?;
            let m = ((&self.first[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.second[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let theta = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            let theta = (theta - (m.div(&denom)? * (lr / bias1))?)?;
            var.set(&theta)?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }
}

/// Gradients of a fixed list of variables summed over the micro-batches of one optimizer step.
#[derive(Debug)]
pub struct GradAccumulator {
    grads: Vec<Option<Tensor>>,
}

impl GradAccumulator {
    /// An empty accumulator for `n` variables.
    pub fn new(n: usize) -> Self {
        Self {
            grads: vec![None; n],
        }
    }

    /// Adds the gradients of `vars` found in `store` (a variable without gradient adds zero).
    pub fn add(&mut self, vars: &[Var], store: &GradStore) -> Result<()> {
        for (slot, var) in self.grads.iter_mut().zip(vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = g.detach();
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// Adds one gradient per variable, in the variables' order.
    pub fn add_tensors(&mut self, grads: Vec<Tensor>) -> Result<()> {
        if grads.len() != self.grads.len() {
            return Err(crate::error::EngineError::invalid(format!(
                "{} gradients for {} variables",
                grads.len(),
                self.grads.len()
            )));
        }
        for (slot, g) in self.grads.iter_mut().zip(grads) {
            *slot = Some(match slot.take() {
                Some(acc) => (acc + g)?,
                None => g,
            });
        }
        Ok(())
    }

    /// Takes the sums out, with zeros for variables that got none, and resets the accumulator.
    pub fn take(&mut self, vars: &[Var]) -> Result<Vec<Tensor>> {
        self.grads
            .iter_mut()
            .zip(vars)
            .map(|(slot, var)| match slot.take() {
                Some(g) => Ok(g),
                None => Ok(var.as_tensor().zeros_like()?),
            })
            .collect()
    }
}

/// L2 norm of all gradients together.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Scales the gradients so that their global norm is at most `max_norm` (PyTorch
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, capped at 1). Returns the norm
/// before clipping.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn linear_schedule_matches_hf() {
        assert_eq!(linear_lr(1.0, 0, 0, 4), 1.0);
        assert_eq!(linear_lr(1.0, 1, 0, 4), 0.75);
        assert_eq!(linear_lr(1.0, 3, 0, 4), 0.25);
        assert_eq!(linear_lr(1.0, 0, 2, 6), 0.0);
        assert_eq!(linear_lr(1.0, 1, 2, 6), 0.5);
        assert_eq!(linear_lr(1.0, 2, 2, 6), 1.0);
        assert_eq!(linear_lr(1.0, 4, 2, 6), 0.5);
        assert_eq!(linear_lr(1.0, 9, 2, 6), 0.0);
    }

    #[test]
    fn adamw_two_steps_match_a_hand_computation() {
        let dev = Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &dev).unwrap()).unwrap();
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(vec![var.clone()], cfg).unwrap();
        let grads = [[0.5f64, -1.0], [0.25, 3.0]];
        // Reference: PyTorch's single-tensor AdamW loop written out.
        let (mut p, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            opt.step(&[Tensor::new(g, &dev).unwrap()], 0.1).unwrap();
            for i in 0..2 {
                p[i] *= 1.0 - 0.1 * 0.5;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let denom = (v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt()) + 1e-8;
                p[i] -= 0.1 / (1.0 - 0.9f64.powi(t)) * m[i] / denom;
            }
        }
        let got = var.as_tensor().to_vec1::<f64>().unwrap();
        for i in 0..2 {
            assert!((got[i] - p[i]).abs() < 1e-12, "{got:?} vs {p:?}");
        }
        assert_eq!(opt.steps_done(), 2);
    }

    #[test]
    fn clipping_scales_to_max_norm_and_leaves_small_gradients() {
        let dev = Device::Cpu;
        let mut g = vec![
            Tensor::new(&[3.0f32], &dev).unwrap(),
            Tensor::new(&[4.0f32], &dev).unwrap(),
        ];
        let norm = clip_global_norm(&mut g, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
        let mut small = vec![Tensor::new(&[0.3f32], &dev).unwrap()];
        clip_global_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].to_vec1::<f32>().unwrap(), vec![0.3]);
    }

    #[test]
    fn accumulator_sums_micro_batches() {
        let dev = Device::Cpu;
        let a = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let b = Var::new(&[5.0f32], &dev).unwrap();
        let vars = vec![a.clone(), b.clone()];
        let mut acc = GradAccumulator::new(2);
        for k in [1.0, 3.0] {
            let loss = (a.as_tensor() * k).unwrap().sum_all().unwrap();
            acc.add(&vars, &loss.backward().unwrap()).unwrap();
        }
        let g = acc.take(&vars).unwrap();
        assert_eq!(g[0].to_vec1::<f32>().unwrap(), vec![4.0, 4.0]);
        assert_eq!(g[1].to_vec1::<f32>().unwrap(), vec![0.0]);
    }
}
