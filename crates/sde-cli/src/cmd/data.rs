//! `sde data ...`: list recipes, count a dataset's labels, export a split.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use sde_data::io::{FileFormat, write_records};
use sde_data::stats::split_stats;
use sde_data::{Recipe, Sentiment, TaskKind};

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub(crate) enum DataCommand {
    /// List the dataset recipes (from $SDE_RECIPES_DIR or the workspace's datasets/).
    List,
    /// Count records per split, and labels per aspect (MASA) or mentions per type (NER, events).
    Stats {
        /// Recipe name (see `sde data list`).
        recipe: String,
        /// Only this split (default: every split).
        #[arg(long)]
        split: Option<String>,
        /// Aspect subset to count MASA labels over (`all`, `d1`, `d2`, ...).
        #[arg(long, default_value = "all")]
        domain: String,
        /// Root of the dataset files (not needed for synthetic recipes).
        #[arg(long, env = "SDE_DATA_ROOT")]
        data_root: Option<PathBuf>,
    },
    /// Write one split as Parquet or JSON Lines.
    Export {
        /// Recipe name (see `sde data list`).
        recipe: String,
        /// Split to export.
        #[arg(long)]
        split: String,
        /// Output format.
        #[arg(long, value_enum)]
        to: ExportFormat,
        /// Output file (written atomically).
        #[arg(long)]
        out: PathBuf,
        /// Root of the dataset files (not needed for synthetic recipes).
        #[arg(long, env = "SDE_DATA_ROOT")]
        data_root: Option<PathBuf>,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ExportFormat {
    /// Apache Parquet.
    Parquet,
    /// JSON Lines.
    Jsonl,
}

pub(crate) fn run(command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::List => {
            print!("{}", list_table(&Recipe::list()?));
            Ok(())
        }
        DataCommand::Stats {
            recipe,
            split,
            domain,
            data_root,
        } => {
            let recipe = Recipe::find(&recipe)?;
            let text = stats_report(&recipe, split.as_deref(), &domain, data_root.as_deref())?;
            print!("{text}");
            Ok(())
        }
        DataCommand::Export {
            recipe,
            split,
            to,
            out,
            data_root,
        } => {
            let recipe = Recipe::find(&recipe)?;
            let records = recipe.load_split(&split, data_root.as_deref())?;
            let format = match to {
                ExportFormat::Parquet => FileFormat::Parquet,
                ExportFormat::Jsonl => FileFormat::Jsonl,
            };
            write_records(&out, format, &records)
                .with_context(|| format!("exporting {}/{split}", recipe.name))?;
            eprintln!(
                "wrote {} records of {}/{split} to {}",
                records.len(),
                recipe.name,
                out.display()
            );
            Ok(())
        }
    }
}

fn task_name(task: TaskKind) -> &'static str {
    match task {
        TaskKind::Masa => "masa",
        TaskKind::Ner => "ner",
        TaskKind::Event => "event",
    }
}

fn list_table(recipes: &[Recipe]) -> String {
    let mut out = String::new();
    let width = recipes
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:width$}  {:5}  {:30}  description",
        "name", "task", "splits"
    );
    for r in recipes {
        let splits: Vec<String> = r
            .splits
            .iter()
            .map(|s| match s.size {
                Some(n) => format!("{}:{n}", s.name),
                None => s.name.clone(),
            })
            .collect();
        let _ = writeln!(
            out,
            "{:width$}  {:5}  {:30}  {}",
            r.name,
            task_name(r.task),
            splits.join(" "),
            r.description
        );
    }
    out
}

fn stats_report(
    recipe: &Recipe,
    split: Option<&str>,
    domain: &str,
    data_root: Option<&Path>,
) -> anyhow::Result<String> {
    let domain = recipe.domain(domain)?;
    let splits: Vec<&str> = match split {
        Some(s) => vec![recipe.split(s)?.name.as_str()],
        None => recipe.split_names(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}), domain {}",
        recipe.name,
        task_name(recipe.task),
        domain.name
    );
    for split in splits {
        let (records, report) = recipe
            .load_split_with_report(split, data_root)
            .with_context(|| format!("loading {}/{split}", recipe.name))?;
        let stats = split_stats(&records, &domain);
        let _ = writeln!(out, "\n[{split}] {} records", stats.records);
        match recipe.task {
            TaskKind::Masa => {
                let width = stats
                    .aspect_labels
                    .iter()
                    .map(|(k, _)| k.len())
                    .max()
                    .unwrap_or(6)
                    .max(6);
                let _ = write!(out, "  {:width$}", "aspect");
                for s in Sentiment::ALL {
                    let _ = write!(out, " {:>11}", s.en());
                }
                out.push('\n');
                for (key, counts) in &stats.aspect_labels {
                    let _ = write!(out, "  {key:width$}");
                    for c in counts {
                        let _ = write!(out, " {c:>11}");
                    }
                    out.push('\n');
                }
                let _ = write!(out, "  {:width$}", "total");
                for c in stats.label_totals {
                    let _ = write!(out, " {c:>11}");
                }
                out.push('\n');
            }
            TaskKind::Ner | TaskKind::Event => {
                let what = if recipe.task == TaskKind::Ner {
                    "entities"
                } else {
                    "events"
                };
                let _ = write!(out, "  {} {what}", stats.mentions);
                if recipe.task == TaskKind::Ner {
                    let _ = write!(out, " ({} overlap another entity)", stats.nested_mentions);
                }
                out.push('\n');
                for (kind, n) in &stats.type_counts {
                    let _ = writeln!(out, "  {kind:24} {n:>7}");
                }
            }
        }
        for (note, n) in &report.counts {
            let _ = writeln!(out, "  note: {note}: {n}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_synthetic_masa_need_no_data_root() {
        let recipe = Recipe::find("synthetic-masa").unwrap();
        let text = stats_report(&recipe, Some("dev"), "d2", None).unwrap();
        assert!(text.starts_with("synthetic-masa (masa), domain d2\n\n[dev] 500 records\n"));
        assert!(text.contains("serving_speed"));
        assert!(!text.contains("parking"));
    }

    #[test]
    fn export_writes_a_split_that_reads_back() {
        let dir = std::env::temp_dir().join(format!("sde-data-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (to, name) in [
            (ExportFormat::Jsonl, "ner.jsonl"),
            (ExportFormat::Parquet, "ner.parquet"),
        ] {
            let out = dir.join(name);
            run(DataCommand::Export {
                recipe: "synthetic-ner".into(),
                split: "dev".into(),
                to,
                out: out.clone(),
                data_root: None,
            })
            .unwrap();
            let back = sde_data::io::read_records(&out).unwrap();
            let expected = Recipe::find("synthetic-ner")
                .unwrap()
                .load_split("dev", None)
                .unwrap();
            assert_eq!(back, expected);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn list_shows_every_embedded_recipe() {
        let text = list_table(&Recipe::list().unwrap());
        for name in ["synthetic-masa", "synthetic-ner", "synthetic-event"] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
