//! Building the strategy components written in Python and JavaScript, with their toolchains
//! installed once into the tools cache: componentize-py in a venv, componentize-js with npm.
//!
//! A component is a folder with an `app.py` (defining `WitWorld`) or an `app.js` (exporting
//! `describe` and `run`): the test probes in `strategies/<language>/` and the examples in
//! `examples/strategies/<language>/`. Each builds against `wit/` with its language's SDK
//! (`strategies/<language>/sdk`), and lands in `target/strategies` as `<folder>_py.wasm` or
//! `<folder>_js.wasm`. A component newer than all its inputs is not rebuilt (a build takes
//! 5 to 15 s).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::build::{components_dir, target_dir};
use crate::run_cmd;
use crate::services::{install_venv, remove_half_install, tools_dir};

/// A language whose components the build makes.
#[derive(Debug, Clone, Copy)]
pub enum Language {
    Python,
    JavaScript,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// The folder of its SDK, probes and examples under `strategies/` and
    /// `examples/strategies/`.
    fn folder(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }

    fn app(self) -> &'static str {
        match self {
            Language::Python => "app.py",
            Language::JavaScript => "app.js",
        }
    }

    fn tool(self) -> (&'static str, &'static str) {
        match self {
            Language::Python => ("componentize-py", "0.25.1"),
            Language::JavaScript => ("componentize-js", "0.23.0"),
        }
    }

    fn install_dir(self) -> PathBuf {
        let (tool, version) = self.tool();
        tools_dir().join(format!("{tool}-{version}"))
    }

    /// Installs the toolchain into the tools cache unless a complete install is there.
    pub fn ensure_toolchain(self) -> Result<()> {
        let dir = self.install_dir();
        let marker = dir.join(".installed");
        if marker.is_file() {
            return Ok(());
        }
        let (tool, version) = self.tool();
        eprintln!(
            "{tool} {version} is not installed; installing it into {} (once)",
            dir.display()
        );
        match self {
            Language::Python => {
                install_venv(&dir, tool, &[&format!("componentize-py=={version}")])?
            }
            Language::JavaScript => {
                remove_half_install(&dir)?;
                fs::create_dir_all(&dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
                run_cmd(
                    Command::new("npm")
                        .args(["install", "--no-audit", "--no-fund", "--prefix"])
                        .arg(&dir)
                        .arg(format!("@bytecodealliance/componentize-js@{version}")),
                )
                .context("could not install componentize-js with npm (used here with Node.js 20)")?
            }
        }
        fs::write(&marker, format!("{tool} {version}\n"))
            .with_context(|| format!("could not write {}", marker.display()))
    }

    /// Builds the component of `app_dir` into `out`.
    fn build(self, root: &Path, app_dir: &Path, out: &Path) -> Result<()> {
        let sdk = root.join("strategies").join(self.folder()).join("sdk");
        let wit = root.join("wit");
        match self {
            Language::Python => {
                run_cmd(
                    Command::new(self.install_dir().join("bin/componentize-py"))
                        .arg("-d")
                        .arg(&wit)
                        .args(["-w", "strategy", "componentize", "-p"])
                        .arg(app_dir)
                        .arg("-p")
                        .arg(&sdk)
                        .args(["app", "-o"])
                        .arg(out),
                )?;
                run_cmd(
                    Command::new("python3")
                        .arg(sdk.join("declare_needs.py"))
                        .arg(out)
                        .args(PYTHON_NEEDS),
                )
                .context("declaring the needs of a Python component failed")
            }
            Language::JavaScript => {
                // componentize-js resolves relative imports only: the app and the SDK are
                // put side by side.
                let staged = out.with_extension("src");
                if staged.exists() {
                    fs::remove_dir_all(&staged)?;
                }
                fs::create_dir_all(&staged)?;
                for file in [app_dir.join("app.js"), sdk.join("dpone_strategy.js")] {
                    fs::copy(&file, staged.join(file.file_name().expect("a file name")))
                        .with_context(|| format!("could not copy {}", file.display()))?;
                }
                run_cmd(
                    Command::new("node")
                        .arg(sdk.join("build.mjs"))
                        .arg(self.install_dir().join(
                            "node_modules/@bytecodealliance/componentize-js/src/componentize.js",
                        ))
                        .arg(staged.join("app.js"))
                        .arg(&wit)
                        .arg(out),
                )
            }
        }
    }

    /// The component folders of this language: each holds its `app` file.
    fn sources(self, root: &Path) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for parent in [
            root.join("strategies").join(self.folder()),
            root.join("examples/strategies").join(self.folder()),
        ] {
            for entry in fs::read_dir(&parent)
                .with_context(|| format!("could not list {}", parent.display()))?
            {
                let dir = entry?.path();
                if dir.join(self.app()).is_file() {
                    found.push(dir);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Builds every component of this language into `target/strategies`; returns their
    /// paths.
    pub fn build_components(self, root: &Path) -> Result<Vec<PathBuf>> {
        self.ensure_toolchain()?;
        let sdk = root.join("strategies").join(self.folder()).join("sdk");
        let built_dir = target_dir(root).join(self.folder());
        fs::create_dir_all(&built_dir)
            .with_context(|| format!("could not create {}", built_dir.display()))?;
        let suffix = match self {
            Language::Python => "py",
            Language::JavaScript => "js",
        };
        let mut copied = Vec::new();
        for dir in self.sources(root)? {
            let name = format!(
                "{}_{suffix}",
                dir.file_name()
                    .expect("a folder has a name")
                    .to_string_lossy()
            );
            let built = built_dir.join(format!("{name}.wasm"));
            // The toolchain's install marker and this file (the declared needs) are inputs
            // too: a new toolchain or new needs rebuild every component.
            let inputs = [
                dir.as_path(),
                &sdk,
                &root.join("wit"),
                &self.install_dir().join(".installed"),
                &root.join("xtask/src/languages.rs"),
            ];
            if !fresh(&built, &inputs)? {
                // Built aside and renamed once every step succeeded: a failed step never
                // leaves a component that looks fresh.
                let partial = built.with_extension("partial.wasm");
                self.build(root, &dir, &partial)
                    .with_context(|| format!("building the component {} failed", dir.display()))?;
                fs::rename(&partial, &built)
                    .with_context(|| format!("could not rename {}", partial.display()))?;
            }
            let to = components_dir(root).join(format!("{name}.wasm"));
            fs::copy(&built, &to).with_context(|| {
                format!("could not copy {} to {}", built.display(), to.display())
            })?;
            copied.push(to);
        }
        Ok(copied)
    }
}

/// What a Python component declares it needs. Measured: CPython's snapshot starts at 14 MiB
/// of linear memory, and the snapshot_diff example runs within 16 MiB and 30,000,000 fuel
/// (host calls included) on a small table, so fuel keeps its default. Memory gets twice the
/// Rust default: a Python object is several times the size of the Rust value it stands for,
/// and a strategy may hold up to 10,000 `distinct-values` at once.
const PYTHON_NEEDS: &[&str] = &["memory_mb=128"];

/// Whether `built` exists and is newer than every file under `inputs`.
fn fresh(built: &Path, inputs: &[&Path]) -> Result<bool> {
    let Ok(built_at) = fs::metadata(built).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    for input in inputs {
        if newest(input)? >= built_at {
            return Ok(false);
        }
    }
    Ok(true)
}

fn newest(path: &Path) -> Result<SystemTime> {
    let meta = fs::metadata(path).with_context(|| format!("could not read {}", path.display()))?;
    let mut newest = meta.modified()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            let entry = entry?.path();
            // componentize-py compiles the sources it bundles there during a build.
            if entry.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            newest = newest.max(self::newest(&entry)?);
        }
    }
    Ok(newest)
}
