//! GENIA nested NER: the study's JSON test file and the raw GENIA term corpus 3.02.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::xml::{self, Element, Node};
use super::{LoadReport, parse_json, read_text};
use crate::error::{DataError, Result};
use crate::record::{Entity, NerRecord};

#[derive(Deserialize)]
struct JsonSentence {
    tokens: Vec<String>,
    entities: Vec<JsonEntity>,
    #[serde(default)]
    org_id: Option<String>,
}

#[derive(Deserialize)]
struct JsonEntity {
    start: usize,
    end: usize,
    #[serde(rename = "type")]
    kind: String,
}

/// Builds a record from tokens and `(start, end, type)` token spans, validating the spans.
pub(crate) fn ner_record(
    id: String,
    tokens: Vec<String>,
    spans: impl IntoIterator<Item = (usize, usize, String)>,
) -> std::result::Result<NerRecord, String> {
    let mut entities = Vec::new();
    for (start, end, kind) in spans {
        if start >= end || end > tokens.len() {
            return Err(format!(
                "entity span {start}..{end} outside the sentence's {} tokens",
                tokens.len()
            ));
        }
        entities.push(Entity {
            text: tokens[start..end].join(" "),
            kind,
            start_token: start,
            end_token: end,
        });
    }
    entities.sort_by(|a, b| {
        (a.start_token, a.end_token, &a.kind).cmp(&(b.start_token, b.end_token, &b.kind))
    });
    Ok(NerRecord {
        id,
        text: tokens.join(" "),
        tokens,
        entities,
    })
}

/// Loads the study's GENIA JSON (`genia_test_context.json` and siblings): one array of
/// `{"tokens", "entities": [{"start", "end", "type"}], "org_id"}`; ids are `{prefix}/{org_id}`.
pub fn load_json(path: &Path, id_prefix: &str) -> Result<(Vec<NerRecord>, LoadReport)> {
    let content = read_text(path)?;
    let sentences: Vec<JsonSentence> = parse_json(
        path,
        &content,
        "a JSON array of {tokens, entities: [{start, end, type}], org_id}",
    )?;
    let mut report = LoadReport::default();
    let mut records = Vec::with_capacity(sentences.len());
    for (index, s) in sentences.into_iter().enumerate() {
        let id = match &s.org_id {
            Some(org) => format!("{id_prefix}/{org}"),
            None => format!("{id_prefix}/{index}"),
        };
        report.add("entities", s.entities.len());
        let spans = s.entities.into_iter().map(|e| (e.start, e.end, e.kind));
        let record = ner_record(id, s.tokens, spans).map_err(|found| {
            DataError::malformed(
                path,
                format!("record {index}, field \"entities\""),
                "token spans with start < end <= number of tokens",
                found,
            )
        })?;
        records.push(record);
    }
    Ok((records, report))
}

/// Maps a GENIA ontology class to one of the five standard types, or `None` to drop it.
///
/// `G#DNA_*` → DNA, `G#RNA_*` → RNA, `G#protein_*` → protein, `G#cell_type`, `G#cell_line`;
/// coordinated values such as `(AND G#DNA_x G#DNA_y)` and everything else are dropped.
pub fn map_genia_class(sem: &str) -> Option<&'static str> {
    if sem.starts_with("G#DNA_") {
        Some("DNA")
    } else if sem.starts_with("G#RNA_") {
        Some("RNA")
    } else if sem.starts_with("G#protein_") {
        Some("protein")
    } else if sem == "G#cell_type" {
        Some("cell_type")
    } else if sem == "G#cell_line" {
        Some("cell_line")
    } else {
        None
    }
}

/// The corpus file inside `GENIAcorpus3.02.tgz`.
pub const RAW_MEMBER: &str = "GENIA_term_3.02/GENIAcorpus3.02.xml";

/// Rebuilds every sentence of the raw GENIA corpus (18,546 in 3.02), in document order.
///
/// `path` is `GENIAcorpus3.02.tgz` (read with gzip + tar) or the extracted XML. Entities keep
/// the five standard types (see [`map_genia_class`]); duplicates of the same character span and
/// type are removed. Tokens are the whitespace-separated words, further split at entity
/// boundaries so that every entity is a whole number of tokens. Ids are `{prefix}/{index}`,
/// the 0-based sentence index in the corpus.
pub fn load_raw(path: &Path, id_prefix: &str) -> Result<(Vec<NerRecord>, LoadReport)> {
    let (content, label) = if path.extension().is_some_and(|e| e == "tgz" || e == "gz") {
        (read_tgz_member(path, RAW_MEMBER)?, path.join(RAW_MEMBER))
    } else {
        (read_text(path)?, path.to_path_buf())
    };
    let root = xml::parse(&label, &content)?;
    xml::expect_root(&label, &root, "set")?;
    let mut sentences = Vec::new();
    collect_sentences(&root, &mut sentences);
    let mut report = LoadReport::default();
    let mut records = Vec::with_capacity(sentences.len());
    for (index, sentence) in sentences.into_iter().enumerate() {
        let mut text = String::new();
        let mut spans = Vec::new();
        walk(sentence, &mut text, &mut spans, &mut report);
        let record = tokenize_with_spans(format!("{id_prefix}/{index}"), &text, spans, &mut report)
            .map_err(|found| {
                DataError::malformed(
                    &label,
                    format!("line {}, <sentence>", sentence.line),
                    "entities inside the sentence text",
                    found,
                )
            })?;
        records.push(record);
    }
    Ok((records, report))
}

fn read_tgz_member(path: &Path, member: &str) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive.entries().map_err(|e| {
        DataError::malformed(
            path,
            "archive",
            "a gzip-compressed tar archive",
            e.to_string(),
        )
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            DataError::malformed(path, "archive", "a readable tar entry", e.to_string())
        })?;
        let name: PathBuf = entry
            .path()
            .map_err(|e| {
                DataError::malformed(path, "archive", "a valid entry name", e.to_string())
            })?
            .into_owned();
        if name == Path::new(member) {
            let mut content = String::new();
            entry.read_to_string(&mut content).map_err(|e| {
                DataError::malformed(path.join(member), "content", "UTF-8 text", e.to_string())
            })?;
            return Ok(content);
        }
    }
    Err(DataError::malformed(
        path,
        "archive",
        format!("a member {member}"),
        "no such member",
    ))
}

fn collect_sentences<'a>(element: &'a Element, out: &mut Vec<&'a Element>) {
    for child in element.elements() {
        if child.name == "sentence" {
            out.push(child);
        } else {
            collect_sentences(child, out);
        }
    }
}

fn walk(
    element: &Element,
    text: &mut String,
    spans: &mut Vec<(usize, usize, String)>,
    report: &mut LoadReport,
) {
    for node in &element.children {
        match node {
            Node::Text(t) => text.push_str(t),
            Node::Element(child) => {
                let start = text.len();
                walk(child, text, spans, report);
                if child.name == "cons" {
                    match child.attr("sem").and_then(map_genia_class) {
                        Some(kind) => spans.push((start, text.len(), kind.to_string())),
                        None => report.add("annotations dropped (other or coordinated class)", 1),
                    }
                }
            }
        }
    }
}

/// Splits `text` at whitespace and at span boundaries; maps byte spans onto token spans.
fn tokenize_with_spans(
    id: String,
    text: &str,
    spans: Vec<(usize, usize, String)>,
    report: &mut LoadReport,
) -> std::result::Result<NerRecord, String> {
    let mut trimmed = BTreeSet::new();
    for (start, end, kind) in spans {
        let slice = &text[start..end];
        let lead = slice.len() - slice.trim_start().len();
        let trail = slice.len() - slice.trim_end().len();
        if lead + trail >= slice.len() {
            report.add("empty entities dropped", 1);
            continue;
        }
        if !trimmed.insert((start + lead, end - trail, kind)) {
            report.add("duplicate entities removed", 1);
        }
    }
    let mut cuts: BTreeSet<usize> = BTreeSet::new();
    for (s, e, _) in &trimmed {
        cuts.insert(*s);
        cuts.insert(*e);
    }
    let mut tokens: Vec<String> = Vec::new();
    let mut token_starts: Vec<usize> = Vec::new();
    let mut token_ends: Vec<usize> = Vec::new();
    let mut current: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = current.take() {
                token_starts.push(s);
                token_ends.push(i);
            }
            continue;
        }
        if let Some(s) = current
            && cuts.contains(&i)
        {
            token_starts.push(s);
            token_ends.push(i);
            current = None;
        }
        if current.is_none() {
            current = Some(i);
        }
    }
    if let Some(s) = current {
        token_starts.push(s);
        token_ends.push(text.len());
    }
    for (s, e) in token_starts.iter().zip(&token_ends) {
        tokens.push(text[*s..*e].to_string());
    }
    let mut token_spans = Vec::new();
    for (s, e, kind) in trimmed {
        let start = token_starts.binary_search(&s);
        let end = token_ends.binary_search(&e);
        match (start, end) {
            (Ok(a), Ok(b)) => token_spans.push((a, b + 1, kind)),
            _ => return Err(format!("entity at bytes {s}..{e} not on token boundaries")),
        }
    }
    ner_record(id, tokens, token_spans)
}

#[derive(Deserialize)]
struct JsonlSentence {
    tokens: Vec<String>,
    #[serde(default)]
    sent_id: Option<String>,
    entity_mentions: Vec<JsonlEntity>,
}

#[derive(Deserialize)]
struct JsonlEntity {
    start: usize,
    end: usize,
    entity_type: String,
}

/// Loads GENIA in the CNN-Nested-NER JSON Lines format (one sentence per line:
/// `{"tokens", "doc_id", "sent_id", "entity_mentions": [{"start", "end", "entity_type"}]}`).
/// Ids are `{prefix}/{sent_id}` (or the line index when absent).
pub fn load_jsonlines(path: &Path, id_prefix: &str) -> Result<(Vec<NerRecord>, LoadReport)> {
    let content = read_text(path)?;
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for (index, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let location = format!("line {}", index + 1);
        let s: JsonlSentence = serde_json::from_str(line).map_err(|e| {
            DataError::malformed(
                path,
                format!("{location}, column {}", e.column()),
                "{tokens, sent_id, entity_mentions: [{start, end, entity_type}]}",
                e.to_string(),
            )
        })?;
        let id = match &s.sent_id {
            Some(sid) => format!("{id_prefix}/{sid}"),
            None => format!("{id_prefix}/{index}"),
        };
        report.add("entities", s.entity_mentions.len());
        let spans = s
            .entity_mentions
            .into_iter()
            .map(|e| (e.start, e.end, e.entity_type));
        let record = ner_record(id, s.tokens, spans).map_err(|found| {
            DataError::malformed(
                path,
                format!("{location}, field \"entity_mentions\""),
                "token spans with start < end <= number of tokens",
                found,
            )
        })?;
        records.push(record);
    }
    Ok((records, report))
}
