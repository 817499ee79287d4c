//! Named designs: the study's baseline, its one-option variants, ES-SDE, EW-SDE and the
//! heuristic designs of prior work, per task.

use crate::design::{
    Design, LabelForm, Language, Layout, LossOn, Placement, Reasoning, Unmentioned, Wrap,
};
use crate::error::FormatError;
use sde_data::TaskKind;

/// A named design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name, usable as a design id segment.
    pub name: &'static str,
    /// Other names accepted for it (the study's mode strings).
    pub aliases: &'static [&'static str],
    /// One line saying what the preset is.
    pub summary: &'static str,
    /// The design.
    pub design: Design,
}

struct Entry {
    name: &'static str,
    aliases: &'static [&'static str],
    summary: &'static str,
    apply: fn(&mut Design),
}

const COMMON: &[Entry] = &[
    Entry {
        name: "baseline",
        aliases: &["instruction-last", "inst-last"],
        summary: "the study's baseline: Inst-last, No-MI, Natural, PU, text labels, no CoT",
        apply: |_| {},
    },
    Entry {
        name: "inst-first",
        aliases: &["instruction-first"],
        summary: "baseline with the instruction before the text",
        apply: |d| d.placement = Placement::InstFirst,
    },
    Entry {
        name: "no-inst",
        aliases: &["no-instruction", "text2label"],
        summary: "baseline without instruction (in-domain only)",
        apply: |d| d.placement = Placement::NoInst,
    },
    Entry {
        name: "mi",
        aliases: &["input-modeling"],
        summary: "baseline with the prompt in the loss",
        apply: |d| d.loss_on = LossOn::PromptAndCompletion,
    },
    Entry {
        name: "lines",
        aliases: &["lines-output"],
        summary: "baseline with one target per line",
        apply: |d| d.layout = Layout::Lines,
    },
    Entry {
        name: "json",
        aliases: &["json-output", "dict-output"],
        summary: "baseline with one JSON record per line",
        apply: |d| d.layout = Layout::Json,
    },
    Entry {
        name: "ou",
        aliases: &["omit-unmentioned", "mentioned-only"],
        summary: "baseline with unmentioned targets omitted",
        apply: |d| d.unmentioned = Unmentioned::Omit,
    },
    Entry {
        name: "num",
        aliases: &["numerical-label", "digital-label"],
        summary: "baseline with numeric labels",
        apply: |d| d.labels = LabelForm::Numeric,
    },
    Entry {
        name: "cot",
        aliases: &["desc-senti"],
        summary: "baseline with evidence before each label (JSON records, as the study's CoT samples)",
        apply: |d| {
            d.layout = Layout::Json;
            d.reasoning = Reasoning::Cot;
        },
    },
    Entry {
        name: "rcot",
        aliases: &["rev-cot", "senti-desc"],
        summary: "baseline with evidence after each label (JSON records, as the study's R-CoT samples)",
        apply: |d| {
            d.layout = Layout::Json;
            d.reasoning = Reasoning::ReverseCot;
        },
    },
    Entry {
        name: "es-sde",
        aliases: &["ES-SDE", "good1", "maven-lines"],
        summary: "empirically strong: Inst-first, No-MI, Lines, PU, text labels",
        apply: |d| {
            d.placement = Placement::InstFirst;
            d.layout = Layout::Lines;
        },
    },
    Entry {
        name: "ew-sde",
        aliases: &["EW-SDE", "weak1", "maven-ou"],
        summary: "empirically weak: Inst-last, No-MI, Natural, OU, text labels",
        apply: |d| d.unmentioned = Unmentioned::Omit,
    },
];

const MASA: &[Entry] = &[Entry {
    name: "heuristic",
    aliases: &[],
    summary: "the heuristic MASA design is the study's baseline",
    apply: |_| {},
}];

const NER: &[Entry] = &[
    Entry {
        name: "heuristic",
        aliases: &["default"],
        summary: "prior work's design (GENIA `default`): Inst-first, one [\"type\",\"name\"] tuple per line, OU",
        apply: heuristic,
    },
    Entry {
        name: "es-sde-json",
        aliases: &["good2"],
        summary: "ES-SDE with one JSON record per type (GENIA `good2`)",
        apply: |d| {
            d.placement = Placement::InstFirst;
            d.layout = Layout::Json;
        },
    },
];

const EVENT: &[Entry] = &[
    Entry {
        name: "heuristic",
        aliases: &[],
        summary: "prior work's design (MAVEN `heuristic`): Inst-first, one [\"type\", \"trigger\"] tuple per line, OU",
        apply: heuristic,
    },
    Entry {
        name: "es-sde-json",
        aliases: &["maven-json"],
        summary: "ES-SDE with one JSON record per type (MAVEN `json`)",
        apply: |d| {
            d.placement = Placement::InstFirst;
            d.layout = Layout::Json;
        },
    },
    Entry {
        name: "numerical",
        aliases: &["maven-numerical"],
        summary: "MAVEN `numerical`: Inst-first, `;`-joined, NONE placeholders, type numbers",
        apply: |d| {
            d.placement = Placement::InstFirst;
            d.labels = LabelForm::Numeric;
        },
    },
];

fn heuristic(d: &mut Design) {
    d.placement = Placement::InstFirst;
    d.layout = Layout::Tuples;
    d.unmentioned = Unmentioned::Omit;
}

fn task_entries(task: TaskKind) -> &'static [Entry] {
    match task {
        TaskKind::Masa => MASA,
        TaskKind::Ner => NER,
        TaskKind::Event => EVENT,
    }
}

fn entries(task: TaskKind) -> impl Iterator<Item = &'static Entry> {
    COMMON.iter().chain(task_entries(task))
}

impl Design {
    /// The study's baseline for a task: Inst-last, No-MI, Natural, PU, text labels, no CoT,
    /// paraphrase 0. NER designs wrap prompts in `[INST]…[/INST]` as the study's GENIA samples
    /// do; MASA and event designs are raw text.
    pub fn baseline(task: TaskKind, language: Language) -> Design {
        Design {
            task,
            language,
            placement: Placement::InstLast,
            loss_on: LossOn::Completion,
            layout: Layout::Natural,
            unmentioned: Unmentioned::Placeholder,
            labels: LabelForm::Text,
            reasoning: Reasoning::None,
            paraphrase: 0,
            wrap: match task {
                TaskKind::Ner => Wrap::InstTags,
                TaskKind::Masa | TaskKind::Event => Wrap::Raw,
            },
        }
    }

    /// The preset `name` (or one of its aliases) for a task and language.
    pub fn preset(task: TaskKind, language: Language, name: &str) -> Result<Design, FormatError> {
        find(task, language, name).ok_or_else(|| FormatError::UnknownPreset {
            task,
            name: name.to_string(),
            known: names(task).join(", "),
        })
    }

    /// Every preset of a task and language, in a fixed order.
    pub fn presets(task: TaskKind, language: Language) -> Vec<Preset> {
        entries(task)
            .map(|e| Preset {
                name: e.name,
                aliases: e.aliases,
                summary: e.summary,
                design: build(e, task, language),
            })
            .collect()
    }

    /// This design with another instruction paraphrase (`0..=2`).
    pub fn with_paraphrase(self, paraphrase: u8) -> Result<Design, FormatError> {
        if paraphrase > 2 {
            return Err(FormatError::Paraphrase { index: paraphrase });
        }
        Ok(Design { paraphrase, ..self })
    }
}

fn build(entry: &Entry, task: TaskKind, language: Language) -> Design {
    let mut design = Design::baseline(task, language);
    (entry.apply)(&mut design);
    design
}

/// The preset named `name` or aliased so, if any.
pub(crate) fn find(task: TaskKind, language: Language, name: &str) -> Option<Design> {
    entries(task)
        .find(|e| e.name == name || e.aliases.contains(&name))
        .map(|e| build(e, task, language))
}

/// Preset names of a task, in order.
pub(crate) fn names(task: TaskKind) -> Vec<&'static str> {
    entries(task).map(|e| e.name).collect()
}
