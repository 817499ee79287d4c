//! Record types shared by every crate downstream of `sde-data`.

use serde::{Deserialize, Serialize};

/// Which task family a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Multi-aspect sentiment analysis: one label per aspect of a domain.
    Masa,
    /// Nested named-entity recognition: typed, possibly overlapping spans.
    Ner,
    /// Event detection: typed trigger words.
    Event,
}

/// The four MASA labels, in the study's metric order (positive, neutral, negative, unmentioned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sentiment {
    /// The aspect is mentioned favourably.
    Positive,
    /// The aspect is mentioned without a clear polarity (or with mixed polarity).
    Neutral,
    /// The aspect is mentioned unfavourably.
    Negative,
    /// The text says nothing about the aspect.
    Unmentioned,
}

impl Sentiment {
    /// All labels in the study's metric order; `Sentiment::ALL[i].index() == i`.
    pub const ALL: [Sentiment; 4] = [
        Sentiment::Positive,
        Sentiment::Neutral,
        Sentiment::Negative,
        Sentiment::Unmentioned,
    ];

    /// Position in [`Sentiment::ALL`] (row/column of the study's confusion matrix).
    pub fn index(self) -> usize {
        match self {
            Sentiment::Positive => 0,
            Sentiment::Neutral => 1,
            Sentiment::Negative => 2,
            Sentiment::Unmentioned => 3,
        }
    }

    /// The study's numeric label: 1 positive, 0 neutral, -1 negative, -2 unmentioned.
    pub fn numeric(self) -> i8 {
        match self {
            Sentiment::Positive => 1,
            Sentiment::Neutral => 0,
            Sentiment::Negative => -1,
            Sentiment::Unmentioned => -2,
        }
    }

    /// Inverse of [`Sentiment::numeric`].
    pub fn from_numeric(value: i8) -> Option<Sentiment> {
        Some(match value {
            1 => Sentiment::Positive,
            0 => Sentiment::Neutral,
            -1 => Sentiment::Negative,
            -2 => Sentiment::Unmentioned,
            _ => return None,
        })
    }

    /// English text label as used in rendered samples.
    pub fn en(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
            Sentiment::Unmentioned => "unmentioned",
        }
    }

    /// Chinese text label, byte-exact to the study (正面/中性/负面/未提及).
    pub fn zh(self) -> &'static str {
        match self {
            Sentiment::Positive => "正面",
            Sentiment::Neutral => "中性",
            Sentiment::Negative => "负面",
            Sentiment::Unmentioned => "未提及",
        }
    }
}

/// A half-open byte range `start..end` into a record's `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    /// First byte of the span.
    pub start: usize,
    /// One past the last byte of the span.
    pub end: usize,
}

impl Span {
    /// The spanned text, or `None` if the span is out of bounds or not on char boundaries.
    pub fn slice<'a>(&self, text: &'a str) -> Option<&'a str> {
        text.get(self.start..self.end)
    }
}

/// One aspect a MASA domain asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AspectDef {
    /// Stable machine key, e.g. `food`.
    pub key: String,
    /// English display name used in English prompts, e.g. `food`.
    pub en: String,
    /// Chinese display name used in Chinese prompts, e.g. `食品评价`.
    pub zh: String,
}

/// A named, ordered list of aspects: the study's D1, D2, `all`, or a dataset's categories.
///
/// Invariant: aspect keys are unique; the order is the canonical order used in prompts,
/// targets and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Domain {
    /// Name of the domain, e.g. `d1`.
    pub name: String,
    /// Aspects in canonical order.
    pub aspects: Vec<AspectDef>,
}

impl Domain {
    /// The aspect with this key, if the domain has it.
    pub fn aspect(&self, key: &str) -> Option<&AspectDef> {
        self.aspects.iter().find(|a| a.key == key)
    }

    /// Aspect keys in canonical order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.aspects.iter().map(|a| a.key.as_str())
    }

    /// A domain from `(key, english, chinese)` triples, in order.
    pub fn from_triples(name: &str, aspects: &[(&str, &str, &str)]) -> Domain {
        Domain {
            name: name.to_string(),
            aspects: aspects
                .iter()
                .map(|(key, en, zh)| AspectDef::new(key, en, zh))
                .collect(),
        }
    }

    /// A domain whose aspects use the same string as key and display names
    /// (entity types for NER, event types for event detection).
    pub fn from_keys<S: AsRef<str>>(name: &str, keys: &[S]) -> Domain {
        Domain {
            name: name.to_string(),
            aspects: keys
                .iter()
                .map(|k| AspectDef::new(k.as_ref(), k.as_ref(), k.as_ref()))
                .collect(),
        }
    }

    /// The study's MASA domain D1 (6 aspects): food, drinks, price, hygiene, staff, parking.
    pub fn study_d1() -> Domain {
        Domain::from_triples("d1", &STUDY_D1)
    }

    /// The study's MASA domain D2 (5 aspects): transport, queueing, serving speed, decor, noise.
    pub fn study_d2() -> Domain {
        Domain::from_triples("d2", &STUDY_D2)
    }

    /// The study's 11-aspect MASA domain: D1 followed by D2.
    pub fn study_all() -> Domain {
        let mut all: Vec<(&str, &str, &str)> = STUDY_D1.to_vec();
        all.extend_from_slice(&STUDY_D2);
        Domain::from_triples("all", &all)
    }

    /// The five GENIA entity types used by nested-NER work, in the study's prompt order.
    pub fn genia() -> Domain {
        Domain::from_keys("genia", &GENIA_TYPES)
    }

    /// The ten MAVEN event types of the study, in the order its heuristic prompt lists them.
    pub fn maven10() -> Domain {
        Domain::from_keys("maven10", &MAVEN10_TYPES)
    }

    /// The number of aspects (entity or event types).
    pub fn len(&self) -> usize {
        self.aspects.len()
    }

    /// Whether the domain has no aspects.
    pub fn is_empty(&self) -> bool {
        self.aspects.is_empty()
    }

    /// The position of `key` in canonical order.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.aspects.iter().position(|a| a.key == key)
    }
}

impl AspectDef {
    /// An aspect from its key and English and Chinese display names.
    pub fn new(key: &str, en: &str, zh: &str) -> AspectDef {
        AspectDef {
            key: key.to_string(),
            en: en.to_string(),
            zh: zh.to_string(),
        }
    }
}

/// The study's D1 aspects as `(key, english, chinese)`, in canonical order.
pub const STUDY_D1: [(&str, &str, &str); 6] = [
    ("food", "food", "食品评价"),
    ("drinks", "drinks", "饮品评价"),
    ("price", "price", "价格水平"),
    ("hygiene", "hygiene", "卫生情况"),
    ("staff", "staff", "服务人员态度"),
    ("parking", "parking", "停车方便程度"),
];

/// The study's D2 aspects as `(key, english, chinese)`, in canonical order.
pub const STUDY_D2: [(&str, &str, &str); 5] = [
    ("transport", "transport", "交通便利程度"),
    ("queueing", "queueing", "排队等候情况"),
    ("serving_speed", "serving speed", "点菜上菜速度"),
    ("decor", "decor", "装修情况"),
    ("noise", "noise", "嘈杂情况"),
];

/// The five GENIA entity types, in the study's prompt order.
pub const GENIA_TYPES: [&str; 5] = ["DNA", "RNA", "protein", "cell_type", "cell_line"];

/// The study's ten MAVEN event types, in its heuristic prompt's order.
pub const MAVEN10_TYPES: [&str; 10] = [
    "Catastrophe",
    "Attack",
    "Hostile_encounter",
    "Causation",
    "Process_start",
    "Competition",
    "Motion",
    "Social_event",
    "Killing",
    "Conquering",
];

/// The gold label of one aspect in one MASA record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AspectLabel {
    /// Aspect key (matches [`AspectDef::key`]).
    pub aspect: String,
    /// Gold sentiment.
    pub sentiment: Sentiment,
    /// Text that supports the label, where the source has it.
    pub evidence: Option<Span>,
}

/// A multi-aspect sentiment record.
///
/// Invariant: at most one label per aspect; an aspect without a label is
/// [`Sentiment::Unmentioned`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MasaRecord {
    /// Stable id, unique within a dataset (e.g. `mams-acsa/train/17`).
    pub id: String,
    /// The review text.
    pub text: String,
    /// Labels of the aspects the source annotates; others are unmentioned.
    pub labels: Vec<AspectLabel>,
}

impl MasaRecord {
    /// The label of `aspect`, [`Sentiment::Unmentioned`] when the record has none.
    pub fn sentiment(&self, aspect: &str) -> Sentiment {
        self.label(aspect)
            .map_or(Sentiment::Unmentioned, |l| l.sentiment)
    }

    /// The full label entry of `aspect`, if present.
    pub fn label(&self, aspect: &str) -> Option<&AspectLabel> {
        self.labels.iter().find(|l| l.aspect == aspect)
    }
}

/// A typed entity mention; spans may nest or overlap with other entities.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    /// Entity type, e.g. `protein`.
    pub kind: String,
    /// First token of the mention.
    pub start_token: usize,
    /// One past the last token of the mention.
    pub end_token: usize,
    /// The mention text (tokens joined by single spaces).
    pub text: String,
}

/// A nested-NER record over a tokenized sentence.
///
/// Invariant: `text == tokens.join(" ")` and every entity's token range lies in `tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NerRecord {
    /// Stable id.
    pub id: String,
    /// The sentence, tokens joined by single spaces.
    pub text: String,
    /// The sentence's tokens.
    pub tokens: Vec<String>,
    /// Entities sorted by (start token, end token, type).
    pub entities: Vec<Entity>,
}

/// One event mention: its type and trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Event {
    /// Event type, e.g. `Attack`.
    pub kind: String,
    /// The trigger word(s) as they appear in the text.
    pub trigger: String,
    /// Byte span of the trigger in the record's text.
    pub span: Span,
}

/// An event-detection record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRecord {
    /// Stable id.
    pub id: String,
    /// The sentence.
    pub text: String,
    /// Events sorted by trigger start.
    pub events: Vec<Event>,
}

/// A record of any task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum Record {
    /// Multi-aspect sentiment.
    Masa(MasaRecord),
    /// Nested NER.
    Ner(NerRecord),
    /// Event detection.
    Event(EventRecord),
}

impl Record {
    /// The record's id.
    pub fn id(&self) -> &str {
        match self {
            Record::Masa(r) => &r.id,
            Record::Ner(r) => &r.id,
            Record::Event(r) => &r.id,
        }
    }

    /// The record's text.
    pub fn text(&self) -> &str {
        match self {
            Record::Masa(r) => &r.text,
            Record::Ner(r) => &r.text,
            Record::Event(r) => &r.text,
        }
    }

    /// The record's task family.
    pub fn task(&self) -> TaskKind {
        match self {
            Record::Masa(_) => TaskKind::Masa,
            Record::Ner(_) => TaskKind::Ner,
            Record::Event(_) => TaskKind::Event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_domains_have_the_papers_aspects_in_order() {
        let d1 = Domain::study_d1();
        assert_eq!(
            d1.keys().collect::<Vec<_>>(),
            ["food", "drinks", "price", "hygiene", "staff", "parking"]
        );
        assert_eq!(
            d1.aspects.iter().map(|a| a.zh.as_str()).collect::<Vec<_>>(),
            [
                "食品评价",
                "饮品评价",
                "价格水平",
                "卫生情况",
                "服务人员态度",
                "停车方便程度"
            ]
        );
        let d2 = Domain::study_d2();
        assert_eq!(
            d2.aspects.iter().map(|a| a.zh.as_str()).collect::<Vec<_>>(),
            [
                "交通便利程度",
                "排队等候情况",
                "点菜上菜速度",
                "装修情况",
                "嘈杂情况"
            ]
        );
        let all = Domain::study_all();
        assert_eq!(all.len(), 11);
        assert_eq!(all.position("transport"), Some(6));
        assert_eq!(all.aspect("serving_speed").unwrap().en, "serving speed");
    }

    #[test]
    fn ner_and_event_domains_list_their_types() {
        assert_eq!(
            Domain::genia().keys().collect::<Vec<_>>(),
            ["DNA", "RNA", "protein", "cell_type", "cell_line"]
        );
        let maven = Domain::maven10();
        assert_eq!(maven.len(), 10);
        assert_eq!(maven.aspects[1].key, "Attack");
        assert_eq!(maven.aspects[9].key, "Conquering");
    }
}
