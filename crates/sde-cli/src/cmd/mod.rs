//! One module per subcommand.

pub(crate) mod data;
pub(crate) mod eval;
mod eval_table;
pub(crate) mod format;
pub(crate) mod model;
pub(crate) mod train;
