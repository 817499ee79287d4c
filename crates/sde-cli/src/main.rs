//! The `sde` command-line tool: each step of a sample-design study on its own.

mod cmd;

use clap::{Parser, Subcommand};

/// Sample Design Engineering toolkit.
#[derive(Debug, Parser)]
#[command(name = "sde", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, inspect and export datasets.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Render a dataset under a sample design as JSONL for any trainer.
    Format(cmd::format::FormatArgs),
    /// Fetch, inspect and export models.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Fine-tune a LoRA adapter on one design.
    Train(cmd::train::TrainArgs),
    /// Generate predictions with a (possibly adapted) model.
    Predict(cmd::train::PredictArgs),
    /// Score predictions.
    Eval(cmd::eval::EvalArgs),
    /// Train, predict and evaluate one design end to end, from `sde format` output.
    Run(cmd::train::RunArgs),
}

#[allow(unsafe_code)]
fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let cli = Cli::parse();
    match cli.command {
        Command::Data(c) => cmd::data::run(c),
        Command::Format(a) => cmd::format::run(a),
        Command::Model(c) => cmd::model::run(c),
        Command::Train(a) => cmd::train::train(a),
        Command::Predict(a) => cmd::train::predict(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Run(a) => cmd::train::run(a),
    }
}
