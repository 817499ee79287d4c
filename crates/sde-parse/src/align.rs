//! Aligns predicted names and triggers to the source sentence.

use sde_data::Span;

use crate::types::{Issue, Labels, Parsed};

impl Parsed {
    /// Finds each predicted entity name or event trigger in `source` (the record's text) and
    /// fills in its byte span (and, for NER, its token range over the space-separated
    /// tokens). Names that do not occur get no span and a [`Issue::SpanNotInText`]. The first
    /// occurrence is taken, preferring one on word boundaries; nested and overlapping spans
    /// are kept as they are. A no-op for MASA.
    pub fn align(&mut self, source: &str) {
        match &mut self.labels {
            Labels::Masa(_) => {}
            Labels::Ner(entities) => {
                for e in entities {
                    e.span = find_span(source, &e.name);
                    e.tokens = e.span.and_then(|s| token_range(source, s));
                    if e.span.is_none() {
                        self.issues.push(Issue::SpanNotInText {
                            kind: e.kind.clone(),
                            text: e.name.clone(),
                        });
                    }
                }
            }
            Labels::Event(events) => {
                for e in events {
                    e.span = find_span(source, &e.trigger);
                    if e.span.is_none() {
                        self.issues.push(Issue::SpanNotInText {
                            kind: e.kind.clone(),
                            text: e.trigger.clone(),
                        });
                    }
                }
            }
        }
    }
}

/// The first occurrence of `needle` in `haystack`, preferring one on word boundaries; failing
/// that, the same ignoring ASCII case (study-mode names are lowercased).
pub(crate) fn find_span(haystack: &str, needle: &str) -> Option<Span> {
    find_exact(haystack, needle).or_else(|| {
        // ASCII lowercasing keeps byte offsets.
        find_exact(&haystack.to_ascii_lowercase(), &needle.to_ascii_lowercase())
    })
}

fn find_exact(haystack: &str, needle: &str) -> Option<Span> {
    if needle.is_empty() {
        return None;
    }
    let mut first = None;
    for (start, _) in haystack.match_indices(needle) {
        let end = start + needle.len();
        let span = Span { start, end };
        let before_ok = haystack[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let after_ok = haystack[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        if before_ok && after_ok {
            return Some(span);
        }
        first.get_or_insert(span);
    }
    first
}

/// The token range of `span` when `text` is tokens joined by single spaces and the span
/// starts and ends on token boundaries.
pub(crate) fn token_range(text: &str, span: Span) -> Option<(usize, usize)> {
    let at_start = span.start == 0 || text.as_bytes().get(span.start - 1) == Some(&b' ');
    let at_end = span.end == text.len() || text.as_bytes().get(span.end) == Some(&b' ');
    if !(at_start && at_end) || span.start >= span.end {
        return None;
    }
    let start = text.get(..span.start)?.matches(' ').count();
    let len = text.get(span.start..span.end)?.matches(' ').count() + 1;
    Some((start, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_prefer_word_boundaries_and_map_to_tokens() {
        let text = "IL-2R binds IL-2 gene and IL-2";
        let s = find_span(text, "IL-2").unwrap();
        assert_eq!(&text[s.start..s.end], "IL-2");
        assert_eq!(s.start, 12);
        assert_eq!(token_range(text, s), Some((2, 3)));
        let g = find_span(text, "IL-2 gene").unwrap();
        assert_eq!(token_range(text, g), Some((2, 4)));
        assert_eq!(find_span(text, "IL-3"), None);
        assert_eq!(find_span(text, "il-2 GENE"), Some(g));
        let inner = find_span(text, "binds IL").unwrap();
        assert_eq!(token_range(text, inner), None);
    }
}
