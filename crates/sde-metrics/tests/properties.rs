//! Properties every score must keep, on random inputs.

use proptest::prelude::*;
use sde_data::Sentiment;
use sde_metrics::{
    BootstrapConfig, Confusion, Mention, MentionSample, SoftRule, bootstrap_ci, ratio, soft_counts,
    spearman, strict_counts,
};

fn text() -> impl Strategy<Value = String> {
    // Small alphabets make overlaps likely; include a multi-byte character.
    proptest::string::string_regex("[ab c-é]{0,12}").unwrap()
}

fn mentions() -> impl Strategy<Value = Vec<Mention>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["protein", "DNA", "cell_line"]),
            text(),
        )
            .prop_map(|(k, t)| Mention::new(k, t)),
        0..6,
    )
}

fn matrix() -> impl Strategy<Value = [[u64; 4]; 4]> {
    prop::array::uniform4(prop::array::uniform4(0u64..30))
}

proptest! {
    #[test]
    fn ratio_is_a_similarity(a in text(), b in text()) {
        let r = ratio(&a, &b);
        prop_assert!((0.0..=1.0).contains(&r));
        prop_assert_eq!(ratio(&a, &a), 1.0);
        if !a.is_empty() {
            prop_assert_eq!(ratio(&a, ""), 0.0);
        }
        // The matched count is an integer: r * total / 2 is whole.
        let total = (a.chars().count() + b.chars().count()) as f64;
        let m = r * total / 2.0;
        prop_assert!((m - m.round()).abs() < 1e-9);
    }

    #[test]
    fn ner_soft_never_loses_strict_matches(gold in mentions(), pred in mentions()) {
        // Gold names come from parsers trimmed; an untrimmed gold name can lose a strict
        // match under the soft rule, which trims only predictions (as the study does).
        let gold = gold
            .into_iter()
            .map(|m| Mention::new(m.kind, m.text.trim()))
            .collect();
        let s = MentionSample { gold, pred, format_error: false };
        let strict = strict_counts(&s);
        let soft = soft_counts(&s, SoftRule::Ner);
        prop_assert!(soft.tp >= strict.tp);
        for c in [strict, soft] {
            prop_assert!(c.tp <= c.predicted.min(c.gold));
            prop_assert_eq!(c.tp + c.fp(), c.predicted);
            prop_assert_eq!(c.tp + c.fn_(), c.gold);
            let f1 = c.f1();
            prop_assert!((0.0..=1.0).contains(&f1));
        }
    }

    #[test]
    fn event_soft_counts_are_consistent(gold in mentions(), pred in mentions()) {
        let s = MentionSample { gold, pred, format_error: false };
        let c = soft_counts(&s, SoftRule::Event);
        prop_assert!(c.tp <= c.predicted);
        prop_assert_eq!(c.tp + c.fp(), c.predicted);
    }

    #[test]
    fn kappa_is_at_most_one(m in matrix()) {
        let k = Confusion::from_counts(m).study_kappa();
        prop_assert!(k <= 1.0 + 1e-12, "{}", k);
        prop_assert!(k.is_finite());
    }

    #[test]
    fn perfect_agreement_is_one(diag in prop::array::uniform4(0u64..20)) {
        let mut c = Confusion::default();
        for (label, n) in Sentiment::ALL.iter().zip(diag) {
            for _ in 0..n {
                c.add(*label, *label);
            }
        }
        // With at least two labels present kappa is exactly 1 (else p_e = 1 and kappa is 0).
        let present = diag.iter().filter(|&&n| n > 0).count();
        let k = c.study_kappa();
        if present >= 2 {
            prop_assert!((k - 1.0).abs() < 1e-12, "{}", k);
        } else {
            prop_assert_eq!(k, 0.0);
        }
    }

    #[test]
    fn spearman_is_bounded_and_symmetric(
        pairs in prop::collection::vec((0u8..5, 0u8..5), 2..12)
    ) {
        let x: Vec<f64> = pairs.iter().map(|p| p.0 as f64).collect();
        let y: Vec<f64> = pairs.iter().map(|p| p.1 as f64).collect();
        if let (Ok(a), Ok(b)) = (spearman(&x, &y), spearman(&y, &x)) {
            prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&a));
            prop_assert!((a - b).abs() < 1e-12);
        }
    }

    #[test]
    fn bootstrap_interval_is_ordered(values in prop::collection::vec(0.0f64..1.0, 1..30), seed in any::<u64>()) {
        let cfg = BootstrapConfig { resamples: 200, confidence: 0.9, seed };
        let mean = |idx: &[usize]| idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64;
        let i = bootstrap_ci(values.len(), mean, &cfg).unwrap();
        prop_assert!(i.lower <= i.upper);
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(i.lower >= lo - 1e-12 && i.upper <= hi + 1e-12);
    }
}
