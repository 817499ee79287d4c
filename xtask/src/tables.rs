//! Result tables in the study's layout, as Markdown, CSV and HTML.

use crate::results::Row;
use std::collections::{BTreeMap, BTreeSet};

/// Selects the rows one PE measure is computed from.
type RowFilter = Box<dyn Fn(&Row) -> bool>;

/// Mean, spread and interval of a group of rows (seeds of one configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean over the group.
    pub mean: f64,
    /// Sample standard deviation (`None` for a single value).
    pub sd: Option<f64>,
    /// Lower end of the 95% interval: across seeds when there are several, else the row's own.
    pub lo: Option<f64>,
    /// Upper end of the 95% interval.
    pub hi: Option<f64>,
    /// Rows in the group.
    pub n: usize,
}

/// Aggregates values of several rows.
pub fn stat<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Option<Stat> {
    let rows: Vec<&Row> = rows.into_iter().collect();
    if rows.is_empty() {
        return None;
    }
    let n = rows.len();
    let mean = rows.iter().map(|r| r.value).sum::<f64>() / n as f64;
    if n == 1 {
        return Some(Stat {
            mean,
            sd: None,
            lo: rows[0].ci_low,
            hi: rows[0].ci_high,
            n,
        });
    }
    let var = rows.iter().map(|r| (r.value - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = 1.96 * sd / (n as f64).sqrt();
    Some(Stat {
        mean,
        sd: Some(sd),
        lo: Some(mean - half),
        hi: Some(mean + half),
        n,
    })
}

/// A table: a title, a header and rows of optional statistics under a row label.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// File stem (`a-synthetic-masa-smollm2-135m-n160`).
    pub id: String,
    /// Human title.
    pub title: String,
    /// Column header of the row labels.
    pub corner: String,
    /// Column headers.
    pub columns: Vec<String>,
    /// Row label and one cell per column.
    pub rows: Vec<(String, Vec<Option<Stat>>)>,
    /// Digits after the decimal point, per column.
    pub digits: Vec<usize>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

/// `v` with `d` digits after the point, without the sign of a value that rounds to zero
/// (a kappa of -1e-17 reads 0.000, not -0.000).
fn fixed(v: f64, d: usize) -> String {
    let text = format!("{v:.d$}");
    match text.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_string(),
        _ => text,
    }
}

impl Table {
    fn fmt(&self, s: &Option<Stat>, col: usize) -> String {
        let d = self.digits.get(col).copied().unwrap_or(3);
        match s {
            None => "–".into(),
            Some(s) => match s.sd {
                Some(sd) => format!("{} ± {}", fixed(s.mean, d), fixed(sd, d)),
                None => fixed(s.mean, d),
            },
        }
    }

    /// GitHub-flavoured Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |", self.title, self.corner);
        for c in &self.columns {
            out.push_str(&format!(" {c} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.columns.len()));
        out.push('\n');
        for (label, cells) in &self.rows {
            out.push_str(&format!("| {label} |"));
            for (i, c) in cells.iter().enumerate() {
                out.push_str(&format!(" {} |", self.fmt(c, i)));
            }
            out.push('\n');
        }
        for n in &self.notes {
            out.push_str(&format!("\n{n}\n"));
        }
        out
    }

    /// CSV with the means (and a `±` standard-deviation column where seeds vary).
    pub fn to_csv(&self) -> String {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let with_sd: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .any(|(_, c)| c[i].and_then(|s| s.sd).is_some())
            })
            .collect();
        let mut head = vec![quote(&self.corner)];
        for (i, c) in self.columns.iter().enumerate() {
            head.push(quote(c));
            if with_sd[i] {
                head.push(quote(&format!("{c} sd")));
            }
        }
        let mut out = head.join(",") + "\n";
        for (label, cells) in &self.rows {
            let mut line = vec![quote(label)];
            for (i, c) in cells.iter().enumerate() {
                line.push(c.map(|s| format!("{}", s.mean)).unwrap_or_default());
                if with_sd[i] {
                    line.push(
                        c.and_then(|s| s.sd)
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                    );
                }
            }
            out.push_str(&(line.join(",") + "\n"));
        }
        out
    }

    /// An HTML `<table>` (for the report).
    pub fn to_html(&self) -> String {
        let mut out = format!(
            "<h3 id=\"{}\">{}</h3>\n<table>\n<tr><th>{}</th>",
            esc(&self.id),
            esc(&self.title),
            esc(&self.corner)
        );
        for c in &self.columns {
            out.push_str(&format!("<th>{}</th>", esc(c)));
        }
        out.push_str("</tr>\n");
        for (label, cells) in &self.rows {
            out.push_str(&format!("<tr><td>{}</td>", esc(label)));
            for (i, c) in cells.iter().enumerate() {
                out.push_str(&format!("<td>{}</td>", esc(&self.fmt(c, i))));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        for n in &self.notes {
            out.push_str(&format!("<p class=\"note\">{}</p>\n", esc(n)));
        }
        out
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The study's design order; other designs follow alphabetically.
pub fn design_order(designs: impl IntoIterator<Item = String>) -> Vec<String> {
    const ORDER: [&str; 13] = [
        "baseline",
        "inst-first",
        "no-inst",
        "mi",
        "lines",
        "json",
        "ou",
        "num",
        "cot",
        "rcot",
        "heuristic",
        "ew-sde",
        "es-sde",
    ];
    let set: BTreeSet<String> = designs.into_iter().collect();
    let mut out: Vec<String> = ORDER
        .iter()
        .filter(|d| set.contains(**d))
        .map(|d| d.to_string())
        .collect();
    out.extend(set.into_iter().filter(|d| !ORDER.contains(&d.as_str())));
    out
}

/// A file-name-safe slug.
pub fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// The study's settings in table order.
pub const SETTINGS: [&str; 4] = ["D11", "D22", "D12", "D21"];

/// Distinct values of a key over rows, sorted.
fn distinct<K: Ord + Clone>(rows: &[&Row], key: impl Fn(&Row) -> K) -> Vec<K> {
    rows.iter()
        .map(|r| key(r))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Matrix A tables: one per (dataset, model, training size); rows designs; columns
/// D11/D22/D12/D21 × kappa / accuracy / format errors; means over seeds.
pub fn matrix_a(rows: &[Row]) -> Vec<Table> {
    let a: Vec<&Row> = rows.iter().filter(|r| r.matrix == "A").collect();
    let mut tables = Vec::new();
    for (dataset, model, size) in
        distinct(&a, |r| (r.dataset.clone(), r.model.clone(), r.train_size))
    {
        let group: Vec<&Row> = a
            .iter()
            .copied()
            .filter(|r| r.dataset == dataset && r.model == model && r.train_size == size)
            .collect();
        let settings: Vec<&str> = SETTINGS
            .iter()
            .copied()
            .filter(|s| group.iter().any(|r| r.setting.as_deref() == Some(*s)))
            .collect();
        let metrics = [
            ("kappa", "κ", 3),
            ("accuracy", "acc", 3),
            ("format_errors", "#fmt", 0),
        ];
        let mut columns = Vec::new();
        let mut digits = Vec::new();
        for s in &settings {
            for (_, short, d) in metrics {
                columns.push(format!("{s} {short}"));
                digits.push(d);
            }
        }
        let designs = design_order(group.iter().map(|r| r.design.clone()));
        let seeds = distinct(&group, |r| r.seed).len();
        let table_rows = designs
            .iter()
            .map(|d| {
                let cells = settings
                    .iter()
                    .flat_map(|s| metrics.iter().map(move |(m, _, _)| (*s, *m)))
                    .map(|(s, m)| {
                        stat(group.iter().copied().filter(|r| {
                            &r.design == d && r.setting.as_deref() == Some(s) && r.metric == m
                        }))
                    })
                    .collect();
                (d.clone(), cells)
            })
            .collect();
        tables.push(Table {
            id: slug(&format!("a-{dataset}-{model}-n{size}")),
            title: format!("Matrix A: {dataset}, {model}, {size} training samples"),
            corner: "design".into(),
            columns,
            rows: table_rows,
            digits,
            notes: vec![format!(
                "κ: the study's weighted kappa; #fmt: outputs with format errors. {seeds} seed(s){}; – = not run (No-Inst is in-domain only).",
                if seeds > 1 { ", mean ± sd" } else { "" }
            )],
        });
    }
    tables
}

/// The headline metric of a task.
pub fn primary_metric(task: &str) -> &'static str {
    if task == "masa" { "kappa" } else { "f1_soft" }
}

/// Matrix B tables: one per (task, dataset, model); rows designs; columns the primary
/// metric per training size, under sampled decoding (mean ± sd over seeds) and per
/// instruction paraphrase.
pub fn matrix_b(rows: &[Row]) -> Vec<Table> {
    let b: Vec<&Row> = rows.iter().filter(|r| r.matrix == "B").collect();
    let mut tables = Vec::new();
    for (task, dataset, model) in
        distinct(&b, |r| (r.task.clone(), r.dataset.clone(), r.model.clone()))
    {
        let m = primary_metric(&task);
        let group: Vec<&Row> = b
            .iter()
            .copied()
            .filter(|r| r.task == task && r.dataset == dataset && r.model == model)
            .collect();
        let sizes = distinct(&group, |r| r.train_size);
        let paraphrases: Vec<u32> = distinct(&group, |r| r.paraphrase)
            .into_iter()
            .filter(|&p| p > 0)
            .collect();
        type Pick = Box<dyn Fn(&Row) -> bool>;
        // Rows of the default wording at one training size, by decoding and metric.
        let at_size = |decoding: &'static str, s: u64, metric: &str| -> Pick {
            let metric = metric.to_string();
            Box::new(move |r: &Row| {
                r.decoding == decoding
                    && r.paraphrase == 0
                    && r.train_size == s
                    && r.metric == metric
            })
        };
        let size_of = |decoding: &str| {
            group
                .iter()
                .find(|r| r.decoding == decoding)
                .map(|r| r.train_size)
        };
        let sampled_size = size_of("sample");
        let unpenalized_size = size_of("greedy-no-penalty");
        let mut columns: Vec<(String, usize, Pick)> = Vec::new();
        for &s in &sizes {
            columns.push((format!("{m} n={s}"), 3, at_size("greedy", s, m)));
            columns.push((
                format!("#fmt n={s}"),
                0,
                at_size("greedy", s, "format_errors"),
            ));
        }
        if let Some(s) = sampled_size {
            columns.push((format!("{m} sampled n={s}"), 3, at_size("sample", s, m)));
        }
        if let Some(s) = unpenalized_size {
            columns.push((
                format!("{m} no penalty n={s}"),
                3,
                at_size("greedy-no-penalty", s, m),
            ));
        }
        for &p in &paraphrases {
            let mm = m.to_string();
            columns.push((
                format!("{m} paraphrase {p}"),
                3,
                Box::new(move |r: &Row| {
                    r.decoding == "greedy" && r.paraphrase == p && r.metric == mm
                }),
            ));
        }
        let designs = design_order(group.iter().map(|r| r.design.clone()));
        let table_rows = designs
            .iter()
            .map(|d| {
                let cells = columns
                    .iter()
                    .map(|(_, _, pick)| {
                        stat(group.iter().copied().filter(|r| &r.design == d && pick(r)))
                    })
                    .collect();
                (d.clone(), cells)
            })
            .collect();
        let name = if task == "masa" {
            "review11 (MASA, all aspects)".to_string()
        } else {
            task.clone()
        };
        tables.push(Table {
            id: slug(&format!("b-{task}-{dataset}-{model}")),
            title: format!("Matrix B: {name} on {dataset}, {model}"),
            corner: "design".into(),
            digits: columns.iter().map(|c| c.1).collect(),
            columns: columns.into_iter().map(|c| c.0).collect(),
            rows: table_rows,
            notes: vec![format!(
                "{m}: {}.{}{}",
                if m == "kappa" {
                    "the study's weighted kappa"
                } else {
                    "the study's soft F1"
                },
                if sampled_size.is_some() {
                    " Sampled: mean ± sd over decoding seeds of the same adapters."
                } else {
                    ""
                },
                if unpenalized_size.is_some() {
                    " No penalty: greedy with the repetition penalty off, same adapters."
                } else {
                    ""
                }
            )],
        });
    }
    tables
}

/// Spearman rank correlation with average ranks for ties; `None` with fewer than three
/// pairs or a constant side.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 3 {
        return None;
    }
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0 + 1.0;
            for k in i..=j {
                r[idx[k]] = avg;
            }
            i = j + 1;
        }
        r
    }
    let x = ranks(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let y = ranks(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    if vx == 0.0 || vy == 0.0 {
        return None;
    }
    Some(cov / (vx * vy).sqrt())
}

/// One PE-vs-SDE comparison: per design, the PE measures and the fine-tuned score.
#[derive(Debug, Clone, PartialEq)]
pub struct PeComparison {
    /// Dataset.
    pub dataset: String,
    /// Model.
    pub model: String,
    /// Domain analysed (`d1`, `d2`).
    pub domain: String,
    /// Names of the PE measures, in column order.
    pub measures: Vec<String>,
    /// Per design: the PE measures (by column) and the fine-tuned in-domain kappa.
    pub designs: BTreeMap<String, (Vec<Option<f64>>, Option<f64>)>,
}

/// Gathers the matrix C measures and the matching matrix A scores (in-domain, the largest
/// training size, mean over seeds).
pub fn pe_comparisons(rows: &[Row]) -> Vec<PeComparison> {
    let c: Vec<&Row> = rows.iter().filter(|r| r.matrix == "C").collect();
    let mut out = Vec::new();
    for (dataset, model, domain) in distinct(&c, |r| {
        (
            r.dataset.clone(),
            r.model.clone(),
            r.train_domain.clone().unwrap_or_default(),
        )
    }) {
        let group: Vec<&Row> = c
            .iter()
            .copied()
            .filter(|r| {
                r.dataset == dataset
                    && r.model == model
                    && r.train_domain.as_deref() == Some(domain.as_str())
            })
            .collect();
        let mut measures: Vec<(String, RowFilter)> = vec![
            (
                "prompt PPL".into(),
                Box::new(|r: &Row| r.metric == "prompt_ppl"),
            ),
            (
                "output PPL".into(),
                Box::new(|r: &Row| r.metric == "output_ppl"),
            ),
            (
                "zero-shot κ".into(),
                Box::new(|r: &Row| r.decoding == "greedy" && r.shots == 0 && r.metric == "kappa"),
            ),
        ];
        for k in distinct(&group, |r| r.shots).into_iter().filter(|&k| k > 0) {
            measures.push((
                format!("{k}-shot κ"),
                Box::new(move |r: &Row| {
                    r.decoding == "greedy" && r.shots == k && r.metric == "kappa"
                }),
            ));
        }
        measures.retain(|(_, pick)| group.iter().any(|r| pick(r)));
        let a: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                r.matrix == "A"
                    && r.dataset == dataset
                    && r.model == model
                    && r.metric == "kappa"
                    && r.train_domain.as_deref() == Some(domain.as_str())
                    && r.test_domain.as_deref() == Some(domain.as_str())
            })
            .collect();
        let top = a.iter().map(|r| r.train_size).max();
        let mut designs = BTreeMap::new();
        for d in design_order(group.iter().map(|r| r.design.clone())) {
            let pe = measures
                .iter()
                .map(|(_, pick)| {
                    stat(group.iter().copied().filter(|r| r.design == d && pick(r))).map(|s| s.mean)
                })
                .collect();
            let tuned = stat(
                a.iter()
                    .copied()
                    .filter(|r| r.design == d && Some(r.train_size) == top),
            )
            .map(|s| s.mean);
            designs.insert(d, (pe, tuned));
        }
        out.push(PeComparison {
            dataset,
            model,
            domain,
            measures: measures.into_iter().map(|m| m.0).collect(),
            designs,
        });
    }
    out
}

/// Matrix C tables: per comparison, rows designs with the PE measures and the fine-tuned
/// kappa, then a row of Spearman correlations with the fine-tuned kappa.
pub fn matrix_c(rows: &[Row]) -> Vec<Table> {
    pe_comparisons(rows)
        .into_iter()
        .map(|cmp| {
            let mut columns = cmp.measures.clone();
            columns.push("fine-tuned κ".into());
            let mut digits = vec![3; columns.len()];
            for (i, c) in columns.iter().enumerate() {
                if c.contains("PPL") {
                    digits[i] = 2;
                }
            }
            let value = |v: Option<f64>| {
                v.map(|mean| Stat {
                    mean,
                    sd: None,
                    lo: None,
                    hi: None,
                    n: 1,
                })
            };
            let order = design_order(cmp.designs.keys().cloned());
            let mut table_rows: Vec<(String, Vec<Option<Stat>>)> = order
                .iter()
                .map(|d| {
                    let (pe, tuned) = &cmp.designs[d];
                    let mut cells: Vec<Option<Stat>> = pe.iter().map(|v| value(*v)).collect();
                    cells.push(value(*tuned));
                    (d.clone(), cells)
                })
                .collect();
            let rho: Vec<Option<Stat>> = (0..cmp.measures.len())
                .map(|i| {
                    let pairs: Vec<(f64, f64)> = cmp
                        .designs
                        .values()
                        .filter_map(|(pe, t)| Some((pe[i]?, (*t)?)))
                        .collect();
                    value(spearman(&pairs))
                })
                .chain([None])
                .collect();
            table_rows.push(("Spearman ρ with fine-tuned κ".into(), rho));
            Table {
                id: slug(&format!("c-{}-{}-{}", cmp.dataset, cmp.model, cmp.domain)),
                title: format!("Matrix C: PE measures vs fine-tuning, {} {}, {}", cmp.dataset, cmp.domain, cmp.model),
                corner: "design".into(),
                columns,
                rows: table_rows,
                digits,
                notes: vec!["Untuned model. Fine-tuned κ: matrix A, in-domain, largest training size. A negative ρ for a perplexity means lower-perplexity designs fine-tune better.".into()],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_hand_computed_values() {
        let perfect = [(1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)];
        assert!((spearman(&perfect).unwrap() - 1.0).abs() < 1e-12);
        let reversed = [(1.0, 4.0), (2.0, 3.0), (3.0, 2.0), (4.0, 1.0)];
        assert!((spearman(&reversed).unwrap() + 1.0).abs() < 1e-12);
        // x ranks 1,2,3,4,5; y ranks 2,1,4,3,5: d² = 1+1+1+1+0 = 4, ρ = 1 - 6·4/(5·24) = 0.8.
        let swapped = [(1.0, 2.0), (2.0, 1.0), (3.0, 4.0), (4.0, 3.0), (5.0, 5.0)];
        assert!((spearman(&swapped).unwrap() - 0.8).abs() < 1e-12);
        // Ties get average ranks: y ranks 1.5,1.5,3 against 1,2,3 → ρ = 0.8660.
        let tied = [(1.0, 5.0), (2.0, 5.0), (3.0, 7.0)];
        assert!((spearman(&tied).unwrap() - 0.866_025_403_784_438_6).abs() < 1e-12);
        assert_eq!(spearman(&[(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)]), None);
        assert_eq!(spearman(&[(1.0, 1.0), (2.0, 2.0)]), None);
    }

    #[test]
    fn values_that_round_to_zero_have_no_sign() {
        assert_eq!(fixed(-1e-17, 3), "0.000");
        assert_eq!(fixed(-0.0004, 3), "0.000");
        assert_eq!(fixed(-0.0005001, 3), "-0.001");
        assert_eq!(fixed(0.25, 2), "0.25");
        assert_eq!(fixed(-3.0, 0), "-3");
        assert_eq!(fixed(-0.2, 0), "0");
    }

    #[test]
    fn designs_follow_the_study_order() {
        let d = design_order([
            "zeta".into(),
            "lines".into(),
            "baseline".into(),
            "es-sde".into(),
        ]);
        assert_eq!(d, ["baseline", "lines", "es-sde", "zeta"]);
        assert_eq!(
            slug("A synthetic/masa hf:Qwen/X"),
            "a-synthetic-masa-hf-qwen-x"
        );
    }
}
