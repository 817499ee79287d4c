//! `cargo xtask`: see the library documentation and `cargo xtask --help`.

#[allow(unsafe_code)]
fn main() -> std::process::ExitCode {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sde_engine::apply_cpu_env_defaults() };
    xtask::cli::main()
}
