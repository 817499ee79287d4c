//! sde-engine: see the crate description.
