//! sde-parse: see the crate description.
