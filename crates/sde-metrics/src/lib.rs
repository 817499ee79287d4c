//! sde-metrics: see the crate description.
