//! Completion items and their layout (the rules of [`crate::grammar`]).

use sde_data::TaskKind;

use crate::design::{Layout, Reasoning};
use crate::grammar::{Grammar, json_string};

/// One target of a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// The target as written ([`crate::TargetName::text`]).
    pub key: String,
    /// MASA: the one label word. NER / events: the names (empty: placeholder).
    pub values: Vec<String>,
    /// Evidence, present exactly when the design has reasoning.
    pub evidence: Option<String>,
}

impl Item {
    /// An item made of placeholder words, for format examples in instructions.
    pub(crate) fn example(key: &str, value: &str, evidence: &str) -> Item {
        Item {
            key: key.to_string(),
            values: vec![value.to_string()],
            evidence: Some(evidence.to_string()),
        }
    }
}

fn with_evidence(grammar: &Grammar, value: String, evidence: Option<&str>) -> String {
    let Some(evidence) = evidence else {
        return value;
    };
    let literal = json_string(evidence);
    let sep = grammar.evidence_sep;
    match grammar.design.reasoning {
        Reasoning::None => value,
        Reasoning::Cot => format!("{literal}{sep}{value}"),
        Reasoning::ReverseCot => format!("{value}{sep}{literal}"),
    }
}

fn render_item(grammar: &Grammar, item: &Item) -> String {
    let masa = grammar.design.task == TaskKind::Masa;
    let evidence = match grammar.design.reasoning {
        Reasoning::None => None,
        Reasoning::Cot | Reasoning::ReverseCot => item.evidence.as_deref(),
    };
    match grammar.design.layout {
        Layout::Natural | Layout::Lines => {
            let value = if masa {
                item.values.concat()
            } else if item.values.is_empty() {
                grammar.placeholder.to_string()
            } else {
                item.values
                    .iter()
                    .map(|n| grammar.quote_name(n))
                    .collect::<Vec<_>>()
                    .join(grammar.name_sep)
            };
            format!(
                "{}{}{}",
                grammar.quote_key(&item.key),
                grammar.key_value_sep,
                with_evidence(grammar, value, evidence)
            )
        }
        Layout::Json => {
            let value = if masa {
                json_string(&item.values.concat())
            } else {
                let names: Vec<String> = item.values.iter().map(|n| json_string(n)).collect();
                format!("[{}]", names.join(", "))
            };
            let keys = grammar.json;
            let target = format!("\"{}\": {}", keys.target, json_string(&item.key));
            let value = format!("{}: {value}", json_string(keys.value));
            let fields = match evidence
                .map(|e| format!("{}: {}", json_string(keys.evidence), json_string(e)))
            {
                None => vec![target, value],
                Some(ev) => match grammar.design.reasoning {
                    Reasoning::ReverseCot => vec![target, value, ev],
                    Reasoning::Cot | Reasoning::None => vec![target, ev, value],
                },
            };
            format!("{{{}}}", fields.join(", "))
        }
        Layout::Tuples => {
            let value = if masa || !item.values.is_empty() {
                item.values.concat()
            } else {
                grammar.tuple_placeholder.to_string()
            };
            let mut elements = vec![json_string(&item.key)];
            match (evidence, grammar.design.reasoning) {
                (Some(ev), Reasoning::Cot) => {
                    elements.extend([json_string(ev), json_string(&value)])
                }
                (Some(ev), Reasoning::ReverseCot) => {
                    elements.extend([json_string(&value), json_string(ev)])
                }
                _ => elements.push(json_string(&value)),
            }
            format!("[{}]", elements.join(&format!(",{}", grammar.tuple_sep)))
        }
    }
}

/// Items laid out and joined, without the natural layout's terminator.
pub(crate) fn render_items(grammar: &Grammar, items: &[Item]) -> String {
    let sep = match grammar.design.layout {
        Layout::Natural => grammar.item_sep,
        Layout::Lines | Layout::Json | Layout::Tuples => "\n",
    };
    items
        .iter()
        .map(|i| render_item(grammar, i))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The whole completion for `items`.
pub(crate) fn completion(grammar: &Grammar, items: &[Item]) -> String {
    if items.is_empty() {
        return grammar.empty.to_string();
    }
    let mut out = render_items(grammar, items);
    if grammar.design.layout == Layout::Natural {
        out.push_str(grammar.terminator);
    }
    out
}
