//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading, generating or writing data.
///
/// Every variant that concerns a file names it; parse errors also say where in the file
/// (a line, an element or a field) and what was expected there.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened, read, written or renamed.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`read`, `write`, `rename`, ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what the loader expects.
    #[error("{path}: {location}: expected {expected}, found {found}")]
    Malformed {
        /// The file (for a member of an archive: `archive.tgz!member`).
        path: PathBuf,
        /// Where in the file: `line 12`, `line 3, <aspectCategory>`, `record 7, field "tokens"`.
        location: String,
        /// What the loader expected there.
        expected: String,
        /// What it found instead.
        found: String,
    },
    /// A recipe file is invalid (bad TOML, unknown loader, inconsistent fields).
    #[error("recipe {path}: {message}")]
    Recipe {
        /// The recipe file (or `<embedded:NAME>` for a built-in recipe).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No recipe with this name exists.
    #[error("no recipe named `{name}` in {dir} (known: {known})")]
    RecipeNotFound {
        /// The requested name.
        name: String,
        /// The directory that was searched.
        dir: PathBuf,
        /// Names that do exist, comma-separated.
        known: String,
    },
    /// The recipe has no split of this name.
    #[error("recipe `{recipe}` has no split `{split}` (it has: {available})")]
    UnknownSplit {
        /// The recipe's name.
        recipe: String,
        /// The requested split.
        split: String,
        /// The recipe's splits, comma-separated.
        available: String,
    },
    /// A recipe reads files but no data root was given.
    #[error(
        "recipe `{recipe}` reads files under a data root; pass --data-root or set SDE_DATA_ROOT"
    )]
    DataRootRequired {
        /// The recipe's name.
        recipe: String,
    },
    /// A split produced a different number of records than its recipe declares.
    #[error("recipe `{recipe}`, split `{split}`: expected {expected} records, loaded {found}")]
    SizeMismatch {
        /// The recipe's name.
        recipe: String,
        /// The split.
        split: String,
        /// The size the recipe declares.
        expected: usize,
        /// The number of records loaded.
        found: usize,
    },
    /// Arrow or Parquet rejected a file or a batch.
    #[error("{path}: {message}")]
    Columnar {
        /// The file.
        path: PathBuf,
        /// The Arrow/Parquet error text.
        message: String,
    },
    /// A generator or writer was given an invalid argument.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The argument.
        what: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        DataError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        location: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        DataError::Malformed {
            path: path.into(),
            location: location.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    pub(crate) fn recipe(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Recipe {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A short, single-line excerpt of `s` for error messages.
pub(crate) fn excerpt(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out: String = one_line.chars().take(60).collect();
    if one_line.chars().count() > 60 {
        out.push('…');
    }
    format!("{out:?}")
}
