//! The Parquet copy of `sde eval`'s scores: one row per numeric score.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

/// One numeric leaf of the JSON report: its dotted path (`masa.kappa`,
/// `intervals.kappa.lo`, `against.masa.accuracy`, ...) and value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricRow {
    pub metric: String,
    pub value: f64,
}

/// Every number in `report`, depth first, with its dotted path. Arrays index by position.
pub(crate) fn flatten(report: &serde_json::Value) -> Vec<MetricRow> {
    let mut rows = Vec::new();
    walk(report, &mut String::new(), &mut rows);
    rows
}

fn walk(value: &serde_json::Value, path: &mut String, rows: &mut Vec<MetricRow>) {
    let mut descend = |key: &str, child: &serde_json::Value, path: &mut String| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        walk(child, path, rows);
        path.truncate(len);
    };
    match value {
        serde_json::Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                rows.push(MetricRow {
                    metric: path.clone(),
                    value: v,
                });
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                descend(k, v, path);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                descend(&i.to_string(), v, path);
            }
        }
        _ => {}
    }
}

/// Writes `rows` as Parquet (columns `input`, `design`, `metric`, `value`), atomically.
pub(crate) fn write_parquet(
    path: &Path,
    input: &str,
    design: &str,
    rows: &[MetricRow],
) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("input", DataType::Utf8, false),
        Field::new("design", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![input; rows.len()])),
            Arc::new(StringArray::from(vec![design; rows.len()])),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.metric.as_str()),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        ],
    )
    .context("building the score table")?;
    sde_data::io::write_atomic(path, |w| {
        let mut writer = ArrowWriter::try_new(w, schema, None).map_err(columnar)?;
        writer.write(&batch).map_err(columnar)?;
        writer.close().map_err(columnar)?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))
}

fn columnar(e: parquet::errors::ParquetError) -> sde_data::DataError {
    sde_data::DataError::Invalid {
        what: "score table",
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_numbers_with_dotted_paths() {
        let report = serde_json::json!({
            "task": "masa",
            "masa": {"kappa": 0.5, "per_aspect": [{"accuracy": 1}]},
            "intervals": {"kappa": {"lo": 0.25, "hi": 0.75}},
            "ok": true
        });
        let rows = flatten(&report);
        let got: Vec<(&str, f64)> = rows.iter().map(|r| (r.metric.as_str(), r.value)).collect();
        assert_eq!(
            got,
            vec![
                ("intervals.kappa.hi", 0.75),
                ("intervals.kappa.lo", 0.25),
                ("masa.kappa", 0.5),
                ("masa.per_aspect.0.accuracy", 1.0),
            ]
        );
    }

    #[test]
    fn parquet_table_reads_back() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.parquet");
        let rows = vec![
            MetricRow {
                metric: "masa.kappa".into(),
                value: 0.7639,
            },
            MetricRow {
                metric: "masa.accuracy".into(),
                value: 0.8667,
            },
        ];
        write_parquet(&path, "p.jsonl", "baseline", &rows).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches[0].num_rows(), 2);
        let values = batches[0]
            .column(3)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(values.value(0), 0.7639);
        let metrics = batches[0]
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(metrics.value(1), "masa.accuracy");
    }
}
