//! Runs one benchmark workload in its own process and prints one JSON object on stdout, for
//! `cargo xtask bench` (so that each workload's peak RSS is its own).
//!
//! ```text
//! sde-bench-worker train  --batch 8 --seq 128 [--reps 3] [--steps 10] [--warmup 2] [--gguf PATH]
//! sde-bench-worker decode --batch 1 [--reps 3] [--steps 3] [--warmup 1] [--gguf PATH]
//! sde-bench-worker score  --batch 8 [--reps 3] [--steps 5] [--warmup 2] [--gguf PATH]
//! sde-bench-worker matmul [--reps 3]
//! sde-bench-worker fma [--reps 3]            (FMA and bf16 peaks, memory read bandwidth)
//! sde-bench-worker fma-probe [--reps 3]      (the FMA chains alone: the machine's speed now)
//! sde-bench-worker decode-q8 --batch 1 ...     (decode steps on Q8_0 layer weights)
//! sde-bench-worker decode-q8-all --batch 1 ... (layers and output head in Q8_0)
//! sde-bench-worker decode-q8-prompts --batch 1 ... (prompts too: all of generation in Q8_0)
//! sde-bench-worker decode-draft --batch 1 [--draft 16] ... (f32 tokens: quantized layers draft,
//!                                                          f32 verifies; speculative decoding)
//! sde-bench-worker train-bf16 --batch 8 ...   (the layers' frozen products in bf16)
//! sde-bench-worker score-bf16 --batch 8 ...   (likewise)
//! ```
//!
//! After the timed part, the bf16 workloads run the bf16 and the f32 pass once more on the
//! same input (untimed) and report how far apart they are: the loss and the LoRA gradients (train), the
//! log-likelihood of each item (score).
//!
//! `--shared N` makes the first N tokens of every row the same (train, decode, score), which
//! the engine runs once per batch. Without `--gguf` the model has SmolLM2-135M shapes and
//! random weights. `steps` is the
//! number of train steps, generations or scoring passes in one timed rep. The peak RSS is
//! VmHWM of `/proc/self/status`, reset after the model is loaded. Generation also reports
//! `prompt_seconds`: untimed-for-throughput generations of one new token (the prompt pass). Built with the `cuda`
//! feature, the model runs on CUDA device 0 (the report's `device` says where it ran).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use sde_benches::{
    NEW_TOKENS, PROMPT_TOKENS, TrainStep, bench_lora, decode_prompts, greedy_tokens,
    greedy_tokens_drafting, random_smollm2_135m, run_score, score_items, share_before_divergence,
};
use sde_engine::Llama;
use sde_engine::sgemm::{self, View};
use serde_json::json;

/// The first round's draft tokens of `decode-draft` at batch 1 unless `--draft` says
/// otherwise (transformers' assisted generation starts at 20): the drafts come from the f32
/// model's own Q4_1 values, and nearly all are kept.
const DRAFT_TOKENS_BATCH_1: usize = 16;
/// Likewise at larger batches, where an f32 pass over all rows' drafts costs more.
const DRAFT_TOKENS_BATCHED: usize = 4;

#[derive(Debug)]
struct Args {
    workload: String,
    batch: usize,
    seq: usize,
    reps: usize,
    steps: Option<usize>,
    warmup: Option<usize>,
    gguf: Option<String>,
    shared: usize,
    /// The first round's draft tokens of speculative decoding (`decode-draft`).
    draft: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let workload = it
        .next()
        .context("usage: sde-bench-worker <train|decode|score|matmul> [options]")?;
    let mut args = Args {
        workload,
        batch: 8,
        seq: 128,
        reps: 3,
        steps: None,
        warmup: None,
        gguf: None,
        shared: 0,
        draft: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag} {value}: not a count"))
        };
        match flag.as_str() {
            "--batch" => args.batch = num()?,
            "--seq" => args.seq = num()?,
            "--reps" => args.reps = num()?.max(1),
            "--steps" => args.steps = Some(num()?.max(1)),
            "--warmup" => args.warmup = Some(num()?),
            "--gguf" => args.gguf = Some(value),
            "--shared" => args.shared = num()?,
            "--draft" => args.draft = Some(num()?.max(1)),
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(args)
}

/// Measured f32 FMA throughput in GFLOP/s: `threads` threads, each running 12 independent
/// chains of 16-lane fused multiply-adds (enough to cover the FMA latency), 20 million rounds
/// (about 50 ms on a core at its full AVX-512 rate).
fn fma_peak(threads: usize) -> f64 {
    chain_peak(threads, fma_chains)
}

/// Threads of the peak measures: `RAYON_NUM_THREADS` where set (as the workloads run), else
/// every core.
fn fma_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Measured memory read bandwidth in GB/s: `threads` threads each summing its share of a
/// 512 MiB buffer (far beyond the caches), passes repeated for about a second. Generation at
/// batch 1 reads every weight once per token, so this bounds its speed.
fn read_bandwidth(threads: usize) -> f64 {
    const LEN: usize = 128 << 20;
    let buf: Vec<f32> = (0..LEN).map(|i| (i % 7) as f32).collect();
    let share = LEN.div_ceil(threads.max(1));
    let start = Instant::now();
    let (mut bytes, mut sink) = (0usize, 0f32);
    while bytes == 0 || start.elapsed().as_secs_f64() < 1.0 {
        sink += std::thread::scope(|scope| {
            let handles: Vec<_> = buf
                .chunks(share)
                .map(|part| scope.spawn(move || sum_lanes(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0.0))
                .sum::<f32>()
        });
        bytes += LEN * std::mem::size_of::<f32>();
    }
    std::hint::black_box(sink);
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// The sum of `x` over 64 independent lanes (vectorised; the loads, not the adds, bound it).
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 64];
    let mut chunks = x.chunks_exact(64);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// GFLOP/s of `threads` threads each running `chains(iters, seed)` (which returns a sum to
/// keep and the FLOPs of one round over 2).
fn chain_peak(threads: usize, chains: fn(usize, f32) -> (f32, usize)) -> f64 {
    let iters = 20_000_000usize;
    let start = Instant::now();
    let sink: (f32, usize) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || chains(iters, t as f32 * 1e-3)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0.0, 0)))
            .fold((0.0, 0), |(s, _), (v, lanes)| (s + v, lanes))
    });
    let lanes = std::hint::black_box(sink).1;
    let flops = 2.0 * (threads * iters * lanes) as f64;
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// The sum of every lane of 12 chains of the peak loops.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_chains(a: &[std::arch::x86_64::__m512; 12]) -> f32 {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_reduce_add_ps};
    let mut s = a[0];
    for v in &a[1..] {
        s = _mm512_add_ps(s, *v);
    }
    _mm512_reduce_add_ps(s)
}

/// `iters` rounds of `a = a * x + y` on 12 independent 16-lane chains; returns their sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_chains_avx512(iters: usize, seed: f32) -> (f32, usize) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_set1_ps};
    let x = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let y = _mm512_set1_ps(std::hint::black_box(1e-7));
    let mut a = [_mm512_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_ps(*v, x, y);
        }
    }
    (sum_chains(&a), 12 * 16)
}

/// `iters` rounds of `a = a * x + y` on 12 independent 8-lane chains (AVX2 and FMA, for
/// CPUs without AVX-512); returns their sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
fn fma_chains_avx2(iters: usize, seed: f32) -> (f32, usize) {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps};
    let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let y = _mm256_set1_ps(std::hint::black_box(1e-7));
    let mut a = [_mm256_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, x, y);
        }
    }
    let mut s = a[0];
    for v in &a[1..] {
        s = _mm256_add_ps(s, *v);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds the 8 floats the unaligned store writes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    (lanes.iter().sum(), 12 * 8)
}

/// `iters` rounds of `a += x · y` over pairs of bf16 (`vdpbf16ps`, 32 multiplies and adds a
/// 16-lane instruction) on 12 independent chains; returns their sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16_chains_avx512(iters: usize, seed: f32) -> (f32, usize) {
    use std::arch::x86_64::{_mm512_cvtne2ps_pbh, _mm512_dpbf16_ps, _mm512_set1_ps};
    let x = _mm512_cvtne2ps_pbh(
        _mm512_set1_ps(std::hint::black_box(0.5)),
        _mm512_set1_ps(std::hint::black_box(0.25)),
    );
    let mut a = [_mm512_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_dpbf16_ps(*v, x, x);
        }
    }
    (sum_chains(&a), 12 * 32)
}

/// Measured bf16 dot-product throughput (f32 sums) in GFLOP/s, where the CPU has
/// AVX512-BF16: the peak of the engine's bf16 products.
#[allow(unsafe_code)]
fn bf16_peak(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if sde_engine::bf16::supported() {
        // SAFETY: the CPU has avx512f and avx512bf16 (checked at run time just above).
        return Some(chain_peak(threads, |i, s| unsafe {
            bf16_chains_avx512(i, s)
        }));
    }
    let _ = threads;
    None
}

/// The vector extension [`fma_chains`] runs on this CPU.
fn fma_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2";
        }
    }
    "scalar"
}

/// The widest FMA chains this CPU runs (detected at run time): 16 lanes with AVX-512, 8 with
/// AVX2 and FMA, else scalar (the figure is then not the machine's vector peak).
#[allow(unsafe_code)]
fn fma_chains(iters: usize, seed: f32) -> (f32, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has avx512f (checked just above).
            return unsafe { fma_chains_avx512(iters, seed) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has avx2 and fma (checked just above).
            return unsafe { fma_chains_avx2(iters, seed) };
        }
    }
    let mut a = [seed; 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = v.mul_add(0.999_999, 1e-7);
        }
    }
    (a.iter().sum(), 12)
}

/// Peak resident set size of this process in MiB (VmHWM).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn load(args: &Args) -> Result<Llama> {
    Ok(match &args.gguf {
        Some(path) => {
            sde_engine::load_gguf(path)
                .with_context(|| format!("loading {path}"))?
                .model
        }
        None => random_smollm2_135m(7)?,
    })
}

/// Times `reps` reps of `steps` calls each after `warmup` calls; returns seconds per rep.
fn time_reps(
    reps: usize,
    steps: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        for _ in 0..steps {
            f()?;
        }
        out.push(start.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// How far a bf16 training pass is from the f32 one on the model's current weights: the
/// loss's relative difference and ‖g_bf16 − g_f32‖ / ‖g_f32‖ over all LoRA gradients
/// together. Leaves the model in f32.
fn train_fidelity(model: &mut Llama, step: &TrainStep) -> Result<(f64, f64)> {
    model.set_bf16_matmuls(true)?;
    let got = step.loss_and_grads(model)?;
    model.set_bf16_matmuls(false)?;
    let want = step.loss_and_grads(model)?;
    let (mut diff, mut norm) = (0f64, 0f64);
    for (g, w) in got.grads.iter().zip(&want.grads) {
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let w = w.flatten_all()?.to_vec1::<f32>()?;
        for (a, b) in g.iter().zip(&w) {
            diff += f64::from(a - b).powi(2);
            norm += f64::from(*b).powi(2);
        }
    }
    Ok((
        (got.loss - want.loss).abs() / want.loss.abs(),
        diff.sqrt() / norm.sqrt(),
    ))
}

/// Each item's summed log-likelihood of its scored tokens.
fn score_sums(model: &Llama, items: &[(Vec<u32>, usize)]) -> Result<Vec<f64>> {
    let options = sde_engine::score::ScoreOptions {
        batch_size: items.len().max(1),
        share_prefix: true,
    };
    Ok(
        sde_engine::score::sequence_logprobs_with(model, items, options)?
            .iter()
            .map(|s| s.sum)
            .collect(),
    )
}

#[allow(unsafe_code)]
fn main() -> Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let args = parse_args()?;
    let started = Instant::now();
    let mut report = match args.workload.as_str() {
        "train" | "train-bf16" => {
            let mut model = load(&args)?;
            model.add_lora(&bench_lora())?;
            let load_s = started.elapsed().as_secs_f64();
            let mut step = TrainStep::new(&model, args.batch, args.seq, args.shared, 11)?;
            let bf16 = args.workload == "train-bf16";
            // Untimed: the bf16 pass against the f32 one on the initial weights.
            let fidelity_start = if bf16 {
                Some(train_fidelity(&mut model, &step)?)
            } else {
                None
            };
            model.set_bf16_matmuls(bf16)?;
            let steps = args.steps.unwrap_or(10);
            reset_peak_rss();
            let mut losses = Vec::new();
            let times = time_reps(args.reps, steps, args.warmup.unwrap_or(2), || {
                losses.push(step.run(&model)?);
                Ok(())
            })?;
            let peak_rss = peak_rss_mib();
            let fidelity = match fidelity_start {
                Some(start) => {
                    let end = train_fidelity(&mut model, &step)?;
                    Some(json!({
                        "loss_rel_diff_start": start.0, "grad_rel_diff_start": start.1,
                        "loss_rel_diff": end.0, "grad_rel_diff": end.1,
                    }))
                }
                None => None,
            };
            json!({
                "workload": args.workload, "batch": args.batch, "seq": args.seq, "shared": args.shared, "rep_seconds": times,
                "tokens_per_rep": steps * step.tokens, "steps_per_rep": steps, "load_seconds": load_s,
                "peak_rss_mib": peak_rss, "loss_first": losses.first(), "loss_last": losses.last(), "bf16_vs_f32": fidelity,
            })
        }
        "decode" | "decode-q8" | "decode-q8-all" | "decode-q8-prompts" | "decode-draft" => {
            let mut model = load(&args)?;
            let scope = match args.workload.as_str() {
                "decode-q8" | "decode-draft" => sde_engine::Q8Scope::Layers,
                "decode-q8-all" => sde_engine::Q8Scope::LayersAndHead,
                "decode-q8-prompts" => sde_engine::Q8Scope::LayersHeadAndPrompts,
                _ => sde_engine::Q8Scope::Off,
            };
            let draft = match (args.workload.as_str(), args.batch) {
                ("decode-draft", 1) => args.draft.unwrap_or(DRAFT_TOKENS_BATCH_1),
                ("decode-draft", _) => args.draft.unwrap_or(DRAFT_TOKENS_BATCHED),
                _ => 0,
            };
            let load_s = started.elapsed().as_secs_f64();
            let prompts = decode_prompts(&model, args.batch, args.shared, 13);
            // Fidelity (untimed): the share of the f32 greedy tokens this scope reproduces
            // before the first divergence, on the same prompts.
            let agreement = if scope == sde_engine::Q8Scope::Off {
                None
            } else {
                let reference = greedy_tokens(&model, &prompts, NEW_TOKENS, true)?;
                model.set_q8_decode(scope)?;
                let got = greedy_tokens_drafting(&model, &prompts, NEW_TOKENS, true, draft)?.0;
                Some(share_before_divergence(&got, &reference))
            };
            let steps = args.steps.unwrap_or(3);
            reset_peak_rss();
            let mut produced = 0;
            let mut drafts = sde_engine::DraftCounts::default();
            let times = time_reps(args.reps, steps, args.warmup.unwrap_or(1), || {
                let (tokens, counts) =
                    greedy_tokens_drafting(&model, &prompts, NEW_TOKENS, true, draft)?;
                produced = tokens.iter().map(Vec::len).sum();
                drafts.proposed += counts.proposed;
                drafts.kept += counts.kept;
                Ok(())
            })?;
            // After the timed part: generations of one new token (the prompt pass), so that
            // the decode steps' own speed can be told apart.
            let prompt_seconds = time_reps(args.reps, 1, 0, || {
                greedy_tokens_drafting(&model, &prompts, 1, true, draft)?;
                Ok(())
            })?;
            json!({
                "workload": args.workload, "batch": args.batch, "seq": PROMPT_TOKENS, "shared": args.shared, "new_tokens": NEW_TOKENS,
                "rep_seconds": times, "tokens_per_rep": steps * produced, "steps_per_rep": steps, "prompt_seconds": prompt_seconds,
                "load_seconds": load_s, "peak_rss_mib": peak_rss_mib(), "agreement_with_f32": agreement,
                "quantized_layers": model.quantized_layer_formats(),
                "draft_tokens": draft, "drafts_proposed": drafts.proposed, "drafts_kept": drafts.kept,
            })
        }
        "score" | "score-bf16" => {
            let mut model = load(&args)?;
            let load_s = started.elapsed().as_secs_f64();
            let items = score_items(&model, args.batch, args.shared, 17);
            let bf16 = args.workload == "score-bf16";
            model.set_bf16_matmuls(bf16)?;
            let steps = args.steps.unwrap_or(5);
            reset_peak_rss();
            let times = time_reps(args.reps, steps, args.warmup.unwrap_or(2), || {
                Ok(run_score(&model, &items).map(drop)?)
            })?;
            let peak_rss = peak_rss_mib();
            let fidelity = if bf16 {
                let got = score_sums(&model, &items)?;
                model.set_bf16_matmuls(false)?;
                let want = score_sums(&model, &items)?;
                let diffs: Vec<f64> = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).collect();
                let per_token = NEW_TOKENS as f64;
                Some(json!({
                    "max_abs_logprob_diff_per_token": diffs.iter().fold(0f64, |m, d| m.max(*d)) / per_token,
                    "mean_abs_logprob_diff_per_token": diffs.iter().sum::<f64>() / diffs.len().max(1) as f64 / per_token,
                    "mean_logprob_per_token": want.iter().sum::<f64>() / want.len().max(1) as f64 / per_token,
                }))
            } else {
                None
            };
            json!({
                "workload": args.workload, "batch": args.batch, "seq": PROMPT_TOKENS + NEW_TOKENS, "shared": args.shared,
                "rep_seconds": times, "tokens_per_rep": steps * args.batch * (PROMPT_TOKENS + NEW_TOKENS),
                "steps_per_rep": steps, "load_seconds": load_s, "peak_rss_mib": peak_rss, "bf16_vs_f32": fidelity,
            })
        }
        "matmul" => {
            let n = 2048usize;
            let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
            let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
            // The product the engine runs its projections in: its own kernel with the right
            // operand packed beforehand (as frozen weights are) where the CPU takes it,
            // candle's (the gemm crate) elsewhere.
            let (av, bv) = (
                a.flatten_all()?.to_vec1::<f32>()?,
                b.flatten_all()?.to_vec1::<f32>()?,
            );
            let mut out = vec![0f32; n * n];
            let packed =
                sgemm::supported().then(|| sgemm::PackedRhs::pack(View::row_major(&bv, n, n)));
            let mut product = || -> anyhow::Result<()> {
                if let Some(packed) = &packed {
                    sgemm::gemm_packed(&mut out, View::row_major(&av, n, n), packed, false, true);
                } else {
                    a.matmul(&b)?;
                }
                Ok(())
            };
            product()?;
            let mut gflops = Vec::new();
            for _ in 0..args.reps {
                let start = Instant::now();
                let mut calls = 0usize;
                while calls == 0 || start.elapsed().as_secs_f64() < 1.0 {
                    product()?;
                    calls += 1;
                }
                gflops.push(2.0 * (n * n * n * calls) as f64 / start.elapsed().as_secs_f64() / 1e9);
            }
            let kernel = if packed.is_some() { "sgemm" } else { "candle" };
            let isa = sgemm::isa().map(sgemm::Isa::name);
            json!({ "workload": "matmul", "m": n, "k": n, "n": n, "gflops": gflops, "kernel": kernel, "sgemm_isa": isa })
        }
        "fma" => {
            let threads = fma_threads();
            let gflops: Vec<f64> = (0..args.reps).map(|_| fma_peak(threads)).collect();
            let bf16: Option<Vec<f64>> = (0..args.reps).map(|_| bf16_peak(threads)).collect();
            let read: Vec<f64> = (0..args.reps).map(|_| read_bandwidth(threads)).collect();
            json!({ "workload": "fma", "threads": threads, "isa": fma_isa(), "gflops": gflops, "bf16_gflops": bf16, "read_gbs": read })
        }
        "fma-probe" => {
            let threads = fma_threads();
            let gflops: Vec<f64> = (0..args.reps).map(|_| fma_peak(threads)).collect();
            json!({ "workload": "fma-probe", "threads": threads, "gflops": gflops })
        }
        other => bail!(
            "unknown workload {other} (train, train-bf16, decode, decode-q8, decode-q8-all, decode-q8-prompts, decode-draft, score, score-bf16, matmul, fma or fma-probe)"
        ),
    };
    let on = if sde_engine::default_device()?.is_cuda() {
        "cuda"
    } else {
        "cpu"
    };
    report["device"] = json!(on);
    println!("{report}");
    Ok(())
}
