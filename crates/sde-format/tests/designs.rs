//! Design ids, presets, and every combination of axes rendering for every task.

mod common;

use common::{LANGUAGES, TASKS, domain, other_domain, record};
use sde_format::{
    ChatTemplate, Context, Design, FormatError, LabelForm, Language, Layout, LossOn, Placement,
    Reasoning, Segment, TaskKind, Unmentioned, Wrap, render_with,
};

fn all_designs() -> Vec<Design> {
    let mut out = Vec::new();
    for &task in &TASKS {
        for &language in &LANGUAGES {
            for &placement in Placement::ALL {
                for &loss_on in LossOn::ALL {
                    for &layout in Layout::ALL {
                        for &unmentioned in Unmentioned::ALL {
                            for &labels in LabelForm::ALL {
                                for &reasoning in Reasoning::ALL {
                                    for paraphrase in 0..=2 {
                                        for &wrap in Wrap::ALL {
                                            out.push(Design {
                                                task,
                                                language,
                                                placement,
                                                loss_on,
                                                layout,
                                                unmentioned,
                                                labels,
                                                reasoning,
                                                paraphrase,
                                                wrap,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn every_design_id_round_trips() {
    let designs = all_designs();
    assert_eq!(designs.len(), 3 * 2 * 3 * 2 * 4 * 2 * 2 * 3 * 3 * 3);
    for design in designs {
        let id = design.to_string();
        assert_eq!(id.split('.').count(), 10, "{id}");
        let parsed: Design = id.parse().unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(parsed, design, "{id}");
    }
}

#[test]
fn canonical_id_of_the_baseline() {
    assert_eq!(
        Design::baseline(TaskKind::Masa, Language::Zh).to_string(),
        "masa.zh.inst-last.no-mi.natural.pu.text.no-cot.p0.raw"
    );
    assert_eq!(
        Design::preset(TaskKind::Ner, Language::En, "es-sde")
            .unwrap()
            .to_string(),
        "ner.en.inst-first.no-mi.lines.pu.text.no-cot.p0.inst-tags"
    );
}

#[test]
fn short_ids_and_aliases() {
    let base = Design::baseline(TaskKind::Masa, Language::Zh);
    let parse = |s: &str| s.parse::<Design>().unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(parse("baseline"), base);
    assert_eq!(parse("masa"), base);
    assert_eq!(
        parse("inst-first"),
        Design {
            placement: Placement::InstFirst,
            ..base
        }
    );
    assert_eq!(
        parse("instruction-first"),
        Design {
            placement: Placement::InstFirst,
            ..base
        }
    );
    assert_eq!(
        parse("no-inst"),
        Design {
            placement: Placement::NoInst,
            ..base
        }
    );
    assert_eq!(
        parse("mi"),
        Design {
            loss_on: LossOn::PromptAndCompletion,
            ..base
        }
    );
    assert_eq!(
        parse("lines"),
        Design {
            layout: Layout::Lines,
            ..base
        }
    );
    assert_eq!(
        parse("json"),
        Design {
            layout: Layout::Json,
            ..base
        }
    );
    assert_eq!(
        parse("ou"),
        Design {
            unmentioned: Unmentioned::Omit,
            ..base
        }
    );
    assert_eq!(
        parse("num"),
        Design {
            labels: LabelForm::Numeric,
            ..base
        }
    );
    assert_eq!(
        parse("cot"),
        Design {
            layout: Layout::Json,
            reasoning: Reasoning::Cot,
            ..base
        }
    );
    assert_eq!(
        parse("rcot"),
        Design {
            layout: Layout::Json,
            reasoning: Reasoning::ReverseCot,
            ..base
        }
    );
    assert_eq!(
        parse("es-sde"),
        Design {
            placement: Placement::InstFirst,
            layout: Layout::Lines,
            ..base
        }
    );
    assert_eq!(
        parse("ew-sde"),
        Design {
            unmentioned: Unmentioned::Omit,
            ..base
        }
    );
    assert_eq!(parse("heuristic"), base);
    assert_eq!(parse("masa.en.es-sde.p2").language, Language::En);
    assert_eq!(parse("masa.en.es-sde.p2").paraphrase, 2);
    assert_eq!(parse("es-sde.chat").wrap, Wrap::Chat);
    let ner = parse("ner.heuristic");
    assert_eq!(
        (ner.language, ner.layout, ner.unmentioned),
        (Language::En, Layout::Tuples, Unmentioned::Omit)
    );
    assert_eq!(parse("ner.default"), ner);
    assert_eq!(parse("event.maven-numerical").labels, LabelForm::Numeric);
    assert_eq!(
        Design::parse_for("lines", TaskKind::Event, Some(Language::Zh)).unwrap(),
        Design {
            layout: Layout::Lines,
            ..Design::baseline(TaskKind::Event, Language::Zh)
        }
    );
}

#[test]
fn bad_ids_are_refused_with_the_segment() {
    match "masa.zh.lines.sideways".parse::<Design>() {
        Err(FormatError::UnknownSegment { segment, .. }) => assert_eq!(segment, "sideways"),
        other => panic!("{other:?}"),
    }
    match "masa.zh.natural.lines".parse::<Design>() {
        Err(FormatError::DuplicateAxis { axis, .. }) => assert_eq!(axis, "layout"),
        other => panic!("{other:?}"),
    }
    assert!("masa..lines".parse::<Design>().is_err());
    assert!("masa.p3".parse::<Design>().is_err());
    assert!(matches!(
        Design::preset(TaskKind::Ner, Language::En, "nope"),
        Err(FormatError::UnknownPreset { .. })
    ));
    assert!(matches!(
        Design::baseline(TaskKind::Ner, Language::En).with_paraphrase(3),
        Err(FormatError::Paraphrase { index: 3 })
    ));
}

#[test]
fn presets_cover_the_study() {
    for &task in &TASKS {
        for &language in &LANGUAGES {
            let presets = Design::presets(task, language);
            let names: Vec<&str> = presets.iter().map(|p| p.name).collect();
            for required in [
                "baseline",
                "inst-first",
                "no-inst",
                "mi",
                "lines",
                "json",
                "ou",
                "num",
                "cot",
                "rcot",
                "es-sde",
                "ew-sde",
                "heuristic",
            ] {
                assert!(
                    names.contains(&required),
                    "{task:?} {language:?} lacks {required}"
                );
            }
            let base = Design::baseline(task, language);
            for p in &presets {
                assert_eq!(Design::preset(task, language, p.name).unwrap(), p.design);
                for alias in p.aliases {
                    assert_eq!(
                        Design::preset(task, language, alias).unwrap(),
                        p.design,
                        "{alias}"
                    );
                }
                let parsed = Design::parse_for(p.name, task, Some(language)).unwrap();
                assert_eq!(parsed, p.design, "{}", p.name);
                assert_eq!(p.design.to_string().parse::<Design>().unwrap(), p.design);
                let _ = base;
            }
            // The nine one-option variants differ from the baseline on exactly one axis
            // (CoT and R-CoT also switch to JSON records, as the study's CoT samples are).
            for name in ["inst-first", "no-inst", "mi", "lines", "json", "ou", "num"] {
                let d = Design::preset(task, language, name).unwrap();
                let differences = [
                    d.placement != base.placement,
                    d.loss_on != base.loss_on,
                    d.layout != base.layout,
                    d.unmentioned != base.unmentioned,
                    d.labels != base.labels,
                    d.reasoning != base.reasoning,
                ];
                assert_eq!(differences.iter().filter(|x| **x).count(), 1, "{name}");
            }
        }
    }
}

#[test]
fn every_combination_renders_for_every_task() {
    let template = ChatTemplate::new("smollm2", SMOLLM2_TEMPLATE);
    let mut rendered = 0;
    for design in all_designs() {
        let record = record(design.task, design.language);
        let train = domain(design.task);
        let test = other_domain(design.task);
        for (context, ood) in [
            (Context::in_domain(&train), false),
            (Context::ood(&train, &test), true),
        ] {
            let context = context.with_chat_template(&template);
            match render_with(&record, &design, &context) {
                Ok(sample) => {
                    assert!(!sample.prompt.is_empty(), "{design}");
                    assert_eq!(sample.loss_on, design.loss_on);
                    if design.wrap == Wrap::Chat {
                        assert!(
                            sample.prompt.ends_with("<|im_start|>assistant\n"),
                            "{design}"
                        );
                    }
                    // The record mentions targets of both domains, so no completion is empty.
                    assert!(!sample.completion.is_empty(), "{design} ood={ood}");
                    rendered += 1;
                }
                Err(FormatError::NoInstructionOod { .. })
                    if ood && design.placement == Placement::NoInst => {}
                Err(e) => panic!("{design} ood={ood}: {e}"),
            }
        }
        // Without a template, chat designs refuse and the others render.
        let plain = render_with(&record, &design, &Context::in_domain(&train));
        assert_eq!(
            matches!(plain, Err(FormatError::ChatTemplateMissing { .. })),
            design.wrap == Wrap::Chat
        );
    }
    assert!(rendered > 15_000);
}

#[test]
fn records_of_another_task_are_refused() {
    let design = Design::baseline(TaskKind::Masa, Language::Zh);
    let err = render_with(
        &common::ner_record(),
        &design,
        &Context::in_domain(&domain(TaskKind::Masa)),
    )
    .unwrap_err();
    assert!(matches!(err, FormatError::TaskMismatch { .. }), "{err}");
    let empty = sde_data::Domain {
        name: "none".into(),
        aspects: vec![],
    };
    let err = sde_format::render(&common::masa_record(Language::Zh), &design, &empty).unwrap_err();
    assert!(matches!(err, FormatError::EmptyDomain { .. }), "{err}");
}
