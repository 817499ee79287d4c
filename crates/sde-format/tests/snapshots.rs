//! One exact rendered sample per task × preset × language (and the two other instruction
//! paraphrases of ES-SDE), reviewed by eye and kept under `tests/snapshots/`.

mod common;

use common::{LANGUAGES, TASKS, domain, record};
use sde_format::{Design, Segment, render};

fn show(design: &Design, sample: &sde_format::Sample) -> String {
    format!(
        "design: {design}\nloss: {}\n--- prompt ---\n{}\n--- completion ---\n{}\n--- end ---\n",
        sample.loss_on.segment(),
        sample.prompt,
        sample.completion
    )
}

#[test]
fn every_preset_in_every_language() {
    for &task in &TASKS {
        for &language in &LANGUAGES {
            let record = record(task, language);
            let domain = domain(task);
            let mut designs: Vec<(String, Design)> = Design::presets(task, language)
                .into_iter()
                .map(|p| (p.name.to_string(), p.design))
                .collect();
            let es = Design::preset(task, language, "es-sde").unwrap();
            for p in [1, 2] {
                designs.push((format!("es-sde.p{p}"), es.with_paraphrase(p).unwrap()));
            }
            for (name, design) in designs {
                let sample =
                    render(&record, &design, &domain).unwrap_or_else(|e| panic!("{design}: {e}"));
                let snapshot = format!(
                    "{}_{}_{}",
                    task.segment(),
                    language.segment(),
                    name.replace('.', "_")
                );
                insta::assert_snapshot!(snapshot, show(&design, &sample));
            }
        }
    }
}
