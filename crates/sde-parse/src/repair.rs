//! Lenient mode, first stage: undo common wrappers (code fence, prose lines around the
//! answer, list markers, the other punctuation width) and read the result with the exact
//! grammar. Only when no such variant reads clean does the heuristic reader take over.

use sde_data::{Domain, TaskKind};
use sde_format::{Design, Language};

use crate::normalize::{strip_code_fence, strip_list_marker};
use crate::outcome::Outcome;
use crate::types::{Issue, Mode, Parsed, Repair, Status};

/// Longest text for which prose-line windows are tried.
const MAX_WINDOW_TEXT: usize = 20_000;
/// How many lines of prose may be dropped at each end.
const MAX_PROSE_LINES: usize = 3;

/// The exact parse of a repaired variant of `text`, if one reads clean.
pub(crate) fn exact_after_repairs(text: &str, design: &Design, domain: &Domain) -> Option<Parsed> {
    let mut fence = Outcome::default();
    let unfenced = strip_code_fence(text, &mut fence);
    let mut base_repairs = Vec::new();
    if unfenced != text {
        base_repairs.push(Repair::CodeFence);
        if fence.issues.contains(&Issue::Repaired {
            repair: Repair::SurroundingProse,
        }) {
            base_repairs.push(Repair::SurroundingProse);
        }
    }
    let mut variants: Vec<(String, Vec<Repair>)> = vec![(unfenced.clone(), Vec::new())];
    let unmarked = strip_markers(&unfenced);
    if unmarked != unfenced {
        variants.push((unmarked.clone(), vec![Repair::ListMarkers]));
    }
    for (v, r) in variants.clone() {
        let width = swap_width(&v, design);
        if width != v {
            let mut r = r.clone();
            r.push(Repair::PunctuationWidth);
            variants.push((width, r));
        }
    }
    for (variant, repairs) in variants {
        for (window, dropped) in windows(&variant) {
            let parsed = crate::parse(window, design, domain, Mode::Strict);
            if parsed.status.is_clean() && !window.trim().is_empty() {
                let mut all = base_repairs.clone();
                all.extend(repairs.iter().copied());
                if dropped {
                    all.push(Repair::SurroundingProse);
                }
                if all.is_empty() {
                    // Only surrounding whitespace differed: strict already accepts that.
                    return Some(parsed);
                }
                return Some(repaired(parsed, all));
            }
        }
    }
    None
}

fn repaired(mut parsed: Parsed, mut repairs: Vec<Repair>) -> Parsed {
    repairs.sort();
    repairs.dedup();
    let mut issues: Vec<Issue> = repairs
        .iter()
        .map(|&repair| Issue::Repaired { repair })
        .collect();
    issues.append(&mut parsed.issues);
    parsed.issues = issues;
    parsed.status = Status::Repaired { repairs };
    parsed
}

fn strip_markers(text: &str) -> String {
    text.lines()
        .map(|l| strip_list_marker(l).0)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Half-width punctuation as full-width for Chinese grammars, and the other way round.
fn swap_width(text: &str, design: &Design) -> String {
    match design.language {
        Language::Zh => {
            let mut out = String::with_capacity(text.len());
            let masa = design.task == TaskKind::Masa;
            let chars: Vec<char> = text.chars().collect();
            for (i, &c) in chars.iter().enumerate() {
                let at_end = chars[i + 1..].iter().all(|c| c.is_whitespace());
                match c {
                    ':' => out.push('：'),
                    ',' => out.push('，'),
                    ';' if !masa => out.push('；'),
                    '.' if masa && at_end => out.push('。'),
                    ' ' if i > 0 && matches!(chars[i - 1], ':' | ',' | ';') => {}
                    c => out.push(c),
                }
            }
            out
        }
        Language::En => text
            .replace('：', ": ")
            .replace('，', ", ")
            .replace('；', "; ")
            .replace('。', ".")
            .replace(":  ", ": ")
            .replace(",  ", ", ")
            .replace(";  ", "; "),
    }
}

/// The text and sub-windows of its lines with up to [`MAX_PROSE_LINES`] dropped at each
/// end; `true` when lines were dropped.
fn windows(text: &str) -> Vec<(&str, bool)> {
    let mut out = vec![(text, false)];
    if text.len() > MAX_WINDOW_TEXT {
        return out;
    }
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let n = starts.len();
    for head in 0..=MAX_PROSE_LINES.min(n.saturating_sub(1)) {
        for tail in 0..=MAX_PROSE_LINES.min(n.saturating_sub(1)) {
            if head + tail == 0 || head + tail >= n {
                continue;
            }
            let from = starts[head];
            let to = if tail == 0 {
                text.len()
            } else {
                starts[n - tail].saturating_sub(1)
            };
            if from < to {
                out.push((&text[from..to], true));
            }
        }
    }
    out
}
