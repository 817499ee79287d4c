//! Everything written from finished cells: `results.parquet`, tables, plots, `report.html`.

use crate::cell::{CellOutcome, CellSpec};
use crate::plots;
use crate::results::{self, Row};
use crate::store::write_atomic;
use crate::tables::{self, esc};
use anyhow::Result;
use std::path::Path;

/// Context shown at the top of the report.
#[derive(Debug, Clone, Default)]
pub struct ReportMeta {
    /// Preset or description of the run.
    pub title: String,
    /// Runner name (`real`, `fake`).
    pub runner: String,
    /// Cells planned (0 when unknown, e.g. after a merge).
    pub planned: usize,
    /// Cells that failed in the last run, with their errors.
    pub failed: Vec<(String, String)>,
    /// The resolved knobs as TOML, if known.
    pub knobs_toml: Option<String>,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct ReportFiles {
    /// Rows in `results.parquet`.
    pub rows: usize,
    /// Table files (Markdown and CSV), relative to the output folder.
    pub tables: Vec<String>,
    /// Plot files, relative to the output folder.
    pub plots: Vec<String>,
}

/// Writes every output for `cells` into `out`.
pub fn write_all(
    out: &Path,
    cells: &[(CellSpec, CellOutcome)],
    meta: &ReportMeta,
) -> Result<ReportFiles> {
    let rows: Vec<Row> = cells
        .iter()
        .flat_map(|(c, o)| results::rows(c, o))
        .collect();
    results::write_parquet(&out.join("results.parquet"), &rows)?;
    let mut files = ReportFiles {
        rows: rows.len(),
        ..ReportFiles::default()
    };

    let sections = [
        ("A", "Matrix A: the option study", tables::matrix_a(&rows)),
        (
            "B",
            "Matrix B: ES-SDE validation and robustness",
            tables::matrix_b(&rows),
        ),
        (
            "C",
            "Matrix C: prompt-engineering measures vs fine-tuning",
            tables::matrix_c(&rows),
        ),
    ];
    let mut all_md = String::from("# Results\n\n");
    for (_, heading, ts) in &sections {
        if ts.is_empty() {
            continue;
        }
        all_md.push_str(&format!("## {heading}\n\n"));
        for t in ts {
            let md = t.to_markdown();
            all_md.push_str(&md);
            all_md.push('\n');
            for (ext, body) in [("md", md), ("csv", t.to_csv())] {
                let rel = format!("tables/{}.{ext}", t.id);
                write_atomic(&out.join(&rel), body.as_bytes())?;
                files.tables.push(rel);
            }
        }
    }
    write_atomic(&out.join("tables.md"), all_md.as_bytes())?;

    let comparisons = tables::pe_comparisons(&rows);
    let plot_sections = [
        ("A", plots::matrix_a(&rows)?),
        ("B", plots::matrix_b(&rows)?),
        ("C", plots::matrix_c(&comparisons)?),
    ];
    for (_, ps) in &plot_sections {
        for p in ps {
            let rel = format!("plots/{}.svg", p.id);
            write_atomic(&out.join(&rel), p.svg.as_bytes())?;
            files.plots.push(rel);
        }
    }

    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Sample design study</title>\n<style>\nbody{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}\ntable{border-collapse:collapse;margin:0.5em 0 1em}\ntd,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\ntd:first-child,th:first-child{text-align:left}\n.note{color:#555;font-size:90%}\nfigure{display:inline-block;margin:0.5em}\npre{background:#f6f6f6;padding:0.5em;overflow:auto}\n</style></head><body>\n",
    );
    html.push_str(&format!(
        "<h1>Sample design study: {}</h1>\n",
        esc(&meta.title)
    ));
    html.push_str(&format!(
        "<p>{} finished cells{}; runner <code>{}</code>; {} result rows in <code>results.parquet</code>.</p>\n",
        cells.len(),
        if meta.planned > 0 { format!(" of {} planned", meta.planned) } else { String::new() },
        esc(&meta.runner),
        rows.len()
    ));
    if !meta.failed.is_empty() {
        html.push_str("<h2>Failed cells</h2>\n<ul>\n");
        for (label, e) in &meta.failed {
            html.push_str(&format!("<li><b>{}</b>: {}</li>\n", esc(label), esc(e)));
        }
        html.push_str("</ul>\n");
    }
    for ((letter, heading, ts), (_, ps)) in sections.iter().zip(&plot_sections) {
        if ts.is_empty() && ps.is_empty() {
            continue;
        }
        html.push_str(&format!(
            "<h2 id=\"matrix-{}\">{}</h2>\n",
            letter.to_lowercase(),
            esc(heading)
        ));
        for t in ts {
            html.push_str(&t.to_html());
        }
        for p in ps {
            html.push_str(&format!(
                "<figure>{}<figcaption>{}</figcaption></figure>\n",
                strip_xml_decl(&p.svg),
                esc(&p.title)
            ));
        }
    }
    if let Some(k) = &meta.knobs_toml {
        html.push_str(&format!("<h2>Knobs</h2>\n<pre>{}</pre>\n", esc(k)));
    }
    html.push_str("</body></html>\n");
    write_atomic(&out.join("report.html"), html.as_bytes())?;
    Ok(files)
}

fn strip_xml_decl(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}
