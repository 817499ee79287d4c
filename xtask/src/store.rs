//! The results folder: atomic writes and the per-cell folders.
//!
//! Layout of `<out>/cells/<cell id>/`: `cell.json` (the spec, written first), whatever the
//! runner writes (samples, adapter, predictions), `metrics.json`, and `done` (written last).
//! A folder without `done` is an interrupted cell: it is wiped and rerun.

use crate::cell::{CellOutcome, CellSpec};
use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then
/// renamed over `path`. Readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).context("serializing JSON")?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file, naming it in the error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One cell's folder.
#[derive(Debug, Clone)]
pub struct CellDir {
    /// The folder.
    pub path: PathBuf,
}

impl CellDir {
    /// The folder of `cell` under `out`.
    pub fn new(out: &Path, cell: &CellSpec) -> CellDir {
        CellDir {
            path: cells_dir(out).join(cell.id()),
        }
    }

    /// Whether the cell finished (its `done` marker exists).
    pub fn is_done(&self) -> bool {
        self.path.join("done").is_file()
    }

    /// Clears any partial state and writes `cell.json`.
    pub fn begin(&self, cell: &CellSpec) -> Result<()> {
        if self.path.exists() {
            fs::remove_dir_all(&self.path)
                .with_context(|| format!("clearing interrupted cell {}", self.path.display()))?;
        }
        fs::create_dir_all(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        write_json(&self.path.join("cell.json"), cell)
    }

    /// Writes `metrics.json`, then the `done` marker.
    pub fn finish(&self, outcome: &CellOutcome) -> Result<()> {
        write_json(&self.path.join("metrics.json"), outcome)?;
        write_atomic(&self.path.join("done"), b"done\n")
    }

    /// Records a failure (the cell stays unfinished and reruns next time).
    pub fn fail(&self, error: &anyhow::Error) -> Result<()> {
        write_atomic(
            &self.path.join("error.txt"),
            format!("{}\n", crate::error_text(error)).as_bytes(),
        )
    }

    /// Reads a finished cell's spec and outcome.
    pub fn load(&self) -> Result<(CellSpec, CellOutcome)> {
        Ok((
            read_json(&self.path.join("cell.json"))?,
            read_json(&self.path.join("metrics.json"))?,
        ))
    }
}

/// `<out>/cells`.
pub fn cells_dir(out: &Path) -> PathBuf {
    out.join("cells")
}

/// Every finished cell under `out`, sorted by folder name.
pub fn finished_cells(out: &Path) -> Result<Vec<(CellSpec, CellOutcome)>> {
    let dir = cells_dir(out);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("done").is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| CellDir { path }.load())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }
}
