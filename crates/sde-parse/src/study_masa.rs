//! The study's own MASA evaluator (`format_parser.JSON_text` + soft relaxation, digest §7.1),
//! reproduced behaviour for behaviour.
//!
//! Choices where the digest leaves the Python unknown are marked `[U]` below.

use sde_data::{Domain, Sentiment};
use sde_format::{Design, LabelForm, Language, Layout, Reasoning, Unmentioned};

use crate::grammar::{self, MasaVocab, STUDY_SYNONYMS_ZH, SYNONYMS_EN};
use crate::json::{self, Dialect, Value};
use crate::types::StudyError;

/// Which of the study's parsers a design maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StudyParser {
    /// `instruction-last`, `instruction-first`, `no-instruction`, `input-modeling`.
    Natural,
    /// `numerical-label`.
    Numerical,
    /// `lines-output`, `ES-SDE`.
    Lines,
    /// `json-output` (and `cot`, `rev-cot` with `punc_replace`).
    Json { cot: bool },
    /// `omit-unmentioned`, `EW-SDE`, with the Q1 fix applied (`mode in [...]`).
    OmitUnmentioned,
}

fn parser_for(design: &Design) -> StudyParser {
    match (design.layout, design.unmentioned, design.labels) {
        (Layout::Json, _, _) => StudyParser::Json {
            cot: design.reasoning != Reasoning::None,
        },
        (Layout::Lines, _, _) => StudyParser::Lines,
        (_, Unmentioned::Omit, _) => StudyParser::OmitUnmentioned,
        (_, _, LabelForm::Numeric) => StudyParser::Numerical,
        _ => StudyParser::Natural,
    }
}

/// The `dict` the study's parser builds: keys in first-insertion order, later values
/// overwrite earlier ones (Python dict semantics).
#[derive(Debug, Default)]
pub(crate) struct StudyDict {
    pub(crate) entries: Vec<(String, String)>,
}

impl StudyDict {
    fn insert(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }
}

/// The study's `JSON_text(text, mode, punc_replace)`: the raw dict and the last error type.
pub(crate) fn json_text(
    text: &str,
    design: &Design,
    punc_replace: bool,
) -> (StudyDict, Option<StudyError>) {
    let vocab = MasaVocab::of(design);
    let mut dict = StudyDict::default();
    let mut error = None;
    let parser = parser_for(design);
    if text.is_empty() {
        // [U] The committed OU branch misspells `error_type` here (Q1), so an empty OU output
        // is not a format error.
        if parser != StudyParser::OmitUnmentioned {
            error = Some(StudyError::EmptyOutput);
        }
        return (dict, error);
    }
    let numeric = design.labels == LabelForm::Numeric;
    match parser {
        StudyParser::Natural | StudyParser::Numerical | StudyParser::OmitUnmentioned => {
            let body = strip_matches(text, vocab.terminator);
            for piece in body.split(vocab.item_sep) {
                if parser == StudyParser::OmitUnmentioned && piece.is_empty() {
                    continue;
                }
                split_piece(piece, &vocab, numeric, &mut dict, &mut error);
            }
        }
        StudyParser::Lines => {
            let body = strip_matches(text, "\n");
            for piece in body.split('\n') {
                split_piece(piece, &vocab, numeric, &mut dict, &mut error);
            }
        }
        StudyParser::Json { cot } => {
            let normalised;
            let body = if cot && punc_replace {
                normalised = normalise_cot_punctuation(text);
                normalised.as_str()
            } else {
                text
            };
            for line in body.split('\n') {
                let numeric_word = |v: &str| match grammar::study_numeric(v) {
                    Some(s) if numeric => vocab.word(s).to_string(),
                    _ => v.to_string(),
                };
                match eval_record(line, &vocab) {
                    Some((aspect, sentiment)) => dict.insert(&aspect, &numeric_word(&sentiment)),
                    None => match fallback_record(line, &vocab) {
                        Some((aspect, sentiment)) => {
                            error = Some(StudyError::EvalError);
                            dict.insert(&aspect, &numeric_word(&sentiment));
                        }
                        None => error = Some(StudyError::SplitError),
                    },
                }
            }
        }
    }
    (dict, error)
}

/// Python's `str.strip(chars)` for a one-character set given as a string.
fn strip_matches<'a>(text: &'a str, chars: &str) -> &'a str {
    let set: Vec<char> = chars.chars().collect();
    text.trim_matches(|c| set.contains(&c))
}

fn split_piece(
    piece: &str,
    vocab: &MasaVocab,
    numeric: bool,
    dict: &mut StudyDict,
    error: &mut Option<StudyError>,
) {
    let mut parts = piece.split(vocab.kv_sep);
    let key = parts.next().unwrap_or_default();
    let Some(value) = parts.next() else {
        *error = Some(StudyError::SplitError);
        return;
    };
    if numeric {
        match grammar::study_numeric(value) {
            Some(s) => dict.insert(key, vocab.word(s)),
            None => *error = Some(StudyError::SplitError),
        }
    } else {
        dict.insert(key, value);
    }
}

/// `eval(line)` then `["方面"]`, `["情感"]`.
fn eval_record(line: &str, vocab: &MasaVocab) -> Option<(String, String)> {
    let (value, _) = json::parse_whole(line, Dialect::Python)?;
    let aspect = value.get(vocab.json_aspect)?;
    let sentiment = value.get(vocab.json_sentiment)?;
    Some((python_str(aspect)?, python_str(sentiment)?))
}

fn python_str(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) | Value::Number(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Null => Some("None".into()),
        _ => None,
    }
}

/// [U] The fallback manual split: strip braces, split on `", "`, then each piece on `": "`,
/// quotes stripped; the record needs both keys.
fn fallback_record(line: &str, vocab: &MasaVocab) -> Option<(String, String)> {
    let body = line.trim().trim_start_matches('{').trim_end_matches('}');
    let mut aspect = None;
    let mut sentiment = None;
    for piece in body.split("\", \"") {
        let mut kv = piece.splitn(2, "\": \"");
        let key = kv.next()?.trim_matches('"');
        let value = kv.next()?.trim_matches('"');
        if key == vocab.json_aspect && aspect.is_none() {
            aspect = Some(value.to_string());
        } else if key == vocab.json_sentiment && sentiment.is_none() {
            sentiment = Some(value.to_string());
        }
    }
    Some((aspect?, sentiment?))
}

/// The CoT separator normaliser (`punc_replace=True`).
pub(crate) fn normalise_cot_punctuation(text: &str) -> String {
    let mut s = text.to_string();
    for pat in ["}, \n{", "},\n{", "}, {"] {
        s = s.replace(pat, "}\n{");
    }
    for pat in ["\"， \"", "\"; \"", "\" ; \"", "\"}, \"", "\"},\""] {
        s = s.replace(pat, "\", \"");
    }
    s
}

/// The soft relaxation: aspect by soft-key substring (first fill wins, one key may fill
/// several aspects), label by first synonym hit, missing or unknown as unmentioned.
pub(crate) fn relax(dict: &StudyDict, design: &Design, domain: &Domain) -> Vec<Sentiment> {
    let vocab = MasaVocab::of(design);
    let mut filled: Vec<Option<&str>> = vec![None; domain.aspects.len()];
    for (key, value) in &dict.entries {
        for (slot, aspect) in filled.iter_mut().zip(&domain.aspects) {
            if slot.is_none()
                && grammar::soft_keys(aspect, vocab.language)
                    .iter()
                    .any(|k| key.contains(k))
            {
                *slot = Some(value);
            }
        }
    }
    filled
        .into_iter()
        .map(|v| v.map_or(Sentiment::Unmentioned, |v| relax_label(v, vocab.language)))
        .collect()
}

/// The study's sentiment relaxation (Chinese), or its English analogue.
pub(crate) fn relax_label(value: &str, language: Language) -> Sentiment {
    relax_label_opt(value, language).unwrap_or(Sentiment::Unmentioned)
}

/// The first synonym hit, if any.
pub(crate) fn relax_label_opt(value: &str, language: Language) -> Option<Sentiment> {
    match language {
        Language::Zh => STUDY_SYNONYMS_ZH
            .iter()
            .find(|(w, _)| value.contains(w))
            .map(|(_, s)| *s),
        Language::En => {
            let lower = value.to_lowercase();
            SYNONYMS_EN
                .iter()
                .find(|(w, _)| lower.contains(w))
                .map(|(_, s)| *s)
        }
    }
}

/// One output under the study's rules: the scored labels and its format-error verdict.
pub(crate) fn parse(
    text: &str,
    design: &Design,
    domain: &Domain,
) -> (Vec<Sentiment>, StudyDict, Option<StudyError>) {
    let (dict, first_error) = json_text(text, design, true);
    let labels = relax(&dict, design, domain);
    let error = if design.reasoning != Reasoning::None && design.layout == Layout::Json {
        json_text(text, design, false).1
    } else {
        first_error
    };
    (labels, dict, error)
}

/// The study's gold parse: the same mode parser, no relaxation. `None` when the study would
/// drop the sample (gold parse error, unknown aspect name or label).
pub(crate) fn gold(text: &str, design: &Design, domain: &Domain) -> Option<Vec<Sentiment>> {
    let vocab = MasaVocab::of(design);
    let (dict, error) = json_text(text, design, true);
    if error.is_some() {
        return None;
    }
    let label_of = |v: &str| Sentiment::ALL.into_iter().find(|&s| vocab.word(s) == v);
    let mut out = vec![Sentiment::Unmentioned; domain.aspects.len()];
    for (key, value) in &dict.entries {
        let i = domain
            .aspects
            .iter()
            .position(|a| vocab.aspect_name(a) == key)?;
        out[i] = label_of(value)?;
    }
    Some(out)
}
