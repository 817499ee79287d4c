//! The synthetic generators: determinism, label distributions, evidence spans, difficulty.

use sde_data::io::write_jsonl;
use sde_data::stats::split_stats;
use sde_data::synth::masa::{generate, keyword_baseline, pattern_count};
use sde_data::{Domain, Recipe, Record, Sentiment, SynthConfig};

fn jsonl_bytes(records: &[Record]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    write_jsonl(&path, records).unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn same_seed_gives_byte_identical_output_and_splits_differ() {
    for name in ["synthetic-masa", "synthetic-ner", "synthetic-event"] {
        let recipe = Recipe::find(name).unwrap();
        let a = recipe.load_split("dev", None).unwrap();
        let b = recipe.load_split("dev", None).unwrap();
        assert_eq!(a.len(), 500);
        assert_eq!(jsonl_bytes(&a), jsonl_bytes(&b), "{name}");
        let test = recipe.load_split("test", None).unwrap();
        assert_ne!(
            a[0].text(),
            test[0].text(),
            "{name}: dev and test share a first record"
        );
        let mut reseeded = recipe.clone();
        reseeded.seed += 1;
        let c = reseeded.load_split("dev", None).unwrap();
        assert_ne!(jsonl_bytes(&a), jsonl_bytes(&c), "{name}");
    }
}

#[test]
fn embedded_recipes_match_the_files_in_datasets() {
    for embedded in Recipe::embedded().unwrap() {
        let mut on_disk = Recipe::find(&embedded.name).unwrap();
        on_disk.origin = embedded.origin.clone();
        assert_eq!(on_disk, embedded);
    }
}

#[test]
fn masa_label_distribution_is_about_half_unmentioned() {
    let domain = Domain::study_all();
    let records = generate(&domain, &SynthConfig::default(), 11, 2000, "t").unwrap();
    let records: Vec<Record> = records.into_iter().map(Record::Masa).collect();
    let stats = split_stats(&records, &domain);
    let total: usize = stats.label_totals.iter().sum();
    assert_eq!(total, 2000 * 11);
    let share = |s: Sentiment| stats.label_totals[s.index()] as f64 / total as f64;
    // Mention rate 0.5; mentioned labels are 45% positive, 33% negative, 22% neutral.
    assert!(
        (share(Sentiment::Unmentioned) - 0.50).abs() < 0.02,
        "{:?}",
        stats.label_totals
    );
    assert!(
        (share(Sentiment::Positive) - 0.225).abs() < 0.02,
        "{:?}",
        stats.label_totals
    );
    assert!(
        (share(Sentiment::Negative) - 0.165).abs() < 0.02,
        "{:?}",
        stats.label_totals
    );
    assert!(
        (share(Sentiment::Neutral) - 0.11).abs() < 0.02,
        "{:?}",
        stats.label_totals
    );
    for (aspect, counts) in &stats.aspect_labels {
        assert!(counts.iter().all(|&c| c > 50), "{aspect}: {counts:?}");
    }
}

#[test]
fn masa_evidence_spans_are_clauses_of_the_text() {
    let domain = Domain::study_all();
    let records = generate(&domain, &SynthConfig::default(), 3, 300, "t").unwrap();
    let mut distinct = std::collections::BTreeSet::new();
    for r in &records {
        assert!(r.text.is_ascii());
        for label in &r.labels {
            assert_ne!(label.sentiment, Sentiment::Unmentioned);
            let span = label.evidence.expect("noise-free labels have evidence");
            let clause = span.slice(&r.text).unwrap();
            assert!(
                !clause.is_empty() && !clause.ends_with('.') && !clause.starts_with(' '),
                "{clause:?}"
            );
            distinct.insert(clause.to_ascii_lowercase());
        }
        let keys: Vec<&str> = r.labels.iter().map(|l| l.aspect.as_str()).collect();
        let canonical: Vec<&str> = domain.keys().filter(|k| keys.contains(k)).collect();
        assert_eq!(keys, canonical, "labels follow the domain order");
    }
    assert!(
        distinct.len() > 1000,
        "only {} distinct clauses",
        distinct.len()
    );
    assert!(pattern_count() > 1000, "only {} patterns", pattern_count());
}

#[test]
fn masa_domain_subset_and_unknown_aspect() {
    let d2 = Domain::study_d2();
    let records = generate(&d2, &SynthConfig::default(), 1, 50, "t").unwrap();
    assert!(
        records
            .iter()
            .flat_map(|r| &r.labels)
            .all(|l| d2.aspect(&l.aspect).is_some())
    );
    let odd = Domain::from_keys("x", &["wifi"]);
    assert!(generate(&odd, &SynthConfig::default(), 1, 5, "t").is_err());
    let bad = SynthConfig {
        difficulty: 1.5,
        ..SynthConfig::default()
    };
    assert!(generate(&d2, &bad, 1, 5, "t").is_err());
}

#[test]
fn label_noise_changes_the_expected_share_of_labels() {
    let domain = Domain::study_d1();
    let clean = generate(&domain, &SynthConfig::default(), 5, 500, "t").unwrap();
    let noisy_config = SynthConfig {
        label_noise: 0.3,
        ..SynthConfig::default()
    };
    let noisy = generate(&domain, &noisy_config, 5, 500, "t").unwrap();
    let without_evidence = noisy
        .iter()
        .flat_map(|r| &r.labels)
        .filter(|l| l.evidence.is_none())
        .count();
    assert!(without_evidence > 200, "{without_evidence}");
    assert!(
        clean
            .iter()
            .flat_map(|r| &r.labels)
            .all(|l| l.evidence.is_some())
    );
}

/// Accuracy of the keyword baseline over all aspect slots, and over mentioned slots only.
fn keyword_accuracy(difficulty: f64) -> (f64, f64) {
    let domain = Domain::study_all();
    let config = SynthConfig {
        difficulty,
        ..SynthConfig::default()
    };
    let records = generate(&domain, &config, 7, 1000, "kb").unwrap();
    let (mut right, mut total, mut m_right, mut m_total) = (0, 0, 0, 0);
    for r in &records {
        for (a, p) in domain
            .aspects
            .iter()
            .zip(keyword_baseline(&r.text, &domain))
        {
            let gold = r.sentiment(&a.key);
            total += 1;
            right += usize::from(gold == p);
            if gold != Sentiment::Unmentioned {
                m_total += 1;
                m_right += usize::from(gold == p);
            }
        }
    }
    (right as f64 / total as f64, m_right as f64 / m_total as f64)
}

#[test]
fn keyword_lookup_does_not_solve_the_default_difficulty() {
    let (easy, easy_mentioned) = keyword_accuracy(0.0);
    let (default, default_mentioned) = keyword_accuracy(0.5);
    eprintln!(
        "keyword baseline: difficulty 0 -> {easy:.3} ({easy_mentioned:.3} on mentioned), 0.5 -> {default:.3} ({default_mentioned:.3})"
    );
    assert!(default < 0.75, "keyword lookup reaches {default:.3}");
    assert!(
        default_mentioned < 0.6,
        "keyword lookup reaches {default_mentioned:.3} on mentioned aspects"
    );
    assert!(
        easy > default + 0.03,
        "difficulty has no effect: {easy:.3} vs {default:.3}"
    );
}

#[test]
fn ner_and_event_generators_produce_valid_nested_and_typed_mentions() {
    let ner = Recipe::find("synthetic-ner").unwrap();
    let records = ner.load_split("dev", None).unwrap();
    let stats = split_stats(&records, &ner.all_aspects());
    for t in ["DNA", "RNA", "protein", "cell_type", "cell_line"] {
        assert!(stats.type_counts[t] > 30, "{t}: {:?}", stats.type_counts);
    }
    assert_eq!(stats.type_counts.len(), 5);
    assert!(stats.nested_mentions > 100, "{}", stats.nested_mentions);
    for r in &records {
        let Record::Ner(n) = r else { panic!() };
        assert_eq!(n.text, n.tokens.join(" "));
        for e in &n.entities {
            assert_eq!(e.text, n.tokens[e.start_token..e.end_token].join(" "));
        }
    }

    let event = Recipe::find("synthetic-event").unwrap();
    let records = event.load_split("dev", None).unwrap();
    let stats = split_stats(&records, &event.all_aspects());
    assert_eq!(stats.type_counts.keys().collect::<Vec<_>>().len(), 10);
    for key in stats.type_counts.keys() {
        assert!(Domain::maven10().aspect(key).is_some(), "{key}");
    }
    let empty = records
        .iter()
        .filter(|r| matches!(r, Record::Event(e) if e.events.is_empty()))
        .count();
    assert!(
        empty > 20 && empty < 250,
        "{empty} sentences without events"
    );
    for r in &records {
        let Record::Event(e) = r else { panic!() };
        for ev in &e.events {
            assert_eq!(ev.span.slice(&e.text), Some(ev.trigger.as_str()));
        }
    }
}
