//! Evidence texts for reasoning designs.
//!
//! The rule (also in `docs/design-options.md`):
//! 1. a MASA aspect with an evidence span in the record: the spanned text;
//! 2. otherwise, a mentioned target: the clause of the text that mentions it. Clauses end at
//!    `。！？；，～\n` and at `.,;!?~` followed by whitespace or the end. For NER and events the
//!    clause holds the first mention (entity or trigger) of the target; for a MASA aspect, the
//!    first clause containing one of its cue words (display names, key, the first two characters
//!    of a Chinese name longer than two characters, English words of four letters or more), or
//!    the text's first sentence when no clause has one;
//! 3. an unmentioned target: the grammar's fixed phrase ([`crate::Grammar::absent_evidence`]).
//!
//! The text is then trimmed, runs of whitespace become one space, and it is cut to
//! [`MAX_EVIDENCE_CHARS`] characters (ending in `…` when cut).

use sde_data::AspectDef;

/// Longest evidence, in characters.
pub const MAX_EVIDENCE_CHARS: usize = 60;

fn is_hard_break(c: char) -> bool {
    matches!(
        c,
        '。' | '！' | '？' | '；' | '，' | '～' | '\n' | '!' | '?' | '、' | '…'
    )
}

fn is_soft_break(c: char) -> bool {
    matches!(c, '.' | ',' | ';' | '~' | ':')
}

/// Byte ranges of the clauses of `text`, delimiters included at their clause's end.
pub fn clauses(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let next_ws = iter.peek().is_none_or(|(_, n)| n.is_whitespace());
        if is_hard_break(c) || (is_soft_break(c) && next_ws) {
            let end = i + c.len_utf8();
            if !text[start..end].trim().is_empty() {
                out.push((start, end));
            }
            start = end;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push((start, text.len()));
    }
    out
}

/// The clause(s) covering the byte range `start..end` of `text`.
pub fn clause_around(text: &str, start: usize, end: usize) -> &str {
    let all = clauses(text);
    let from = all
        .iter()
        .find(|(s, e)| *s <= start && start < *e)
        .map_or(start, |c| c.0);
    let to = all
        .iter()
        .find(|(s, e)| *s < end.max(start + 1) && end <= *e)
        .map_or(end, |c| c.1);
    text.get(from..to).unwrap_or("")
}

/// The first sentence of `text` (up to the first `。！？!?.\n` break).
fn first_sentence(text: &str) -> &str {
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let next_ws = iter.peek().is_none_or(|(_, n)| n.is_whitespace());
        if matches!(c, '。' | '！' | '？' | '!' | '?' | '\n') || (c == '.' && next_ws) {
            return &text[..i + c.len_utf8()];
        }
    }
    text
}

/// Words that signal an aspect in a text.
pub fn aspect_cues(aspect: &AspectDef) -> Vec<String> {
    let mut cues = vec![
        aspect.zh.clone(),
        aspect.en.to_lowercase(),
        aspect.key.to_lowercase(),
    ];
    if aspect.zh.chars().count() > 2 {
        cues.push(aspect.zh.chars().take(2).collect());
    }
    cues.extend(
        aspect
            .en
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4)
            .map(str::to_lowercase),
    );
    cues.retain(|c| !c.trim().is_empty());
    cues
}

/// The clause of `text` mentioning `aspect`, or the first sentence.
pub fn aspect_clause<'a>(text: &'a str, aspect: &AspectDef) -> &'a str {
    let cues = aspect_cues(aspect);
    clauses(text)
        .into_iter()
        .map(|(s, e)| &text[s..e])
        .find(|clause| {
            let lower = clause.to_lowercase();
            cues.iter().any(|c| lower.contains(c.as_str()))
        })
        .unwrap_or_else(|| first_sentence(text))
}

/// `text` trimmed of whitespace and clause delimiters, whitespace runs collapsed, cut to
/// [`MAX_EVIDENCE_CHARS`].
pub fn tidy(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = collapsed
        .trim_end_matches(|c: char| is_hard_break(c) || is_soft_break(c) || c.is_whitespace())
        .trim_start();
    if trimmed.chars().count() <= MAX_EVIDENCE_CHARS {
        trimmed.to_string()
    } else {
        let mut cut: String = trimmed.chars().take(MAX_EVIDENCE_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}
