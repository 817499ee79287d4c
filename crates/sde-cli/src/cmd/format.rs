//! `sde format <recipe> --design <id> --to prompt-completion|alpaca|sharegpt`

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use sde_data::{Recipe, Record};
use sde_format::{ChatTemplate, Context, Design, Language, Sample, Segment, render_icl};
use serde_json::json;

/// Arguments of `sde format`.
#[derive(Debug, Args)]
pub(crate) struct FormatArgs {
    /// Dataset recipe: a name under `datasets/` (or `$SDE_RECIPES_DIR`), or a `.toml` path.
    pub recipe: String,
    /// Design id or preset, e.g. `es-sde`, `inst-first`, `masa.en.lines.num`,
    /// `masa.zh.inst-last.no-mi.natural.pu.text.no-cot.p0.raw`.
    #[arg(long, default_value = "baseline")]
    pub design: String,
    /// Template language when the design id does not name one (default: zh when the records'
    /// texts contain Chinese characters, en otherwise).
    #[arg(long)]
    pub lang: Option<LangArg>,
    /// Output record shape.
    #[arg(long, value_enum, default_value_t = OutputShape::PromptCompletion)]
    pub to: OutputShape,
    /// Split of the recipe to render.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Domain the model is trained on (`all` or a `[domains]` entry of the recipe).
    #[arg(long, default_value = "all")]
    pub domain: String,
    /// Domain the prompts ask about (out-of-domain prompts); default: `--domain`.
    #[arg(long)]
    pub test_domain: Option<String>,
    /// Render only the first N records (the study trains on the first N rows).
    #[arg(long)]
    pub limit: Option<usize>,
    /// In-context prompts with K demonstrations: the first K records of `--demo-split` (other
    /// than the query).
    #[arg(long, default_value_t = 0)]
    pub icl: usize,
    /// Split the demonstrations come from.
    #[arg(long, default_value = "train")]
    pub demo_split: String,
    /// Jinja chat-template file for designs wrapped in the model's chat template (`.chat`).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Take the chat template from a model instead (`default`, a .gguf, an HF folder or hub id).
    #[arg(long, conflicts_with = "chat_template")]
    pub chat_model: Option<String>,
    /// Data root for recipes that read files (default: `$SDE_DATA_ROOT`).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Output file (JSON Lines, written atomically); `-` for standard output.
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
}

/// Template language.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LangArg {
    /// English.
    En,
    /// Chinese.
    Zh,
}

/// Shape of each output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputShape {
    /// `{"prompt", "completion", ...}` (TRL's prompt-completion datasets).
    PromptCompletion,
    /// `{"instruction", "input", "output", ...}` (Alpaca).
    Alpaca,
    /// `{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}], ...}` (ShareGPT).
    Sharegpt,
}

fn find_recipe(spec: &str) -> anyhow::Result<Recipe> {
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "toml") || path.is_file() {
        Recipe::load(path).with_context(|| format!("reading recipe {}", path.display()))
    } else {
        Recipe::find(spec).with_context(|| format!("finding recipe `{spec}`"))
    }
}

fn chat_template(args: &FormatArgs) -> anyhow::Result<Option<ChatTemplate>> {
    if let Some(path) = &args.chat_template {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("reading chat template {}", path.display()))?;
        return Ok(Some(ChatTemplate::new(path.display().to_string(), source)));
    }
    if let Some(spec) = &args.chat_model {
        let loaded = sde_engine::load(spec).with_context(|| format!("loading model `{spec}`"))?;
        let Some(source) = loaded.tokenizer.chat_template() else {
            bail!("model `{spec}` has no chat template");
        };
        let special = loaded.tokenizer.special_tokens();
        let mut template = ChatTemplate::new(spec.clone(), source);
        template.bos_token = special
            .bos
            .as_ref()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        template.eos_token = special
            .eos
            .as_ref()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        return Ok(Some(template));
    }
    Ok(None)
}

/// One output line.
fn line(
    shape: OutputShape,
    record: &Record,
    design: &Design,
    sample: &Sample,
) -> serde_json::Value {
    let loss = sample.loss_on.segment();
    let id = record.id();
    let design = design.to_string();
    match shape {
        OutputShape::PromptCompletion => json!({
            "prompt": sample.prompt,
            "completion": sample.completion,
            "id": id,
            "design": design,
            "loss_on": loss,
        }),
        OutputShape::Alpaca => json!({
            "instruction": sample.prompt,
            "input": "",
            "output": sample.completion,
            "id": id,
            "design": design,
            "loss_on": loss,
        }),
        OutputShape::Sharegpt => json!({
            "conversations": [
                {"from": "human", "value": sample.prompt},
                {"from": "gpt", "value": sample.completion},
            ],
            "id": id,
            "design": design,
            "loss_on": loss,
        }),
    }
}

pub(crate) fn run(args: FormatArgs) -> anyhow::Result<()> {
    let recipe = find_recipe(&args.recipe)?;
    let language = args.lang.map(|l| match l {
        LangArg::En => Language::En,
        LangArg::Zh => Language::Zh,
    });
    let data_root = args.data_root.clone().or_else(sde_data::data_root_from_env);
    let load = |split: &str| {
        recipe
            .load_split(split, data_root.as_deref())
            .with_context(|| format!("loading split `{split}` of recipe `{}`", recipe.name))
    };
    let mut records = load(&args.split)?;
    if let Some(limit) = args.limit {
        records.truncate(limit);
    }
    let language = match language {
        Some(l) => Some(l),
        None if names_language(&args.design, recipe.task) => None,
        None => Some(guess_language(&records)),
    };
    let design = Design::parse_for(&args.design, recipe.task, language)
        .with_context(|| format!("design `{}`", args.design))?;
    if design.task != recipe.task {
        bail!(
            "design `{design}` renders {} records but recipe `{}` holds {} records",
            design.task.segment(),
            recipe.name,
            recipe.task.segment()
        );
    }
    let train_domain = recipe
        .domain(&args.domain)
        .with_context(|| format!("recipe `{}`", recipe.name))?;
    let test_domain = match &args.test_domain {
        Some(name) => recipe
            .domain(name)
            .with_context(|| format!("recipe `{}`", recipe.name))?,
        None => train_domain.clone(),
    };
    let template = chat_template(&args)?;
    let mut context = Context::ood(&train_domain, &test_domain);
    if let Some(t) = &template {
        context = context.with_chat_template(t);
    }

    let demos: Vec<Record> = if args.icl > 0 {
        if args.demo_split == args.split {
            records.clone()
        } else {
            load(&args.demo_split)?
        }
    } else {
        Vec::new()
    };

    eprintln!("design {design}");
    let bar = super::bar(records.len() as u64, "samples");
    let mut out = String::new();
    for record in &records {
        let shots: Vec<&Record> = demos
            .iter()
            .filter(|d| d.id() != record.id())
            .take(args.icl)
            .collect();
        let sample = render_icl(record, &shots, &design, &context)
            .with_context(|| format!("rendering record `{}` under `{design}`", record.id()))?;
        out += &serde_json::to_string(&line(args.to, record, &design, &sample))?;
        out.push('\n');
        bar.inc(1);
    }
    bar.finish_and_clear();

    if args.output.as_os_str() == "-" {
        std::io::stdout()
            .lock()
            .write_all(out.as_bytes())
            .context("writing to standard output")?;
    } else {
        sde_engine::adapter::write_atomic(&args.output, out.as_bytes())?;
        eprintln!(
            "wrote {} samples to {}",
            records.len(),
            args.output.display()
        );
    }
    Ok(())
}

/// Whether the design id names its language itself.
fn names_language(id: &str, task: sde_data::TaskKind) -> bool {
    let en = Design::parse_for(id, task, Some(Language::En)).map(|d| d.language);
    let zh = Design::parse_for(id, task, Some(Language::Zh)).map(|d| d.language);
    matches!((en, zh), (Ok(a), Ok(b)) if a == b)
}

/// Chinese when the records' texts contain CJK characters, English otherwise.
fn guess_language(records: &[Record]) -> Language {
    let cjk = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
    if records.iter().take(20).any(|r| r.text().chars().any(cjk)) {
        Language::Zh
    } else {
        Language::En
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sde_data::{Domain, MasaRecord};
    use sde_format::TaskKind;

    fn record(text: &str) -> Record {
        Record::Masa(MasaRecord {
            id: "r/0".into(),
            text: text.into(),
            labels: vec![],
        })
    }

    #[test]
    fn output_shapes() {
        let design = Design::baseline(TaskKind::Masa, Language::En);
        let r = record("Nice place.");
        let sample = sde_format::render(&r, &design, &Domain::study_d1()).unwrap();
        let pc = line(OutputShape::PromptCompletion, &r, &design, &sample);
        assert_eq!(pc["prompt"], sample.prompt.as_str());
        assert_eq!(pc["completion"], sample.completion.as_str());
        assert_eq!(pc["loss_on"], "no-mi");
        assert_eq!(
            pc["design"],
            "masa.en.inst-last.no-mi.natural.pu.text.no-cot.p0.raw"
        );
        let alpaca = line(OutputShape::Alpaca, &r, &design, &sample);
        assert_eq!(
            (alpaca["instruction"].as_str(), alpaca["input"].as_str()),
            (Some(sample.prompt.as_str()), Some(""))
        );
        assert_eq!(alpaca["output"], sample.completion.as_str());
        let sharegpt = line(OutputShape::Sharegpt, &r, &design, &sample);
        assert_eq!(sharegpt["conversations"][0]["from"], "human");
        assert_eq!(
            sharegpt["conversations"][1]["value"],
            sample.completion.as_str()
        );
    }

    #[test]
    fn language_follows_the_id_then_the_text() {
        assert!(names_language("masa.en.lines", TaskKind::Masa));
        assert!(!names_language("lines", TaskKind::Masa));
        assert_eq!(guess_language(&[record("菜很好吃")]), Language::Zh);
        assert_eq!(guess_language(&[record("Great food")]), Language::En);
    }
}
