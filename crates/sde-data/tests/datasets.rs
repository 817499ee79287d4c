//! Every shared dataset loads through its recipe with the counts its SOURCE.md gives.
//!
//! These tests read `SDE_DATA_ROOT`; when it is unset they print a note and pass without
//! checking anything (CI always sets it).

use std::path::PathBuf;

use sde_data::stats::split_stats;
use sde_data::{LoadReport, Recipe, Record, data_root_from_env};

fn root() -> Option<PathBuf> {
    let root = data_root_from_env();
    if root.is_none() {
        eprintln!("note: SDE_DATA_ROOT is not set; skipping a real-dataset test");
    }
    root
}

fn load(recipe: &str, split: &str, root: &std::path::Path) -> (Vec<Record>, LoadReport) {
    Recipe::find(recipe)
        .unwrap()
        .load_split_with_report(split, Some(root))
        .unwrap_or_else(|e| panic!("{recipe}/{split}: {e}"))
}

/// Label totals in [`Sentiment::ALL`] order over the recipe's `all` domain.
fn totals(recipe: &str, records: &[Record]) -> [usize; 4] {
    let domain = Recipe::find(recipe).unwrap().domain("all").unwrap();
    split_stats(records, &domain).label_totals
}

fn mentioned(t: [usize; 4]) -> usize {
    t[0] + t[1] + t[2]
}

#[test]
fn mams_acsa_counts() {
    let Some(root) = root() else { return };
    let expect = [
        ("train", 3149, 7090, [1929, 3077, 2084]),
        ("dev", 400, 888, [241, 388, 259]),
        ("test", 400, 901, [245, 393, 263]),
    ];
    for (split, sentences, labels, [pos, neu, neg]) in expect {
        let (records, _) = load("mams-acsa", split, &root);
        assert_eq!(records.len(), sentences);
        let t = totals("mams-acsa", &records);
        assert_eq!(mentioned(t), labels, "{split}");
        assert_eq!([t[0], t[1], t[2]], [pos, neu, neg], "{split}");
    }
    let (train, _) = load("mams-acsa", "train", &root);
    let domain = Recipe::find("mams-acsa").unwrap().domain("all").unwrap();
    let stats = split_stats(&train, &domain);
    let food = stats
        .aspect_labels
        .iter()
        .find(|(k, _)| k == "food")
        .unwrap()
        .1;
    assert_eq!(food[0] + food[1] + food[2], 2307);
    let misc = stats
        .aspect_labels
        .iter()
        .find(|(k, _)| k == "misc")
        .unwrap()
        .1;
    assert_eq!(misc[0] + misc[1] + misc[2], 954);
    assert_eq!(train[0].id(), "mams-acsa/train/0");
}

#[test]
fn semeval_counts_and_conflict_policy() {
    let Some(root) = root() else { return };
    let (train, report) = load("semeval14-restaurants", "train", &root);
    assert_eq!(train.len(), 3044);
    let t = totals("semeval14-restaurants", &train);
    // Two sentences (ids 3561, 258) list the same positive category twice; each is merged.
    assert_eq!(report.get("duplicate labels merged"), 2);
    assert_eq!(mentioned(t), 3714 - 2);
    // positive 2,178 / negative 839 / neutral 501 + conflict 196 -> neutral
    assert_eq!([t[0], t[1], t[2]], [2178 - 2, 501 + 196, 839]);
    assert_eq!(report.get("conflict labels mapped to neutral"), 196);
    let (test, report) = load("semeval14-restaurants", "test", &root);
    assert_eq!(test.len(), 800);
    let t = totals("semeval14-restaurants", &test);
    assert_eq!([t[0], t[1], t[2]], [657, 94 + 52, 222]);
    assert_eq!(report.get("conflict labels mapped to neutral"), 52);
    assert_eq!(train[0].id(), "semeval14-restaurants/train/3121");

    let mut recipe = Recipe::find("semeval14-restaurants").unwrap();
    recipe.options.conflict = sde_data::load::acsa::ConflictPolicy::DropRecord;
    recipe.splits[0].size = None;
    let (kept, report) = recipe.load_split_with_report("train", Some(&root)).unwrap();
    assert_eq!(
        kept.len() + report.get("sentences with conflict labels dropped"),
        3044
    );
    assert!(kept.len() < 3044);
}

#[test]
fn asap_sample_counts() {
    let Some(root) = root() else { return };
    // not-mentioned / positive / neutral / negative over all 18 aspects (asap/SOURCE.md)
    let expect = [
        ("train", [345, 163, 89, 1203]),
        ("dev", [395, 159, 87, 1159]),
        ("test", [369, 124, 78, 1229]),
    ];
    for (split, counts) in expect {
        let (records, _) = load("asap-sample", split, &root);
        assert_eq!(records.len(), 100);
        assert_eq!(totals("asap-sample", &records), counts, "{split}");
    }
    let (train, _) = load("asap-sample", "train", &root);
    let Record::Masa(first) = &train[0] else {
        panic!()
    };
    assert_eq!(first.id, "asap-sample/train/46277");
    assert!(first.text.starts_with("状元楼饭店"));
    let d2 = Recipe::find("asap-sample").unwrap().domain("d2").unwrap();
    assert_eq!(d2.aspects[1].zh, "排队等候情况");
}

#[test]
fn sentihood_counts() {
    let Some(root) = root() else { return };
    for (split, sentences, opinions) in [
        ("train", 2977, 3396),
        ("dev", 747, 838),
        ("test", 1491, 1677),
    ] {
        let (records, report) = load("sentihood", split, &root);
        assert_eq!(report.get("sentences"), sentences);
        assert_eq!(report.get("opinions"), opinions);
        let t = totals("sentihood", &records);
        assert_eq!(t[1], 0, "SentiHood has no neutral opinions");
        let merged = report.get("duplicate opinions merged");
        assert_eq!(report.get("contradicting opinions mapped to neutral"), 0);
        assert_eq!(mentioned(t) + merged, opinions, "{split}");
    }
}

#[test]
fn genia_test_json_counts() {
    let Some(root) = root() else { return };
    let (records, _) = load("genia", "test", &root);
    assert_eq!(records.len(), 1854);
    let domain = Recipe::find("genia").unwrap().domain("all").unwrap();
    let stats = split_stats(&records, &domain);
    assert_eq!(stats.mentions, 5506);
    let expect = [
        ("protein", 3084),
        ("DNA", 1262),
        ("cell_type", 606),
        ("cell_line", 445),
        ("RNA", 109),
    ];
    for (kind, n) in expect {
        assert_eq!(stats.type_counts[kind], n, "{kind}");
    }
    let nested_sentences = records
        .iter()
        .filter(|r| {
            let Record::Ner(n) = r else { return false };
            n.entities.iter().enumerate().any(|(i, a)| {
                n.entities.iter().enumerate().any(|(j, b)| {
                    i != j && a.start_token < b.end_token && b.start_token < a.end_token
                })
            })
        })
        .count();
    assert_eq!(nested_sentences, 446);
    assert_eq!(records[0].id(), "genia/test/ge/test/0001");
    assert!(
        records[0]
            .text()
            .starts_with("There is a single methionine codon-initiated")
    );
}

#[test]
fn genia_raw_rebuild_matches_the_study_split() {
    let Some(root) = root() else { return };
    let recipe = Recipe::find("genia-raw").unwrap();
    let domain = recipe.domain("all").unwrap();
    let (test, _) = recipe.load_split_with_report("test", Some(&root)).unwrap();
    assert_eq!(test.len(), 1854);
    assert_eq!(split_stats(&test, &domain).mentions, 5511);
    let (train, _) = recipe.load_split_with_report("train", Some(&root)).unwrap();
    assert_eq!(train.len(), 16692);
    assert_eq!(split_stats(&train, &domain).mentions, 50535);
    // The rebuilt test sentences are the study's test sentences (whitespace aside).
    let (json, _) = load("genia", "test", &root);
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    for (a, b) in test.iter().zip(&json) {
        assert_eq!(squash(a.text()), squash(b.text()));
    }
}

#[test]
fn maven_fewshot_counts() {
    let Some(root) = root() else { return };
    for (split, sentences, events, repeats) in [("dev", 549, 593, 25), ("test", 760, 848, 55)] {
        let (records, report) = load("maven-fewshot", split, &root);
        assert_eq!(records.len(), sentences);
        assert_eq!(report.get("events"), events);
        assert_eq!(report.get("repeated sentences merged"), repeats);
        for r in &records {
            let Record::Event(e) = r else { panic!() };
            for ev in &e.events {
                assert_eq!(ev.span.slice(&e.text), Some(ev.trigger.as_str()));
            }
        }
    }
    let recipe = Recipe::find("maven-fewshot").unwrap();
    assert_eq!(recipe.domain("dev").unwrap().len(), 16);
    assert_eq!(recipe.domain("test").unwrap().len(), 20);
}

/// The pooled recipe's hash split: 1,040 / 269 sentences, no text in both, every one of the
/// 1,309 few-shot sentences in exactly one split, and both splits over the same 36 types.
#[test]
fn maven_fewshot_pooled_split_is_disjoint_and_complete() {
    let Some(root) = root() else { return };
    let (train, _) = load("maven-fewshot-pooled", "train", &root);
    let (test, _) = load("maven-fewshot-pooled", "test", &root);
    assert_eq!((train.len(), test.len()), (1040, 269));
    let texts = |rs: &[Record]| -> std::collections::BTreeSet<String> {
        rs.iter().map(|r| r.text().to_string()).collect()
    };
    let (a, b) = (texts(&train), texts(&test));
    assert!(a.is_disjoint(&b));
    let mut all = texts(&load("maven-fewshot", "dev", &root).0);
    all.extend(texts(&load("maven-fewshot", "test", &root).0));
    assert_eq!(a.union(&b).count(), all.len());
    let types = |rs: &[Record]| -> std::collections::BTreeSet<String> {
        rs.iter()
            .flat_map(|r| match r {
                Record::Event(e) => e.events.iter().map(|ev| ev.kind.clone()).collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(types(&train).len(), 36);
    assert_eq!(types(&test), types(&train));
}

#[test]
fn maven_heuristic_prompts_counts() {
    let Some(root) = root() else { return };
    let (records, report) = load("maven-heuristic", "test", &root);
    assert_eq!(records.len(), 100);
    assert_eq!(report.get("events"), 147);
    let domain = Recipe::find("maven-heuristic")
        .unwrap()
        .domain("all")
        .unwrap();
    let stats = split_stats(&records, &domain);
    let expect = [
        ("Catastrophe", 23),
        ("Motion", 20),
        ("Attack", 20),
        ("Hostile_encounter", 18),
        ("Causation", 13),
        ("Competition", 13),
        ("Killing", 13),
        ("Process_start", 12),
        ("Social_event", 8),
        ("Conquering", 7),
    ];
    for (kind, n) in expect {
        assert_eq!(stats.type_counts[kind], n, "{kind}");
    }
}

#[test]
fn conll2003_counts() {
    let Some(root) = root() else { return };
    let expect = [
        ("train", 14041, [6600, 7140, 6321, 3438]),
        ("dev", 3250, [1842, 1837, 1341, 922]),
        ("test", 3453, [1617, 1668, 1661, 702]),
    ];
    for (split, sentences, [per, loc, org, misc]) in expect {
        let (records, _) = load("conll2003", split, &root);
        assert_eq!(records.len(), sentences);
        let domain = Recipe::find("conll2003").unwrap().domain("all").unwrap();
        let stats = split_stats(&records, &domain);
        assert_eq!(
            [
                stats.type_counts["PER"],
                stats.type_counts["LOC"],
                stats.type_counts["ORG"],
                stats.type_counts["MISC"]
            ],
            [per, loc, org, misc],
            "{split}"
        );
    }
}

#[test]
fn genia_cnn_split_counts() {
    let Some(root) = root() else { return };
    for (split, sentences, entities) in [("dev", 1765, 4714), ("test", 1732, 5119)] {
        let (records, report) = load("genia-cnn", split, &root);
        assert_eq!(records.len(), sentences);
        assert_eq!(report.get("entities"), entities);
    }
}
