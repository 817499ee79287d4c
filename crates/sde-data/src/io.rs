//! Reading and writing records as JSON Lines and Parquet.
//!
//! JSONL: one [`Record`] per line in its serde form (`{"task": "masa", "id", "text", ...}`).
//! Parquet: plain columns `id`, `task`, `text` and a column `annotations` holding the
//! task-specific part as JSON (MASA `{"labels"}`, NER `{"tokens", "entities"}`, event
//! `{"events"}`), so any Parquet reader sees ids and texts directly.
//!
//! Writes are atomic: the file is written next to its destination under a temporary name,
//! synced, then renamed over the destination.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result, excerpt};
use crate::record::{
    AspectLabel, Entity, Event, EventRecord, MasaRecord, NerRecord, Record, TaskKind,
};

/// On-disk formats for records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// JSON Lines (`.jsonl`).
    Jsonl,
    /// Apache Parquet (`.parquet`).
    Parquet,
}

impl FileFormat {
    /// The format a path's extension names (`jsonl`/`json` or `parquet`/`pq`).
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" => Some(FileFormat::Jsonl),
            "parquet" | "pq" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

impl FromStr for FileFormat {
    type Err = DataError;
    fn from_str(s: &str) -> Result<FileFormat> {
        match s {
            "jsonl" => Ok(FileFormat::Jsonl),
            "parquet" => Ok(FileFormat::Parquet),
            other => Err(DataError::Invalid {
                what: "file format",
                message: format!("{other:?} (expected jsonl or parquet)"),
            }),
        }
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the same directory, which is
/// then synced and renamed to `path`. On error the temporary file is removed.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| DataError::Invalid {
        what: "output path",
        message: format!("{} has no file name", path.display()),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, "create", e))?;
        let mut writer = BufWriter::new(file);
        write(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| DataError::io(&tmp, "write", e.into_error()))?;
        file.sync_all()
            .map_err(|e| DataError::io(&tmp, "sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, "rename", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes records as JSON Lines, atomically.
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    write_atomic(path, |w| {
        for r in records {
            serde_json::to_writer(&mut *w, r).map_err(|e| DataError::Invalid {
                what: "record",
                message: e.to_string(),
            })?;
            w.write_all(b"\n")
                .map_err(|e| DataError::io(path, "write", e))?;
        }
        Ok(())
    })
}

/// Reads JSON Lines written by [`write_jsonl`]; blank lines are skipped.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let file = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    let mut records = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, "read", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line).map_err(|e| {
            DataError::malformed(
                path,
                format!("line {}, column {}", i + 1, e.column()),
                "a record {\"task\": \"masa\"|\"ner\"|\"event\", \"id\", \"text\", ...}",
                format!("{} ({e})", excerpt(&line)),
            )
        })?;
        records.push(record);
    }
    Ok(records)
}

#[derive(Serialize, Deserialize)]
struct MasaPart {
    labels: Vec<AspectLabel>,
}

#[derive(Serialize, Deserialize)]
struct NerPart {
    tokens: Vec<String>,
    entities: Vec<Entity>,
}

#[derive(Serialize, Deserialize)]
struct EventPart {
    events: Vec<Event>,
}

fn task_name(task: TaskKind) -> &'static str {
    match task {
        TaskKind::Masa => "masa",
        TaskKind::Ner => "ner",
        TaskKind::Event => "event",
    }
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("annotations", DataType::Utf8, false),
    ]))
}

/// The records as one Arrow batch with columns `id`, `task`, `text`, `annotations`.
pub fn to_record_batch(records: &[Record]) -> Result<RecordBatch> {
    let mut annotations = Vec::with_capacity(records.len());
    for r in records {
        let json = match r {
            Record::Masa(m) => serde_json::to_string(&MasaPart {
                labels: m.labels.clone(),
            }),
            Record::Ner(n) => serde_json::to_string(&NerPart {
                tokens: n.tokens.clone(),
                entities: n.entities.clone(),
            }),
            Record::Event(e) => serde_json::to_string(&EventPart {
                events: e.events.clone(),
            }),
        };
        annotations.push(json.map_err(|e| DataError::Invalid {
            what: "record",
            message: e.to_string(),
        })?);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            records.iter().map(Record::id),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| task_name(r.task())),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(Record::text),
        )),
        Arc::new(StringArray::from_iter_values(annotations)),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| DataError::Invalid {
        what: "record batch",
        message: e.to_string(),
    })
}

/// Records from a batch made by [`to_record_batch`]; `path` names the source in errors.
pub fn from_record_batch(
    path: &Path,
    batch: &RecordBatch,
    first_row: usize,
) -> Result<Vec<Record>> {
    let column = |name: &str| -> Result<&StringArray> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| {
                DataError::malformed(
                    path,
                    "schema",
                    format!("a Utf8 column `{name}`"),
                    format!(
                        "{:?}",
                        batch
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect::<Vec<_>>()
                    ),
                )
            })
    };
    let (ids, tasks, texts, notes) = (
        column("id")?,
        column("task")?,
        column("text")?,
        column("annotations")?,
    );
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let row = first_row + i;
        if ids.is_null(i) || tasks.is_null(i) || texts.is_null(i) || notes.is_null(i) {
            return Err(DataError::malformed(
                path,
                format!("row {row}"),
                "no null values",
                "a null",
            ));
        }
        let (id, text, json) = (
            ids.value(i).to_string(),
            texts.value(i).to_string(),
            notes.value(i),
        );
        let bad = |e: serde_json::Error, expected: &str| {
            DataError::malformed(
                path,
                format!("row {row}, column `annotations`"),
                expected.to_string(),
                format!("{} ({e})", excerpt(json)),
            )
        };
        let record = match tasks.value(i) {
            "masa" => {
                let p: MasaPart =
                    serde_json::from_str(json).map_err(|e| bad(e, "{\"labels\": [...]}"))?;
                Record::Masa(MasaRecord {
                    id,
                    text,
                    labels: p.labels,
                })
            }
            "ner" => {
                let p: NerPart = serde_json::from_str(json)
                    .map_err(|e| bad(e, "{\"tokens\": [...], \"entities\": [...]}"))?;
                Record::Ner(NerRecord {
                    id,
                    text,
                    tokens: p.tokens,
                    entities: p.entities,
                })
            }
            "event" => {
                let p: EventPart =
                    serde_json::from_str(json).map_err(|e| bad(e, "{\"events\": [...]}"))?;
                Record::Event(EventRecord {
                    id,
                    text,
                    events: p.events,
                })
            }
            other => {
                return Err(DataError::malformed(
                    path,
                    format!("row {row}, column `task`"),
                    "masa, ner or event",
                    format!("{other:?}"),
                ));
            }
        };
        out.push(record);
    }
    Ok(out)
}

/// Writes records as Parquet (snappy), atomically.
pub fn write_parquet(path: &Path, records: &[Record]) -> Result<()> {
    let batch = to_record_batch(records)?;
    let columnar = |e: parquet::errors::ParquetError| DataError::Columnar {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    write_atomic(path, |w| {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut writer = ArrowWriter::try_new(w, batch.schema(), Some(props)).map_err(columnar)?;
        writer.write(&batch).map_err(columnar)?;
        writer.close().map_err(columnar)?;
        Ok(())
    })
}

/// Reads a Parquet file written by [`write_parquet`].
pub fn read_parquet(path: &Path) -> Result<Vec<Record>> {
    let file = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    let columnar = |message: String| DataError::Columnar {
        path: path.to_path_buf(),
        message,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| columnar(e.to_string()))?
        .build()
        .map_err(|e| columnar(e.to_string()))?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| columnar(e.to_string()))?;
        let first = records.len();
        records.extend(from_record_batch(path, &batch, first)?);
    }
    Ok(records)
}

/// Writes records in `format`, atomically.
pub fn write_records(path: &Path, format: FileFormat, records: &[Record]) -> Result<()> {
    match format {
        FileFormat::Jsonl => write_jsonl(path, records),
        FileFormat::Parquet => write_parquet(path, records),
    }
}

/// Reads records in the format the extension names.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    match FileFormat::from_path(path) {
        Some(FileFormat::Jsonl) => read_jsonl(path),
        Some(FileFormat::Parquet) => read_parquet(path),
        None => Err(DataError::malformed(
            path,
            "file name",
            "extension .jsonl or .parquet",
            format!("{:?}", path.extension()),
        )),
    }
}
