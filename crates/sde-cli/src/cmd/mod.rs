//! One module per subcommand.

pub(crate) mod data;
pub(crate) mod eval;
mod eval_table;
pub(crate) mod format;
pub(crate) mod model;
pub(crate) mod train;

/// A progress bar in the style of every `sde` command (plain when `NO_COLOR` is set):
/// elapsed, bar, position/length, `template_extra`, ETA.
pub(crate) fn bar(len: u64, template_extra: &str) -> indicatif::ProgressBar {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let bar = if no_color {
        "{bar:30}"
    } else {
        "{bar:30.cyan/blue}"
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} {bar} {{pos}}/{{len}} {template_extra} eta {{eta}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(len).with_style(style)
}
