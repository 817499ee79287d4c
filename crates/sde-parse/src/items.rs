//! The exact item grammar of `sde_format::grammar`, read back: every completion is a list of
//! items (a target and its value, with evidence under reasoning designs) laid out as natural
//! text, lines, JSON records or tuples.

use sde_format::{Grammar, Layout, Quote, Reasoning};

use crate::json::{self, Dialect, Value};

/// One item as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ItemText {
    /// The target as written (quotes removed).
    pub(crate) key: String,
    /// The value: MASA the label word; NER/events the names (empty for the placeholder).
    pub(crate) value: ItemValue,
    /// 1-based line.
    pub(crate) line: usize,
}

/// An item's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ItemValue {
    /// One word (MASA labels).
    Word(String),
    /// A list of names (NER, events); empty for the PU placeholder.
    Names(Vec<String>),
}

/// A fragment that does not follow the grammar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadFragment {
    pub(crate) line: usize,
    pub(crate) text: String,
    /// It looks like the beginning of a valid item (the output was cut inside it).
    pub(crate) cut: bool,
}

/// The items of a completion read with the exact grammar.
#[derive(Debug, Default)]
pub(crate) struct ExactRead {
    pub(crate) items: Vec<ItemText>,
    pub(crate) bad: Vec<BadFragment>,
    /// The natural layout's terminator is missing.
    pub(crate) unterminated: bool,
}

fn is_masa(grammar: &Grammar) -> bool {
    grammar.design.task == sde_data::TaskKind::Masa
}

/// Reads `body` (already trimmed) with the exact grammar.
pub(crate) fn read_exact(body: &str, grammar: &Grammar) -> ExactRead {
    let mut read = ExactRead::default();
    if body.is_empty() || body == grammar.empty {
        return read;
    }
    match grammar.design.layout {
        Layout::Natural | Layout::Lines => {
            let (text, pieces) = if grammar.design.layout == Layout::Natural {
                let text = match body.strip_suffix(grammar.terminator) {
                    Some(t) if !grammar.terminator.is_empty() => t,
                    _ => {
                        read.unterminated = !grammar.terminator.is_empty();
                        body
                    }
                };
                (text, split_outside_quotes(text, grammar.item_sep, grammar))
            } else {
                (body, split_outside_quotes(body, "\n", grammar))
            };
            let n = pieces.len();
            for (i, (offset, piece)) in pieces.into_iter().enumerate() {
                let line = text[..offset].matches('\n').count() + 1;
                // Every literal escapes newlines: a raw one never belongs to an item.
                let item = if piece.contains('\n') {
                    None
                } else {
                    read_text_item(piece, grammar)
                };
                match item {
                    Some(item) => read.items.push(ItemText { line, ..item }),
                    None => read.bad.push(BadFragment {
                        line,
                        text: piece.to_string(),
                        cut: i + 1 == n && looks_cut(piece, grammar),
                    }),
                }
            }
        }
        Layout::Json | Layout::Tuples => {
            let lines: Vec<&str> = body.split('\n').collect();
            let n = lines.len();
            for (i, line) in lines.iter().enumerate() {
                let item = if grammar.design.layout == Layout::Json {
                    read_json_item(line, grammar)
                } else {
                    read_tuple_item(line, grammar)
                };
                match item {
                    Some(item) => read.items.push(ItemText {
                        line: i + 1,
                        ..item
                    }),
                    None => read.bad.push(BadFragment {
                        line: i + 1,
                        text: line.to_string(),
                        cut: i + 1 == n && literal_cut(line),
                    }),
                }
            }
        }
    }
    read
}

/// Splits on `sep` outside JSON (double-quoted) and, for Python-quoted grammars,
/// single-quoted string literals. Returns byte offsets with the pieces.
pub(crate) fn split_outside_quotes<'a>(
    text: &'a str,
    sep: &str,
    grammar: &Grammar,
) -> Vec<(usize, &'a str)> {
    let python = grammar.name_quote == Quote::Python || grammar.key_quote == Quote::Python;
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut i = 0;
    while i < text.len() {
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else if (c == '"' || (python && c == '\''))
            && text[..i]
                .chars()
                .next_back()
                .is_none_or(|p| p.is_whitespace() || ":：,，;；[(".contains(p))
        {
            // A quote opens a literal only where a literal can start.
            quote = Some(c);
        } else if text[i..].starts_with(sep) && !sep.is_empty() {
            out.push((start, &text[start..i]));
            i += sep.len();
            start = i;
            continue;
        }
        i += c.len_utf8();
    }
    out.push((start, &text[start..]));
    out
}

/// `key{sep}value` with evidence for reasoning designs.
fn read_text_item(piece: &str, grammar: &Grammar) -> Option<ItemText> {
    let (key, rest) = match grammar.key_quote {
        Quote::None => piece.split_once(grammar.key_value_sep)?,
        Quote::Python => {
            let (lit, used) = python_string_prefix(piece)?;
            let rest = piece[used..].strip_prefix(grammar.key_value_sep)?;
            return finish_text_item(lit, rest, grammar);
        }
    };
    finish_text_item(key.to_string(), rest, grammar)
}

fn finish_text_item(key: String, rest: &str, grammar: &Grammar) -> Option<ItemText> {
    let value_text = match grammar.design.reasoning {
        Reasoning::None => rest,
        Reasoning::Cot => {
            let (_, used) = json_string_prefix(rest)?;
            rest[used..].strip_prefix(grammar.evidence_sep)?
        }
        Reasoning::ReverseCot => strip_trailing_evidence(rest, grammar.evidence_sep)?,
    };
    let value = if is_masa(grammar) {
        ItemValue::Word(value_text.to_string())
    } else if value_text == grammar.placeholder {
        ItemValue::Names(Vec::new())
    } else {
        ItemValue::Names(read_names(value_text, grammar)?)
    };
    Some(ItemText {
        key,
        value,
        line: 0,
    })
}

/// `value{sep}"evidence"` → `value`.
fn strip_trailing_evidence<'a>(rest: &'a str, sep: &str) -> Option<&'a str> {
    let pattern = format!("{sep}\"");
    for (at, _) in rest.match_indices(&pattern) {
        let lit = &rest[at + sep.len()..];
        if let Some((Value::Str(_), _)) = json::parse_whole(lit, Dialect::Json)
            && lit.trim() == lit
        {
            return Some(&rest[..at]);
        }
    }
    None
}

/// Names joined by the grammar's separator, each quoted as the grammar says.
fn read_names(text: &str, grammar: &Grammar) -> Option<Vec<String>> {
    match grammar.name_quote {
        Quote::None => {
            let names: Vec<String> = text.split(grammar.name_sep).map(str::to_string).collect();
            names.iter().all(|n| !n.is_empty()).then_some(names)
        }
        Quote::Python => {
            let mut names = Vec::new();
            let mut rest = text;
            loop {
                let (name, used) = python_string_prefix(rest)?;
                if sde_format::grammar::python_repr(&name) != rest[..used] {
                    return None;
                }
                names.push(name);
                rest = &rest[used..];
                if rest.is_empty() {
                    return Some(names);
                }
                rest = rest.strip_prefix(grammar.name_sep)?;
            }
        }
    }
}

/// A Python string literal at the start of `text`: its value and length.
fn python_string_prefix(text: &str) -> Option<(String, usize)> {
    let (value, _, used) = json::parse_prefix(text, Dialect::Python)?;
    match value {
        Value::Str(s) if text.starts_with(['\'', '"']) => Some((s, used)),
        _ => None,
    }
}

/// A JSON string literal at the start of `text`: its value and length.
fn json_string_prefix(text: &str) -> Option<(String, usize)> {
    let (value, _, used) = json::parse_prefix(text, Dialect::Json)?;
    match value {
        Value::Str(s) if text.starts_with('"') => Some((s, used)),
        _ => None,
    }
}

fn read_json_item(line: &str, grammar: &Grammar) -> Option<ItemText> {
    let (value, _) = json::parse_whole(line, Dialect::Json)?;
    let Value::Object(entries) = &value else {
        return None;
    };
    let keys = grammar.json;
    let expected: Vec<&str> = match grammar.design.reasoning {
        Reasoning::None => vec![keys.target, keys.value],
        Reasoning::Cot => vec![keys.target, keys.evidence, keys.value],
        Reasoning::ReverseCot => vec![keys.target, keys.value, keys.evidence],
    };
    let actual: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    if actual != expected {
        return None;
    }
    let Some(Value::Str(key)) = value.get(keys.target) else {
        return None;
    };
    if grammar.design.reasoning != Reasoning::None
        && !matches!(value.get(keys.evidence), Some(Value::Str(_)))
    {
        return None;
    }
    let item_value = match (is_masa(grammar), value.get(keys.value)?) {
        (true, Value::Str(word)) => ItemValue::Word(word.clone()),
        (false, Value::Array(names)) => ItemValue::Names(
            names
                .iter()
                .map(|n| match n {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    };
    Some(ItemText {
        key: key.clone(),
        value: item_value,
        line: 0,
    })
}

fn read_tuple_item(line: &str, grammar: &Grammar) -> Option<ItemText> {
    let (value, _) = json::parse_whole(line, Dialect::Json)?;
    let Value::Array(elements) = value else {
        return None;
    };
    let strings: Vec<String> = elements
        .iter()
        .map(|e| match e {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let rendered = format!(
        "[{}]",
        strings
            .iter()
            .map(|s| sde_format::grammar::json_string(s))
            .collect::<Vec<_>>()
            .join(&format!(",{}", grammar.tuple_sep))
    );
    if rendered != line {
        return None;
    }
    let (key, value) = match (grammar.design.reasoning, strings.as_slice()) {
        (Reasoning::None, [k, v]) => (k, v),
        (Reasoning::Cot, [k, _, v]) | (Reasoning::ReverseCot, [k, v, _]) => (k, v),
        _ => return None,
    };
    let item_value = if is_masa(grammar) {
        ItemValue::Word(value.clone())
    } else if *value == grammar.tuple_placeholder {
        ItemValue::Names(Vec::new())
    } else {
        ItemValue::Names(vec![value.clone()])
    };
    Some(ItemText {
        key: key.clone(),
        value: item_value,
        line: 0,
    })
}

/// Whether a text fragment is a proper prefix of a valid item (cut by a length limit).
fn looks_cut(piece: &str, grammar: &Grammar) -> bool {
    if piece.is_empty() {
        return true;
    }
    // A bare beginning of a target name, or `key{sep}` with an unfinished value.
    if grammar.targets.iter().any(|t| {
        let written = grammar.quote_key(&t.text);
        written.starts_with(piece) || piece.starts_with(&written)
    }) {
        return true;
    }
    false
}

/// Whether a JSON/tuple line is a literal cut before its end.
pub(crate) fn literal_cut(line: &str) -> bool {
    let t = line.trim_start();
    (t.starts_with('[') || t.starts_with('{'))
        && json::parse_whole(t, Dialect::Lenient).is_some_and(|(_, r)| r.unclosed)
}
