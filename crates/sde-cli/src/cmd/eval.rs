//! `sde eval ...`

use clap::Args;

/// Arguments of `sde eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Predictions JSONL.
    pub predictions: std::path::PathBuf,
}

pub(crate) fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("`sde eval` is not available in this build yet")
}
