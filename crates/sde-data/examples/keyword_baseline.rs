//! Scores the keyword-lookup baseline on synthetic MASA reviews at several difficulties.
//!
//! `cargo run -p sde-data --example keyword_baseline`

use sde_data::synth::masa::{generate, keyword_baseline};
use sde_data::{Domain, Sentiment, SynthConfig};

fn main() -> Result<(), sde_data::DataError> {
    let domain = Domain::study_all();
    println!("difficulty  accuracy  mentioned-acc  majority(unmentioned)");
    for difficulty in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let config = SynthConfig {
            difficulty,
            ..SynthConfig::default()
        };
        let records = generate(&domain, &config, 7, 2000, "kb")?;
        let (mut right, mut total, mut m_right, mut m_total, mut unmentioned) = (0, 0, 0, 0, 0);
        for r in &records {
            let predicted = keyword_baseline(&r.text, &domain);
            for (a, p) in domain.aspects.iter().zip(predicted) {
                let gold = r.sentiment(&a.key);
                total += 1;
                right += usize::from(gold == p);
                if gold == Sentiment::Unmentioned {
                    unmentioned += 1;
                } else {
                    m_total += 1;
                    m_right += usize::from(gold == p);
                }
            }
        }
        println!(
            "{difficulty:10.2}  {:8.3}  {:13.3}  {:8.3}",
            right as f64 / total as f64,
            m_right as f64 / m_total as f64,
            unmentioned as f64 / total as f64
        );
    }
    Ok(())
}
