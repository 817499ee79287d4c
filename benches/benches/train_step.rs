//! A LoRA train step (forward, masked loss on the last 32 tokens, backward, AdamW) for
//! SmolLM2-135M shapes with random weights, at batch 4 and 8 and sequence 128 and 256.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sde_benches::{TrainStep, bench_lora, random_smollm2_135m};

fn train_step(c: &mut Criterion) {
    let mut model = random_smollm2_135m(7).expect("random model");
    model.add_lora(&bench_lora()).expect("LoRA adapter");
    let mut group = c.benchmark_group("lora_train_step");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for (batch, seq) in [(4, 128), (8, 128), (4, 256), (8, 256)] {
        let mut step = TrainStep::new(&model, batch, seq, 0, 11).expect("train batch");
        group.throughput(Throughput::Elements(step.tokens as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("b{batch}xs{seq}")),
            |b| b.iter(|| step.run(&model).expect("train step")),
        );
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
