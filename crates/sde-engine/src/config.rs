//! Model and adapter configuration.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{EngineError, Result};

/// Architecture of a Llama-family decoder, as in Hugging Face's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama` or `qwen2` (the latter has q/k/v biases).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling, when the model uses one.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Context length the model was trained for.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether the output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections have a bias (Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
    /// Beginning-of-sequence token id.
    #[serde(default, deserialize_with = "one_or_first")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id (the first one when the config lists several).
    #[serde(default, deserialize_with = "one_or_first")]
    pub eos_token_id: Option<u32>,
    /// Padding token id.
    #[serde(default, deserialize_with = "one_or_first")]
    pub pad_token_id: Option<u32>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}

fn one_or_first<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(v)) => Some(v),
        Some(OneOrMany::Many(v)) => v.first().copied(),
    })
}

/// RoPE scaling as written in `config.json` (`rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `linear`, `llama3` or `default`.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Scaling factor.
    #[serde(default = "one")]
    pub factor: f64,
    /// llama3: low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// llama3: high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// llama3: the original context length.
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

fn one() -> f64 {
    1.0
}

impl LlamaConfig {
    /// Key/value heads (grouped-query attention).
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Parses a `config.json` text; `source_name` names it in errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Self> {
        let mut cfg: Self = serde_json::from_str(text).map_err(|e| EngineError::Config {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        if cfg.model_type == "qwen2" {
            cfg.attention_bias = true;
        }
        cfg.validate(source_name)?;
        Ok(cfg)
    }

    /// Checks that the dimensions are consistent.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let bad = |message: String| EngineError::Config {
            source_name: source_name.into(),
            message,
        };
        if !matches!(self.model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(EngineError::Unsupported {
                source_name: source_name.into(),
                what: "architecture".into(),
                name: self.model_type.clone(),
            });
        }
        if self.num_attention_heads == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return Err(bad(
                "hidden_size, vocab_size and num_attention_heads must be positive".into(),
            ));
        }
        if self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            )));
        }
        if let Some(s) = &self.rope_scaling
            && !matches!(s.rope_type.as_str(), "linear" | "llama3" | "default")
        {
            return Err(EngineError::Unsupported {
                source_name: source_name.into(),
                what: "rope scaling".into(),
                name: s.rope_type.clone(),
            });
        }
        Ok(())
    }

    /// A config for tests and examples: a small model with the given sizes.
    pub fn tiny(
        vocab_size: usize,
        hidden_size: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        Self {
            model_type: "llama".into(),
            vocab_size,
            hidden_size,
            intermediate_size: hidden_size * 2 + hidden_size / 2,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: Some(2),
        }
    }

    /// Parameter counts of the base model.
    pub fn param_counts(&self) -> ParamCounts {
        let h = self.hidden_size;
        let hd = self.head_dim();
        let q = h * self.num_attention_heads * hd;
        let kv = 2 * h * self.kv_heads() * hd;
        let o = self.num_attention_heads * hd * h;
        let bias = if self.attention_bias {
            (self.num_attention_heads + 2 * self.kv_heads()) * hd
        } else {
            0
        };
        let mlp = 3 * h * self.intermediate_size;
        let per_layer = q + kv + o + bias + mlp + 2 * h;
        let embedding = self.vocab_size * h;
        let lm_head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * h
        };
        let layers = per_layer * self.num_hidden_layers;
        ParamCounts {
            embedding,
            layers,
            final_norm: h,
            lm_head,
            total: embedding + layers + h + lm_head,
        }
    }
}

/// Parameter counts by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Token embedding.
    pub embedding: usize,
    /// All decoder layers.
    pub layers: usize,
    /// The final RMSNorm.
    pub final_norm: usize,
    /// The untied output head (0 when tied).
    pub lm_head: usize,
    /// Everything.
    pub total: usize,
}

/// A linear layer that LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Query projection `self_attn.q_proj`.
    Q,
    /// Key projection `self_attn.k_proj`.
    K,
    /// Value projection `self_attn.v_proj`.
    V,
    /// Output projection `self_attn.o_proj`.
    O,
    /// MLP gate `mlp.gate_proj`.
    Gate,
    /// MLP up projection `mlp.up_proj`.
    Up,
    /// MLP down projection `mlp.down_proj`.
    Down,
}

impl LoraTarget {
    /// Every target, in layer order.
    pub const ALL: [LoraTarget; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// The module path inside a layer, as in HF/PEFT names (`self_attn.q_proj`).
    pub fn module_path(self) -> &'static str {
        match self {
            Self::Q => "self_attn.q_proj",
            Self::K => "self_attn.k_proj",
            Self::V => "self_attn.v_proj",
            Self::O => "self_attn.o_proj",
            Self::Gate => "mlp.gate_proj",
            Self::Up => "mlp.up_proj",
            Self::Down => "mlp.down_proj",
        }
    }

    /// The PEFT `target_modules` name (`q_proj`).
    pub fn peft_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// Parses a PEFT module name (`q_proj`) or a short name (`q`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.peft_name() == name || t.peft_name().trim_end_matches("_proj") == name)
    }
}

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator: the update is `alpha / r * B A`.
    pub alpha: f64,
    /// Dropout probability on the LoRA input path (training only).
    pub dropout: f64,
    /// Adapted layers.
    pub targets: Vec<LoraTarget>,
    /// Seed for A's initialisation and for dropout masks.
    pub seed: u64,
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}
