//! Records shared by the tests (one per task, with mentioned and unmentioned targets).

#![allow(dead_code, unreachable_pub)]

use sde_data::{
    AspectLabel, Domain, Entity, Event, EventRecord, MasaRecord, NerRecord, Record, Sentiment, Span,
};
use sde_format::{Language, TaskKind};

pub fn masa_record(language: Language) -> Record {
    let (text, evidence) = match language {
        Language::Zh => (
            "菜品味道很好，就是价格有点贵。服务员态度一般，停车很方便！排队等了半小时。",
            "菜品味道很好",
        ),
        Language::En => (
            "The food was great, but the price was a bit high. The staff were so-so; parking was easy! We queued for half an hour.",
            "The food was great",
        ),
    };
    let start = text.find(evidence).unwrap();
    let label = |aspect: &str, sentiment, evidence: Option<Span>| AspectLabel {
        aspect: aspect.to_string(),
        sentiment,
        evidence,
    };
    Record::Masa(MasaRecord {
        id: format!("demo/{language:?}"),
        text: text.to_string(),
        labels: vec![
            label(
                "food",
                Sentiment::Positive,
                Some(Span {
                    start,
                    end: start + evidence.len(),
                }),
            ),
            label("price", Sentiment::Negative, None),
            label("staff", Sentiment::Neutral, None),
            label("parking", Sentiment::Positive, None),
            label("queueing", Sentiment::Negative, None),
        ],
    })
}

pub fn ner_record() -> Record {
    ner_record_of(
        "genia/demo",
        "Activation of the IL-2 gene , by NF-kappa B , in Jurkat T cells",
        &[
            ("DNA", 3, 5),
            ("protein", 3, 4),
            ("protein", 7, 9),
            ("cell_line", 11, 14),
            ("cell_type", 12, 14),
        ],
    )
}

/// A nested-NER record over a space-tokenized sentence; entities are `(type, start, end)`
/// token ranges.
pub fn ner_record_of(id: &str, sentence: &str, entities: &[(&str, usize, usize)]) -> Record {
    let tokens: Vec<String> = sentence.split(' ').map(String::from).collect();
    Record::Ner(NerRecord {
        id: id.into(),
        text: tokens.join(" "),
        entities: entities
            .iter()
            .map(|&(kind, start, end)| Entity {
                kind: kind.into(),
                start_token: start,
                end_token: end,
                text: tokens[start..end].join(" "),
            })
            .collect(),
        tokens,
    })
}

pub fn event_record() -> Record {
    let text = "Rebels attacked the town, and thousands fled to the border.";
    let event = |kind: &str, trigger: &str| {
        let start = text.find(trigger).unwrap();
        Event {
            kind: kind.into(),
            trigger: trigger.into(),
            span: Span {
                start,
                end: start + trigger.len(),
            },
        }
    };
    Record::Event(EventRecord {
        id: "maven/demo".into(),
        text: text.into(),
        events: vec![event("Attack", "attacked"), event("Motion", "fled")],
    })
}

pub fn record(task: TaskKind, language: Language) -> Record {
    match task {
        TaskKind::Masa => masa_record(language),
        TaskKind::Ner => ner_record(),
        TaskKind::Event => event_record(),
    }
}

/// The training domain of each task (D1 for MASA).
pub fn domain(task: TaskKind) -> Domain {
    match task {
        TaskKind::Masa => Domain::study_d1(),
        TaskKind::Ner => Domain::genia(),
        TaskKind::Event => Domain::maven10(),
    }
}

/// A different domain for out-of-domain prompts.
pub fn other_domain(task: TaskKind) -> Domain {
    match task {
        TaskKind::Masa => Domain::study_d2(),
        TaskKind::Ner => Domain::from_keys("genia3", &["DNA", "protein", "cell_line"]),
        TaskKind::Event => Domain::from_keys("maven3", &["Attack", "Motion", "Killing"]),
    }
}

pub const TASKS: [TaskKind; 3] = [TaskKind::Masa, TaskKind::Ner, TaskKind::Event];
pub const LANGUAGES: [Language; 2] = [Language::En, Language::Zh];
