//! Task records for sample-design studies, and where they come from.
//!
//! The three task families of the SDE study each have a record type:
//! multi-aspect sentiment ([`MasaRecord`]), nested named-entity recognition ([`NerRecord`])
//! and event detection ([`EventRecord`]). [`Record`] wraps them so that pipelines can carry
//! any task. A [`Domain`] names the aspect list a MASA prompt asks about (the study's D1, D2,
//! or a dataset's own categories); for NER and event detection it lists the entity or event
//! types.
//!
//! Records come from [`load`]ers of the public datasets' original formats, driven by TOML
//! [`Recipe`]s under the workspace's `datasets/`, or from the seeded [`synth`]etic generators
//! (the offline default). [`io`] writes and reads them as JSON Lines or Parquet.

mod error;
pub mod io;
pub mod load;
pub mod recipe;
mod record;
pub mod stats;
pub mod synth;

pub use error::{DataError, Result};
pub use load::LoadReport;
pub use recipe::{
    AspectSpec, LoaderKind, Recipe, RecipeOptions, SplitPart, SplitSpec, data_root_from_env,
};
pub use record::{
    AspectDef, AspectLabel, Domain, Entity, Event, EventRecord, GENIA_TYPES, MAVEN10_TYPES,
    MasaRecord, NerRecord, Record, STUDY_D1, STUDY_D2, Sentiment, Span, TaskKind,
};
pub use synth::SynthConfig;
