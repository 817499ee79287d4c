//! The training loop on a tiny random model: it learns, it is reproducible to the byte, and a
//! non-finite loss stops it with the step and batch named.

use candle_core::{Device, Tensor};
use sde_engine::adapter::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterConfig, adapter_bytes, load_adapter,
    save_adapter,
};
use sde_engine::batch::{EncodeOptions, EncodedSample, SpecialIds, encode_ids};
use sde_engine::train::{TrainConfig, train};
use sde_engine::{EngineError, Llama, LlamaConfig};
use sde_format::LossOn;

fn base() -> Llama {
    Llama::random(LlamaConfig::tiny(40, 32, 2, 4, 2), 3, &Device::Cpu).unwrap()
}

/// Sixteen samples of varied prompts with one fixed answer, which LoRA learns in a few steps.
fn samples() -> Vec<EncodedSample> {
    let special = SpecialIds {
        bos: Some(1),
        eos: 2,
        tokenizer_adds_bos: false,
    };
    (0..16u32)
        .map(|i| {
            let p: Vec<u32> = (0..(3 + i % 5)).map(|k| 3 + (i * 7 + k * 3) % 30).collect();
            let c = vec![7, 8, 9];
            encode_ids(
                i as usize,
                &p,
                &c,
                LossOn::Completion,
                special,
                &EncodeOptions::default(),
            )
            .unwrap()
        })
        .collect()
}

fn config(seed: u64) -> TrainConfig {
    TrainConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        epochs: 10,
        batch_size: 4,
        grad_accum: 2,
        seed,
        optimizer: sde_engine::optim::AdamWConfig {
            lr: 3e-2,
            ..Default::default()
        },
        ..TrainConfig::default()
    }
}

fn trained(seed: u64) -> (Llama, Vec<f64>) {
    let mut model = base();
    let cfg = config(seed);
    model.add_lora(&cfg.lora_config()).unwrap();
    let mut losses = Vec::new();
    let summary = train(&model, &samples(), 2, &cfg, |s| losses.push(s.loss)).unwrap();
    assert_eq!(summary.steps, cfg.total_steps(16));
    assert_eq!(summary.steps, 20);
    (model, losses)
}

#[test]
fn training_lowers_the_loss_and_is_byte_reproducible() {
    let (m1, losses) = trained(7);
    let first = losses[..2].iter().sum::<f64>() / 2.0;
    let last = losses[losses.len() - 2..].iter().sum::<f64>() / 2.0;
    // The tied 0.02-std embedding of this model caps logits near ±0.6, so the loss cannot go
    // far below ln(40) - 1.2; what matters is that the answer becomes the most likely one.
    assert!(last < first - 0.4, "loss did not fall: {losses:?}");
    let ids = Tensor::new(&[[1u32, 30, 4, 22, 11, 7, 8, 9]], &Device::Cpu).unwrap();
    let logits = m1
        .logits(&m1.forward_hidden(&ids, None, None, false).unwrap())
        .unwrap();
    let argmax = logits.argmax(2).unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(
        argmax[0][4..],
        [7, 8, 9, 2],
        "the trained answer is not the greedy one"
    );
    let (m2, losses2) = trained(7);
    assert_eq!(losses, losses2);
    let bytes = adapter_bytes(&m1).unwrap();
    assert_eq!(bytes, adapter_bytes(&m2).unwrap());
    let (m3, _) = trained(8);
    assert_ne!(bytes, adapter_bytes(&m3).unwrap());

    // Saved twice to disk: identical files, loadable into a fresh model with the same outputs.
    let cfg = AdapterConfig::from_lora(&config(7).lora_config(), Some("tiny".into()));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    save_adapter(&m1, &cfg, d1.path()).unwrap();
    save_adapter(&m2, &cfg, d2.path()).unwrap();
    for f in [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] {
        assert_eq!(
            std::fs::read(d1.path().join(f)).unwrap(),
            std::fs::read(d2.path().join(f)).unwrap(),
            "{f} differs"
        );
    }
    let mut fresh = base();
    load_adapter(&mut fresh, d1.path()).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 12]], &Device::Cpu).unwrap();
    let a = m1
        .logits(&m1.forward_hidden(&ids, None, None, false).unwrap())
        .unwrap();
    let b = fresh
        .logits(&fresh.forward_hidden(&ids, None, None, false).unwrap())
        .unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-6, "reloaded adapter changes logits by {diff}");
    // The file uses PEFT's names.
    let st =
        candle_core::safetensors::load(d1.path().join(ADAPTER_WEIGHTS_FILE), &Device::Cpu).unwrap();
    assert!(st.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert_eq!(st.len(), 2 * 7 * 2);
}

#[test]
fn a_non_finite_loss_names_step_and_batch() {
    let mut model = base();
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 2,
        ..config(1)
    };
    model.add_lora(&cfg.lora_config()).unwrap();
    let (_, b) = model.lora_vars().swap_remove(1);
    let nan = Tensor::full(f32::NAN, b.dims(), &Device::Cpu).unwrap();
    b.set(&nan).unwrap();
    let err = train(&model, &samples(), 2, &cfg, |_| {}).unwrap_err();
    match err {
        EngineError::NonFiniteLoss { step, batch, .. } => assert_eq!((step, batch), (1, 1)),
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn dropout_is_seeded_too() {
    let run = |seed| {
        let mut model = base();
        let cfg = TrainConfig {
            dropout: 0.1,
            epochs: 2,
            ..config(seed)
        };
        model.add_lora(&cfg.lora_config()).unwrap();
        train(&model, &samples(), 2, &cfg, |_| {}).unwrap();
        adapter_bytes(&model).unwrap()
    };
    assert_eq!(run(4), run(4));
    assert_ne!(run(4), run(5));
}
