//! Long-format result rows (one per cell, evaluation and metric) and `results.parquet`.

use crate::cell::{CellOutcome, CellSpec};
use crate::designs;
use crate::knobs::setting_name;
use anyhow::{Context, Result, anyhow};
use arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

/// One metric of one evaluation of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Matrix letter.
    pub matrix: String,
    /// Cell id.
    pub cell: String,
    /// Task family.
    pub task: String,
    /// Dataset recipe.
    pub dataset: String,
    /// Model reference.
    pub model: String,
    /// Template language.
    pub language: String,
    /// Design id or alias.
    pub design: String,
    /// The design's option group (`None` for designs outside the study's named set).
    pub design_group: Option<String>,
    /// Instruction placement axis.
    pub placement: Option<String>,
    /// Loss-scope axis.
    pub loss_on: Option<String>,
    /// Layout axis.
    pub layout: Option<String>,
    /// Unmentioned-targets axis.
    pub unmentioned: Option<String>,
    /// Label-form axis.
    pub label_form: Option<String>,
    /// Reasoning axis.
    pub reasoning: Option<String>,
    /// Instruction paraphrase.
    pub paraphrase: u32,
    /// Whether the model was fine-tuned (`finetuned`) or used as is (`untuned`).
    pub tuning: String,
    /// MASA training domain (or analysed domain for untuned cells).
    pub train_domain: Option<String>,
    /// MASA test domain.
    pub test_domain: Option<String>,
    /// The study's setting name (`D11`, `D12`, ...) for MASA domains 1 and 2.
    pub setting: Option<String>,
    /// Training records.
    pub train_size: u64,
    /// Training seed.
    pub seed: u64,
    /// `greedy`, `sample` or `score`.
    pub decoding: String,
    /// Sampling seed, if sampled.
    pub decode_seed: Option<u64>,
    /// ICL demonstrations.
    pub shots: u32,
    /// Metric name.
    pub metric: String,
    /// Metric value.
    pub value: f64,
    /// Lower 95% bound.
    pub ci_low: Option<f64>,
    /// Upper 95% bound.
    pub ci_high: Option<f64>,
    /// Test records scored.
    pub n: u64,
}

/// The rows of one finished cell.
pub fn rows(cell: &CellSpec, outcome: &CellOutcome) -> Vec<Row> {
    let axes = designs::axes(&cell.task, &cell.design);
    let ax = |f: fn(&designs::DesignAxes) -> &'static str| axes.as_ref().map(|a| f(a).to_string());
    let id = cell.id();
    let mut out = Vec::new();
    for e in &outcome.evals {
        let setting = match (&cell.train_domain, &e.eval.test_domain) {
            (Some(tr), Some(te))
                if ["d1", "d2"].contains(&tr.as_str()) && ["d1", "d2"].contains(&te.as_str()) =>
            {
                Some(setting_name(tr, te))
            }
            _ => None,
        };
        for (metric, v) in &e.metrics {
            out.push(Row {
                matrix: cell.matrix.as_str().into(),
                cell: id.clone(),
                task: cell.task.clone(),
                dataset: cell.dataset.clone(),
                model: cell.model.clone(),
                language: cell.language.clone(),
                design: cell.design.clone(),
                design_group: ax(|a| a.group),
                placement: ax(|a| a.placement),
                loss_on: ax(|a| a.loss_on),
                layout: ax(|a| a.layout),
                unmentioned: ax(|a| a.unmentioned),
                label_form: ax(|a| a.labels),
                reasoning: ax(|a| a.reasoning),
                paraphrase: cell.paraphrase,
                tuning: if cell.fine_tunes() {
                    "finetuned"
                } else {
                    "untuned"
                }
                .into(),
                train_domain: cell.train_domain.clone(),
                test_domain: e.eval.test_domain.clone(),
                setting: setting.clone(),
                train_size: cell.train_size as u64,
                seed: cell.seed,
                decoding: e.eval.decoding.name().into(),
                decode_seed: e.eval.decoding.seed(),
                shots: e.eval.shots,
                metric: metric.clone(),
                value: v.value,
                ci_low: v.ci_low,
                ci_high: v.ci_high,
                n: e.n as u64,
            });
        }
    }
    out
}

/// The schema of `results.parquet`, in column order.
pub fn schema() -> Schema {
    let s = |name: &str| Field::new(name, DataType::Utf8, false);
    let os = |name: &str| Field::new(name, DataType::Utf8, true);
    Schema::new(vec![
        s("matrix"),
        s("cell"),
        s("task"),
        s("dataset"),
        s("model"),
        s("language"),
        s("design"),
        os("design_group"),
        os("placement"),
        os("loss_on"),
        os("layout"),
        os("unmentioned"),
        os("label_form"),
        os("reasoning"),
        Field::new("paraphrase", DataType::UInt32, false),
        s("tuning"),
        os("train_domain"),
        os("test_domain"),
        os("setting"),
        Field::new("train_size", DataType::UInt64, false),
        Field::new("seed", DataType::UInt64, false),
        s("decoding"),
        Field::new("decode_seed", DataType::UInt64, true),
        Field::new("shots", DataType::UInt32, false),
        s("metric"),
        Field::new("value", DataType::Float64, false),
        Field::new("ci_low", DataType::Float64, true),
        Field::new("ci_high", DataType::Float64, true),
        Field::new("n", DataType::UInt64, false),
    ])
}

/// Rows as one Arrow batch with [`schema`].
pub fn to_batch(rows: &[Row]) -> Result<RecordBatch> {
    fn s(rows: &[Row], f: impl Fn(&Row) -> &str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    }
    fn os(rows: &[Row], f: impl Fn(&Row) -> Option<&str>) -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    }
    let columns: Vec<ArrayRef> = vec![
        s(rows, |r| &r.matrix),
        s(rows, |r| &r.cell),
        s(rows, |r| &r.task),
        s(rows, |r| &r.dataset),
        s(rows, |r| &r.model),
        s(rows, |r| &r.language),
        s(rows, |r| &r.design),
        os(rows, |r| r.design_group.as_deref()),
        os(rows, |r| r.placement.as_deref()),
        os(rows, |r| r.loss_on.as_deref()),
        os(rows, |r| r.layout.as_deref()),
        os(rows, |r| r.unmentioned.as_deref()),
        os(rows, |r| r.label_form.as_deref()),
        os(rows, |r| r.reasoning.as_deref()),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.paraphrase),
        )),
        s(rows, |r| &r.tuning),
        os(rows, |r| r.train_domain.as_deref()),
        os(rows, |r| r.test_domain.as_deref()),
        os(rows, |r| r.setting.as_deref()),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.train_size),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seed))),
        s(rows, |r| &r.decoding),
        Arc::new(rows.iter().map(|r| r.decode_seed).collect::<UInt64Array>()),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.shots))),
        s(rows, |r| &r.metric),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(rows.iter().map(|r| r.ci_low).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.ci_high).collect::<Float64Array>()),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.n))),
    ];
    RecordBatch::try_new(Arc::new(schema()), columns).context("building the results batch")
}

/// Writes `rows` to a Parquet file atomically.
pub fn write_parquet(path: &Path, rows: &[Row]) -> Result<()> {
    let batch = to_batch(rows)?;
    let mut buf = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None)
            .context("creating the Parquet writer")?;
        w.write(&batch).context("writing results to Parquet")?;
        w.close().context("finishing the Parquet file")?;
    }
    crate::store::write_atomic(path, &buf)
}

/// Reads a `results.parquet` back into rows (schema checked by column name).
pub fn read_parquet(path: &Path) -> Result<Vec<Row>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("reading Parquet metadata of {}", path.display()))?
        .build()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.with_context(|| format!("reading a batch of {}", path.display()))?;
        out.extend(from_batch(&batch).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(out)
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("missing column `{name}`"))?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| anyhow!("column `{name}` has an unexpected type"))
}

fn from_batch(batch: &RecordBatch) -> Result<Vec<Row>> {
    let s = |n: &str| col::<StringArray>(batch, n);
    let (matrix, cell, task, dataset, model, language, design) = (
        s("matrix")?,
        s("cell")?,
        s("task")?,
        s("dataset")?,
        s("model")?,
        s("language")?,
        s("design")?,
    );
    let (group, placement, loss_on, layout, unmentioned, label_form, reasoning) = (
        s("design_group")?,
        s("placement")?,
        s("loss_on")?,
        s("layout")?,
        s("unmentioned")?,
        s("label_form")?,
        s("reasoning")?,
    );
    let (tuning, train_domain, test_domain, setting, decoding, metric) = (
        s("tuning")?,
        s("train_domain")?,
        s("test_domain")?,
        s("setting")?,
        s("decoding")?,
        s("metric")?,
    );
    let paraphrase = col::<UInt32Array>(batch, "paraphrase")?;
    let shots = col::<UInt32Array>(batch, "shots")?;
    let train_size = col::<UInt64Array>(batch, "train_size")?;
    let seed = col::<UInt64Array>(batch, "seed")?;
    let decode_seed = col::<UInt64Array>(batch, "decode_seed")?;
    let n = col::<UInt64Array>(batch, "n")?;
    let value = col::<Float64Array>(batch, "value")?;
    let ci_low = col::<Float64Array>(batch, "ci_low")?;
    let ci_high = col::<Float64Array>(batch, "ci_high")?;
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_string());
    Ok((0..batch.num_rows())
        .map(|i| Row {
            matrix: matrix.value(i).into(),
            cell: cell.value(i).into(),
            task: task.value(i).into(),
            dataset: dataset.value(i).into(),
            model: model.value(i).into(),
            language: language.value(i).into(),
            design: design.value(i).into(),
            design_group: opt(group, i),
            placement: opt(placement, i),
            loss_on: opt(loss_on, i),
            layout: opt(layout, i),
            unmentioned: opt(unmentioned, i),
            label_form: opt(label_form, i),
            reasoning: opt(reasoning, i),
            paraphrase: paraphrase.value(i),
            tuning: tuning.value(i).into(),
            train_domain: opt(train_domain, i),
            test_domain: opt(test_domain, i),
            setting: opt(setting, i),
            train_size: train_size.value(i),
            seed: seed.value(i),
            decoding: decoding.value(i).into(),
            decode_seed: (!decode_seed.is_null(i)).then(|| decode_seed.value(i)),
            shots: shots.value(i),
            metric: metric.value(i).into(),
            value: value.value(i),
            ci_low: (!ci_low.is_null(i)).then(|| ci_low.value(i)),
            ci_high: (!ci_high.is_null(i)).then(|| ci_high.value(i)),
            n: n.value(i),
        })
        .collect())
}
