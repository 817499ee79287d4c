//! GGUF loading: weights dequantised to f32 (q/k rows un-permuted back to the Hugging Face
//! layout), the architecture from metadata, and the tokenizer and chat template.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{EngineError, Result};
use crate::model::Llama;
use crate::tokenizer::{SpecialTokens, Tokenizer};

/// The regex llama.cpp and transformers use for Llama-3-style BPE pre-tokenisation.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenisation regex.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// An opened GGUF file: its metadata and tensor directory.
pub struct GgufFile {
    path: std::path::PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| EngineError::Gguf {
            path: path.to_path_buf(),
            tensor: None,
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    fn meta_err(&self, key: &str, message: impl Into<String>) -> EngineError {
        EngineError::Metadata {
            source_name: self.path.display().to_string(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// A metadata value.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn usize_of(&self, key: &str) -> Result<Option<usize>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => value_u64(v)
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.meta_err(key, "not an integer")),
        }
    }

    fn f64_of(&self, key: &str) -> Result<Option<f64>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(v) => value_f64(v)
                .map(Some)
                .ok_or_else(|| self.meta_err(key, "not a number")),
        }
    }

    fn str_of(&self, key: &str) -> Result<Option<&str>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.meta_err(key, "not a string")),
        }
    }

    fn strings_of(&self, key: &str) -> Result<Option<Vec<&str>>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.meta_err(key, "array element is not a string")),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.meta_err(key, "not an array")),
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.str_of("general.architecture")?
            .ok_or_else(|| self.meta_err("general.architecture", "missing"))
    }

    /// The model architecture from metadata.
    pub fn config(&self) -> Result<LlamaConfig> {
        let arch = self.architecture()?.to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(EngineError::Unsupported {
                source_name: self.path.display().to_string(),
                what: "architecture".into(),
                name: arch,
            });
        }
        let need = |k: &str| -> Result<usize> {
            let key = format!("{arch}.{k}");
            self.usize_of(&key)?
                .ok_or_else(|| self.meta_err(&key, "missing"))
        };
        let hidden_size = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let embd = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or_else(|| EngineError::MissingTensor {
                source_name: self.path.display().to_string(),
                tensor: "token_embd.weight".into(),
            })?;
        let vocab_size = embd.shape.dims()[0];
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        let rope_scaling = match self.str_of(&format!("{arch}.rope.scaling.type"))? {
            Some("linear") => Some(RopeScaling {
                rope_type: "linear".into(),
                factor: self
                    .f64_of(&format!("{arch}.rope.scaling.factor"))?
                    .unwrap_or(1.0),
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: None,
            }),
            None | Some("none") => None,
            Some(other) => {
                return Err(EngineError::Unsupported {
                    source_name: self.path.display().to_string(),
                    what: "rope scaling".into(),
                    name: other.into(),
                });
            }
        };
        let tok_id = |k: &str| -> Result<Option<u32>> {
            Ok(self
                .usize_of(&format!("tokenizer.ggml.{k}"))?
                .map(|x| x as u32))
        };
        let head_dim = self.usize_of(&format!("{arch}.attention.key_length"))?;
        let cfg = LlamaConfig {
            model_type: if arch == "qwen2" {
                "qwen2".into()
            } else {
                "llama".into()
            },
            vocab_size,
            hidden_size,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: Some(
                self.usize_of(&format!("{arch}.attention.head_count_kv"))?
                    .unwrap_or(heads),
            ),
            head_dim: head_dim.filter(|d| *d != hidden_size / heads),
            rms_norm_eps: self
                .f64_of(&format!("{arch}.attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_theta: self
                .f64_of(&format!("{arch}.rope.freq_base"))?
                .unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: self
                .usize_of(&format!("{arch}.context_length"))?
                .unwrap_or(2048),
            tie_word_embeddings: tied,
            attention_bias: arch == "qwen2",
            bos_token_id: tok_id("bos_token_id")?,
            eos_token_id: tok_id("eos_token_id")?,
            pad_token_id: tok_id("padding_token_id")?,
        };
        cfg.validate(&self.path.display().to_string())?;
        Ok(cfg)
    }

    /// Reads one tensor and dequantises it to f32 on the CPU.
    pub fn tensor_f32(&mut self, name: &str) -> Result<Tensor> {
        let gguf_err = |message: String| EngineError::Gguf {
            path: self.path.clone(),
            tensor: Some(name.to_string()),
            message,
        };
        let q = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| gguf_err(e.to_string()))?;
        q.dequantize(&Device::Cpu)
            .map_err(|e| gguf_err(e.to_string()))
    }

    /// Names of all tensors.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        names
    }

    /// The model's base tensors in Hugging Face naming and layout.
    pub fn hf_tensors(&mut self, cfg: &LlamaConfig) -> Result<HashMap<String, Tensor>> {
        let permuted = cfg.model_type == "llama";
        let mut out = HashMap::new();
        for name in self.tensor_names() {
            let Some(hf) = hf_name(&name) else { continue };
            let mut t = self.tensor_f32(&name)?;
            if permuted && (name.contains("attn_q.") || name.contains("attn_k.")) {
                let heads = if name.contains("attn_q.") {
                    cfg.num_attention_heads
                } else {
                    cfg.kv_heads()
                };
                t = unpermute(&t, heads).map_err(|e| EngineError::Gguf {
                    path: self.path.clone(),
                    tensor: Some(name.clone()),
                    message: e.to_string(),
                })?;
            }
            out.insert(hf, t);
        }
        Ok(out)
    }

    /// The tokenizer stored in the metadata (`tokenizer.ggml.*`) and the chat template.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let src = self.path.display().to_string();
        let model = self
            .str_of("tokenizer.ggml.model")?
            .ok_or_else(|| self.meta_err("tokenizer.ggml.model", "missing"))?;
        if model != "gpt2" {
            return Err(EngineError::Unsupported {
                source_name: src,
                what: "tokenizer model".into(),
                name: model.into(),
            });
        }
        let tokens = self
            .strings_of("tokenizer.ggml.tokens")?
            .ok_or_else(|| self.meta_err("tokenizer.ggml.tokens", "missing"))?;
        let merges = self
            .strings_of("tokenizer.ggml.merges")?
            .ok_or_else(|| self.meta_err("tokenizer.ggml.merges", "missing"))?;
        let token_type: Vec<i64> = match self.metadata("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| value_i64(v).unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let pre = self.str_of("tokenizer.ggml.pre")?.unwrap_or("default");
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        self.meta_err("tokenizer.ggml.merges", format!("merge `{m}` has no space"))
                    })
            })
            .collect::<Result<_>>()?;
        let terr = |e: tokenizers::Error| EngineError::Tokenizer {
            source_name: Some(src.clone()),
            message: e.to_string(),
        };
        let ignore_merges = matches!(pre, "llama-bpe" | "llama3");
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(terr)?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let byte_level =
            |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
        let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
            Split::new(
                SplitPattern::Regex(pattern.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map(PreTokenizerWrapper::Split)
            .map_err(terr)
        };
        let pre_tok = match pre {
            "llama-bpe" | "llama3" | "smaug-bpe" => {
                Sequence::new(vec![split(LLAMA3_PATTERN)?, byte_level(false)])
            }
            "qwen2" => Sequence::new(vec![split(QWEN2_PATTERN)?, byte_level(false)]),
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ]),
            _ => Sequence::new(vec![byte_level(true)]),
        };
        tk.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre_tok)));
        tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
        let mut special = Vec::new();
        let mut added = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            match token_type.get(i) {
                Some(3) => special.push(AddedToken::from(t.to_string(), true)),
                Some(4) => added.push(AddedToken::from(t.to_string(), false)),
                _ => {}
            }
        }
        tk.add_special_tokens(special).map_err(terr)?;
        tk.add_tokens(added).map_err(terr)?;
        let id = |key: &str| -> Result<Option<(String, u32)>> {
            Ok(self
                .usize_of(key)?
                .and_then(|i| tokens.get(i).map(|t| (t.to_string(), i as u32))))
        };
        let special = SpecialTokens {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos: matches!(
                self.metadata("tokenizer.ggml.add_bos_token"),
                Some(Value::Bool(true))
            ),
        };
        let template = self.str_of("tokenizer.chat_template")?.map(str::to_string);
        Ok(Tokenizer::new(tk, special, template))
    }
}

/// Loads a model and its tokenizer from a GGUF file.
pub(crate) fn read_gguf(path: &Path, device: &Device) -> Result<(Llama, Tokenizer)> {
    let mut file = GgufFile::open(path)?;
    let cfg = file.config()?;
    let tokenizer = file.tokenizer()?;
    let tensors = file.hf_tensors(&cfg)?;
    let model = Llama::from_tensors(cfg, tensors, device, &path.display().to_string())?;
    Ok((model, tokenizer))
}

/// Reverses llama.cpp's q/k row permutation (interleaved RoPE pairs → HF's rotate-half halves).
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let out = dims[0];
    let rest: usize = dims[1..].iter().product();
    w.reshape((heads, out / heads / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// The Hugging Face name of a GGUF tensor.
fn hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I8(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::I32(x) => Some(*x as i64),
        Value::I64(x) => Some(*x),
        other => value_u64(other).and_then(|x| i64::try_from(x).ok()),
    }
}

fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => value_u64(other).map(|x| x as f64),
    }
}
