//! Rendering records into samples.

use serde::{Deserialize, Serialize};

use sde_data::{Domain, EventRecord, MasaRecord, NerRecord, Record, Sentiment};

use crate::Layout;
use crate::chat::ChatTemplate;
use crate::design::{Design, LossOn, Placement, Reasoning, Unmentioned, Wrap};
use crate::error::FormatError;
use crate::evidence;
use crate::grammar::Grammar;
use crate::items::{Item, completion};
use crate::templates;

/// One rendered fine-tuning (or evaluation) sample.
///
/// The prompt and the completion are separate strings: a trainer tokenizes them separately, so
/// the loss mask can never shift at the seam. The end-of-sequence token is not part of the
/// completion; the trainer appends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// Everything the model reads before answering.
    pub prompt: String,
    /// The answer the model is trained to produce (the gold output at evaluation).
    pub completion: String,
    /// Which tokens the training loss covers.
    pub loss_on: LossOn,
}

/// Which domains a prompt is about, and what else rendering needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The domain the model is (or was) trained on.
    pub train_domain: &'a Domain,
    /// The domain the prompt asks about: the training domain in-domain, another one
    /// out-of-domain (OOD).
    pub test_domain: &'a Domain,
    /// The model's chat template, required by designs with [`Wrap::Chat`].
    pub chat_template: Option<&'a ChatTemplate>,
}

impl<'a> Context<'a> {
    /// An in-domain context: prompts ask about the training domain.
    pub fn in_domain(domain: &'a Domain) -> Context<'a> {
        Context {
            train_domain: domain,
            test_domain: domain,
            chat_template: None,
        }
    }

    /// An out-of-domain context: trained on `train`, asked about `test`.
    pub fn ood(train: &'a Domain, test: &'a Domain) -> Context<'a> {
        Context {
            train_domain: train,
            test_domain: test,
            chat_template: None,
        }
    }

    /// This context with a chat template for [`Wrap::Chat`] designs.
    pub fn with_chat_template(self, template: &'a ChatTemplate) -> Context<'a> {
        Context {
            chat_template: Some(template),
            ..self
        }
    }

    /// Whether the prompt asks about targets other than the training domain's.
    pub fn is_ood(&self) -> bool {
        !self.train_domain.keys().eq(self.test_domain.keys())
    }
}

/// Renders `record` under `design`, in-domain: the prompt asks about `domain`'s aspects
/// (entity or event types for NER and events).
pub fn render(record: &Record, design: &Design, domain: &Domain) -> Result<Sample, FormatError> {
    render_with(record, design, &Context::in_domain(domain))
}

/// Renders `record` for a model trained on `train_domain`, asking about `test_domain`.
///
/// The prompt and the completion list `test_domain`'s aspects. A design without instruction
/// cannot name other aspects, so it refuses with [`FormatError::NoInstructionOod`] whenever
/// the two domains' keys differ.
pub fn render_ood(
    record: &Record,
    design: &Design,
    train_domain: &Domain,
    test_domain: &Domain,
) -> Result<Sample, FormatError> {
    render_with(record, design, &Context::ood(train_domain, test_domain))
}

/// Renders `record` under `design` in `context`.
pub fn render_with(
    record: &Record,
    design: &Design,
    context: &Context<'_>,
) -> Result<Sample, FormatError> {
    let raw = render_raw(record, design, context)?;
    wrap(raw, design, context)
}

/// An in-context prompt: `demonstrations` rendered in full, then the query's prompt, in the
/// study's format `Example 1:\n{prompt}{completion}\n\nExample 2:\n...\n\nExample k+1:\n{prompt}`.
///
/// Every record is rendered unwrapped under `design` and `context`; the design's wrapping is
/// applied once, to the whole prompt. With no demonstrations the result is the plain sample.
pub fn render_icl(
    query: &Record,
    demonstrations: &[&Record],
    design: &Design,
    context: &Context<'_>,
) -> Result<Sample, FormatError> {
    let query = render_raw(query, design, context)?;
    let demos = demonstrations
        .iter()
        .map(|r| render_raw(r, design, context))
        .collect::<Result<Vec<_>, _>>()?;
    wrap(icl(&demos, &query), design, context)
}

/// Joins already rendered samples into the study's in-context format (see [`render_icl`]).
pub fn icl(demonstrations: &[Sample], query: &Sample) -> Sample {
    if demonstrations.is_empty() {
        return query.clone();
    }
    let mut prompt = String::new();
    for (i, d) in demonstrations.iter().enumerate() {
        prompt += &format!("Example {}:\n{}{}\n\n", i + 1, d.prompt, d.completion);
    }
    prompt += &format!("Example {}:\n{}", demonstrations.len() + 1, query.prompt);
    Sample {
        prompt,
        completion: query.completion.clone(),
        loss_on: query.loss_on,
    }
}

fn wrap(sample: Sample, design: &Design, context: &Context<'_>) -> Result<Sample, FormatError> {
    let prompt = match design.wrap {
        Wrap::Raw => sample.prompt,
        Wrap::InstTags => format!("[INST]{}[/INST]", sample.prompt),
        Wrap::Chat => {
            let template =
                context
                    .chat_template
                    .ok_or_else(|| FormatError::ChatTemplateMissing {
                        design: design.to_string(),
                    })?;
            template.wrap_prompt(&sample.prompt)?
        }
    };
    Ok(Sample { prompt, ..sample })
}

fn render_raw(
    record: &Record,
    design: &Design,
    context: &Context<'_>,
) -> Result<Sample, FormatError> {
    if design.paraphrase > 2 {
        return Err(FormatError::Paraphrase {
            index: design.paraphrase,
        });
    }
    if record.task() != design.task {
        return Err(FormatError::TaskMismatch {
            record: record.id().to_string(),
            record_task: record.task(),
            design_task: design.task,
        });
    }
    let domain = context.test_domain;
    if domain.aspects.is_empty() {
        return Err(FormatError::EmptyDomain {
            domain: domain.name.clone(),
        });
    }
    if design.placement == Placement::NoInst && context.is_ood() {
        return Err(FormatError::NoInstructionOod {
            design: design.to_string(),
            train_domain: context.train_domain.name.clone(),
            test_domain: domain.name.clone(),
        });
    }
    let grammar = Grammar::new(design, domain);
    let items = match record {
        Record::Masa(r) => masa_items(r, &grammar, domain)?,
        Record::Ner(r) => ner_items(r, &grammar)?,
        Record::Event(r) => event_items(r, &grammar)?,
    };
    Ok(Sample {
        prompt: templates::prompt(design, &grammar, record.text()),
        completion: completion(&grammar, &items),
        loss_on: design.loss_on,
    })
}

fn reasoning(grammar: &Grammar) -> bool {
    grammar.design.reasoning != Reasoning::None
}

fn masa_items(
    record: &MasaRecord,
    grammar: &Grammar,
    domain: &Domain,
) -> Result<Vec<Item>, FormatError> {
    let mut items = Vec::new();
    for (aspect, target) in domain.aspects.iter().zip(&grammar.targets) {
        let label = record.label(&aspect.key);
        let sentiment = record.sentiment(&aspect.key);
        if sentiment == Sentiment::Unmentioned && grammar.design.unmentioned == Unmentioned::Omit {
            continue;
        }
        let evidence = if !reasoning(grammar) {
            None
        } else if sentiment == Sentiment::Unmentioned {
            Some(grammar.absent_evidence.to_string())
        } else if let Some(span) = label.and_then(|l| l.evidence) {
            let text = span
                .slice(&record.text)
                .ok_or_else(|| FormatError::BadSpan {
                    record: record.id.clone(),
                    field: "evidence",
                    start: span.start,
                    end: span.end,
                })?;
            Some(evidence::tidy(text))
        } else {
            Some(evidence::tidy(evidence::aspect_clause(
                &record.text,
                aspect,
            )))
        };
        items.push(Item {
            key: target.text.clone(),
            values: vec![grammar.sentiment_word(sentiment).to_string()],
            evidence,
        });
    }
    Ok(items)
}

/// A mention of a target: its type's position in the domain, its text and byte span.
struct Mention {
    target: usize,
    text: String,
    start: usize,
    end: usize,
}

fn grouped_items(text: &str, mentions: &[Mention], grammar: &Grammar) -> Vec<Item> {
    let evidence_of = |m: &Mention| evidence::tidy(evidence::clause_around(text, m.start, m.end));
    let absent = || reasoning(grammar).then(|| grammar.absent_evidence.to_string());
    let mut items = Vec::new();
    if grammar.design.layout == Layout::Tuples {
        for m in mentions {
            items.push(Item {
                key: grammar.targets[m.target].text.clone(),
                values: vec![m.text.clone()],
                evidence: reasoning(grammar).then(|| evidence_of(m)),
            });
        }
        if grammar.design.unmentioned == Unmentioned::Placeholder {
            for (i, t) in grammar.targets.iter().enumerate() {
                if !mentions.iter().any(|m| m.target == i) {
                    items.push(Item {
                        key: t.text.clone(),
                        values: Vec::new(),
                        evidence: absent(),
                    });
                }
            }
        }
        return items;
    }
    for (i, t) in grammar.targets.iter().enumerate() {
        let of_type: Vec<&Mention> = mentions.iter().filter(|m| m.target == i).collect();
        if of_type.is_empty() && grammar.design.unmentioned == Unmentioned::Omit {
            continue;
        }
        items.push(Item {
            key: t.text.clone(),
            values: of_type.iter().map(|m| m.text.clone()).collect(),
            evidence: match of_type.first() {
                Some(m) => reasoning(grammar).then(|| evidence_of(m)),
                None => absent(),
            },
        });
    }
    items
}

fn ner_items(record: &NerRecord, grammar: &Grammar) -> Result<Vec<Item>, FormatError> {
    // Byte offset of every token in `text` (tokens joined by single spaces).
    let mut offsets = Vec::with_capacity(record.tokens.len() + 1);
    let mut at = 0;
    for token in &record.tokens {
        offsets.push(at);
        at += token.len() + 1;
    }
    offsets.push(at.saturating_sub(1));
    let mut mentions = Vec::new();
    for e in &record.entities {
        if e.start_token >= e.end_token || e.end_token > record.tokens.len() {
            return Err(FormatError::BadTokenRange {
                record: record.id.clone(),
                entity: e.text.clone(),
                start: e.start_token,
                end: e.end_token,
                len: record.tokens.len(),
            });
        }
        let Some(target) = grammar.targets.iter().position(|t| t.key == e.kind) else {
            continue;
        };
        let start = offsets[e.start_token].min(record.text.len());
        let end = (offsets[e.end_token] - usize::from(e.end_token < record.tokens.len()))
            .min(record.text.len());
        mentions.push(Mention {
            target,
            text: e.text.clone(),
            start,
            end,
        });
    }
    Ok(grouped_items(&record.text, &mentions, grammar))
}

fn event_items(record: &EventRecord, grammar: &Grammar) -> Result<Vec<Item>, FormatError> {
    let mut mentions = Vec::new();
    for e in &record.events {
        if e.span.slice(&record.text).is_none() {
            return Err(FormatError::BadSpan {
                record: record.id.clone(),
                field: "trigger",
                start: e.span.start,
                end: e.span.end,
            });
        }
        let Some(target) = grammar.targets.iter().position(|t| t.key == e.kind) else {
            continue;
        };
        mentions.push(Mention {
            target,
            text: e.trigger.clone(),
            start: e.span.start,
            end: e.span.end,
        });
    }
    Ok(grouped_items(&record.text, &mentions, grammar))
}
