//! `sde eval`: parse gold and predicted outputs of one design, score them, print a table and
//! write the scores as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use sde_data::{Domain, TaskKind};
use sde_format::Design;
use sde_metrics::{
    BootstrapConfig, ExtractionScores, Interval, MasaSample, MasaScores, Mention, MentionSample,
    SoftRule, bootstrap_ci, masa_accuracy, masa_confusions, masa_kappa, mention_counts, round_to,
    score_extraction, score_masa, soft_f1, strict_f1,
};
use sde_parse::{Labels, Mode, Parsed};
use serde::Serialize;

/// Arguments of `sde eval`.
#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// Predictions JSONL: one object per line with `target` (gold output) and `prediction`
    /// (model output), optionally `id`.
    pub predictions: PathBuf,
    /// Task the predictions belong to.
    #[arg(long, value_enum)]
    pub task: EvalTask,
    /// Design id the outputs follow (e.g. `baseline`, `lines`, `ner.es-sde`,
    /// `event.heuristic`, or a full id).
    #[arg(long)]
    pub design: String,
    /// Aspect or type list: d1, d2, all (MASA), genia (NER), maven10 (events).
    /// Default: d1, genia or maven10 by task.
    #[arg(long)]
    pub domain: Option<String>,
    /// Parser mode: `study` reproduces the study's soft scoring; `lenient` adds tolerant
    /// repairs; `strict` accepts only the exact grammar.
    #[arg(long, value_enum, default_value_t = EvalMode::Study)]
    pub mode: EvalMode,
    /// Where to write the JSON scores (default: `<input stem>.eval.json` next to the input).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bootstrap replicates for the confidence intervals (0: no intervals).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap resampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Task selector of `sde eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EvalTask {
    /// Multi-aspect sentiment.
    Masa,
    /// Nested named-entity recognition.
    Ner,
    /// Event detection.
    Event,
}

impl EvalTask {
    fn kind(self) -> TaskKind {
        match self {
            EvalTask::Masa => TaskKind::Masa,
            EvalTask::Ner => TaskKind::Ner,
            EvalTask::Event => TaskKind::Event,
        }
    }
}

/// Parser mode selector of `sde eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EvalMode {
    /// The study's own evaluator.
    Study,
    /// Tolerant repairs and the study's relaxations.
    Lenient,
    /// The design's exact grammar only.
    Strict,
}

impl EvalMode {
    fn name(self) -> &'static str {
        match self {
            EvalMode::Study => "study",
            EvalMode::Lenient => "lenient",
            EvalMode::Strict => "strict",
        }
    }

    fn parser_mode(self) -> Mode {
        match self {
            EvalMode::Study => Mode::Study,
            EvalMode::Lenient => Mode::Lenient,
            EvalMode::Strict => Mode::Strict,
        }
    }
}

/// One line of the predictions file.
#[derive(Debug)]
struct Row {
    id: String,
    target: String,
    prediction: String,
}

/// Reads the predictions JSONL, naming the file and line of any problem.
fn read_rows(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not JSON", at()))?;
        let text_field = |name: &str| -> anyhow::Result<String> {
            match value.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => bail!("{}: field `{name}` is not a string", at()),
                None => bail!("{}: missing field `{name}`", at()),
            }
        };
        let id = match value.get("id") {
            None | Some(serde_json::Value::Null) => (rows.len() + 1).to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        rows.push(Row {
            id,
            target: text_field("target")?,
            prediction: text_field("prediction")?,
        });
    }
    if rows.is_empty() {
        bail!("{}: no predictions", path.display());
    }
    Ok(rows)
}

fn domain_for(task: EvalTask, name: Option<&str>) -> anyhow::Result<Domain> {
    let name = name.unwrap_or(match task {
        EvalTask::Masa => "d1",
        EvalTask::Ner => "genia",
        EvalTask::Event => "maven10",
    });
    let domain = match (task, name) {
        (EvalTask::Masa, "d1") => Domain::study_d1(),
        (EvalTask::Masa, "d2") => Domain::study_d2(),
        (EvalTask::Masa, "all") => Domain::study_all(),
        (EvalTask::Ner, "genia") => Domain::genia(),
        (EvalTask::Event, "maven10") => Domain::maven10(),
        (EvalTask::Masa, other) => bail!("--domain {other}: MASA domains are d1, d2 and all"),
        (EvalTask::Ner, other) => bail!("--domain {other}: the NER domain is genia"),
        (EvalTask::Event, other) => bail!("--domain {other}: the event domain is maven10"),
    };
    Ok(domain)
}

/// Whether a parsed prediction counts as a format error under `mode`.
fn is_format_error(parsed: &Parsed, mode: EvalMode) -> bool {
    match mode {
        EvalMode::Study => parsed.is_study_format_error(),
        EvalMode::Lenient | EvalMode::Strict => parsed.status.is_format_error(),
    }
}

/// Gold labels are read with the study's parser in study mode (as the study does), otherwise
/// with the exact grammar; a gold output that does not parse cleanly is reported.
fn gold_mode(mode: EvalMode) -> Mode {
    match mode {
        EvalMode::Study => Mode::Study,
        EvalMode::Lenient | EvalMode::Strict => Mode::Strict,
    }
}

fn mentions(labels: Labels) -> Vec<Mention> {
    match labels {
        Labels::Ner(entities) => entities
            .into_iter()
            .map(|e| Mention::new(e.kind, e.name))
            .collect(),
        Labels::Event(events) => events
            .into_iter()
            .map(|e| Mention::new(e.kind, e.trigger))
            .collect(),
        Labels::Masa(_) => Vec::new(),
    }
}

/// Everything `sde eval` writes.
#[derive(Debug, Serialize)]
struct Report {
    input: String,
    task: EvalTask,
    design: String,
    domain: String,
    mode: EvalMode,
    samples: usize,
    /// Gold outputs that did not parse (dropped from MASA counts; see the sample ids).
    gold_unparsed: Vec<String>,
    /// Prediction statuses by name.
    statuses: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    masa: Option<MasaScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extraction: Option<ExtractionScores>,
    /// Bootstrap intervals by statistic name.
    intervals: BTreeMap<&'static str, Interval>,
    bootstrap: Option<BootstrapConfig>,
}

/// Runs `sde eval`.
pub(crate) fn run(args: EvalArgs) -> anyhow::Result<()> {
    let task = args.task;
    let design = Design::parse_for(&args.design, task.kind(), None)
        .with_context(|| format!("--design {}", args.design))?;
    if design.task != task.kind() {
        bail!(
            "--design {} is a {} design but --task is {:?}",
            args.design,
            sde_format::Segment::segment(design.task),
            task
        );
    }
    let domain = domain_for(task, args.domain.as_deref())?;
    let rows = read_rows(&args.predictions)?;
    let mode = args.mode;
    let cfg = (args.bootstrap > 0).then_some(BootstrapConfig {
        resamples: args.bootstrap,
        confidence: 0.95,
        seed: args.seed,
    });

    let mut report = Report {
        input: args.predictions.display().to_string(),
        task,
        design: design.to_string(),
        domain: domain.name.clone(),
        mode,
        samples: rows.len(),
        gold_unparsed: Vec::new(),
        statuses: BTreeMap::new(),
        masa: None,
        extraction: None,
        intervals: BTreeMap::new(),
        bootstrap: cfg,
    };

    let parsed: Vec<Parsed> = rows
        .iter()
        .map(|r| sde_parse::parse(&r.prediction, &design, &domain, mode.parser_mode()))
        .collect();
    for p in &parsed {
        *report.statuses.entry(p.status.name()).or_default() += 1;
    }

    match task {
        EvalTask::Masa => {
            let mut samples = Vec::with_capacity(rows.len());
            for (row, p) in rows.iter().zip(parsed) {
                let gold = match mode {
                    EvalMode::Study => sde_parse::study_masa_gold(&row.target, &design, &domain),
                    _ => {
                        let g = sde_parse::parse(&row.target, &design, &domain, gold_mode(mode));
                        match g.labels {
                            Labels::Masa(labels) if !g.status.is_format_error() => Some(labels),
                            _ => None,
                        }
                    }
                };
                if gold.is_none() {
                    report.gold_unparsed.push(row.id.clone());
                }
                let format_error = is_format_error(&p, mode);
                let Labels::Masa(pred) = p.labels else {
                    bail!("the parser returned non-MASA labels for a MASA design")
                };
                samples.push(MasaSample {
                    gold,
                    pred,
                    format_error,
                });
            }
            let keys: Vec<&str> = domain.keys().collect();
            let scores = score_masa(&keys, &samples)?;
            if let Some(cfg) = &cfg {
                let confusions = masa_confusions(keys.len(), &samples)?;
                let n = samples.len();
                report
                    .intervals
                    .insert("kappa", bootstrap_ci(n, masa_kappa(&confusions), cfg)?);
                report.intervals.insert(
                    "accuracy",
                    bootstrap_ci(n, masa_accuracy(&confusions), cfg)?,
                );
            }
            report.masa = Some(scores);
        }
        EvalTask::Ner | EvalTask::Event => {
            let mut samples = Vec::with_capacity(rows.len());
            for (row, p) in rows.iter().zip(parsed) {
                let g = sde_parse::parse(&row.target, &design, &domain, gold_mode(mode));
                if mode != EvalMode::Study && g.status.is_format_error() {
                    report.gold_unparsed.push(row.id.clone());
                }
                samples.push(MentionSample {
                    format_error: is_format_error(&p, mode),
                    gold: mentions(g.labels),
                    pred: mentions(p.labels),
                });
            }
            let rule = if task == EvalTask::Ner {
                SoftRule::Ner
            } else {
                SoftRule::Event
            };
            let types: Vec<&str> = domain.keys().collect();
            let scores = score_extraction(&types, &samples, rule);
            if let Some(cfg) = &cfg {
                let counts = mention_counts(&samples, rule);
                let n = samples.len();
                report
                    .intervals
                    .insert("strict_f1", bootstrap_ci(n, strict_f1(&counts), cfg)?);
                report
                    .intervals
                    .insert("soft_f1", bootstrap_ci(n, soft_f1(&counts), cfg)?);
            }
            report.extraction = Some(scores);
        }
    }

    let table = render_table(&report, &domain);
    std::io::stdout()
        .write_all(table.as_bytes())
        .context("writing the table to stdout")?;

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.predictions));
    let json = serde_json::to_vec_pretty(&report).context("serialising the scores")?;
    write_atomic(&out, &json).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    eprintln!(
        "note: scores are written as JSON only; a Parquet copy needs a table writer in sde-data"
    );
    Ok(())
}

/// Writes `bytes` plus a final newline to a temporary file beside `path`, then renames it
/// over `path`, so that a reader never sees a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "eval.json".to_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `<dir>/<stem>.eval.json` beside the input.
fn default_out(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "predictions".to_owned());
    input.with_file_name(format!("{stem}.eval.json"))
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.4}", round_to(v, 4)))
}

fn fmt_interval(i: Option<&Interval>) -> String {
    i.map_or_else(String::new, |i| {
        format!(
            "  [{:.4}, {:.4}]",
            round_to(i.lower, 4),
            round_to(i.upper, 4)
        )
    })
}

/// The human-readable summary printed to stdout.
fn render_table(report: &Report, domain: &Domain) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} | design {} | domain {} | mode {} | {} samples",
        report.input,
        report.design,
        report.domain,
        report.mode.name(),
        report.samples
    );
    let statuses: Vec<String> = report
        .statuses
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(s, "statuses: {}", statuses.join(", "));
    if !report.gold_unparsed.is_empty() {
        let _ = writeln!(
            s,
            "gold outputs that did not parse: {} (ids {})",
            report.gold_unparsed.len(),
            report.gold_unparsed.join(", ")
        );
    }
    if let Some(m) = &report.masa {
        let ci = report.intervals.get("kappa");
        let _ = writeln!(
            s,
            "format errors: {} ({:.4})",
            m.format_errors,
            round_to(m.format_error_rate, 4)
        );
        let _ = writeln!(s, "sentence accuracy: {}", fmt_opt(m.sentence_accuracy));
        let _ = writeln!(s, "{:<24} {:>8} {:>8} {:>6}", "aspect", "kappa", "acc", "n");
        let _ = writeln!(
            s,
            "{:<24} {:>8.4} {:>8} {:>6}{}",
            "ALL",
            m.kappa_reported(),
            fmt_opt(m.pooled.accuracy),
            m.pooled.confusion.total(),
            fmt_interval(ci)
        );
        for (a, def) in m.per_aspect.iter().zip(&domain.aspects) {
            let _ = writeln!(
                s,
                "{:<24} {:>8.4} {:>8} {:>6}",
                def.key,
                a.kappa_reported(),
                fmt_opt(a.accuracy),
                a.confusion.total()
            );
        }
        let _ = writeln!(
            s,
            "confusion (rows gold, columns predicted): positive neutral negative unmentioned"
        );
        for (label, row) in sde_data::Sentiment::ALL
            .iter()
            .zip(&m.pooled.confusion.counts)
        {
            let _ = writeln!(
                s,
                "  {:<12} {:>6} {:>6} {:>6} {:>6}",
                label.en(),
                row[0],
                row[1],
                row[2],
                row[3]
            );
        }
        let _ = writeln!(s, "  {:<12} {:>9} {:>9}", "label", "precision", "recall");
        for c in &m.pooled.classes {
            let _ = writeln!(
                s,
                "  {:<12} {:>9} {:>9}",
                c.label.en(),
                fmt_opt(c.precision),
                fmt_opt(c.recall)
            );
        }
    }
    if let Some(e) = &report.extraction {
        let _ = writeln!(
            s,
            "format errors: {} ({:.4}); undefined types: {}",
            e.format_errors,
            round_to(e.format_error_rate, 4),
            e.undefined_type
        );
        let _ = writeln!(
            s,
            "{:<8} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6}",
            "match", "precision", "recall", "f1", "tp", "fp", "fn"
        );
        for (name, p, ci) in [
            ("strict", &e.strict, report.intervals.get("strict_f1")),
            ("soft", &e.soft, report.intervals.get("soft_f1")),
        ] {
            let _ = writeln!(
                s,
                "{:<8} {:>9.4} {:>9.4} {:>9.4} {:>6} {:>6} {:>6}{}",
                name,
                round_to(p.precision, 4),
                round_to(p.recall, 4),
                round_to(p.f1, 4),
                p.tp,
                p.fp,
                p.fn_,
                fmt_interval(ci)
            );
        }
    }
    if let Some(cfg) = &report.bootstrap {
        let _ = writeln!(
            s,
            "intervals: {:.0}% percentile bootstrap, {} replicates, seed {}",
            cfg.confidence * 100.0,
            cfg.resamples,
            cfg.seed
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = std::env::temp_dir().join(format!("sde-eval-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.jsonl");
        std::fs::write(
            &path,
            "{\"target\": \"a\", \"prediction\": \"b\"}\n\n{\"target\": 1}\n",
        )
        .unwrap();
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("p.jsonl line 3: field `target` is not a string"),
            "{err}"
        );
        std::fs::write(&path, "{\"target\": \"a\"}\n").unwrap();
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(err.ends_with("line 1: missing field `prediction`"), "{err}");
        std::fs::write(
            &path,
            "{\"id\": 7, \"target\": \"a\", \"prediction\": \"\"}\n",
        )
        .unwrap();
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows[0].id, "7");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_output_sits_next_to_the_input() {
        assert_eq!(
            default_out(Path::new("/x/run/preds.jsonl")),
            PathBuf::from("/x/run/preds.eval.json")
        );
    }

    #[test]
    fn domains_by_task() {
        assert_eq!(domain_for(EvalTask::Masa, None).unwrap().name, "d1");
        assert_eq!(domain_for(EvalTask::Masa, Some("all")).unwrap().len(), 11);
        assert!(domain_for(EvalTask::Ner, Some("d1")).is_err());
        assert_eq!(domain_for(EvalTask::Event, None).unwrap().len(), 10);
    }
}
