//! The Python contenders (Sling and dlt) in their own venv under `target/bench/venv`, with the
//! versions pinned in `xtask/bench-requirements.txt`.
//!
//! Each tool is installed on its own, so a failed install only takes out that contender. A
//! stamp file per tool holds the requirements it was installed with: an unchanged pin list
//! skips pip entirely, a changed one installs again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::output;

use super::Dirs;

const REQUIREMENTS: &str = "xtask/bench-requirements.txt";

/// How far the preparation may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallPolicy {
    /// Create the venv and install what is missing or out of date.
    Install,
    /// Use what is installed with the current pins; install nothing (smoke mode).
    UseInstalled,
    /// Neither install nor use anything: both contenders sit the run out (`--skip-python`).
    Skip,
}

/// The Sling contender: the PyPI wrapper, told by `SLING_BINARY` to run the binary from the
/// `sling-linux-amd64` wheel (the wrapper would otherwise download one at run time).
#[derive(Debug, Clone)]
pub struct Sling {
    pub wrapper: PathBuf,
    pub binary: PathBuf,
    pub version: String,
}

/// The dlt contender: the venv's Python running `xtask/bench_dlt.py`.
#[derive(Debug, Clone)]
pub struct Dlt {
    pub python: PathBuf,
    pub script: PathBuf,
    pub version: String,
}

/// Each tool, or why it cannot run.
#[derive(Debug)]
pub struct Tools {
    pub sling: Result<Sling, String>,
    pub dlt: Result<Dlt, String>,
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    Sling,
    Dlt,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Sling => "sling",
            Tool::Dlt => "dlt",
        }
    }

    /// The top-level packages; the requirements file pins them and their dependencies.
    fn packages(self) -> &'static [&'static str] {
        match self {
            Tool::Sling => &["sling", "sling-linux-amd64"],
            Tool::Dlt => &["dlt", "pyarrow", "sqlalchemy", "psycopg2-binary"],
        }
    }
}

pub fn prepare(root: &Path, dirs: &Dirs, policy: InstallPolicy) -> Tools {
    if policy == InstallPolicy::Skip {
        // What the tables say after "not run: ".
        let why = "--skip-python";
        return Tools {
            sling: Err(why.to_owned()),
            dlt: Err(why.to_owned()),
        };
    }
    let venv = Venv::open(root, dirs, policy);
    let ready = |tool: Tool| -> Result<&Venv, String> {
        let venv = venv.as_ref().map_err(|err| format!("{err:#}"))?;
        venv.ensure(tool, dirs, policy)
            .map_err(|err| format!("{err:#}"))?;
        Ok(venv)
    };
    Tools {
        sling: ready(Tool::Sling).and_then(|venv| venv.sling().map_err(|err| format!("{err:#}"))),
        dlt: ready(Tool::Dlt).map(|venv| Dlt {
            python: venv.python.clone(),
            script: root.join("xtask").join("bench_dlt.py"),
            version: venv.pinned_version("dlt"),
        }),
    }
}

#[derive(Debug)]
struct Venv {
    dir: PathBuf,
    python: PathBuf,
    requirements_path: PathBuf,
    requirements: String,
}

impl Venv {
    fn open(root: &Path, dirs: &Dirs, policy: InstallPolicy) -> Result<Self> {
        let requirements_path = root.join(REQUIREMENTS);
        let requirements = fs::read_to_string(&requirements_path)
            .with_context(|| format!("could not read {}", requirements_path.display()))?;
        let dir = dirs.venv.clone();
        let python = dir.join("bin").join("python");
        if !python.exists() {
            if policy == InstallPolicy::UseInstalled {
                bail!("not installed (smoke mode installs nothing; add --install)");
            }
            eprintln!("creating the bench venv {}", dir.display());
            output(Command::new("python3").args(["-m", "venv"]).arg(&dir))
                .context("could not create the venv (python3 -m venv)")?;
        }
        Ok(Venv {
            dir,
            python,
            requirements_path,
            requirements,
        })
    }

    fn ensure(&self, tool: Tool, dirs: &Dirs, policy: InstallPolicy) -> Result<()> {
        let stamp = self.dir.join(format!(".installed-{}", tool.name()));
        if fs::read_to_string(&stamp).is_ok_and(|pins| pins == self.requirements) {
            return Ok(());
        }
        if policy == InstallPolicy::UseInstalled {
            bail!(
                "not installed with the current pins (smoke mode installs nothing; add --install)"
            );
        }
        eprintln!("installing {} into {}", tool.name(), self.dir.display());
        let log = dirs.logs.join(format!("pip-{}.log", tool.name()));
        let result = output(
            Command::new(&self.python)
                .args(["-m", "pip", "install", "--disable-pip-version-check", "-c"])
                .arg(&self.requirements_path)
                .args(tool.packages()),
        );
        if let Err(err) = &result {
            // Keep pip's full complaint; the table only has room for its gist.
            let _ = fs::write(&log, format!("{err:#}"));
        }
        result.with_context(|| format!("pip install failed (see {})", log.display()))?;
        fs::write(&stamp, &self.requirements)
            .with_context(|| format!("could not write {}", stamp.display()))
    }

    fn sling(&self) -> Result<Sling> {
        let binary = output(Command::new(&self.python).args([
            "-c",
            "import sling_linux_amd64; print(sling_linux_amd64.SLING_BIN)",
        ]))
        .context("could not locate the binary of the sling-linux-amd64 wheel")?;
        let binary = PathBuf::from(binary.trim());
        if !binary.is_file() {
            bail!(
                "the sling-linux-amd64 wheel has no binary at {}",
                binary.display()
            );
        }
        Ok(Sling {
            wrapper: self.dir.join("bin").join("sling"),
            binary,
            version: self.pinned_version("sling"),
        })
    }

    /// `name==X` from the requirements file.
    fn pinned_version(&self, name: &str) -> String {
        let prefix = format!("{name}==");
        self.requirements
            .lines()
            .find_map(|line| line.trim().strip_prefix(&prefix))
            .unwrap_or("unpinned")
            .to_owned()
    }
}
