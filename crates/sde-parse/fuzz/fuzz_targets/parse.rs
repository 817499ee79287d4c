//! Fuzzes `sde_parse::parse` over every preset design of every task and language, in every
//! mode, and checks the invariants that must hold for any input: no panic, MASA labels cover
//! the domain, a clean status carries no problem issue, and alignment never panics either.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sde_data::{Domain, TaskKind};
use sde_format::{Design, Language};
use sde_parse::{IssueKind, Labels, Mode, parse};

fuzz_target!(|data: &[u8]| {
    let [task, language, preset, mode, rest @ ..] = data else {
        return;
    };
    let task = [TaskKind::Masa, TaskKind::Ner, TaskKind::Event][usize::from(*task) % 3];
    let language = [Language::Zh, Language::En][usize::from(*language) % 2];
    let presets = Design::presets(task, language);
    let design = presets[usize::from(*preset) % presets.len()].design;
    let domain = match task {
        TaskKind::Masa => Domain::study_all(),
        TaskKind::Ner => Domain::genia(),
        TaskKind::Event => Domain::maven10(),
    };
    let mode = [Mode::Strict, Mode::Lenient, Mode::Study][usize::from(*mode) % 3];
    let text = String::from_utf8_lossy(rest);
    let mut parsed = parse(&text, &design, &domain, mode);
    if let Labels::Masa(labels) = &parsed.labels {
        assert_eq!(labels.len(), domain.len());
    }
    if parsed.status.is_clean() {
        assert!(parsed.issues.iter().all(|i| matches!(
            i.kind(),
            IssueKind::DuplicateItem | IssueKind::SpanNotInText
        )));
    }
    parsed.align(&text);
});
