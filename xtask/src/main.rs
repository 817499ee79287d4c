//! Project automation: `cargo xtask reproduce`, `bench`, `slurm`, `merge`.

fn main() {
    eprintln!("xtask: no command yet");
}
