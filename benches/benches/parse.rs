//! The parser on a large corpus of MASA outputs rendered by sde-format (every preset, both
//! languages), a quarter of them damaged, in strict, lenient and study mode.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sde_benches::corpus::parse_corpus;
use sde_parse::{Mode, parse};

fn parse_outputs(c: &mut Criterion) {
    let corpus = parse_corpus(20_000, 5);
    let bytes: usize = corpus.iter().map(|c| c.text.len()).sum();
    let mut group = c.benchmark_group("parse_masa_corpus");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes as u64));
    for (name, mode) in [
        ("strict", Mode::Strict),
        ("lenient", Mode::Lenient),
        ("study", Mode::Study),
    ] {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                corpus
                    .iter()
                    .map(|c| parse(&c.text, &c.design, &c.domain, mode).issues.len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse_outputs);
criterion_main!(benches);
