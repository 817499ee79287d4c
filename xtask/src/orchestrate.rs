//! Runs a plan of cells: skip finished ones, run the rest one by one with progress bars,
//! and write the report.

use crate::cell::{CellOutcome, CellSpec, Matrix};
use crate::cost::{self, human_duration};
use crate::knobs::Knobs;
use crate::matrix::{self, Shard};
use crate::report::{self, ReportMeta};
use crate::runner::{CellContext, CellRunner, Progress};
use crate::store::{self, CellDir, write_atomic};
use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The code version recorded in every cell (part of its hash): the crate version and the git
/// commit of the checkout, or `SDE_CODE_VERSION` when set (to pin results across commits).
pub fn code_version() -> String {
    if let Ok(v) = std::env::var("SDE_CODE_VERSION")
        && !v.is_empty()
    {
        return v;
    }
    let commit = git_output(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["rev-parse", "--short=12", "HEAD"],
    )
    .unwrap_or_else(|| "unknown".into());
    format!("sde {}+{commit}", env!("CARGO_PKG_VERSION"))
}

/// What `git args` prints in `dir`, trimmed; `None` where git fails or prints nothing.
pub fn git_output(dir: &Path, args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Results folder.
    pub out: PathBuf,
    /// Only this shard's cells.
    pub shard: Option<Shard>,
    /// Stop at the first failed cell instead of going on.
    pub fail_fast: bool,
    /// Write tables, plots and the report at the end (default: yes unless sharded).
    pub report: bool,
    /// Stop after this many cells have run (for tests and quick looks).
    pub max_cells: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// Cells in the plan (this shard).
    pub planned: usize,
    /// Cells already finished before the run.
    pub skipped: usize,
    /// Cells run to completion now.
    pub ran: usize,
    /// Cells that failed: label and error.
    pub failed: Vec<(String, String)>,
}

/// The plan: every cell of the matrices for this shard, in order.
pub fn plan(knobs: &Knobs, shard: Option<Shard>) -> Result<Vec<CellSpec>> {
    let all = matrix::cells(knobs, &code_version())?;
    Ok(matrix::shard_cells(all, shard, &knobs.cost))
}

/// How the finished cells of a results folder ran against the cost model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    /// Finished cells whose `metrics.json` could be read.
    pub cells: usize,
    /// Their measured wall seconds.
    pub took: f64,
    /// Their estimated seconds.
    pub estimated: f64,
    /// The median over those cells of measured over estimated time. A median, so that a few
    /// cells stretched by a suspended machine or a busy neighbour do not skew it.
    pub ratio: f64,
}

impl Pace {
    /// The pace of finished cells given as (measured, estimated) seconds; `None` when there
    /// are none with a positive estimate.
    pub fn from_cells(cells: impl IntoIterator<Item = (f64, f64)>) -> Option<Pace> {
        let mut ratios = Vec::new();
        let (mut took, mut estimated) = (0.0, 0.0);
        for (t, est) in cells.into_iter().filter(|&(_, est)| est > 0.0) {
            took += t;
            estimated += est;
            ratios.push(t / est);
        }
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        let n = ratios.len();
        let ratio = if n % 2 == 1 {
            ratios[n / 2]
        } else {
            (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
        };
        Some(Pace {
            cells: n,
            took,
            estimated,
            ratio,
        })
    }
}

/// Finished cells a matrix needs before its own median replaces the overall one in a forecast.
pub const MIN_CELLS_FOR_MATRIX_PACE: usize = 3;

/// The pace of a results folder's finished cells, overall and per matrix: the matrices' cells
/// differ in kind (A's long chain-of-thought outputs, C's untuned scoring), and each runs
/// against the cost model at a pace of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Paces {
    /// Over all finished cells.
    pub overall: Pace,
    /// Per matrix, over that matrix's finished cells.
    pub by_matrix: std::collections::BTreeMap<Matrix, Pace>,
}

impl Paces {
    /// Measures the finished cells of `cells` under `out`; `None` when none has a readable
    /// outcome.
    pub fn measure(knobs: &Knobs, cells: &[CellSpec], out: &Path) -> Option<Paces> {
        Paces::from_cells(cells.iter().filter_map(|c| {
            measured_seconds(&CellDir::new(out, c))
                .map(|took| (c.matrix, took, cost::estimate(c, &knobs.cost).seconds))
        }))
    }

    /// The paces of finished cells given as (matrix, measured, estimated seconds); `None` when
    /// there are none with a positive estimate.
    pub fn from_cells(cells: impl IntoIterator<Item = (Matrix, f64, f64)>) -> Option<Paces> {
        let mut all = Vec::new();
        let mut grouped: std::collections::BTreeMap<Matrix, Vec<(f64, f64)>> = Default::default();
        for (m, took, est) in cells {
            all.push((took, est));
            grouped.entry(m).or_default().push((took, est));
        }
        let overall = Pace::from_cells(all)?;
        let by_matrix = grouped
            .into_iter()
            .filter_map(|(m, c)| Pace::from_cells(c).map(|p| (m, p)))
            .collect();
        Some(Paces { overall, by_matrix })
    }

    /// The ratio a matrix's unfinished cells are forecast at: its own median once it has
    /// [`MIN_CELLS_FOR_MATRIX_PACE`] finished cells, else the overall median.
    pub fn ratio_for(&self, matrix: Matrix) -> f64 {
        self.by_matrix
            .get(&matrix)
            .filter(|p| p.cells >= MIN_CELLS_FOR_MATRIX_PACE)
            .map_or(self.overall.ratio, |p| p.ratio)
    }

    /// Seconds left for unfinished cells given as (matrix, estimated seconds), each at its
    /// matrix's ratio.
    pub fn seconds_left(&self, pending: impl IntoIterator<Item = (Matrix, f64)>) -> f64 {
        pending
            .into_iter()
            .map(|(m, est)| est * self.ratio_for(m))
            .sum()
    }
}

/// A finished cell's measured wall seconds.
fn measured_seconds(dir: &CellDir) -> Option<f64> {
    if !dir.is_done() {
        return None;
    }
    store::read_json::<CellOutcome>(&dir.path.join("metrics.json"))
        .ok()
        .map(|o| o.seconds)
}

/// Prints the plan with estimated times to stdout; finished cells also show the time they
/// took, and the time left is also given at the finished cells' pace.
pub fn dry_run(knobs: &Knobs, cells: &[CellSpec], out: &Path) -> String {
    let mut text = String::new();
    let mut totals = std::collections::BTreeMap::new();
    let mut pending_cells = Vec::new();
    let mut done = 0;
    let mut finished = Vec::new();
    text.push_str(&format!(
        "{:>4}  {:<16}  {:>8}  {:>8}  {:<6}  cell\n",
        "#", "id", "estimate", "took", "state"
    ));
    for (i, c) in cells.iter().enumerate() {
        let est = cost::estimate(c, &knobs.cost);
        let dir = CellDir::new(out, c);
        let is_done = dir.is_done();
        if is_done {
            done += 1;
        } else {
            pending_cells.push((c.matrix, est.seconds));
        }
        let e = totals.entry(c.matrix).or_insert((0usize, 0.0f64));
        e.0 += 1;
        e.1 += est.seconds;
        let took = measured_seconds(&dir);
        if let Some(t) = took {
            finished.push((c.matrix, t, est.seconds));
        }
        text.push_str(&format!(
            "{:>4}  {:<16}  {:>8}  {:>8}  {:<6}  {}\n",
            i + 1,
            c.id(),
            human_duration(est.seconds),
            took.map_or_else(|| "-".to_string(), human_duration),
            if is_done { "done" } else { "todo" },
            c.label()
        ));
    }
    text.push('\n');
    let paces = Paces::from_cells(finished);
    let mut total = 0.0;
    for (m, (n, secs)) in &totals {
        total += secs;
        let took = paces
            .as_ref()
            .and_then(|p| p.by_matrix.get(m))
            .map_or_else(String::new, |p| {
                format!(
                    "; {} finished took {} (median ×{:.2})",
                    p.cells,
                    human_duration(p.took),
                    p.ratio
                )
            });
        text.push_str(&format!(
            "matrix {}: {n} cells, estimated {}{took}\n",
            m.as_str(),
            human_duration(*secs)
        ));
    }
    let c = &knobs.cost;
    text.push_str(&format!(
        "total: {} cells ({done} done), estimated {} ({} left) at {} train tok/s, {} generated tok/s, {} scored tok/s, {}s per cell\n",
        cells.len(),
        human_duration(total),
        human_duration(pending_cells.iter().map(|&(_, s)| s).sum::<f64>()),
        c.train_tokens_per_s,
        c.generate_tokens_per_s,
        c.score_tokens_per_s,
        c.cell_overhead_s
    ));
    if let Some(p) = paces {
        text.push_str(&format!(
            "finished: {} cells took {} against an estimated {} (median ×{:.2}); at each matrix's pace {} left (a matrix with fewer than {} finished cells at the overall median)\n",
            p.overall.cells,
            human_duration(p.overall.took),
            human_duration(p.overall.estimated),
            p.overall.ratio,
            human_duration(p.seconds_left(pending_cells)),
            MIN_CELLS_FOR_MATRIX_PACE
        ));
    }
    text
}

/// Progress bars: an overall bar measured in estimated seconds (so its ETA follows the cost
/// model, corrected by the observed pace) and a bar for the cell in flight. When stderr is
/// not a terminal, one line per cell is logged instead.
struct Bars {
    overall: ProgressBar,
    cell: ProgressBar,
    _multi: MultiProgress,
    interactive: bool,
}

impl Bars {
    fn new(total_ms: u64, cells: usize) -> Bars {
        let interactive = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let (overall_bar, cell_bar) = if plain {
            ("{bar:40}", "{bar:30}")
        } else {
            ("{bar:40.cyan/blue}", "{bar:30.green/white}")
        };
        let overall = multi.add(ProgressBar::new(total_ms.max(1)));
        overall.set_style(
            ProgressStyle::with_template(&format!(
                "study  [{{elapsed_precise}}] {overall_bar} {{percent:>3}}%  ETA {{eta}}  {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_message(format!("0/{cells} cells"));
        let cell = multi.add(ProgressBar::new(1));
        cell.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix:>12}} {cell_bar} {{pos}}/{{len}} ETA {{eta}}  {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bars {
            overall,
            cell,
            _multi: multi,
            interactive,
        }
    }

    fn log(&self, line: &str) {
        if self.interactive {
            self.overall.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

struct CellBar<'a>(&'a ProgressBar);

impl Progress for CellBar<'_> {
    fn stage(&self, name: &str, total: u64) {
        self.0.set_prefix(name.to_string());
        self.0.set_length(total.max(1));
        self.0.reset();
    }

    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
}

/// Runs the plan's unfinished cells with `runner`, then (optionally) writes the report.
pub fn run(
    knobs: &Knobs,
    cells: &[CellSpec],
    runner: &dyn CellRunner,
    opts: &RunOptions,
) -> Result<RunSummary> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    write_atomic(&opts.out.join("knobs.toml"), knobs.to_toml()?.as_bytes())?;
    let mut summary = RunSummary {
        planned: cells.len(),
        ..RunSummary::default()
    };
    let todo: Vec<&CellSpec> = cells
        .iter()
        .filter(|c| !CellDir::new(&opts.out, c).is_done())
        .collect();
    summary.skipped = cells.len() - todo.len();
    let est_ms = |c: &CellSpec| (cost::estimate(c, &knobs.cost).seconds * 1000.0).round() as u64;
    let total_ms: u64 = todo.iter().map(|c| est_ms(c)).sum();
    let bars = Bars::new(total_ms, todo.len());
    let at_pace = Paces::measure(knobs, cells, &opts.out).map_or_else(String::new, |p| {
        let left = p.seconds_left(todo.iter().map(|c| (c.matrix, est_ms(c) as f64 / 1000.0)));
        format!(
            "; {} at the pace of the {} finished",
            human_duration(left),
            p.overall.cells
        )
    });
    bars.log(&format!(
        "{} cells planned, {} already done, {} to run (estimated {}{at_pace}), runner {}, results in {}",
        cells.len(),
        summary.skipped,
        todo.len(),
        human_duration(total_ms as f64 / 1000.0),
        runner.name(),
        opts.out.display()
    ));
    for (i, cell) in todo.iter().enumerate() {
        if opts.max_cells.is_some_and(|m| summary.ran >= m) {
            break;
        }
        let dir = CellDir::new(&opts.out, cell);
        bars.cell.set_message(cell.label());
        let started = Instant::now();
        dir.begin(cell)?;
        let ctx = CellContext {
            dir: &dir.path,
            knobs,
            progress: &CellBar(&bars.cell),
        };
        let result = runner.run(cell, &ctx).and_then(|outcome: CellOutcome| {
            dir.finish(&outcome)?;
            Ok(outcome)
        });
        bars.overall.inc(est_ms(cell));
        bars.overall
            .set_message(format!("{}/{} cells", i + 1, todo.len()));
        match result {
            Ok(_) => {
                summary.ran += 1;
                bars.log(&format!(
                    "[{}/{}] done in {}: {} ({})",
                    i + 1,
                    todo.len(),
                    human_duration(started.elapsed().as_secs_f64()),
                    cell.label(),
                    cell.id()
                ));
            }
            Err(e) => {
                let _ = dir.fail(&e);
                bars.log(&format!(
                    "[{}/{}] FAILED: {} ({}): {}",
                    i + 1,
                    todo.len(),
                    cell.label(),
                    cell.id(),
                    crate::error_text(&e)
                ));
                summary.failed.push((cell.label(), crate::error_text(&e)));
                if opts.fail_fast {
                    break;
                }
            }
        }
    }
    bars.cell.finish_and_clear();
    bars.overall.finish();
    if opts.report {
        let finished = collect(&opts.out, cells)?;
        let meta = ReportMeta {
            title: format!("preset {}", knobs.preset),
            runner: runner.name().into(),
            planned: cells.len(),
            failed: summary.failed.clone(),
            knobs_toml: knobs.to_toml().ok(),
        };
        let files = report::write_all(&opts.out, &finished, &meta)?;
        bars.log(&format!(
            "wrote {} ({} rows), {} tables, {} plots, {}",
            opts.out.join("results.parquet").display(),
            files.rows,
            files.tables.len() / 2,
            files.plots.len(),
            opts.out.join("report.html").display()
        ));
    }
    Ok(summary)
}

/// The finished cells of a plan, in plan order.
pub fn collect(out: &Path, cells: &[CellSpec]) -> Result<Vec<(CellSpec, CellOutcome)>> {
    cells
        .iter()
        .map(|c| CellDir::new(out, c))
        .filter(|d| d.is_done())
        .map(|d| d.load())
        .collect()
}

/// Gathers the finished cells of several results folders into `out` (cell folders are
/// copied, a cell present in several folders is taken once) and writes the report over
/// all of them.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<(usize, report::ReportFiles)> {
    let target = store::cells_dir(out);
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    for input in inputs {
        let dir = store::cells_dir(input);
        if !dir.is_dir() {
            anyhow::bail!(
                "{}: no `cells` folder (is it a results folder?)",
                input.display()
            );
        }
        if input.canonicalize().ok() == out.canonicalize().ok() {
            continue;
        }
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let src = entry?.path();
            if !src.join("done").is_file() {
                continue;
            }
            let Some(name) = src.file_name() else {
                continue;
            };
            let dst = target.join(name);
            if dst.join("done").is_file() {
                continue;
            }
            copy_cell(&src, &dst)?;
        }
    }
    let cells = store::finished_cells(out)?;
    let meta = ReportMeta {
        title: format!("merged from {} folder(s)", inputs.len()),
        runner: "merged".into(),
        ..ReportMeta::default()
    };
    let files = report::write_all(out, &cells, &meta)?;
    Ok((cells.len(), files))
}

/// Copies a finished cell folder so that the copy's `done` marker appears last.
fn copy_cell(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst).with_context(|| format!("clearing {}", dst.display()))?;
    }
    fn copy_tree(src: &Path, dst: &Path, skip_done: bool) -> Result<()> {
        std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
        for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
            let path = entry?.path();
            let Some(name) = path.file_name() else {
                continue;
            };
            if skip_done && name == "done" {
                continue;
            }
            if path.is_dir() {
                copy_tree(&path, &dst.join(name), false)?;
            } else {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                write_atomic(&dst.join(name), &bytes)?;
            }
        }
        Ok(())
    }
    copy_tree(src, dst, true)?;
    write_atomic(&dst.join("done"), b"done\n")
}
