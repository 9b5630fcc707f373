//! Building the strategy components written in Python, with componentize-py installed once
//! into a venv in the tools cache.
//!
//! A Python component is a folder with an `app.py` defining `WitWorld`: the test probe in
//! `strategies/python/` and the examples in `examples/strategies/python/`. Each builds
//! against `wit/` with the SDK (`strategies/python/sdk`) on its path, gets the Python
//! runtime's needs declared (`declare_needs.py`), and lands in `target/strategies` as
//! `<folder>_py.wasm`. A component newer than all its inputs is not rebuilt (a build takes
//! ~15 s).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::build::{components_dir, target_dir};
use crate::run_cmd;
use crate::services::{install_venv, tools_dir};

const VERSION: &str = "0.25.1";

/// What a Python component declares it needs. Measured: CPython's snapshot starts at 14 MiB
/// of linear memory, and the snapshot_diff example runs within 16 MiB and 30,000,000 fuel
/// (12 host calls of it) on a small table, so fuel keeps its default. Memory gets twice the
/// Rust default: a Python object is several times the size of the Rust value it stands for,
/// and a strategy may hold up to 10,000 `distinct-values` at once.
const PYTHON_NEEDS: &[&str] = &["memory_mb=128"];

fn venv() -> PathBuf {
    tools_dir().join(format!("componentize-py-{VERSION}"))
}

fn componentize_py() -> PathBuf {
    venv().join("bin").join("componentize-py")
}

/// Installs componentize-py into the tools cache unless a complete install is there.
pub fn ensure_componentize_py() -> Result<PathBuf> {
    let marker = venv().join(".installed");
    if !marker.is_file() {
        eprintln!(
            "componentize-py {VERSION} is not installed; installing it into {} (once)",
            venv().display()
        );
        install_venv(
            &venv(),
            "componentize-py",
            &[&format!("componentize-py=={VERSION}")],
        )?;
        fs::write(&marker, format!("componentize-py {VERSION}\n"))
            .with_context(|| format!("could not write {}", marker.display()))?;
    }
    Ok(componentize_py())
}

/// The Python component folders: each holds an `app.py`.
fn sources(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for parent in [
        root.join("strategies/python"),
        root.join("examples/strategies/python"),
    ] {
        for entry in
            fs::read_dir(&parent).with_context(|| format!("could not list {}", parent.display()))?
        {
            let dir = entry?.path();
            if dir.join("app.py").is_file() {
                found.push(dir);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Builds every Python component into `target/strategies`; returns their paths.
pub fn build_components(root: &Path) -> Result<Vec<PathBuf>> {
    let tool = ensure_componentize_py()?;
    let sdk = root.join("strategies/python/sdk");
    let wit = root.join("wit");
    let built_dir = target_dir(root).join("python");
    fs::create_dir_all(&built_dir)
        .with_context(|| format!("could not create {}", built_dir.display()))?;
    let mut copied = Vec::new();
    for dir in sources(root)? {
        let name = format!(
            "{}_py",
            dir.file_name()
                .expect("a folder has a name")
                .to_string_lossy()
        );
        let built = built_dir.join(format!("{name}.wasm"));
        if !fresh(&built, &[&dir, &sdk, &wit])? {
            run_cmd(
                Command::new(&tool)
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", "strategy", "componentize", "-p"])
                    .arg(&dir)
                    .arg("-p")
                    .arg(&sdk)
                    .args(["app", "-o"])
                    .arg(&built),
            )
            .with_context(|| format!("building the Python component {} failed", dir.display()))?;
            run_cmd(
                Command::new("python3")
                    .arg(sdk.join("declare_needs.py"))
                    .arg(&built)
                    .args(PYTHON_NEEDS),
            )
            .context("declaring the needs of a Python component failed")?;
        }
        let to = components_dir(root).join(format!("{name}.wasm"));
        fs::copy(&built, &to)
            .with_context(|| format!("could not copy {} to {}", built.display(), to.display()))?;
        copied.push(to);
    }
    Ok(copied)
}

/// Whether `built` exists and is newer than every file under `inputs`.
fn fresh(built: &Path, inputs: &[&Path]) -> Result<bool> {
    let Ok(built_at) = fs::metadata(built).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    Ok(inputs
        .iter()
        .map(|dir| newest(dir))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .all(|input| input < built_at))
}

fn newest(path: &Path) -> Result<SystemTime> {
    let meta = fs::metadata(path).with_context(|| format!("could not read {}", path.display()))?;
    let mut newest = meta.modified()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            let entry = entry?.path();
            if entry.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            newest = newest.max(self::newest(&entry)?);
        }
    }
    Ok(newest)
}
