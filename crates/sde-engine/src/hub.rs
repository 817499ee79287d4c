//! Hugging Face hub ids, resolved through the standard cache layout
//! (`models--org--name/snapshots/<commit>/...`, `refs/<revision>`), downloading when online.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EngineError, Result};
use crate::load::{LoadedModel, ModelSource, read_hf_dir};
use crate::model::default_device;

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Loads `repo_id` at `revision` from the hub cache (`cache_dir`, default `$HF_HOME/hub` or
/// `~/.cache/huggingface/hub`). Offline, only cached files are used; online, missing files are
/// downloaded into the cache first.
pub fn load_hub(
    repo_id: &str,
    revision: &str,
    cache_dir: Option<&Path>,
    offline: bool,
) -> Result<LoadedModel> {
    let snapshot = resolve_snapshot(repo_id, revision, cache_dir, offline)?;
    let (model, tokenizer) = read_hf_dir(&snapshot, &default_device()?)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        source: ModelSource::Hub {
            repo: repo_id.into(),
            revision: revision.into(),
            snapshot,
        },
    })
}

/// The local snapshot folder of `repo_id` at `revision`, downloading it when online.
pub fn resolve_snapshot(
    repo_id: &str,
    revision: &str,
    cache_dir: Option<&Path>,
    offline: bool,
) -> Result<PathBuf> {
    let err = |message: String| EngineError::Hub {
        repo: repo_id.into(),
        revision: revision.into(),
        message,
    };
    let cache = match cache_dir {
        Some(d) => Cache::new(d.to_path_buf()),
        None => Cache::from_env(),
    };
    let repo = Repo::with_revision(repo_id.into(), RepoType::Model, revision.into());
    let cached = cache.repo(repo.clone()).get("config.json").or_else(|| {
        // A commit hash given directly as the revision has no refs file.
        let p = cache
            .path()
            .join(repo.folder_name())
            .join("snapshots")
            .join(revision)
            .join("config.json");
        p.is_file().then_some(p)
    });
    if let Some(config) = cached {
        return Ok(config.parent().expect("a file has a parent").to_path_buf());
    }
    if offline {
        return Err(err(format!(
            "not in the hub cache {} and offline mode is on",
            cache.path().display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(false)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let api_repo = api.repo(repo);
    let get = |f: &str| api_repo.get(f).map_err(|e| err(format!("{f}: {e}")));
    let config = get("config.json")?;
    get("tokenizer.json")?;
    let _ = api_repo.get("tokenizer_config.json");
    if api_repo.get("model.safetensors").is_err() {
        let index = get("model.safetensors.index.json")?;
        let text = std::fs::read_to_string(&index).map_err(|e| EngineError::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut files: Vec<&str> = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        files.sort();
        files.dedup();
        for f in files {
            get(f)?;
        }
    }
    Ok(config.parent().expect("a file has a parent").to_path_buf())
}
