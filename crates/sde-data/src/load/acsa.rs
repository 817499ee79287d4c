//! Aspect-category sentiment XML: SemEval-2014 Task 4 and MAMS-ACSA.
//!
//! Both use `<sentences><sentence [id=".."]><text>..</text><aspectCategories>
//! <aspectCategory category=".." polarity=".."/>..</aspectCategories></sentence>..</sentences>`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LoadReport, read_text, xml};
use crate::error::{DataError, Result};
use crate::record::{AspectLabel, MasaRecord, Sentiment};

/// What to do with SemEval's fourth polarity, `conflict` (both positive and negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Map to [`Sentiment::Neutral`] (the study's reading of mixed polarity).
    #[default]
    Neutral,
    /// Drop the label: the aspect becomes unmentioned.
    DropLabel,
    /// Drop the whole sentence.
    DropRecord,
}

/// How source categories and polarities map onto records.
#[derive(Debug, Clone, Default)]
pub struct AcsaOptions {
    /// Source category name to aspect key; empty keeps source names as keys.
    pub categories: BTreeMap<String, String>,
    /// Policy for `conflict` polarities.
    pub conflict: ConflictPolicy,
}

/// Loads one ACSA XML file. Sentences without an `id` attribute get their 0-based index.
///
/// A category labelled twice in one sentence (SemEval-2014 train has two) keeps one label;
/// two different polarities become neutral. Both are counted in the report.
pub fn load(
    path: &Path,
    id_prefix: &str,
    options: &AcsaOptions,
) -> Result<(Vec<MasaRecord>, LoadReport)> {
    let content = read_text(path)?;
    let root = xml::parse(path, &content)?;
    xml::expect_root(path, &root, "sentences")?;
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for (index, sentence) in root.elements().enumerate() {
        if sentence.name != "sentence" {
            return Err(DataError::malformed(
                path,
                format!("line {}", sentence.line),
                "<sentence>",
                format!("<{}>", sentence.name),
            ));
        }
        let text = sentence.required_child(path, "text")?.text();
        let id = match sentence.attr("id") {
            Some(id) => format!("{id_prefix}/{id}"),
            None => format!("{id_prefix}/{index}"),
        };
        let mut labels: Vec<AspectLabel> = Vec::new();
        let mut drop_record = false;
        if let Some(categories) = sentence.child("aspectCategories") {
            for category in categories.elements() {
                let location = format!("line {}, <{}>", category.line, category.name);
                let source = category.required_attr(path, "category")?;
                let polarity = category.required_attr(path, "polarity")?;
                let aspect = if options.categories.is_empty() {
                    source.to_string()
                } else {
                    options.categories.get(source).cloned().ok_or_else(|| {
                        DataError::malformed(
                            path,
                            &location,
                            format!(
                                "a category listed in the recipe ({})",
                                options
                                    .categories
                                    .keys()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            format!("category {source:?}"),
                        )
                    })?
                };
                let sentiment = match polarity {
                    "positive" => Sentiment::Positive,
                    "negative" => Sentiment::Negative,
                    "neutral" => Sentiment::Neutral,
                    "conflict" => match options.conflict {
                        ConflictPolicy::Neutral => {
                            report.add("conflict labels mapped to neutral", 1);
                            Sentiment::Neutral
                        }
                        ConflictPolicy::DropLabel => {
                            report.add("conflict labels dropped", 1);
                            continue;
                        }
                        ConflictPolicy::DropRecord => {
                            drop_record = true;
                            continue;
                        }
                    },
                    other => {
                        return Err(DataError::malformed(
                            path,
                            location,
                            "polarity positive, negative, neutral or conflict",
                            format!("{other:?}"),
                        ));
                    }
                };
                if let Some(existing) = labels.iter_mut().find(|l| l.aspect == aspect) {
                    if existing.sentiment == sentiment {
                        report.add("duplicate labels merged", 1);
                    } else {
                        report.add("contradicting duplicate labels mapped to neutral", 1);
                        existing.sentiment = Sentiment::Neutral;
                    }
                    continue;
                }
                labels.push(AspectLabel {
                    aspect,
                    sentiment,
                    evidence: None,
                });
            }
        }
        if drop_record {
            report.add("sentences with conflict labels dropped", 1);
            continue;
        }
        records.push(MasaRecord { id, text, labels });
    }
    Ok((records, report))
}
