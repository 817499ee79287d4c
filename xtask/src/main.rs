//! `cargo xtask`: see the library documentation and `cargo xtask --help`.

fn main() -> std::process::ExitCode {
    xtask::cli::main()
}
