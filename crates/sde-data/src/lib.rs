//! Task records for sample-design studies, and where they come from.
//!
//! The three task families of the SDE study each have a record type:
//! multi-aspect sentiment ([`MasaRecord`]), nested named-entity recognition ([`NerRecord`])
//! and event detection ([`EventRecord`]). [`Record`] wraps them so that pipelines can carry
//! any task. A [`Domain`] names the aspect list a MASA prompt asks about (the study's D1, D2,
//! or a dataset's own categories).

mod record;

pub use record::{
    AspectDef, AspectLabel, Domain, Entity, Event, EventRecord, MasaRecord, NerRecord, Record,
    Sentiment, Span, TaskKind, GENIA_TYPES, MAVEN10_TYPES, STUDY_D1, STUDY_D2,
};
