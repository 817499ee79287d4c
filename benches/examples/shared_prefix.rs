//! What shared-prefix batching buys: greedy decode (batch 8, 128-token prompts, 32 new tokens)
//! and scoring (batch 8, 128 + 32 tokens) when the first 96 prompt tokens of every row are
//! the same, with the shared prefix run once per batch and with every row run in full:
//! `cargo run --release -p sde-benches --example shared_prefix`.

#![allow(unsafe_code)]

use std::time::Instant;

use sde_benches::{
    NEW_TOKENS, PROMPT_TOKENS, SHARED_PREFIX_TOKENS, decode_prompts, random_smollm2_135m,
    run_decode_with, run_score_with, score_items,
};

const REPS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let model = random_smollm2_135m(1)?;
    let prompts = decode_prompts(&model, 8, SHARED_PREFIX_TOKENS, 7);
    let items = score_items(&model, 8, SHARED_PREFIX_TOKENS, 9);
    println!(
        "SmolLM2-135M shapes (random weights), batch 8, {SHARED_PREFIX_TOKENS} of {PROMPT_TOKENS} prompt tokens shared; median of {REPS}"
    );
    for share in [false, true] {
        run_decode_with(&model, &prompts, NEW_TOKENS, share)?;
        let decode = median(
            (0..REPS)
                .map(|_| {
                    let t = Instant::now();
                    let n = run_decode_with(&model, &prompts, NEW_TOKENS, share).unwrap();
                    n as f64 / t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        run_score_with(&model, &items, share)?;
        let score = median(
            (0..REPS)
                .map(|_| {
                    let t = Instant::now();
                    run_score_with(&model, &items, share).unwrap();
                    (8 * (PROMPT_TOKENS + NEW_TOKENS)) as f64 / t.elapsed().as_secs_f64()
                })
                .collect(),
        );
        let label = if share {
            "prefix run once"
        } else {
            "every row in full"
        };
        println!(
            "{label:>18}: decode-b8 {decode:.1} new tok/s (prefill included), score-b8 {score:.1} tok/s"
        );
    }
    Ok(())
}
