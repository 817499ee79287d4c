//! `sde model ...`

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Model commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Fetch the embedded default model into the cache and print its path.
    Fetch,
    /// Print a model's architecture and parameter counts.
    Info {
        /// `default`, a .gguf file, an HF folder, or a hub id `org/name[@revision]`.
        #[arg(long, default_value = "default")]
        model: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a model as an HF folder (model.safetensors, config.json, tokenizer.json,
    /// tokenizer_config.json with the chat template).
    Export {
        /// `default`, a .gguf file, an HF folder, or a hub id `org/name[@revision]`.
        #[arg(long, default_value = "default")]
        model: String,
        /// The folder to write.
        #[arg(long)]
        to: PathBuf,
    },
}

pub(crate) fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Fetch => {
            let path = sde_engine::default_model_path().context("fetching the default model")?;
            print_out(&format!("{}", path.display()))?;
        }
        ModelCommand::Info { model, json } => {
            let loaded =
                sde_engine::load(&model).with_context(|| format!("loading model `{model}`"))?;
            let info = sde_engine::ModelInfo::new(&loaded.model, &loaded.tokenizer);
            if json {
                let value = serde_json::json!({ "source": loaded.source, "info": info });
                print_out(&serde_json::to_string_pretty(&value)?)?;
            } else {
                print_out(&format!("source             {}\n{info}", loaded.source))?;
            }
        }
        ModelCommand::Export { model, to } => {
            let loaded =
                sde_engine::load(&model).with_context(|| format!("loading model `{model}`"))?;
            sde_engine::export_hf_dir(&loaded.model, &loaded.tokenizer, &to)
                .with_context(|| format!("exporting to {}", to.display()))?;
            eprintln!("wrote {} ({})", to.display(), loaded.source);
        }
    }
    Ok(())
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
