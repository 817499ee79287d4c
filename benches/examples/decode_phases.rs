//! Where batched greedy decoding spends its time: the prompt pass against the decode steps,
//! for each Q8_0 scope: `cargo run --release -p sde-benches --example decode_phases -- [batch]
//! [q8|q8p|f32]` (`q8`: the Q8_0 layers-and-head scope only; `q8p`: the scope that also
//! quantizes prompts; `f32`: no quantized weights). `PROMPT_LEN=N` cuts the 128-token prompts
//! to N tokens, so that a profile of the run is mostly decode steps. `GGUF=path` loads that
//! model instead of random SmolLM2-135M weights (a GGUF's Q4_1 layers keep their 4-bit values).

use std::time::Instant;

use anyhow::Result;
use sde_benches::{decode_prompts, random_smollm2_135m, run_decode};
use sde_engine::Q8Scope;

#[allow(unsafe_code)]
fn main() -> Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let batch: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(8);
    let mut model = match std::env::var("GGUF") {
        Ok(path) => sde_engine::load_gguf(&path)?.model,
        Err(_) => random_smollm2_135m(7)?,
    };
    let mut prompts = decode_prompts(&model, batch, 0, 13);
    if let Ok(len) = std::env::var("PROMPT_LEN") {
        let len: usize = len.parse()?;
        prompts.iter_mut().for_each(|p| p.truncate(len));
    }
    let scopes = match std::env::args().nth(2).as_deref() {
        Some("q8") => vec![Q8Scope::LayersAndHead],
        Some("q8p") => vec![Q8Scope::LayersHeadAndPrompts],
        Some("f32") => vec![Q8Scope::Off],
        _ => vec![
            Q8Scope::Off,
            Q8Scope::LayersAndHead,
            Q8Scope::LayersHeadAndPrompts,
        ],
    };
    for scope in scopes {
        model.set_q8_decode(scope)?;
        let time = |new: usize| -> Result<f64> {
            run_decode(&model, &prompts, new)?;
            let reps = 3;
            let t = Instant::now();
            for _ in 0..reps {
                run_decode(&model, &prompts, new)?;
            }
            Ok(t.elapsed().as_secs_f64() / reps as f64)
        };
        let (one, all) = (time(1)?, time(32)?);
        println!(
            "{scope:?} batch {batch}: prompt pass + 1 step {:.0} ms, 31 more steps {:.0} ms ({:.1} ms a step), {:.1} new tok/s",
            one * 1e3,
            (all - one) * 1e3,
            (all - one) * 1e3 / 31.0,
            (32 * batch) as f64 / all
        );
    }
    Ok(())
}
