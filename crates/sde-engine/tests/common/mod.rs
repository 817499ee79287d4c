//! A tiny random model written as a GGUF file (with a byte-level BPE tokenizer and a chat
//! template), so every loader path runs in milliseconds.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use sde_engine::{Llama, LlamaConfig, LoraConfig, LoraTarget};

pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are tiny.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's byte → printable character table.
pub fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(&cs) {
        table[*b as usize] = char::from_u32(*c).unwrap();
    }
    table
}

/// Vocabulary: 3 special tokens, 256 bytes, 3 merges.
pub fn vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(byte_chars().into_iter().map(|c| c.to_string()));
    tokens.extend(["Ġt", "he", "Ġthe"].iter().map(|s| s.to_string()));
    let merges = ["Ġ t", "h e", "Ġt he"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (tokens, merges)
}

pub fn tiny_config() -> LlamaConfig {
    let mut cfg = LlamaConfig::tiny(vocab().0.len(), 32, 2, 4, 2);
    cfg.rope_theta = 10_000.0;
    cfg
}

/// Adds LoRA (r 8, alpha 16, every projection, `dropout`) to `model` and sets every factor to
/// fixed pseudo-random values on the model's device: B starts at zero (PEFT's init), which would
/// make every A gradient zero. Rank 8 is a rank the engine's own low-rank products take
/// (`lowrank.rs`), so that these tests check them where the CPU runs them.
pub fn add_random_lora(model: &mut Llama, dropout: f64) {
    model
        .add_lora(&LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout,
            targets: LoraTarget::ALL.to_vec(),
            seed: 5,
        })
        .unwrap();
    for (i, (_, var)) in model.lora_vars().into_iter().enumerate() {
        let vals: Vec<f32> = (0..var.elem_count())
            .map(|k| (((k * 7919 + i * 104_729) % 1000) as f32 / 1000.0 - 0.5) * 0.3)
            .collect();
        var.set(&Tensor::from_vec(vals, var.dims(), var.device()).unwrap())
            .unwrap();
    }
}

/// The values of `t`, from whatever device, flattened.
pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// `max |a - b| <= tol * max |a|` (the scale at least 1e-6).
pub fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    eprintln!("{what}: max diff {diff:.2e} (scale {scale:.2e})");
    assert!(
        diff <= tol * scale,
        "{what}: max diff {diff:e} (scale {scale:e})"
    );
}

pub fn tiny_model(seed: u64) -> Llama {
    Llama::random(tiny_config(), seed, &Device::Cpu).unwrap()
}

/// llama.cpp's q/k row permutation (the inverse of what the loader undoes).
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().unwrap();
    w.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (module, kind) = rest.rsplit_once('.').unwrap();
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("{other}"),
    };
    format!("blk.{layer}.{g}.{kind}")
}

/// Writes `model` as a llama GGUF (f32 tensors, permuted q/k) with the tiny tokenizer.
pub fn write_gguf(model: &Llama, path: &Path) {
    let cfg = model.config();
    let (tokens, merges) = vocab();
    let mut tensors = Vec::new();
    for (name, t) in model.named_tensors() {
        let t = if name.ends_with("q_proj.weight") {
            permute(&t, cfg.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            permute(&t, cfg.kv_heads())
        } else {
            t
        };
        tensors.push((
            gguf_name(&name),
            QTensor::quantize(&t, GgmlDType::F32).unwrap(),
        ));
    }
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let types = Value::Array(
        (0..tokens.len())
            .map(|i| Value::I32(if i < 3 { 3 } else { 1 }))
            .collect(),
    );
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(cfg.hidden_size as u32)),
        (
            "llama.block_count",
            Value::U32(cfg.num_hidden_layers as u32),
        ),
        (
            "llama.feed_forward_length",
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count",
            Value::U32(cfg.num_attention_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(cfg.kv_heads() as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        (
            "llama.context_length",
            Value::U32(cfg.max_position_embeddings as u32),
        ),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.token_type", types),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.padding_token_id", Value::U32(2)),
        (
            "tokenizer.chat_template",
            Value::String(CHAT_TEMPLATE.into()),
        ),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    candle_core::quantized::gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (
        a.to_device(&Device::Cpu).unwrap(),
        b.to_device(&Device::Cpu).unwrap(),
    );
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn ids(v: &[u32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// The Python stack's reference outputs for the default model: `SDE_FIXTURES_DIR`, else
/// `../shared/fixtures/smollm2` beside the checkout. `None` (the caller skips) only when the
/// variable is unset and the default folder is absent; a set variable naming a missing folder
/// fails the test, so CI cannot skip silently.
pub fn fixtures_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SDE_FIXTURES_DIR").map(PathBuf::from) {
        assert!(
            dir.is_dir(),
            "SDE_FIXTURES_DIR={} is not a folder",
            dir.display()
        );
        return Some(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/smollm2");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("note: fixtures folder {} absent; skipping", dir.display());
        None
    }
}
