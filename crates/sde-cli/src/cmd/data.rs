//! `sde data ...`

use clap::Subcommand;

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
    /// List the dataset recipes.
    List,
}

pub(crate) fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::List => anyhow::bail!("`sde data list` is not available in this build yet"),
    }
}
