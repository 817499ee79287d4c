//! Criterion benchmarks of the sde engine and parser; see `benches/`.
