//! Times the phases of one LoRA train step (forward, loss, backward, optimizer) on the
//! benchmark workload, to guide engine work: `cargo run --release -p sde-benches --example
//! train_breakdown -- [batch] [seq] [steps]`.

use std::time::Instant;

use candle_core::DType;
use sde_benches::{LOSS_TOKENS, bench_lora, random_smollm2_135m};
use sde_engine::batch::{EncodedSample, collate};
use sde_engine::loss::masked_loss;

#[allow(unsafe_code)]
fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (batch, seq, steps) = (
        *args.first().unwrap_or(&4),
        *args.get(1).unwrap_or(&128),
        *args.get(2).unwrap_or(&3),
    );
    let mut model = random_smollm2_135m(7)?;
    model.add_lora(&bench_lora())?;
    let mut ids = sde_benches::Ids::new(1);
    let samples: Vec<EncodedSample> = (0..batch)
        .map(|index| EncodedSample {
            index,
            input_ids: ids.tokens(seq, 49152),
            loss_mask: (0..seq).map(|i| i >= seq - LOSS_TOKENS).collect(),
            prompt_len: seq - LOSS_TOKENS,
            prompt_tokens_cut: 0,
        })
        .collect();
    let rows: Vec<&EncodedSample> = samples.iter().collect();
    let b = collate(&rows, 0, model.device())?;
    if std::env::var_os("ONLY_MANUAL").is_some() {
        for _ in 0..steps {
            let t = Instant::now();
            let m = model.lora_loss_and_grads(&b, b.n_loss_tokens)?;
            eprintln!(
                "hand-written {:.3}s loss {:.4}",
                t.elapsed().as_secs_f64(),
                m.loss
            );
        }
        return Ok(());
    }
    for step in 0..steps {
        let t0 = Instant::now();
        let hidden = model.forward_hidden(&b.input_ids, Some(&b.attention_mask), None, true)?;
        let t1 = Instant::now();
        let loss = masked_loss(
            &hidden,
            &b.loss_positions,
            &b.targets,
            b.n_loss_tokens,
            |h| model.logits(h),
        )?;
        let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let t2 = Instant::now();
        let store = loss.backward()?;
        let t3 = Instant::now();
        drop(store);
        let t4 = Instant::now();
        let manual = model.lora_loss_and_grads(&b, b.n_loss_tokens)?;
        let t5 = Instant::now();
        eprintln!(
            "        hand-written forward+backward {:.3}s (loss {:.4})",
            (t5 - t4).as_secs_f64(),
            manual.loss
        );
        eprintln!(
            "step {step}: forward {:.3}s loss {:.3}s backward {:.3}s drop {:.3}s (loss {v:.4})",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t4 - t3).as_secs_f64()
        );
    }
    Ok(())
}
