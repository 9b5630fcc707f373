//! Building the strategy components (their own workspace, for wasm32-wasip2) and the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::languages::Language;
use crate::{cargo, output, run_cmd};

const WASM_TARGET: &str = "wasm32-wasip2";

/// The cargo profile of the host binary. Components are always built in release mode: their
/// profile strips and optimizes for size, and a debug component is many times larger and slower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release_flag(release: bool) -> Self {
        if release {
            Profile::Release
        } else {
            Profile::Debug
        }
    }

    fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// The one target directory shared by the host and the components. Set explicitly on every
/// nested cargo so a `CARGO_TARGET_DIR` in the caller's environment cannot scatter the outputs.
pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target")
}

/// Where the host and the tests look for the built components.
pub fn components_dir(root: &Path) -> PathBuf {
    target_dir(root).join("strategies")
}

pub fn host_binary(root: &Path, profile: Profile) -> PathBuf {
    target_dir(root)
        .join(profile.dir_name())
        .join(format!("dpone-host{}", std::env::consts::EXE_SUFFIX))
}

/// Ensure the wasm target, build every component, then the host; print where they are.
pub fn build_all(root: &Path, profile: Profile) -> Result<()> {
    ensure_wasm_target()?;
    phase("building the strategy components (wasm32-wasip2, release)");
    let mut components = build_components(root)?;
    for language in Language::ALL {
        phase(&format!("building the {language:?} strategy components"));
        match language.build_components(root) {
            Ok(built) => components.extend(built),
            // Rust components and the host do not need them. No stale copy stays behind
            // (`build_components` emptied the folder), so a test that needs one fails.
            Err(err) => println!("skipped the {language:?} components: {err:#}"),
        }
    }
    phase(&format!(
        "building dpone-host ({}; the first build compiles wasmtime and takes minutes)",
        profile.dir_name()
    ));
    let host = build_host(root, profile)?;
    println!("components ({}):", components_dir(root).display());
    for component in &components {
        println!("  {}", component.display());
    }
    println!("host: {}", host.display());
    Ok(())
}

/// One line per step of a long task, so a user can tell progress from a hang.
pub fn phase(step: &str) {
    println!("==> {step}");
}

pub fn ensure_wasm_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm32-wasip2 target")?;
    if installed.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// Build the strategies workspace for wasm32-wasip2 and copy each component to
/// `target/strategies/<name>.wasm`. Returns the copied paths.
pub fn build_components(root: &Path) -> Result<Vec<PathBuf>> {
    let strategies = root.join("strategies");
    run_cmd(
        cargo()
            .args(["build", "--release", "--target", WASM_TARGET])
            .current_dir(&strategies)
            .env("CARGO_TARGET_DIR", target_dir(root)),
    )
    .context("building the strategy components failed")?;

    let built = target_dir(root).join(WASM_TARGET).join("release");
    let out_dir = components_dir(root);
    fs::create_dir_all(&out_dir)
        .with_context(|| format!("could not create {}", out_dir.display()))?;
    // Start from an empty folder so a strategy removed from the workspace does not linger.
    for entry in
        fs::read_dir(&out_dir).with_context(|| format!("could not list {}", out_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "wasm") {
            fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }

    let mut copied = Vec::new();
    for name in component_crates(&strategies)? {
        let from = built.join(format!("{name}.wasm"));
        let to = out_dir.join(format!("{name}.wasm"));
        fs::copy(&from, &to)
            .with_context(|| format!("could not copy {} to {}", from.display(), to.display()))?;
        copied.push(to);
    }
    if copied.is_empty() {
        bail!(
            "no component crates (crate-type cdylib) found in {}",
            strategies.join("Cargo.toml").display()
        );
    }
    Ok(copied)
}

/// The artifact names of the workspace members that build a component: those with a cdylib
/// target. Asking cargo (rather than keeping a list here) means a new strategy crate is picked
/// up without touching xtask, and the SDK library is left out.
fn component_crates(strategies: &Path) -> Result<Vec<String>> {
    let json = output(
        cargo()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(strategies),
    )
    .context("could not read the strategies workspace metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_str(&json).context("`cargo metadata` printed invalid JSON")?;
    let mut names = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_cdylib = target["crate_types"]
                .as_array()
                .is_some_and(|types| types.iter().any(|t| t == "cdylib"));
            if let (true, Some(name)) = (is_cdylib, target["name"].as_str()) {
                // rustc names the artifact after the target with dashes turned into underscores.
                names.push(name.replace('-', "_"));
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Debian packages the host's native dependencies build with: librdkafka (the Kafka
/// connector) is compiled from source by CMake, with OpenSSL and curl.
const NATIVE_BUILD_PACKAGES: [&str; 3] = ["cmake", "libssl-dev", "libcurl4-openssl-dev"];

/// Installs the packages of [`NATIVE_BUILD_PACKAGES`] that are missing (on Debian: other
/// systems are left to their owner, and the build says what it lacks).
fn ensure_native_build_tools() -> Result<()> {
    if Command::new("dpkg").arg("--version").output().is_err() {
        return Ok(());
    }
    let as_root = crate::services::running_as_root()?;
    for package in NATIVE_BUILD_PACKAGES {
        let installed = Command::new("dpkg")
            .args(["-s", package])
            .output()
            .is_ok_and(|out| out.status.success());
        if !installed {
            phase(&format!("installing {package} (to build librdkafka)"));
            crate::services::apt_install(as_root, package)?;
        }
    }
    Ok(())
}

pub fn build_host(root: &Path, profile: Profile) -> Result<PathBuf> {
    ensure_native_build_tools()?;
    let mut cmd = cargo();
    cmd.args(["build", "-p", "dpone-host"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir(root));
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd).context("building dpone-host failed")?;
    Ok(host_binary(root, profile))
}

/// Builds an example of dpone-host; returns its binary.
pub fn build_example(root: &Path, name: &str, profile: Profile) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "dpone-host", "--example", name])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir(root));
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd).with_context(|| format!("building the example {name} failed"))?;
    Ok(target_dir(root)
        .join(profile.dir_name())
        .join("examples")
        .join(name))
}
