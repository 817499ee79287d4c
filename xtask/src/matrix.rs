//! Expands the knobs into the study's cells (digest section 8), and splits them into shards.

use crate::cell::{CellSpec, Decoding, EvalSpec, Matrix};
use crate::cost;
use crate::designs;
use crate::knobs::{GenerateKnobs, Knobs, parse_setting};
use anyhow::{Result, anyhow, bail};
use std::collections::BTreeSet;

/// All cells of the enabled matrices, in a deterministic order, without duplicates.
pub fn cells(knobs: &Knobs, code_version: &str) -> Result<Vec<CellSpec>> {
    let mut out = Vec::new();
    if knobs.a.enabled {
        matrix_a(knobs, code_version, &mut out)?;
    }
    if knobs.b.enabled {
        matrix_b(knobs, code_version, &mut out)?;
    }
    if knobs.c.enabled {
        matrix_c(knobs, code_version, &mut out)?;
    }
    let mut seen = BTreeSet::new();
    out.retain(|c| seen.insert(c.hash()));
    Ok(out)
}

fn models<'a>(knobs: &'a Knobs, own: &'a [String]) -> &'a [String] {
    if own.is_empty() { &knobs.models } else { own }
}

fn greedy(domain: Option<&str>) -> EvalSpec {
    EvalSpec {
        test_domain: domain.map(str::to_string),
        decoding: Decoding::Greedy,
        shots: 0,
    }
}

/// Matrix A: one cell per (dataset, design, training domain, size, model, seed); the cell's
/// adapter is evaluated on every test domain its settings pair with that training domain.
fn matrix_a(knobs: &Knobs, code_version: &str, out: &mut Vec<CellSpec>) -> Result<()> {
    let a = &knobs.a;
    let settings = a
        .settings
        .iter()
        .map(|s| parse_setting(s))
        .collect::<Result<Vec<_>>>()?;
    let mut train_domains: Vec<&str> = Vec::new();
    for (train, _) in &settings {
        if !train_domains.contains(&train.as_str()) {
            train_domains.push(train);
        }
    }
    for dataset in &knobs.data.masa {
        for design in &a.designs {
            let id_only =
                a.in_domain_only.contains(design) || !designs::has_instruction("masa", design);
            for &train_domain in &train_domains {
                let evals: Vec<EvalSpec> = settings
                    .iter()
                    .filter(|(tr, te)| tr == train_domain && (!id_only || tr == te))
                    .map(|(_, te)| greedy(Some(te)))
                    .collect();
                if evals.is_empty() {
                    continue;
                }
                for &size in &a.train_sizes {
                    for model in models(knobs, &a.models) {
                        for &seed in &knobs.seeds {
                            out.push(CellSpec {
                                matrix: Matrix::A,
                                task: "masa".into(),
                                dataset: dataset.clone(),
                                language: knobs.data.language.clone(),
                                design: design.clone(),
                                paraphrase: 0,
                                model: model.clone(),
                                train_domain: Some(train_domain.to_string()),
                                train_size: size,
                                test_size: knobs.data.test_size,
                                data_seed: knobs.data.data_seed,
                                seed,
                                train: Some(knobs.train.clone()),
                                generate: knobs.generate.clone(),
                                evals: evals.clone(),
                                code_version: code_version.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Matrix B: per task, design, model and seed: the main comparison (greedy plus the sampled
/// decodings), the size sweep, and the instruction paraphrases.
fn matrix_b(knobs: &Knobs, code_version: &str, out: &mut Vec<CellSpec>) -> Result<()> {
    let b = &knobs.b;
    for task_name in &b.tasks {
        let (task, dataset, domain) = match task_name.as_str() {
            "ner" => ("ner", &knobs.data.ner, None),
            "event" => ("event", &knobs.data.event, None),
            "review11" => ("masa", &knobs.data.review11, Some("all")),
            other => bail!("b.tasks: unknown task `{other}`"),
        };
        for design in &b.designs {
            for model in models(knobs, &b.models) {
                for &seed in &knobs.seeds {
                    let cell = |size: usize, paraphrase: u32, evals: Vec<EvalSpec>| CellSpec {
                        matrix: Matrix::B,
                        task: task.into(),
                        dataset: dataset.clone(),
                        language: knobs.data.language.clone(),
                        design: design.clone(),
                        paraphrase,
                        model: model.clone(),
                        train_domain: domain.map(str::to_string),
                        train_size: size,
                        test_size: knobs.data.test_size,
                        data_seed: knobs.data.data_seed,
                        seed,
                        train: Some(knobs.train.clone()),
                        generate: knobs.generate.clone(),
                        evals,
                        code_version: code_version.to_string(),
                    };
                    let mut main = vec![greedy(domain)];
                    main.extend(b.sampling_seeds.iter().map(|&s| EvalSpec {
                        test_domain: domain.map(str::to_string),
                        decoding: Decoding::Sample { seed: s },
                        shots: 0,
                    }));
                    if b.greedy_without_penalty {
                        main.push(EvalSpec {
                            test_domain: domain.map(str::to_string),
                            decoding: Decoding::GreedyNoPenalty,
                            shots: 0,
                        });
                    }
                    out.push(cell(b.train_size, 0, main));
                    for &size in b.size_sweep.iter().filter(|&&s| s != b.train_size) {
                        out.push(cell(size, 0, vec![greedy(domain)]));
                    }
                    for &p in b.paraphrases.iter().filter(|&&p| p != 0) {
                        out.push(cell(b.train_size, p, vec![greedy(domain)]));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Matrix C: per MASA dataset, design, domain and model, one untuned cell with the perplexity
/// evaluation, zero-shot and each k-shot ICL evaluation.
fn matrix_c(knobs: &Knobs, code_version: &str, out: &mut Vec<CellSpec>) -> Result<()> {
    let c = &knobs.c;
    for dataset in &knobs.data.masa {
        for design in &c.designs {
            for domain in &c.domains {
                if !["d1", "d2"].contains(&domain.as_str()) {
                    bail!("c.domains: `{domain}` (expected d1 or d2)");
                }
                let d = Some(domain.as_str());
                let mut evals = Vec::new();
                if c.perplexity {
                    evals.push(EvalSpec {
                        test_domain: d.map(str::to_string),
                        decoding: Decoding::Score,
                        shots: 0,
                    });
                }
                if c.zero_shot {
                    evals.push(greedy(d));
                }
                for &k in c.shots.iter().filter(|&&k| k > 0) {
                    evals.push(EvalSpec {
                        test_domain: d.map(str::to_string),
                        decoding: Decoding::Greedy,
                        shots: k,
                    });
                }
                if evals.is_empty() {
                    continue;
                }
                for model in models(knobs, &c.models) {
                    out.push(CellSpec {
                        matrix: Matrix::C,
                        task: "masa".into(),
                        dataset: dataset.clone(),
                        language: knobs.data.language.clone(),
                        design: design.clone(),
                        paraphrase: 0,
                        model: model.clone(),
                        train_domain: Some(domain.clone()),
                        train_size: 0,
                        test_size: knobs.data.test_size,
                        data_seed: knobs.data.data_seed,
                        seed: knobs.seeds[0],
                        train: None,
                        generate: GenerateKnobs {
                            max_new_tokens: knobs.generate.untuned_max_new_tokens,
                            ..knobs.generate.clone()
                        },
                        evals: evals.clone(),
                        code_version: code_version.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A shard `k/n` (k counted from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard's index, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Shard> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("--shard `{s}`: expected k/n, e.g. 0/4"))?;
        let index: usize = k
            .trim()
            .parse()
            .map_err(|_| anyhow!("--shard `{s}`: k is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| anyhow!("--shard `{s}`: n is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard `{s}`: need 0 <= k < n");
        }
        Ok(Shard { index, count })
    }
}

/// Splits cells into `count` shards deterministically and with balanced estimated time:
/// cells are taken longest first (ties by id) and each goes to the least loaded shard.
/// Returns, for each cell in input order, its shard index.
pub fn assign_shards(
    cells: &[CellSpec],
    count: usize,
    cost: &crate::knobs::CostKnobs,
) -> Vec<usize> {
    let mut order: Vec<(f64, String, usize)> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| (cost::estimate(c, cost).seconds, c.id(), i))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut load = vec![0.0f64; count.max(1)];
    let mut shard_of = vec![0; cells.len()];
    for (secs, _, i) in order {
        let (best, _) = load
            .iter()
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |(bi, bl), (j, &l)| if l < bl { (j, l) } else { (bi, bl) },
            );
        load[best] += secs;
        shard_of[i] = best;
    }
    shard_of
}

/// The cells of one shard, in input order.
pub fn shard_cells(
    cells: Vec<CellSpec>,
    shard: Option<Shard>,
    cost: &crate::knobs::CostKnobs,
) -> Vec<CellSpec> {
    match shard {
        None => cells,
        Some(s) => {
            let owner = assign_shards(&cells, s.count, cost);
            cells
                .into_iter()
                .zip(owner)
                .filter(|(_, o)| *o == s.index)
                .map(|(c, _)| c)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(preset: &str) -> Knobs {
        Knobs::resolve(preset, None, &[]).unwrap()
    }

    #[test]
    fn matrix_a_has_the_study_shape() {
        let k = knobs("paper");
        let mut only_a = k.clone();
        only_a.b.enabled = false;
        only_a.c.enabled = false;
        let cells = cells(&only_a, "v").unwrap();
        // 10 designs × 2 training domains × 2 sizes × 2 models × 2 datasets × 1 seed.
        assert_eq!(cells.len(), 10 * 2 * 2 * 2 * 2);
        let evals: usize = cells.iter().map(|c| c.evals.len()).sum();
        // Nine designs evaluated on both domains, No-Inst in-domain only.
        assert_eq!(evals, (9 * 2 + 1) * 2 * 2 * 2 * 2);
        for c in cells.iter().filter(|c| c.design == "no-inst") {
            assert_eq!(c.evals.len(), 1);
            assert_eq!(c.evals[0].test_domain, c.train_domain);
        }
    }

    /// Fine-tuned cells answer within the study's 200 new tokens (CoT answers need ~170);
    /// untuned ones (matrix C) within its 128.
    #[test]
    fn untuned_cells_get_the_untuned_token_budget() {
        let cells = cells(&knobs("default"), "v").unwrap();
        for c in &cells {
            let want = if c.train.is_some() { 200 } else { 128 };
            assert_eq!(
                c.generate.max_new_tokens, want,
                "{:?} {}",
                c.matrix, c.design
            );
        }
        assert!(cells.iter().any(|c| c.train.is_none()));
    }

    #[test]
    fn matrix_b_and_c_have_their_sweeps() {
        let k = knobs("paper");
        let all = cells(&k, "v").unwrap();
        let b: Vec<_> = all.iter().filter(|c| c.matrix == Matrix::B).collect();
        // 3 tasks × 3 designs × 2 models × (main + 2 sizes + 2 paraphrases).
        assert_eq!(b.len(), 3 * 3 * 2 * 5);
        let main = b
            .iter()
            .find(|c| c.train_size == 500 && c.paraphrase == 0)
            .unwrap();
        assert_eq!(main.evals.len(), 6, "greedy + 5 sampling seeds");
        let c: Vec<_> = all.iter().filter(|c| c.matrix == Matrix::C).collect();
        // datasets × designs × domains × models
        #[allow(clippy::identity_op)]
        let expected = 2 * 10 * 1 * 2;
        assert_eq!(c.len(), expected);
        assert!(c.iter().all(|c| c.train.is_none() && c.evals.len() == 3));
    }

    #[test]
    fn the_penalty_free_decoding_is_one_more_eval_of_bs_main_adapters() {
        let plain = cells(&knobs("default"), "v").unwrap();
        let no_penalty = |c: &CellSpec| {
            c.evals
                .iter()
                .any(|e| e.decoding == Decoding::GreedyNoPenalty)
        };
        assert!(!plain.iter().any(no_penalty), "off by default");
        let mut k = knobs("default");
        k.b.greedy_without_penalty = true;
        let with = cells(&k, "v").unwrap();
        assert_eq!(with.len(), plain.len());
        for (c, p) in with.iter().zip(&plain) {
            let main = c.matrix == Matrix::B && c.train_size == 120 && c.paraphrase == 0;
            assert_eq!(no_penalty(c), main, "{}", c.label());
            if main {
                assert_eq!(c.evals.len(), p.evals.len() + 1);
                assert_eq!(c.evals[..p.evals.len()], p.evals[..]);
            } else {
                assert_eq!(c, p, "only B's main cells change");
            }
        }
    }

    #[test]
    fn cells_are_unique_and_ordered_deterministically() {
        let k = knobs("default");
        let a = cells(&k, "v").unwrap();
        let b = cells(&k, "v").unwrap();
        assert_eq!(a, b);
        let ids: BTreeSet<String> = a.iter().map(|c| c.id()).collect();
        assert_eq!(ids.len(), a.len());
    }

    #[test]
    fn shards_cover_every_cell_exactly_once() {
        let k = knobs("paper");
        let all = cells(&k, "v").unwrap();
        for n in [1, 2, 3, 7, 50] {
            let mut seen: Vec<String> = Vec::new();
            let mut loads = Vec::new();
            for i in 0..n {
                let part = shard_cells(all.clone(), Some(Shard { index: i, count: n }), &k.cost);
                loads.push(
                    part.iter()
                        .map(|c| cost::estimate(c, &k.cost).seconds)
                        .sum::<f64>(),
                );
                seen.extend(part.iter().map(|c| c.id()));
            }
            let mut expected: Vec<String> = all.iter().map(|c| c.id()).collect();
            seen.sort();
            expected.sort();
            assert_eq!(seen, expected, "n = {n}");
            let max = loads.iter().cloned().fold(0.0, f64::max);
            let total: f64 = loads.iter().sum();
            let biggest = all
                .iter()
                .map(|c| cost::estimate(c, &k.cost).seconds)
                .fold(0.0, f64::max);
            assert!(
                max <= total / n as f64 + biggest + 1e-6,
                "unbalanced shards for n = {n}"
            );
        }
    }

    #[test]
    fn shard_syntax_is_checked() {
        assert_eq!(
            "1/4".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 4 }
        );
        assert!("4/4".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
    }
}
