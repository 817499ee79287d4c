//! The study's released prompts and targets, reproduced byte for byte.
//!
//! The artifact tests read `$SDE_DATA_ROOT/sde_paper_artifacts`; without `SDE_DATA_ROOT` they
//! print a note and pass (CI sets it, so there they always run).

mod common;

use std::path::PathBuf;

use sde_data::{
    AspectLabel, Domain, Event, EventRecord, MasaRecord, NerRecord, Record, Sentiment, Span,
};
use sde_format::{Design, Language, TaskKind, render};

fn data_root() -> Option<PathBuf> {
    match std::env::var_os("SDE_DATA_ROOT") {
        Some(root) => Some(PathBuf::from(root)),
        None => {
            eprintln!("note: SDE_DATA_ROOT is not set; skipping the study artifact comparison");
            None
        }
    }
}

fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn zh_sentiment(word: &str) -> Sentiment {
    Sentiment::ALL
        .into_iter()
        .find(|s| s.zh() == word)
        .unwrap_or_else(|| panic!("label {word}"))
}

/// A MASA record from a study target such as `食品评价：中性，饮品评价：未提及，…。`.
fn masa_record(id: &str, review: &str, target: &str, domain: &Domain) -> MasaRecord {
    let labels = target
        .trim_end_matches('。')
        .split('，')
        .map(|piece| {
            let (name, word) = piece
                .split_once('：')
                .unwrap_or_else(|| panic!("piece {piece}"));
            let aspect = domain
                .aspects
                .iter()
                .find(|a| a.zh == name)
                .unwrap_or_else(|| panic!("aspect {name}"));
            AspectLabel {
                aspect: aspect.key.clone(),
                sentiment: zh_sentiment(word),
                evidence: None,
            }
        })
        .filter(|l| l.sentiment != Sentiment::Unmentioned)
        .collect();
    MasaRecord {
        id: id.to_string(),
        text: review.to_string(),
        labels,
    }
}

const REVIEW: &str = "在三里屯附近搜点评看到这家店，于是过来拔草～店内环境不错，服务态度也很好，点了【安妮披萨】典型的意式薄底披萨，上面铺满培根和香肠，口味说的过去，性价比比较高 【金枪鱼意面】服务员会特意问一下意面要不要煮的软一点，因为意面本身是偏硬的，不过，还挺好吃的【炸薯条】是那种比较粗的薯条，吃起来感觉很好，喜欢！【奶油蘑菇汤】第一次吃里面都是蘑菇丁的奶油蘑菇汤，意外的很好喝～【脆皮奶酪卷】外皮酥脆，奶酪凉凉的，不是很甜腻，很适合餐后吃哦～\n这家店整体给好评的，无论是餐点还是服务、都不错！";
const TARGET: &str = "食品评价：中性，饮品评价：未提及，价格水平：正面，卫生情况：未提及，服务人员态度：正面，停车方便程度：未提及。";

#[test]
fn masa_zh_baseline_is_the_study_sample() {
    let d1 = Domain::study_d1();
    let record = Record::Masa(masa_record("demo/0", REVIEW, TARGET, &d1));
    let design = Design::preset(TaskKind::Masa, Language::Zh, "baseline").unwrap();
    let sample = render(&record, &design, &d1).unwrap();
    let expected = format!(
        "{REVIEW}\n---\n阅读上面这段评论，观察以下这些方面：食品评价，饮品评价，价格水平，卫生情况，服务人员态度，停车方便程度。请根据评论对这些方面进行情感分析，具体有四类情感：正面、负面、中性、未提及。请用以下格式给出所有方面的情感：\"方面1：情感类别，方面2：情感类别，...\"\n输出："
    );
    assert_eq!(sample.prompt, expected);
    assert_eq!(sample.completion, TARGET);
}

#[test]
fn masa_zh_lines_is_the_study_sample() {
    let d1 = Domain::study_d1();
    let record = Record::Masa(masa_record("demo/0", REVIEW, TARGET, &d1));
    let design: Design = "masa.zh.lines".parse().unwrap();
    let sample = render(&record, &design, &d1).unwrap();
    assert!(sample.prompt.ends_with(
        "请用以下格式给出所有方面的情感：\"方面1：情感类别\n方面2：情感类别\n...\"\n输出："
    ));
    assert_eq!(
        sample.prompt.replace(
            "\"方面1：情感类别\n方面2：情感类别\n...\"",
            "\"方面1：情感类别，方面2：情感类别，...\""
        ),
        render(
            &record,
            &Design::baseline(TaskKind::Masa, Language::Zh),
            &d1
        )
        .unwrap()
        .prompt
    );
    assert_eq!(
        sample.completion,
        "食品评价：中性\n饮品评价：未提及\n价格水平：正面\n卫生情况：未提及\n服务人员态度：正面\n停车方便程度：未提及"
    );
}

#[test]
fn masa_zh_num_and_ou_follow_the_study_grammars() {
    let d1 = Domain::study_d1();
    let record = Record::Masa(masa_record("demo/0", REVIEW, TARGET, &d1));
    let num = render(&record, &"num".parse().unwrap(), &d1).unwrap();
    assert_eq!(
        num.completion,
        "食品评价：0，饮品评价：-2，价格水平：1，卫生情况：-2，服务人员态度：1，停车方便程度：-2。"
    );
    let ou = render(&record, &"ou".parse().unwrap(), &d1).unwrap();
    assert_eq!(
        ou.completion,
        "食品评价：中性，价格水平：正面，服务人员态度：正面。"
    );
    let json = render(&record, &"json".parse().unwrap(), &d1).unwrap();
    assert_eq!(
        json.completion.lines().next().unwrap(),
        "{\"方面\": \"食品评价\", \"情感\": \"中性\"}"
    );
}

#[test]
fn masa_zh_ood_prompt_lists_the_test_domain() {
    let d1 = Domain::study_d1();
    let d2 = Domain::study_d2();
    let record = Record::Masa(MasaRecord {
        id: "x".into(),
        text: "排队等了很久。".into(),
        labels: vec![AspectLabel {
            aspect: "queueing".into(),
            sentiment: Sentiment::Negative,
            evidence: None,
        }],
    });
    let design = Design::baseline(TaskKind::Masa, Language::Zh);
    let sample = sde_format::render_ood(&record, &design, &d1, &d2).unwrap();
    assert!(sample.prompt.contains(
        "观察以下这些方面：交通便利程度，排队等候情况，点菜上菜速度，装修情况，嘈杂情况。"
    ));
    assert_eq!(
        sample.completion,
        "交通便利程度：未提及，排队等候情况：负面，点菜上菜速度：未提及，装修情况：未提及，嘈杂情况：未提及。"
    );
    let no_inst: Design = "no-inst".parse().unwrap();
    let err = sde_format::render_ood(&record, &no_inst, &d1, &d2).unwrap_err();
    assert!(
        matches!(err, sde_format::FormatError::NoInstructionOod { .. }),
        "{err}"
    );
    assert!(sde_format::render_ood(&record, &no_inst, &d2, &d2).is_ok());
}

fn genia_record() -> Record {
    common::ner_record_of(
        "genia/demo",
        "IL-2 gene expression requires NF-kappa B in T cells",
        &[
            ("DNA", 0, 2),
            ("protein", 0, 1),
            ("protein", 4, 6),
            ("cell_type", 7, 9),
        ],
    )
}

const DESC0: &str = "Read the given sentence carefully, identify all named entities of type \"DNA\", \"RNA\", \"protein\", \"cell_type\" or \"cell_line\".";
const SENT: &str = "IL-2 gene expression requires NF-kappa B in T cells";

#[test]
fn genia_prompts_are_the_study_prompts() {
    let genia = Domain::genia();
    let record = genia_record();
    let render_preset = |name: &str| {
        render(
            &record,
            &Design::preset(TaskKind::Ner, Language::En, name).unwrap(),
            &genia,
        )
        .unwrap()
    };

    let default = render_preset("default");
    assert_eq!(
        default.prompt,
        format!(
            "[INST]{DESC0} Answer in the format [\"entity_type\", \"entity_name\"]. If no entity exists, then just answer \"[]\".\nGiven sentence: \"{SENT}\"[/INST]"
        )
    );
    assert_eq!(
        default.completion,
        "[\"DNA\",\"IL-2 gene\"]\n[\"protein\",\"IL-2\"]\n[\"protein\",\"NF-kappa B\"]\n[\"cell_type\",\"T cells\"]"
    );

    let weak1 = render_preset("weak1");
    assert_eq!(
        weak1.prompt,
        format!(
            "[INST]Given sentence: \"{SENT}\"\n{DESC0} For each entity type, answer in the format like \"'entity_type': 'entity_name_1', 'entity_name_2'...\", then concat answer for each type with ';'. Only output entity types that contain entities.[/INST]"
        )
    );
    assert_eq!(
        weak1.completion,
        "'DNA': 'IL-2 gene'; 'protein': 'IL-2', 'NF-kappa B'; 'cell_type': 'T cells'"
    );

    let good1 = render_preset("good1");
    assert_eq!(
        good1.prompt,
        format!(
            "[INST]{DESC0} For each entity type, answer in a line in the format like \"'entity_type': 'entity_name_1', 'entity_name_2'...\" (when no entities exist, answer  \"'entity_type': ''\").\nGiven sentence: \"{SENT}\"[/INST]"
        )
    );
    assert_eq!(
        good1.completion,
        "'DNA': 'IL-2 gene'\n'RNA': ''\n'protein': 'IL-2', 'NF-kappa B'\n'cell_type': 'T cells'\n'cell_line': ''"
    );

    let good2 = render_preset("good2");
    assert_eq!(
        good2.completion.lines().nth(1).unwrap(),
        "{\"entity_type\": \"RNA\", \"entity_names\": []}"
    );
}

#[test]
fn genia_paraphrases_are_the_study_descriptions() {
    let genia = Domain::genia();
    let record = genia_record();
    let es = Design::preset(TaskKind::Ner, Language::En, "es-sde").unwrap();
    let p1 = render(&record, &es.with_paraphrase(1).unwrap(), &genia).unwrap();
    assert!(p1.prompt.starts_with("[INST]Carefully review the provided statement and detect any specific named entities that belong to the categories of \"DNA\", \"RNA\", \"protein\", \"cell_type\" or \"cell_line\" For each entity type,"));
    let p2 = render(&record, &es.with_paraphrase(2).unwrap(), &genia).unwrap();
    assert!(p2.prompt.starts_with("[INST]This is a nested entity recognition problem, with these entity types: \"DNA\", \"RNA\", \"protein\", \"cell_type\" or \"cell_line\". Please thoroughly examine the provided sentence and accurately identify all instances of named entities. For each entity type,"));
}

#[test]
fn genia_heuristic_without_entities_has_an_empty_target() {
    let genia = Domain::genia();
    let record = Record::Ner(NerRecord {
        id: "n".into(),
        text: "No entity here".into(),
        tokens: vec!["No".into(), "entity".into(), "here".into()],
        entities: vec![],
    });
    let sample = render(
        &record,
        &Design::preset(TaskKind::Ner, Language::En, "heuristic").unwrap(),
        &genia,
    )
    .unwrap();
    assert_eq!(sample.completion, "");
}

/// An event record from a study MAVEN prompt and its `["Type", "trigger"]` output lines.
fn maven_record(index: usize, input: &str, output: &str) -> Record {
    let start =
        input.find("The sentence is: ").expect("sentence marker") + "The sentence is: ".len();
    let end = input.rfind(" Output: \n").expect("output marker");
    let text = &input[start..end];
    let mut events = Vec::new();
    let mut from = 0;
    for line in output
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "[]")
    {
        let pair: Vec<String> =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("row {index}: {line}: {e}"));
        let at = text[from..]
            .find(pair[1].as_str())
            .or_else(|| text.find(pair[1].as_str()).map(|p| p.wrapping_sub(from)))
            .map(|p| p.wrapping_add(from))
            .unwrap_or_else(|| panic!("row {index}: trigger {} not in text", pair[1]));
        from = at;
        events.push(Event {
            kind: pair[0].clone(),
            trigger: pair[1].clone(),
            span: Span {
                start: at,
                end: at + pair[1].len(),
            },
        });
    }
    Record::Event(EventRecord {
        id: format!("maven/{index}"),
        text: text.to_string(),
        events,
    })
}

#[test]
fn maven_heuristic_is_the_study_sample() {
    let input = "We define the event types set: Catastrophe, Attack, Hostile_encounter, Causation, Process_start, Competition, Motion, Social_event, Killing, Conquering. Given a sentence, please detect the type of events it contains and extract the trigger word from it. Please generate the result in the following format: \"[\"event_type\", \"trigger_word\"]\n...\"If no event exists, just answer[]. The sentence is: The death of Henry (6 July 1189), however, meant the English contingent came under the command of his successor, King Richard I of England. Output: \n";
    let output = "[\"Causation\", \"meant\"]\n[\"Motion\", \"came\"]";
    let record = maven_record(0, input, output);
    let design = Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap();
    let sample = render(&record, &design, &Domain::maven10()).unwrap();
    assert_eq!(sample.prompt, input);
    assert_eq!(sample.completion, output);
}

#[test]
fn study_masa_prompts_are_reproduced_byte_for_byte() {
    let Some(root) = data_root() else { return };
    let path = root
        .join("sde_paper_artifacts/MASA/instruction-last_d1_500_internlm-chat_d1_predictions.json");
    let rows = json_lines(&path);
    assert_eq!(rows.len(), 50, "{}", path.display());
    let d1 = Domain::study_d1();
    let design = Design::preset(TaskKind::Masa, Language::Zh, "baseline").unwrap();
    for (i, row) in rows.iter().enumerate() {
        let prompt = row["prompt"].as_str().expect("prompt");
        let target = row["target"].as_str().expect("target");
        let review = &prompt[..prompt.find("\n---\n").expect("separator")];
        let record = Record::Masa(masa_record(&format!("study/{i}"), review, target, &d1));
        let sample = render(&record, &design, &d1).unwrap();
        assert_eq!(sample.prompt, prompt, "row {}", i + 1);
        assert_eq!(sample.completion, target, "row {}", i + 1);
    }
}

#[test]
fn study_maven_prompts_are_reproduced_byte_for_byte() {
    let Some(root) = data_root() else { return };
    let path = root.join("sde_paper_artifacts/MAVEN/heuristic_test.json");
    let rows = json_lines(&path);
    assert_eq!(rows.len(), 100, "{}", path.display());
    let maven = Domain::maven10();
    let design = Design::preset(TaskKind::Event, Language::En, "heuristic").unwrap();
    for (i, row) in rows.iter().enumerate() {
        let input = row["input"].as_str().expect("input");
        let output = row["output"].as_str().expect("output");
        let record = maven_record(i, input, output);
        let sample = render(&record, &design, &maven).unwrap();
        assert_eq!(sample.prompt, input, "row {}", i + 1);
        assert_eq!(sample.completion, output, "row {}", i + 1);
    }
}
