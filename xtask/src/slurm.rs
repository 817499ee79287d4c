//! `cargo xtask slurm`: an sbatch job-array script whose tasks each run one shard, and a
//! follow-up job that writes the report once every shard has finished.

/// Settings of the generated script.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmOptions {
    /// Number of array tasks (= shards).
    pub shards: usize,
    /// Results folder shared by all tasks.
    pub out: String,
    /// Arguments every task passes to `reproduce` (preset, config, overrides).
    pub run_args: Vec<String>,
    /// Wall-time limit per task (`HH:MM:SS`).
    pub time: String,
    /// GPUs per task (0 = CPU only).
    pub gpus: usize,
    /// CPU cores per task.
    pub cpus: usize,
    /// Memory per task (`64G`).
    pub mem: String,
    /// Partition, if any.
    pub partition: Option<String>,
    /// Extra cargo features (e.g. `cuda`).
    pub features: Vec<String>,
}

/// Quotes a word for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The sbatch script.
pub fn script(o: &SlurmOptions) -> String {
    let args: Vec<String> = o.run_args.iter().map(|a| sh_quote(a)).collect();
    let args = args.join(" ");
    let out = sh_quote(&o.out);
    let features = if o.features.is_empty() {
        String::new()
    } else {
        format!(" --features {}", sh_quote(&o.features.join(",")))
    };
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(
        "# Sample-design study as a Slurm job array: one shard of the cell matrix per task.\n",
    );
    s.push_str("# Submit from the repository root:  sbatch <this file>\n");
    s.push_str("# Shards share the results folder; finished cells are skipped on resubmission.\n");
    s.push_str("#SBATCH --job-name=sde-study\n");
    s.push_str(&format!(
        "#SBATCH --array=0-{}\n",
        o.shards.saturating_sub(1)
    ));
    s.push_str(&format!("#SBATCH --time={}\n", o.time));
    s.push_str(&format!("#SBATCH --cpus-per-task={}\n", o.cpus));
    s.push_str(&format!("#SBATCH --mem={}\n", o.mem));
    if o.gpus > 0 {
        s.push_str(&format!("#SBATCH --gres=gpu:{}\n", o.gpus));
    }
    if let Some(p) = &o.partition {
        s.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    s.push_str("#SBATCH --output=slurm-%A_%a.out\n\nset -euo pipefail\n");
    s.push_str(&format!(
        "cargo build --release --package xtask{features}\n\
         # Each task runs its shard; whichever finishes the matrix also writes the report.\n\
         ./target/release/xtask reproduce {args} --out {out} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\" --report-if-complete\n",
        n = o.shards
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_runs_every_shard_with_the_same_arguments() {
        let s = script(&SlurmOptions {
            shards: 8,
            out: "results/paper".into(),
            run_args: vec![
                "--preset".into(),
                "paper".into(),
                "--set".into(),
                "seeds=[1, 2]".into(),
            ],
            time: "24:00:00".into(),
            gpus: 1,
            cpus: 8,
            mem: "64G".into(),
            partition: Some("gpu".into()),
            features: vec!["cuda".into()],
        });
        assert!(s.contains("#SBATCH --array=0-7\n"), "{s}");
        assert!(s.contains("#SBATCH --gres=gpu:1\n"));
        assert!(s.contains("#SBATCH --partition=gpu\n"));
        assert!(s.contains("--features cuda"));
        assert!(s.contains(
            "reproduce --preset paper --set 'seeds=[1, 2]' --out results/paper --shard \"${SLURM_ARRAY_TASK_ID}/8\""
        ));
        assert!(s.contains("--report-if-complete"));
    }

    #[test]
    fn quoting_is_safe() {
        assert_eq!(sh_quote("plain"), "plain");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
