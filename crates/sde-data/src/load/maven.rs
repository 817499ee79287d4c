//! MAVEN-style event detection: the few-shot ED subset's JSON parts, and the study's
//! heuristic-prompt test file (`input`/`output` JSON lines).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{LoadReport, parse_json, read_text};
use crate::error::{DataError, Result, excerpt};
use crate::record::{Event, EventRecord, Span};

#[derive(Deserialize)]
struct Sentence {
    id: serde_json::Value,
    tokens: Vec<String>,
    events: Vec<SourceEvent>,
}

#[derive(Deserialize)]
struct SourceEvent {
    start: usize,
    end: usize,
    event_type: String,
}

/// Byte spans of each token in `tokens.join(" ")`.
fn token_offsets(tokens: &[String]) -> Vec<(usize, usize)> {
    let mut offsets = Vec::with_capacity(tokens.len());
    let mut pos = 0;
    for t in tokens {
        offsets.push((pos, pos + t.len()));
        pos += t.len() + 1;
    }
    offsets
}

/// Loads a few-shot ED part (`dev.json`/`test.json`): a JSON object `{event_type: [sentence]}`
/// where a sentence with events of several types appears under each of them. Sentences are
/// deduplicated by id and returned sorted by id; text is the tokens joined by spaces, and
/// trigger spans are byte spans into it. Ids are `{prefix}/{id}`.
pub fn load_fewshot(path: &Path, id_prefix: &str) -> Result<(Vec<EventRecord>, LoadReport)> {
    let content = read_text(path)?;
    let parts: BTreeMap<String, Vec<Sentence>> = parse_json(
        path,
        &content,
        "a JSON object {event_type: [{id, tokens, events: [{start, end, event_type}]}]}",
    )?;
    let mut report = LoadReport::default();
    let mut by_id: BTreeMap<String, EventRecord> = BTreeMap::new();
    let mut numeric: BTreeMap<String, i64> = BTreeMap::new();
    for (group, sentences) in parts {
        for (index, s) in sentences.into_iter().enumerate() {
            let raw_id = match &s.id {
                serde_json::Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            if by_id.contains_key(&raw_id) {
                report.add("repeated sentences merged", 1);
                continue;
            }
            let offsets = token_offsets(&s.tokens);
            let text = s.tokens.join(" ");
            let mut events = Vec::new();
            for e in &s.events {
                if e.start >= e.end || e.end > s.tokens.len() {
                    return Err(DataError::malformed(
                        path,
                        format!("\"{group}\"[{index}] (id {raw_id}), field \"events\""),
                        format!("token spans with start < end <= {}", s.tokens.len()),
                        format!("{}..{}", e.start, e.end),
                    ));
                }
                let span = Span {
                    start: offsets[e.start].0,
                    end: offsets[e.end - 1].1,
                };
                events.push(Event {
                    kind: e.event_type.clone(),
                    trigger: text[span.start..span.end].to_string(),
                    span,
                });
            }
            events.sort_by_key(|e| (e.span.start, e.span.end, e.kind.clone()));
            report.add("events", events.len());
            if let Some(n) = s.id.as_i64() {
                numeric.insert(raw_id.clone(), n);
            }
            by_id.insert(
                raw_id.clone(),
                EventRecord {
                    id: format!("{id_prefix}/{raw_id}"),
                    text,
                    events,
                },
            );
        }
    }
    let mut keyed: Vec<(Option<i64>, String, EventRecord)> = by_id
        .into_iter()
        .map(|(k, r)| (numeric.get(&k).copied(), k, r))
        .collect();
    keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    Ok((keyed.into_iter().map(|(_, _, r)| r).collect(), report))
}

#[derive(Deserialize)]
struct PromptLine {
    input: String,
    output: String,
}

/// Loads the study's heuristic MAVEN test prompts (JSON lines of `{"input", "output"}`):
/// the sentence is cut from the prompt between `The sentence is: ` and ` Output:`, and each
/// output line `["Type", "trigger"]` becomes an event whose span is the trigger's first
/// occurrence (as a whole word, left to right, not reusing an earlier trigger's span).
/// Ids are `{prefix}/{line index}`.
pub fn load_heuristic_prompts(
    path: &Path,
    id_prefix: &str,
) -> Result<(Vec<EventRecord>, LoadReport)> {
    let content = read_text(path)?;
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for (index, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", index + 1);
        let prompt: PromptLine = serde_json::from_str(line).map_err(|e| {
            DataError::malformed(
                path,
                &location,
                "a JSON object {input, output}",
                e.to_string(),
            )
        })?;
        const HEAD: &str = "The sentence is: ";
        const TAIL: &str = " Output:";
        let start = prompt.input.find(HEAD).map(|i| i + HEAD.len());
        let end = prompt.input.rfind(TAIL);
        let text = match (start, end) {
            (Some(s), Some(e)) if s <= e => prompt.input[s..e].to_string(),
            _ => {
                return Err(DataError::malformed(
                    path,
                    format!("{location}, field \"input\""),
                    format!("a prompt containing {HEAD:?} ... {TAIL:?}"),
                    excerpt(&prompt.input),
                ));
            }
        };
        let mut used: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut events = Vec::new();
        for item in prompt.output.lines().filter(|l| !l.trim().is_empty()) {
            let pair: Vec<String> = serde_json::from_str(item.trim()).map_err(|e| {
                DataError::malformed(
                    path,
                    format!("{location}, field \"output\""),
                    "lines of [\"event_type\", \"trigger\"]",
                    format!("{} ({e})", excerpt(item)),
                )
            })?;
            if pair.len() != 2 {
                if pair.is_empty() {
                    continue;
                }
                return Err(DataError::malformed(
                    path,
                    format!("{location}, field \"output\""),
                    "a pair [\"event_type\", \"trigger\"]",
                    excerpt(item),
                ));
            }
            let span = find_word(&text, &pair[1], &used).ok_or_else(|| {
                DataError::malformed(
                    path,
                    format!("{location}, field \"output\""),
                    "a trigger that occurs in the sentence",
                    format!("{:?}", pair[1]),
                )
            })?;
            used.insert((span.start, span.end));
            events.push(Event {
                kind: pair[0].clone(),
                trigger: pair[1].clone(),
                span,
            });
        }
        events.sort_by_key(|e| (e.span.start, e.span.end, e.kind.clone()));
        report.add("events", events.len());
        records.push(EventRecord {
            id: format!("{id_prefix}/{index}"),
            text,
            events,
        });
    }
    Ok((records, report))
}

/// The first whole-word occurrence of `word` in `text` not in `used`; any occurrence as a
/// fallback.
fn find_word(text: &str, word: &str, used: &BTreeSet<(usize, usize)>) -> Option<Span> {
    if word.is_empty() {
        return None;
    }
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    let mut fallback = None;
    for (i, _) in text.match_indices(word) {
        let end = i + word.len();
        if used.contains(&(i, end)) {
            continue;
        }
        let before = text[..i].chars().next_back();
        let after = text[end..].chars().next();
        let span = Span { start: i, end };
        if !is_word(before) && !is_word(after) {
            return Some(span);
        }
        fallback.get_or_insert(span);
    }
    fallback
}
