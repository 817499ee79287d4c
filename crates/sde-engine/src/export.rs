//! Writing a loaded model as an HF folder, and describing a model.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::Tensor;
use serde::Serialize;

use crate::config::ParamCounts;
use crate::error::{EngineError, Result};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// Writes `model` and `tokenizer` to `dir` as an HF folder: `model.safetensors` (f32),
/// `config.json`, `tokenizer.json`, `tokenizer_config.json` (with the chat template). Each
/// file is written to a temporary name first and renamed into place. Merged LoRA adapters are
/// part of the weights; unmerged ones are not written.
pub fn export_hf_dir(model: &Llama, tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let tensors: HashMap<String, Tensor> = model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&candle_core::Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let st = dir.join("model.safetensors");
    let st_tmp = dir.join(".model.safetensors.tmp");
    candle_core::safetensors::save(&tensors, &st_tmp).map_err(|e| EngineError::Safetensors {
        path: st_tmp.clone(),
        tensor: None,
        message: e.to_string(),
    })?;
    std::fs::rename(&st_tmp, &st).map_err(|e| EngineError::io(&st, e))?;

    let cfg = model.config();
    let mut json = serde_json::to_value(cfg).expect("config serialises");
    let obj = json.as_object_mut().expect("config is an object");
    obj.retain(|_, v| !v.is_null());
    obj.insert("num_key_value_heads".into(), cfg.kv_heads().into());
    let arch = if cfg.model_type == "qwen2" {
        "Qwen2ForCausalLM"
    } else {
        "LlamaForCausalLM"
    };
    obj.insert("architectures".into(), serde_json::json!([arch]));
    obj.insert("hidden_act".into(), "silu".into());
    obj.insert("torch_dtype".into(), "float32".into());
    let cfg_path = dir.join("config.json");
    write_atomic(
        &cfg_path,
        serde_json::to_string_pretty(&json)
            .expect("JSON serialises")
            .as_bytes(),
    )?;

    let tmp = dir.join(".tokenizer.tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| EngineError::io(&tmp, e))?;
    tokenizer.save_hf(&tmp)?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::rename(tmp.join(f), dir.join(f)).map_err(|e| EngineError::io(dir.join(f), e))?;
    }
    std::fs::remove_dir_all(&tmp).map_err(|e| EngineError::io(&tmp, e))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

/// A summary of a model's architecture and size.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `llama` or `qwen2`.
    pub architecture: String,
    /// Decoder layers.
    pub layers: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Query heads.
    pub attention_heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// Context length.
    pub max_position_embeddings: usize,
    /// Whether the output head is the embedding.
    pub tied_embeddings: bool,
    /// Base parameters by part.
    pub params: ParamCounts,
    /// LoRA (trainable) parameters.
    pub lora_params: usize,
    /// Whether the tokenizer has a chat template.
    pub has_chat_template: bool,
}

impl ModelInfo {
    /// Describes `model`.
    pub fn new(model: &Llama, tokenizer: &Tokenizer) -> Self {
        let c = model.config();
        Self {
            architecture: c.model_type.clone(),
            layers: c.num_hidden_layers,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            attention_heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim: c.head_dim(),
            vocab_size: c.vocab_size,
            rope_theta: c.rope_theta,
            max_position_embeddings: c.max_position_embeddings,
            tied_embeddings: c.tie_word_embeddings,
            params: c.param_counts(),
            lora_params: model.lora_vars().iter().map(|(_, v)| v.elem_count()).sum(),
            has_chat_template: tokenizer.chat_template().is_some(),
        }
    }
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "architecture       {}", self.architecture)?;
        writeln!(f, "layers             {}", self.layers)?;
        writeln!(f, "hidden size        {}", self.hidden_size)?;
        writeln!(f, "intermediate size  {}", self.intermediate_size)?;
        writeln!(
            f,
            "attention heads    {} (kv {}, head dim {})",
            self.attention_heads, self.kv_heads, self.head_dim
        )?;
        writeln!(f, "vocabulary         {}", self.vocab_size)?;
        writeln!(f, "rope theta         {}", self.rope_theta)?;
        writeln!(f, "context length     {}", self.max_position_embeddings)?;
        writeln!(f, "tied embeddings    {}", self.tied_embeddings)?;
        writeln!(
            f,
            "chat template      {}",
            if self.has_chat_template { "yes" } else { "no" }
        )?;
        writeln!(f, "parameters         {}", self.params.total)?;
        writeln!(f, "  embedding        {}", self.params.embedding)?;
        writeln!(f, "  layers           {}", self.params.layers)?;
        writeln!(f, "  final norm       {}", self.params.final_norm)?;
        writeln!(f, "  lm head          {}", self.params.lm_head)?;
        write!(f, "LoRA parameters    {}", self.lora_params)
    }
}
