//! Wrapping prompts in a model's own chat template.
//!
//! The template is the Jinja source shipped with the model (a GGUF's
//! `tokenizer.chat_template`, a `tokenizer_config.json`'s `chat_template`); the caller reads
//! it, this crate only renders it. The prompt becomes the single user message, rendered with
//! `add_generation_prompt = true`; the completion is unchanged (the trainer appends the
//! model's end-of-sequence token, which for chat models is the end-of-turn token).

use minijinja::{Environment, Error, ErrorKind, context};

use crate::error::FormatError;

/// A model's chat template and the special tokens it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// Where the template comes from (a model id), for messages and run records.
    pub name: String,
    /// Jinja source.
    pub source: String,
    /// Value of `bos_token` inside the template.
    pub bos_token: String,
    /// Value of `eos_token` inside the template.
    pub eos_token: String,
    /// An optional system message put before the user message.
    pub system: Option<String>,
}

impl ChatTemplate {
    /// A template with empty special tokens and no system message.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            name: name.into(),
            source: source.into(),
            bos_token: String::new(),
            eos_token: String::new(),
            system: None,
        }
    }

    /// A stable 64-bit FNV-1a fingerprint of the template source and tokens, as 16 hex
    /// digits: what run records store to say which template wrapped the prompts.
    pub fn fingerprint(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let system = self.system.as_deref().unwrap_or("");
        for part in [&self.source, &self.bos_token, &self.eos_token, system] {
            for byte in part.bytes().chain([0xff]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }

    /// `prompt` as the user turn, followed by the assistant turn's opening.
    pub fn wrap_prompt(&self, prompt: &str) -> Result<String, FormatError> {
        let error = |e: Error| FormatError::ChatTemplate {
            name: self.name.clone(),
            message: format!("{e:#}"),
        };
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template("chat", &self.source).map_err(error)?;
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(context! { role => "system", content => system });
        }
        messages.push(context! { role => "user", content => prompt });
        env.get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                })
            })
            .map_err(error)
    }
}
