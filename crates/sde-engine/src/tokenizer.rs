//! Tokenizer: the `tokenizers` crate plus the model's special ids and chat template.

use std::path::Path;

use serde_json::Value as Json;

use crate::chat::{ChatMessage, render_chat_template};
use crate::error::{EngineError, Result};

/// Special tokens of a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<(String, u32)>,
    /// End of sequence (also where generation stops).
    pub eos: Option<(String, u32)>,
    /// Padding.
    pub pad: Option<(String, u32)>,
    /// Whether `encode(.., add_special = true)` prepends BOS when the tokenizer itself has no
    /// post-processor doing it.
    pub add_bos: bool,
}

/// A tokenizer with its model's special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    chat_template: Option<String>,
}

fn tok_err(source_name: Option<&str>, e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer {
        source_name: source_name.map(str::to_string),
        message: e.to_string(),
    }
}

impl Tokenizer {
    /// Wraps a built tokenizer.
    pub fn new(
        inner: tokenizers::Tokenizer,
        special: SpecialTokens,
        chat_template: Option<String>,
    ) -> Self {
        Self {
            inner,
            special,
            chat_template,
        }
    }

    /// Reads `tokenizer.json` and, when present, `tokenizer_config.json` (special tokens and
    /// chat template) from an HF folder.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        let name = tj.display().to_string();
        if !tj.is_file() {
            return Err(EngineError::io(
                &tj,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&tj).map_err(|e| tok_err(Some(&name), e))?;
        let tc = dir.join("tokenizer_config.json");
        let cfg: Json = if tc.is_file() {
            let text = std::fs::read_to_string(&tc).map_err(|e| EngineError::io(&tc, e))?;
            serde_json::from_str(&text).map_err(|e| EngineError::Config {
                source_name: tc.display().to_string(),
                message: e.to_string(),
            })?
        } else {
            Json::Null
        };
        let model_cfg: Json = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Json::Null);
        let token = |key: &str| -> Option<(String, u32)> {
            let content = match cfg.get(key)? {
                Json::String(s) => s.clone(),
                Json::Object(o) => o.get("content")?.as_str()?.to_string(),
                _ => return None,
            };
            let id = inner.token_to_id(&content)?;
            Some((content, id))
        };
        let from_config = |key: &str| -> Option<(String, u32)> {
            let id = match model_cfg.get(key)? {
                Json::Number(n) => n.as_u64()? as u32,
                Json::Array(a) => a.first()?.as_u64()? as u32,
                _ => return None,
            };
            Some((inner.id_to_token(id)?, id))
        };
        let bos = token("bos_token").or_else(|| from_config("bos_token_id"));
        let eos = token("eos_token").or_else(|| from_config("eos_token_id"));
        let pad = token("pad_token").or_else(|| from_config("pad_token_id"));
        let chat_template = match cfg.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string),
            _ => None,
        }
        .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
        let special = SpecialTokens {
            bos,
            eos,
            pad,
            add_bos: false,
        };
        Ok(Self {
            inner,
            special,
            chat_template,
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (special tokens, chat template).
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        let tj = dir.join("tokenizer.json");
        self.inner
            .save(&tj, false)
            .map_err(|e| tok_err(Some(&tj.display().to_string()), e))?;
        let mut cfg = serde_json::Map::new();
        for (key, tok) in [
            ("bos_token", &self.special.bos),
            ("eos_token", &self.special.eos),
            ("pad_token", &self.special.pad),
        ] {
            if let Some((s, _)) = tok {
                cfg.insert(key.into(), Json::String(s.clone()));
            }
        }
        cfg.insert("add_bos_token".into(), Json::Bool(self.special.add_bos));
        cfg.insert(
            "tokenizer_class".into(),
            Json::String("PreTrainedTokenizerFast".into()),
        );
        if let Some(t) = &self.chat_template {
            cfg.insert("chat_template".into(), Json::String(t.clone()));
        }
        let tc = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&Json::Object(cfg)).expect("JSON map serialises");
        std::fs::write(&tc, text).map_err(|e| EngineError::io(&tc, e))
    }

    /// Token ids of `text`. With `add_special`, the tokenizer's own post-processing applies
    /// (and BOS is prepended when the model asks for it). Special-token strings in the text
    /// (`<|im_start|>`) always map to their ids.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| tok_err(None, e))?;
        let mut ids = enc.get_ids().to_vec();
        if add_special
            && self.special.add_bos
            && let Some((_, bos)) = &self.special.bos
            && ids.first() != Some(bos)
        {
            ids.insert(0, *bos);
        }
        Ok(ids)
    }

    /// Text of `ids`; with `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err(None, e))
    }

    /// The string of one token id, as in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of one token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// BOS id.
    pub fn bos_id(&self) -> Option<u32> {
        self.special.bos.as_ref().map(|t| t.1)
    }

    /// EOS id.
    pub fn eos_id(&self) -> Option<u32> {
        self.special.eos.as_ref().map(|t| t.1)
    }

    /// Padding id (falls back to EOS, as the reference does when none is set).
    pub fn pad_id(&self) -> Option<u32> {
        self.special
            .pad
            .as_ref()
            .map(|t| t.1)
            .or_else(|| self.eos_id())
    }

    /// All special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The chat template (Jinja), when the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Replaces the chat template.
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Renders `messages` with the model's chat template, as `apply_chat_template(...,
    /// tokenize=False)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or(EngineError::NoChatTemplate)?;
        render_chat_template(template, messages, add_generation_prompt, &self.special)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
