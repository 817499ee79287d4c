//! sde-engine: a candle-based causal-LM engine. A Llama-family decoder with LoRA, loaders
//! for GGUF files, HF folders and hub ids, the tokenizer and chat template, scoring, and the
//! embedded default model.

pub mod adapter;
pub mod batch;
pub mod bf16;
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
pub mod model;
pub mod optim;
pub mod prefix;
mod q8;
pub mod score;
pub mod tokenizer;
pub mod train;

pub use adapter::{AdapterConfig, RunRecord, load_adapter, save_adapter, save_run};
pub use batch::{BosPolicy, EncodeOptions, EncodedSample, TruncationPolicy, TruncationReport};
pub use chat::{ChatMessage, render_chat_template};
pub use config::{LlamaConfig, LoraConfig, LoraTarget, ParamCounts, RopeScaling};
pub use error::{EngineError, Result};
pub use export::{ModelInfo, export_hf_dir};
pub use fetch::{cache_dir, default_model_path, default_model_path_in};
pub use generate::{Decoding, FinishReason, GenerateConfig, Generation, generate};
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

/// Sets each of [`CPU_ENV_DEFAULTS`] that the user has not set.
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
}
