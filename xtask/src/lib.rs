//! Project automation behind `cargo xtask`: the study's experiment matrices, run resumably
//! cell by cell, and the tables, plots and report made from their results.
//!
//! Flow: [`knobs`] (preset + TOML + `--set`) → [`matrix`] (cells, shards) → [`orchestrate`]
//! (skip finished cells, run the rest through a [`runner::CellRunner`], progress bars) →
//! [`report`] (`results.parquet`, [`tables`], [`plots`], `report.html`).

pub mod bench;
pub mod cell;
pub mod cli;
pub mod cost;
pub mod designs;
pub mod knobs;
pub mod learns;
pub mod matrix;
pub mod orchestrate;
pub mod plots;
pub mod real;
pub mod report;
pub mod results;
pub mod runner;
pub mod slurm;
pub mod store;
pub mod tables;
