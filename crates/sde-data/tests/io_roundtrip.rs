//! JSONL and Parquet round-trip every record type; writes are atomic; bad files are named.

use sde_data::io::{FileFormat, read_jsonl, read_parquet, read_records, write_records};
use sde_data::{
    AspectLabel, DataError, Entity, Event, EventRecord, MasaRecord, NerRecord, Recipe, Record,
    Sentiment, Span,
};

fn samples() -> Vec<Record> {
    let mut records = vec![
        Record::Masa(MasaRecord {
            id: "m/0".into(),
            text: "菜很好吃，\"quoted\"\nnew line".into(),
            labels: vec![
                AspectLabel {
                    aspect: "food".into(),
                    sentiment: Sentiment::Positive,
                    evidence: Some(Span { start: 0, end: 15 }),
                },
                AspectLabel {
                    aspect: "price".into(),
                    sentiment: Sentiment::Neutral,
                    evidence: None,
                },
            ],
        }),
        Record::Masa(MasaRecord {
            id: "m/1".into(),
            text: String::new(),
            labels: vec![],
        }),
        Record::Ner(NerRecord {
            id: "n/0".into(),
            text: "IL-2 gene".into(),
            tokens: vec!["IL-2".into(), "gene".into()],
            entities: vec![
                Entity {
                    kind: "protein".into(),
                    start_token: 0,
                    end_token: 1,
                    text: "IL-2".into(),
                },
                Entity {
                    kind: "DNA".into(),
                    start_token: 0,
                    end_token: 2,
                    text: "IL-2 gene".into(),
                },
            ],
        }),
        Record::Event(EventRecord {
            id: "e/0".into(),
            text: "The storm killed two".into(),
            events: vec![Event {
                kind: "Killing".into(),
                trigger: "killed".into(),
                span: Span { start: 10, end: 16 },
            }],
        }),
    ];
    for name in ["synthetic-masa", "synthetic-ner", "synthetic-event"] {
        let recipe = Recipe::find(name).unwrap();
        records.extend(recipe.load_split("dev", None).unwrap().into_iter().take(50));
    }
    records
}

#[test]
fn jsonl_and_parquet_round_trip_every_record_type() {
    let dir = tempfile::tempdir().unwrap();
    let records = samples();
    for (name, format) in [
        ("r.jsonl", FileFormat::Jsonl),
        ("r.parquet", FileFormat::Parquet),
    ] {
        let path = dir.path().join(name);
        write_records(&path, format, &records).unwrap();
        assert_eq!(read_records(&path).unwrap(), records, "{name}");
    }
    // No temporary files left next to the outputs.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn parquet_has_plain_id_and_text_columns() {
    let records = samples();
    let batch = sde_data::io::to_record_batch(&records).unwrap();
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "task", "text", "annotations"]);
    assert_eq!(batch.num_rows(), records.len());
}

#[test]
fn failed_write_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.jsonl");
    std::fs::write(&path, "old").unwrap();
    let result = sde_data::io::write_atomic(&path, |_| {
        Err(DataError::Invalid {
            what: "test",
            message: "fail midway".into(),
        })
    });
    assert!(result.is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, "{\"task\": \"masa\", \"id\": \"a\", \"text\": \"t\", \"labels\": []}\n{\"task\": \"poem\"}\n").unwrap();
    match read_jsonl(&path) {
        Err(DataError::Malformed {
            path: p, location, ..
        }) => {
            assert_eq!(p, path);
            assert!(location.starts_with("line 2"), "{location}");
        }
        other => panic!("{other:?}"),
    }
    let path = dir.path().join("bad.parquet");
    std::fs::write(&path, "not parquet").unwrap();
    match read_parquet(&path) {
        Err(DataError::Columnar { path: p, .. }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    assert!(read_records(&dir.path().join("x.csv")).is_err());
}
