//! Batched, left-padded generation equals one-by-one generation (tiny random model, greedy and
//! sampled), and on the default model equals the greedy continuations of transformers
//! (`../shared/fixtures/smollm2/greedy.json`), with and without repetition penalty 1.1.

mod common;

use common::fixtures_dir;

use candle_core::Device;
use sde_engine::{
    Decoding, FinishReason, GenerateConfig, Generation, Llama, LlamaConfig, Q8Scope, generate,
    generate_counting_drafts,
};
use serde_json::Value;

fn one_by_one(
    model: &Llama,
    prompts: &[Vec<u32>],
    stop: &[u32],
    cfg: &GenerateConfig,
) -> Vec<Generation> {
    let cfg = GenerateConfig {
        batch_size: 1,
        ..cfg.clone()
    };
    prompts
        .iter()
        .map(|p| {
            generate(model, std::slice::from_ref(p), stop, &cfg, |_| {})
                .unwrap()
                .remove(0)
        })
        .collect()
}

fn tiny_prompts() -> Vec<Vec<u32>> {
    (0..7u32)
        .map(|i| {
            (0..(2 + (i * 5) % 9))
                .map(|k| 3 + (i * 11 + k * 7) % 60)
                .collect()
        })
        .collect()
}

#[test]
fn tiny_batched_left_padded_greedy_equals_one_by_one() {
    let model = Llama::random(LlamaConfig::tiny(64, 32, 2, 4, 2), 9, &Device::Cpu).unwrap();
    let prompts = tiny_prompts();
    for penalty in [1.0, 1.1] {
        let cfg = GenerateConfig {
            max_new_tokens: 12,
            repetition_penalty: penalty,
            batch_size: 4,
            ..GenerateConfig::default()
        };
        let batched = generate(&model, &prompts, &[2], &cfg, |_| {}).unwrap();
        let single = one_by_one(&model, &prompts, &[2], &cfg);
        assert_eq!(batched, single, "repetition penalty {penalty}");
        assert!(batched.iter().all(|g| g.new_tokens() >= 1));
    }
}

/// Prompts that share a 10-token prefix decode the same with the prefix run once per batch
/// as with every prompt run in full (in a batch, and one by one for greedy decoding).
#[test]
fn tiny_shared_prefix_decodes_like_full_prompts() {
    let model = Llama::random(LlamaConfig::tiny(64, 32, 2, 4, 2), 9, &Device::Cpu).unwrap();
    let prefix: Vec<u32> = (0..10).map(|k| 5 + (k * 9) % 50).collect();
    let prompts: Vec<Vec<u32>> = tiny_prompts()
        .into_iter()
        .map(|p| prefix.iter().copied().chain(p).collect())
        .collect();
    for decoding in [
        Decoding::Greedy,
        Decoding::Sample {
            temperature: 1.2,
            top_p: 0.9,
            top_k: None,
            seed: 3,
        },
    ] {
        let cfg = |share_prefix| GenerateConfig {
            max_new_tokens: 12,
            decoding,
            batch_size: 4,
            share_prefix,
            ..GenerateConfig::default()
        };
        let shared = generate(&model, &prompts, &[2], &cfg(true), |_| {}).unwrap();
        let full = generate(&model, &prompts, &[2], &cfg(false), |_| {}).unwrap();
        assert_eq!(shared, full, "{decoding:?}");
        if decoding == Decoding::Greedy {
            // Sampling generators are seeded by the index in the input, so one-by-one runs
            // of sampled decoding are not comparable.
            assert_eq!(shared, one_by_one(&model, &prompts, &[2], &cfg(false)));
        }
    }
}

#[test]
fn tiny_sampling_is_seeded_and_independent_of_batching() {
    let model = Llama::random(LlamaConfig::tiny(64, 32, 2, 4, 2), 9, &Device::Cpu).unwrap();
    let prompts = tiny_prompts();
    let cfg = |seed, batch_size| GenerateConfig {
        max_new_tokens: 10,
        decoding: Decoding::Sample {
            temperature: 1.5,
            top_p: 0.95,
            top_k: None,
            seed,
        },
        batch_size,
        ..GenerateConfig::default()
    };
    let a = generate(&model, &prompts, &[2], &cfg(5, 3), |_| {}).unwrap();
    let b = generate(&model, &prompts, &[2], &cfg(5, 7), |_| {}).unwrap();
    let c = generate(&model, &prompts, &[2], &cfg(6, 3), |_| {}).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let greedy = generate(
        &model,
        &prompts,
        &[2],
        &GenerateConfig {
            max_new_tokens: 10,
            ..GenerateConfig::default()
        },
        |_| {},
    )
    .unwrap();
    assert_ne!(a, greedy);
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn default_model_greedy_matches_transformers_batched_and_one_by_one() {
    let Some(dir) = fixtures_dir() else { return };
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let loaded = sde_engine::load("default").expect("default model loads");
    let eos = loaded.tokenizer.eos_id().unwrap();
    let max_new = fx["max_new_tokens"].as_u64().unwrap() as usize;
    let cases = fx["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            let p = loaded
                .tokenizer
                .encode(c["prompt"].as_str().unwrap(), false)
                .unwrap();
            assert_eq!(p, ids(&c["prompt_ids"]));
            p
        })
        .collect();
    for (penalty, key) in [(1.0, "greedy"), (1.1, "greedy_repetition_penalty_1_1")] {
        let cfg = GenerateConfig {
            max_new_tokens: max_new,
            repetition_penalty: penalty,
            batch_size: 3,
            ..GenerateConfig::default()
        };
        let batched = generate(&loaded.model, &prompts, &[eos], &cfg, |_| {}).unwrap();
        let single = one_by_one(&loaded.model, &prompts, &[eos], &cfg);
        assert_eq!(batched, single, "{key}: batched vs one by one");
        for (i, (g, case)) in batched.iter().zip(fx[key].as_array().unwrap()).enumerate() {
            let mut got = g.tokens.clone();
            got.extend(g.stop_token);
            let want = ids(&case["new_ids"]);
            assert_eq!(got, want, "{key}: prompt {i}");
            let reason = if want.last() == Some(&eos) {
                FinishReason::Eos
            } else {
                FinishReason::Length
            };
            assert_eq!(g.finish_reason, reason, "{key}: prompt {i}");
            assert_eq!(g.prompt_tokens, prompts[i].len());
        }
        eprintln!(
            "{key}: {} prompts match (batched and one by one)",
            batched.len()
        );
    }
}

/// On the default model, in-context prompts (the same demonstration before each fixture
/// prompt) decode to the same greedy tokens with the demonstration run once per batch as with
/// every prompt run in full.
#[test]
fn default_model_shared_prefix_decodes_like_full_prompts() {
    let Some(dir) = fixtures_dir() else { return };
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let loaded = sde_engine::load("default").expect("default model loads");
    let eos = loaded.tokenizer.eos_id().unwrap();
    let demo = loaded
        .tokenizer
        .encode(
            "Example 1:\nThe soup was cold but the staff were lovely.\nfood: negative, staff: positive\n\nExample 2:\n",
            false,
        )
        .unwrap();
    let prompts: Vec<Vec<u32>> = fx["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| demo.iter().copied().chain(ids(&c["prompt_ids"])).collect())
        .collect();
    let cfg = |share_prefix| GenerateConfig {
        max_new_tokens: 24,
        batch_size: 3,
        share_prefix,
        ..GenerateConfig::default()
    };
    let shared = generate(&loaded.model, &prompts, &[eos], &cfg(true), |_| {}).unwrap();
    let full = generate(&loaded.model, &prompts, &[eos], &cfg(false), |_| {}).unwrap();
    assert_eq!(shared, full);
}

/// On the default model, greedy decoding through the screened f32 head (a Q8_0 copy bounds
/// every logit; see `Llama::set_head_screen`) chooses the tokens of the f32 head itself: the
/// fixture prompts alone and after an in-context demonstration, with and without the
/// repetition penalty, batched.
#[test]
fn default_model_screened_head_chooses_the_f32_heads_tokens() {
    let Some(dir) = fixtures_dir() else { return };
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let mut loaded = sde_engine::load("default").expect("default model loads");
    let eos = loaded.tokenizer.eos_id().unwrap();
    let demo = loaded
        .tokenizer
        .encode(
            "Review: The pasta was bland and the waiter forgot our drinks.\nAspects: food negative, service negative\n\nReview: ",
            false,
        )
        .unwrap();
    let plain: Vec<Vec<u32>> = fx["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids(&c["prompt_ids"]))
        .collect();
    let prompts: Vec<Vec<u32>> = plain
        .iter()
        .cloned()
        .chain(
            plain
                .iter()
                .map(|p| demo.iter().chain(p).copied().collect()),
        )
        .collect();
    for penalty in [1.0, 1.1] {
        let cfg = GenerateConfig {
            max_new_tokens: 40,
            repetition_penalty: penalty,
            batch_size: 4,
            share_prefix: false,
            ..GenerateConfig::default()
        };
        loaded.model.set_head_screen(true);
        let screened = generate(&loaded.model, &prompts, &[eos], &cfg, |_| {}).unwrap();
        loaded.model.set_head_screen(false);
        let f32_head = generate(&loaded.model, &prompts, &[eos], &cfg, |_| {}).unwrap();
        assert_eq!(screened, f32_head, "repetition penalty {penalty}");
        let tokens: usize = screened.iter().map(Generation::new_tokens).sum();
        eprintln!("penalty {penalty}: {tokens} tokens the same with and without the screen");
    }
}

/// Q8_0 decode steps against the f32 reference: the share of transformers' greedy tokens
/// reproduced before the first divergence, per scope (printed, and held to the figures
/// measured when the option was added, with a small margin).
#[test]
fn default_model_q8_decode_stays_close_to_the_f32_reference() {
    let Some(dir) = fixtures_dir() else { return };
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let mut loaded = sde_engine::load("default").expect("default model loads");
    let eos = loaded.tokenizer.eos_id().unwrap();
    let max_new = fx["max_new_tokens"].as_u64().unwrap() as usize;
    let cases = fx["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt_ids"])).collect();
    let cfg = GenerateConfig {
        max_new_tokens: max_new,
        repetition_penalty: 1.0,
        batch_size: 3,
        ..GenerateConfig::default()
    };
    for (scope, floor) in [
        (Q8Scope::Layers, 0.7),
        (Q8Scope::LayersAndHead, 0.5),
        (Q8Scope::LayersHeadAndPrompts, 0.5),
    ] {
        loaded.model.set_q8_decode(scope).unwrap();
        // The default model's layers are Q4_1 in its GGUF: where a Q4_1 product runs (AVX2
        // with FMA and F16C, with or without AVX-512 VNNI), every layer keeps those values.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            assert_eq!(loaded.model.quantized_layer_formats(), ["Q4_1"]);
        }
        let got = generate(&loaded.model, &prompts, &[eos], &cfg, |_| {}).unwrap();
        let (mut prefix, mut total) = (0usize, 0usize);
        for (g, case) in got.iter().zip(cases) {
            let mut toks = g.tokens.clone();
            toks.extend(g.stop_token);
            let want = ids(&case["new_ids"]);
            prefix += toks.iter().zip(&want).take_while(|(a, b)| a == b).count();
            total += want.len();
        }
        let share = prefix as f64 / total as f64;
        eprintln!(
            "{scope:?}: {prefix} of {total} reference tokens before the first divergence ({share:.3})"
        );
        assert!(share >= floor, "{scope:?}: diverges early: {share:.3}");
    }
    loaded.model.set_q8_decode(Q8Scope::Off).unwrap();
    let back = generate(&loaded.model, &prompts, &[eos], &cfg, |_| {}).unwrap();
    for (g, case) in back.iter().zip(cases) {
        let mut toks = g.tokens.clone();
        toks.extend(g.stop_token);
        assert_eq!(toks, ids(&case["new_ids"]), "f32 again after Q8Scope::Off");
    }
}

/// Speculative decoding (quantized drafts, f32 verification) gives the tokens of f32 greedy
/// decoding on a tiny random model: one prompt at a time and in left-padded batches (rows
/// keeping different numbers of drafts), with and without the repetition penalty, a stop token,
/// a shared prefix, both quantized scopes and several draft lengths.
#[test]
fn tiny_speculative_decoding_equals_f32_greedy() {
    let mut model = Llama::random(LlamaConfig::tiny(96, 64, 2, 4, 2), 9, &Device::Cpu).unwrap();
    let mut prompts = tiny_prompts();
    // Rows that share a prefix of 10 tokens (run once per batch).
    let stem: Vec<u32> = (0..10).map(|k| 5 + (k * 13) % 50).collect();
    prompts.extend((0..3u32).map(|i| stem.iter().copied().chain([7 + i, 9 + 2 * i]).collect()));
    let cfg = |penalty, batch_size, draft_tokens| GenerateConfig {
        max_new_tokens: 20,
        repetition_penalty: penalty,
        batch_size,
        draft_tokens,
        ..GenerateConfig::default()
    };
    let mut kept = Vec::new();
    for penalty in [1.0, 1.1] {
        let reference = one_by_one(&model, &prompts, &[2], &cfg(penalty, 1, 0));
        for scope in [Q8Scope::Layers, Q8Scope::LayersAndHead] {
            model.set_q8_decode(scope).unwrap();
            for (batch, draft) in [(1, 4), (3, 4), (4, 1), (10, 7)] {
                let (got, counts) = generate_counting_drafts(
                    &model,
                    &prompts,
                    &[2],
                    &cfg(penalty, batch, draft),
                    |_| {},
                )
                .unwrap();
                assert_eq!(
                    got, reference,
                    "{scope:?}, penalty {penalty}, batch {batch}, {draft} draft tokens"
                );
                eprintln!(
                    "{scope:?}, penalty {penalty}, batch {batch}, {draft} drafts: {counts:?}"
                );
                assert!(counts.kept <= counts.proposed);
                kept.push(counts.kept_share());
            }
            model.set_q8_decode(Q8Scope::Off).unwrap();
        }
    }
    // Drafts were kept and drafts were turned down: both paths ran.
    assert!(kept.iter().all(|&k| k > 0.0), "{kept:?}");
    assert!(kept.iter().any(|&k| k < 1.0), "{kept:?}");
}

/// Budgets shorter than a round and a zero budget end where f32 greedy decoding ends.
#[test]
fn tiny_speculative_decoding_keeps_the_token_budget() {
    let mut model = Llama::random(LlamaConfig::tiny(96, 64, 2, 4, 2), 4, &Device::Cpu).unwrap();
    let prompts = tiny_prompts();
    for max_new_tokens in [0, 1, 2, 5, 6] {
        let cfg = GenerateConfig {
            max_new_tokens,
            batch_size: 4,
            ..GenerateConfig::default()
        };
        model.set_q8_decode(Q8Scope::Off).unwrap();
        let reference = generate(&model, &prompts, &[], &cfg, |_| {}).unwrap();
        model.set_q8_decode(Q8Scope::Layers).unwrap();
        let spec = GenerateConfig {
            draft_tokens: 4,
            ..cfg
        };
        let got = generate(&model, &prompts, &[], &spec, |_| {}).unwrap();
        assert_eq!(got, reference, "budget {max_new_tokens}");
        assert!(got.iter().all(|g| g.tokens.len() == max_new_tokens));
    }
}

/// Drafts need greedy decoding and quantized copies to draft with; both are named.
#[test]
fn speculative_decoding_refuses_sampling_and_a_model_without_quantized_copies() {
    let mut model = Llama::random(LlamaConfig::tiny(96, 64, 2, 4, 2), 9, &Device::Cpu).unwrap();
    let prompts = tiny_prompts();
    let cfg = GenerateConfig {
        draft_tokens: 3,
        ..GenerateConfig::default()
    };
    let err = generate(&model, &prompts, &[], &cfg, |_| {}).unwrap_err();
    assert!(err.to_string().contains("set_q8_decode"), "{err}");
    model.set_q8_decode(Q8Scope::Layers).unwrap();
    let sampled = GenerateConfig {
        decoding: Decoding::Sample {
            temperature: 0.7,
            top_p: 1.0,
            top_k: None,
            seed: 1,
        },
        ..cfg
    };
    let err = generate(&model, &prompts, &[], &sampled, |_| {}).unwrap_err();
    assert!(err.to_string().contains("greedy"), "{err}");
}

/// On the default model, speculative decoding with its Q4_1 layers drafting gives
/// transformers' greedy tokens (the fixtures), with and without repetition penalty 1.1,
/// batched, as plain f32 decoding does.
#[test]
fn default_model_speculative_decoding_matches_transformers() {
    let Some(dir) = fixtures_dir() else { return };
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("greedy.json")).unwrap()).unwrap();
    let mut loaded = sde_engine::load("default").expect("default model loads");
    loaded.model.set_q8_decode(Q8Scope::Layers).unwrap();
    let eos = loaded.tokenizer.eos_id().unwrap();
    let max_new = fx["max_new_tokens"].as_u64().unwrap() as usize;
    let cases = fx["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt_ids"])).collect();
    for (penalty, key) in [(1.0, "greedy"), (1.1, "greedy_repetition_penalty_1_1")] {
        for batch_size in [1, 3] {
            let cfg = GenerateConfig {
                max_new_tokens: max_new,
                repetition_penalty: penalty,
                batch_size,
                draft_tokens: 6,
                ..GenerateConfig::default()
            };
            let got = generate(&loaded.model, &prompts, &[eos], &cfg, |_| {}).unwrap();
            for (i, (g, case)) in got.iter().zip(fx[key].as_array().unwrap()).enumerate() {
                let mut toks = g.tokens.clone();
                toks.extend(g.stop_token);
                assert_eq!(
                    toks,
                    ids(&case["new_ids"]),
                    "{key}, batch {batch_size}: prompt {i}"
                );
            }
        }
    }
}
