//! SVG plots (plotters): per-option bars with intervals, in-domain vs out-of-domain, and
//! PE measures vs fine-tuned scores.

use crate::results::Row;
use crate::tables::{self, PeComparison, Stat, design_order, slug, stat};
use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One rendered plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File stem.
    pub id: String,
    /// Human title.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

const ID_COLOR: RGBColor = RGBColor(31, 119, 180);
const OOD_COLOR: RGBColor = RGBColor(255, 127, 14);

/// A bar chart of categories with one or more series, each value with an optional interval.
fn bars(
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[(&str, RGBColor, Vec<Option<Stat>>)],
) -> Result<String> {
    let mut svg = String::new();
    {
        let width = (120 + 70 * categories.len() as u32).max(480);
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let top = series
            .iter()
            .flat_map(|s| s.2.iter().flatten())
            .map(|s| s.hi.unwrap_or(s.mean).max(s.mean))
            .fold(0.0f64, f64::max);
        let bottom = series
            .iter()
            .flat_map(|s| s.2.iter().flatten())
            .map(|s| s.lo.unwrap_or(s.mean).min(s.mean))
            .fold(0.0f64, f64::min);
        // Scores live in [-1, 1]: show 0..1 unless a value or interval leaves it, and keep a
        // readable span when every value is near zero (a model that learned nothing).
        let y_max = if top <= 1.0 { 1.0 } else { top * 1.1 };
        let y_min = if bottom < 0.0 {
            (bottom * 1.1).min(-0.05)
        } else {
            0.0
        };
        let n = categories.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y_min..y_max)
            .map_err(err)?;
        let cats = categories.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .max_light_lines(1)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .x_labels(n + 1)
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    cats.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        let k = series.len().max(1) as f64;
        let width = 0.8 / k;
        for (j, (name, color, values)) in series.iter().enumerate() {
            let offset = -0.4 + width * j as f64;
            let color = *color;
            chart
                .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                    let v = (*v)?;
                    let x0 = i as f64 + offset;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.92, v.mean)],
                        color.filled(),
                    ))
                }))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            chart
                .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                    let v = (*v)?;
                    let (lo, hi) = (v.lo?, v.hi?);
                    let xc = i as f64 + offset + width * 0.46;
                    Some(PathElement::new(
                        vec![(xc, lo), (xc, hi)],
                        BLACK.stroke_width(2),
                    ))
                }))
                .map_err(err)?;
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A labelled scatter plot.
fn scatter(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(String, f64, f64)],
    diagonal: bool,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let range = |v: Vec<f64>| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                return (0.0, 1.0);
            }
            let pad = ((hi - lo) * 0.15).max(0.02);
            (lo - pad, hi + pad)
        };
        let (mut x0, mut x1) = range(points.iter().map(|p| p.1).collect());
        let (mut y0, mut y1) = range(points.iter().map(|p| p.2).collect());
        if diagonal {
            (x0, y0) = (x0.min(y0), x0.min(y0));
            (x1, y1) = (x1.max(y1), x1.max(y1));
        }
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        if diagonal {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x0, y0), (x1, y1)],
                    BLACK.mix(0.4),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(points.iter().map(|(name, x, y)| {
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 4, ID_COLOR.filled())
                    + Text::new(name.clone(), (6, -6), ("sans-serif", 12))
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Matrix A plots per (dataset, model, size): kappa bars per design (in-domain and
/// out-of-domain, with intervals) and an in-domain vs out-of-domain scatter.
pub fn matrix_a(rows: &[Row]) -> Result<Vec<Plot>> {
    let a: Vec<&Row> = rows
        .iter()
        .filter(|r| r.matrix == "A" && r.metric == "kappa")
        .collect();
    let keys: std::collections::BTreeSet<(String, String, u64)> = a
        .iter()
        .map(|r| (r.dataset.clone(), r.model.clone(), r.train_size))
        .collect();
    let mut plots = Vec::new();
    for (dataset, model, size) in keys {
        let group: Vec<&Row> = a
            .iter()
            .copied()
            .filter(|r| r.dataset == dataset && r.model == model && r.train_size == size)
            .collect();
        let designs = design_order(group.iter().map(|r| r.design.clone()));
        let pick = |d: &str, ood: bool| {
            stat(
                group
                    .iter()
                    .copied()
                    .filter(|r| r.design == d && (r.train_domain != r.test_domain) == ood),
            )
        };
        let id: Vec<Option<Stat>> = designs.iter().map(|d| pick(d, false)).collect();
        let ood: Vec<Option<Stat>> = designs.iter().map(|d| pick(d, true)).collect();
        let title = format!("{dataset}, {model}, n={size}: κ per design");
        plots.push(Plot {
            id: slug(&format!("a-bars-{dataset}-{model}-n{size}")),
            svg: bars(
                &title,
                "weighted κ",
                &designs,
                &[
                    ("in-domain", ID_COLOR, id.clone()),
                    ("out-of-domain", OOD_COLOR, ood.clone()),
                ],
            )?,
            title,
        });
        let points: Vec<(String, f64, f64)> = designs
            .iter()
            .zip(id.iter().zip(&ood))
            .filter_map(|(d, (i, o))| Some((d.clone(), i.as_ref()?.mean, o.as_ref()?.mean)))
            .collect();
        if !points.is_empty() {
            let title = format!("{dataset}, {model}, n={size}: in-domain vs out-of-domain κ");
            plots.push(Plot {
                id: slug(&format!("a-id-ood-{dataset}-{model}-n{size}")),
                svg: scatter(&title, "in-domain κ", "out-of-domain κ", &points, true)?,
                title,
            });
        }
    }
    Ok(plots)
}

/// Matrix B plots per (task, dataset, model): primary metric per design with intervals.
pub fn matrix_b(rows: &[Row]) -> Result<Vec<Plot>> {
    let b: Vec<&Row> = rows
        .iter()
        .filter(|r| r.matrix == "B" && r.decoding == "greedy" && r.paraphrase == 0)
        .collect();
    let keys: std::collections::BTreeSet<(String, String, String)> = b
        .iter()
        .map(|r| (r.task.clone(), r.dataset.clone(), r.model.clone()))
        .collect();
    let mut plots = Vec::new();
    for (task, dataset, model) in keys {
        let m = tables::primary_metric(&task);
        let group: Vec<&Row> = b
            .iter()
            .copied()
            .filter(|r| r.task == task && r.dataset == dataset && r.model == model && r.metric == m)
            .collect();
        let sizes: std::collections::BTreeSet<u64> = group.iter().map(|r| r.train_size).collect();
        let designs = design_order(group.iter().map(|r| r.design.clone()));
        let palette = [
            ID_COLOR,
            OOD_COLOR,
            RGBColor(44, 160, 44),
            RGBColor(214, 39, 40),
            RGBColor(148, 103, 189),
        ];
        let labels: Vec<String> = sizes.iter().map(|s| format!("n={s}")).collect();
        let series: Vec<(&str, RGBColor, Vec<Option<Stat>>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    labels[i].as_str(),
                    palette[i % palette.len()],
                    designs
                        .iter()
                        .map(|d| {
                            stat(
                                group
                                    .iter()
                                    .copied()
                                    .filter(|r| &r.design == d && r.train_size == *s),
                            )
                        })
                        .collect(),
                )
            })
            .collect();
        let title = format!("{task} on {dataset}, {model}: {m} per design");
        plots.push(Plot {
            id: slug(&format!("b-{task}-{dataset}-{model}")),
            svg: bars(&title, m, &designs, &series)?,
            title,
        });
    }
    Ok(plots)
}

/// Matrix C plots: for each PE measure, designs placed by the measure and the fine-tuned κ.
pub fn matrix_c(comparisons: &[PeComparison]) -> Result<Vec<Plot>> {
    let mut plots = Vec::new();
    for cmp in comparisons {
        for (i, measure) in cmp.measures.iter().enumerate() {
            let points: Vec<(String, f64, f64)> = cmp
                .designs
                .iter()
                .filter_map(|(d, (pe, t))| Some((d.clone(), pe[i]?, (*t)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let rho = tables::spearman(&points.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>());
            let title = format!(
                "{} {}, {}: {measure} vs fine-tuned κ (ρ = {})",
                cmp.dataset,
                cmp.domain,
                cmp.model,
                rho.map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "n/a".into())
            );
            plots.push(Plot {
                id: slug(&format!(
                    "c-pe-{}-{}-{}-{measure}",
                    cmp.dataset, cmp.model, cmp.domain
                )),
                svg: scatter(&title, measure, "fine-tuned κ", &points, false)?,
                title,
            });
        }
    }
    Ok(plots)
}
