//! The real pipeline behind [`CellRunner`]: sde-data → sde-format → sde-engine → sde-parse →
//! sde-metrics.

use crate::cell::{CellOutcome, CellSpec};
use crate::knobs::Knobs;
use crate::runner::{CellContext, CellRunner};
use anyhow::{Result, bail};

/// Runs cells through the workspace crates.
#[derive(Debug)]
pub struct RealRunner;

impl RealRunner {
    /// Prepares the runner (fails early when the pipeline cannot run).
    pub fn new(_knobs: &Knobs) -> Result<RealRunner> {
        bail!("the real pipeline is not wired yet; run with --runner fake")
    }
}

impl CellRunner for RealRunner {
    fn name(&self) -> &'static str {
        "real"
    }

    fn run(&self, _cell: &CellSpec, _ctx: &CellContext<'_>) -> Result<CellOutcome> {
        bail!("the real pipeline is not wired yet")
    }
}
