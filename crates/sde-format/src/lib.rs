//! Sample designs of the SDE study and their exact rendering.
//!
//! A [`Design`] fixes one option on every axis the study varies. Rendering a record under a
//! design gives a [`Sample`]: the prompt text, the completion text and which of them the loss
//! covers. Prompt and completion stay separate strings so that a trainer tokenizes them
//! separately and the loss mask can never shift at the seam.
//!
//! This crate does no IO and never depends on a tensor library.

mod design;

pub use design::{
    Design, Language, Layout, LabelForm, LossOn, Placement, Reasoning, Unmentioned,
};
pub use sde_data::TaskKind;
