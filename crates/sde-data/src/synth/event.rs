//! Synthetic event detection over the study's ten MAVEN types: history-style sentences with
//! trigger words, some with several events and some with none.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{SynthConfig, pick, rng};
use crate::error::Result;
use crate::record::{Event, EventRecord, Span};

/// Trigger words per `(type, form)`, form `v` (past-tense verb) or `n` (noun).
fn triggers(slot: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match slot {
        "Catastrophe.n" => (
            "Catastrophe",
            &["earthquake", "flood", "hurricane", "wildfire", "storm"],
        ),
        "Attack.v" => ("Attack", &["attacked", "bombed", "raided", "shelled"]),
        "Attack.n" => ("Attack", &["attack", "raid", "bombing"]),
        "Hostile_encounter.n" => ("Hostile_encounter", &["battle", "clash", "skirmish"]),
        "Hostile_encounter.v" => ("Hostile_encounter", &["fought", "clashed"]),
        "Causation.v" => ("Causation", &["caused", "triggered", "provoked"]),
        "Process_start.v" => ("Process_start", &["began", "started", "commenced"]),
        "Competition.n" => (
            "Competition",
            &["tournament", "match", "championship", "race"],
        ),
        "Motion.v" => ("Motion", &["moved", "sailed", "marched", "flew"]),
        "Social_event.n" => (
            "Social_event",
            &["festival", "ceremony", "wedding", "concert"],
        ),
        "Killing.v" => ("Killing", &["killed", "murdered", "executed"]),
        "Killing.n" => ("Killing", &["massacre", "assassination"]),
        "Conquering.v" => ("Conquering", &["captured", "conquered", "seized"]),
        _ => return None,
    })
}

const TEMPLATES: &[&str] = &[
    "The {Catastrophe.n} {Causation.v} severe damage to the coastal towns .",
    "In {YEAR} , the army {Attack.v} the city and {Conquering.v} the harbour .",
    "The {Hostile_encounter.n} near the river lasted three days .",
    "After the {Competition.n} , the team {Motion.v} back to the capital .",
    "Rebels {Killing.v} two officials during the {Social_event.n} .",
    "Construction of the bridge {Process_start.v} in {YEAR} .",
    "The fleet {Motion.v} north after the {Hostile_encounter.n} .",
    "The {Social_event.n} was held in the old town hall .",
    "The {Catastrophe.n} {Killing.v} hundreds of people in {YEAR} .",
    "The {Attack.n} on the convoy {Causation.v} a wider war .",
    "She won the {Competition.n} in {YEAR} .",
    "Government forces {Hostile_encounter.v} with rebels and {Conquering.v} the fort .",
    "The {Killing.n} {Causation.v} protests across the region .",
    "The museum is located on the north bank of the river .",
    "He was born in {YEAR} and studied law .",
    "The album contains twelve songs and a bonus track .",
    "The ship was named after the storm season of {YEAR} .",
];

/// Generates `count` sentences; ids are `{prefix}/{index}`.
pub fn generate(
    config: &SynthConfig,
    seed: u64,
    count: usize,
    id_prefix: &str,
) -> Result<Vec<EventRecord>> {
    config.validate()?;
    let mut rng = rng(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        out.push(sentence(&mut rng, config, format!("{id_prefix}/{i}")));
    }
    Ok(out)
}

fn sentence(rng: &mut ChaCha8Rng, config: &SynthConfig, id: String) -> EventRecord {
    let template = *pick(rng, TEMPLATES);
    let mut text = String::new();
    let mut events = Vec::new();
    for (n, word) in template.split(' ').enumerate() {
        if n > 0 {
            text.push(' ');
        }
        let slot = word.strip_prefix('{').and_then(|w| w.strip_suffix('}'));
        match slot {
            Some("YEAR") => text.push_str(&rng.random_range(1600..2000).to_string()),
            Some(slot) => match triggers(slot) {
                Some((kind, words)) => {
                    let trigger = *pick(rng, words);
                    let start = text.len();
                    text.push_str(trigger);
                    events.push(Event {
                        kind: kind.to_string(),
                        trigger: trigger.to_string(),
                        span: Span {
                            start,
                            end: text.len(),
                        },
                    });
                }
                None => text.push_str(word),
            },
            None => text.push_str(word),
        }
    }
    if config.label_noise > 0.0 && !events.is_empty() && rng.random_bool(config.label_noise) {
        let k = rng.random_range(0..events.len());
        events.remove(k);
    }
    EventRecord { id, text, events }
}
