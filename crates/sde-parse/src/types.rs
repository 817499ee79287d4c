//! The public vocabulary of the parser: modes, labels, statuses, repairs and issues.

use sde_data::{Sentiment, Span};
use serde::{Deserialize, Serialize};

/// How forgiving the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The design's exact grammar. Surrounding whitespace is ignored; anything else that
    /// deviates makes the affected item missing, extra or invalid.
    Strict,
    /// The exact grammar first; if that is not clean, tolerant repairs (code fences, list
    /// markers, full-width/half-width punctuation, surrounding prose, JSON repairs, stray
    /// reasoning) and the study's relaxations (aspect key by substring, sentiment synonyms,
    /// missing aspect as unmentioned). Every repair used is named in [`Status::Repaired`].
    Lenient,
    /// The study's own evaluator, reproduced exactly (digest §7): the MASA soft parser with
    /// its relaxations and format-error rules, the GENIA per-design splitters and the MAVEN
    /// per-format converters, quirks included. Use it to reproduce the study's numbers.
    Study,
}

/// One predicted entity of a nested-NER output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityMention {
    /// Entity type as written by the model (e.g. `protein`).
    pub kind: String,
    /// Entity name as written by the model.
    pub name: String,
    /// Byte span of `name` in the source sentence, once aligned (see [`Parsed::align`]).
    pub span: Option<Span>,
    /// Token range `start..end` of `name` in the space-tokenized source sentence, when the
    /// byte span falls on token boundaries.
    pub tokens: Option<(usize, usize)>,
}

/// One predicted event of an event-detection output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventMention {
    /// Event type as written by the model (e.g. `Attack`); for numeric designs, the type the
    /// index names.
    pub kind: String,
    /// Trigger word(s) as written by the model.
    pub trigger: String,
    /// Byte span of `trigger` in the source sentence, once aligned (see [`Parsed::align`]).
    pub span: Option<Span>,
}

/// The labels recovered from one output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "task", content = "labels", rename_all = "kebab-case")]
pub enum Labels {
    /// Multi-aspect sentiment: one label per domain aspect, in domain order. Aspects the
    /// output does not (validly) mention are [`Sentiment::Unmentioned`].
    Masa(Vec<Sentiment>),
    /// Nested NER: entities in output order, duplicates removed (except in [`Mode::Study`],
    /// which keeps them as the study's matcher expects).
    Ner(Vec<EntityMention>),
    /// Event detection: events in output order, duplicates removed (except in
    /// [`Mode::Study`]).
    Event(Vec<EventMention>),
}

/// A tolerant repair the lenient parser applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Repair {
    /// Whitespace other than at the ends of the output (blank lines, spaces around
    /// separators) was ignored.
    Whitespace,
    /// A Markdown code fence around the answer was removed.
    CodeFence,
    /// Bullets or numbering in front of items were removed.
    ListMarkers,
    /// Half-width punctuation was read as the design's full-width punctuation, or the other
    /// way round.
    PunctuationWidth,
    /// Prose before or after the answer was dropped.
    SurroundingProse,
    /// Separators other than the design's (another item separator, a missing terminator,
    /// another layout) were accepted.
    Separators,
    /// Trailing commas in JSON were dropped.
    JsonTrailingComma,
    /// Single-quoted JSON strings were read.
    JsonSingleQuotes,
    /// Unquoted JSON keys or values were read.
    JsonUnquoted,
    /// Unclosed JSON strings, objects or arrays at the end of the output were closed.
    JsonUnclosed,
    /// Reasoning (evidence/description) the design does not ask for was stripped.
    EvidenceStripped,
    /// An aspect or type name was matched by substring or synonym, not exactly
    /// (the study's aspect relaxation).
    KeyRelaxed,
    /// A label was matched by synonym or substring (the study's sentiment relaxation), or a
    /// numeric label was read in a text-label design or the other way round.
    LabelRelaxed,
    /// A key appeared more than once; the first occurrence was kept.
    DuplicateKey,
    /// A duplicate entity or event was dropped.
    DuplicateItem,
}

/// Why an output is only partly usable: counts of keys (aspects, entity or event types)
/// that were missing, extra or had invalid values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartialCounts {
    /// Keys the design requires (PU) that the output lacks.
    pub missing: u32,
    /// Keys or items the output has that the design/domain does not know, or lines that do
    /// not parse.
    pub extra: u32,
    /// Known keys whose value is not a valid label.
    pub invalid: u32,
}

/// The one status every output gets.
///
/// Precedence, highest first: `Empty`, `Unparseable`, `Truncated`, `Partial`, `Repaired`,
/// `Clean`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// Exactly the design's grammar.
    Clean,
    /// Complete after the listed repairs (sorted, each once).
    Repaired {
        /// The repairs applied.
        repairs: Vec<Repair>,
    },
    /// Some keys are missing, extra or invalid.
    Partial(PartialCounts),
    /// The output stops inside an item (generation limit); labels hold what came before.
    Truncated,
    /// Non-empty, but nothing usable was found.
    Unparseable,
    /// Empty or whitespace only. Under OU for MASA, NER and ED an empty output is a valid
    /// "nothing mentioned" answer and is `Clean` instead.
    Empty,
}

impl Status {
    /// Short kebab-case name (`clean`, `repaired`, `partial`, `truncated`, `unparseable`,
    /// `empty`), for tables.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Clean => "clean",
            Status::Repaired { .. } => "repaired",
            Status::Partial(_) => "partial",
            Status::Truncated => "truncated",
            Status::Unparseable => "unparseable",
            Status::Empty => "empty",
        }
    }

    /// Whether the output needs no repair at all.
    pub fn is_clean(&self) -> bool {
        matches!(self, Status::Clean)
    }

    /// Whether this counts as a format error under this crate's definition: anything but
    /// clean or repaired.
    pub fn is_format_error(&self) -> bool {
        !matches!(self, Status::Clean | Status::Repaired { .. })
    }
}

/// What kind of problem an [`Issue`] records; fieldless, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueKind {
    /// See [`Issue::Empty`].
    Empty,
    /// See [`Issue::Truncated`].
    Truncated,
    /// See [`Issue::Unparseable`].
    Unparseable,
    /// See [`Issue::MissingKey`].
    MissingKey,
    /// See [`Issue::UnknownKey`].
    UnknownKey,
    /// See [`Issue::InvalidValue`].
    InvalidValue,
    /// See [`Issue::DuplicateKey`].
    DuplicateKey,
    /// See [`Issue::DuplicateItem`].
    DuplicateItem,
    /// See [`Issue::BadItem`].
    BadItem,
    /// See [`Issue::UndefinedType`].
    UndefinedType,
    /// See [`Issue::SpanNotInText`].
    SpanNotInText,
    /// See [`Issue::Repaired`].
    Repaired,
}

/// One thing the parser noticed about an output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "issue", rename_all = "kebab-case")]
pub enum Issue {
    /// The output is empty or whitespace only.
    Empty,
    /// The output stops inside an item.
    Truncated,
    /// Nothing usable was found in a non-empty output.
    Unparseable,
    /// A key the design requires is absent (PU designs).
    MissingKey {
        /// The domain key (aspect key, entity or event type).
        key: String,
    },
    /// A key that matches no domain aspect or type.
    UnknownKey {
        /// The key as written.
        key: String,
        /// 1-based line of the output it is on (0 when unknown).
        line: usize,
    },
    /// A known key with a value that is not a valid label.
    InvalidValue {
        /// The domain key.
        key: String,
        /// The value as written.
        value: String,
    },
    /// A key given more than once; the first occurrence wins.
    DuplicateKey {
        /// The domain key.
        key: String,
    },
    /// An entity or event given more than once; dropped.
    DuplicateItem {
        /// Type as written.
        kind: String,
        /// Name or trigger as written.
        text: String,
    },
    /// A fragment that does not follow the grammar and was skipped.
    BadItem {
        /// 1-based line of the output the fragment starts on.
        line: usize,
        /// The fragment.
        text: String,
    },
    /// An entity or event type outside the domain (kept as a prediction, as the study does).
    UndefinedType {
        /// Type as written.
        kind: String,
    },
    /// A predicted name or trigger that does not occur in the source text.
    SpanNotInText {
        /// Type as written.
        kind: String,
        /// Name or trigger as written.
        text: String,
    },
    /// A repair was applied.
    Repaired {
        /// Which repair.
        repair: Repair,
    },
}

impl Issue {
    /// The issue's kind, for counting.
    pub fn kind(&self) -> IssueKind {
        match self {
            Issue::Empty => IssueKind::Empty,
            Issue::Truncated => IssueKind::Truncated,
            Issue::Unparseable => IssueKind::Unparseable,
            Issue::MissingKey { .. } => IssueKind::MissingKey,
            Issue::UnknownKey { .. } => IssueKind::UnknownKey,
            Issue::InvalidValue { .. } => IssueKind::InvalidValue,
            Issue::DuplicateKey { .. } => IssueKind::DuplicateKey,
            Issue::DuplicateItem { .. } => IssueKind::DuplicateItem,
            Issue::BadItem { .. } => IssueKind::BadItem,
            Issue::UndefinedType { .. } => IssueKind::UndefinedType,
            Issue::SpanNotInText { .. } => IssueKind::SpanNotInText,
            Issue::Repaired { .. } => IssueKind::Repaired,
        }
    }
}

/// The study evaluator's own format-error classes (digest §7.1, §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyError {
    /// `empty_output`: the output is empty.
    EmptyOutput,
    /// `split_error`: a piece lacks the key/value separator, or a value is unknown.
    SplitError,
    /// `eval_error`: a JSON line did not evaluate (its fallback split succeeded).
    EvalError,
    /// An event-detection JSON line whose trigger is neither a string nor a list
    /// (`trigger format error`).
    TriggerFormat,
    /// NER: a predicted type outside the domain (`num_invalid` in the study's report).
    UndefinedType,
}

/// The result of parsing one output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parsed {
    /// The recovered labels (always present, even for unusable outputs).
    pub labels: Labels,
    /// Exactly one status.
    pub status: Status,
    /// Everything noticed, in order.
    pub issues: Vec<Issue>,
    /// In [`Mode::Study`]: how the study's evaluator classifies the output (`None`: not a
    /// format error). Always `None` in the other modes; see also
    /// [`crate::study_format_error`].
    pub study_error: Option<StudyError>,
}

impl Parsed {
    /// How many issues of `kind` were recorded.
    pub fn count(&self, kind: IssueKind) -> usize {
        self.issues.iter().filter(|i| i.kind() == kind).count()
    }

    /// Whether the study's evaluator counts this output as a format error
    /// (meaningful in [`Mode::Study`]).
    pub fn is_study_format_error(&self) -> bool {
        self.study_error.is_some()
    }
}
