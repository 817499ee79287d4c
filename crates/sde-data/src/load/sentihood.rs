//! SentiHood JSON: targeted aspect sentiment over masked locations.
//!
//! The file is one JSON array of `{"id", "text", "opinions": [{"sentiment", "aspect",
//! "target_entity"}]}`. A MASA record has no target, so each sentence gives one record per
//! target location that occurs in its text (`LOCATION1`, and `LOCATION2` where present), with id
//! `{prefix}/{id}/{target}` and the labels of that target only. SentiHood has only positive and
//! negative opinions; aspects without an opinion are unmentioned.

use std::path::Path;

use serde::Deserialize;

use super::{LoadReport, parse_json, read_text};
use crate::error::{DataError, Result};
use crate::record::{AspectLabel, MasaRecord, Sentiment};

#[derive(Deserialize)]
struct SourceRecord {
    id: serde_json::Value,
    text: String,
    opinions: Vec<Opinion>,
}

#[derive(Deserialize)]
struct Opinion {
    sentiment: String,
    aspect: String,
    target_entity: String,
}

/// The masked target names SentiHood uses.
pub const TARGETS: [&str; 2] = ["LOCATION1", "LOCATION2"];

/// Loads one SentiHood file.
pub fn load(path: &Path, id_prefix: &str) -> Result<(Vec<MasaRecord>, LoadReport)> {
    let content = read_text(path)?;
    let source: Vec<SourceRecord> = parse_json(
        path,
        &content,
        "a JSON array of {id, text, opinions: [{sentiment, aspect, target_entity}]}",
    )?;
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for (index, record) in source.into_iter().enumerate() {
        let id = match &record.id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        report.add("sentences", 1);
        report.add("opinions", record.opinions.len());
        for opinion in &record.opinions {
            if !TARGETS.contains(&opinion.target_entity.as_str()) {
                return Err(DataError::malformed(
                    path,
                    format!("record {index} (id {id}), field \"target_entity\""),
                    "LOCATION1 or LOCATION2",
                    format!("{:?}", opinion.target_entity),
                ));
            }
        }
        for target in TARGETS {
            let has_target = record.text.contains(target)
                || record.opinions.iter().any(|o| o.target_entity == target);
            if !has_target {
                continue;
            }
            let mut labels: Vec<AspectLabel> = Vec::new();
            for opinion in record.opinions.iter().filter(|o| o.target_entity == target) {
                let sentiment = match opinion.sentiment.as_str() {
                    "Positive" => Sentiment::Positive,
                    "Negative" => Sentiment::Negative,
                    "Neutral" => Sentiment::Neutral,
                    other => {
                        return Err(DataError::malformed(
                            path,
                            format!("record {index} (id {id}), field \"sentiment\""),
                            "Positive, Negative or Neutral",
                            format!("{other:?}"),
                        ));
                    }
                };
                if let Some(existing) = labels.iter_mut().find(|l| l.aspect == opinion.aspect) {
                    if existing.sentiment == sentiment {
                        report.add("duplicate opinions merged", 1);
                    } else {
                        report.add("contradicting opinions mapped to neutral", 1);
                        existing.sentiment = Sentiment::Neutral;
                    }
                    continue;
                }
                labels.push(AspectLabel {
                    aspect: opinion.aspect.clone(),
                    sentiment,
                    evidence: None,
                });
            }
            records.push(MasaRecord {
                id: format!("{id_prefix}/{id}/{target}"),
                text: record.text.clone(),
                labels,
            });
        }
    }
    Ok((records, report))
}
