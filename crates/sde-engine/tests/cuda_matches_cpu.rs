//! The engine on a CUDA device computes what it computes on the CPU: the same random model on
//! both gives the same logits, the same hand-written LoRA loss and gradients (dropout on), the
//! same training losses step by step, the same log-likelihoods and the same greedy tokens.
//!
//! Built only with `--features cuda`; a build with the feature fails these tests where no CUDA
//! device is present rather than skipping them. The CPU's fused kernels and candle's CUDA ops
//! sum in different orders, so values agree to float tolerance, not to the bit.

#![cfg(feature = "cuda")]

mod common;

use candle_core::{Device, Tensor};
use sde_engine::batch::{EncodeOptions, EncodedSample, SpecialIds, collate, encode_ids};
use sde_engine::train::{TrainConfig, train};
use sde_engine::{GenerateConfig, Llama, LlamaConfig, generate, sequence_logprobs};
use sde_format::LossOn;

fn cuda() -> Device {
    Device::new_cuda(0).expect("tests built with the cuda feature need CUDA device 0")
}

/// A small model with grouped-query attention, big enough that every kernel runs with more
/// than one block of rows.
fn config() -> LlamaConfig {
    LlamaConfig::tiny(96, 64, 2, 4, 2)
}

/// The same random model (and, with `lora`, the same LoRA factors, B made non-zero) on `dev`.
fn model_on(dev: &Device, lora: Option<f64>) -> Llama {
    let mut m = Llama::random(config(), 17, dev).unwrap();
    if let Some(dropout) = lora {
        common::add_random_lora(&mut m, dropout);
    }
    m
}

fn special() -> SpecialIds {
    SpecialIds {
        bos: Some(1),
        eos: 2,
        tokenizer_adds_bos: false,
    }
}

/// Twelve samples of varied length, the loss on the completion or on everything.
fn samples() -> Vec<EncodedSample> {
    (0..12u32)
        .map(|i| {
            let p: Vec<u32> = (0..(4 + i % 7)).map(|k| 3 + (i * 7 + k * 3) % 90).collect();
            let loss_on = if i % 3 == 0 {
                LossOn::PromptAndCompletion
            } else {
                LossOn::Completion
            };
            encode_ids(
                i as usize,
                &p,
                &[7, 8 + i % 4, 9],
                loss_on,
                special(),
                &EncodeOptions::default(),
            )
            .unwrap()
        })
        .collect()
}

#[test]
fn logits_of_a_padded_batch_match() {
    let (cpu, gpu) = (model_on(&Device::Cpu, None), model_on(&cuda(), None));
    let ids: Vec<u32> = (0..2 * 9).map(|k| 3 + (k * 13) % 90).collect();
    let mask: Vec<u32> = (0..2 * 9).map(|k| u32::from(k < 9 || k >= 12)).collect();
    let logits = |m: &Llama| {
        let dev = m.device();
        let ids = Tensor::from_vec(ids.clone(), (2, 9), dev).unwrap();
        let mask = Tensor::from_vec(mask.clone(), (2, 9), dev).unwrap();
        let h = m.forward_hidden(&ids, Some(&mask), None, false).unwrap();
        // Left-padded second row: its first three positions are padding.
        let l = m.logits(&h).unwrap();
        let kept = Tensor::cat(
            &[
                l.get(0).unwrap(),
                l.get(1).unwrap().narrow(0, 3, 6).unwrap(),
            ],
            0,
        );
        common::to_vec(&kept.unwrap())
    };
    common::assert_close("logits", &logits(&cpu), &logits(&gpu), 1e-4);
}

#[test]
fn lora_loss_and_gradients_match_with_dropout() {
    let (cpu, gpu) = (
        model_on(&Device::Cpu, Some(0.1)),
        model_on(&cuda(), Some(0.1)),
    );
    let s = samples();
    let rows: Vec<&EncodedSample> = s.iter().take(4).collect();
    let run = |m: &Llama| {
        let batch = collate(&rows, 0, m.device()).unwrap();
        m.lora_loss_and_grads(&batch, batch.n_loss_tokens).unwrap()
    };
    let (a, b) = (run(&cpu), run(&gpu));
    eprintln!("loss cpu {} cuda {}", a.loss, b.loss);
    assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss.abs().max(1.0));
    assert_eq!(a.grads.len(), b.grads.len());
    for ((name, _), (ga, gb)) in cpu.lora_vars().iter().zip(a.grads.iter().zip(&b.grads)) {
        common::assert_close(name, &common::to_vec(ga), &common::to_vec(gb), 1e-4);
    }
}

#[test]
fn training_losses_match_step_by_step() {
    let cfg = TrainConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.05,
        epochs: 2,
        batch_size: 4,
        grad_accum: 1,
        seed: 3,
        optimizer: sde_engine::optim::AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    let run = |dev: &Device| {
        let mut m = Llama::random(config(), 17, dev).unwrap();
        m.add_lora(&cfg.lora_config()).unwrap();
        let mut losses = Vec::new();
        train(&m, &samples(), 0, &cfg, |r| losses.push(r.loss)).unwrap();
        let b: Vec<f32> = m
            .lora_vars()
            .iter()
            .flat_map(|(_, v)| common::to_vec(v.as_tensor()))
            .collect();
        (losses, b)
    };
    let ((lc, wc), (lg, wg)) = (run(&Device::Cpu), run(&cuda()));
    eprintln!("losses cpu {lc:?}\nlosses cuda {lg:?}");
    assert_eq!(lc.len(), 6);
    assert_eq!(lc.len(), lg.len());
    for (step, (a, b)) in lc.iter().zip(&lg).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "step {step}: loss {a} vs {b}"
        );
    }
    assert!(lg[lg.len() - 1] < lg[0], "training on CUDA lowers the loss");
    common::assert_close("trained LoRA factors", &wc, &wg, 1e-3);
}

#[test]
fn log_likelihoods_match() {
    let (cpu, gpu) = (model_on(&Device::Cpu, None), model_on(&cuda(), None));
    let items: Vec<(Vec<u32>, usize)> = (0..6u32)
        .map(|i| {
            let seq: Vec<u32> = (0..(8 + i * 3))
                .map(|k| 3 + (i * 11 + k * 5) % 90)
                .collect();
            let start = 3 + i as usize;
            (seq, start)
        })
        .collect();
    let (a, b) = (
        sequence_logprobs(&cpu, &items, 4).unwrap(),
        sequence_logprobs(&gpu, &items, 4).unwrap(),
    );
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.count, y.count);
        common::assert_close(
            &format!("sequence {i}"),
            &x.token_logprobs,
            &y.token_logprobs,
            1e-4,
        );
    }
}

#[test]
fn batched_greedy_generation_matches() {
    let (cpu, gpu) = (model_on(&Device::Cpu, None), model_on(&cuda(), None));
    let prompts: Vec<Vec<u32>> = (0..6u32)
        .map(|i| {
            (0..(3 + (i * 5) % 9))
                .map(|k| 3 + (i * 11 + k * 7) % 90)
                .collect()
        })
        .collect();
    let cfg = GenerateConfig {
        max_new_tokens: 16,
        batch_size: 4,
        ..GenerateConfig::default()
    };
    let a = generate(&cpu, &prompts, &[2], &cfg, |_| {}).unwrap();
    let b = generate(&gpu, &prompts, &[2], &cfg, |_| {}).unwrap();
    assert_eq!(a, b);
}
