//! `sde format ...`

use clap::Args;

/// Arguments of `sde format`.
#[derive(Debug, Args)]
pub(crate) struct FormatArgs {
    /// Dataset recipe name or path.
    pub recipe: String,
}

pub(crate) fn run(_args: FormatArgs) -> anyhow::Result<()> {
    anyhow::bail!("`sde format` is not available in this build yet")
}
