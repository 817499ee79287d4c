//! The `cargo xtask` command line.

use crate::knobs::{Knobs, RunnerKind};
use crate::matrix::Shard;
use crate::orchestrate::{self, RunOptions};
use crate::report::ReportMeta;
use crate::runner::{CellRunner, FakeRunner};
use crate::slurm::{self, SlurmOptions};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Project automation for the sde workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the study's experiment matrices (A, B, C), resumably, and write the report.
    Reproduce(ReproduceArgs),
    /// Rewrite results.parquet, tables, plots and report.html from the finished cells.
    Report(StudyArgs),
    /// Write an sbatch job-array script that runs the matrix as shards on a cluster.
    Slurm(SlurmArgs),
    /// Gather the finished cells of several results folders and report over all of them.
    Merge(MergeArgs),
    /// Measure the engine and the Python stack side by side; write docs/performance.md.
    Bench(crate::bench::BenchArgs),
    /// Check that fine-tuning beats the untuned model (kappa and format errors) on synthetic
    /// MASA; fails otherwise.
    Learns(crate::learns::LearnsArgs),
}

/// Which study: preset, config file, overrides, results folder.
#[derive(Debug, Args)]
struct StudyArgs {
    /// Preset: smoke, default, real or paper.
    #[arg(long, default_value = "default")]
    preset: String,
    /// TOML file overriding the preset's knobs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one knob, e.g. `--set a.train_sizes=[100,200]` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Cell runner (shorthand for `--set runner=...`).
    #[arg(long, value_parser = ["real", "fake"])]
    runner: Option<String>,
    /// Results folder (default `results/<preset>`).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl StudyArgs {
    fn knobs(&self) -> Result<Knobs> {
        let mut sets = self.sets.clone();
        if let Some(r) = &self.runner {
            sets.push(format!("runner={r}"));
        }
        Knobs::resolve(&self.preset, self.config.as_deref(), &sets)
    }

    fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from("results").join(&self.preset))
    }

    /// The arguments that reproduce this study selection (for generated scripts).
    fn forward(&self) -> Vec<String> {
        let mut v = vec!["--preset".to_string(), self.preset.clone()];
        if let Some(c) = &self.config {
            v.extend(["--config".into(), c.display().to_string()]);
        }
        for s in &self.sets {
            v.extend(["--set".into(), s.clone()]);
        }
        if let Some(r) = &self.runner {
            v.extend(["--runner".into(), r.clone()]);
        }
        v
    }
}

#[derive(Debug, Args)]
struct ReproduceArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// List the cells with estimated times and exit.
    #[arg(long)]
    dry_run: bool,
    /// Run only shard k of n (k from 0), e.g. `--shard 2/8`.
    #[arg(long)]
    shard: Option<Shard>,
    /// Stop at the first failed cell.
    #[arg(long)]
    fail_fast: bool,
    /// Stop after running this many cells.
    #[arg(long)]
    max_cells: Option<usize>,
    /// With --shard: write the report if every cell of the whole matrix is finished.
    #[arg(long)]
    report_if_complete: bool,
    /// Do not write the report at the end.
    #[arg(long)]
    no_report: bool,
}

#[derive(Debug, Args)]
struct SlurmArgs {
    #[command(flatten)]
    study: StudyArgs,
    /// Number of array tasks (shards).
    #[arg(long, default_value_t = 16)]
    shards: usize,
    /// Where to write the script (default: stdout).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Wall-time limit per task.
    #[arg(long, default_value = "24:00:00")]
    time: String,
    /// GPUs per task.
    #[arg(long, default_value_t = 1)]
    gpus: usize,
    /// CPU cores per task.
    #[arg(long, default_value_t = 8)]
    cpus: usize,
    /// Memory per task.
    #[arg(long, default_value = "64G")]
    mem: String,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Cargo features to build with (default `cuda` when GPUs are requested).
    #[arg(long)]
    features: Option<String>,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Folder to gather into (gets the cells, results.parquet, tables, plots, report).
    #[arg(long)]
    out: PathBuf,
    /// Results folders to gather from.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// Parses the command line and runs it; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The runner a run's knobs ask for.
pub fn make_runner(knobs: &Knobs) -> Result<Box<dyn CellRunner>> {
    Ok(match knobs.runner {
        RunnerKind::Fake => Box::new(FakeRunner),
        RunnerKind::Real => Box::new(crate::real::RealRunner::new(knobs)?),
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Reproduce(args) => reproduce(args),
        Command::Bench(args) => crate::bench::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Learns(args) => crate::learns::learns(&args).map(|pass| {
            if pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Report(study) => {
            let knobs = study.knobs()?;
            let out = study.out();
            let cells = orchestrate::plan(&knobs, None)?;
            let finished = orchestrate::collect(&out, &cells)?;
            let meta = ReportMeta {
                title: format!("preset {}", knobs.preset),
                runner: format!("{:?}", knobs.runner).to_lowercase(),
                planned: cells.len(),
                failed: Vec::new(),
                knobs_toml: knobs.to_toml().ok(),
            };
            let files = crate::report::write_all(&out, &finished, &meta)?;
            eprintln!(
                "{} of {} cells finished; wrote {} rows, {} tables, {} plots and {}",
                finished.len(),
                cells.len(),
                files.rows,
                files.tables.len() / 2,
                files.plots.len(),
                out.join("report.html").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Slurm(args) => {
            args.study.knobs()?;
            let features = match &args.features {
                Some(f) => f
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                None if args.gpus > 0 => vec!["cuda".to_string()],
                None => Vec::new(),
            };
            let text = slurm::script(&SlurmOptions {
                shards: args.shards.max(1),
                out: args.study.out().display().to_string(),
                run_args: args.study.forward(),
                time: args.time,
                gpus: args.gpus,
                cpus: args.cpus,
                mem: args.mem,
                partition: args.partition,
                features,
            });
            match &args.script {
                Some(p) => {
                    crate::store::write_atomic(p, text.as_bytes())?;
                    eprintln!(
                        "wrote {} (submit with: sbatch {})",
                        p.display(),
                        p.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge(args) => {
            let (n, files) = orchestrate::merge(&args.inputs, &args.out)?;
            eprintln!(
                "merged {n} finished cells into {}: {} rows, {} tables, {} plots",
                args.out.display(),
                files.rows,
                files.tables.len() / 2,
                files.plots.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn reproduce(args: ReproduceArgs) -> Result<ExitCode> {
    let knobs = args.study.knobs()?;
    let out = args.study.out();
    let cells = orchestrate::plan(&knobs, args.shard)?;
    if args.dry_run {
        print!("{}", orchestrate::dry_run(&knobs, &cells, &out));
        return Ok(ExitCode::SUCCESS);
    }
    let runner = make_runner(&knobs).context("starting the cell runner")?;
    let opts = RunOptions {
        out: out.clone(),
        shard: args.shard,
        fail_fast: args.fail_fast,
        report: !args.no_report && args.shard.is_none(),
        max_cells: args.max_cells,
    };
    let summary = orchestrate::run(&knobs, &cells, runner.as_ref(), &opts)?;
    if args.report_if_complete && args.shard.is_some() {
        let all = orchestrate::plan(&knobs, None)?;
        let finished = orchestrate::collect(&out, &all)?;
        if finished.len() == all.len() {
            let meta = ReportMeta {
                title: format!("preset {}", knobs.preset),
                runner: runner.name().into(),
                planned: all.len(),
                failed: Vec::new(),
                knobs_toml: knobs.to_toml().ok(),
            };
            crate::report::write_all(&out, &finished, &meta)?;
            eprintln!(
                "every cell is finished; wrote {}",
                out.join("report.html").display()
            );
        }
    }
    eprintln!(
        "{} cells: {} skipped (already done), {} ran, {} failed",
        summary.planned,
        summary.skipped,
        summary.ran,
        summary.failed.len()
    );
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
