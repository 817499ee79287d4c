//! GENIA nested-NER outputs (digest §2.2, §7.2).

use sde_data::Domain;
use sde_format::{Design, Layout, Unmentioned};

use crate::json::{self, Dialect, Value};
use crate::listing;
use crate::outcome::Outcome;
use crate::types::{EntityMention, Issue, Labels, Mode, Parsed, StudyError};

pub(crate) fn parse(text: &str, design: &Design, domain: &Domain, mode: Mode) -> Parsed {
    if mode == Mode::Study {
        return study(text, design, domain);
    }
    let mut out = Outcome::default();
    let pairs = listing::read(text, design, domain, mode, &mut out);
    let entities = pairs
        .into_iter()
        .map(|p| EntityMention {
            kind: p.kind,
            name: p.text,
            span: None,
            tokens: None,
        })
        .collect();
    out.finish(text, Labels::Ner(entities), empty_ok(design), None)
}

/// An empty output is the study's "no entity" target for the tuple and OU designs.
fn empty_ok(design: &Design) -> bool {
    design.layout == Layout::Tuples || design.unmentioned == Unmentioned::Omit
}

/// The study's prediction parsers (`ner_metric_report.py`): `default` for tuples, `weak1`
/// for the `;`-joined layout, `good1` for lines, `good2` (JSON) for JSON. Types and names
/// are returned as the study has them before its lowercasing; duplicates are kept.
fn study(text: &str, design: &Design, domain: &Domain) -> Parsed {
    let pairs = study_pairs(text, design, false).unwrap_or_default();
    let known: Vec<String> = domain
        .aspects
        .iter()
        .map(|a| a.key.to_lowercase())
        .collect();
    let mut out = Outcome::default();
    out.usable = !pairs.is_empty() || text.trim().is_empty();
    let mut error = None;
    for (kind, _) in &pairs {
        if !known.contains(&kind.to_lowercase()) {
            error = Some(StudyError::UndefinedType);
            out.extra(Issue::UndefinedType { kind: kind.clone() });
        }
    }
    let entities = pairs
        .into_iter()
        .map(|(kind, name)| EntityMention {
            kind,
            name,
            span: None,
            tokens: None,
        })
        .collect();
    out.finish(text, Labels::Ner(entities), empty_ok(design), error)
}

/// Python's `s[1:-1]` on characters.
fn py_inner(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 2 {
        return String::new();
    }
    chars[1..chars.len() - 1].iter().collect()
}

/// The `(type, name)` pairs the study's script reads from a prediction, or with `gold` from
/// a target (targets split on `': '`, predictions on `':'`: quirk Q13). `None` where the
/// script would crash on a target.
pub(crate) fn study_pairs(
    text: &str,
    design: &Design,
    gold: bool,
) -> Option<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    match design.layout {
        Layout::Tuples => {
            if !text.is_empty() {
                for item in text.split('\n') {
                    let cleaned = item.replace(['[', ']'], "");
                    let parts: Vec<&str> = cleaned.split(',').collect();
                    if parts.len() >= 2 {
                        pairs.push((py_inner(parts[0]), py_inner(parts[1])));
                    } else if gold {
                        return None;
                    }
                }
            }
        }
        Layout::Natural | Layout::Lines => {
            let groups: Vec<&str> = if design.layout == Layout::Natural {
                if text.is_empty() {
                    Vec::new()
                } else {
                    text.split("; ").collect()
                }
            } else {
                text.split('\n').collect()
            };
            let sep = if gold { ": " } else { ":" };
            for g in groups {
                if !g.contains(sep) {
                    if gold {
                        return None;
                    }
                    continue;
                }
                let mut parts = g.split(sep);
                let kind = parts.next().unwrap_or_default().trim().replace('\'', "");
                let names: Vec<String> = parts
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .split(',')
                    .map(|n| n.trim().replace('\'', ""))
                    .collect();
                // weak1 keeps `['']`; good1 drops it.
                if design.layout == Layout::Lines && names == [""] {
                    continue;
                }
                for n in names {
                    pairs.push((kind.clone(), n));
                }
            }
        }
        Layout::Json => {
            for line in text.split('\n') {
                let Some((v, _)) = json::parse_whole(line, Dialect::Json) else {
                    if gold {
                        return None;
                    }
                    continue;
                };
                let (Some(kind), Some(Value::Array(names))) = (
                    v.get("entity_type").and_then(Value::as_text),
                    v.get("entity_names"),
                ) else {
                    continue;
                };
                for n in names.iter().filter_map(Value::as_text) {
                    pairs.push((kind.clone(), n));
                }
            }
        }
    }
    Some(pairs)
}
