//! The engine's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine, with the file, tensor or field concerned.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file is malformed or truncated.
    #[error("{path}: invalid GGUF{}: {message}", tensor.as_ref().map(|t| format!(" (tensor `{t}`)")).unwrap_or_default())]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// The tensor being read, when the problem is in one tensor.
        tensor: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: invalid safetensors{}: {message}", tensor.as_ref().map(|t| format!(" (tensor `{t}`)")).unwrap_or_default())]
    Safetensors {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor concerned, when the problem is in one tensor.
        tensor: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{source_name}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The checkpoint (file or folder).
        source_name: String,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    #[error("{source_name}: tensor `{tensor}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint (file or folder) or the operation.
        source_name: String,
        /// The tensor name.
        tensor: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },
    /// A metadata key is absent or has the wrong type.
    #[error("{source_name}: metadata `{key}`: {message}")]
    Metadata {
        /// The file concerned.
        source_name: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A configuration file or value is invalid.
    #[error("{source_name}: invalid configuration: {message}")]
    Config {
        /// The file or the configuration concerned.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// An architecture or tokenizer kind that the engine does not implement.
    #[error("{source_name}: unsupported {what} `{name}`")]
    Unsupported {
        /// The file concerned.
        source_name: String,
        /// What kind of thing (architecture, tokenizer model, rope scaling...).
        what: String,
        /// Its name.
        name: String,
    },
    /// Building or running the tokenizer failed.
    #[error("tokenizer{}: {message}", source_name.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Tokenizer {
        /// The file it came from, when known.
        source_name: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Rendering the chat template failed.
    #[error("chat template: {message}")]
    ChatTemplate {
        /// What is wrong.
        message: String,
    },
    /// The model has no chat template.
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// Fetching the default model failed.
    #[error("fetching the default model: {message}")]
    Fetch {
        /// What is wrong.
        message: String,
    },
    /// The default model is not in the cache and fetching is forbidden.
    #[error(
        "the default model is not cached at {path} and SDE_REQUIRE_MODEL=1 forbids fetching it (run `sde model fetch`)"
    )]
    ModelNotCached {
        /// Where it was expected.
        path: PathBuf,
    },
    /// Resolving a model on the Hugging Face hub (or its local cache) failed.
    #[error("hub model `{repo}` (revision {revision}): {message}")]
    Hub {
        /// The repository id.
        repo: String,
        /// The revision.
        revision: String,
        /// What is wrong.
        message: String,
    },
    /// A model spec that is neither a file, a folder nor a hub id.
    #[error("cannot resolve model `{spec}`: {message}")]
    ModelSpec {
        /// The spec given.
        spec: String,
        /// Why it failed.
        message: String,
    },
    /// Inputs to a model call are inconsistent.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// The KV cache has no room for more positions.
    #[error("KV cache full: {needed} positions needed, capacity {capacity}")]
    CacheFull {
        /// Positions needed.
        needed: usize,
        /// The cache capacity.
        capacity: usize,
    },
    /// The training loss became NaN or infinite.
    #[error(
        "training loss is {value} at optimizer step {step} (batch {batch}); lower the learning rate or check the data"
    )]
    NonFiniteLoss {
        /// 1-based optimizer step.
        step: usize,
        /// 1-based batch number since training started.
        batch: usize,
        /// The loss value.
        value: f64,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }
}
