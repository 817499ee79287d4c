//! Counts per aspect and label (MASA) or per type (NER, events) for a set of records.

use std::collections::BTreeMap;

use crate::record::{Domain, Record, Sentiment};

/// Summary counts of a split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Number of records.
    pub records: usize,
    /// MASA: aspect key to counts in [`Sentiment::ALL`] order (unmentioned included).
    pub aspect_labels: Vec<(String, [usize; 4])>,
    /// MASA: label totals over all aspects, in [`Sentiment::ALL`] order.
    pub label_totals: [usize; 4],
    /// NER entity or event type to mention count (sorted by type).
    pub type_counts: BTreeMap<String, usize>,
    /// Total entities or events.
    pub mentions: usize,
    /// NER: entities that overlap another entity of the same record.
    pub nested_mentions: usize,
}

/// Counts `records` against `domain` (the aspect list used for MASA unmentioned counts).
pub fn split_stats(records: &[Record], domain: &Domain) -> SplitStats {
    let mut stats = SplitStats {
        records: records.len(),
        aspect_labels: domain
            .aspects
            .iter()
            .map(|a| (a.key.clone(), [0; 4]))
            .collect(),
        ..SplitStats::default()
    };
    for r in records {
        match r {
            Record::Masa(m) => {
                for (key, counts) in &mut stats.aspect_labels {
                    let s: Sentiment = m.sentiment(key);
                    counts[s.index()] += 1;
                    stats.label_totals[s.index()] += 1;
                }
            }
            Record::Ner(n) => {
                for (i, e) in n.entities.iter().enumerate() {
                    *stats.type_counts.entry(e.kind.clone()).or_default() += 1;
                    stats.mentions += 1;
                    let overlaps = n.entities.iter().enumerate().any(|(j, o)| {
                        i != j && o.start_token < e.end_token && e.start_token < o.end_token
                    });
                    if overlaps {
                        stats.nested_mentions += 1;
                    }
                }
            }
            Record::Event(ev) => {
                for e in &ev.events {
                    *stats.type_counts.entry(e.kind.clone()).or_default() += 1;
                    stats.mentions += 1;
                }
            }
        }
    }
    stats
}
