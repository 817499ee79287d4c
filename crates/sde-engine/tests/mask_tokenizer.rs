//! Loss masks on the default model's real tokenizer: the exact positions in the loss for No-MI,
//! MI and the study's exact mask, including seams where BPE would merge prompt and completion
//! if the joined text were tokenized.

use sde_engine::batch::{BosPolicy, EncodeOptions, SpecialIds, encode_texts};
use sde_engine::{LoadedModel, Tokenizer};
use sde_format::LossOn;

fn model() -> Option<LoadedModel> {
    let fixtures =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if !fixtures.is_dir() && std::env::var_os("SDE_REQUIRE_MODEL").is_none() {
        eprintln!("note: no shared fixtures and SDE_REQUIRE_MODEL unset; skipping");
        return None;
    }
    Some(sde_engine::load("default").expect("default model loads"))
}

fn positions(mask: &[bool]) -> Vec<usize> {
    mask.iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(i, _)| i)
        .collect()
}

fn check_seam(tok: &Tokenizer, prompt: &str, completion: &str, merges: bool) {
    let p = tok.encode(prompt, false).unwrap();
    let c = tok.encode(completion, false).unwrap();
    let joined = tok.encode(&format!("{prompt}{completion}"), false).unwrap();
    let mut concat = p.clone();
    concat.extend(&c);
    assert_eq!(
        joined != concat,
        merges,
        "{prompt:?} + {completion:?}: does BPE merge across the seam?"
    );
    let eos = tok.eos_id().unwrap();
    let (n_p, n) = (p.len(), p.len() + c.len() + 1);
    for (loss_on, exact, want) in [
        (LossOn::Completion, false, (n_p..n).collect::<Vec<_>>()),
        (LossOn::Completion, true, (n_p - 1..n).collect()),
        (LossOn::PromptAndCompletion, false, (1..n).collect()),
    ] {
        let opts = EncodeOptions {
            study_exact_mask: exact,
            ..EncodeOptions::default()
        };
        let (enc, report) = encode_texts(tok, [(prompt, completion, loss_on)], &opts).unwrap();
        assert!(report.is_clean());
        let s = &enc[0];
        let mut want_ids = concat.clone();
        want_ids.push(eos);
        assert_eq!(s.input_ids, want_ids, "ids of {prompt:?} + {completion:?}");
        assert_eq!(s.prompt_len, n_p);
        assert_eq!(
            positions(&s.loss_mask),
            want,
            "{loss_on:?} exact={exact} on {prompt:?} + {completion:?}"
        );
    }
}

#[test]
fn masks_are_exact_at_merging_seams() {
    let Some(m) = model() else { return };
    let tok = &m.tokenizer;
    // Joined, " positive" is one token; separately, "pos" and "itive" stay apart.
    check_seam(tok, "Review: great food.\nfood: pos", "itive", true);
    // A completion starting without a space glued to the prompt's last word.
    check_seam(tok, "The food was great", "ly overpriced", true);
    // Chinese byte-level pieces do not merge across this seam; the positions are still exact.
    check_seam(tok, "食品评价：正", "面，饮品评价：未提及", false);
}

#[test]
fn bos_follows_the_tokenizer_and_the_policy() {
    let Some(m) = model() else { return };
    let tok = &m.tokenizer;
    let special = SpecialIds::of(tok).unwrap();
    // SmolLM2's HF tokenizer adds no BOS; its BOS token is <|im_start|> = 1.
    assert_eq!(special.bos, Some(1));
    assert!(!special.tokenizer_adds_bos);
    let sample = [("food:", " positive", LossOn::Completion)];
    let (plain, _) = encode_texts(tok, sample, &EncodeOptions::default()).unwrap();
    assert_ne!(plain[0].input_ids[0], 1);
    let always = EncodeOptions {
        bos: BosPolicy::Always,
        ..EncodeOptions::default()
    };
    let (with_bos, _) = encode_texts(tok, sample, &always).unwrap();
    assert_eq!(with_bos[0].input_ids[0], 1);
    assert_eq!(&with_bos[0].input_ids[1..], &plain[0].input_ids[..]);
    assert_eq!(
        positions(&with_bos[0].loss_mask),
        positions(&plain[0].loss_mask)
            .iter()
            .map(|p| p + 1)
            .collect::<Vec<_>>()
    );
}

#[test]
fn long_prompts_are_cut_from_the_left_and_counted() {
    let Some(m) = model() else { return };
    let tok = &m.tokenizer;
    let long = "word ".repeat(100);
    let opts = EncodeOptions {
        max_len: 32,
        ..EncodeOptions::default()
    };
    let (enc, report) = encode_texts(
        tok,
        [
            (long.as_str(), " positive", LossOn::Completion),
            ("short:", &*"x ".repeat(40), LossOn::Completion),
        ],
        &opts,
    )
    .unwrap();
    assert_eq!(report.prompt_cut, vec![0]);
    assert_eq!(report.skipped, vec![1]);
    let s = &enc[0];
    assert_eq!(s.input_ids.len(), 32);
    let c = tok.encode(" positive", false).unwrap();
    assert_eq!(
        &s.input_ids[32 - c.len() - 1..31],
        &c[..],
        "the completion is intact"
    );
    assert_eq!(
        positions(&s.loss_mask),
        (32 - c.len() - 1..32).collect::<Vec<_>>()
    );
}
