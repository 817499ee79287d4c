//! MASA outputs: strict grammar per design, and the lenient reader.

use sde_data::{Domain, Sentiment};
use sde_format::{Design, LabelForm, Language, Layout, Reasoning, Unmentioned};

use crate::grammar::{self, MasaVocab};
use crate::items::{self, ItemValue};
use crate::json::{self, Dialect, Value};
use crate::normalize::{clean_token, strip_code_fence, strip_list_marker};
use crate::outcome::Outcome;
use crate::study_masa;
use crate::types::{Issue, Labels, Mode, Parsed, Repair, StudyError};

/// One `key → value` pair as written, before resolution.
#[derive(Debug)]
struct RawItem {
    key: String,
    value: String,
    /// 1-based output line (0 when unknown).
    line: usize,
}

pub(crate) fn parse(text: &str, design: &Design, domain: &Domain, mode: Mode) -> Parsed {
    match mode {
        Mode::Study => {
            let (labels, _, error) = study_masa::parse(text, design, domain);
            let mut out = Outcome::default();
            out.usable = labels.iter().any(|s| *s != Sentiment::Unmentioned) || error.is_none();
            match error {
                None | Some(StudyError::EmptyOutput) => {}
                Some(e) => out.extra(Issue::BadItem {
                    line: 0,
                    text: format!("study {}", study_error_name(e)),
                }),
            }
            let empty_ok = design.unmentioned == Unmentioned::Omit && error.is_none();
            out.finish(text, Labels::Masa(labels), empty_ok, error)
        }
        Mode::Strict => strict(text, design, domain),
        Mode::Lenient => {
            let parsed = strict(text, design, domain);
            if parsed.status.is_clean() {
                parsed
            } else {
                lenient(text, design, domain)
            }
        }
    }
}

fn empty_ok(design: &Design) -> bool {
    design.unmentioned == Unmentioned::Omit
}

// ---------------------------------------------------------------------------------------
// Strict

fn strict(text: &str, design: &Design, domain: &Domain) -> Parsed {
    let vocab = MasaVocab::of(design);
    let grammar = sde_format::Grammar::new(design, domain);
    let mut out = Outcome::default();
    let body = text.trim();
    let read = items::read_exact(body, &grammar);
    let mut raw = Vec::new();
    for item in read.items {
        let ItemValue::Word(value) = item.value else {
            continue;
        };
        raw.push(RawItem {
            key: item.key,
            value,
            line: item.line,
        });
    }
    let mut cut = false;
    for (i, bad) in read.bad.iter().enumerate() {
        if i + 1 == read.bad.len() && bad.cut {
            cut = true;
        }
        out.extra(Issue::BadItem {
            line: bad.line,
            text: bad.text.clone(),
        });
    }
    // The last value may be a proper prefix of a label.
    let last_is_bad = read.bad.last().is_some_and(|b| b.cut);
    if !last_is_bad
        && (read.unterminated || design.layout != Layout::Natural)
        && let Some(last) = raw.last()
    {
        cut |= last.value.is_empty() || is_label_prefix(&last.value, design, &vocab);
    }
    let labels = resolve(&raw, design, domain, &vocab, false, &mut out);
    out.truncated = cut && (read.unterminated || design.layout != Layout::Natural)
        || read.unterminated
            && design.unmentioned == Unmentioned::Placeholder
            && out.counts.missing > 0;
    if read.unterminated && !out.truncated && !body.is_empty() {
        out.extra(Issue::BadItem {
            line: body.lines().count(),
            text: "missing terminator".to_string(),
        });
    }
    out.finish(text, Labels::Masa(labels), empty_ok(design), None)
}

/// Resolves keys and values into one label per aspect. `relaxed`: the lenient rules.
fn resolve(
    items: &[RawItem],
    design: &Design,
    domain: &Domain,
    vocab: &MasaVocab,
    relaxed: bool,
    out: &mut Outcome,
) -> Vec<Sentiment> {
    let mut labels: Vec<Option<Sentiment>> = vec![None; domain.aspects.len()];
    for item in items {
        let key = if relaxed {
            clean_token(&item.key)
        } else {
            item.key.as_str()
        };
        let Some(index) = resolve_key(key, domain, vocab, relaxed, out) else {
            let value = if relaxed {
                clean_token(&item.value)
            } else {
                item.value.as_str()
            };
            if relaxed
                && resolve_value(value, design, vocab, true, &mut Outcome::default()).is_none()
            {
                // Neither an aspect nor a label: prose.
                out.repair(Repair::SurroundingProse);
            } else {
                out.extra(Issue::UnknownKey {
                    key: item.key.clone(),
                    line: item.line,
                });
            }
            continue;
        };
        out.usable = true;
        let aspect_key = &domain.aspects[index].key;
        if labels[index].is_some() {
            if relaxed {
                out.repair(Repair::DuplicateKey);
                out.issues.push(Issue::DuplicateKey {
                    key: aspect_key.clone(),
                });
            } else {
                out.extra(Issue::DuplicateKey {
                    key: aspect_key.clone(),
                });
            }
            continue;
        }
        let value = if relaxed {
            clean_token(&item.value)
        } else {
            item.value.as_str()
        };
        match resolve_value(value, design, vocab, relaxed, out) {
            Some(s) => labels[index] = Some(s),
            None => {
                out.invalid(aspect_key, &item.value);
                labels[index] = Some(Sentiment::Unmentioned);
            }
        }
    }
    if design.unmentioned == Unmentioned::Placeholder {
        for (slot, aspect) in labels.iter().zip(&domain.aspects) {
            if slot.is_none() {
                out.missing(&aspect.key);
            }
        }
    }
    labels
        .into_iter()
        .map(|s| s.unwrap_or(Sentiment::Unmentioned))
        .collect()
}

fn resolve_key(
    key: &str,
    domain: &Domain,
    vocab: &MasaVocab,
    relaxed: bool,
    out: &mut Outcome,
) -> Option<usize> {
    if let Some(i) = domain
        .aspects
        .iter()
        .position(|a| vocab.aspect_name(a) == key)
    {
        return Some(i);
    }
    if !relaxed {
        return None;
    }
    if key.is_empty() {
        return None;
    }
    let lower = key.to_lowercase();
    let found = domain
        .aspects
        .iter()
        .position(|a| a.zh == key || a.en.to_lowercase() == lower || a.key.to_lowercase() == lower)
        .or_else(|| {
            domain.aspects.iter().position(|a| {
                [Language::Zh, Language::En].iter().any(|&l| {
                    grammar::soft_keys(a, l)
                        .iter()
                        .any(|k| lower.contains(&k.to_lowercase()))
                })
            })
        });
    if found.is_some() {
        out.repair(Repair::KeyRelaxed);
    }
    found
}

fn resolve_value(
    value: &str,
    design: &Design,
    vocab: &MasaVocab,
    relaxed: bool,
    out: &mut Outcome,
) -> Option<Sentiment> {
    if let Some(s) = vocab.exact_label(design, value) {
        return Some(s);
    }
    if !relaxed {
        return None;
    }
    let other_forms = [
        (Language::Zh, LabelForm::Text),
        (Language::En, LabelForm::Text),
        (design.language, LabelForm::Numeric),
    ];
    for (language, labels) in other_forms {
        let d = Design {
            labels,
            language,
            ..*design
        };
        if let Some(s) = MasaVocab::of(&d).exact_label(&d, value) {
            out.repair(Repair::LabelRelaxed);
            return Some(s);
        }
    }
    if let Some(n) = value
        .trim_start_matches('+')
        .parse::<i8>()
        .ok()
        .and_then(Sentiment::from_numeric)
    {
        out.repair(Repair::LabelRelaxed);
        return Some(n);
    }
    let s = study_masa::relax_label_opt(value, Language::Zh)
        .or_else(|| study_masa::relax_label_opt(value, Language::En))?;
    out.repair(Repair::LabelRelaxed);
    Some(s)
}

// ---------------------------------------------------------------------------------------
// Lenient

const KV_SEPS: [&str; 2] = ["：", ":"];
const ITEM_SEPS: [char; 5] = ['，', ',', '；', ';', '、'];

fn lenient(text: &str, design: &Design, domain: &Domain) -> Parsed {
    let vocab = MasaVocab::of(design);
    let mut out = Outcome::default();
    let body = strip_code_fence(text, &mut out);
    let body = body.trim();
    let mut items = Vec::new();
    let labels;
    // Items in the exact grammar are taken as they are; only the rest is read heuristically.
    let grammar = sde_format::Grammar::new(design, domain);
    let exact = items::read_exact(body, &grammar);
    if !exact.items.is_empty() {
        let mut leftover: Vec<String> = Vec::new();
        for item in &exact.items {
            if let ItemValue::Word(value) = &item.value {
                let quiet = &mut Outcome::default();
                if resolve_key(clean_token(&item.key), domain, &vocab, true, quiet).is_none() {
                    leftover.push(format!("{}{}{value}", item.key, vocab.kv_sep));
                    continue;
                }
                items.push(RawItem {
                    key: item.key.clone(),
                    value: value.clone(),
                    line: item.line,
                });
            }
        }
        leftover.extend(exact.bad.iter().map(|b| b.text.clone()));
        let leftover = leftover.join("\n");
        let mut cut = false;
        if !leftover.trim().is_empty() {
            if leftover.contains('{') {
                cut = json_items(&leftover, &vocab, design, &mut items, &mut out);
            } else {
                cut = text_items(&leftover, &vocab, design, domain, &mut items, &mut out).cut;
            }
            out.repair(Repair::Separators);
        }
        let last_line = exact.items.last().map_or(0, |i| i.line);
        let tail_cut = exact
            .bad
            .last()
            .is_some_and(|b| b.cut && b.line >= last_line);
        labels = resolve(&items, design, domain, &vocab, true, &mut out);
        out.truncated = tail_cut
            && (cut || exact.bad.last().is_some_and(|b| b.text.trim().is_empty()))
            || exact.unterminated
                && design.unmentioned == Unmentioned::Placeholder
                && out.counts.missing > 0;
        if exact.unterminated && !out.truncated {
            out.repair(Repair::Separators);
        }
    } else if body.contains('{') {
        let cut = json_items(body, &vocab, design, &mut items, &mut out);
        labels = resolve(&items, design, domain, &vocab, true, &mut out);
        out.truncated = cut;
    } else {
        let tail = text_items(body, &vocab, design, domain, &mut items, &mut out);
        labels = resolve(&items, design, domain, &vocab, true, &mut out);
        out.truncated = tail.cut
            || design.layout == Layout::Natural
                && design.unmentioned == Unmentioned::Placeholder
                && !tail.terminated
                && out.counts.missing > 0;
    }
    out.finish(text, Labels::Masa(labels), empty_ok(design), None)
}

/// JSON records anywhere in the text. Returns whether the last one was cut off.
fn json_items(
    body: &str,
    vocab: &MasaVocab,
    design: &Design,
    items: &mut Vec<RawItem>,
    out: &mut Outcome,
) -> bool {
    let mut rest = body;
    let mut consumed_prose = false;
    let mut truncated = false;
    let mut first = true;
    while let Some(open) = rest.find('{') {
        let before = &rest[..open];
        if !before
            .trim()
            .trim_matches(|c| matches!(c, ',' | '[' | ']' | '，'))
            .is_empty()
        {
            consumed_prose = true;
        }
        if !first && !before.contains('\n') && design.layout == Layout::Json {
            out.repair(Repair::Separators);
        }
        first = false;
        let from = &rest[open..];
        let Some((value, repairs, used)) = json::parse_prefix(from, Dialect::Lenient) else {
            // Skip this brace and keep looking.
            out.extra(Issue::BadItem {
                line: line_of(body, from),
                text: from.lines().next().unwrap_or_default().to_string(),
            });
            rest = &from[1..];
            continue;
        };
        if repairs.trailing_comma {
            out.repair(Repair::JsonTrailingComma);
        }
        if repairs.single_quotes {
            out.repair(Repair::JsonSingleQuotes);
        }
        if repairs.unquoted {
            out.repair(Repair::JsonUnquoted);
        }
        if repairs.unclosed {
            out.repair(Repair::JsonUnclosed);
            truncated = true;
        }
        let line = line_of(body, from);
        collect_object(&value, vocab, design, line, items, out);
        rest = &from[used..];
    }
    if !rest
        .trim()
        .trim_matches(|c| matches!(c, ',' | '[' | ']'))
        .is_empty()
    {
        consumed_prose = true;
    }
    if consumed_prose {
        out.repair(Repair::SurroundingProse);
    }
    if design.layout != Layout::Json && design.reasoning == Reasoning::None {
        out.repair(Repair::Separators);
    }
    truncated
}

fn line_of(body: &str, at: &str) -> usize {
    let offset = at.as_ptr() as usize - body.as_ptr() as usize;
    body[..offset.min(body.len())].matches('\n').count() + 1
}

const ASPECT_KEYS: [&str; 4] = ["方面", "aspect", "category", "aspect_category"];
const SENTIMENT_KEYS: [&str; 6] = [
    "情感",
    "sentiment",
    "label",
    "polarity",
    "情感类别",
    "情感倾向",
];
const EVIDENCE_KEYS: [&str; 5] = ["描述", "description", "evidence", "reason", "理由"];

fn collect_object(
    value: &Value,
    vocab: &MasaVocab,
    design: &Design,
    line: usize,
    items: &mut Vec<RawItem>,
    out: &mut Outcome,
) {
    match value {
        Value::Array(values) => {
            for v in values {
                collect_object(v, vocab, design, line, items, out);
            }
        }
        Value::Object(entries) => {
            let find = |keys: &[&str]| {
                entries
                    .iter()
                    .find(|(k, _)| keys.contains(&k.as_str()) || k == vocab.json_aspect)
                    .and_then(|(_, v)| v.as_text())
            };
            let aspect = entries
                .iter()
                .find(|(k, _)| k == vocab.json_aspect || ASPECT_KEYS.contains(&k.as_str()))
                .and_then(|(_, v)| v.as_text());
            let sentiment = entries
                .iter()
                .find(|(k, _)| k == vocab.json_sentiment || SENTIMENT_KEYS.contains(&k.as_str()))
                .and_then(|(_, v)| v.as_text());
            let _ = find;
            match (aspect, sentiment) {
                (Some(key), Some(value)) => {
                    if entries.iter().any(|(k, _)| {
                        k == vocab.json_evidence || EVIDENCE_KEYS.contains(&k.as_str())
                    }) && design.reasoning == Reasoning::None
                    {
                        out.repair(Repair::EvidenceStripped);
                    }
                    items.push(RawItem { key, value, line });
                }
                (Some(key), None) => items.push(RawItem {
                    key,
                    value: String::new(),
                    line,
                }),
                _ => {
                    // A flat object: {"食品评价": "正面", ...}.
                    out.repair(Repair::Separators);
                    for (k, v) in entries {
                        if let Some(value) = v.as_text() {
                            items.push(RawItem {
                                key: k.clone(),
                                value,
                                line,
                            });
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// How a text output ends.
struct Tail {
    /// It ends with a terminator (`。` or `.`).
    terminated: bool,
    /// The last item is visibly cut: no value, a proper prefix of a label, or a bare
    /// proper prefix of an aspect name.
    cut: bool,
}

/// `key：value` items from lines and separators.
fn text_items(
    body: &str,
    vocab: &MasaVocab,
    design: &Design,
    domain: &Domain,
    items: &mut Vec<RawItem>,
    out: &mut Outcome,
) -> Tail {
    let mut lines: Vec<(usize, &str)> = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let (line, marker) = strip_list_marker(raw);
        if marker {
            out.repair(Repair::ListMarkers);
        }
        if line.trim().is_empty() {
            out.repair(Repair::Whitespace);
            continue;
        }
        lines.push((i + 1, line));
    }
    let layout_lines = design.layout == Layout::Lines;
    if lines.len() > 1 && !layout_lines
        || lines.len() == 1 && layout_lines && items_in(lines[0].1) > 1
    {
        out.repair(Repair::Separators);
    }
    let terminated = body.ends_with(['。', '.']);
    if layout_lines && terminated || design.layout == Layout::Natural && !terminated {
        out.repair(Repair::Separators);
    }
    let mut cut = false;
    let mut last_item: Option<usize> = None;
    for (li, (line_no, line)) in lines.iter().enumerate() {
        let line = line.trim_end_matches(['。', '.']).trim_end();
        let pieces: Vec<&str> = line.split(ITEM_SEPS).collect();
        for (pi, piece) in pieces.iter().enumerate() {
            let is_last = li + 1 == lines.len() && pi + 1 == pieces.len();
            let sep_used = KV_SEPS
                .iter()
                .filter_map(|s| piece.find(s).map(|i| (i, *s)))
                .min_by_key(|(i, _)| *i);
            if let Some((at, sep)) = sep_used {
                if sep != vocab.kv_sep.trim() {
                    out.repair(Repair::PunctuationWidth);
                }
                let mut key = &piece[..at];
                let mut value = &piece[at + sep.len()..];
                // Prose before the first key: `分析如下：食品评价：正面`.
                let quiet = &mut Outcome::default();
                while resolve_key(clean_token(key), domain, vocab, true, quiet).is_none() {
                    let Some((k, v)) = KV_SEPS
                        .iter()
                        .filter_map(|s| value.split_once(s))
                        .min_by_key(|(k, _)| k.len())
                    else {
                        break;
                    };
                    out.repair(Repair::SurroundingProse);
                    key = k;
                    value = v;
                }
                if key != key.trim() && vocab.language == Language::Zh {
                    out.repair(Repair::Whitespace);
                }
                items.push(RawItem {
                    key: key.to_string(),
                    value: value.to_string(),
                    line: *line_no,
                });
                last_item = Some(items.len() - 1);
                if is_last {
                    let v = clean_token(value);
                    cut = v.is_empty() || is_label_prefix(v, design, vocab);
                }
                continue;
            }
            let p = clean_token(piece);
            if p.is_empty() {
                if !is_last {
                    out.repair(Repair::Separators);
                }
                continue;
            }
            // CoT text between an aspect and its label: `aspect：evidence，label`.
            if let Some(idx) = last_item {
                let quiet = &mut Outcome::default();
                let prev_is_label =
                    resolve_value(clean_token(&items[idx].value), design, vocab, true, quiet)
                        .is_some();
                if !prev_is_label && resolve_value(p, design, vocab, true, quiet).is_some() {
                    items[idx].value = p.to_string();
                    if design.reasoning == Reasoning::None {
                        out.repair(Repair::EvidenceStripped);
                    }
                    continue;
                }
            }
            if is_last
                && domain
                    .aspects
                    .iter()
                    .any(|a| vocab.aspect_name(a).starts_with(p) && vocab.aspect_name(a) != p)
            {
                cut = true;
                continue;
            }
            // Neither an item nor a label: prose (or evidence) dropped.
            out.repair(Repair::SurroundingProse);
        }
    }
    Tail { terminated, cut }
}

fn is_label_prefix(v: &str, design: &Design, vocab: &MasaVocab) -> bool {
    vocab.exact_label(design, v).is_none()
        && Sentiment::ALL
            .iter()
            .any(|&s| vocab.label(design, s).starts_with(v))
}

fn items_in(line: &str) -> usize {
    line.split(ITEM_SEPS)
        .filter(|p| KV_SEPS.iter().any(|s| p.contains(s)))
        .count()
}

fn study_error_name(e: StudyError) -> &'static str {
    match e {
        StudyError::EmptyOutput => "empty_output",
        StudyError::SplitError => "split_error",
        StudyError::EvalError => "eval_error",
        StudyError::TriggerFormat => "trigger format error",
        StudyError::UndefinedType => "undefined type",
    }
}
