//! One module per subcommand.

pub(crate) mod data;
pub(crate) mod eval;
pub(crate) mod format;
pub(crate) mod model;
pub(crate) mod train;
