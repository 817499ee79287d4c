//! Prompt templates of every task in English and Chinese.
//!
//! Byte-exact to the study where its wording is known (MASA zh baseline and Lines prompts,
//! the GENIA `default` / `weak1` / `good1` prompts and the three GENIA instruction paraphrases,
//! the MAVEN `heuristic` prompt); natural analogues elsewhere (listed in
//! `docs/design-options.md`).

use sde_data::TaskKind;

use crate::design::{Design, LabelForm, Language, Layout, Placement, Reasoning, Unmentioned};
use crate::grammar::Grammar;
use crate::items::{Item, render_items};

/// The prompt of `design` for `text`, before any wrapping.
pub(crate) fn prompt(design: &Design, grammar: &Grammar, text: &str) -> String {
    match design.task {
        TaskKind::Masa => masa(design, grammar, text),
        TaskKind::Ner => ner(design, grammar, text),
        TaskKind::Event => event(design, grammar, text),
    }
}

/// A format example: two items of placeholder words, then `...`.
fn example(grammar: &Grammar, key: [&str; 2], value: &str, evidence: &str) -> String {
    let items: Vec<Item> = key
        .iter()
        .map(|k| Item::example(k, value, evidence))
        .collect();
    let body = render_items(grammar, &items);
    let (sep, quote) = match grammar.design.layout {
        Layout::Natural => (grammar.item_sep, "\""),
        Layout::Lines => ("\n", "\""),
        Layout::Json | Layout::Tuples => ("\n", ""),
    };
    format!("{quote}{body}{sep}...{quote}")
}

fn masa(design: &Design, grammar: &Grammar, text: &str) -> String {
    let zh = design.language == Language::Zh;
    let aspects: Vec<&str> = grammar.targets.iter().map(|t| t.text.as_str()).collect();
    let pu = design.unmentioned == Unmentioned::Placeholder;
    let num = design.labels == LabelForm::Numeric;
    let instruction = |place: &str| -> String {
        let mut s = String::new();
        if zh {
            let list = aspects.join("，");
            s += &match design.paraphrase {
                1 => format!(
                    "请仔细阅读{place}的评论，并关注以下方面：{list}。针对每个方面判断评论表达的情感，"
                ),
                2 => format!(
                    "这是一个多方面情感分析任务。请分析{place}这段评论对以下方面的情感：{list}。"
                ),
                _ => format!(
                    "阅读{place}这段评论，观察以下这些方面：{list}。请根据评论对这些方面进行情感分析，"
                ),
            };
            s += match (pu, num) {
                (true, false) => "具体有四类情感：正面、负面、中性、未提及。",
                (false, false) => "具体有三类情感：正面、负面、中性。",
                (true, true) => {
                    "具体有四类情感：正面、负面、中性、未提及，分别用1、-1、0、-2表示。"
                }
                (false, true) => "具体有三类情感：正面、负面、中性，分别用1、-1、0表示。",
            };
            s += match design.reasoning {
                Reasoning::None => "",
                Reasoning::Cot => "对每个方面，先给出评论中的相关描述，再给出情感类别。",
                Reasoning::ReverseCot => "对每个方面，先给出情感类别，再给出评论中的相关描述。",
            };
            s += if pu {
                "请用以下格式给出所有方面的情感："
            } else {
                "请只给出评论提到的方面的情感，未提及的方面不要输出，格式为："
            };
            s += &example(grammar, ["方面1", "方面2"], "情感类别", "相关描述");
        } else {
            let list = aspects.join(", ");
            s += &match design.paraphrase {
                1 => format!(
                    "Please read the review {place} carefully and pay attention to the following aspects: {list}. For each aspect, judge the sentiment the review expresses. "
                ),
                2 => format!(
                    "This is a multi-aspect sentiment analysis task. Analyse the sentiment of the review {place} towards these aspects: {list}. "
                ),
                _ => format!(
                    "Read the review {place} and look at these aspects: {list}. Analyse the sentiment of the review towards each of these aspects. "
                ),
            };
            s += match (pu, num) {
                (true, false) => {
                    "There are four sentiment categories: positive, negative, neutral, unmentioned. "
                }
                (false, false) => {
                    "There are three sentiment categories: positive, negative, neutral. "
                }
                (true, true) => {
                    "There are four sentiment categories: positive, negative, neutral, unmentioned, written as 1, -1, 0 and -2. "
                }
                (false, true) => {
                    "There are three sentiment categories: positive, negative, neutral, written as 1, -1 and 0. "
                }
            };
            s += match design.reasoning {
                Reasoning::None => "",
                Reasoning::Cot => {
                    "For each aspect, first quote the relevant description from the review, then give the category. "
                }
                Reasoning::ReverseCot => {
                    "For each aspect, first give the category, then quote the relevant description from the review. "
                }
            };
            s += if pu {
                "Give the sentiment of every aspect in this format: "
            } else {
                "Give the sentiment of only the aspects the review mentions, in this format: "
            };
            s += &example(grammar, ["aspect1", "aspect2"], "category", "description");
        }
        s
    };
    let cue = if zh { "\n输出：" } else { "\nOutput:\n" };
    let (above, below) = if zh {
        ("上面", "下面")
    } else {
        ("above", "below")
    };
    match design.placement {
        Placement::InstLast => format!("{text}\n---\n{}{cue}", instruction(above)),
        Placement::InstFirst => format!("{}\n---\n{text}{cue}", instruction(below)),
        Placement::NoInst => format!("{text}{cue}"),
    }
}

/// `"A", "B" or "C"` (en) / `"A"、"B"或"C"` (zh).
fn quoted_list(items: &[&str], zh: bool) -> String {
    let quoted: Vec<String> = items.iter().map(|t| format!("\"{t}\"")).collect();
    let (sep, or) = if zh { ("、", "或") } else { (", ", " or ") };
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{}{or}{last}", rest.join(sep)),
    }
}

fn numbering(grammar: &Grammar, domain_texts: &[String], zh: bool) -> String {
    let pairs: Vec<String> = grammar
        .targets
        .iter()
        .zip(domain_texts)
        .map(|(t, name)| format!("{} = \"{name}\"", t.text))
        .collect();
    if zh {
        format!("每个类型用编号表示：{}。", pairs.join("，"))
    } else {
        format!("Write each type as its number: {}.", pairs.join(", "))
    }
}

fn ner(design: &Design, grammar: &Grammar, text: &str) -> String {
    let zh = design.language == Language::Zh;
    let names = display_names(grammar);
    let types = quoted_list(&names.iter().map(String::as_str).collect::<Vec<_>>(), zh);
    let first = grammar.targets.first().map_or("", |t| t.text.as_str());
    let pu = design.unmentioned == Unmentioned::Placeholder;
    let mut parts: Vec<String> = Vec::new();
    if zh {
        parts.push(match design.paraphrase {
            1 => format!("认真查看所给的句子，找出属于{types}这些类别的所有命名实体。"),
            2 => format!("这是一个嵌套实体识别问题，实体类型有：{types}。请仔细分析所给的句子，准确识别出所有命名实体。"),
            _ => format!("仔细阅读给定的句子，识别其中所有类型为{types}的命名实体。"),
        });
        let example = "\"'实体类型'：'实体名称1'，'实体名称2'...\"";
        parts.push(match (design.layout, pu) {
            (Layout::Tuples, false) => "请按照[\"实体类型\", \"实体名称\"]的格式回答。如果没有实体，直接回答\"[]\"。".to_string(),
            (Layout::Tuples, true) => {
                "请按照[\"实体类型\", \"实体名称\"]的格式回答，每行一个实体。没有实体的类型回答[\"实体类型\", \"\"]。".to_string()
            }
            (Layout::Natural, false) => {
                format!("对每个实体类型，按照{example}的格式回答，再用\"；\"连接各类型的答案。只输出含有实体的类型。")
            }
            (Layout::Natural, true) => format!(
                "对每个实体类型，按照{example}的格式回答（没有实体时回答\"'实体类型'：''\"），再用\"；\"连接各类型的答案。"
            ),
            (Layout::Lines, false) => format!("对每个实体类型，按照{example}的格式各回答一行。只输出含有实体的类型。"),
            (Layout::Lines, true) => {
                format!("对每个实体类型，按照{example}的格式各回答一行（没有实体时回答\"'实体类型'：''\"）。")
            }
            (Layout::Json, false) => format!(
                "对每个实体类型，按照{{\"实体类型\": \"{first}\", \"实体名称\": [\"名称1\", \"名称2\"]}}的格式各回答一行。只输出含有实体的类型。"
            ),
            (Layout::Json, true) => format!(
                "对每个实体类型，按照{{\"实体类型\": \"{first}\", \"实体名称\": [\"名称1\", \"名称2\"]}}的格式各回答一行（没有实体时给出空列表）。"
            ),
        });
        if design.labels == LabelForm::Numeric {
            parts.push(numbering(grammar, &names, zh));
        }
        parts.push(
            match design.reasoning {
                Reasoning::None => "",
                Reasoning::Cot => "在每个实体类型的名称之前，用双引号引出句中提到它们的部分。",
                Reasoning::ReverseCot => {
                    "在每个实体类型的名称之后，用双引号引出句中提到它们的部分。"
                }
            }
            .to_string(),
        );
    } else {
        parts.push(match design.paraphrase {
            1 => format!(
                "Carefully review the provided statement and detect any specific named entities that belong to the categories of {types}"
            ),
            2 => format!(
                "This is a nested entity recognition problem, with these entity types: {types}. Please thoroughly examine the provided sentence and accurately identify all instances of named entities."
            ),
            _ => format!("Read the given sentence carefully, identify all named entities of type {types}."),
        });
        let example = "\"'entity_type': 'entity_name_1', 'entity_name_2'...\"";
        parts.push(match (design.layout, pu) {
            (Layout::Tuples, false) => {
                "Answer in the format [\"entity_type\", \"entity_name\"]. If no entity exists, then just answer \"[]\".".to_string()
            }
            (Layout::Tuples, true) => "Answer in the format [\"entity_type\", \"entity_name\"], one line per entity. For an entity type without entities, answer [\"entity_type\", \"\"].".to_string(),
            (Layout::Natural, false) => format!(
                "For each entity type, answer in the format like {example}, then concat answer for each type with ';'. Only output entity types that contain entities."
            ),
            (Layout::Natural, true) => format!(
                "For each entity type, answer in the format like {example} (when no entities exist, answer  \"'entity_type': ''\"), then concat answer for each type with ';'."
            ),
            (Layout::Lines, false) => format!(
                "For each entity type, answer in a line in the format like {example}. Only output entity types that contain entities."
            ),
            (Layout::Lines, true) => format!(
                "For each entity type, answer in a line in the format like {example} (when no entities exist, answer  \"'entity_type': ''\")."
            ),
            (Layout::Json, false) => format!(
                "For each entity type, answer in a line in the format like {{\"entity_type\": \"{first}\",\"entity_names\": [\"name1\", \"name2\"]}}. Only output entity types that contain entities."
            ),
            (Layout::Json, true) => format!(
                "For each entity type, answer in a line in the format like {{\"entity_type\": \"{first}\",\"entity_names\": [\"name1\", \"name2\"]}} (when no entities exist, answer an empty list)."
            ),
        });
        if design.labels == LabelForm::Numeric {
            parts.push(numbering(grammar, &names, zh));
        }
        parts.push(
            match design.reasoning {
                Reasoning::None => "",
                Reasoning::Cot => {
                    "Before the names of each entity type, quote the part of the sentence that mentions them in double quotes."
                }
                Reasoning::ReverseCot => {
                    "After the names of each entity type, quote the part of the sentence that mentions them in double quotes."
                }
            }
            .to_string(),
        );
    }
    parts.retain(|p| !p.is_empty());
    let instruction = parts.join(if zh { "" } else { " " });
    let given = if zh {
        format!("给定句子：\"{text}\"")
    } else {
        format!("Given sentence: \"{text}\"")
    };
    match design.placement {
        Placement::InstFirst => format!("{instruction}\n{given}"),
        Placement::InstLast => format!("{given}\n{instruction}"),
        Placement::NoInst => given,
    }
}

/// Type names in the design's language (numeric designs still name them in instructions).
fn display_names(grammar: &Grammar) -> Vec<String> {
    grammar.targets.iter().map(|t| t.name.clone()).collect()
}

fn event(design: &Design, grammar: &Grammar, text: &str) -> String {
    let zh = design.language == Language::Zh;
    let names = display_names(grammar);
    let first = grammar.targets.first().map_or("", |t| t.text.as_str());
    let pu = design.unmentioned == Unmentioned::Placeholder;
    let mut parts: Vec<String> = Vec::new();
    if zh {
        let types = names.join("，");
        parts.push(match design.paraphrase {
            1 => format!("可能的事件类型有：{types}。请阅读句子，找出其中描述的事件，并指出每个事件的触发词。"),
            2 => format!("这是一个事件检测任务，事件类型有：{types}。请仔细分析句子，判断其中提到的事件并抽取触发词。"),
            _ => format!("我们定义了以下事件类型：{types}。给定一个句子，请检测其中包含的事件类型，并抽取触发词。"),
        });
        parts.push(match (design.layout, pu) {
            (Layout::Tuples, false) => "请按照以下格式输出结果：\"[\"事件类型\", \"触发词\"]\n...\"如果没有事件，直接回答[]。".to_string(),
            (Layout::Tuples, true) => {
                "请按照以下格式输出结果：\"[\"事件类型\", \"触发词\"]\n...\"没有出现的事件类型回答[\"事件类型\", \"无\"]。".to_string()
            }
            (Layout::Lines, true) => {
                "请按照以下格式输出结果，每个事件类型一行：\"事件类型：触发词1，触发词2\n...\"没有出现的事件类型回答\"事件类型：无\"。".to_string()
            }
            (Layout::Lines, false) => "请按照以下格式输出结果，只给出出现的事件类型，每个一行：\"事件类型：触发词1，触发词2\n...\"如果没有事件，不输出任何内容。".to_string(),
            (Layout::Natural, true) => "请按照以下格式输出结果：\"事件类型：触发词1，触发词2；事件类型：触发词；...\"给出所有事件类型，没有出现的事件类型回答\"事件类型：无\"。".to_string(),
            (Layout::Natural, false) => "请按照以下格式输出结果：\"事件类型：触发词1，触发词2；事件类型：触发词；...\"只给出出现的事件类型；如果没有事件，不输出任何内容。".to_string(),
            (Layout::Json, true) => format!(
                "请按照以下格式输出结果，每个事件类型一行：{{\"事件类型\": \"{first}\", \"触发词\": [\"触发词1\", \"触发词2\"]}}没有出现的事件类型给出空列表。"
            ),
            (Layout::Json, false) => format!(
                "请按照以下格式输出结果，每个事件类型一行：{{\"事件类型\": \"{first}\", \"触发词\": [\"触发词1\", \"触发词2\"]}}只给出出现的事件类型；如果没有事件，不输出任何内容。"
            ),
        });
        if design.labels == LabelForm::Numeric {
            parts.push("每个事件类型用它在集合中的编号表示，从0开始。".to_string());
        }
        parts.push(
            match design.reasoning {
                Reasoning::None => "",
                Reasoning::Cot => "在每个事件类型的触发词之前，用双引号引出句中提到它们的部分。",
                Reasoning::ReverseCot => {
                    "在每个事件类型的触发词之后，用双引号引出句中提到它们的部分。"
                }
            }
            .to_string(),
        );
    } else {
        let types = names.join(", ");
        parts.push(match design.paraphrase {
            1 => format!(
                "The possible event types are: {types}. Read the sentence, find the events it describes and identify the trigger word of each."
            ),
            2 => format!(
                "This is an event detection task with these event types: {types}. Please carefully examine the sentence, classify the events it mentions and extract their trigger words."
            ),
            _ => format!(
                "We define the event types set: {types}. Given a sentence, please detect the type of events it contains and extract the trigger word from it."
            ),
        });
        parts.push(match (design.layout, pu) {
            (Layout::Tuples, false) => "Please generate the result in the following format: \"[\"event_type\", \"trigger_word\"]\n...\"If no event exists, just answer[].".to_string(),
            (Layout::Tuples, true) => "Please generate the result in the following format: \"[\"event_type\", \"trigger_word\"]\n...\" For each event type that does not occur, answer [\"event_type\", \"NONE\"].".to_string(),
            (Layout::Lines, true) => "Please generate the result in the following format, one line per event type: \"event_type: trigger_word_1, trigger_word_2\n...\" If an event type does not occur, answer \"event_type: NONE\".".to_string(),
            (Layout::Lines, false) => "Please generate the result in the following format, one line per event type that occurs: \"event_type: trigger_word_1, trigger_word_2\n...\" If no event exists, answer nothing.".to_string(),
            (Layout::Natural, true) => "Please generate the result in the following format: \"event_type: trigger_word_1, trigger_word_2; event_type: trigger_word; ...\" Give every event type, and answer \"event_type: NONE\" for an event type that does not occur.".to_string(),
            (Layout::Natural, false) => "Please generate the result in the following format: \"event_type: trigger_word_1, trigger_word_2; event_type: trigger_word; ...\" Only give the event types that occur; if no event exists, answer nothing.".to_string(),
            (Layout::Json, true) => format!(
                "Please generate the result in the following format, one line per event type: {{\"event_type\": \"{first}\", \"trigger word\": [\"trigger_word_1\", \"trigger_word_2\"]}} For an event type that does not occur, give an empty list."
            ),
            (Layout::Json, false) => format!(
                "Please generate the result in the following format, one line per event type: {{\"event_type\": \"{first}\", \"trigger word\": [\"trigger_word_1\", \"trigger_word_2\"]}} Only give the event types that occur; if no event exists, answer nothing."
            ),
        });
        if design.labels == LabelForm::Numeric {
            parts.push(
                "Write each event type as its number in the set, starting from 0.".to_string(),
            );
        }
        parts.push(
            match design.reasoning {
                Reasoning::None => "",
                Reasoning::Cot => {
                    "Before the trigger words of each event type, quote the part of the sentence that mentions them in double quotes."
                }
                Reasoning::ReverseCot => {
                    "After the trigger words of each event type, quote the part of the sentence that mentions them in double quotes."
                }
            }
            .to_string(),
        );
    }
    parts.retain(|p| !p.is_empty());
    if zh {
        let instruction = parts.concat();
        match design.placement {
            Placement::InstFirst => format!("{instruction}\n句子：{text}\n输出："),
            Placement::InstLast => format!("句子：{text}\n{instruction}\n输出："),
            Placement::NoInst => format!("句子：{text}\n输出："),
        }
    } else {
        let instruction = parts.join(" ");
        match design.placement {
            Placement::InstFirst => format!("{instruction} The sentence is: {text} Output: \n"),
            Placement::InstLast => format!("The sentence is: {text}\n{instruction} Output: \n"),
            Placement::NoInst => format!("The sentence is: {text} Output: \n"),
        }
    }
}
