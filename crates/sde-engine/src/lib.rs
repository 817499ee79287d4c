//! sde-engine: a candle-based causal-LM engine. A Llama-family decoder with LoRA, loaders
//! for GGUF files, HF folders and hub ids, the tokenizer and chat template, scoring, and the
//! embedded default model.

pub mod adapter;
pub mod batch;
pub mod chat;
pub mod config;
pub mod error;
pub mod export;
pub mod fetch;
pub mod generate;
pub mod gguf;
mod grad_ops;
pub mod hub;
pub mod load;
mod lora;
pub mod loss;
pub mod model;
pub mod optim;
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
pub use model::{KvCache, Llama, default_device};
pub use optim::AdamWConfig;
pub use score::{
    PerplexityReport, Scored, output_perplexity, prompt_perplexity, score, sequence_logprobs,
};
pub use tokenizer::{SpecialTokens, Tokenizer};
pub use train::{StepReport, TrainConfig, TrainSummary, train};
