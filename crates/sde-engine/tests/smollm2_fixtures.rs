//! The default model against the reference outputs of the Python stack
//! (`../shared/fixtures/smollm2`, see its README for the tolerances).

mod common;

use common::fixtures_dir;

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use sde_engine::{ChatMessage, KvCache, LoadedModel};
use serde_json::Value;

fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let start = std::time::Instant::now();
        let m = sde_engine::load("default").expect("default model loads");
        eprintln!("default model loaded in {:.2?}", start.elapsed());
        m
    })
}

fn read_json(dir: &std::path::Path, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn token_ids_and_decoding_match_reference() {
    let Some(dir) = fixtures_dir() else { return };
    let tok = &model().tokenizer;
    let fx = read_json(&dir, "tokens.json");
    let special = &fx["special"];
    assert_eq!(
        tok.bos_id(),
        Some(special["bos_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tok.eos_id(),
        Some(special["eos_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tok.pad_id(),
        Some(special["pad_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tok.vocab_size(),
        special["vocab_size"].as_u64().unwrap() as usize
    );
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids_of(&case["ids"]),
            "ids of {text:?}"
        );
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids_of(&case["ids_with_special_tokens"]),
            "ids with special tokens of {text:?}"
        );
        let decoded = tok.decode(&ids_of(&case["ids"]), false).unwrap();
        assert_eq!(
            decoded,
            case["decoded"].as_str().unwrap(),
            "decoding of {text:?}"
        );
    }
}

#[test]
fn chat_template_renders_like_reference() {
    let Some(dir) = fixtures_dir() else { return };
    let tok = &model().tokenizer;
    let fx = read_json(&dir, "chat_template.json");
    assert_eq!(tok.chat_template(), fx["template"].as_str());
    for case in fx["cases"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            tok.apply_chat_template(&messages, add).unwrap(),
            case["text"].as_str().unwrap()
        );
    }
}

#[test]
fn logits_match_reference() {
    let Some(dir) = fixtures_dir() else { return };
    let m = model();
    let fx = candle_core::safetensors::load(dir.join("logits.safetensors"), &Device::Cpu).unwrap();
    let tok_fx = read_json(&dir, "chat_template.json");
    let texts = [
        "The food was great but the service was painfully slow. Food:".to_string(),
        tok_fx["cases"][0]["text"].as_str().unwrap().to_string(),
        "食品评价：正面，饮品评价：".to_string(),
    ];
    for (i, text) in texts.iter().enumerate() {
        let ids: Vec<u32> = fx[&format!("input_ids_{i}")]
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|x| *x as u32)
            .collect();
        assert_eq!(
            m.tokenizer.encode(text, false).unwrap(),
            ids,
            "prompt {i} tokenizes like the reference"
        );
        let reference = &fx[&format!("logits_{i}")];
        let input = Tensor::new(ids.as_slice(), m.model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = m.model.forward_hidden(&input, None, None, false).unwrap();
        let logits = m
            .model
            .logits(&hidden)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap();
        assert_eq!(logits.dims(), reference.dims());
        let diff = (&logits - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let ours = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        let theirs = reference.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        eprintln!(
            "prompt {i}: {} tokens, max abs logit diff {diff:.3e}",
            ids.len()
        );
        assert!(diff <= 2e-3, "prompt {i}: max abs logit difference {diff}");
        assert_eq!(ours, theirs, "prompt {i}: argmax at every position");
    }
}

/// The peer baseline's sanity check: greedy reply to a chat prompt, with the KV cache.
#[test]
fn greedy_reply_with_kv_cache_matches_peer_baseline() {
    let Some(_) = fixtures_dir() else { return };
    let m = model();
    let prompt = m
        .tokenizer
        .apply_chat_template(
            &[ChatMessage::user(
                "What is the capital of France? Answer in one sentence.",
            )],
            true,
        )
        .unwrap();
    let ids = m.tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(ids.len(), 42);
    let mut cache = KvCache::new(&m.model, 1, 64).unwrap();
    let mut next = ids.clone();
    let mut out = Vec::new();
    for _ in 0..12 {
        let input = Tensor::new(next.as_slice(), m.model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let hidden = m
            .model
            .forward_hidden(&input, None, Some(&mut cache), false)
            .unwrap();
        let last = hidden.narrow(1, next.len() - 1, 1).unwrap();
        let tok = m
            .model
            .logits(&last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap();
        out.push(tok);
        if Some(tok) == m.tokenizer.eos_id() {
            break;
        }
        next = vec![tok];
    }
    assert_eq!(out, [504, 3575, 282, 4649, 314, 7042, 30, 2]);
    assert_eq!(
        m.tokenizer.decode(&out, true).unwrap(),
        "The capital of France is Paris."
    );
}
