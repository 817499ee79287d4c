//! In-context prompts, chat-template wrapping, evidence and grammar.

mod common;

use sde_data::{AspectDef, Domain, Sentiment};
use sde_format::evidence::{aspect_clause, clause_around, tidy};
use sde_format::{
    ChatTemplate, Context, Design, FormatError, Grammar, Language, Quote, TaskKind, Wrap, icl,
    render, render_icl, render_with,
};

const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn icl_uses_the_study_format() {
    let d1 = Domain::study_d1();
    let design = Design::baseline(TaskKind::Masa, Language::Zh);
    let a = common::masa_record(Language::Zh);
    let b = common::masa_record(Language::Zh);
    let sa = render(&a, &design, &d1).unwrap();
    let sample = render_icl(&a, &[&a, &b], &design, &Context::in_domain(&d1)).unwrap();
    assert_eq!(
        sample.prompt,
        format!(
            "Example 1:\n{}{}\n\nExample 2:\n{}{}\n\nExample 3:\n{}",
            sa.prompt, sa.completion, sa.prompt, sa.completion, sa.prompt
        )
    );
    assert_eq!(sample.completion, sa.completion);
    assert_eq!(icl(&[], &sa), sa);
}

#[test]
fn icl_wraps_once() {
    let genia = Domain::genia();
    let design = Design::preset(TaskKind::Ner, Language::En, "es-sde").unwrap();
    assert_eq!(design.wrap, Wrap::InstTags);
    let r = common::ner_record();
    let sample = render_icl(&r, &[&r], &design, &Context::in_domain(&genia)).unwrap();
    assert_eq!(sample.prompt.matches("[INST]").count(), 1);
    assert!(sample.prompt.starts_with("[INST]Example 1:\n"));
    assert!(sample.prompt.ends_with("[/INST]"));
}

#[test]
fn chat_template_wraps_the_prompt_as_the_user_turn() {
    let d1 = Domain::study_d1();
    let design: Design = "masa.zh.es-sde.chat".parse().unwrap();
    let record = common::masa_record(Language::Zh);
    let plain = render(
        &record,
        &Design {
            wrap: Wrap::Raw,
            ..design
        },
        &d1,
    )
    .unwrap();
    let template = ChatTemplate::new("smollm2", SMOLLM2_TEMPLATE);
    let sample = render_with(
        &record,
        &design,
        &Context::in_domain(&d1).with_chat_template(&template),
    )
    .unwrap();
    assert_eq!(
        sample.prompt,
        format!(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            plain.prompt
        )
    );
    assert_eq!(sample.completion, plain.completion);
    let err = render(&record, &design, &d1).unwrap_err();
    assert!(
        matches!(err, FormatError::ChatTemplateMissing { .. }),
        "{err}"
    );
}

#[test]
fn chat_template_errors_are_reported() {
    let broken = ChatTemplate::new("broken", "{% for m in messages %}");
    assert!(matches!(
        broken.wrap_prompt("x"),
        Err(FormatError::ChatTemplate { .. })
    ));
    let raising = ChatTemplate::new("raising", "{{ raise_exception('no system role') }}");
    match raising.wrap_prompt("x") {
        Err(FormatError::ChatTemplate { message, .. }) => {
            assert!(message.contains("no system role"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let mut with_tokens = ChatTemplate::new(
        "t",
        "{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}",
    );
    with_tokens.bos_token = "<s>".into();
    with_tokens.eos_token = "</s>".into();
    assert_eq!(with_tokens.wrap_prompt("hi").unwrap(), "<s>hi</s>");
    let a = ChatTemplate::new("a", SMOLLM2_TEMPLATE);
    assert_eq!(
        a.fingerprint(),
        ChatTemplate::new("other name", SMOLLM2_TEMPLATE).fingerprint()
    );
    assert_ne!(a.fingerprint(), with_tokens.fingerprint());
    assert_eq!(a.fingerprint().len(), 16);
}

#[test]
fn evidence_rule() {
    let text = "菜品味道很好，就是价格有点贵。服务员态度一般";
    let staff = AspectDef {
        key: "staff".into(),
        en: "staff".into(),
        zh: "服务人员态度".into(),
    };
    assert_eq!(aspect_clause(text, &staff), "服务员态度一般");
    let parking = AspectDef {
        key: "parking".into(),
        en: "parking".into(),
        zh: "停车方便程度".into(),
    };
    // No clause mentions parking: the first sentence.
    assert_eq!(
        aspect_clause(text, &parking),
        "菜品味道很好，就是价格有点贵。"
    );
    let en = "The food was great, but the price was 1.5 times too high. Staff were fine";
    let price = AspectDef {
        key: "price".into(),
        en: "price".into(),
        zh: "价格水平".into(),
    };
    assert_eq!(
        aspect_clause(en, &price),
        " but the price was 1.5 times too high."
    );
    assert_eq!(
        tidy(aspect_clause(en, &price)),
        "but the price was 1.5 times too high"
    );
    let start = en.find("great").unwrap();
    assert_eq!(clause_around(en, start, start + 5), "The food was great,");
    let long = "a".repeat(200);
    assert_eq!(
        tidy(&long).chars().count(),
        sde_format::evidence::MAX_EVIDENCE_CHARS
    );
    assert!(tidy(&long).ends_with('…'));
    assert_eq!(tidy("  two\n lines  "), "two lines");
}

#[test]
fn evidence_in_natural_layout_is_a_json_literal() {
    let d1 = Domain::study_d1();
    let record = common::masa_record(Language::Zh);
    let cot = render(&record, &"masa.zh.cot.natural".parse().unwrap(), &d1).unwrap();
    assert!(
        cot.completion.starts_with(
            "食品评价：\"菜品味道很好\" 正面，饮品评价：\"评论中没有提到这个方面\" 未提及，"
        ),
        "{}",
        cot.completion
    );
    let rcot = render(&record, &"masa.zh.rcot.lines".parse().unwrap(), &d1).unwrap();
    assert!(
        rcot.completion
            .starts_with("食品评价：正面 \"菜品味道很好\"\n"),
        "{}",
        rcot.completion
    );
    let en = common::masa_record(Language::En);
    let tuples = render(&en, &"masa.en.tuples.cot".parse().unwrap(), &d1).unwrap();
    assert!(
        tuples
            .completion
            .starts_with("[\"food\", \"The food was great\", \"positive\"]\n"),
        "{}",
        tuples.completion
    );
}

#[test]
fn grammar_exposes_the_vocabulary() {
    let d1 = Domain::study_d1();
    let g = Grammar::new(&Design::baseline(TaskKind::Masa, Language::Zh), &d1);
    assert_eq!(
        (g.key_value_sep, g.item_sep, g.terminator),
        ("：", "，", "。")
    );
    assert_eq!(g.sentiment_word(Sentiment::Unmentioned), "未提及");
    assert_eq!(g.sentiment_of("负面"), Some(Sentiment::Negative));
    assert_eq!(g.target_key("停车方便程度"), Some("parking"));
    assert_eq!(
        (g.json.target, g.json.value, g.json.evidence),
        ("方面", "情感", "描述")
    );
    let num = Grammar::new(&"num".parse().unwrap(), &d1);
    assert_eq!(num.sentiment_of("-2"), Some(Sentiment::Unmentioned));
    let ner = Grammar::new(
        &Design::preset(TaskKind::Ner, Language::En, "es-sde").unwrap(),
        &Domain::genia(),
    );
    assert_eq!(
        (ner.key_quote, ner.placeholder, ner.tuple_sep),
        (Quote::Python, "''", "")
    );
    assert_eq!(ner.quote_name("5' UTR"), "\"5' UTR\"");
    let event = Grammar::new(
        &Design::preset(TaskKind::Event, Language::En, "numerical").unwrap(),
        &Domain::maven10(),
    );
    assert_eq!(event.target_key("6"), Some("Motion"));
    assert_eq!(event.placeholder, "NONE");
    let heuristic = Grammar::new(
        &Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap(),
        &Domain::maven10(),
    );
    assert_eq!(heuristic.empty, "[]");
}

#[test]
fn bad_spans_are_errors_not_panics() {
    let d1 = Domain::study_d1();
    let mut record = common::masa_record(Language::Zh);
    if let sde_data::Record::Masa(r) = &mut record {
        r.labels[0].evidence = Some(sde_data::Span { start: 1, end: 2 });
    }
    let err = render(&record, &"cot".parse().unwrap(), &d1).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::BadSpan {
                field: "evidence",
                ..
            }
        ),
        "{err}"
    );
    let mut ner = common::ner_record();
    if let sde_data::Record::Ner(r) = &mut ner {
        r.entities[0].end_token = 99;
    }
    let err = render(
        &ner,
        &Design::baseline(TaskKind::Ner, Language::En),
        &Domain::genia(),
    )
    .unwrap_err();
    assert!(
        matches!(err, FormatError::BadTokenRange { end: 99, .. }),
        "{err}"
    );
}
