//! Sample designs of the SDE study and their exact rendering.
//!
//! A [`Design`] fixes one option on every axis the study varies. Rendering a record under a
//! design gives a [`Sample`]: the prompt text, the completion text and which of them the loss
//! covers. Prompt and completion stay separate strings so that a trainer tokenizes them
//! separately and the loss mask can never shift at the seam.
//!
//! - [`render`] / [`render_ood`] / [`render_with`]: record + design + domain → [`Sample`];
//!   [`render_icl`] for in-context prompts.
//! - [`Design`]'s `Display` / `FromStr`: the stable design id (see [`id`]); [`Design::preset`]
//!   and [`Design::presets`]: the study's named designs.
//! - [`Grammar`]: the exact separators and vocabulary of a design's completions, for parsers.
//! - [`ChatTemplate`]: optional wrapping in a model's own chat template.
//!
//! This crate does no IO and never depends on a tensor library.

mod chat;
mod design;
mod error;
pub mod evidence;
pub mod grammar;
pub mod id;
mod items;
pub mod preset;
mod render;
mod templates;

pub use chat::ChatTemplate;
pub use design::{
    Design, LabelForm, Language, Layout, LossOn, Placement, Reasoning, Unmentioned, Wrap,
};
pub use error::FormatError;
pub use grammar::{Grammar, JsonKeys, Quote, TargetName};
pub use id::{Segment, study_language};
pub use preset::Preset;
pub use render::{Context, Sample, icl, render, render_icl, render_ood, render_with};
pub use sde_data::TaskKind;
