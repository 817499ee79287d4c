//! Batched greedy decoding (128-token prompts, 32 new tokens, KV cache) at batch 1 and 8, for
//! SmolLM2-135M shapes with random weights.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sde_benches::{NEW_TOKENS, decode_prompts, random_smollm2_135m, run_decode};

fn decode(c: &mut Criterion) {
    let model = random_smollm2_135m(7).expect("random model");
    let mut group = c.benchmark_group("greedy_decode_128+32");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for batch in [1usize, 8] {
        let prompts = decode_prompts(&model, batch, 0, 13);
        group.throughput(Throughput::Elements((batch * NEW_TOKENS) as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("b{batch}")), |b| {
            b.iter(|| run_decode(&model, &prompts, NEW_TOKENS).expect("decode"))
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
