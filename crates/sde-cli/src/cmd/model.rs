//! `sde model ...`

use clap::Subcommand;

/// Model commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Fetch the embedded default model into the cache.
    Fetch,
}

pub(crate) fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Fetch => anyhow::bail!("`sde model fetch` is not available in this build yet"),
    }
}
