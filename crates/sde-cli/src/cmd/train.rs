//! `sde train`, `sde predict`, `sde run`.

use clap::Args;

/// Arguments of `sde train`.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {}

/// Arguments of `sde predict`.
#[derive(Debug, Args)]
pub(crate) struct PredictArgs {}

/// Arguments of `sde run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {}

pub(crate) fn train(_args: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("`sde train` is not available in this build yet")
}

pub(crate) fn predict(_args: PredictArgs) -> anyhow::Result<()> {
    anyhow::bail!("`sde predict` is not available in this build yet")
}

pub(crate) fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`sde run` is not available in this build yet")
}
