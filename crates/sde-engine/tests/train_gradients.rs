//! LoRA gradients of the masked loss against central finite differences on a tiny random model.
//!
//! The model computes in f32 only, so the central differences use a step of 3e-2 on weights of
//! size ~0.15: the loss (~4) is rounded to ~5e-7, which over 2h = 6e-2 is ~1e-5 absolute on
//! gradients of ~1e-3 (the attention LoRA gradients of this model are that small), and the
//! truncation error is O(h^2). Measured worst case: 8e-3 (1.3e-2 with h = 1e-2, 5e-2 with
//! h = 3e-3: rounding dominates). Per tensor, ‖g_fd − g‖ / ‖g‖ over the checked entries must
//! stay below 2e-2; a masking or scaling mistake (loss position shifted by one, wrong
//! normaliser, dropped LoRA scale) gives errors of order 1.

use candle_core::{Device, Tensor, Var};
use sde_engine::batch::{EncodeOptions, SpecialIds, TrainBatch, collate, encode_ids};
use sde_engine::loss::masked_loss;
use sde_engine::{Llama, LlamaConfig};
use sde_format::LossOn;

mod common;

fn tiny_model() -> Llama {
    lora_model(true, 0.0)
}

/// The tiny model with LoRA (r 4) on every projection and randomised factors; `tied` false gives
/// an untied head and q/k/v bias (the Qwen2 layout).
fn lora_model(tied: bool, dropout: f64) -> Llama {
    let mut cfg = LlamaConfig::tiny(48, 32, 2, 4, 2);
    cfg.tie_word_embeddings = tied;
    cfg.attention_bias = !tied;
    let mut model = Llama::random(cfg, 11, &Device::Cpu).unwrap();
    common::add_random_lora(&mut model, dropout);
    model
}

/// Loss and every LoRA gradient of the hand-written pass equal autograd's (`loss`, `store`):
/// the loss to 1e-5 relative, each gradient to 1e-4 of its largest autograd entry.
fn assert_equals_autograd(
    what: &str,
    model: &Llama,
    got: &sde_engine::model::LossAndGrads,
    loss: &Tensor,
    store: &candle_core::backprop::GradStore,
) {
    let want_loss = loss.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (got.loss - want_loss).abs() < 1e-5 * want_loss.abs().max(1.0),
        "{what}: loss {} vs {want_loss}",
        got.loss
    );
    let vars = model.lora_vars();
    assert_eq!(got.grads.len(), vars.len());
    for ((name, var), g) in vars.iter().zip(&got.grads) {
        let want = common::to_vec(store.get(var.as_tensor()).unwrap());
        common::assert_close(&format!("{what}: {name}"), &want, &common::to_vec(g), 1e-4);
    }
}

/// The hand-written training pass of a fresh LoRA model against autograd over the forward of
/// another one with the same seed (which draws the same dropout masks in the same order).
fn assert_backward_equals_autograd(
    what: &str,
    batch: &TrainBatch,
    normaliser: usize,
    tied: bool,
    dropout: f64,
) {
    let auto = lora_model(tied, dropout);
    let h = auto
        .forward_hidden(&batch.input_ids, Some(&batch.attention_mask), None, true)
        .unwrap();
    let loss = masked_loss(&h, &batch.loss_positions, &batch.targets, normaliser, |x| {
        auto.logits(x)
    })
    .unwrap();
    let store = loss.backward().unwrap();
    let manual = lora_model(tied, dropout);
    let got = manual.lora_loss_and_grads(batch, normaliser).unwrap();
    assert_equals_autograd(what, &auto, &got, &loss, &store);
}

/// A right-padded batch of two rows with BOS: `first_prompt` → `[30, 31, 4]` with the loss on
/// the completion (No-MI), and `[8, 3]` → `[17, 40]` with the loss on every token (MI).
fn two_row_batch(first_prompt: &[u32]) -> TrainBatch {
    let special = SpecialIds {
        bos: Some(1),
        eos: 2,
        tokenizer_adds_bos: false,
    };
    let opts = EncodeOptions::default();
    let a = encode_ids(
        0,
        first_prompt,
        &[30, 31, 4],
        LossOn::Completion,
        special,
        &opts,
    )
    .unwrap();
    let b = encode_ids(
        1,
        &[8, 3],
        &[17, 40],
        LossOn::PromptAndCompletion,
        special,
        &opts,
    )
    .unwrap();
    collate(&[&a, &b], 2, &Device::Cpu).unwrap()
}

#[test]
fn lora_gradients_match_central_finite_differences() {
    let model = tiny_model();
    let batch = two_row_batch(&[5, 9, 13, 7, 21]);
    let loss_of = |model: &Llama| -> Tensor {
        let h = model
            .forward_hidden(&batch.input_ids, Some(&batch.attention_mask), None, true)
            .unwrap();
        masked_loss(
            &h,
            &batch.loss_positions,
            &batch.targets,
            batch.n_loss_tokens,
            |x| model.logits(x),
        )
        .unwrap()
    };
    let loss = loss_of(&model);
    let grads = loss.backward().unwrap();
    let vars: Vec<(String, Var)> = model.lora_vars();
    assert_eq!(vars.len(), 2 * 7 * 2);
    let h = 3e-2f32;
    let mut worst = 0f64;
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Check the 3 entries with the largest gradient and 2 spread over the tensor.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&i, &j| g[j].abs().total_cmp(&g[i].abs()));
        let mut picks: Vec<usize> = idx[..3].to_vec();
        picks.extend([g.len() / 3, (2 * g.len()) / 3]);
        let (mut diff2, mut ref2) = (0f64, 0f64);
        for &k in &picks {
            let eval = |delta: f32| -> f64 {
                let mut w = base.clone();
                w[k] += delta;
                var.set(&Tensor::from_vec(w, var.dims(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_of(&model).to_scalar::<f32>().unwrap() as f64
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
            diff2 += (fd - g[k] as f64).powi(2);
            ref2 += (g[k] as f64).powi(2);
        }
        var.set(&Tensor::from_vec(base, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
        assert!(ref2 > 0.0, "{name}: zero gradient on the checked entries");
        let rel = (diff2 / ref2).sqrt();
        worst = worst.max(rel);
        assert!(
            rel <= 2e-2,
            "{name}: finite-difference relative error {rel:.2e}"
        );
    }
    eprintln!("worst relative error over LoRA tensors: {worst:.2e}");
}

#[test]
fn frozen_base_and_masked_positions_do_not_change_the_loss_gradient_path() {
    // Padding must not matter: the same sample alone and right-padded next to a longer one
    // gives the same loss sum and the same gradients.
    let model = tiny_model();
    let special = SpecialIds {
        bos: None,
        eos: 2,
        tokenizer_adds_bos: false,
    };
    let opts = EncodeOptions::default();
    let short = encode_ids(0, &[5, 9], &[30, 31], LossOn::Completion, special, &opts).unwrap();
    let long = encode_ids(
        1,
        &[8, 3, 4, 4, 4, 4],
        &[17],
        LossOn::Completion,
        special,
        &opts,
    )
    .unwrap();
    let loss_sum = |rows: &[&sde_engine::batch::EncodedSample]| -> (f32, Vec<f32>) {
        let batch = collate(rows, 2, &Device::Cpu).unwrap();
        let h = model
            .forward_hidden(&batch.input_ids, Some(&batch.attention_mask), None, false)
            .unwrap();
        let l = masked_loss(&h, &batch.loss_positions, &batch.targets, 1, |x| {
            model.logits(x)
        })
        .unwrap();
        let g = l.backward().unwrap();
        let (_, var) = &model.lora_vars()[0];
        let gv = g
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (l.to_scalar().unwrap(), gv)
    };
    let (alone, g_alone) = loss_sum(&[&short]);
    let (l_long, g_long) = loss_sum(&[&long]);
    let (both, g_both) = loss_sum(&[&short, &long]);
    assert!(
        (alone + l_long - both).abs() < 1e-4,
        "{alone} + {l_long} != {both}"
    );
    for ((a, b), c) in g_alone.iter().zip(&g_long).zip(&g_both) {
        assert!((a + b - c).abs() < 1e-5);
    }
}

/// The hand-written training pass (`Llama::lora_loss_and_grads`) against candle's autograd
/// over the same forward: same loss, same gradient for every LoRA tensor. Covers right
/// padding, both loss masks, an untied head with q/k/v bias (Qwen2 layout) and LoRA dropout
/// (both paths draw the masks in the same order from the same seed).
#[test]
fn hand_written_backward_equals_autograd() {
    for (tied, dropout) in [(true, 0.0), (false, 0.0), (true, 0.3)] {
        let batch = two_row_batch(&[5, 9, 13, 7, 21, 6, 6]);
        let normaliser = batch.n_loss_tokens + 3;
        let what = format!("tied {tied} dropout {dropout}");
        assert_backward_equals_autograd(&what, &batch, normaliser, tied, dropout);
    }
}

/// Two right-padded rows of different lengths, both with the loss on the completion only:
/// the last layer then runs its queries, output projection and MLP on the positions from the
/// first one the loss reads, and the gradients must not change.
#[test]
fn completion_only_loss_runs_the_last_layer_on_its_window_with_the_same_gradients() {
    let special = SpecialIds {
        bos: Some(1),
        eos: 2,
        tokenizer_adds_bos: false,
    };
    let opts = EncodeOptions::default();
    let long = encode_ids(
        0,
        &[5, 9, 13, 7, 21, 6, 6, 11],
        &[30, 31, 4],
        LossOn::Completion,
        special,
        &opts,
    )
    .unwrap();
    let short = encode_ids(1, &[8, 3], &[17, 40], LossOn::Completion, special, &opts).unwrap();
    let batch = collate(&[&long, &short], 2, &Device::Cpu).unwrap();
    for (tied, dropout) in [(true, 0.0), (false, 0.3)] {
        let normaliser = batch.n_loss_tokens;
        let what = format!("window, tied {tied} dropout {dropout}");
        assert_backward_equals_autograd(&what, &batch, normaliser, tied, dropout);
    }
}

/// Three rows that start with the same 9 tokens (an instruction placed first), one with the
/// loss on the prompt too (MI), so some loss positions lie inside the shared prefix.
fn shared_prefix_batch() -> TrainBatch {
    let special = SpecialIds {
        bos: Some(1),
        eos: 2,
        tokenizer_adds_bos: false,
    };
    let opts = EncodeOptions::default();
    let instruction = [12u32, 19, 5, 9, 33, 7, 21, 6, 44];
    let row = |id: usize, own: &[u32], answer: &[u32], loss_on| {
        let prompt: Vec<u32> = instruction.iter().chain(own).copied().collect();
        encode_ids(id, &prompt, answer, loss_on, special, &opts).unwrap()
    };
    let a = row(0, &[8, 3, 14], &[30, 31, 4], LossOn::Completion);
    let b = row(1, &[15], &[17, 40], LossOn::PromptAndCompletion);
    let c = row(2, &[27, 28, 29, 30, 25], &[11], LossOn::Completion);
    collate(&[&a, &b, &c], 2, &Device::Cpu).unwrap()
}

/// The training pass with the shared prefix run once equals the pass over full rows and
/// candle's autograd (loss and every LoRA gradient), with tied and untied heads.
#[test]
fn shared_prefix_backward_equals_full_rows_and_autograd() {
    for tied in [true, false] {
        let model = lora_model(tied, 0.0);
        let batch = shared_prefix_batch();
        assert_eq!(
            batch.shared_prefix, 9,
            "the instruction (no BOS: tokenizer_adds_bos is false)"
        );
        let normaliser = batch.n_loss_tokens;
        let shared = model.lora_loss_and_grads(&batch, normaliser).unwrap();
        let full = model
            .lora_loss_and_grads(&batch.clone().without_prefix_sharing(), normaliser)
            .unwrap();
        let h = model
            .forward_hidden(&batch.input_ids, Some(&batch.attention_mask), None, false)
            .unwrap();
        let loss = masked_loss(&h, &batch.loss_positions, &batch.targets, normaliser, |x| {
            model.logits(x)
        })
        .unwrap();
        let store = loss.backward().unwrap();
        assert_equals_autograd(
            &format!("tied {tied}, shared"),
            &model,
            &shared,
            &loss,
            &store,
        );
        assert_equals_autograd(&format!("tied {tied}, full"), &model, &full, &loss, &store);
    }
}

/// A batch whose rows do not share the prefix it claims is an error, not wrong gradients.
#[test]
fn a_wrong_shared_prefix_is_rejected() {
    let model = tiny_model();
    let mut batch = two_row_batch(&[5, 9, 13, 7, 21]);
    assert_eq!(batch.shared_prefix, 0);
    batch.shared_prefix = 3;
    let err = model.lora_loss_and_grads(&batch, 1).unwrap_err();
    assert!(err.to_string().contains("shared_prefix 3"), "{err}");
}

/// With bf16 matmuls (on CPUs with AVX512-BF16) the training pass runs the frozen weights'
/// products in bf16: the loss and every LoRA gradient stay within bf16 rounding of the f32
/// pass (‖g_bf16 − g_f32‖ / ‖g_f32‖ below 2e-2 per tensor; bf16 keeps 8 significant bits, so
/// one rounding is 2e-3 relative), and they differ from it, so the bf16 path did run. Covers
/// padding, both loss masks, LoRA dropout and a shared prefix.
#[test]
fn bf16_matmuls_keep_the_training_pass_within_bf16_rounding() {
    if !sde_engine::bf16::supported() {
        eprintln!("skipped: this CPU lacks AVX512-BF16");
        return;
    }
    let cases = [
        ("padded", two_row_batch(&[5, 9, 13, 7, 21, 6, 6]), 0.0),
        ("dropout", two_row_batch(&[5, 9, 13, 7, 21, 6, 6]), 0.3),
        ("shared prefix", shared_prefix_batch(), 0.0),
    ];
    for (what, batch, dropout) in cases {
        let normaliser = batch.n_loss_tokens;
        let f32_pass = lora_model(true, dropout)
            .lora_loss_and_grads(&batch, normaliser)
            .unwrap();
        let mut model = lora_model(true, dropout);
        model.set_bf16_matmuls(true).unwrap();
        let bf16_pass = model.lora_loss_and_grads(&batch, normaliser).unwrap();
        let rel = (bf16_pass.loss - f32_pass.loss).abs() / f32_pass.loss.abs();
        assert!(
            rel < 1e-2,
            "{what}: loss {} vs {}",
            bf16_pass.loss,
            f32_pass.loss
        );
        let mut any_differs = bf16_pass.loss != f32_pass.loss;
        for ((name, _), (g, want)) in model
            .lora_vars()
            .iter()
            .zip(bf16_pass.grads.iter().zip(&f32_pass.grads))
        {
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let norm = want.iter().map(|x| x * x).sum::<f32>().sqrt();
            let diff = g
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            any_differs |= diff > 0.0;
            assert!(diff <= 2e-2 * norm, "{what}: {name}: {diff:e} of {norm:e}");
        }
        assert!(
            any_differs,
            "{what}: the bf16 pass equals the f32 pass exactly"
        );
    }
}
