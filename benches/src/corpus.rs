//! A large corpus of model outputs for the parser benchmark: synthetic MASA records rendered
//! with `sde-format` under every MASA preset in both languages, a quarter of them perturbed the
//! way small models err (code fences, prose around the answer, cut-off endings, the other
//! punctuation width).

use sde_data::{AspectLabel, Domain, MasaRecord, Record, Sentiment, TaskKind};
use sde_format::{Design, Language, render};

use crate::Ids;

/// One output to parse, with the design and domain it was produced under.
#[derive(Debug, Clone)]
pub struct ParseCase {
    /// The model output.
    pub text: String,
    /// The design the output follows.
    pub design: Design,
    /// The aspects asked about.
    pub domain: Domain,
}

const REVIEW_WORDS: &[&str] = &[
    "菜",
    "很好吃",
    "服务",
    "一般",
    "，",
    "环境",
    "不错",
    "价格",
    "贵",
    "。",
    "food",
    "great",
    "slow",
];

/// `n` outputs, deterministic in `seed`.
pub fn parse_corpus(n: usize, seed: u64) -> Vec<ParseCase> {
    let domain = Domain::study_all();
    let designs: Vec<Design> = [Language::Zh, Language::En]
        .into_iter()
        .flat_map(|l| Design::presets(TaskKind::Masa, l))
        .map(|p| p.design)
        .collect();
    let mut ids = Ids::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut attempts = 0;
    while out.len() < n && attempts < n * 4 {
        attempts += 1;
        let design = designs[(ids.next_u64() % designs.len() as u64) as usize];
        let words = 8 + (ids.next_u64() % 24) as usize;
        let text: String = (0..words)
            .map(|_| REVIEW_WORDS[(ids.next_u64() % REVIEW_WORDS.len() as u64) as usize])
            .collect();
        let labels = domain
            .aspects
            .iter()
            .filter_map(|a| {
                let sentiment = match ids.next_u64() % 6 {
                    0 => Sentiment::Positive,
                    1 => Sentiment::Neutral,
                    2 => Sentiment::Negative,
                    _ => return None,
                };
                Some(AspectLabel {
                    aspect: a.key.clone(),
                    sentiment,
                    evidence: None,
                })
            })
            .collect();
        let record = Record::Masa(MasaRecord {
            id: format!("bench/{}", out.len()),
            text,
            labels,
        });
        // Designs that need a chat template are skipped: only the completion matters here.
        let Ok(sample) = render(&record, &design, &domain) else {
            continue;
        };
        let text = perturb(sample.completion, ids.next_u64());
        out.push(ParseCase {
            text,
            design,
            domain: domain.clone(),
        });
    }
    out
}

/// Leaves three outputs in four unchanged and damages the rest in one of four ways.
fn perturb(text: String, roll: u64) -> String {
    match roll % 16 {
        0 => format!("```json\n{text}\n```"),
        1 => format!("Here is the analysis of the review:\n{text}\nI hope this helps."),
        2 => {
            let cut = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            text[..cut].to_string()
        }
        3 if text.contains('：') => text.replace('：', ":").replace('，', ","),
        3 => text.replace(':', "：").replace(',', "，"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sde_parse::{Mode, Status, parse};

    #[test]
    fn corpus_is_mostly_clean_with_some_damaged_outputs() {
        let corpus = parse_corpus(400, 1);
        assert_eq!(corpus.len(), 400);
        let clean = corpus
            .iter()
            .filter(|c| parse(&c.text, &c.design, &c.domain, Mode::Strict).status == Status::Clean)
            .count();
        // Three outputs in four are rendered as they are; some damage still parses clean.
        assert!(clean >= 260, "{clean} of 400 clean");
        assert!(clean < 400, "no damaged output among 400");
        assert!(corpus.iter().any(|c| c.text.starts_with("```json")));
    }
}
