//! The crate's error type.

use sde_data::TaskKind;

/// Everything that can go wrong when parsing a design id or rendering a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A segment of a design id names no task, language, preset or axis option.
    #[error("design id `{id}`: unknown segment `{segment}` (expected {expected})")]
    UnknownSegment {
        /// The whole id.
        id: String,
        /// The offending segment.
        segment: String,
        /// What could have been written there.
        expected: String,
    },
    /// Two segments of a design id set the same axis.
    #[error("design id `{id}`: the {axis} axis is set twice (`{first}` and `{second}`)")]
    DuplicateAxis {
        /// The whole id.
        id: String,
        /// The axis set twice.
        axis: &'static str,
        /// First segment setting it.
        first: String,
        /// Second segment setting it.
        second: String,
    },
    /// No preset of this name exists for the task.
    #[error("no preset `{name}` for task {task:?} (known: {known})")]
    UnknownPreset {
        /// Task asked for.
        task: TaskKind,
        /// Preset name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// The paraphrase index is out of range.
    #[error("instruction paraphrase {index} does not exist (use 0, 1 or 2)")]
    Paraphrase {
        /// The index asked for.
        index: u8,
    },
    /// The record's task differs from the design's.
    #[error("record `{record}` is a {record_task:?} record but the design renders {design_task:?}")]
    TaskMismatch {
        /// Record id.
        record: String,
        /// Task of the record.
        record_task: TaskKind,
        /// Task of the design.
        design_task: TaskKind,
    },
    /// The domain has no aspects (or entity / event types).
    #[error("domain `{domain}` has no aspects or types to ask about")]
    EmptyDomain {
        /// Domain name.
        domain: String,
    },
    /// A no-instruction design cannot name the aspects of another domain.
    #[error(
        "design `{design}` has no instruction, so it cannot ask about domain `{test_domain}` \
         after training on `{train_domain}` (out-of-domain prompts need an instruction)"
    )]
    NoInstructionOod {
        /// Design id.
        design: String,
        /// Training domain name.
        train_domain: String,
        /// Test domain name.
        test_domain: String,
    },
    /// A span of a record does not lie on the record's text.
    #[error(
        "record `{record}`: {field} span {start}..{end} is outside the text or not on a char boundary"
    )]
    BadSpan {
        /// Record id.
        record: String,
        /// Which field carries the span.
        field: &'static str,
        /// Span start.
        start: usize,
        /// Span end.
        end: usize,
    },
    /// An entity's token range does not lie in the record's tokens.
    #[error("record `{record}`: entity `{entity}` covers tokens {start}..{end} of {len}")]
    BadTokenRange {
        /// Record id.
        record: String,
        /// Entity text.
        entity: String,
        /// First token.
        start: usize,
        /// One past the last token.
        end: usize,
        /// Number of tokens in the record.
        len: usize,
    },
    /// The design wraps prompts in the model's chat template but none was supplied.
    #[error(
        "design `{design}` wraps prompts in the model's chat template, but no template was supplied"
    )]
    ChatTemplateMissing {
        /// Design id.
        design: String,
    },
    /// The chat template failed to compile or render.
    #[error("chat template `{name}`: {message}")]
    ChatTemplate {
        /// Template name.
        name: String,
        /// The template engine's message.
        message: String,
    },
}
