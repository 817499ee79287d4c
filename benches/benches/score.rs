//! Teacher-forced scoring of a 32-token answer after a 128-token prompt, batch 8, for
//! SmolLM2-135M shapes with random weights.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sde_benches::{NEW_TOKENS, PROMPT_TOKENS, random_smollm2_135m, run_score, score_items};

fn score(c: &mut Criterion) {
    let model = random_smollm2_135m(7).expect("random model");
    let items = score_items(&model, 8, 0, 17);
    let mut group = c.benchmark_group("score_128+32");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(
        (8 * (PROMPT_TOKENS + NEW_TOKENS)) as u64,
    ));
    group.bench_function("b8", |b| {
        b.iter(|| run_score(&model, &items).expect("score"))
    });
    group.finish();
}

criterion_group!(benches, score);
criterion_main!(benches);
