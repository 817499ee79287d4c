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
    BootstrapConfig, Confusion, ExtractionScores, Interval, MasaSample, MasaScores, MatchCounts,
    Mention, MentionSample, PairedComparison, SoftRule, bootstrap_ci, masa_accuracy,
    masa_confusions, masa_kappa, mention_counts, paired_bootstrap, round_to, score_extraction,
    score_masa, soft_f1, strict_f1,
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
    /// Where to write the JSON scores (default: `<input stem>.eval.json` next to the input);
    /// a Parquet table of every score (`metric`, `value`) goes beside it with the extension
    /// `.parquet`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bootstrap replicates for the confidence intervals (0: no intervals).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap resampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Another design's predictions on the same test samples (same order): adds its scores
    /// and a paired bootstrap test of this design against it.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Design id of the `--against` predictions (default: `--design`).
    #[arg(long, requires = "against")]
    pub against_design: Option<String>,
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
    /// The selector of a task family.
    pub(crate) fn of(task: TaskKind) -> EvalTask {
        match task {
            TaskKind::Masa => EvalTask::Masa,
            TaskKind::Ner => EvalTask::Ner,
            TaskKind::Event => EvalTask::Event,
        }
    }

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

/// A statistic of a list of (resampled) sample indices.
type Statistic<'a> = Box<dyn Fn(&[usize]) -> f64 + 'a>;

/// Per-sample data the bootstrap resamples.
enum PerSample {
    /// One confusion matrix per MASA sample.
    Masa(Vec<Confusion>),
    /// (strict, soft) match counts per NER or ED sentence.
    Mentions(Vec<(MatchCounts, MatchCounts)>),
}

impl PerSample {
    fn len(&self) -> usize {
        match self {
            PerSample::Masa(v) => v.len(),
            PerSample::Mentions(v) => v.len(),
        }
    }

    /// The statistics reported with intervals, by name: the study's headline score first.
    fn statistics(&self) -> Vec<(&'static str, Statistic<'_>)> {
        match self {
            PerSample::Masa(c) => vec![
                ("kappa", Box::new(masa_kappa(c))),
                ("accuracy", Box::new(masa_accuracy(c))),
            ],
            PerSample::Mentions(c) => vec![
                ("soft_f1", Box::new(soft_f1(c))),
                ("strict_f1", Box::new(strict_f1(c))),
            ],
        }
    }
}

/// The scores of one predictions file.
#[derive(Debug, Serialize)]
struct FileScores {
    input: String,
    design: String,
    samples: usize,
    /// Ids of samples whose gold output did not parse (dropped from MASA counts).
    gold_unparsed: Vec<String>,
    /// Prediction statuses by name.
    statuses: BTreeMap<&'static str, usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    masa: Option<MasaScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extraction: Option<ExtractionScores>,
    /// Bootstrap intervals by statistic name.
    intervals: BTreeMap<&'static str, Interval>,
    #[serde(skip)]
    ids: Vec<String>,
    #[serde(skip)]
    per_sample: Option<PerSample>,
}

/// Everything `sde eval` writes.
#[derive(Debug, Serialize)]
struct Report {
    task: EvalTask,
    domain: String,
    mode: EvalMode,
    bootstrap: Option<BootstrapConfig>,
    #[serde(flatten)]
    scores: FileScores,
    /// With `--against`: the other design's scores and paired comparisons
    /// (this design minus the other).
    #[serde(skip_serializing_if = "Option::is_none")]
    against: Option<FileScores>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    paired: BTreeMap<&'static str, PairedComparison>,
}

impl std::fmt::Debug for PerSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PerSample({} samples)", self.len())
    }
}

fn parse_design(id: &str, task: EvalTask, flag: &str) -> anyhow::Result<Design> {
    let design =
        Design::parse_for(id, task.kind(), None).with_context(|| format!("{flag} {id}"))?;
    if design.task != task.kind() {
        bail!(
            "{flag} {id} is a {} design but --task is {}",
            sde_format::Segment::segment(design.task),
            sde_format::Segment::segment(task.kind())
        );
    }
    Ok(design)
}

/// Parses and scores one predictions file.
fn score_file(
    path: &Path,
    task: EvalTask,
    design: &Design,
    domain: &Domain,
    mode: EvalMode,
) -> anyhow::Result<FileScores> {
    let rows = read_rows(path)?;
    let mut scores = FileScores {
        input: path.display().to_string(),
        design: design.to_string(),
        samples: rows.len(),
        gold_unparsed: Vec::new(),
        statuses: BTreeMap::new(),
        masa: None,
        extraction: None,
        intervals: BTreeMap::new(),
        ids: rows.iter().map(|r| r.id.clone()).collect(),
        per_sample: None,
    };
    let parsed: Vec<Parsed> = rows
        .iter()
        .map(|r| sde_parse::parse(&r.prediction, design, domain, mode.parser_mode()))
        .collect();
    for p in &parsed {
        *scores.statuses.entry(p.status.name()).or_default() += 1;
    }
    match task {
        EvalTask::Masa => {
            let mut samples = Vec::with_capacity(rows.len());
            for (row, p) in rows.iter().zip(parsed) {
                let gold = match mode {
                    EvalMode::Study => sde_parse::study_masa_gold(&row.target, design, domain),
                    EvalMode::Lenient | EvalMode::Strict => {
                        let g = sde_parse::parse(&row.target, design, domain, gold_mode(mode));
                        match g.labels {
                            Labels::Masa(labels) if !g.status.is_format_error() => Some(labels),
                            _ => None,
                        }
                    }
                };
                if gold.is_none() {
                    scores.gold_unparsed.push(row.id.clone());
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
            scores.masa =
                Some(score_masa(&keys, &samples).with_context(|| format!("{}", path.display()))?);
            scores.per_sample = Some(PerSample::Masa(masa_confusions(keys.len(), &samples)?));
        }
        EvalTask::Ner | EvalTask::Event => {
            let mut samples = Vec::with_capacity(rows.len());
            for (row, p) in rows.iter().zip(parsed) {
                let g = sde_parse::parse(&row.target, design, domain, gold_mode(mode));
                if mode != EvalMode::Study && g.status.is_format_error() {
                    scores.gold_unparsed.push(row.id.clone());
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
            scores.extraction = Some(score_extraction(&types, &samples, rule));
            scores.per_sample = Some(PerSample::Mentions(mention_counts(&samples, rule)));
        }
    }
    Ok(scores)
}

fn add_intervals(scores: &mut FileScores, cfg: &BootstrapConfig) -> anyhow::Result<()> {
    let Some(per_sample) = &scores.per_sample else {
        return Ok(());
    };
    let n = per_sample.len();
    for (name, stat) in per_sample.statistics() {
        scores.intervals.insert(name, bootstrap_ci(n, stat, cfg)?);
    }
    Ok(())
}

/// Paired comparisons of `a` against `b` (same test samples, same order).
fn paired(
    a: &FileScores,
    b: &FileScores,
    cfg: &BootstrapConfig,
) -> anyhow::Result<BTreeMap<&'static str, PairedComparison>> {
    if a.ids.len() != b.ids.len() {
        bail!(
            "--against: {} has {} samples but {} has {}",
            b.input,
            b.ids.len(),
            a.input,
            a.ids.len()
        );
    }
    if let Some(i) = (0..a.ids.len()).find(|&i| a.ids[i] != b.ids[i]) {
        bail!(
            "--against: line {} has id {} in {} but {} in {} (both files must list the same \
             test samples in the same order)",
            i + 1,
            a.ids[i],
            a.input,
            b.ids[i],
            b.input
        );
    }
    let (Some(pa), Some(pb)) = (&a.per_sample, &b.per_sample) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for ((name, stat_a), (_, stat_b)) in pa.statistics().into_iter().zip(pb.statistics()) {
        out.insert(name, paired_bootstrap(pa.len(), stat_a, stat_b, cfg)?);
    }
    Ok(out)
}

/// Runs `sde eval`.
pub(crate) fn run(args: EvalArgs) -> anyhow::Result<()> {
    let task = args.task;
    let design = parse_design(&args.design, task, "--design")?;
    let domain = domain_for(task, args.domain.as_deref())?;
    let mode = args.mode;
    let cfg = (args.bootstrap > 0).then_some(BootstrapConfig {
        resamples: args.bootstrap,
        confidence: 0.95,
        seed: args.seed,
    });

    let mut scores = score_file(&args.predictions, task, &design, &domain, mode)?;
    let mut against = match &args.against {
        Some(path) => {
            let id = args.against_design.as_deref().unwrap_or(&args.design);
            let other = parse_design(id, task, "--against-design")?;
            Some(score_file(path, task, &other, &domain, mode)?)
        }
        None => None,
    };
    let mut paired_scores = BTreeMap::new();
    if let Some(cfg) = &cfg {
        add_intervals(&mut scores, cfg)?;
        if let Some(other) = &mut against {
            add_intervals(other, cfg)?;
            paired_scores = paired(&scores, other, cfg)?;
        }
    }
    let report = Report {
        task,
        domain: domain.name.clone(),
        mode,
        bootstrap: cfg,
        scores,
        against,
        paired: paired_scores,
    };

    let table = render_table(&report, &domain);
    std::io::stdout()
        .write_all(table.as_bytes())
        .context("writing the table to stdout")?;

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.predictions));
    let mut json = serde_json::to_vec_pretty(&report).context("serialising the scores")?;
    json.push(b'\n');
    sde_engine::adapter::write_atomic(&out, &json)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    let table_path = out.with_extension("parquet");
    let value = serde_json::to_value(&report).context("serialising the scores")?;
    let rows = super::eval_table::flatten(&value);
    super::eval_table::write_parquet(
        &table_path,
        &args.predictions.display().to_string(),
        &args.design,
        &rows,
    )?;
    eprintln!("wrote {}", table_path.display());
    Ok(())
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
    render_scores(&mut s, &report.scores, report, domain);
    if let Some(other) = &report.against {
        s.push('\n');
        render_scores(&mut s, other, report, domain);
        if !report.paired.is_empty() {
            let _ = writeln!(
                s,
                "\npaired bootstrap, first minus second: first {} ({}), second {} ({})",
                report.scores.input, report.scores.design, other.input, other.design
            );
        }
        for (name, p) in &report.paired {
            let _ = writeln!(
                s,
                "  {:<10} delta {:+.4}{}  p = {:.4}  first better in {:.1}% of replicates",
                name,
                round_to(p.delta.estimate, 4),
                fmt_interval(Some(&p.delta)),
                round_to(p.p_value, 4),
                p.a_wins * 100.0
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

/// The table of one file's scores.
fn render_scores(s: &mut String, report: &FileScores, context: &Report, domain: &Domain) {
    let _ = writeln!(
        s,
        "{} | design {} | domain {} | mode {} | {} samples",
        report.input,
        report.design,
        context.domain,
        context.mode.name(),
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

    fn args(predictions: PathBuf, out: PathBuf) -> EvalArgs {
        EvalArgs {
            predictions,
            task: EvalTask::Masa,
            design: "baseline".to_owned(),
            domain: None,
            mode: EvalMode::Study,
            out: Some(out),
            bootstrap: 50,
            seed: 1,
            against: None,
            against_design: None,
        }
    }

    #[test]
    fn scores_a_small_masa_file_end_to_end() {
        let dir = std::env::temp_dir().join(format!("sde-eval-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gold = "食品评价：正面，饮品评价：未提及，价格水平：负面，卫生情况：未提及，服务人员态度：正面，停车方便程度：未提及。";
        // Row 1 exact; row 2 gets price wrong (neutral for negative); row 3 is empty.
        let pred2 = gold.replacen("价格水平：负面", "价格水平：中性", 1);
        let lines = [
            serde_json::json!({"id": "a", "target": gold, "prediction": gold}),
            serde_json::json!({"id": "b", "target": gold, "prediction": pred2}),
            serde_json::json!({"id": "c", "target": gold, "prediction": ""}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let input = dir.join("preds.jsonl");
        std::fs::write(&input, text).unwrap();
        let out = dir.join("scores.json");
        run(args(input.clone(), out.clone())).unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(report["samples"], 3);
        assert!(
            dir.join("scores.parquet").is_file(),
            "the Parquet table sits beside the JSON"
        );
        assert_eq!(report["statuses"]["clean"], 2);
        assert_eq!(report["statuses"]["empty"], 1);
        let masa = &report["masa"];
        assert_eq!(masa["format_errors"], 1);
        // 18 pairs: row 2 misses price, row 3 predicts unmentioned for food, price and staff.
        let pooled = &masa["pooled"];
        assert_eq!(pooled["accuracy"].as_f64().unwrap(), 14.0 / 18.0);
        assert_eq!(masa["sentence_accuracy"].as_f64().unwrap(), 1.0 / 3.0);
        assert!(report["intervals"]["kappa"]["lower"].is_number());

        // Paired against itself: no difference.
        let mut a = args(input.clone(), out.clone());
        a.against = Some(input.clone());
        run(a).unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(report["paired"]["kappa"]["delta"]["estimate"], 0.0);
        assert_eq!(report["paired"]["kappa"]["p_value"], 1.0);

        // Paired files must list the same samples.
        let other = dir.join("other.jsonl");
        std::fs::write(&other, format!("{}\n", lines[0])).unwrap();
        let mut a = args(input, out);
        a.against = Some(other);
        let err = run(a).unwrap_err().to_string();
        assert!(err.contains("has 1 samples"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
