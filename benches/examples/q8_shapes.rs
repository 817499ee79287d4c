//! Decode-shaped products (few rows) in f32 against candle's quantized Q8_0 matmul:
//! `cargo run --release -p sde-benches --example q8_shapes`.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for rows in [1usize, 8, 1024] {
        for (out, inp) in [(1536usize, 576usize), (576, 1536), (49152, 576)] {
            let w = Tensor::randn(0f32, 0.02, (out, inp), &dev)?;
            let wt = w.t()?.contiguous()?;
            let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev)?;
            let q = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
            let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> anyhow::Result<f64> {
                for _ in 0..3 {
                    f()?;
                }
                let reps = if rows > 100 { 5 } else { 50 };
                let t = Instant::now();
                for _ in 0..reps {
                    f()?;
                }
                Ok(t.elapsed().as_secs_f64() / reps as f64 * 1e3)
            };
            let f32_t = time(&|| x.matmul(&wt))?;
            let f32_wt = time(&|| x.matmul(&w.t()?))?;
            let q8 = time(&|| q.forward(&x))?;
            let err = (q.forward(&x)? - x.matmul(&wt)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            println!(
                "rows {rows} [{inp} -> {out}]: f32 W^T contiguous {f32_t:.3} ms, f32 W^T view {f32_wt:.3} ms, q8_0 {q8:.3} ms (max abs diff {err:.2e})"
            );
        }
    }
    Ok(())
}
