//! sde-engine: a candle-based causal-LM engine. A Llama-family decoder with LoRA, loaders
//! for GGUF files, HF folders and hub ids, the tokenizer and chat template, scoring, and the
//! embedded default model.

pub mod adapter;
mod attention;
pub mod batch;
pub mod bf16;
mod cached_attention;
pub mod chat;
pub mod config;
pub mod error;
pub mod export;
pub mod fetch;
pub mod generate;
pub mod gguf;
mod grad_ops;
pub mod hub;
mod kernels;
pub mod load;
mod lora;
pub mod loss;
mod lowrank;
pub mod model;
pub mod optim;
pub mod prefix;
mod q8;
mod rope;
pub mod score;
mod screen;
pub mod sgemm;
pub mod tokenizer;
pub mod train;

pub use adapter::{AdapterConfig, RunRecord, load_adapter, save_adapter, save_run};
pub use batch::{BosPolicy, EncodeOptions, EncodedSample, TruncationPolicy, TruncationReport};
pub use chat::{ChatMessage, render_chat_template};
pub use config::{LlamaConfig, LoraConfig, LoraTarget, ParamCounts, RopeScaling};
pub use error::{EngineError, Result};
pub use export::{ModelInfo, export_hf_dir};
pub use fetch::{cache_dir, default_model_path, default_model_path_in};
pub use generate::{
    Decoding, DraftCounts, FinishReason, GenerateConfig, Generation, generate,
    generate_counting_drafts,
};
pub use hub::load_hub;
pub use load::{LoadedModel, ModelSource, load, load_gguf, load_hf_dir};
pub use model::{KvCache, Llama, Q8Scope, default_device};
pub use optim::AdamWConfig;
pub use score::{
    PerplexityReport, ScoreOptions, Scored, output_perplexity, prompt_perplexity, score,
    sequence_logprobs, sequence_logprobs_with,
};
pub use tokenizer::{SpecialTokens, Tokenizer};
pub use train::{StepReport, TrainConfig, TrainSummary, train};

/// Environment defaults for candle's CPU backend, applied by [`apply_cpu_env_defaults`]:
/// candle's elementwise thread pool spins 1,000 rounds instead of 25,000 before parking, so
/// that it does not hold a core the matmul threads need. On 2 cores (SmolLM2-135M shapes) this
/// took a batch-8 decode from 3.93 to 3.81 s, scoring from 2.49 to 2.45 s and a train step
/// from 2.14 to 2.07 s; turning the pool off (`CANDLE_NUM_THREADS=1`) slows inference by 10%.
pub const CPU_ENV_DEFAULTS: &[(&str, &str)] = &[("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1000")];

/// Sets each of [`CPU_ENV_DEFAULTS`] that the user has not set, and applies
/// [`apply_allocator_defaults`].
///
/// # Safety
/// Changes the process environment: call it first thing in `main`, before any other thread
/// exists (see [`std::env::set_var`]).
#[allow(unsafe_code)]
pub unsafe fn apply_cpu_env_defaults() {
    for (key, value) in CPU_ENV_DEFAULTS {
        if std::env::var_os(key).is_none() {
            // SAFETY: the caller guarantees no other thread exists yet.
            unsafe { std::env::set_var(key, value) };
        }
    }
    apply_allocator_defaults();
}

/// Keeps freed memory in the process (glibc on Linux; elsewhere nothing): the engine allocates
/// and frees buffers of megabytes many times a second (activations, logits, packed inputs),
/// and glibc's defaults give much of that memory back to the OS when it is freed, so that
/// the next buffer faults its pages in and zeroes them again. Here blocks up to 32 MiB come
/// from the heap, which is not trimmed and grows 256 MiB at a time (address space, not
/// memory, until touched). Measured on 2 cores with SmolLM2-135M (`sde-bench-worker`, runs
/// alternating with and without): a batch-8 × 128 train step 4-9% faster with 60% fewer
/// page faults and the same peak RSS; batch-8 greedy decode (Q8_0 layers and head) 10-15%
/// faster with half the page faults and 110 MiB more peak RSS; batch-8 scoring about 8%
/// faster. One heap serves all threads: with one per thread, a buffer freed on one thread's
/// heap could not serve the next allocation on another's, and a batch-8 × 128 train step's
/// peak RSS came out 1924 to 3139 MiB from run to run of the same binary (2808 to 3544 with
/// the packed weights); with one heap it was 2737 to 2749 MiB (packed weights) at the same
/// speed, and scoring and decoding ran as before. Left alone where the user tunes the
/// allocator (`GLIBC_TUNABLES` or a `MALLOC_` variable).
#[allow(unsafe_code)]
pub fn apply_allocator_defaults() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_tuned = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k == "GLIBC_TUNABLES" || k.starts_with("MALLOC_")
        });
        if !user_tuned {
            const MIB: libc::c_int = 1 << 20;
            // Setting any of these turns off glibc's own adjustment of the mmap threshold,
            // which is why the threshold is set too.
            for (param, value) in [
                (libc::M_MMAP_THRESHOLD, 32 * MIB),
                (libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
                (libc::M_TOP_PAD, 256 * MIB),
                (libc::M_ARENA_MAX, 1),
            ] {
                // SAFETY: mallopt only sets allocator parameters; it is thread-safe.
                unsafe { libc::mallopt(param, value) };
            }
        }
    }
}
