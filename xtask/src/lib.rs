//! Project automation behind `cargo xtask`: the study's experiment matrices, run resumably
//! cell by cell, and the tables, plots and report made from their results.
//!
//! Flow: [`knobs`] (preset + TOML + `--set`) → [`matrix`] (cells, shards) → [`orchestrate`]
//! (skip finished cells, run the rest through a [`runner::CellRunner`], progress bars) →
//! [`report`] (`results.parquet`, [`tables`], [`plots`], `report.html`).

pub mod bench;
pub mod cell;
pub mod cli;
pub mod cost;
pub mod designs;
pub mod knobs;
pub mod learns;
pub mod matrix;
pub mod orchestrate;
pub mod plots;
pub mod real;
pub mod report;
pub mod results;
pub mod runner;
pub mod slurm;
pub mod store;
pub mod tables;

/// An error with its causes on one line, `outer: cause: root`. A cause whose text the line
/// already ends with (a library error that prints its own source) is not repeated.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// A `cargo` command for a build inside `cargo xtask`, run with the environment of a build
/// from the shell: without the variables that `cargo run` sets for the xtask itself
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME` and the like). Some dependencies' build scripts
/// watch one of them (ring watches `CARGO_MANIFEST_DIR`), and a nested build that saw the
/// xtask's values rebuilt those dependencies and everything above them, and the next build
/// from the shell rebuilt them back.
pub fn cargo_command() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let set_by_cargo_run = key
            .to_str()
            .is_some_and(|k| k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_"));
        if set_by_cargo_run {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::{cargo_command, error_text};

    /// Under `cargo test` the package's variables are set, as under `cargo run`: the nested
    /// build's command removes each of them and leaves the rest of the environment alone.
    #[test]
    fn nested_cargo_drops_the_variables_cargo_run_sets() {
        let cmd = cargo_command();
        let removed: Vec<String> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.iter().any(|k| k == "CARGO_MANIFEST_DIR"),
            "{removed:?}"
        );
        assert!(removed.iter().any(|k| k == "CARGO_PKG_NAME"), "{removed:?}");
        for (key, _) in std::env::vars() {
            let package_var = key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_");
            assert_eq!(removed.contains(&key), package_var, "{key}");
        }
    }

    #[test]
    fn error_text_does_not_repeat_a_cause_the_message_already_shows() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let lib = anyhow::Error::new(std::io::Error::other(format!("x.xml: read failed: {io}")))
            .context("dataset `d` split `train`");
        assert_eq!(
            error_text(&lib),
            "dataset `d` split `train`: x.xml: read failed: no such file"
        );

        #[derive(Debug)]
        struct ReadFailed {
            source: std::io::Error,
        }
        impl std::fmt::Display for ReadFailed {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "x.xml: read failed: {}", self.source)
            }
        }
        impl std::error::Error for ReadFailed {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let e = anyhow::Error::new(ReadFailed { source: io }).context("dataset `d`");
        assert_eq!(
            format!("{e:#}"),
            "dataset `d`: x.xml: read failed: no such file: no such file"
        );
        assert_eq!(
            error_text(&e),
            "dataset `d`: x.xml: read failed: no such file"
        );
    }
}
