//! sde-engine: a candle-based causal-LM engine. A Llama-family decoder with LoRA, loaders
//! for GGUF files, HF folders and hub ids, the tokenizer and chat template, scoring, and the
//! embedded default model.

pub mod chat;
pub mod config;
pub mod error;
pub mod export;
pub mod fetch;
pub mod gguf;
pub mod hub;
pub mod load;
mod lora;
pub mod model;
pub mod score;
pub mod tokenizer;

pub use chat::{ChatMessage, render_chat_template};
pub use config::{LlamaConfig, LoraConfig, LoraTarget, ParamCounts, RopeScaling};
pub use error::{EngineError, Result};
pub use export::{ModelInfo, export_hf_dir};
pub use fetch::{cache_dir, default_model_path};
pub use hub::load_hub;
pub use load::{LoadedModel, ModelSource, load, load_gguf, load_hf_dir};
pub use model::{KvCache, Llama, default_device};
pub use score::{PerplexityReport, Scored, output_perplexity, prompt_perplexity, score, sequence_logprobs};
pub use tokenizer::{SpecialTokens, Tokenizer};
