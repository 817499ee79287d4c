//! Lenient pre-processing shared by all tasks: code fences, list markers, quotes.

use crate::outcome::Outcome;
use crate::types::Repair;

/// Removes a Markdown code fence: keeps the first fenced block's body (without the
/// language tag). Records `CodeFence`, and `SurroundingProse` when text outside the fence
/// is dropped. An unclosed fence keeps everything after it.
pub(crate) fn strip_code_fence(text: &str, out: &mut Outcome) -> String {
    let Some(open) = text.find("```") else {
        return text.to_string();
    };
    out.repair(Repair::CodeFence);
    let before = &text[..open];
    let after_open = &text[open + 3..];
    // The language tag runs to the end of the fence line.
    let body_start = after_open.find('\n').map_or(after_open.len(), |i| i + 1);
    let tag = &after_open[..body_start];
    let body_and_rest = &after_open[body_start..];
    let (body, rest) = match body_and_rest.find("```") {
        Some(close) => (&body_and_rest[..close], &body_and_rest[close + 3..]),
        None => (body_and_rest, ""),
    };
    // A one-line fence (```a：b```) has no newline; its "tag" is the body.
    let body = if body_start == after_open.len() && !tag.contains('\n') {
        match tag.find("```") {
            Some(close) => &tag[..close],
            None => tag,
        }
    } else {
        body
    };
    if !before.trim().is_empty() || !rest.trim().is_empty() {
        out.repair(Repair::SurroundingProse);
    }
    body.to_string()
}

/// Strips a bullet (`-`, `*`, `•`, `·`) or a number (`1.`, `1)`, `1、`, `(1)`, `（1）`) from
/// the start of a line. Returns the rest and whether a marker was found.
pub(crate) fn strip_list_marker(line: &str) -> (&str, bool) {
    let t = line.trim_start();
    for bullet in ["- ", "* ", "• ", "· ", "•", "·"] {
        if let Some(rest) = t.strip_prefix(bullet) {
            return (rest.trim_start(), true);
        }
    }
    let open_paren = t.starts_with('(') || t.starts_with('（');
    let inner = t.trim_start_matches(['(', '（']);
    let digits = inner.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits > 0 && digits <= 3 {
        let after = &inner[digits..];
        let closers: &[&str] = if open_paren {
            &[")", "）"]
        } else {
            &[". ", ") ", "）", "、", ".", ")"]
        };
        for c in closers {
            if let Some(rest) = after.strip_prefix(c) {
                // "1.5" is a number, not a marker.
                if *c == "." && rest.starts_with(|ch: char| ch.is_ascii_digit()) {
                    continue;
                }
                return (rest.trim_start(), true);
            }
        }
    }
    (line, false)
}

/// Trims whitespace and one layer of matching quotes or Markdown emphasis.
pub(crate) fn clean_token(s: &str) -> &str {
    let mut t = s.trim();
    loop {
        let before = t;
        for (open, close) in [
            ("**", "**"),
            ("\"", "\""),
            ("'", "'"),
            ("“", "”"),
            ("‘", "’"),
            ("「", "」"),
            ("`", "`"),
        ] {
            if t.len() >= open.len() + close.len() && t.starts_with(open) && t.ends_with(close) {
                t = t[open.len()..t.len() - close.len()].trim();
            }
        }
        if t == before {
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_and_markers() {
        let mut out = Outcome::default();
        assert_eq!(
            strip_code_fence("```json\n{\"a\": 1}\n```", &mut out),
            "{\"a\": 1}\n"
        );
        assert!(out.has_repairs());
        assert_eq!(
            strip_list_marker("1. 食品评价：正面"),
            ("食品评价：正面", true)
        );
        assert_eq!(strip_list_marker("（2）饮品"), ("饮品", true));
        assert_eq!(
            strip_list_marker("- food: positive"),
            ("food: positive", true)
        );
        assert_eq!(strip_list_marker("1.5 stars"), ("1.5 stars", false));
        assert_eq!(
            strip_list_marker("食品评价：正面"),
            ("食品评价：正面", false)
        );
        assert_eq!(clean_token(" **\"food\"** "), "food");
    }
}
