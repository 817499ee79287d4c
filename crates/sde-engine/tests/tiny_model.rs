//! Every code path of the model, the loaders and scoring on a tiny random model.

mod common;

use candle_core::{D, DType, Device, Tensor};
use common::{ids, max_abs_diff, tiny_model, write_gguf};
use sde_engine::{
    ChatMessage, EngineError, KvCache, Llama, LoraConfig, LoraTarget, ScoreOptions, export_hf_dir,
    load_gguf, load_hf_dir, load_hub, score, sequence_logprobs, sequence_logprobs_with,
};

/// The final hidden states of `input`, on the model's device (the loaders put a model on the
/// engine's default device, a GPU under the `cuda` feature).
fn hidden(m: &Llama, input: &[u32]) -> Tensor {
    let input = ids(input).to_device(m.device()).unwrap();
    m.forward_hidden(&input, None, None, false).unwrap()
}

fn lora_cfg(seed: u64) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
        seed,
    }
}

/// Fills every LoRA B with small seeded values so the adapters change the output.
fn randomise_b(m: &Llama) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    for (name, var) in m.lora_vars() {
        if name.contains("lora_B") {
            let v: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.random_range(-0.1f32..0.1))
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
}

#[test]
fn left_padding_and_kv_cache_match_the_full_unpadded_forward() {
    let m = tiny_model(1);
    let row0: Vec<u32> = vec![5, 17, 200, 3, 99, 42, 7];
    let row1: Vec<u32> = vec![61, 8, 150, 33];
    let pad = 2u32;
    let batch: Vec<u32> = row0
        .iter()
        .copied()
        .chain([pad, pad, pad])
        .chain(row1.iter().copied())
        .collect();
    let input = Tensor::from_vec(batch.clone(), (2, 7), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(
        vec![1u32, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1],
        (2, 7),
        &Device::Cpu,
    )
    .unwrap();
    let full = m.forward_hidden(&input, Some(&mask), None, false).unwrap();
    assert_eq!(
        full.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|x| x.is_nan())
            .count(),
        0
    );

    let alone0 = hidden(&m, &row0).squeeze(0).unwrap();
    let alone1 = hidden(&m, &row1).squeeze(0).unwrap();
    assert!(max_abs_diff(&full.get(0).unwrap(), &alone0) < 1e-5);
    assert!(max_abs_diff(&full.get(1).unwrap().narrow(0, 3, 4).unwrap(), &alone1) < 1e-5);

    // Prefill 4 positions, then decode one at a time.
    let mut cache = KvCache::new(&m, 2, 16).unwrap();
    let mut pieces = Vec::new();
    for (start, len) in [(0, 4), (4, 1), (5, 2)] {
        let inp = input.narrow(1, start, len).unwrap();
        let msk = mask.narrow(1, start, len).unwrap();
        pieces.push(
            m.forward_hidden(&inp, Some(&msk), Some(&mut cache), false)
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), 7);
    let incremental = Tensor::cat(&pieces, 1).unwrap();
    // Padding positions' outputs are unspecified; compare the real ones.
    assert!(max_abs_diff(&incremental.get(0).unwrap(), &alone0) < 1e-5);
    assert!(
        max_abs_diff(
            &incremental.get(1).unwrap().narrow(0, 3, 4).unwrap(),
            &alone1
        ) < 1e-5
    );
}

#[test]
fn cache_capacity_is_enforced() {
    let m = tiny_model(1);
    let mut cache = KvCache::new(&m, 1, 3).unwrap();
    let err = m
        .forward_hidden(&ids(&[1, 2, 3, 4]), None, Some(&mut cache), false)
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::CacheFull {
                needed: 4,
                capacity: 3
            }
        ),
        "{err}"
    );
}

#[test]
fn fully_padded_rows_give_finite_outputs() {
    let m = tiny_model(2);
    let input = Tensor::from_vec(vec![2u32, 2, 2, 2, 9, 10], (2, 3), &Device::Cpu).unwrap();
    let mask = Tensor::from_vec(vec![0u32, 0, 0, 0, 1, 1], (2, 3), &Device::Cpu).unwrap();
    let h = m.forward_hidden(&input, Some(&mask), None, false).unwrap();
    assert!(
        h.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite())
    );
}

#[test]
fn differentiable_ops_match_fused_kernels() {
    let mut m = tiny_model(3);
    let input = [4u32, 100, 37, 250, 12];
    let fused = hidden(&m, &input);
    m.set_differentiable(true);
    let composite = hidden(&m, &input);
    assert!(max_abs_diff(&fused, &composite) < 1e-5);
}

#[test]
fn lora_init_names_and_shapes_follow_peft() {
    let mut m = tiny_model(4);
    let base = hidden(&m, &[3, 4, 5]);
    m.add_lora(&lora_cfg(7)).unwrap();
    let vars = m.lora_vars();
    assert_eq!(vars.len(), 2 * 7 * 2);
    assert_eq!(
        vars[0].0,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    assert_eq!(
        vars[1].0,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    );
    assert_eq!(
        vars[13].0,
        "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"
    );
    let cfg = m.config().clone();
    assert_eq!(vars[0].1.dims(), [4, cfg.hidden_size]);
    assert_eq!(
        vars[1].1.dims(),
        [cfg.num_attention_heads * cfg.head_dim(), 4]
    );
    assert_eq!(vars[12].1.dims(), [4, cfg.intermediate_size]);
    // A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0: the adapted model starts equal to the base.
    let a = vars[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let bound = 1.0 / (cfg.hidden_size as f32).sqrt();
    assert!(a.iter().all(|x| x.abs() <= bound));
    assert!(a.iter().any(|x| x.abs() > bound * 0.5));
    assert_eq!(
        vars[1].1.sum_all().unwrap().to_scalar::<f32>().unwrap(),
        0.0
    );
    assert!(max_abs_diff(&base, &hidden(&m, &[3, 4, 5])) < 1e-6);
    // Same seed, same A; another seed, another A.
    let mut m2 = tiny_model(4);
    m2.add_lora(&lora_cfg(7)).unwrap();
    assert_eq!(
        max_abs_diff(m2.lora_vars()[0].1.as_tensor(), vars[0].1.as_tensor()),
        0.0
    );
    m2.add_lora(&lora_cfg(8)).unwrap();
    assert!(max_abs_diff(m2.lora_vars()[0].1.as_tensor(), vars[0].1.as_tensor()) > 0.0);
}

#[test]
fn merged_lora_equals_unmerged_and_unmerge_restores_the_base() {
    let mut m = tiny_model(5);
    let input = [9u32, 8, 7, 6, 5, 4];
    let base = hidden(&m, &input);
    m.add_lora(&LoraConfig {
        targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Down],
        ..lora_cfg(1)
    })
    .unwrap();
    randomise_b(&m);
    let unmerged = hidden(&m, &input);
    assert!(
        max_abs_diff(&unmerged, &base) > 1e-3,
        "the adapters change the output"
    );
    m.merge_lora().unwrap();
    assert!(max_abs_diff(&hidden(&m, &input), &unmerged) < 1e-4);
    m.unmerge_lora().unwrap();
    assert!(max_abs_diff(&hidden(&m, &input), &unmerged) < 1e-4);
    m.remove_lora().unwrap();
    assert!(max_abs_diff(&hidden(&m, &input), &base) < 1e-4);
    assert!(m.lora_vars().is_empty());
}

#[test]
fn lora_dropout_applies_only_in_training() {
    let mut m = tiny_model(6);
    m.add_lora(&LoraConfig {
        dropout: 0.5,
        ..lora_cfg(2)
    })
    .unwrap();
    randomise_b(&m);
    let input = ids(&[10, 11, 12, 13]);
    let eval1 = m.forward_hidden(&input, None, None, false).unwrap();
    let eval2 = m.forward_hidden(&input, None, None, false).unwrap();
    assert_eq!(max_abs_diff(&eval1, &eval2), 0.0);
    let train = m.forward_hidden(&input, None, None, true).unwrap();
    assert!(max_abs_diff(&eval1, &train) > 1e-4);
}

#[test]
fn lora_gradients_match_finite_differences() {
    let mut m = tiny_model(7);
    m.add_lora(&lora_cfg(3)).unwrap();
    randomise_b(&m);
    let input = ids(&[20, 21, 22, 23, 24]);
    let targets = Tensor::new(&[[30u32], [31], [32], [33], [34]], &Device::Cpu).unwrap();
    // Negative log-likelihood of fixed targets: small enough for f32 finite differences.
    let loss = |m: &Llama| -> Tensor {
        let h = m
            .forward_hidden(&input, None, None, false)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let logp = candle_nn::ops::log_softmax(&m.logits(&h).unwrap(), D::Minus1).unwrap();
        logp.gather(&targets, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .neg()
            .unwrap()
    };
    let grads = loss(&m).backward().unwrap();
    let vars = m.lora_vars();
    for idx in [0usize, 1, 6, 13, 27] {
        let (name, var) = &vars[idx];
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g00 = g
            .flatten_all()
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        let orig = var.as_tensor().copy().unwrap();
        let eps = 1e-2f64;
        let shifted = |delta: f64| -> f64 {
            let mut v = orig.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v[0] += delta as f32;
            var.set(&Tensor::from_vec(v, orig.shape(), &Device::Cpu).unwrap())
                .unwrap();
            loss(&m)
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        var.set(&orig).unwrap();
        assert!(
            (fd - g00).abs() <= 2e-2 * g00.abs().max(fd.abs()) + 2e-3,
            "{name}: analytic {g00}, numeric {fd}"
        );
    }
}

#[test]
fn gguf_round_trip_unpermutes_qk_and_builds_the_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(8);
    let path = dir.path().join("tiny.gguf");
    write_gguf(&m, &path);
    let loaded = load_gguf(&path).unwrap();
    assert_eq!(loaded.model.config().vocab_size, m.config().vocab_size);
    let input = [1u32, 70, 80, 90, 259, 261];
    assert!(max_abs_diff(&hidden(&loaded.model, &input), &hidden(&m, &input)) < 1e-6);

    let tok = &loaded.tokenizer;
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (Some(1), Some(2), Some(2))
    );
    let text = "<|im_start|>user\nthe theme 42<|im_end|>";
    let enc = tok.encode(text, false).unwrap();
    assert_eq!(enc[0], 1);
    assert_eq!(*enc.last().unwrap(), 2);
    assert!(enc.contains(&261), "merge Ġt + he = Ġthe applied: {enc:?}");
    assert_eq!(tok.decode(&enc, false).unwrap(), text);
    assert_eq!(tok.decode(&enc, true).unwrap(), "user\nthe theme 42");
    let chat = tok
        .apply_chat_template(&[ChatMessage::user("hi")], true)
        .unwrap();
    assert_eq!(
        chat,
        "<|im_start|>system\nYou are tiny.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn export_and_reload_as_hf_folder_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&tiny_model(9), &gguf);
    let loaded = load_gguf(&gguf).unwrap();
    let out = dir.path().join("hf");
    export_hf_dir(&loaded.model, &loaded.tokenizer, &out).unwrap();
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let back = load_hf_dir(&out).unwrap();
    assert_eq!(back.model.config(), loaded.model.config());
    let input = [1u32, 60, 61, 62, 2];
    assert_eq!(
        max_abs_diff(&hidden(&back.model, &input), &hidden(&loaded.model, &input)),
        0.0
    );
    let text = "<|im_start|>assistant\nthe 🍕 café<|im_end|>";
    assert_eq!(
        back.tokenizer.encode(text, false).unwrap(),
        loaded.tokenizer.encode(text, false).unwrap()
    );
    assert_eq!(
        back.tokenizer.chat_template(),
        loaded.tokenizer.chat_template()
    );
    assert_eq!(
        back.tokenizer.special_tokens().eos,
        loaded.tokenizer.special_tokens().eos
    );
}

#[test]
fn qwen2_variant_with_qkv_bias_and_untied_head_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&tiny_model(10), &gguf);
    let tokenizer = load_gguf(&gguf).unwrap().tokenizer;
    let mut cfg = common::tiny_config();
    cfg.model_type = "qwen2".into();
    cfg.attention_bias = true;
    cfg.tie_word_embeddings = false;
    // On the loaders' device, so that the reloaded model computes in the same order.
    let m = Llama::random(cfg.clone(), 11, &sde_engine::default_device().unwrap()).unwrap();
    assert!(
        m.named_tensors()
            .iter()
            .any(|(n, _)| n == "model.layers.1.self_attn.k_proj.bias")
    );
    assert!(m.named_tensors().iter().any(|(n, _)| n == "lm_head.weight"));
    let out = dir.path().join("qwen");
    export_hf_dir(&m, &tokenizer, &out).unwrap();
    let back = load_hf_dir(&out).unwrap();
    assert_eq!(back.model.config(), &cfg);
    let input = [5u32, 6, 7];
    let a = m.logits(&hidden(&m, &input)).unwrap();
    let b = back.model.logits(&hidden(&back.model, &input)).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn hub_ids_resolve_offline_through_the_standard_cache_layout() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&tiny_model(12), &gguf);
    let loaded = load_gguf(&gguf).unwrap();
    let cache = dir.path().join("hub");
    let repo = cache.join("models--sde-test--tiny");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    export_hf_dir(
        &loaded.model,
        &loaded.tokenizer,
        &repo.join("snapshots").join(commit),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();

    let hub = load_hub("sde-test/tiny", "main", Some(&cache), true).unwrap();
    let input = [1u32, 2, 3];
    assert_eq!(
        max_abs_diff(&hidden(&hub.model, &input), &hidden(&loaded.model, &input)),
        0.0
    );
    assert!(
        matches!(&hub.source, sde_engine::ModelSource::Hub { snapshot, .. } if snapshot.ends_with(commit))
    );
    // A commit hash works as the revision too.
    load_hub("sde-test/tiny", commit, Some(&cache), true).unwrap();
    let err = load_hub("sde-test/absent", "main", Some(&cache), true).unwrap_err();
    assert!(matches!(err, EngineError::Hub { .. }), "{err}");
}

#[test]
fn corrupt_or_truncated_gguf_names_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_gguf(&tiny_model(13), &path);
    let bytes = std::fs::read(&path).unwrap();

    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let err = load_gguf(&truncated).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            EngineError::Gguf {
                tensor: Some(_),
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("truncated.gguf") && msg.contains("tensor `"),
        "{msg}"
    );

    let mut bad = bytes.clone();
    bad[..4].copy_from_slice(b"XXXX");
    let bad_path = dir.path().join("badmagic.gguf");
    std::fs::write(&bad_path, &bad).unwrap();
    let err = load_gguf(&bad_path).unwrap_err();
    assert!(
        matches!(&err, EngineError::Gguf { tensor: None, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("badmagic.gguf"));
}

#[test]
fn corrupt_or_truncated_safetensors_names_the_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&tiny_model(14), &gguf);
    let loaded = load_gguf(&gguf).unwrap();
    let out = dir.path().join("hf");
    export_hf_dir(&loaded.model, &loaded.tokenizer, &out).unwrap();
    let st = out.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();

    std::fs::write(&st, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_hf_dir(&out).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            EngineError::Safetensors {
                tensor: Some(_),
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );

    let mut garbage = bytes.clone();
    garbage[10] = b'\x01';
    std::fs::write(&st, &garbage).unwrap();
    let err = load_hf_dir(&out).unwrap_err();
    assert!(matches!(&err, EngineError::Safetensors { .. }), "{err}");

    std::fs::write(&st, &bytes).unwrap();
    std::fs::remove_file(out.join("tokenizer.json")).unwrap();
    let err = load_hf_dir(&out).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let m = tiny_model(15);
    let mut tensors: std::collections::HashMap<_, _> = m.named_tensors().into_iter().collect();
    tensors.remove("model.layers.1.mlp.up_proj.weight");
    let err =
        Llama::from_tensors(m.config().clone(), tensors.clone(), &Device::Cpu, "ckpt").unwrap_err();
    assert!(
        matches!(&err, EngineError::MissingTensor { tensor, .. } if tensor == "model.layers.1.mlp.up_proj.weight")
    );
    tensors.insert(
        "model.layers.1.mlp.up_proj.weight".into(),
        Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Llama::from_tensors(m.config().clone(), tensors, &Device::Cpu, "ckpt").unwrap_err();
    assert!(
        matches!(&err, EngineError::ShapeMismatch { actual, .. } if actual == &[3, 3]),
        "{err}"
    );
}

#[test]
fn scores_equal_log_softmax_of_the_full_forward_for_any_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    write_gguf(&tiny_model(16), &gguf);
    let lm = load_gguf(&gguf).unwrap();
    let pairs = [
        ("the prompt", " the answer"),
        ("x", " yz!"),
        ("longer prompt here", " ok"),
    ];
    let one = score(&lm.model, &lm.tokenizer, &pairs, 1).unwrap();
    let three = score(&lm.model, &lm.tokenizer, &pairs, 3).unwrap();
    for ((p, c), (a, b)) in pairs.iter().zip(one.iter().zip(&three)) {
        let pi = lm.tokenizer.encode(p, false).unwrap();
        let ci = lm.tokenizer.encode(c, false).unwrap();
        let all: Vec<u32> = pi.iter().chain(&ci).copied().collect();
        let logp = candle_nn::ops::log_softmax(
            &lm.model.logits(&hidden(&lm.model, &all)).unwrap(),
            D::Minus1,
        )
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        let manual: Vec<f32> = (pi.len()..all.len())
            .map(|t| logp[t - 1][all[t] as usize])
            .collect();
        assert_eq!(a.count, ci.len());
        for ((x, y), z) in a.token_logprobs.iter().zip(&b.token_logprobs).zip(&manual) {
            assert!((x - z).abs() < 1e-4 && (y - z).abs() < 1e-4, "{x} {y} {z}");
        }
        assert!((a.perplexity() - (-a.sum / a.count as f64).exp()).abs() < 1e-9);
    }
    let ppl =
        sde_engine::prompt_perplexity(&lm.model, &lm.tokenizer, &["the prompt", "x y"], 2).unwrap();
    assert_eq!(ppl.per_item.len(), 2);
    assert!(ppl.per_item.iter().all(|p| p.is_finite() && *p > 1.0));
    let err = sequence_logprobs(&lm.model, &[(vec![1, 2], 0)], 1).unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput { .. }));
}

/// Sequences sharing a 12-token prefix score the same whether the prefix runs once per batch
/// or once per row, for scored spans that start inside and after the prefix.
#[test]
fn a_shared_prefix_runs_once_and_scores_the_same() {
    let m = tiny_model(18);
    let prefix: Vec<u32> = (0..12).map(|k| 3 + (k * 7) % 50).collect();
    let items: Vec<(Vec<u32>, usize)> = (0..5u32)
        .map(|i| {
            let mut seq = prefix.clone();
            seq.extend((0..(1 + i * 3)).map(|k| 4 + (i * 13 + k * 5) % 55));
            let start = [1, 5, 12, 13, 14][i as usize].min(seq.len() - 1).max(1);
            (seq, start)
        })
        .collect();
    assert_eq!(
        sde_engine::prefix::shared_prefix_len(
            &items.iter().map(|(s, _)| s.as_slice()).collect::<Vec<_>>()
        ),
        12
    );
    let run = |share_prefix, batch_size| {
        sequence_logprobs_with(
            &m,
            &items,
            ScoreOptions {
                batch_size,
                share_prefix,
            },
        )
        .unwrap()
    };
    let shared = run(true, 5);
    let plain = run(false, 5);
    let single = run(false, 1);
    for ((a, b), c) in shared.iter().zip(&plain).zip(&single) {
        assert_eq!(a.count, b.count);
        assert_eq!(a.count, c.count);
        for ((x, y), z) in a
            .token_logprobs
            .iter()
            .zip(&b.token_logprobs)
            .zip(&c.token_logprobs)
        {
            assert!((x - y).abs() < 1e-4 && (x - z).abs() < 1e-4, "{x} {y} {z}");
        }
    }
    assert_eq!(shared[0].count, items[0].0.len() - 1);
}

#[test]
fn chat_templates_get_python_helpers() {
    let special = sde_engine::SpecialTokens {
        bos: Some(("<s>".into(), 1)),
        ..Default::default()
    };
    let tmpl = "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}\
{{ loop.index }}:{{ m.content.strip() }}|{{ m | tojson }}\n{% endfor %}";
    let out =
        sde_engine::render_chat_template(tmpl, &[ChatMessage::user("  hi  ")], false, &special)
            .unwrap();
    assert_eq!(
        out,
        "<s>1:hi|{\"content\": \"  hi  \", \"role\": \"user\"}\n"
    );
    let err =
        sde_engine::render_chat_template(tmpl, &[ChatMessage::new("tool", "x")], false, &special)
            .unwrap_err();
    assert!(err.to_string().contains("no tools"), "{err}");
}

#[test]
fn a_missing_default_model_is_an_error_when_fetching_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let err = sde_engine::default_model_path_in(dir.path(), false).unwrap_err();
    assert!(matches!(err, EngineError::ModelNotCached { .. }), "{err}");
}

#[test]
fn rope_scaling_changes_positions_only_when_configured() {
    let base = tiny_model(17);
    let mut cfg = base.config().clone();
    cfg.rope_scaling = Some(sde_engine::RopeScaling {
        rope_type: "linear".into(),
        factor: 2.0,
        low_freq_factor: None,
        high_freq_factor: None,
        original_max_position_embeddings: None,
    });
    let tensors = base.named_tensors().into_iter().collect();
    let scaled = Llama::from_tensors(cfg, tensors, &Device::Cpu, "scaled").unwrap();
    let input = [3u32, 4, 5, 6];
    // Position 0 is unaffected by scaling; later positions change.
    let a = hidden(&base, &input);
    let b = hidden(&scaled, &input);
    assert!(max_abs_diff(&a.narrow(1, 0, 1).unwrap(), &b.narrow(1, 0, 1).unwrap()) < 1e-6);
    assert!(max_abs_diff(&a, &b) > 1e-4);
}
