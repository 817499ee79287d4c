//! The surface strings of each design's output grammar.
//!
//! Separators, label words and JSON keys come from `sde_format::Grammar`; this module adds
//! what only the parser needs: the study's soft aspect keys and sentiment synonyms
//! (digest §7.1) and their English analogues.

use sde_data::{AspectDef, Domain, Sentiment};
use sde_format::{Design, Grammar, LabelForm, Language};

/// MASA output vocabulary of one language.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MasaVocab {
    /// Between an aspect and its label.
    pub(crate) kv_sep: &'static str,
    /// Between items of the Natural layout.
    pub(crate) item_sep: &'static str,
    /// After the last item of the Natural layout.
    pub(crate) terminator: &'static str,
    /// JSON key holding the aspect.
    pub(crate) json_aspect: &'static str,
    /// JSON key holding the label.
    pub(crate) json_sentiment: &'static str,
    /// JSON key holding the reasoning (CoT / R-CoT).
    pub(crate) json_evidence: &'static str,
    /// Language of aspect names and label words.
    pub(crate) language: Language,
}

impl MasaVocab {
    /// The vocabulary `sde-format` renders for `design`.
    pub(crate) fn of(design: &Design) -> MasaVocab {
        let empty = Domain {
            name: String::new(),
            aspects: Vec::new(),
        };
        let g = Grammar::new(design, &empty);
        MasaVocab {
            kv_sep: g.key_value_sep,
            item_sep: g.item_sep,
            terminator: g.terminator,
            json_aspect: g.json.target,
            json_sentiment: g.json.value,
            json_evidence: g.json.evidence,
            language: design.language,
        }
    }

    /// The aspect's display name in this language.
    pub(crate) fn aspect_name<'a>(&self, aspect: &'a AspectDef) -> &'a str {
        match self.language {
            Language::Zh => &aspect.zh,
            Language::En => &aspect.en,
        }
    }

    /// The text label word of this language.
    pub(crate) fn word(&self, s: Sentiment) -> &'static str {
        match self.language {
            Language::Zh => s.zh(),
            Language::En => s.en(),
        }
    }

    /// The exact label text a design renders.
    pub(crate) fn label(&self, design: &Design, s: Sentiment) -> String {
        match design.labels {
            LabelForm::Numeric => s.numeric().to_string(),
            LabelForm::Text => self.word(s).to_string(),
        }
    }

    /// The label a design's exact label text names.
    pub(crate) fn exact_label(&self, design: &Design, text: &str) -> Option<Sentiment> {
        Sentiment::ALL
            .into_iter()
            .find(|&s| self.label(design, s) == text)
    }
}

/// Study soft keys (digest §7.1) by aspect key: Chinese keys from the study, English
/// analogues ours.
pub(crate) fn soft_keys(aspect: &AspectDef, language: Language) -> Vec<&str> {
    let zh: &[&'static str] = match aspect.key.as_str() {
        "food" => &["食品"],
        "drinks" => &["饮品"],
        "price" => &["价格"],
        "hygiene" => &["卫生"],
        "staff" => &["服务"],
        "parking" => &["停车"],
        "transport" => &["交通"],
        "queueing" => &["排队", "等候"],
        "serving_speed" => &["点菜"],
        "decor" => &["装修"],
        "noise" => &["嘈杂"],
        _ => &[],
    };
    let en: &[&'static str] = match aspect.key.as_str() {
        "food" => &["food"],
        "drinks" => &["drink", "beverage"],
        "price" => &["price"],
        "hygiene" => &["hygiene"],
        "staff" => &["staff", "service"],
        "parking" => &["parking"],
        "transport" => &["transport"],
        "queueing" => &["queue", "waiting"],
        "serving_speed" => &["serving", "speed"],
        "decor" => &["decor"],
        "noise" => &["nois"],
        _ => &[],
    };
    let (own, fallback) = match language {
        Language::Zh => (zh, aspect.zh.as_str()),
        Language::En => (en, aspect.en.as_str()),
    };
    if own.is_empty() {
        vec![fallback]
    } else {
        own.to_vec()
    }
}

/// The study's sentiment synonyms, scanned in this order; the first that is a substring of
/// a value decides (digest §7.1).
pub(crate) const STUDY_SYNONYMS_ZH: [(&str, Sentiment); 8] = [
    ("积极", Sentiment::Positive),
    ("正向", Sentiment::Positive),
    ("正面", Sentiment::Positive),
    ("中性", Sentiment::Neutral),
    ("消极", Sentiment::Negative),
    ("负向", Sentiment::Negative),
    ("负面", Sentiment::Negative),
    ("未提及", Sentiment::Unmentioned),
];

/// English analogues of [`STUDY_SYNONYMS_ZH`], scanned after them (ours). Lowercase;
/// matched against a lowercased value.
pub(crate) const SYNONYMS_EN: [(&str, Sentiment); 10] = [
    ("unmentioned", Sentiment::Unmentioned),
    ("not mentioned", Sentiment::Unmentioned),
    ("positive", Sentiment::Positive),
    ("neutral", Sentiment::Neutral),
    ("negative", Sentiment::Negative),
    ("n/a", Sentiment::Unmentioned),
    ("none", Sentiment::Unmentioned),
    ("mixed", Sentiment::Neutral),
    ("good", Sentiment::Positive),
    ("bad", Sentiment::Negative),
];

/// The study's numeric label map (digest §2.1 e).
pub(crate) fn study_numeric(value: &str) -> Option<Sentiment> {
    match value {
        "1" => Some(Sentiment::Positive),
        "0" => Some(Sentiment::Neutral),
        "-1" => Some(Sentiment::Negative),
        "-2" => Some(Sentiment::Unmentioned),
        _ => None,
    }
}
