//! The cost model behind `--dry-run` estimates and the overall progress bar.
//!
//! A cell's time is `overhead + train tokens / train rate + prompt tokens / score rate +
//! generated tokens / generate rate`. Token counts are estimated from the task and design
//! (lengths measured on the synthetic English sets with the SmolLM2 tokenizer, rounded); the
//! rates are knobs (`cost.*`), defaulting to what SmolLM2-135M does on two CPU cores.

use crate::cell::{CellSpec, Decoding};
use crate::knobs::CostKnobs;

/// Estimated token counts of one sample of a task under a design.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleTokens {
    /// Prompt tokens (instruction and text).
    pub prompt: f64,
    /// Completion tokens (answer, reasoning, EOS).
    pub completion: f64,
}

/// Number of aspects a MASA domain asks about.
fn aspects(domain: Option<&str>) -> f64 {
    match domain {
        Some("d1") => 6.0,
        Some("d2") => 5.0,
        _ => 11.0,
    }
}

/// Estimated tokens of one sample: prompt and completion (EOS included), measured with the
/// SmolLM2 tokenizer on 200 training samples of each synthetic English set (D1 for MASA; other
/// MASA domains scale the aspect list and the answer by their aspect count). Designs not
/// listed take the task's baseline.
pub fn sample_tokens(task: &str, design: &str, domain: Option<&str>) -> SampleTokens {
    let (prompt, completion) = match (task, design) {
        ("masa", "no-inst") => (92.0, 27.0),
        ("masa", "lines") => (167.0, 29.0),
        ("masa", "json") => (186.0, 89.0),
        ("masa", "ou") => (169.0, 12.0),
        ("masa", "num") => (181.0, 30.0),
        ("masa", "cot" | "rcot") => (216.0, 166.0),
        ("masa", "ew-sde") => (169.0, 12.0),
        ("masa", "es-sde") => (167.0, 29.0),
        ("masa", _) => (167.0, 27.0),
        ("ner", "ew-sde") => (111.0, 28.0),
        ("ner", "es-sde") => (110.0, 44.0),
        ("ner", _) => (87.0, 29.0),
        (_, "ew-sde") => (132.0, 7.0),
        (_, "es-sde") => (130.0, 66.0),
        _ => (111.0, 13.0),
    };
    let (prompt, completion) = if task == "masa" {
        let n = aspects(domain);
        let listed = if design == "no-inst" { 0.0 } else { 3.0 };
        (prompt + listed * (n - 6.0), completion * n / 6.0)
    } else {
        (prompt, completion)
    };
    SampleTokens {
        prompt,
        completion: completion + 1.0,
    }
}

/// Estimated breakdown of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CellCost {
    /// Tokens trained on.
    pub train_tokens: f64,
    /// Tokens run forward only (prompts, perplexity).
    pub score_tokens: f64,
    /// Tokens generated.
    pub generated_tokens: f64,
    /// Estimated wall seconds.
    pub seconds: f64,
}

/// Test records assumed when a cell uses a whole split (`test_size = 0`).
const WHOLE_SPLIT_GUESS: f64 = 1000.0;

/// Estimates a cell's cost.
pub fn estimate(cell: &CellSpec, cost: &CostKnobs) -> CellCost {
    let mut c = CellCost::default();
    let n_test = if cell.test_size == 0 {
        WHOLE_SPLIT_GUESS
    } else {
        cell.test_size as f64
    };
    if let Some(train) = &cell.train {
        let s = sample_tokens(&cell.task, &cell.design, cell.train_domain.as_deref());
        c.train_tokens = (s.prompt + s.completion) * cell.train_size as f64 * train.epochs as f64;
    }
    for eval in &cell.evals {
        let s = sample_tokens(&cell.task, &cell.design, eval.test_domain.as_deref());
        let demos = eval.shots as f64 * (s.prompt + s.completion + 4.0);
        match eval.decoding {
            Decoding::Score => {
                c.score_tokens += n_test * (s.prompt + s.completion);
            }
            Decoding::Greedy | Decoding::GreedyNoPenalty | Decoding::Sample { .. } => {
                // The demonstrations are the same in every prompt: they run once per batch.
                let batches = (n_test / cell.generate.batch_size.max(1) as f64).ceil();
                c.score_tokens += n_test * s.prompt + batches * demos;
                // A fine-tuned model stops after its answer; an untuned one usually runs to
                // the token limit.
                let new = if cell.fine_tunes() {
                    (s.completion * 1.1).min(cell.generate.max_new_tokens as f64)
                } else {
                    cell.generate.max_new_tokens as f64
                };
                c.generated_tokens += n_test * new;
            }
        }
    }
    c.seconds = cost.cell_overhead_s
        + c.train_tokens / cost.train_tokens_per_s
        + c.score_tokens / cost.score_tokens_per_s
        + c.generated_tokens / cost.generate_tokens_per_s;
    c
}

/// `1h02m`, `4m05s`, `12s`.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(12.4), "12s");
        assert_eq!(human_duration(245.0), "4m05s");
        assert_eq!(human_duration(3720.0), "1h02m");
    }

    #[test]
    fn longer_outputs_cost_more() {
        let base = sample_tokens("masa", "baseline", Some("d1"));
        assert!(sample_tokens("masa", "cot", Some("d1")).completion > base.completion);
        assert!(sample_tokens("masa", "ou", Some("d1")).completion < base.completion);
        assert!(sample_tokens("masa", "no-inst", Some("d1")).prompt < base.prompt);
        assert!(sample_tokens("masa", "baseline", Some("all")).completion > base.completion);
    }

    #[test]
    fn demonstrations_cost_once_per_generation_batch() {
        let knobs = crate::knobs::Knobs::preset("default").unwrap();
        let cells = crate::matrix::cells(&knobs, "v").unwrap();
        let untuned = cells
            .iter()
            .find(|c| c.train.is_none() && c.evals.iter().any(|e| e.shots > 0))
            .unwrap();
        let mut zero_shot = untuned.clone();
        zero_shot.evals.iter_mut().for_each(|e| e.shots = 0);
        let extra = estimate(untuned, &knobs.cost).score_tokens
            - estimate(&zero_shot, &knobs.cost).score_tokens;
        let s = sample_tokens("masa", &untuned.design, Some("d1"));
        let shots = untuned.evals.iter().map(|e| e.shots).max().unwrap() as f64;
        let batches = (untuned.test_size as f64 / untuned.generate.batch_size as f64).ceil();
        assert!((extra - batches * shots * (s.prompt + s.completion + 4.0)).abs() < 1e-6);
    }
}
