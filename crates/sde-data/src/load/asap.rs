//! ASAP CSV (Meituan/Dianping Chinese reviews, 18 aspect columns with values 1/0/-1/-2).
//!
//! Both header styles are accepted: the sample files' snake-case names
//! (`index, reviewbody, star, location_traffic, ...`) and the full release's
//! (`id, review, star, Location#Transportation, ...`); the 18 aspect columns are in the same
//! order in both, so a full-release column is read under its sample-file name.

use std::collections::BTreeMap;
use std::path::Path;

use super::{LoadReport, read_text};
use crate::error::{DataError, Result, excerpt};
use crate::record::{AspectLabel, MasaRecord, Sentiment};

/// The 18 aspect columns of the sample files, in file order.
pub const SAMPLE_COLUMNS: [&str; 18] = [
    "location_traffic",
    "location_distance_from_business_district",
    "location_easy_to_find",
    "service_wait_time",
    "service_waiters_attitude",
    "service_parking_convenience",
    "service_serving_speed",
    "price_level",
    "price_cost_effective",
    "price_discount",
    "environment_decoration",
    "environment_noise",
    "environment_space",
    "environment_cleaness",
    "dish_portion",
    "dish_taste",
    "dish_look",
    "dish_recommendation",
];

/// The same 18 columns as named in the full release.
pub const FULL_COLUMNS: [&str; 18] = [
    "Location#Transportation",
    "Location#Downtown",
    "Location#Easy_to_find",
    "Service#Queue",
    "Service#Hospitality",
    "Service#Parking",
    "Service#Timely",
    "Price#Level",
    "Price#Cost_effective",
    "Price#Discount",
    "Ambience#Decoration",
    "Ambience#Noise",
    "Ambience#Space",
    "Ambience#Sanitary",
    "Food#Portion",
    "Food#Taste",
    "Food#Appearance",
    "Food#Recommend",
];

/// Loads one ASAP CSV file.
///
/// `columns` maps a sample-file column name to the aspect key it becomes; only those columns
/// are read. An empty map reads all 18 under their own names. Value `-2` (not mentioned) gives
/// no label.
pub fn load(
    path: &Path,
    id_prefix: &str,
    columns: &BTreeMap<String, String>,
) -> Result<(Vec<MasaRecord>, LoadReport)> {
    let content = read_text(path)?;
    let content = content.strip_prefix('\u{feff}').unwrap_or(&content);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(content.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::malformed(path, "line 1", "a CSV header row", e.to_string()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| headers.iter().position(|h| h == n))
    };
    let header_error = |what: &str| {
        DataError::malformed(
            path,
            "line 1 (header)",
            what.to_string(),
            excerpt(&headers.join(",")),
        )
    };
    let id_col = find(&["index", "id"]).ok_or_else(|| header_error("an `index` or `id` column"))?;
    let text_col = find(&["reviewbody", "review"])
        .ok_or_else(|| header_error("a `reviewbody` or `review` column"))?;
    let mut aspect_cols: Vec<(usize, String, &str)> = Vec::new();
    for (i, name) in SAMPLE_COLUMNS.iter().enumerate() {
        let key = if columns.is_empty() {
            name.to_string()
        } else if let Some(key) = columns.get(*name) {
            key.clone()
        } else {
            continue;
        };
        let col = find(&[name, FULL_COLUMNS[i]]).ok_or_else(|| {
            header_error(&format!(
                "aspect column `{name}` (or `{}`)",
                FULL_COLUMNS[i]
            ))
        })?;
        aspect_cols.push((col, key, name));
    }
    for source in columns.keys() {
        if !SAMPLE_COLUMNS.contains(&source.as_str()) {
            return Err(DataError::Invalid {
                what: "ASAP column mapping",
                message: format!(
                    "{source:?} is not an ASAP aspect column (expected one of: {})",
                    SAMPLE_COLUMNS.join(", ")
                ),
            });
        }
    }
    let mut report = LoadReport::default();
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            DataError::malformed(
                path,
                format!("line {line}"),
                "a CSV row with 21 fields",
                e.to_string(),
            )
        })?;
        let line = row.position().map_or(0, |p| p.line());
        let field = |col: usize| row.get(col).unwrap_or("");
        let mut labels = Vec::new();
        for (col, key, source) in &aspect_cols {
            let raw = field(*col).trim();
            let value: Option<i8> = raw
                .parse::<f64>()
                .ok()
                .filter(|v| v.fract() == 0.0 && (-2.0..=1.0).contains(v))
                .map(|v| v as i8);
            let sentiment = value.and_then(Sentiment::from_numeric).ok_or_else(|| {
                DataError::malformed(
                    path,
                    format!("line {line}, column `{source}`"),
                    "a label 1, 0, -1 or -2",
                    format!("{raw:?}"),
                )
            })?;
            report.add(format!("label {}", sentiment.en()), 1);
            if sentiment != Sentiment::Unmentioned {
                labels.push(AspectLabel {
                    aspect: key.clone(),
                    sentiment,
                    evidence: None,
                });
            }
        }
        records.push(MasaRecord {
            id: format!("{id_prefix}/{}", field(id_col).trim()),
            text: field(text_col).to_string(),
            labels,
        });
    }
    Ok((records, report))
}
