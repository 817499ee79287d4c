//! CoNLL-2003 NER (`word POS chunk NER` per line, IOB1 tags, blank lines between sentences).

use std::path::Path;

use super::genia::ner_record;
use super::{LoadReport, read_text};
use crate::error::{DataError, Result, excerpt};
use crate::record::NerRecord;

/// Loads one CoNLL-2003 file; `-DOCSTART-` lines are skipped. Ids are `{prefix}/{index}`
/// (0-based sentence index in the file).
///
/// IOB1: `I-X` continues an entity of type X or starts one after `O` or another type;
/// `B-X` starts a new entity right after another X. IOB2 files read the same way.
pub fn load(path: &Path, id_prefix: &str) -> Result<(Vec<NerRecord>, LoadReport)> {
    let content = read_text(path)?;
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    let mut open: Option<(usize, String)> = None;
    let flush = |tokens: &mut Vec<String>,
                 spans: &mut Vec<(usize, usize, String)>,
                 open: &mut Option<(usize, String)>,
                 records: &mut Vec<NerRecord>,
                 report: &mut LoadReport| {
        if let Some((start, kind)) = open.take() {
            spans.push((start, tokens.len(), kind));
        }
        if tokens.is_empty() {
            return;
        }
        report.add("entities", spans.len());
        let id = format!("{id_prefix}/{}", records.len());
        let record = ner_record(id, std::mem::take(tokens), std::mem::take(spans))
            .expect("spans are built within the sentence");
        records.push(record);
    };
    for (index, line) in content.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(
                &mut tokens,
                &mut spans,
                &mut open,
                &mut records,
                &mut report,
            );
            continue;
        }
        if line.starts_with("-DOCSTART-") {
            flush(
                &mut tokens,
                &mut spans,
                &mut open,
                &mut records,
                &mut report,
            );
            report.add("document markers", 1);
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            return Err(DataError::malformed(
                path,
                format!("line {}", index + 1),
                "`word POS chunk NER` (at least a word and a tag)",
                excerpt(line),
            ));
        }
        let word = fields[0];
        let tag = fields[fields.len() - 1];
        let position = tokens.len();
        let (prefix, kind) = match tag.split_once('-') {
            _ if tag == "O" => ("O", ""),
            Some((p @ ("B" | "I"), k)) if !k.is_empty() => (p, k),
            _ => {
                return Err(DataError::malformed(
                    path,
                    format!("line {}", index + 1),
                    "an NER tag O, I-TYPE or B-TYPE",
                    excerpt(tag),
                ));
            }
        };
        let continues = prefix == "I" && open.as_ref().is_some_and(|(_, k)| k == kind);
        if !continues {
            if let Some((start, k)) = open.take() {
                spans.push((start, position, k));
            }
            if prefix != "O" {
                open = Some((position, kind.to_string()));
            }
        }
        tokens.push(word.to_string());
    }
    flush(
        &mut tokens,
        &mut spans,
        &mut open,
        &mut records,
        &mut report,
    );
    Ok((records, report))
}
