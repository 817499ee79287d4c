//! GFLOP/s of candle's f32 matmul on the shapes of a SmolLM2-135M train step (rows = batch ×
//! sequence): `cargo run --release -p sde-benches --example matmul_shapes -- [rows]`.

use std::time::Instant;

use candle_core::{Device, Tensor};

fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(512);
    let dev = Device::Cpu;
    for (k, n, transposed) in [
        (576, 576, true),
        (576, 192, true),
        (576, 1536, true),
        (1536, 576, true),
        (576, 576, false),
        (1536, 576, false),
        (576, 1536, false),
        (2048, 2048, false),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?;
        let w = if transposed {
            Tensor::randn(0f32, 1.0, (n, k), &dev)?
        } else {
            Tensor::randn(0f32, 1.0, (k, n), &dev)?
        };
        let run = || -> candle_core::Result<Tensor> {
            if transposed {
                x.matmul(&w.t()?)
            } else {
                x.matmul(&w)
            }
        };
        for _ in 0..3 {
            run()?;
        }
        let reps = 50;
        let t = Instant::now();
        for _ in 0..reps {
            run()?;
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        let gf = 2.0 * (rows * k * n) as f64 / s / 1e9;
        println!(
            "[{rows}x{k}] @ {}[{k}x{n}]: {:.3} ms, {gf:.1} GFLOP/s",
            if transposed { "W^T" } else { "W" },
            s * 1e3
        );
    }
    Ok(())
}
