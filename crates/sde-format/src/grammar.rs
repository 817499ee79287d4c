//! The exact vocabulary and separators of a design's completions, shared with the parser.
//!
//! Every completion is a list of *items*, one per target (a MASA aspect, or an entity / event
//! type with its names), laid out by [`Layout`]:
//!
//! | layout  | item                                              | between items | after the last |
//! |---------|---------------------------------------------------|---------------|----------------|
//! | natural | `key{key_value_sep}value`                         | `item_sep`    | `terminator`   |
//! | lines   | `key{key_value_sep}value`                         | `\n`          | nothing        |
//! | json    | `{"{json.target}": key, "{json.value}": value}`   | `\n`          | nothing        |
//! | tuples  | `["key", "value"]` (`tuple_sep` after each comma) | `\n`          | nothing        |
//!
//! With reasoning, the item also carries the evidence: in natural and lines layouts as a JSON
//! string literal before (CoT) or after (reverse CoT) the value, separated by `evidence_sep`; in
//! JSON records as a `json.evidence` field before or after the value field; in tuples as a middle
//! or last element. A completion with no item at all is [`Grammar::empty`].

use sde_data::{Domain, Sentiment, TaskKind};

use crate::design::{Design, LabelForm, Language, Layout, Reasoning, Unmentioned};

/// How names inside a value are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quote {
    /// Written as is.
    None,
    /// Python `repr` of a string: single quotes, double quotes when the name contains a
    /// single quote and no double quote (the study's GENIA targets come from `str(list)`).
    Python,
}

/// Field names of JSON records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonKeys {
    /// The field naming the target (`方面`, `aspect`, `entity_type`, `event_type` ...).
    pub target: &'static str,
    /// The field holding the label or names (`情感`, `sentiment`, `entity_names`, `trigger word` ...).
    pub value: &'static str,
    /// The field holding the evidence under reasoning designs (`描述`, `evidence`).
    pub evidence: &'static str,
}

/// One target as written in completions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetName {
    /// The domain key (aspect key, entity or event type).
    pub key: String,
    /// The display name in the design's language.
    pub name: String,
    /// How it is written: the display name in the design's language, or its 0-based position
    /// in the domain for numeric NER / event labels.
    pub text: String,
}

/// Everything a parser needs to read a design's completions back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    /// The design.
    pub design: Design,
    /// Targets in canonical (domain) order.
    pub targets: Vec<TargetName>,
    /// MASA only: the word (or number) written for each sentiment, in [`Sentiment::ALL`] order.
    pub sentiments: Vec<(Sentiment, String)>,
    /// Between a target and its value in natural and lines layouts.
    pub key_value_sep: &'static str,
    /// Between items in the natural layout.
    pub item_sep: &'static str,
    /// After the last item in the natural layout.
    pub terminator: &'static str,
    /// Between names of one target (NER and events).
    pub name_sep: &'static str,
    /// Between the evidence literal and the value.
    pub evidence_sep: &'static str,
    /// Quoting of target names in natural and lines layouts (NER: Python quotes).
    pub key_quote: Quote,
    /// Quoting of names inside values (NER: Python quotes).
    pub name_quote: Quote,
    /// The value written for a target without names under PU, in natural and lines layouts
    /// (NER `''`, events `NONE`); for tuples the name is [`Grammar::tuple_placeholder`] and for JSON
    /// records an empty list. MASA writes the unmentioned label instead.
    pub placeholder: &'static str,
    /// The name written in a placeholder tuple (NER: empty, events: `NONE`).
    pub tuple_placeholder: &'static str,
    /// After each comma inside a tuple (NER: nothing, as the study's `["protein","IL-2"]`).
    pub tuple_sep: &'static str,
    /// JSON record field names.
    pub json: JsonKeys,
    /// The whole completion when there is no item (OU with nothing mentioned): empty, or `[]`
    /// for event tuples.
    pub empty: &'static str,
    /// Evidence written for an unmentioned target under reasoning designs.
    pub absent_evidence: &'static str,
}

impl Grammar {
    /// The grammar of `design` over `domain`.
    pub fn new(design: &Design, domain: &Domain) -> Grammar {
        let zh = design.language == Language::Zh;
        let task = design.task;
        let targets = domain
            .aspects
            .iter()
            .enumerate()
            .map(|(i, a)| TargetName {
                key: a.key.clone(),
                name: if zh { a.zh.clone() } else { a.en.clone() },
                text: if task != TaskKind::Masa && design.labels == LabelForm::Numeric {
                    i.to_string()
                } else if zh {
                    a.zh.clone()
                } else {
                    a.en.clone()
                },
            })
            .collect();
        let sentiments = if task == TaskKind::Masa {
            Sentiment::ALL
                .iter()
                .map(|&s| {
                    let word = match (design.labels, zh) {
                        (LabelForm::Numeric, _) => s.numeric().to_string(),
                        (LabelForm::Text, true) => s.zh().to_string(),
                        (LabelForm::Text, false) => s.en().to_string(),
                    };
                    (s, word)
                })
                .collect()
        } else {
            Vec::new()
        };
        let (key_value_sep, item_sep, terminator, name_sep) = match (task, zh) {
            (TaskKind::Masa, true) => ("：", "，", "。", "，"),
            (TaskKind::Masa, false) => (": ", ", ", ".", ", "),
            (_, true) => ("：", "；", "", "，"),
            (_, false) => (": ", "; ", "", ", "),
        };
        let quote = if task == TaskKind::Ner {
            Quote::Python
        } else {
            Quote::None
        };
        let json = match (task, zh) {
            (TaskKind::Masa, true) => JsonKeys {
                target: "方面",
                value: "情感",
                evidence: "描述",
            },
            (TaskKind::Masa, false) => JsonKeys {
                target: "aspect",
                value: "sentiment",
                evidence: "evidence",
            },
            (TaskKind::Ner, true) => JsonKeys {
                target: "实体类型",
                value: "实体名称",
                evidence: "描述",
            },
            (TaskKind::Ner, false) => JsonKeys {
                target: "entity_type",
                value: "entity_names",
                evidence: "evidence",
            },
            (TaskKind::Event, true) => JsonKeys {
                target: "事件类型",
                value: "触发词",
                evidence: "描述",
            },
            (TaskKind::Event, false) => JsonKeys {
                target: "event_type",
                value: "trigger word",
                evidence: "evidence",
            },
        };
        let (placeholder, tuple_placeholder) = match (task, zh) {
            (TaskKind::Masa, _) => ("", ""),
            (TaskKind::Ner, _) => ("''", ""),
            (TaskKind::Event, true) => ("无", "无"),
            (TaskKind::Event, false) => ("NONE", "NONE"),
        };
        let empty = if task == TaskKind::Event && design.layout == Layout::Tuples {
            "[]"
        } else {
            ""
        };
        let absent_evidence = match (task, zh) {
            (TaskKind::Masa, true) => "评论中没有提到这个方面",
            (TaskKind::Masa, false) => "the review does not mention this aspect",
            (TaskKind::Ner, true) => "句子中没有这类实体",
            (TaskKind::Ner, false) => "the sentence mentions no entity of this type",
            (TaskKind::Event, true) => "句子中没有这类事件",
            (TaskKind::Event, false) => "the sentence mentions no event of this type",
        };
        Grammar {
            design: *design,
            targets,
            sentiments,
            key_value_sep,
            item_sep,
            terminator,
            name_sep,
            evidence_sep: " ",
            key_quote: quote,
            name_quote: quote,
            placeholder,
            tuple_placeholder,
            tuple_sep: if task == TaskKind::Ner { "" } else { " " },
            json,
            empty,
            absent_evidence,
        }
    }

    /// The word written for `sentiment` (MASA), e.g. `正面`, `positive` or `1`.
    pub fn sentiment_word(&self, sentiment: Sentiment) -> &str {
        self.sentiments
            .iter()
            .find(|(s, _)| *s == sentiment)
            .map_or("", |(_, w)| w.as_str())
    }

    /// The sentiment written as `word`, if any (exact match).
    pub fn sentiment_of(&self, word: &str) -> Option<Sentiment> {
        self.sentiments
            .iter()
            .find(|(_, w)| w == word)
            .map(|(s, _)| *s)
    }

    /// The domain key of the target written as `text`, if any (exact match).
    pub fn target_key(&self, text: &str) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.text == text)
            .map(|t| t.key.as_str())
    }

    /// Whether every target is written even when unmentioned (PU).
    pub fn placeholders(&self) -> bool {
        self.design.unmentioned == Unmentioned::Placeholder
    }

    /// Where the evidence goes relative to the value, if the design has reasoning.
    pub fn reasoning(&self) -> Reasoning {
        self.design.reasoning
    }

    /// A target key as written in natural and lines layouts (quoted for NER).
    pub fn quote_key(&self, text: &str) -> String {
        quote(self.key_quote, text)
    }

    /// A name as written inside a value (quoted for NER).
    pub fn quote_name(&self, text: &str) -> String {
        quote(self.name_quote, text)
    }
}

/// `text` quoted by `style`.
pub fn quote(style: Quote, text: &str) -> String {
    match style {
        Quote::None => text.to_string(),
        Quote::Python => python_repr(text),
    }
}

/// Python's `repr` of a string: single quotes unless the text has a single quote and no
/// double quote; backslashes, the chosen quote and `\n` `\r` `\t` escaped.
pub fn python_repr(text: &str) -> String {
    let q = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(q);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// A JSON string literal as Python's `json.dumps(ensure_ascii=False)` writes it.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}
