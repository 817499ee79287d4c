//! GFLOP/s of candle's f32 matmul on the shapes of a SmolLM2-135M train step (rows = batch ×
//! sequence, or the loss positions for the output head's two products), and beside it the
//! engine's product (`sde_engine::sgemm`) where the CPU runs it, packing the weight per
//! product and packed once beforehand (as the engine's frozen weights are), all alternating
//! (the fastest of 40 runs each): `cargo run --release -p sde-benches --example matmul_shapes
//! -- [rows]`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use sde_engine::sgemm::{self, View};

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
        // The output head at the loss positions: logits, and their gradient's product.
        (576, 49152, true),
        (49152, 576, false),
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
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; rows * n];
        let b = if transposed {
            View::transposed(&ws, k, n)
        } else {
            View::row_major(&ws, k, n)
        };
        let packed = sgemm::supported().then(|| sgemm::PackedRhs::pack(b));
        let mut ours = |packed: Option<&sgemm::PackedRhs>| {
            let a = View::row_major(&xs, rows, k);
            match packed {
                Some(p) => sgemm::gemm_packed(&mut out, a, p, false, true),
                None => sgemm::gemm(&mut out, a, b, false, true),
            }
        };
        let flops = 2.0 * (rows * k * n) as f64;
        let (mut candle, mut engine, mut prepacked) = (f64::MAX, f64::MAX, f64::MAX);
        // Alternating, the fastest of 40 each: the machine's speed drifts within minutes.
        for _ in 0..40 {
            let t = Instant::now();
            run()?;
            candle = candle.min(t.elapsed().as_secs_f64());
            if let Some(p) = &packed {
                let t = Instant::now();
                ours(None);
                engine = engine.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                ours(Some(p));
                prepacked = prepacked.min(t.elapsed().as_secs_f64());
            }
        }
        let rate = |s: f64| flops / s / 1e9;
        let shape = format!(
            "[{rows}x{k}] @ {}[{k}x{n}]",
            if transposed { "W^T" } else { "W" }
        );
        if sgemm::supported() {
            println!(
                "{shape}: candle {:.1} GFLOP/s, sgemm {:.1}, packed beforehand {:.1}",
                rate(candle),
                rate(engine),
                rate(prepacked)
            );
        } else {
            println!("{shape}: candle {:.1} GFLOP/s", rate(candle));
        }
    }
    Ok(())
}
