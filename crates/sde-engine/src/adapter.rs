//! LoRA adapters in the PEFT format (`adapter_config.json` + `adapter_model.safetensors`), and
//! run folders that keep everything inference needs to replay a training run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{EngineError, Result};
use crate::{Llama, LoraConfig, LoraTarget, Tokenizer};

/// File name of the adapter configuration.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the run description in a run folder.
pub const RUN_FILE: &str = "run.json";
/// File name of the tokenizer in a run folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// File name of the chat template in a run folder.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// The fields of PEFT's `LoraConfig` that a LoRA adapter file carries, in PEFT's names.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdapterConfig {
    /// Always `"LORA"`.
    pub peft_type: String,
    /// Always `"CAUSAL_LM"`.
    pub task_type: String,
    /// Base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub lora_alpha: f64,
    /// Dropout used in training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names with an adapter.
    pub target_modules: Vec<String>,
    /// Always `"none"`.
    #[serde(default = "bias_none")]
    pub bias: String,
    /// False: weights are stored `[out, in]`.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// True in saved adapters.
    #[serde(default)]
    pub inference_mode: bool,
    /// Whether the adapter was created with PEFT's default initialisation.
    #[serde(default)]
    pub init_lora_weights: bool,
    /// Rank-stabilised scaling (unsupported; must be false).
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA (unsupported; must be false).
    #[serde(default)]
    pub use_dora: bool,
    /// Per-module rank overrides (unsupported; must be empty).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    /// Per-module alpha overrides (unsupported; must be empty).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    /// Layer subset (unsupported; must be null).
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Extra fully trained modules (unsupported; must be null).
    #[serde(default)]
    pub modules_to_save: Option<serde_json::Value>,
}

fn bias_none() -> String {
    "none".to_string()
}

impl AdapterConfig {
    /// The adapter description of a LoRA configuration.
    pub fn from_lora(cfg: &LoraConfig, base_model: Option<String>) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: "CAUSAL_LM".into(),
            base_model_name_or_path: base_model,
            r: cfg.r,
            lora_alpha: cfg.alpha,
            lora_dropout: cfg.dropout,
            target_modules: cfg
                .targets
                .iter()
                .map(|t| t.peft_name().to_string())
                .collect(),
            bias: bias_none(),
            fan_in_fan_out: false,
            inference_mode: true,
            init_lora_weights: true,
            use_rslora: false,
            use_dora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            layers_to_transform: None,
            modules_to_save: None,
        }
    }

    /// The LoRA configuration to rebuild the adapter layers with (dropout is kept for the
    /// record; layers built for inference do not use it).
    pub fn to_lora(&self, seed: u64, source_name: &str) -> Result<LoraConfig> {
        let targets = self
            .target_modules
            .iter()
            .map(|m| {
                LoraTarget::parse(m).ok_or_else(|| EngineError::Unsupported {
                    source_name: source_name.to_string(),
                    what: "LoRA target module".into(),
                    name: m.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LoraConfig {
            r: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            targets,
            seed,
        })
    }

    fn check_supported(&self, path: &Path) -> Result<()> {
        let bad = |what: &str| EngineError::Unsupported {
            source_name: path.display().to_string(),
            what: "adapter option".into(),
            name: what.into(),
        };
        if self.peft_type != "LORA" {
            return Err(bad(&format!("peft_type={}", self.peft_type)));
        }
        if self.use_rslora {
            return Err(bad("use_rslora"));
        }
        if self.use_dora {
            return Err(bad("use_dora"));
        }
        if self.fan_in_fan_out {
            return Err(bad("fan_in_fan_out"));
        }
        if self.bias != "none" {
            return Err(bad(&format!("bias={}", self.bias)));
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return Err(bad("rank_pattern/alpha_pattern"));
        }
        if self
            .layers_to_transform
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(bad("layers_to_transform"));
        }
        if self.modules_to_save.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(bad("modules_to_save"));
        }
        Ok(())
    }
}

/// Drops PEFT's adapter-name segment (`.default`) from a tensor name.
pub fn strip_adapter_name(name: &str) -> String {
    name.replace(".lora_A.default.", ".lora_A.")
        .replace(".lora_B.default.", ".lora_B.")
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

/// The LoRA weights of `model` as a PEFT `adapter_model.safetensors` byte string: tensor names
/// as `save_pretrained` writes them, f32, metadata `{"format": "pt"}`.
pub fn adapter_bytes(model: &Llama) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Tensor)> = model
        .lora_vars()
        .into_iter()
        .map(|(name, var)| {
            let t = var.as_tensor().to_dtype(candle_core::DType::F32)?;
            Ok((strip_adapter_name(&name), t))
        })
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata)).map_err(
        |e| EngineError::Safetensors {
            path: PathBuf::from(ADAPTER_WEIGHTS_FILE),
            tensor: None,
            message: e.to_string(),
        },
    )
}

/// Saves the adapter of `model` in PEFT format into `dir`.
pub fn save_adapter(model: &Llama, config: &AdapterConfig, dir: &Path) -> Result<()> {
    let json =
        serde_json::to_vec_pretty(config).map_err(|e| EngineError::invalid(e.to_string()))?;
    write_atomic(&dir.join(ADAPTER_CONFIG_FILE), &json)?;
    write_atomic(&dir.join(ADAPTER_WEIGHTS_FILE), &adapter_bytes(model)?)
}

/// Reads `adapter_config.json` from `dir`.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
    let config: AdapterConfig = serde_json::from_str(&text).map_err(|e| EngineError::Config {
        source_name: path.display().to_string(),
        message: e.to_string(),
    })?;
    config.check_supported(&path)?;
    Ok(config)
}

/// Sets the LoRA variables of `model` from named tensors (PEFT names, with or without
/// `.default`). Every LoRA variable must be present with its shape, and every tensor must belong
/// to a variable.
pub fn set_lora_weights(
    model: &Llama,
    tensors: &HashMap<String, Tensor>,
    source_name: &str,
) -> Result<()> {
    let mut by_name: HashMap<String, &Tensor> = tensors
        .iter()
        .map(|(n, t)| (strip_adapter_name(n), t))
        .collect();
    for (name, var) in model.lora_vars() {
        let key = strip_adapter_name(&name);
        let t = by_name
            .remove(&key)
            .ok_or_else(|| EngineError::MissingTensor {
                source_name: source_name.to_string(),
                tensor: key.clone(),
            })?;
        if t.dims() != var.dims() {
            return Err(EngineError::ShapeMismatch {
                source_name: source_name.to_string(),
                tensor: key,
                expected: var.dims().to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(EngineError::invalid(format!(
            "{source_name}: tensor `{extra}` matches no LoRA layer of the model"
        )));
    }
    Ok(())
}

/// Adds LoRA layers described by the adapter in `dir` to `model` and loads their weights.
pub fn load_adapter(model: &mut Llama, dir: &Path) -> Result<AdapterConfig> {
    let config = read_adapter_config(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS_FILE);
    model.add_lora(&config.to_lora(0, &dir.join(ADAPTER_CONFIG_FILE).display().to_string())?)?;
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
        EngineError::Safetensors {
            path: path.clone(),
            tensor: None,
            message: e.to_string(),
        }
    })?;
    set_lora_weights(model, &tensors, &path.display().to_string())?;
    Ok(config)
}

/// What a run folder records besides the adapter, so that inference replays training exactly.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// Identifier of the sample design.
    pub design_id: String,
    /// The design itself, as its crate serialises it.
    pub design: serde_json::Value,
    /// The base model spec (path or hub id).
    pub base_model: String,
    /// Training configuration.
    pub train: crate::train::TrainConfig,
    /// Tokenization options.
    pub encode: crate::batch::EncodeOptions,
    /// Whether prompts are wrapped in the model's chat template.
    pub chat_template: bool,
    /// Truncation report of the training set.
    pub truncation: serde_json::Value,
    /// Training summary.
    pub summary: serde_json::Value,
}

/// Writes a complete run folder: adapter, run record, and the tokenizer with its chat template
/// (`tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`).
pub fn save_run(
    dir: &Path,
    model: &Llama,
    record: &RunRecord,
    tokenizer: &Tokenizer,
) -> Result<()> {
    let adapter =
        AdapterConfig::from_lora(&record.train.lora_config(), Some(record.base_model.clone()));
    save_adapter(model, &adapter, dir)?;
    tokenizer.save_hf(dir)?;
    if let Some(t) = tokenizer.chat_template() {
        write_atomic(&dir.join(CHAT_TEMPLATE_FILE), t.as_bytes())?;
    }
    let json =
        serde_json::to_vec_pretty(record).map_err(|e| EngineError::invalid(e.to_string()))?;
    write_atomic(&dir.join(RUN_FILE), &json)
}

/// Reads the run record of a run folder.
pub fn read_run(dir: &Path) -> Result<RunRecord> {
    let path = dir.join(RUN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::Config {
        source_name: path.display().to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_names_lose_the_default_segment() {
        assert_eq!(
            strip_adapter_name(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
            ),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(strip_adapter_name("x.lora_B.weight"), "x.lora_B.weight");
    }

    #[test]
    fn adapter_config_reads_a_peft_file_and_rejects_unsupported_options() {
        let peft = r#"{"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "m",
            "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
            "layers_pattern": null, "layers_to_transform": null, "lora_alpha": 16, "lora_dropout": 0.1,
            "modules_to_save": null, "peft_type": "LORA", "r": 8, "rank_pattern": {}, "revision": null,
            "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM", "use_dora": false,
            "use_rslora": false}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADAPTER_CONFIG_FILE), peft).unwrap();
        let cfg = read_adapter_config(dir.path()).unwrap();
        assert_eq!((cfg.r, cfg.lora_alpha), (8, 16.0));
        assert_eq!(cfg.target_modules, vec!["v_proj", "q_proj"]);
        std::fs::write(
            dir.path().join(ADAPTER_CONFIG_FILE),
            peft.replace("\"use_dora\": false", "\"use_dora\": true"),
        )
        .unwrap();
        let err = read_adapter_config(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("use_dora") && err.contains(ADAPTER_CONFIG_FILE),
            "{err}"
        );
    }
}
