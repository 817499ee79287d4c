//! Seeded synthetic datasets: the offline default for every task.
//!
//! Generation is a pure function of (configuration, seed, count): the same inputs give
//! byte-identical records on every platform (ChaCha8 seeded explicitly, no hash-map order,
//! no floating-point formatting in the text).

pub mod event;
pub mod masa;
pub mod ner;

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Generator knobs, set in a synthetic recipe's `[options.synthetic]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// 0..=1: how often hard constructions appear (negation, implicit mentions, contrast,
    /// expectation reversals, distractor mentions of unlabelled aspects).
    pub difficulty: f64,
    /// 0..=1: probability that a gold label is replaced by a different random label.
    pub label_noise: f64,
    /// 0..=1: probability that a MASA aspect slot is mentioned (the study has about half).
    pub mention_rate: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            difficulty: 0.5,
            label_noise: 0.0,
            mention_rate: 0.5,
        }
    }
}

impl SynthConfig {
    /// Checks that every knob lies in `0..=1`.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("difficulty", self.difficulty),
            ("label_noise", self.label_noise),
            ("mention_rate", self.mention_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(DataError::Invalid {
                    what: "synthetic configuration",
                    message: format!("{name} = {value} is outside 0..=1"),
                });
            }
        }
        Ok(())
    }
}

/// The seed of one split: the recipe seed mixed with the split name, so that splits differ.
pub fn split_seed(seed: u64, split: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in split.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(seed ^ h)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator's random source.
pub(crate) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniformly chosen item of a non-empty slice.
pub(crate) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("lexicon lists are non-empty")
}

/// Text assembled piece by piece, recording byte spans of chosen pieces.
#[derive(Debug, Default)]
pub(crate) struct TextBuilder {
    pub(crate) text: String,
}

impl TextBuilder {
    /// Appends `piece` and returns its byte span.
    pub(crate) fn push(&mut self, piece: &str) -> crate::record::Span {
        let start = self.text.len();
        self.text.push_str(piece);
        crate::record::Span {
            start,
            end: self.text.len(),
        }
    }
}

/// `s` with its first character upper-cased (ASCII only, so byte lengths are unchanged).
pub(crate) fn capitalize(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(first) = out.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    out
}
