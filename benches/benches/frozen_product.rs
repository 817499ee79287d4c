//! One product with a frozen weight at the shapes of a SmolLM2-135M train step (1024 rows:
//! batch 4 × 256 or 8 × 128), in f32 (candle's matmul), on CPUs with AVX2 but not AVX-512 in
//! the engine's own f32 product (`sgemm`, what the engine runs there), and on CPUs with
//! AVX512-BF16 in the engine's bf16 kernel (the weight packed once, outside the timed loop, as
//! in training).

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sde_engine::bf16::{PackedBf16, matmul_into, supported};
use sde_engine::sgemm::{self, View};

fn frozen_product(c: &mut Criterion) {
    let mut group = c.benchmark_group("frozen_product");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let m = 1024;
    // (in, out): the MLP's up/gate and down projections, q/o, and k/v.
    for (k, n) in [(576, 1536), (1536, 576), (576, 576), (576, 192)] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).expect("input");
        let w_t = Tensor::randn(0f32, 0.02, (k, n), &Device::Cpu).expect("weight");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let shape = format!("{m}x{k}x{n}");
        group.bench_function(BenchmarkId::new("f32", &shape), |b| {
            b.iter(|| x.matmul(&w_t).expect("matmul"))
        });
        let xs = x
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("input data");
        let ws = w_t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("weight data");
        if sgemm::supported() {
            let mut out = vec![0f32; m * n];
            group.bench_function(BenchmarkId::new("f32-sgemm", &shape), |b| {
                b.iter(|| {
                    sgemm::gemm(
                        &mut out,
                        View::row_major(&xs, m, k),
                        View::row_major(&ws, k, n),
                        false,
                        true,
                    )
                })
            });
        }
        if supported() {
            let packed = PackedBf16::pack(&ws, k, n, n, 1);
            let mut out = vec![0f32; m * n];
            group.bench_function(BenchmarkId::new("bf16", &shape), |b| {
                b.iter(|| matmul_into(&mut out, &xs, m, &packed, false))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, frozen_product);
criterion_main!(benches);
