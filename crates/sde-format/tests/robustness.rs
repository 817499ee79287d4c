//! Arbitrary texts and spans never make rendering panic.

use proptest::prelude::*;
use sde_data::{AspectLabel, Domain, Event, EventRecord, MasaRecord, Record, Sentiment, Span};
use sde_format::evidence::{aspect_clause, clause_around, clauses, tidy};
use sde_format::{Design, Language, TaskKind, render};

proptest! {
    #[test]
    fn clauses_cover_the_text_in_order(text in "\\PC{0,80}") {
        let mut last = 0;
        for (s, e) in clauses(&text) {
            prop_assert!(last <= s && s < e && e <= text.len());
            prop_assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
            last = e;
        }
    }

    #[test]
    fn evidence_helpers_never_panic(text in "\\PC{0,80}", a in 0usize..100, b in 0usize..100) {
        let _ = clause_around(&text, a.min(b), a.max(b));
        let d1 = Domain::study_d1();
        for aspect in &d1.aspects {
            let clause = aspect_clause(&text, aspect);
            prop_assert!(tidy(clause).chars().count() <= sde_format::evidence::MAX_EVIDENCE_CHARS);
        }
    }

    #[test]
    fn bad_spans_give_errors(text in "\\PC{0,40}", start in 0usize..60, len in 0usize..20) {
        let span = Span { start, end: start + len };
        let masa = Record::Masa(MasaRecord {
            id: "p".into(),
            text: text.clone(),
            labels: vec![AspectLabel { aspect: "food".into(), sentiment: Sentiment::Positive, evidence: Some(span) }],
        });
        let cot: Design = "masa.zh.cot".parse().unwrap();
        let ok = span.slice(&text).is_some();
        prop_assert_eq!(render(&masa, &cot, &Domain::study_d1()).is_ok(), ok);
        let event = Record::Event(EventRecord {
            id: "e".into(),
            text: text.clone(),
            events: vec![Event { kind: "Attack".into(), trigger: "x".into(), span }],
        });
        let design = Design::preset(TaskKind::Event, Language::En, "es-sde").unwrap().with_paraphrase(0).unwrap();
        let design = Design { reasoning: sde_format::Reasoning::Cot, ..design };
        prop_assert_eq!(render(&event, &design, &Domain::maven10()).is_ok(), ok);
    }
}
