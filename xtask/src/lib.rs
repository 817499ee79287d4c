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

#[cfg(test)]
mod tests {
    use super::error_text;

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
