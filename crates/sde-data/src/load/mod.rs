//! Loaders for the original formats of public datasets.
//!
//! Each loader reads one file and returns records with stable ids (`{prefix}/{source id}`,
//! or `{prefix}/{index}` where the source has no ids) plus a [`LoadReport`] of what it had to
//! map, merge or drop. Loaders never panic on bad input: they return a
//! [`DataError`](crate::DataError) naming the file, the place and what was expected.

pub mod acsa;
pub mod asap;
pub mod conll;
pub mod genia;
pub mod maven;
pub mod sentihood;
pub(crate) mod xml;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{DataError, Result};

/// Counters of notable decisions a loader made (e.g. `conflict labels -> neutral: 196`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Counter name to count, sorted by name.
    pub counts: BTreeMap<String, usize>,
}

impl LoadReport {
    /// Adds `n` to the counter `name`.
    pub fn add(&mut self, name: impl Into<String>, n: usize) {
        *self.counts.entry(name.into()).or_default() += n;
    }

    /// The value of counter `name` (0 when never incremented).
    pub fn get(&self, name: &str) -> usize {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Adds every counter of `other` into `self`.
    pub fn merge(&mut self, other: LoadReport) {
        for (k, v) in other.counts {
            self.add(k, v);
        }
    }
}

/// Reads a whole UTF-8 file, naming it on failure.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "read", e))?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        DataError::malformed(
            path,
            format!("byte {offset}"),
            "UTF-8 text",
            "an invalid UTF-8 sequence",
        )
    })
}

/// Parses a whole JSON document, naming the file, line and column on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    what: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        DataError::malformed(
            path,
            format!("line {}, column {}", e.line(), e.column()),
            what.to_string(),
            e.to_string(),
        )
    })
}
