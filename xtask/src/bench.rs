//! `cargo xtask bench`: the engine and the Python stack (PyTorch + transformers + PEFT) on the
//! same workloads, side by side in one run, written to `docs/performance.md`.
//!
//! Each workload runs in its own child process on both sides, so each peak RSS is its own: the
//! engine through the `sde-bench-worker` binary of `benches/`, the peer through
//! `benches/peer/peer_bench.py` in a virtual environment that this command creates once under
//! the cache root (`$SDE_CACHE_DIR/peer-venv`, about 5.6 GB) with the pinned versions of
//! `benches/peer/requirements.txt`. Both sides load the engine's default model (the GGUF,
//! dequantized to f32), use 2 threads and print one JSON object per workload; every number in
//! the report comes from those objects.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

/// FP32 FMA peak of the project's reference machine (AVX-512, 2 threads), in GFLOP/s, as
/// measured for the peer baseline. A constant: it is not measured by this command.
const REFERENCE_FMA_PEAK_GFLOPS: f64 = 540.0;

/// Weights of the 30 decoder layers' linears of SmolLM2-135M.
const N_BODY: f64 = 30.0 * 3_538_944.0;
/// Weights of the (tied) vocabulary projection.
const N_HEAD: f64 = 576.0 * 49_152.0;
/// LoRA weights (r 8 on the seven projections of every layer).
const N_LORA: f64 = 2_442_240.0;
/// Attention width (heads × head size) and layers.
const ATTN_WIDTH: f64 = 576.0;
const LAYERS: f64 = 30.0;
const LOSS_TOKENS: usize = 32;
const PROMPT_TOKENS: usize = 128;
const NEW_TOKENS: usize = 32;

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// One rep of one step per workload after one warm-up: checks the harness end to end in a
    /// few minutes; the numbers are noisy.
    #[arg(long)]
    quick: bool,
    /// Fresh processes per workload and variant on each side (default 3, `--quick` 1): speed
    /// differs more between processes than between reps of one process, so the median is
    /// taken over every rep of every run.
    #[arg(long)]
    runs: Option<usize>,
    /// Timed reps per process (default 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Run only the workloads whose id contains one of these comma-separated texts (ids:
    /// `train-b4x128`, `train-b8x128`, `train-b4x256`, `train-b8x256`, `decode-b1`, `decode-b8`,
    /// `score-b8`; e.g. `--only train,decode-b1`).
    #[arg(long)]
    only: Option<String>,
    /// Measure the engine only.
    #[arg(long)]
    skip_peer: bool,
    /// Use this engine worker binary instead of building `sde-bench-worker` in release mode
    /// (e.g. one built with other features or profile; the report names it).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// The GGUF to load (default: the engine's default model, fetched when missing).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Python interpreter of the peer (default: the cached venv, created when missing).
    #[arg(long, env = "SDE_PEER_PYTHON")]
    python: Option<PathBuf>,
    /// The Markdown report.
    #[arg(long, default_value = "docs/performance.md")]
    out: PathBuf,
    /// The raw results (every JSON object of both sides).
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// A note printed at the top of the report (e.g. what else ran on the machine).
    #[arg(long)]
    note: Option<String>,
}

/// One workload, run on both sides. `shared` leading tokens are the same in every row (an
/// instruction placed first, in-context demonstrations): the engine runs them once per batch,
/// the peer runs every row in full.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    Train {
        batch: usize,
        seq: usize,
        shared: usize,
    },
    Decode {
        batch: usize,
        shared: usize,
    },
    Score {
        batch: usize,
        shared: usize,
    },
}

impl Workload {
    fn all() -> Vec<Self> {
        let mut out: Vec<Self> = [(4, 128), (8, 128), (4, 256), (8, 256)]
            .into_iter()
            .map(|(batch, seq)| Self::Train {
                batch,
                seq,
                shared: 0,
            })
            .collect();
        out.extend([
            Self::Decode {
                batch: 1,
                shared: 0,
            },
            Self::Decode {
                batch: 8,
                shared: 0,
            },
            Self::Score {
                batch: 8,
                shared: 0,
            },
            // A quarter of each training row is a shared instruction (Inst-first MASA samples
            // are about that); three quarters of each prompt are shared demonstrations (k-shot).
            Self::Train {
                batch: 4,
                seq: 256,
                shared: 64,
            },
            Self::Decode {
                batch: 8,
                shared: 96,
            },
            Self::Score {
                batch: 8,
                shared: 96,
            },
        ]);
        out
    }

    fn shared(&self) -> usize {
        match self {
            Self::Train { shared, .. }
            | Self::Decode { shared, .. }
            | Self::Score { shared, .. } => *shared,
        }
    }

    fn id(&self) -> String {
        let base = match self {
            Self::Train { batch, seq, .. } => format!("train-b{batch}x{seq}"),
            Self::Decode { batch, .. } => format!("decode-b{batch}"),
            Self::Score { batch, .. } => format!("score-b{batch}"),
        };
        match self.shared() {
            0 => base,
            n => format!("{base}-shared{n}"),
        }
    }

    /// Worker arguments: workload name and shape.
    fn args(&self, name: &str) -> Vec<String> {
        let mut v = vec![name.to_string()];
        match self {
            Self::Train { batch, seq, .. } => v.extend([
                "--batch".into(),
                batch.to_string(),
                "--seq".into(),
                seq.to_string(),
            ]),
            Self::Decode { batch, .. } | Self::Score { batch, .. } => {
                v.extend(["--batch".into(), batch.to_string()])
            }
        }
        if self.shared() > 0 {
            v.extend(["--shared".into(), self.shared().to_string()]);
        }
        v
    }

    /// (engine variants, peer variants), each as (worker name, label). The first engine variant
    /// is the reference of the ratios. A `-bf16` variant runs its matmuls in bf16: the
    /// engine's products with the frozen weights, the peer's autocast region.
    #[allow(clippy::type_complexity)]
    fn sides(
        &self,
    ) -> (
        Vec<(&'static str, &'static str)>,
        Vec<(&'static str, &'static str)>,
    ) {
        match self {
            Self::Train { shared, .. } if *shared > 0 => (
                vec![("train", "sde engine (candle), shared prefix run once")],
                vec![
                    ("train", "PEFT LoRA, all logits (the standard recipe)"),
                    ("train-keep", "PEFT LoRA, lm_head on the last 33 positions"),
                ],
            ),
            Self::Train { .. } => (
                vec![
                    ("train", "sde engine (candle)"),
                    (
                        "train-bf16",
                        "sde engine (candle), bf16 products with the frozen weights",
                    ),
                ],
                vec![
                    ("train", "PEFT LoRA, all logits (the standard recipe)"),
                    ("train-keep", "PEFT LoRA, lm_head on the last 33 positions"),
                    ("train-bf16", "PEFT LoRA, all logits, bf16 autocast"),
                    (
                        "train-keep-bf16",
                        "PEFT LoRA, lm_head on the last 33 positions, bf16 autocast",
                    ),
                ],
            ),
            Self::Decode { shared, .. } if *shared > 0 => (
                vec![("decode", "sde engine (candle), f32, shared prefix run once")],
                vec![("decode", "HF generate()")],
            ),
            Self::Decode { .. } => (
                vec![
                    ("decode", "sde engine (candle), f32"),
                    (
                        "decode-q8",
                        "sde engine (candle), quantized layers in decode steps",
                    ),
                    (
                        "decode-q8-all",
                        "sde engine (candle), quantized layers and head in decode steps",
                    ),
                    (
                        "decode-q8-prompts",
                        "sde engine (candle), quantized layers and head in prompts and decode steps",
                    ),
                    (
                        "decode-draft",
                        "sde engine (candle), f32 tokens: quantized layers draft, f32 verifies (speculative)",
                    ),
                ],
                vec![("decode", "HF generate()")],
            ),
            Self::Score { shared, .. } if *shared > 0 => (
                vec![("score", "sde engine (candle), shared prefix run once")],
                vec![
                    ("score", "transformers, all logits"),
                    ("score-keep", "transformers, logits_to_keep=33"),
                ],
            ),
            Self::Score { .. } => (
                vec![
                    ("score", "sde engine (candle)"),
                    (
                        "score-bf16",
                        "sde engine (candle), bf16 products with the frozen weights",
                    ),
                ],
                vec![
                    ("score", "transformers, all logits"),
                    ("score-keep", "transformers, logits_to_keep=33"),
                    ("score-bf16", "transformers, all logits, bf16 autocast"),
                    (
                        "score-keep-bf16",
                        "transformers, logits_to_keep=33, bf16 autocast",
                    ),
                ],
            ),
        }
    }
}

/// The row key of the `i`-th engine variant of a workload: `sde` for the first (the reference
/// of the ratios), `sde-bf16` for the bf16 one, else the worker name. Peer rows are keyed by
/// their variant name, which no engine key equals.
fn engine_side(i: usize, variant: &'static str) -> &'static str {
    match (i, variant.ends_with("-bf16")) {
        (0, _) => "sde",
        (_, true) => "sde-bf16",
        _ => variant,
    }
}

/// Protocol: processes, timed reps per process, calls per rep, warm-up calls.
#[derive(Debug, Clone, Copy)]
struct Protocol {
    runs: usize,
    reps: usize,
    quick: bool,
}

impl Protocol {
    fn flags(&self, w: &Workload) -> Vec<String> {
        let (steps, warmup) = if self.quick {
            (1, 1)
        } else {
            match w {
                Workload::Train { .. } => (10, 2),
                Workload::Decode { .. } => (3, 1),
                Workload::Score { .. } => (5, 2),
            }
        };
        [
            "--reps",
            &self.reps.to_string(),
            "--steps",
            &steps.to_string(),
            "--warmup",
            &warmup.to_string(),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Attention FLOPs per token (QKᵀ and PV) at an average context of `ctx` keys.
fn attn(ctx: f64) -> f64 {
    4.0 * ATTN_WIDTH * ctx * LAYERS
}

/// How much of a batch's work the engine executes when `shared` leading tokens of `batch`
/// rows of `len` are run once: (token-proportional work, attention work), each as a fraction
/// of running every row in full.
fn shared_fractions(batch: usize, len: usize, shared: usize) -> (f64, f64) {
    let (b, l, p) = (batch as f64, len as f64, shared.min(len) as f64);
    let tokens = (p + b * (l - p)) / (b * l);
    let tri = |n: f64| n * (n + 1.0) / 2.0;
    let attention = (tri(p) + b * (tri(l) - tri(p))) / (b * tri(l));
    (tokens, attention)
}

/// Executed FLOPs per token of a LoRA train step at sequence `seq` with the vocabulary
/// projection on `head_positions` of the `seq` positions: the base forward and its activation
/// gradients (no weight gradients), three times the adapters, three times the attention.
/// `(tokens, attention)` scale the work for a shared prefix ([`shared_fractions`]).
fn train_flops_per_token(
    seq: usize,
    head_positions: usize,
    (tokens, attention): (f64, f64),
) -> f64 {
    let s = seq as f64;
    let head = N_HEAD * head_positions as f64 / s;
    2.0 * 2.0 * (N_BODY * tokens + head)
        + 3.0 * 2.0 * N_LORA * tokens
        + 3.0 * attn((s + 1.0) / 2.0) * attention
}

/// Executed FLOPs per token of a forward pass over `seq` tokens with the vocabulary
/// projection on `head_positions` of them, scaled for a shared prefix as above.
fn forward_flops_per_token(
    seq: usize,
    head_positions: usize,
    (tokens, attention): (f64, f64),
) -> f64 {
    let s = seq as f64;
    2.0 * (N_BODY * tokens + N_HEAD * head_positions as f64 / s) + attn((s + 1.0) / 2.0) * attention
}

/// Executed FLOPs of one greedy generation per row: the prefill (logits for the last position)
/// and one forward per new token after the first.
fn generation_flops_per_row(prefill_share: (f64, f64)) -> f64 {
    let prefill = PROMPT_TOKENS as f64 * forward_flops_per_token(PROMPT_TOKENS, 1, prefill_share);
    let steps: f64 = (1..NEW_TOKENS)
        .map(|i| 2.0 * (N_BODY + N_HEAD) + attn((PROMPT_TOKENS + i + 1) as f64))
        .sum();
    prefill + steps
}

/// FLOPs per counted token of one side's run of `w` (`"sde"` for the engine, else the peer
/// variant). Only the engine runs a shared prefix once.
fn flops_per_token(w: &Workload, variant: &str) -> f64 {
    const FULL: (f64, f64) = (1.0, 1.0);
    match (w, variant) {
        (Workload::Train { seq, .. }, "train") => train_flops_per_token(*seq, *seq, FULL),
        (Workload::Train { seq, .. }, "train-keep") => {
            train_flops_per_token(*seq, LOSS_TOKENS + 1, FULL)
        }
        (Workload::Train { batch, seq, shared }, _) => {
            train_flops_per_token(*seq, LOSS_TOKENS, shared_fractions(*batch, *seq, *shared))
        }
        (Workload::Score { .. }, "score") => {
            forward_flops_per_token(PROMPT_TOKENS + NEW_TOKENS, PROMPT_TOKENS + NEW_TOKENS, FULL)
        }
        (Workload::Score { .. }, "score-keep") => {
            forward_flops_per_token(PROMPT_TOKENS + NEW_TOKENS, NEW_TOKENS + 1, FULL)
        }
        (Workload::Score { batch, shared }, _) => {
            let len = PROMPT_TOKENS + NEW_TOKENS;
            forward_flops_per_token(len, NEW_TOKENS, shared_fractions(*batch, len, *shared))
        }
        (Workload::Decode { batch, shared }, "sde") => {
            generation_flops_per_row(shared_fractions(*batch, PROMPT_TOKENS, *shared))
                / NEW_TOKENS as f64
        }
        (Workload::Decode { .. }, _) => generation_flops_per_row(FULL) / NEW_TOKENS as f64,
    }
}

/// A worker result's bf16 fidelity check, where it ran one.
fn bf16_vs_f32(result: &Value) -> Option<Value> {
    result.get("bf16_vs_f32").filter(|x| !x.is_null()).cloned()
}

/// Median, min and max of tokens/s over the reps of one result object.
fn rates(result: &Value) -> Option<(f64, f64, f64)> {
    let tokens = result.get("tokens_per_rep")?.as_f64()?;
    let mut r: Vec<f64> = result
        .get("rep_seconds")?
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .map(|s| tokens / s)
        .collect();
    if r.is_empty() {
        return None;
    }
    r.sort_by(f64::total_cmp);
    Some((median(&r), r[0], r[r.len() - 1]))
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The median of `x` in any order; `None` when it is empty.
fn median_of_values(mut x: Vec<f64>) -> Option<f64> {
    if x.is_empty() {
        return None;
    }
    x.sort_by(f64::total_cmp);
    Some(median(&x))
}

fn median_of(v: &Value, key: &str) -> Option<f64> {
    median_of_values(
        v.get(key)?
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .collect(),
    )
}

/// The largest of the numbers under `key` (an array) of `v`.
fn max_of(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?
        .as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .reduce(f64::max)
}

/// Runs `cmd`, returning the JSON object on the last line of its stdout; on failure the error
/// carries the end of its stderr.
fn run_json(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what}: exited with {}\n{}", out.status, tail.join("\n"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what}: no JSON on stdout"))?;
    serde_json::from_str(line).with_context(|| format!("{what}: bad JSON {line}"))
}

/// Timed reps of the matmul, FMA and bf16 peak measures (one process each).
const PEAK_REPS: usize = 3;

/// Reps of the FMA probe run before and after each workload run (its highest is the probe's
/// value): a fraction of a second each.
const PROBE_REPS: usize = 3;

/// The FMA probes taken around each job's runs: `probes[i]` was taken just before run slot
/// `i` and `probes[i + 1]` just after it, `slots[i]` being the job that ran there; a failed
/// probe is `None`.
fn probes_around(slots: &[usize], probes: &[Option<f64>], jobs: usize) -> Vec<Vec<f64>> {
    let mut around = vec![Vec::new(); jobs];
    for (i, &job) in slots.iter().enumerate() {
        for p in [i, i + 1] {
            if let Some(Some(v)) = probes.get(p) {
                around[job].push(*v);
            }
        }
    }
    around
}

/// One variant of one side of a workload: its worker arguments and the results of its runs
/// so far (each in a fresh process); after an error it runs no more.
struct Job {
    engine: bool,
    side: &'static str,
    variant: &'static str,
    label: &'static str,
    args: Vec<String>,
    results: Vec<Value>,
    error: Option<anyhow::Error>,
}

impl Job {
    fn new(
        engine: bool,
        side: &'static str,
        variant: &'static str,
        label: &'static str,
        args: Vec<String>,
    ) -> Self {
        Self {
            engine,
            side,
            variant,
            label,
            args,
            results: Vec::new(),
            error: None,
        }
    }
}

/// One result object for several runs of the same worker: `rep_seconds` (and generation's
/// `prompt_seconds`) of every run in one list (per run in `run_rep_seconds`), the highest
/// `peak_rss_mib`, and the rest (fidelity checks, which are deterministic) from the first run.
fn merge_runs(results: Vec<Value>) -> Value {
    let mut iter = results.into_iter();
    let Some(mut merged) = iter.next() else {
        return Value::Null;
    };
    let mut per_run = vec![merged["rep_seconds"].clone()];
    for r in iter {
        for key in ["rep_seconds", "prompt_seconds"] {
            if let (Some(all), Some(more)) = (
                merged.get_mut(key).and_then(Value::as_array_mut),
                r[key].as_array(),
            ) {
                all.extend(more.iter().cloned());
            }
        }
        if let Some(rss) = r["peak_rss_mib"].as_f64()
            && merged["peak_rss_mib"].as_f64().is_none_or(|m| rss > m)
        {
            merged["peak_rss_mib"] = json!(rss);
        }
        per_run.push(r["rep_seconds"].clone());
    }
    merged["runs"] = json!(per_run.len());
    merged["run_rep_seconds"] = Value::Array(per_run);
    merged
}

/// Builds the engine's worker in release mode and returns its path.
fn build_worker(root: &Path) -> Result<PathBuf> {
    eprintln!("building sde-bench-worker (release)...");
    let out = crate::cargo_command()
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "sde-benches",
            "--bin",
            "sde-bench-worker",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building sde-bench-worker failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"]["name"] == "sde-bench-worker")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the sde-bench-worker executable")
}

/// The peer's Python: `explicit`, else the cached venv, created and filled on first use.
fn peer_python(root: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let requirements = root.join("benches/peer/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let venv = sde_engine::cache_dir().join("peer-venv");
    let python = venv.join("bin/python");
    let marker = venv.join("sde-requirements.txt");
    if std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted) && python.is_file() {
        return Ok(python);
    }
    if !python.is_file() {
        eprintln!("creating the peer venv at {}...", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("cannot run python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    eprintln!(
        "installing the peer's packages into {} (about 5.6 GB, once)...",
        venv.display()
    );
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .status()
        .context("cannot run pip")?;
    if !status.success() {
        bail!("pip install -r {} failed", requirements.display());
    }
    std::fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(python)
}

/// CPU time so far in seconds: (all CPUs busy, this process and its waited-for children).
/// The difference over the run is what other processes took from the benchmark.
fn cpu_times() -> Option<(f64, f64)> {
    let hz = 100.0; // USER_HZ: the unit of /proc/stat and /proc/self/stat on Linux
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<f64> = own
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // After the command name: state ppid ... utime(14) stime(15) cutime(16) cstime(17),
    // counted from field 3 (state, not numeric, so skipped by the parse filter).
    let mine: f64 = fields.get(10..14)?.iter().sum();
    Some((busy / hz, mine / hz))
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Writes `text` to `path` atomically.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// New tokens/s of a generation result's decode steps alone: each generation of
/// `NEW_TOKENS` (at `tok_s`) less the median generation of one new token (the prompt pass,
/// which yields the first), over the other `NEW_TOKENS - 1` tokens.
fn decode_steps_rate(v: &Value, tok_s: f64) -> Option<f64> {
    let prompt = median_of(v, "prompt_seconds")?;
    let per_generation = v["tokens_per_rep"].as_f64()? / v["steps_per_rep"].as_f64()?;
    let steps_time = per_generation / tok_s - prompt;
    let steps_tokens = per_generation * (NEW_TOKENS - 1) as f64 / NEW_TOKENS as f64;
    (steps_time > 0.0).then(|| steps_tokens / steps_time)
}

/// The formats a decode worker reports for the layers' quantized weights.
fn drafts_kept(v: &Value) -> Option<f64> {
    let proposed = v["drafts_proposed"].as_f64().filter(|p| *p > 0.0)?;
    Some(v["drafts_kept"].as_f64()? / proposed)
}

fn quantized_layers(v: &Value) -> Vec<String> {
    v["quantized_layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes a quantized format stores per weight, in GGML blocks of 32 (Q8_0: 32 bytes and an f16
/// scale; Q4_1: 16 bytes of nibbles, an f16 scale and an f16 minimum).
fn bytes_per_weight(format: &str) -> Option<f64> {
    match format {
        "Q8_0" => Some(34.0 / 32.0),
        "Q4_1" => Some(20.0 / 32.0),
        _ => None,
    }
}

/// The weight bytes one decode step reads for a generation row (both sides): every layer
/// weight and the output head once. The engine's greedy decoding reads its head in Q8_0
/// either way (a Q8_0 head, or the f32 head's Q8_0 screen, whose few f32 rows a step reads
/// besides are left out); the peer's reads it in f32. `None` where the row's layer formats
/// are unknown.
fn decode_step_bytes(row: &Row) -> Option<f64> {
    const F32: f64 = 4.0;
    let quantized = row.side.starts_with("decode-q8");
    let layers = match row.quantized_layers.as_slice() {
        [] if !quantized => F32,
        [one] if quantized => bytes_per_weight(one)?,
        _ => return None,
    };
    let head = if row.engine {
        bytes_per_weight("Q8_0")?
    } else {
        F32
    };
    Some(N_BODY * layers + N_HEAD * head)
}

/// One measured row of the report.
struct Row {
    side: &'static str,
    /// An engine row (its peak is the engine's matmul).
    engine: bool,
    tool: String,
    tok_s: f64,
    min: f64,
    max: f64,
    gflops: f64,
    rss: Option<f64>,
    /// Quantized decode rows: the share of the f32 greedy tokens reproduced before the first
    /// divergence, on the same prompts.
    agreement: Option<f64>,
    /// Quantized decode rows: the formats of the layers' quantized weights (the worker's
    /// `quantized_layers`).
    quantized_layers: Vec<String>,
    /// Speculative decode rows: the share of the drafts that f32 verification kept, over
    /// all timed generations.
    drafts_kept: Option<f64>,
    /// bf16 rows (both sides): how far the bf16 pass is from the f32 one on the same input
    /// and weights (the workers' `bf16_vs_f32`).
    bf16_vs_f32: Option<Value>,
    /// Generation rows: new tokens/s of the decode steps alone, without the prompt pass.
    steps_tok_s: Option<f64>,
    /// The median of the FMA probes (GFLOP/s) taken just before and after this row's runs.
    fma_around: Option<f64>,
}

impl Row {
    /// Whether this row's matmuls ran in bf16.
    fn bf16(&self) -> bool {
        self.side.ends_with("-bf16")
    }
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let root = std::env::current_dir()?;
    let protocol = Protocol {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        reps: args.reps.unwrap_or(1).max(1),
        quick: args.quick,
    };
    let gguf = match &args.gguf {
        Some(p) => p.clone(),
        None => sde_engine::default_model_path().context("resolving the default model")?,
    };
    let gguf_arg = gguf.to_string_lossy().into_owned();
    let worker = match &args.worker {
        Some(w) => w.clone(),
        None => build_worker(&root)?,
    };
    // Right after the build, so that the commit named is the code built (edits made later,
    // while the peer's venv is checked, do not count).
    let commit = crate::orchestrate::git_output(&root, &["describe", "--always", "--dirty"]);
    let python = if args.skip_peer {
        None
    } else {
        Some(peer_python(&root, args.python.as_deref())?)
    };
    let peer_script = root.join("benches/peer/peer_bench.py");
    let load_start = load_average();
    let cpu_start = cpu_times();
    let started = std::time::SystemTime::now();
    let selected = |w: &Workload| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|part| w.id().contains(part.trim())))
    };
    let workloads: Vec<Workload> = Workload::all().into_iter().filter(selected).collect();

    let sde_cmd = |a: &[String]| {
        let mut c = Command::new(&worker);
        c.args(a).env("RAYON_NUM_THREADS", "2");
        c
    };
    let peer_cmd = |py: &Path, a: &[String]| {
        let mut c = Command::new(py);
        c.arg(&peer_script)
            .args(a)
            .env("OMP_NUM_THREADS", "2")
            .env("TOKENIZERS_PARALLELISM", "false")
            .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            .env("TRANSFORMERS_VERBOSITY", "error");
        c
    };

    let peer_runs = |w: &Workload| {
        if python.is_some() {
            w.sides().1.len()
        } else {
            0
        }
    };
    let runs = 3
        + usize::from(python.is_some())
        + workloads
            .iter()
            .map(|w| w.sides().0.len() + peer_runs(w))
            .sum::<usize>();
    let pb = indicatif::ProgressBar::new(runs as u64).with_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} [{elapsed_precise}] {wide_msg}")?,
    );
    let report_err = |e: &anyhow::Error| pb.println(crate::error_text(e));
    pb.set_message("matmul peak (f32 2048^3)");
    let reps = ["--reps".to_string(), PEAK_REPS.to_string()];
    let sde_matmul = run_json(
        sde_cmd(&[&["matmul".to_string()][..], &reps].concat()),
        "engine matmul",
    )
    .inspect_err(report_err)
    .ok();
    pb.inc(1);
    let peer_matmul = match &python {
        Some(py) => run_json(
            peer_cmd(py, &[&["matmul".to_string()][..], &reps].concat()),
            "peer matmul",
        )
        .inspect_err(report_err)
        .ok(),
        None => None,
    };
    if python.is_some() {
        pb.inc(1);
    }
    pb.set_message("FMA peak (FMA chains, 2 threads)");
    let fma_cmd = || sde_cmd(&[&["fma".to_string()][..], &reps].concat());
    let fma = run_json(fma_cmd(), "FMA peak").inspect_err(report_err).ok();
    pb.inc(1);
    // The machine's speed just before and after each workload run: other guests on the same
    // cores slow the runs and these probes alike.
    let probe = || {
        let args = [
            "fma-probe".to_string(),
            "--reps".into(),
            PROBE_REPS.to_string(),
        ];
        run_json(sde_cmd(&args), "FMA probe")
            .inspect_err(report_err)
            .ok()
            .and_then(|v| max_of(&v, "gflops"))
    };
    let bf16_peak = fma.as_ref().and_then(|v| max_of(v, "bf16_gflops"));
    let fma_isa = fma
        .as_ref()
        .and_then(|v| v.get("isa"))
        .and_then(Value::as_str)
        .unwrap_or("vector")
        .to_string();
    // The engine's bf16 products need AVX512-BF16; without it neither side's bf16 rows run
    // (there would be nothing to compare the peer's with).
    let bf16_cpu = bf16_peak.is_some();
    if !bf16_cpu {
        pb.println("bf16 rows skipped: this CPU lacks AVX512-BF16");
    }
    let sde_peak = sde_matmul.as_ref().and_then(|v| median_of(v, "gflops"));
    let sde_own_matmul = sde_matmul
        .as_ref()
        .filter(|v| v.get("kernel").and_then(|k| k.as_str()) == Some("sgemm"))
        .map(|v| {
            v.get("sgemm_isa")
                .and_then(|k| k.as_str())
                .unwrap_or("AVX2")
                .to_string()
        });
    let peer_peak = peer_matmul.as_ref().and_then(|v| median_of(v, "gflops"));

    let mut raw = Vec::new();
    let mut table: Vec<(Workload, Vec<Row>)> = Vec::new();
    for w in &workloads {
        let (engine_variants, peer_variants) = w.sides();
        // Every variant of both sides, run in turn once per run: a drift of the machine's
        // speed over the minutes a workload takes then reaches both sides alike.
        let runs_here = |variant: &str| bf16_cpu || !variant.ends_with("-bf16");
        let worker_args = |variant: &str| {
            let mut args = w.args(variant);
            args.extend(protocol.flags(w));
            args.extend(["--gguf".into(), gguf_arg.clone()]);
            args
        };
        let mut jobs: Vec<Job> = Vec::new();
        for (i, (variant, label)) in engine_variants.into_iter().enumerate() {
            if runs_here(variant) {
                let args = worker_args(variant);
                jobs.push(Job::new(
                    true,
                    engine_side(i, variant),
                    variant,
                    label,
                    args,
                ));
            }
        }
        if python.is_some() {
            for (variant, label) in peer_variants.into_iter().filter(|(v, _)| runs_here(v)) {
                jobs.push(Job::new(
                    false,
                    variant,
                    variant,
                    label,
                    worker_args(variant),
                ));
            }
        }
        let (mut probes, mut slots) = (vec![probe()], Vec::new());
        for run in 0..protocol.runs {
            for (j, job) in jobs
                .iter_mut()
                .enumerate()
                .filter(|(_, j)| j.error.is_none())
            {
                let who = if job.engine { "engine" } else { "peer" };
                pb.set_message(format!(
                    "{}: {who} {} (run {} of {})",
                    w.id(),
                    job.variant,
                    run + 1,
                    protocol.runs
                ));
                let cmd = match (&python, job.engine) {
                    (_, true) => sde_cmd(&job.args),
                    (Some(py), false) => peer_cmd(py, &job.args),
                    (None, false) => unreachable!("peer jobs exist only with a peer"),
                };
                let what = format!(
                    "{who} {} {} (run {} of {})",
                    job.variant,
                    w.id(),
                    run + 1,
                    protocol.runs
                );
                match run_json(cmd, &what) {
                    Ok(v) => job.results.push(v),
                    Err(e) => {
                        report_err(&e);
                        job.error = Some(e);
                    }
                }
                slots.push(j);
                probes.push(probe());
            }
        }
        let around = probes_around(&slots, &probes, jobs.len());
        let mut rows = Vec::new();
        for (job, around) in jobs.into_iter().zip(around) {
            let side_name = if job.engine { "sde" } else { "peer" };
            if let Some(e) = &job.error {
                raw.push(json!({"side": side_name, "variant": job.variant, "id": w.id(), "error": crate::error_text(e)}));
                continue;
            }
            let v = merge_runs(job.results);
            if let Some((tok_s, min, max)) = rates(&v) {
                let flops_variant = if job.engine {
                    "sde"
                } else {
                    job.variant.trim_end_matches("-bf16")
                };
                rows.push(Row {
                    side: job.side,
                    engine: job.engine,
                    tool: job.label.into(),
                    tok_s,
                    min,
                    max,
                    gflops: tok_s * flops_per_token(w, flops_variant) / 1e9,
                    rss: v["peak_rss_mib"].as_f64(),
                    agreement: v["agreement_with_f32"].as_f64(),
                    quantized_layers: if job.engine {
                        quantized_layers(&v)
                    } else {
                        Vec::new()
                    },
                    bf16_vs_f32: bf16_vs_f32(&v),
                    drafts_kept: drafts_kept(&v),
                    steps_tok_s: decode_steps_rate(&v, tok_s),
                    fma_around: median_of_values(around.clone()),
                });
            }
            raw.push(json!({"side": side_name, "variant": job.variant, "id": w.id(), "result": v, "fma_probes_around": around}));
        }
        table.push((*w, rows));
        pb.inc((w.sides().0.len() + peer_runs(w)) as u64);
    }
    // The FMA peak again after the workloads: other load on the machine only ever lowers it,
    // so the highest rep of both measurements is the peak.
    pb.set_message("FMA peak again (FMA chains, 2 threads)");
    let fma_end = run_json(fma_cmd(), "FMA peak at the end")
        .inspect_err(report_err)
        .ok();
    let fma_peak = [&fma, &fma_end]
        .into_iter()
        .filter_map(|v| v.as_ref().and_then(|v| max_of(v, "gflops")))
        .reduce(f64::max);
    let read_bandwidth = [&fma, &fma_end]
        .into_iter()
        .filter_map(|v| v.as_ref().and_then(|v| max_of(v, "read_gbs")))
        .reduce(f64::max);
    pb.finish_and_clear();
    let load_end = load_average();
    let cpu_end = cpu_times();
    let wall = started.elapsed().map_or(0.0, |d| d.as_secs_f64());
    // CPU seconds other processes used during the run, as a share of the run's wall time on
    // all cores.
    let others = cpu_start.zip(cpu_end).map(|((b0, m0), (b1, m1))| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (((b1 - b0) - (m1 - m0)).max(0.0) / (wall * cores).max(1e-9)).min(1.0)
    });
    let peer_versions = raw
        .iter()
        .find_map(|r| r["result"].get("versions").cloned());

    let all = json!({
        "engine_matmul": sde_matmul, "peer_matmul": peer_matmul, "fma": fma, "fma_end": fma_end, "workloads": raw,
        "load_average_start": load_start, "load_average_end": load_end, "other_processes_cpu_share": others, "quick": args.quick, "runs": protocol.runs, "reps": protocol.reps,
    });
    write_atomic(&args.json, &serde_json::to_string_pretty(&all)?)?;

    let md = render(&Report {
        args,
        protocol,
        table: &table,
        sde_peak,
        sde_own_matmul,
        peer_peak,
        fma_peak,
        fma_isa,
        bf16_peak,
        read_bandwidth,
        load: (load_start, load_end),
        others,
        started,
        commit,
        peer_versions,
        gguf: &gguf,
    });
    write_atomic(&args.out, &md)?;
    eprintln!("wrote {} and {}", args.out.display(), args.json.display());
    Ok(())
}

struct Report<'a> {
    args: &'a BenchArgs,
    protocol: Protocol,
    table: &'a [(Workload, Vec<Row>)],
    sde_peak: Option<f64>,
    /// The instruction set of the engine's own f32 kernel (`sgemm`) where it runs on this
    /// CPU (`AVX2`, `AVX-512`).
    sde_own_matmul: Option<String>,
    peer_peak: Option<f64>,
    /// Measured FP32 FMA throughput (the widest FMA chains the CPU runs, on 2 threads).
    fma_peak: Option<f64>,
    /// The vector extension of the FMA chains (`AVX-512`, `AVX2` or `scalar`).
    fma_isa: String,
    /// Measured bf16 dot-product throughput (`vdpbf16ps` chains on 2 threads), where the CPU
    /// has AVX512-BF16.
    bf16_peak: Option<f64>,
    /// Measured memory read bandwidth in GB/s (2 threads summing a 512 MiB buffer).
    read_bandwidth: Option<f64>,
    load: (Option<f64>, Option<f64>),
    /// Share of the CPUs other processes used during the run.
    others: Option<f64>,
    started: std::time::SystemTime,
    /// The checkout's commit once the worker is built (`git describe --always --dirty`), where
    /// git runs.
    commit: Option<String>,
    peer_versions: Option<Value>,
    gguf: &'a Path,
}

/// A row's FMA probes' median, and for an f32 row its executed GFLOP/s as a share of it.
fn fma_around(row: &Row) -> String {
    match row.fma_around {
        None => "–".into(),
        Some(p) if row.bf16() => format!("{p:.0}"),
        Some(p) => format!("{p:.0} ({:.0}%)", 100.0 * row.gflops / p),
    }
}

/// The section on generation at batch 1 against the measured memory read bandwidth.
fn render_bandwidth(s: &mut String, r: &Report<'_>) {
    let Some(bw) = r.read_bandwidth else { return };
    let Some((w, rows)) = r.table.iter().find(|(w, _)| {
        matches!(
            w,
            Workload::Decode {
                batch: 1,
                shared: 0
            }
        )
    }) else {
        return;
    };
    let _ = writeln!(
        s,
        "\n## Generation at batch 1 and memory bandwidth\n\nA decode step at batch 1 reads every weight once, so memory, not FLOPs, bounds it (the KV cache, at most 7.4 MB at these lengths, is left out). The ceiling is the measured read bandwidth ({bw:.1} GB/s: 2 threads summing a 512 MiB buffer, the highest rep before and after the workloads) over the weight bytes a step reads. The rows of `{}` above also count each generation's {PROMPT_TOKENS}-token prompt pass; \"decode steps\" leaves it out (each generation less the median generation of one new token, over the other {} tokens).\n\n| tool | weights read per new token (MB) | ceiling (new tokens/s) | whole generation | decode steps | decode steps, % of ceiling |\n|---|---|---|---|---|---|",
        w.id(),
        NEW_TOKENS - 1
    );
    let mut f32_ceiling = None;
    let mut above_ceiling = false;
    for row in rows {
        let Some(bytes) = decode_step_bytes(row) else {
            continue;
        };
        let ceiling = bw * 1e9 / bytes;
        if row.side == "sde" {
            f32_ceiling = Some(ceiling);
        }
        above_ceiling |= row.steps_tok_s.is_some_and(|x| x > ceiling);
        let _ = writeln!(
            s,
            "| {} | {:.1} | {ceiling:.1} | {:.1} | {} | {} |",
            row.tool,
            bytes / 1e6,
            row.tok_s,
            fmt_opt(row.steps_tok_s, 1),
            row.steps_tok_s
                .map_or("–".into(), |x| format!("{:.0}%", 100.0 * x / ceiling))
        );
    }
    if above_ceiling {
        let _ = writeln!(
            s,
            "\nAbove 100%, part of the weights stayed in the CPU's last-level cache from one step to the next: the ceiling counts every byte from memory."
        );
    }
    let peer = rows.iter().find(|row| row.side == "decode");
    if let Some((peer, ceiling)) = peer.zip(f32_ceiling) {
        let goal = 4.0 * peer.tok_s;
        let _ = writeln!(
            s,
            "\nFour times HF generate() in f32 is {goal:.1} new tokens/s: {} the ceiling of the engine's f32 decoding (f32 layers, the output head read through its Q8_0 screen) of {ceiling:.1}{}. Speculative decoding is not bound by it: its f32 pass reads the weights once per round of several tokens (its row is left out of this table, its drafts reading Q4_1 weights and its rounds f32 ones).",
            if goal > ceiling { "above" } else { "within" },
            if goal > ceiling {
                ", out of reach of f32 layers read once per token on this machine"
            } else {
                ""
            }
        );
    }
}

/// `YYYY-MM-DD HH:MM` of a Unix time (civil-from-days, proleptic Gregorian).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn render(r: &Report<'_>) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Performance: the engine and the Python stack, side by side\n"
    );
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench{}` (do not edit by hand: rerun it). Every number below was measured in that one run; none is typed in.\n",
        if r.args.quick { " --quick" } else { "" }
    );
    if let Some(note) = &r.args.note {
        let _ = writeln!(s, "> **Note:** {note}\n");
    }
    // The load average counts the benchmark itself; what matters is the CPU time other
    // processes took during the run.
    if let Some(share) = r.others.filter(|s| *s > 0.05) {
        let _ = writeln!(
            s,
            "> **The machine was busy during this run**: other processes used {:.0}% of the {cores} cores' time while it ran (1-minute load average {} at the start, {} at the end); the numbers are not representative, rerun on a quiet machine.\n",
            100.0 * share,
            fmt_opt(r.load.0, 2),
            fmt_opt(r.load.1, 2)
        );
    }
    if r.args.quick {
        let _ = writeln!(
            s,
            "> **Quick run**: one rep of one step (generation, scoring pass) per workload after one warm-up; the spreads mean nothing.\n"
        );
    }
    let secs = r
        .started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(s, "## Setup\n");
    if let Some(share) = r.others {
        let _ = writeln!(
            s,
            "- Other processes used {:.1}% of the cores' time during the run.",
            100.0 * share
        );
    }
    let _ = writeln!(
        s,
        "- Started {} UTC; {} ({cores} cores visible); 2 threads on both sides.",
        utc(secs),
        cpu_model()
    );
    if let Some(commit) = &r.commit {
        let _ = writeln!(
            s,
            "- Source: commit `{commit}`{}.",
            if commit.ends_with("-dirty") {
                " (with uncommitted changes)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "- Model: `{}`, dequantized to f32 on both sides.",
        r.gguf.display()
    );
    let _ = writeln!(
        s,
        "- Peer: {}; eager, sdpa, `torch.set_num_threads(2)` (`benches/peer/peer_bench.py`).",
        r.peer_versions.as_ref().map_or_else(
            || "not run".to_string(),
            |v| {
                v.as_object().map_or_else(String::new, |o| {
                    o.iter()
                        .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
            }
        )
    );
    match &r.args.worker {
        None => {
            let _ = writeln!(
                s,
                "- Engine: `sde-bench-worker` (release, the workspace's `target-cpu=native`), candle with the gemm backend{}.",
                match r.sde_own_matmul.as_deref() {
                    Some("AVX2") => "; the projections' f32 products in the engine's own AVX2 kernel (`sgemm`: this CPU has AVX2 and FMA but not AVX-512), frozen weights packed for it once".to_string(),
                    Some(isa) => format!("; the f32 products with the frozen weights (`x Wᵀ` in training's forward and all of inference, `dy W` in training's backward, the output head's too) in the engine's own {isa} kernel (`sgemm`), the weights packed for it once per orientation; greedy decoding's f32 output head read through its Q8_0 screen (the f32 head's tokens, `screen.rs`); the attention heads' products in the gemm crate's"),
                    None => String::new(),
                }
            );
        }
        Some(w) => {
            let _ = writeln!(
                s,
                "- Engine: the worker binary `{}` given with `--worker` (not the default release build).",
                w.display()
            );
        }
    }
    let mut formats: Vec<&str> = Vec::new();
    for row in r.table.iter().flat_map(|(_, rows)| rows) {
        for f in &row.quantized_layers {
            if !formats.contains(&f.as_str()) {
                formats.push(f);
            }
        }
    }
    if !formats.is_empty() {
        let _ = writeln!(
            s,
            "- Quantized decode rows: layer weights in {}{}; the output head, where a row says so, in Q8_0; inputs quantized to 8 bits in blocks of 32.",
            formats.join(" and "),
            if formats.contains(&"Q4_1") {
                " (Q4_1: the GGUF's own 4-bit values, kept as they are where the CPU has AVX-512 VNNI or AVX2)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "- Protocol: each workload and variant runs in {} fresh process(es) of {} timed rep(s) on each side, the variants of both sides taking turns run by run (speed varies more between processes than between reps of one process, and drifts over minutes); tokens/s is the median over all of them, min and max included; {}; peak RSS is the highest VmHWM of the runs during the timed part (reset after the model loaded).",
        r.protocol.runs,
        r.protocol.reps,
        if r.protocol.quick {
            "each rep is 1 call after 1 warm-up".to_string()
        } else {
            "train: 10 steps after 2 warm-ups; generation: 3 generations after 1 warm-up; scoring: 5 passes after 2 warm-ups".to_string()
        }
    );
    let _ = writeln!(
        s,
        "- Workloads: LoRA r 8, alpha 16, dropout 0 on q, k, v, o, gate, up, down; AdamW 1e-4; loss on the last 32 tokens of each row; random token ids. Generation: greedy, 128-token prompts, exactly 32 new tokens. Scoring: 128 + 32 tokens, the 32 scored.\n"
    );

    let _ = writeln!(s, "## Matmul peak (f32, 2048³, 2 threads)\n");
    let _ = writeln!(s, "| | GFLOP/s |\n|---|---|");
    let _ = writeln!(
        s,
        "| engine matmul ({}), measured | {} |",
        match r.sde_own_matmul.as_deref() {
            Some(isa) => format!("its {isa} kernel, `sgemm`, right operand packed beforehand"),
            None => "candle".to_string(),
        },
        fmt_opt(r.sde_peak, 1)
    );
    let _ = writeln!(
        s,
        "| torch matmul, measured | {} |",
        fmt_opt(r.peer_peak, 1)
    );
    let _ = writeln!(
        s,
        "| FP32 FMA peak, measured (12 independent {} FMA chains per thread, 2 threads; the highest rep, before and after the workloads) | {} |",
        r.fma_isa,
        fmt_opt(r.fma_peak, 1)
    );
    let _ = writeln!(
        s,
        "| FP32 FMA peak of the issue's reference machine (Zen 5, full-width AVX-512), for comparison | {REFERENCE_FMA_PEAK_GFLOPS:.0} |"
    );
    match r.bf16_peak {
        Some(p) => {
            let _ = writeln!(
                s,
                "| bf16 dot-product peak, measured (12 independent `vdpbf16ps` chains per thread, f32 sums, 2 threads) | {p:.1} |\n"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "\nThis CPU lacks AVX512-BF16: the engine's bf16 products do not run here, so neither side's bf16 rows were measured.\n"
            );
        }
    }
    let fma_peak = r.fma_peak.unwrap_or(REFERENCE_FMA_PEAK_GFLOPS);

    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(
        s,
        "tokens/s counts every token of the batch (batch × sequence) for training and scoring, and new tokens for generation. Executed GFLOP/s = tokens/s × the FLOPs each side actually runs per token (matmuls and attention; a LoRA step counts the base forward and activation gradients, no base weight gradients; the engine projects to the vocabulary only at the loss positions). \"sde ÷ this\" divides the engine's row of the same precision (f32 or bf16) by this row. \"% matmul peak\" divides by the same side's measured 2048³ matmul; \"% FMA peak\" by the measured FMA peak ({fma_peak:.0}), and for the bf16 rows by the measured bf16 dot-product peak ({}), where both are undefined for f32 matmuls. A bf16 row runs the same FLOPs as its f32 row, in bf16: the engine only its products with the frozen weights (f32 elsewhere), the peer everything under `torch.autocast`. \"FMA rate around its runs\" is how fast the machine was while the row ran: the same FMA chains as the FMA peak (in a process of their own, {PROBE_REPS} reps, the highest kept) just before and just after each of the row's runs, the median of those probes, and in brackets the row's executed GFLOP/s as a share of it (f32 rows). Other guests on the same physical cores slow a row and its probes alike; the FMA peak is the highest of all measures.\n",
        fmt_opt(r.bf16_peak, 0)
    );
    let _ = writeln!(
        s,
        "| workload | tool | median tok/s | min..max | sde ÷ this | executed GFLOP/s | % matmul peak | % FMA peak | FMA rate around its runs | peak RSS MiB |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for (w, rows) in r.table {
        let engine = |side: &str| rows.iter().find(|x| x.side == side).map(|x| x.tok_s);
        for row in rows {
            let sde = engine(if row.bf16() { "sde-bf16" } else { "sde" });
            let peak = match (row.bf16(), row.engine) {
                (true, _) => None,
                (false, true) => r.sde_peak,
                (false, false) => r.peer_peak,
            };
            let unit_peak = if row.bf16() {
                r.bf16_peak
            } else {
                Some(fma_peak)
            };
            let ratio = if row.engine {
                "".to_string()
            } else {
                sde.map_or("–".into(), |v| format!("{:.2}×", v / row.tok_s))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1}..{:.1} | {} | {:.1} | {} | {} | {} | {} |",
                w.id(),
                row.tool,
                row.tok_s,
                row.min,
                row.max,
                ratio,
                row.gflops,
                peak.map_or("–".into(), |p| format!("{:.0}%", 100.0 * row.gflops / p)),
                unit_peak.map_or("–".into(), |p| format!("{:.0}%", 100.0 * row.gflops / p)),
                fma_around(row),
                fmt_opt(row.rss, 0)
            );
        }
        if rows.is_empty() {
            let _ = writeln!(
                s,
                "| {} | (failed: see the command's log) | | | | | | | | |",
                w.id()
            );
        }
    }

    render_bandwidth(&mut s, r);

    let fidelity: Vec<String> = r
        .table
        .iter()
        .flat_map(|(w, rows)| {
            rows.iter().filter_map(move |row| {
                row.agreement.map(|a| {
                    format!(
                        "| {} | {} | {:.1}% | {} |",
                        w.id(),
                        row.tool,
                        100.0 * a,
                        row.drafts_kept
                            .map_or("–".into(), |k| format!("{:.1}%", 100.0 * k))
                    )
                })
            })
        })
        .collect();
    if !fidelity.is_empty() {
        let _ = writeln!(
            s,
            "\n## Quantized decode fidelity\n\nThe share of the engine's f32 greedy tokens that each quantized variant reproduces before its first divergence, on the same prompts (an untimed run of its own; one early flip at a thin margin costs the rest of the row). Speculative decoding keeps f32 greedy decoding's tokens by construction (up to the float summation order of an f32 pass over several positions); \"drafts kept\" is the share of its quantized drafts that the f32 pass confirmed in the timed runs.\n\n| workload | variant | tokens as f32 | drafts kept |\n|---|---|---|---|\n{}",
            fidelity.join("\n")
        );
    }

    let bf16_fidelity: Vec<String> = r
        .table
        .iter()
        .flat_map(|(w, rows)| {
            rows.iter().filter_map(move |row| {
                let f = row.bf16_vs_f32.as_ref()?;
                let num = |k: &str| f.get(k).and_then(Value::as_f64);
                let sci = |k: &str| num(k).map_or("–".into(), |x| format!("{x:.1e}"));
                Some(match w {
                    Workload::Train { .. } => format!(
                        "| {} | {} | loss {} → {}; LoRA gradients {} → {} |",
                        w.id(),
                        row.tool,
                        sci("loss_rel_diff_start"),
                        sci("loss_rel_diff"),
                        sci("grad_rel_diff_start"),
                        sci("grad_rel_diff"),
                    ),
                    _ => format!(
                        "| {} | {} | log-likelihood per scored token: mean \\|Δ\\| {}, max \\|Δ\\| {} (mean value {}) |",
                        w.id(),
                        row.tool,
                        fmt_opt(num("mean_abs_logprob_diff_per_token"), 4),
                        fmt_opt(num("max_abs_logprob_diff_per_token"), 4),
                        fmt_opt(num("mean_logprob_per_token"), 2),
                    ),
                })
            })
        })
        .collect();
    if !bf16_fidelity.is_empty() {
        let _ = writeln!(
            s,
            "\n## bf16 fidelity\n\nHow far each bf16 pass is from the same tool's f32 pass on the same input and weights (untimed; random token ids, so the losses are high). Training: relative loss difference and ‖g_bf16 − g_f32‖ / ‖g_f32‖ over all LoRA gradients, on the initial weights → after the timed steps (which fit one random batch again and again). The engine rounds only the frozen weights' products; autocast rounds every matmul.\n\n| workload | tool | bf16 against f32 |\n|---|---|---|\n{}",
            bf16_fidelity.join("\n")
        );
    }

    let skipped: Vec<String> = Workload::all()
        .iter()
        .filter(|w| !r.table.iter().any(|(x, _)| x == *w))
        .map(Workload::id)
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            s,
            "\nNot run in this invocation (`--only`): {}.",
            skipped.join(", ")
        );
    }
    let _ = writeln!(s, "\n## Targets (issue 8)\n");
    let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
    let get = |w: &Workload, side: &str| -> Option<&Row> {
        r.table
            .iter()
            .find(|(x, _)| x == w)
            .and_then(|(_, rows)| rows.iter().find(|row| row.side == side))
    };
    let mut target = |name: String, measured: Option<f64>, goal: f64, unit: &str| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} |",
            measured.map_or("–".into(), |m| format!("{m:.2}{unit}")),
            measured.map_or("–", |m| if m >= goal { "yes" } else { "no" })
        );
    };
    for (w, _) in r.table.iter().filter(|(w, _)| w.shared() == 0) {
        let sde = get(w, "sde");
        match w {
            Workload::Train { .. } => {
                let ratio = |v: &str| sde.zip(get(w, v)).map(|(a, b)| a.tok_s / b.tok_s);
                target(
                    format!("{}: ≥ 2× PEFT tokens/s", w.id()),
                    ratio("train"),
                    2.0,
                    "×",
                );
                target(
                    format!("{}: ≥ 1.5× PEFT with logits only where needed", w.id()),
                    ratio("train-keep"),
                    1.5,
                    "×",
                );
                target(
                    format!("{}: executed GFLOP/s ≥ 50% of the FMA peak", w.id()),
                    sde.map(|x| x.gflops / fma_peak * 100.0),
                    50.0,
                    "%",
                );
                let rss = |side: &str| {
                    get(w, side)
                        .and_then(|a| a.rss)
                        .zip(get(w, "train").and_then(|b| b.rss))
                        .map(|(a, b)| b / a)
                };
                target(
                    format!("{}: peak RSS ≤ the peer's (peer ÷ sde ≥ 1)", w.id()),
                    rss("sde"),
                    1.0,
                    "×",
                );
                if get(w, "sde-bf16").is_some() {
                    let ratio =
                        |a: &str, b: &str| get(w, a).zip(get(w, b)).map(|(a, b)| a.tok_s / b.tok_s);
                    for (peer, goal, what) in [
                        ("train", 2.0, "≥ 2× PEFT tokens/s (peer in f32)"),
                        (
                            "train-keep",
                            1.5,
                            "≥ 1.5× PEFT with logits only where needed (peer in f32)",
                        ),
                        (
                            "train-bf16",
                            2.0,
                            "≥ 2× PEFT tokens/s, peer in bf16 autocast too",
                        ),
                        (
                            "train-keep-bf16",
                            1.5,
                            "≥ 1.5× PEFT with logits only where needed, peer in bf16 autocast too",
                        ),
                    ] {
                        target(
                            format!("{}, engine in bf16: {what}", w.id()),
                            ratio("sde-bf16", peer),
                            goal,
                            "×",
                        );
                    }
                    target(
                        format!("{}, engine in bf16: peak RSS ≤ the peer's (f32)", w.id()),
                        rss("sde-bf16"),
                        1.0,
                        "×",
                    );
                }
            }
            Workload::Decode { batch, .. } => {
                let goal = if *batch == 1 { 4.0 } else { 2.0 };
                let ratio = sde.zip(get(w, "decode")).map(|(a, b)| a.tok_s / b.tok_s);
                target(
                    format!("{}: ≥ {goal}× HF generate() (f32)", w.id()),
                    ratio,
                    goal,
                    "×",
                );
                for (variant, what) in [
                    ("decode-q8", "quantized layers"),
                    ("decode-q8-all", "quantized layers and head"),
                    ("decode-q8-prompts", "quantized everywhere in generation"),
                    (
                        "decode-draft",
                        "f32 tokens, speculative: quantized drafts, f32 verification",
                    ),
                ] {
                    let q8 = get(w, variant)
                        .zip(get(w, "decode"))
                        .map(|(a, b)| a.tok_s / b.tok_s);
                    target(
                        format!("{}: ≥ {goal}× HF generate() ({what})", w.id()),
                        q8,
                        goal,
                        "×",
                    );
                }
            }
            Workload::Score { .. } => {
                let ratio = sde.zip(get(w, "score")).map(|(a, b)| a.tok_s / b.tok_s);
                target(format!("{}: ≥ 2× the peer", w.id()), ratio, 2.0, "×");
                if let Some(bf16) = get(w, "sde-bf16") {
                    for (peer, what) in [
                        ("score", "≥ 2× the peer (peer in f32)"),
                        ("score-bf16", "≥ 2× the peer, peer in bf16 autocast too"),
                    ] {
                        target(
                            format!("{}, engine in bf16: {what}", w.id()),
                            get(w, peer).map(|b| bf16.tok_s / b.tok_s),
                            2.0,
                            "×",
                        );
                    }
                }
            }
        }
    }
    let around: Vec<String> = r
        .table
        .iter()
        .filter(|(w, _)| w.shared() == 0 && matches!(w, Workload::Train { .. }))
        .filter_map(|(w, _)| {
            let sde = get(w, "sde")?;
            Some(format!(
                "{} {:.0}%",
                w.id(),
                100.0 * sde.gflops / sde.fma_around?
            ))
        })
        .collect();
    if !around.is_empty() {
        let _ = writeln!(
            s,
            "\nThe FMA-share targets are judged against the FMA peak, the highest measure of the run. Against the FMA rate measured around the engine's own runs (the results' last column but one), its f32 train steps executed: {}.",
            around.join(", ")
        );
    }
    let _ = writeln!(s, "\n## Reproduce\n");
    let _ = writeln!(
        s,
        "```sh\ncargo xtask bench            # full protocol, both sides (installs the peer venv once)\ncargo xtask bench --quick    # harness check\ncargo bench -p sde-benches   # criterion benches of the engine and parser alone\n```\n"
    );
    let _ = writeln!(s, "Raw results of this run: `{}`.", r.args.json.display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_gets_the_probes_on_both_sides_of_it() {
        // Jobs 0, 1, 2 run in turn twice (job 1 failed in its first run and ran no more);
        // the probe after job 0's second run failed.
        let slots = [0, 1, 2, 0, 2];
        let probes = [
            Some(10.0),
            Some(11.0),
            Some(12.0),
            Some(13.0),
            None,
            Some(15.0),
        ];
        assert_eq!(
            probes_around(&slots, &probes, 3),
            vec![
                vec![10.0, 11.0, 13.0],
                vec![11.0, 12.0],
                vec![12.0, 13.0, 15.0]
            ]
        );
        // No runs: no probes for anyone, even with the probe taken before them.
        assert_eq!(
            probes_around(&[], &[Some(1.0)], 2),
            vec![Vec::<f64>::new(), vec![]]
        );
    }

    #[test]
    fn the_rate_around_a_row_shows_its_share_for_f32_rows_only() {
        let row = |side: &'static str, fma_around: Option<f64>| Row {
            side,
            engine: true,
            tool: String::new(),
            tok_s: 1.0,
            min: 1.0,
            max: 1.0,
            gflops: 150.0,
            rss: None,
            agreement: None,
            quantized_layers: Vec::new(),
            drafts_kept: None,
            bf16_vs_f32: None,
            steps_tok_s: None,
            fma_around,
        };
        assert_eq!(fma_around(&row("sde", Some(300.0))), "300 (50%)");
        assert_eq!(fma_around(&row("sde-bf16", Some(300.0))), "300");
        assert_eq!(fma_around(&row("sde", None)), "–");
    }

    #[test]
    fn merged_runs_pool_every_rep_and_keep_the_highest_rss() {
        let merged = merge_runs(vec![
            json!({"rep_seconds": [2.0], "tokens_per_rep": 100, "peak_rss_mib": 900.0, "bf16_vs_f32": {"grad_rel_diff": 0.01}}),
            json!({"rep_seconds": [4.0], "tokens_per_rep": 100, "peak_rss_mib": 950.0, "bf16_vs_f32": {"grad_rel_diff": 0.01}}),
            json!({"rep_seconds": [2.5], "tokens_per_rep": 100, "peak_rss_mib": 920.0}),
        ]);
        assert_eq!(merged["rep_seconds"], json!([2.0, 4.0, 2.5]));
        assert_eq!(merged["run_rep_seconds"], json!([[2.0], [4.0], [2.5]]));
        assert_eq!(merged["runs"], json!(3));
        assert_eq!(merged["peak_rss_mib"], json!(950.0));
        assert_eq!(merged["bf16_vs_f32"], json!({"grad_rel_diff": 0.01}));
        // Median of 50, 25 and 40 tokens/s; min 25, max 50.
        assert_eq!(rates(&merged), Some((40.0, 25.0, 50.0)));
        assert_eq!(merge_runs(vec![]), Value::Null);
    }

    #[test]
    fn engine_and_peer_rows_never_share_a_key() {
        for w in Workload::all() {
            let (engine, peer) = w.sides();
            let keys: Vec<&str> = engine
                .iter()
                .enumerate()
                .map(|(i, (v, _))| engine_side(i, v))
                .collect();
            assert_eq!(keys[0], "sde", "{}", w.id());
            for (v, _) in &peer {
                assert!(!keys.contains(v), "{}: peer {v} collides", w.id());
            }
            let bf16_engine = engine.iter().any(|(v, _)| v.ends_with("-bf16"));
            let bf16_peer = peer.iter().any(|(v, _)| v.ends_with("-bf16"));
            assert_eq!(bf16_engine, bf16_peer, "{}: bf16 on one side only", w.id());
            if bf16_engine {
                assert!(keys.contains(&"sde-bf16"));
            }
        }
    }

    #[test]
    fn decode_steps_read_every_weight_once_in_its_format() {
        let row = |side: &'static str, formats: &[&str]| Row {
            side,
            engine: side != "decode",
            tool: String::new(),
            tok_s: 1.0,
            min: 1.0,
            max: 1.0,
            gflops: 1.0,
            rss: None,
            agreement: None,
            quantized_layers: formats.iter().map(|f| f.to_string()).collect(),
            drafts_kept: None,
            bf16_vs_f32: None,
            steps_tok_s: None,
            fma_around: None,
        };
        // 134,479,872 weights (30 layers of 3,538,944 and a 576 x 49,152 head), all f32 for
        // the peer; the engine's f32 layers with its head's Q8_0 screen (34 bytes per 32).
        assert_eq!(decode_step_bytes(&row("decode", &[])), Some(537_919_488.0));
        assert_eq!(
            decode_step_bytes(&row("sde", &[])),
            Some(424_673_280.0 + 30_081_024.0)
        );
        // Layers at 34 bytes per 32 weights, the head's screen too.
        assert_eq!(
            decode_step_bytes(&row("decode-q8", &["Q8_0"])),
            Some(112_803_840.0 + 30_081_024.0)
        );
        assert_eq!(
            decode_step_bytes(&row("decode-q8-all", &["Q8_0"])),
            Some(142_884_864.0)
        );
        // Q4_1 layers: 20 bytes per 32 weights.
        assert_eq!(
            decode_step_bytes(&row("decode-q8-prompts", &["Q4_1"])),
            Some(66_355_200.0 + 30_081_024.0)
        );
        // A quantized row that reports no format, or two, has no byte count.
        assert_eq!(decode_step_bytes(&row("decode-q8", &[])), None);
        assert_eq!(
            decode_step_bytes(&row("decode-q8", &["Q8_0", "Q4_1"])),
            None
        );
    }

    #[test]
    fn decode_steps_leave_the_prompt_pass_out() {
        // Three generations of 8 × 32 new tokens in 3 s: 1 s each, 256 tokens/s overall; a
        // one-token generation takes 0.38 s, so 8 × 31 tokens took 0.62 s.
        let v = json!({"tokens_per_rep": 768, "steps_per_rep": 3, "prompt_seconds": [0.40, 0.38, 0.30]});
        let rate = decode_steps_rate(&v, 256.0).unwrap();
        assert!((rate - 400.0).abs() < 1e-9, "{rate}");
        // No prompt timing, or a prompt pass as long as the generation: no rate.
        assert_eq!(
            decode_steps_rate(&json!({"tokens_per_rep": 768, "steps_per_rep": 3}), 256.0),
            None
        );
        let slow = json!({"tokens_per_rep": 768, "steps_per_rep": 3, "prompt_seconds": [1.0]});
        assert_eq!(decode_steps_rate(&slow, 256.0), None);
    }

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_795_642_893), "2026-11-25 21:41");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
    }

    /// The FLOP formulas give the per-token MFLOP of the peer baseline's accounting.
    #[test]
    fn flop_accounting_matches_the_baseline_table() {
        let m = |x: f64| (x / 1e6 * 10.0).round() / 10.0;
        let full = (1.0, 1.0);
        assert_eq!(m(forward_flops_per_token(128, 128, full)), 273.4);
        assert_eq!(m(forward_flops_per_token(256, 256, full)), 277.8);
        assert_eq!(m(train_flops_per_token(128, 128, full)), 565.9);
        assert_eq!(m(train_flops_per_token(256, 256, full)), 579.2);
        assert_eq!(m(train_flops_per_token(128, 33, full)), 481.9);
        assert_eq!(m(forward_flops_per_token(128, 1, full)), 217.2);
        assert_eq!(m(forward_flops_per_token(160, 33, full)), 229.6);
    }

    /// Work fractions of a shared prefix, checked by hand: 2 rows of 4 tokens sharing 2 run
    /// 2 + 2 × 2 = 6 of 8 token slots, and 3 + 2 × (10 − 3) = 17 of 20 attention pairs.
    #[test]
    fn shared_prefix_fractions_count_the_prefix_once() {
        assert_eq!(shared_fractions(2, 4, 2), (6.0 / 8.0, 17.0 / 20.0));
        assert_eq!(shared_fractions(8, 128, 0), (1.0, 1.0));
        assert_eq!(shared_fractions(1, 128, 96), (1.0, 1.0));
    }

    #[test]
    fn shared_workloads_have_their_own_ids_and_worker_flags() {
        let ids: Vec<String> = Workload::all().iter().map(Workload::id).collect();
        assert!(ids.contains(&"train-b4x256-shared64".to_string()));
        assert!(ids.contains(&"decode-b8-shared96".to_string()));
        let w = Workload::Score {
            batch: 8,
            shared: 96,
        };
        assert_eq!(w.args("score"), ["score", "--batch", "8", "--shared", "96"]);
    }
}
