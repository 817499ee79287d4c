//! The design id: a stable, dot-separated string naming every axis of a [`Design`].
//!
//! Canonical form (what `Display` writes), ten segments:
//!
//! ```text
//! {task}.{language}.{placement}.{loss}.{layout}.{unmentioned}.{labels}.{reasoning}.p{paraphrase}.{wrap}
//! masa.zh.inst-last.no-mi.natural.pu.text.no-cot.p0.raw
//! ```
//!
//! `FromStr` also accepts short forms: an optional task, an optional language, an optional
//! preset name (see [`crate::preset`]), then any axis segments, each axis at most once. Missing
//! axes come from the preset (the task's baseline when none is named); a missing task is `masa`,
//! a missing language the task's study language (`zh` for MASA, `en` otherwise). Examples:
//! `baseline`, `inst-first`, `ner.es-sde`, `event.zh.heuristic.p2`, `masa.en.lines.num`.

use std::fmt;
use std::str::FromStr;

use crate::design::{
    Design, LabelForm, Language, Layout, LossOn, Placement, Reasoning, Unmentioned, Wrap,
};
use crate::error::FormatError;
use crate::preset;
use sde_data::TaskKind;

/// An option that has a fixed segment in design ids.
pub trait Segment: Sized + Copy + 'static {
    /// Every option, in a fixed order.
    const ALL: &'static [Self];
    /// Name of the axis in error messages.
    const AXIS: &'static str;
    /// The option's segment.
    fn segment(self) -> &'static str;
    /// The option written as `segment`, if any.
    fn from_segment(segment: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|o| o.segment() == segment)
    }
}

macro_rules! segments {
    ($ty:ty, $axis:literal, [$($variant:path => $text:literal),+ $(,)?]) => {
        impl Segment for $ty {
            const ALL: &'static [Self] = &[$($variant),+];
            const AXIS: &'static str = $axis;
            fn segment(self) -> &'static str {
                match self { $($variant => $text),+ }
            }
        }
    };
}

segments!(TaskKind, "task", [TaskKind::Masa => "masa", TaskKind::Ner => "ner", TaskKind::Event => "event"]);
segments!(Language, "language", [Language::En => "en", Language::Zh => "zh"]);
segments!(Placement, "placement", [
    Placement::InstFirst => "inst-first",
    Placement::InstLast => "inst-last",
    Placement::NoInst => "no-inst",
]);
segments!(LossOn, "loss", [LossOn::Completion => "no-mi", LossOn::PromptAndCompletion => "mi"]);
segments!(Layout, "layout", [
    Layout::Natural => "natural",
    Layout::Lines => "lines",
    Layout::Json => "json",
    Layout::Tuples => "tuples",
]);
segments!(Unmentioned, "unmentioned", [Unmentioned::Placeholder => "pu", Unmentioned::Omit => "ou"]);
segments!(LabelForm, "labels", [LabelForm::Text => "text", LabelForm::Numeric => "num"]);
segments!(Reasoning, "reasoning", [
    Reasoning::None => "no-cot",
    Reasoning::Cot => "cot",
    Reasoning::ReverseCot => "rcot",
]);
segments!(Wrap, "wrap", [Wrap::Raw => "raw", Wrap::InstTags => "inst-tags", Wrap::Chat => "chat"]);

/// The language the study used for a task: Chinese for MASA, English for NER and events.
pub fn study_language(task: TaskKind) -> Language {
    match task {
        TaskKind::Masa => Language::Zh,
        TaskKind::Ner | TaskKind::Event => Language::En,
    }
}

impl fmt::Display for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}.{}.{}.{}.{}.p{}.{}",
            self.task.segment(),
            self.language.segment(),
            self.placement.segment(),
            self.loss_on.segment(),
            self.layout.segment(),
            self.unmentioned.segment(),
            self.labels.segment(),
            self.reasoning.segment(),
            self.paraphrase,
            self.wrap.segment(),
        )
    }
}

impl FromStr for Design {
    type Err = FormatError;

    fn from_str(id: &str) -> Result<Design, FormatError> {
        Design::parse_for(id, TaskKind::Masa, None)
    }
}

impl Design {
    /// Parses a design id, taking the task and language from `task` / `language` when the id
    /// does not name them (`language: None` means the task's study language).
    pub fn parse_for(
        id: &str,
        task: TaskKind,
        language: Option<Language>,
    ) -> Result<Design, FormatError> {
        let mut segments: Vec<&str> = id.trim().split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(FormatError::UnknownSegment {
                id: id.to_string(),
                segment: String::new(),
                expected: "a non-empty segment between dots".to_string(),
            });
        }
        let mut task = task;
        let mut language = language;
        let mut rest = &mut segments[..];
        if let Some(t) = rest.first().and_then(|s| TaskKind::from_segment(s)) {
            task = t;
            rest = &mut rest[1..];
        }
        if let Some(l) = rest.first().and_then(|s| Language::from_segment(s)) {
            language = Some(l);
            rest = &mut rest[1..];
        }
        let language = language.unwrap_or_else(|| study_language(task));
        let mut design = Design::baseline(task, language);
        if let Some(first) = rest.first()
            && let Some(found) = preset::find(task, language, first)
        {
            design = found;
            rest = &mut rest[1..];
        }
        let mut seen: Vec<(&'static str, &str)> = Vec::new();
        for &mut segment in rest {
            let axis =
                design
                    .apply_segment(segment)
                    .ok_or_else(|| FormatError::UnknownSegment {
                        id: id.to_string(),
                        segment: segment.to_string(),
                        expected: expected_segments(task),
                    })?;
            if let Some((_, first)) = seen.iter().find(|(a, _)| *a == axis) {
                return Err(FormatError::DuplicateAxis {
                    id: id.to_string(),
                    axis,
                    first: first.to_string(),
                    second: segment.to_string(),
                });
            }
            seen.push((axis, segment));
        }
        Ok(design)
    }

    /// Sets the axis that `segment` names; returns the axis name, or `None` if the segment
    /// names no axis option.
    fn apply_segment(&mut self, segment: &str) -> Option<&'static str> {
        fn set<T: Segment>(slot: &mut T, segment: &str) -> Option<&'static str> {
            T::from_segment(segment).map(|v| {
                *slot = v;
                T::AXIS
            })
        }
        if let Some(n) = segment.strip_prefix('p')
            && let Ok(n) = n.parse::<u8>()
            && n <= 2
            && segment.len() == 2
        {
            self.paraphrase = n;
            return Some("paraphrase");
        }
        set(&mut self.placement, segment)
            .or_else(|| set(&mut self.loss_on, segment))
            .or_else(|| set(&mut self.layout, segment))
            .or_else(|| set(&mut self.unmentioned, segment))
            .or_else(|| set(&mut self.labels, segment))
            .or_else(|| set(&mut self.reasoning, segment))
            .or_else(|| set(&mut self.wrap, segment))
    }
}

fn expected_segments(task: TaskKind) -> String {
    fn all<T: Segment>() -> String {
        T::ALL
            .iter()
            .map(|o| o.segment())
            .collect::<Vec<_>>()
            .join("|")
    }
    format!(
        "a task ({}), a language ({}), a preset ({}) or an axis option: {}, {}, {}, {}, {}, {}, p0|p1|p2, {}",
        all::<TaskKind>(),
        all::<Language>(),
        preset::names(task).join("|"),
        all::<Placement>(),
        all::<LossOn>(),
        all::<Layout>(),
        all::<Unmentioned>(),
        all::<LabelForm>(),
        all::<Reasoning>(),
        all::<Wrap>(),
    )
}
