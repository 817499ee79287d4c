//! MAVEN event-detection outputs (digest §2.3, §7.3).

use sde_data::Domain;
use sde_format::{Design, LabelForm, Layout, Unmentioned};

use crate::json::{self, Dialect, Value};
use crate::listing;
use crate::outcome::Outcome;
use crate::types::{EventMention, Issue, Labels, Mode, Parsed, StudyError};

pub(crate) fn parse(text: &str, design: &Design, domain: &Domain, mode: Mode) -> Parsed {
    if mode == Mode::Study {
        return study(text, design, domain);
    }
    let mut out = Outcome::default();
    let pairs = listing::read(text, design, domain, mode, &mut out);
    let events = pairs
        .into_iter()
        .map(|p| EventMention {
            kind: p.kind,
            trigger: p.text,
            span: None,
        })
        .collect();
    let empty_ok = design.unmentioned == Unmentioned::Omit && design.layout != Layout::Tuples;
    out.finish(text, Labels::Event(events), empty_ok, None)
}

/// Which of `maven_eval.py`'s converters a design maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Heuristic,
    Ou,
    Numerical,
    Lines,
    Json,
}

fn format_of(design: &Design) -> Format {
    match (design.layout, design.labels) {
        (Layout::Tuples, _) => Format::Heuristic,
        (Layout::Json, _) => Format::Json,
        (_, LabelForm::Numeric) => Format::Numerical,
        (Layout::Lines, _) => Format::Lines,
        (Layout::Natural, _) => Format::Ou,
    }
}

/// `convert_to_list(predict, format)`: pairs stripped and lowercased, duplicates kept, the
/// `format_error_flag` as the study error. Fragments on which the study's script would
/// crash (quirk Q15) are skipped and recorded as bad items.
fn study(text: &str, design: &Design, domain: &Domain) -> Parsed {
    let mut out = Outcome::default();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut error = None;
    let norm = |s: &str| s.trim().to_lowercase();
    if text.is_empty() {
        out.usable = true;
        let labels = Labels::Event(Vec::new());
        out.issues.push(Issue::Empty);
        return finish_study(out, text, labels, Some(StudyError::EmptyOutput));
    }
    match format_of(design) {
        Format::Ou => {
            for frag in text.split(';') {
                let items: Vec<&str> = frag.split(':').collect();
                if items.len() == 1 {
                    pairs.push((norm(items[0]), String::new()));
                } else {
                    for t in items[1].split(',') {
                        pairs.push((norm(items[0]), norm(t)));
                    }
                }
            }
        }
        Format::Heuristic => {
            for item in text.split('\n') {
                match json::parse_whole(item.trim(), Dialect::Python) {
                    Some((Value::Array(v), _)) if !v.is_empty() => {
                        let parts: Vec<String> = v.iter().map(py_str).collect();
                        pairs.push(tuple_pair(&parts));
                    }
                    Some((Value::Str(s), _)) if !s.is_empty() => {
                        // Iterating a string yields its characters.
                        let parts: Vec<String> = s.chars().map(|c| c.to_string()).collect();
                        pairs.push(tuple_pair(&parts));
                    }
                    _ => {}
                }
            }
        }
        Format::Numerical => {
            for (i, frag) in text.split(';').enumerate() {
                let items: Vec<&str> = frag.split(':').collect();
                let kind = items[0]
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .and_then(|k| domain.aspects.get(k));
                match (kind, items.get(1)) {
                    (Some(kind), Some(triggers)) => {
                        for t in triggers.split(',') {
                            if t.trim() != "NONE" {
                                pairs.push((norm(&kind.key), norm(t)));
                            }
                        }
                    }
                    _ => out.extra(Issue::BadItem {
                        line: i + 1,
                        text: frag.to_string(),
                    }),
                }
            }
        }
        Format::Lines => {
            for frag in text.split('\n') {
                let items: Vec<&str> = frag.split(':').collect();
                if items.len() == 1 {
                    pairs.push((norm(items[0]), String::new()));
                } else {
                    let trigger = items[1].trim();
                    if trigger == "NONE" {
                        continue;
                    }
                    for t in trigger.split(',') {
                        pairs.push((norm(items[0]), norm(t)));
                    }
                }
            }
        }
        Format::Json => {
            for (i, line) in text.split('\n').enumerate() {
                let Some((v, _)) = json::parse_whole(line.trim(), Dialect::Python) else {
                    error = Some(StudyError::EvalError);
                    continue;
                };
                let (Some(kind), Some(trigger)) = (
                    v.get("event_type").and_then(Value::as_text),
                    v.get("trigger word"),
                ) else {
                    out.extra(Issue::BadItem {
                        line: i + 1,
                        text: line.to_string(),
                    });
                    error = Some(StudyError::EvalError);
                    continue;
                };
                match trigger {
                    Value::Array(list) if list.is_empty() => {}
                    Value::Array(list) => {
                        for t in list {
                            pairs.push((norm(&kind), norm(&py_str(t))));
                        }
                    }
                    Value::Str(s) => {
                        for t in s.trim().split(',') {
                            pairs.push((norm(&kind), norm(t)));
                        }
                    }
                    _ => error = Some(StudyError::TriggerFormat),
                }
            }
        }
    }
    out.usable = !pairs.is_empty();
    let events = pairs
        .into_iter()
        .map(|(kind, trigger)| EventMention {
            kind,
            trigger,
            span: None,
        })
        .collect();
    finish_study(out, text, Labels::Event(events), error)
}

fn finish_study(out: Outcome, text: &str, labels: Labels, error: Option<StudyError>) -> Parsed {
    let mut parsed = out.finish(text, labels, false, error);
    if error.is_some() && parsed.status.is_clean() {
        parsed.status = crate::types::Status::Partial(crate::types::PartialCounts {
            extra: 1,
            ..Default::default()
        });
    }
    parsed
}

/// A tuple of the heuristic format as `(type, trigger)`; tuples of another length are
/// kept with the rest joined so that they can never match a gold pair.
fn tuple_pair(parts: &[String]) -> (String, String) {
    let lower: Vec<String> = parts.iter().map(|p| p.trim().to_lowercase()).collect();
    match lower.as_slice() {
        [kind, trigger] => (kind.clone(), trigger.clone()),
        [kind] => (kind.clone(), String::new()),
        [kind, rest @ ..] => (kind.clone(), rest.join("\u{1f}")),
        [] => (String::new(), String::new()),
    }
}

/// Python's `str()` of a literal.
fn py_str(v: &Value) -> String {
    match v {
        Value::Str(s) | Value::Number(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

/// The study's gold reading (`maven_eval.py`): every target is a heuristic-format output,
/// each line `literal_eval`'d and lowercased but not stripped.
pub(crate) fn study_gold_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for item in text.split('\n') {
        if let Some((Value::Array(v), _)) = json::parse_whole(item.trim(), Dialect::Python)
            && !v.is_empty()
        {
            let parts: Vec<String> = v.iter().map(|p| py_str(p).to_lowercase()).collect();
            pairs.push(match parts.as_slice() {
                [kind, trigger] => (kind.clone(), trigger.clone()),
                [kind] => (kind.clone(), String::new()),
                [kind, rest @ ..] => (kind.clone(), rest.join("\u{1f}")),
                [] => (String::new(), String::new()),
            });
        }
    }
    pairs
}
