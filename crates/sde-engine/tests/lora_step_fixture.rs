//! One LoRA step on the default model against PyTorch + PEFT
//! (`../shared/fixtures/smollm2/lora_step.*`): the batch our encoder builds from the fixture's
//! prompts and answers, the masked loss (abs ≤ 1e-4) and every LoRA gradient
//! (‖g − g_ref‖ / ‖g_ref‖ ≤ 1e-3).

mod common;

use common::fixtures_dir;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use sde_engine::adapter::set_lora_weights;
use sde_engine::batch::{EncodeOptions, encode_texts};
use sde_engine::loss::masked_loss;
use sde_engine::{LoraConfig, LoraTarget};
use sde_format::LossOn;
use serde_json::Value;

fn rows_u32(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}

#[test]
fn lora_step_matches_pytorch_peft() {
    let Some(dir) = fixtures_dir() else { return };
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lora_step.json")).unwrap())
            .unwrap();
    let st =
        candle_core::safetensors::load(dir.join("lora_step.safetensors"), &Device::Cpu).unwrap();
    let mut loaded = sde_engine::load("default").expect("default model loads");
    let tok = &loaded.tokenizer;

    // Our encoder reproduces the fixture's batch from its texts: ids, padding and mask.
    let prompts: Vec<&str> = fx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let answers: Vec<&str> = fx["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let (encoded, report) = encode_texts(
        tok,
        prompts
            .iter()
            .zip(&answers)
            .map(|(p, a)| (*p, *a, LossOn::Completion)),
        &EncodeOptions::default(),
    )
    .unwrap();
    assert!(report.is_clean());
    let ref_ids = rows_u32(&st["input_ids"]);
    let ref_attn = rows_u32(&st["attention_mask"]);
    let ref_mask = rows_u32(&st["loss_mask"]);
    for (row, s) in encoded.iter().enumerate() {
        let n = s.input_ids.len();
        assert_eq!(s.input_ids, ref_ids[row][..n], "row {row} ids");
        assert!(
            ref_attn[row][n..].iter().all(|&a| a == 0)
                && ref_attn[row][..n].iter().all(|&a| a == 1)
        );
        let mask: Vec<u32> = s.loss_mask.iter().map(|&m| u32::from(m)).collect();
        assert_eq!(mask, ref_mask[row][..n], "row {row} loss mask");
    }
    let pad = tok.pad_id().unwrap();
    let rows: Vec<_> = encoded.iter().collect();
    let batch = sde_engine::batch::collate(&rows, pad, loaded.model.device()).unwrap();
    assert_eq!(rows_u32(&batch.input_ids), ref_ids);
    assert_eq!(
        batch.n_loss_tokens,
        fx["n_loss_tokens"].as_u64().unwrap() as usize
    );

    // The fixture's adapter weights.
    let lora = &fx["lora"];
    loaded
        .model
        .add_lora(&LoraConfig {
            r: lora["r"].as_u64().unwrap() as usize,
            alpha: lora["alpha"].as_f64().unwrap(),
            dropout: lora["dropout"].as_f64().unwrap(),
            targets: LoraTarget::ALL.to_vec(),
            seed: 0,
        })
        .unwrap();
    let adapter: HashMap<String, Tensor> = st
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("adapter.")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    set_lora_weights(&loaded.model, &adapter, "lora_step.safetensors").unwrap();

    let model = &loaded.model;
    let hidden = model
        .forward_hidden(&batch.input_ids, Some(&batch.attention_mask), None, true)
        .unwrap();
    let loss = masked_loss(
        &hidden,
        &batch.loss_positions,
        &batch.targets,
        batch.n_loss_tokens,
        |h| model.logits(h),
    )
    .unwrap();
    let value = loss.to_scalar::<f32>().unwrap() as f64;
    let want = fx["loss"].as_f64().unwrap();
    eprintln!(
        "loss {value:.7} reference {want:.7} diff {:.2e}",
        (value - want).abs()
    );
    assert!((value - want).abs() <= 1e-4, "loss {value} vs {want}");

    let grads = loss.backward().unwrap();
    let vars = model.lora_vars();
    assert_eq!(vars.len(), 30 * 7 * 2);
    let autograd: Vec<(String, Tensor)> = vars
        .into_iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .clone();
            (name, g)
        })
        .collect();
    let (worst, name) = worst_relative_error(&autograd, &st);
    eprintln!("max gradient relative error {worst:.2e} ({name})");

    // The training path (hand-written backward) against the same reference.
    let manual = model
        .lora_loss_and_grads(&batch, batch.n_loss_tokens)
        .unwrap();
    eprintln!(
        "hand-written pass: loss {:.7} diff {:.2e}",
        manual.loss,
        (manual.loss - want).abs()
    );
    assert!((manual.loss - want).abs() <= 1e-4);
    let named: Vec<(String, Tensor)> = model
        .lora_vars()
        .into_iter()
        .map(|(name, _)| name)
        .zip(manual.grads)
        .collect();
    let (worst, name) = worst_relative_error(&named, &st);
    eprintln!("hand-written pass: max gradient relative error {worst:.2e} ({name})");
}

/// Relative L2 error of each LoRA gradient against the fixture's PEFT gradient (asserted
/// ≤ 1e-3 each); returns the worst and its tensor name.
fn worst_relative_error(grads: &[(String, Tensor)], st: &HashMap<String, Tensor>) -> (f64, String) {
    let mut worst = (0f64, String::new());
    for (name, ours) in grads {
        let peft = name
            .replace(".lora_A.weight", ".lora_A.default.weight")
            .replace(".lora_B.weight", ".lora_B.default.weight");
        let reference = st
            .get(&format!("grad.{peft}"))
            .unwrap_or_else(|| panic!("fixture has no gradient for {peft}"));
        let diff = (ours.to_device(reference.device()).unwrap() - reference)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let norm = reference
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let rel = (diff / norm).sqrt();
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        assert!(rel <= 1e-3, "{name}: gradient relative error {rel:.2e}");
    }
    worst
}
