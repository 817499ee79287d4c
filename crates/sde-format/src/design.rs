//! The design axes.

use sde_data::TaskKind;
use serde::{Deserialize, Serialize};

/// Language of the templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Language {
    /// English templates.
    En,
    /// Chinese templates (the study's MASA language).
    Zh,
}

/// Where the instruction goes relative to the task text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Instruction before the text (the study's Inst-first).
    InstFirst,
    /// Instruction after the text (the study's Inst-last, the MASA baseline).
    InstLast,
    /// No instruction: text straight to answer (the study's No-Inst; in-domain only).
    NoInst,
}

/// Which tokens the training loss covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossOn {
    /// Completion (and EOS) only: the study's No-MI, the baseline.
    Completion,
    /// Prompt and completion: the study's MI ("input modeling").
    PromptAndCompletion,
}

/// How several predictions are laid out in the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// All on one line, joined by a separator (the MASA baseline).
    Natural,
    /// One target per line (part of ES-SDE).
    Lines,
    /// One JSON object per line.
    Json,
    /// One `["type", "name"]` tuple per line: the heuristic NER and ED layout of prior work.
    Tuples,
}

/// What happens to targets the text does not mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmentioned {
    /// Every target is output; absent ones get a placeholder (the study's PU, the baseline).
    Placeholder,
    /// Only mentioned targets are output (the study's OU).
    Omit,
}

/// How labels are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelForm {
    /// Words (positive / 正面 ...), the baseline.
    Text,
    /// Numbers (1, 0, -1, -2), the study's NumLabel.
    Numeric,
}

/// Whether and where the completion carries reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reasoning {
    /// Answer only, the baseline.
    None,
    /// Evidence first, then the label (the study's CoT).
    Cot,
    /// Label first, then the evidence (the study's R-CoT).
    ReverseCot,
}

/// How the rendered prompt is wrapped for a chat model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wrap {
    /// Raw text, no wrapping (the study's MASA and MAVEN samples).
    Raw,
    /// Hand-written Llama-2 tags: `[INST]{prompt}[/INST]` (the study's GENIA samples).
    InstTags,
    /// The model's own chat template, supplied by the caller at render time
    /// (see [`crate::ChatTemplate`]).
    Chat,
}

/// One sample design: an option on every axis, plus task and language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Design {
    /// Task family the design renders.
    pub task: TaskKind,
    /// Template language.
    pub language: Language,
    /// Instruction placement.
    pub placement: Placement,
    /// Loss scope (No-MI or MI).
    pub loss_on: LossOn,
    /// Output layout.
    pub layout: Layout,
    /// Unmentioned-target handling (PU or OU).
    pub unmentioned: Unmentioned,
    /// Label form.
    pub labels: LabelForm,
    /// Reasoning order.
    pub reasoning: Reasoning,
    /// Instruction paraphrase, `0..=2` (`0` is the study's wording where it is known).
    pub paraphrase: u8,
    /// Prompt wrapping for chat models.
    pub wrap: Wrap,
}
