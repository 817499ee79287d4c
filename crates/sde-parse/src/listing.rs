//! NER and event-detection outputs share one shape: a list of `(type, text)` pairs written
//! as tuples, as `type: a, b` groups, or as JSON records. This module reads all three,
//! strictly or leniently.

use sde_data::Domain;
use sde_format::{Design, Grammar, LabelForm, Layout, Quote, Unmentioned};

use crate::items::{self, ItemValue};

use crate::json::{self, Dialect, Value};
use crate::normalize::{clean_token, strip_code_fence, strip_list_marker};
use crate::outcome::Outcome;
use crate::types::{Issue, Mode, Repair};

/// What the lenient reader needs of a design's list grammar (from `sde_format::Grammar`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListVocab {
    /// Names are Python-quoted (`'a', 'b'`, the study's NER targets); otherwise bare.
    pub(crate) python_quoted: bool,
    /// PU placeholder for a type without items, as written after the separator.
    pub(crate) placeholder: &'static str,
    /// JSON key of the type.
    pub(crate) json_type: &'static str,
    /// JSON key of the names list.
    pub(crate) json_names: &'static str,
    /// Between a type and its names.
    pub(crate) kv_sep: &'static str,
}

impl ListVocab {
    fn of(design: &Design, domain: &Domain) -> ListVocab {
        let g = Grammar::new(design, domain);
        ListVocab {
            python_quoted: g.name_quote == Quote::Python,
            placeholder: g.placeholder,
            json_type: g.json.target,
            json_names: g.json.value,
            kv_sep: g.key_value_sep,
        }
    }
}

/// One `(type, text)` pair as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    pub(crate) kind: String,
    pub(crate) text: String,
}

/// Reads the pairs of one output; resolves types against the domain; removes duplicates.
pub(crate) fn read(
    text: &str,
    design: &Design,
    domain: &Domain,
    mode: Mode,
    out: &mut Outcome,
) -> Vec<Pair> {
    let vocab = &ListVocab::of(design, domain);
    let strict_pairs = {
        let mut strict_out = Outcome::default();
        let pairs = strict(text, design, domain, &mut strict_out);
        if mode == Mode::Strict || strict_out.is_clean() || text.trim().is_empty() {
            *out = strict_out;
            return dedup(pairs, out);
        }
        pairs
    };
    let _ = strict_pairs;
    let pairs = lenient(text, design, domain, vocab, out);
    dedup(pairs, out)
}

fn dedup(pairs: Vec<Pair>, out: &mut Outcome) -> Vec<Pair> {
    let mut seen: Vec<Pair> = Vec::with_capacity(pairs.len());
    for p in pairs {
        if seen.contains(&p) {
            out.issues.push(Issue::DuplicateItem {
                kind: p.kind,
                text: p.text,
            });
        } else {
            seen.push(p);
        }
    }
    seen
}

fn type_index(kind: &str, domain: &Domain) -> Option<usize> {
    domain.aspects.iter().position(|a| a.key == kind)
}

// ---------------------------------------------------------------------------------------
// Strict

fn strict(text: &str, design: &Design, domain: &Domain, out: &mut Outcome) -> Vec<Pair> {
    let grammar = Grammar::new(design, domain);
    let body = text.trim();
    let read = items::read_exact(body, &grammar);
    let mut pairs = Vec::new();
    let mut seen_types: Vec<String> = Vec::new();
    out.usable = true;
    for item in read.items {
        let ItemValue::Names(names) = item.value else {
            continue;
        };
        let kind = match grammar.target_key(&item.key) {
            Some(k) => k.to_string(),
            None => {
                out.extra(Issue::UndefinedType {
                    kind: item.key.clone(),
                });
                item.key.clone()
            }
        };
        let tuples = design.layout == Layout::Tuples;
        if type_index(&kind, domain).is_some() {
            if seen_types.contains(&kind) && !tuples {
                out.extra(Issue::DuplicateKey { key: kind.clone() });
            } else if !seen_types.contains(&kind) {
                seen_types.push(kind.clone());
            }
        }
        if names.is_empty() && design.unmentioned == Unmentioned::Omit {
            // OU writes only types with items.
            out.extra(Issue::BadItem {
                line: item.line,
                text: format!("{} without names", item.key),
            });
        }
        for n in names {
            pairs.push(Pair {
                kind: kind.clone(),
                text: n,
            });
        }
    }
    for (i, bad) in read.bad.iter().enumerate() {
        if i + 1 == read.bad.len() && bad.cut {
            out.truncated = true;
        }
        out.extra(Issue::BadItem {
            line: bad.line,
            text: bad.text.clone(),
        });
    }
    if design.unmentioned == Unmentioned::Placeholder && !body.is_empty() {
        for a in &domain.aspects {
            if !seen_types.contains(&a.key) {
                out.missing(&a.key);
            }
        }
    }
    pairs
}

// ---------------------------------------------------------------------------------------
// Lenient

fn lenient(
    text: &str,
    design: &Design,
    domain: &Domain,
    vocab: &ListVocab,
    out: &mut Outcome,
) -> Vec<Pair> {
    let body = strip_code_fence(text, out);
    let body = body.trim().trim_end_matches(['.', '。']);
    if NO_ITEMS.contains(&body) {
        // "Nothing found", said another way than the design says it.
        out.usable = true;
        out.repair(Repair::Separators);
        return Vec::new();
    }
    let mut raw: Vec<(String, Vec<String>)> = Vec::new();
    // Items in the exact grammar are taken as they are; only the rest is read heuristically.
    let grammar = Grammar::new(design, domain);
    let exact = items::read_exact(body, &grammar);
    let mut leftover: Vec<&str> = Vec::new();
    let rest;
    let body = if exact.items.is_empty() {
        body
    } else {
        for item in &exact.items {
            let ItemValue::Names(names) = &item.value else {
                continue;
            };
            let key = grammar.target_key(&item.key).map(str::to_string);
            match key.or_else(|| resolve_type(&item.key, design, domain, &mut Outcome::default())) {
                Some(_) => raw.push((item.key.clone(), names.clone())),
                None => {
                    out.extra(Issue::UndefinedType {
                        kind: item.key.clone(),
                    });
                    for n in names {
                        raw.push((item.key.clone(), vec![n.clone()]));
                    }
                }
            }
        }
        for bad in &exact.bad {
            leftover.push(&bad.text);
            if bad.cut && exact.items.last().is_none_or(|i| bad.line >= i.line) {
                out.truncated = true;
            }
        }
        if !leftover.is_empty() {
            out.repair(Repair::Separators);
        }
        rest = leftover.join("\n");
        rest.as_str()
    };
    let lines: Vec<&str> = body.lines().collect();
    let n = lines.len();
    for (i, raw_line) in lines.iter().enumerate() {
        let (line, marker) = strip_list_marker(raw_line);
        if marker {
            out.repair(Repair::ListMarkers);
        }
        let line = line.trim();
        if line.is_empty() {
            out.repair(Repair::Whitespace);
            continue;
        }
        let is_last = i + 1 == n;
        let bracket = line.find(['[', '{']);
        let prefix_is_type = bracket.is_some_and(|b| {
            let prefix = clean_token(line[..b].trim().trim_end_matches([':', '：']));
            resolve_type(prefix, design, domain, &mut Outcome::default()).is_some()
        });
        if bracket.is_some_and(|b| b > 0)
            && !prefix_is_type
            && literal_line(line, vocab, design, &mut raw, out)
        {
            continue;
        }
        if (line.starts_with('[') || line.starts_with('(') || line.starts_with('{'))
            && literal_line(line, vocab, design, &mut raw, out)
        {
            if is_last && items::literal_cut(line) {
                out.truncated = true;
            }
            continue;
        }
        // `type: a, b` groups, separated by `;`.
        let mut any = false;
        let groups: Vec<&str> = line.split([';', '；']).collect();
        let g_n = groups.len();
        for (gi, g) in groups.iter().enumerate() {
            let g = g.trim();
            if g.is_empty() {
                continue;
            }
            let Some((t, names)) = split_kv(g, vocab, out) else {
                if is_last
                    && gi + 1 == g_n
                    && domain
                        .aspects
                        .iter()
                        .any(|a| a.key.starts_with(clean_token(g)) && !clean_token(g).is_empty())
                {
                    out.truncated = true;
                } else if !any {
                    out.repair(Repair::SurroundingProse);
                }
                continue;
            };
            let t = clean_token(t).trim_matches('\'').to_string();
            if resolve_type(&t, design, domain, &mut Outcome::default()).is_none()
                && t.split_whitespace().count() > 3
            {
                // A sentence with a colon: prose.
                out.repair(Repair::SurroundingProse);
                continue;
            }
            any = true;
            let list = lenient_names(names, vocab, out);
            if is_last && gi + 1 == g_n && names.trim().is_empty() {
                out.truncated = true;
            }
            raw.push((t, list));
        }
        if !any && line.contains('[') && literal_line(line, vocab, design, &mut raw, out) {
            out.repair(Repair::SurroundingProse);
        }
    }
    if lines.len() > 1 && design.layout == Layout::Natural {
        out.repair(Repair::Separators);
    }
    let body_was_empty = body.is_empty() && raw.is_empty();
    if body_was_empty {
        out.usable = true;
    }
    let mut pairs = Vec::new();
    let mut seen = Vec::new();
    for (t, names) in raw {
        let kind = match resolve_type(&t, design, domain, out) {
            Some(k) => k,
            None => {
                out.extra(Issue::UndefinedType { kind: t.clone() });
                t
            }
        };
        out.usable = true;
        if type_index(&kind, domain).is_some() && !seen.contains(&kind) {
            seen.push(kind.clone());
        }
        for name in names {
            pairs.push(Pair {
                kind: kind.clone(),
                text: name,
            });
        }
    }
    if design.layout != Layout::Tuples
        && design.unmentioned == Unmentioned::Placeholder
        && out.usable
        && !body_was_empty
    {
        for a in &domain.aspects {
            if !seen.contains(&a.key) {
                out.missing(&a.key);
            }
        }
    }
    pairs
}

/// Whole answers that mean "no entity / no event".
const NO_ITEMS: [&str; 9] = [
    "[]", "None", "NONE", "none", "无", "没有", "N/A", "\"[]\"", "{}",
];

/// `type: names` at the first colon of either width.
fn split_kv<'a>(g: &'a str, vocab: &ListVocab, out: &mut Outcome) -> Option<(&'a str, &'a str)> {
    let (at, colon) = [':', '：']
        .iter()
        .filter_map(|c| g.find(*c).map(|i| (i, *c)))
        .min_by_key(|(i, _)| *i)?;
    if !vocab.kv_sep.starts_with(colon) {
        out.repair(Repair::PunctuationWidth);
    }
    Some((&g[..at], &g[at + colon.len_utf8()..]))
}

/// A tuple, list of tuples or JSON record on one line. Returns whether it read anything.
fn literal_line(
    line: &str,
    vocab: &ListVocab,
    design: &Design,
    raw: &mut Vec<(String, Vec<String>)>,
    out: &mut Outcome,
) -> bool {
    let start = line.find(['[', '(', '{']).unwrap_or(0);
    let Some((value, repairs, used)) = json::parse_prefix(&line[start..], Dialect::Lenient) else {
        return false;
    };
    let before = len_before(raw);
    collect_literal(&value, vocab, raw);
    if len_before(raw) == before && !matches!(&value, Value::Array(v) if v.is_empty()) {
        return false;
    }
    if repairs.single_quotes {
        out.repair(Repair::JsonSingleQuotes);
    }
    if repairs.trailing_comma {
        out.repair(Repair::JsonTrailingComma);
    }
    if repairs.unquoted {
        out.repair(Repair::JsonUnquoted);
    }
    if repairs.unclosed {
        out.repair(Repair::JsonUnclosed);
    }
    if !line[start + used..].trim().is_empty() || start > 0 {
        out.repair(Repair::SurroundingProse);
    }
    let is_tuple = matches!(&value, Value::Array(_));
    if is_tuple != (design.layout == Layout::Tuples) {
        out.repair(Repair::Separators);
    }
    true
}

fn len_before(raw: &[(String, Vec<String>)]) -> usize {
    raw.iter().map(|(_, v)| v.len() + 1).sum()
}

fn collect_literal(value: &Value, vocab: &ListVocab, raw: &mut Vec<(String, Vec<String>)>) {
    match value {
        Value::Array(items) => {
            if items
                .iter()
                .all(|v| matches!(v, Value::Str(_) | Value::Number(_)))
            {
                if let Some((kind, names)) = items.split_first() {
                    let Some(kind) = kind.as_text() else { return };
                    let names: Vec<String> = names
                        .iter()
                        .filter_map(Value::as_text)
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    raw.push((kind.trim().to_string(), names));
                }
            } else {
                for v in items {
                    collect_literal(v, vocab, raw);
                }
            }
        }
        Value::Object(entries) => {
            const TYPE_KEYS: [&str; 5] = ["entity_type", "event_type", "type", "label", "category"];
            const NAME_KEYS: [&str; 9] = [
                "entity_names",
                "trigger word",
                "trigger_word",
                "trigger words",
                "triggers",
                "trigger",
                "entity_name",
                "names",
                "name",
            ];
            let kind = entries
                .iter()
                .find(|(k, _)| k == vocab.json_type || TYPE_KEYS.contains(&k.as_str()))
                .and_then(|(_, v)| v.as_text());
            let names = entries
                .iter()
                .find(|(k, _)| k == vocab.json_names || NAME_KEYS.contains(&k.as_str()))
                .map(|(_, v)| v);
            if let Some(kind) = kind {
                let list = match names {
                    Some(Value::Array(items)) => items.iter().filter_map(Value::as_text).collect(),
                    Some(Value::Str(s)) => s
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty() && *t != vocab.placeholder)
                        .collect(),
                    _ => Vec::new(),
                };
                raw.push((kind, list));
            }
        }
        _ => {}
    }
}

/// Names after `type:` in any of the list notations.
fn lenient_names(names: &str, vocab: &ListVocab, out: &mut Outcome) -> Vec<String> {
    let t = names.trim();
    if t != names.strip_prefix(' ').unwrap_or(names) {
        out.repair(Repair::Whitespace);
    }
    let t = t.trim_end_matches(['.', '。']);
    let placeholders = [
        "NONE", "none", "None", "''", "\"\"", "[]", "无", "N/A", "n/a", "",
    ];
    if placeholders.contains(&t) {
        if t != vocab.placeholder {
            out.repair(Repair::Separators);
        }
        return Vec::new();
    }
    if t.contains(['\'', '"']) {
        let list_text = if t.starts_with('[') {
            t.to_string()
        } else {
            format!("[{t}]")
        };
        if let Some((Value::Array(items), repairs)) =
            json::parse_whole(&list_text, Dialect::Lenient)
        {
            if repairs.unclosed {
                out.repair(Repair::JsonUnclosed);
                out.truncated = true;
            }
            if !vocab.python_quoted {
                out.repair(Repair::Separators);
            }
            return items
                .iter()
                .filter_map(Value::as_text)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
    }
    if vocab.python_quoted {
        out.repair(Repair::JsonUnquoted);
    }
    t.trim_start_matches('[')
        .trim_end_matches(']')
        .split([',', '，'])
        .map(|s| clean_token(s).to_string())
        .filter(|s| !s.is_empty() && !placeholders.contains(&s.as_str()))
        .collect()
}

/// The domain type a written type names: exact, by index (numeric designs), or
/// case-insensitively / ignoring `_` vs space.
fn resolve_type(t: &str, design: &Design, domain: &Domain, out: &mut Outcome) -> Option<String> {
    if let Some(i) = type_index(t, domain) {
        if design.labels == LabelForm::Numeric {
            out.repair(Repair::LabelRelaxed);
        }
        return Some(domain.aspects[i].key.clone());
    }
    if let Ok(i) = t.parse::<usize>()
        && let Some(a) = domain.aspects.get(i)
    {
        if design.labels != LabelForm::Numeric {
            out.repair(Repair::LabelRelaxed);
        }
        return Some(a.key.clone());
    }
    let norm = |s: &str| s.to_lowercase().replace([' ', '-'], "_");
    let found = domain.aspects.iter().find(|a| norm(&a.key) == norm(t))?;
    out.repair(Repair::KeyRelaxed);
    Some(found.key.clone())
}
