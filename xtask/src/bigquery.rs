//! The BigQuery emulator for the BigQuery connector's tests: `bqemulator` 1.4.0 from PyPI
//! (BigQuery's REST and gRPC APIs over DuckDB), installed once into a Python venv in the tools
//! cache (`DPONE_TOOLS_DIR`, default `~/.cache/dpone`, as `bqemulator-1.4.0`; needs `python3`,
//! and on Debian installs `python3-venv` when the venv module is missing), run on 127.0.0.1
//! (REST port 59050, `DPONE_BIGQUERY_PORT` overrides; gRPC on the REST port + 10) for the
//! project `dpone-test`, in memory: every start is empty.
//!
//! Where it differs from BigQuery, found by probing it: a query's errors come back as HTTP 200
//! with an `errors` array in the query response (not as an HTTP error); the table API loses
//! `tableConstraints` (primary keys) and the precision and scale of NUMERIC columns; BIGNUMERIC
//! columns cannot be created (its DuckDB has no DECIMAL wider than 38 digits); `CREATE TABLE
//! ... COPY` is not parsed; a multi-statement transaction works only inside one script (a
//! session does not carry a transaction from one query to the next). Offline, its log warns
//! that DuckDB's avro extension could not be downloaded: only Avro loads need it.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::services::{Service, install_venv, port_from_env, tools_dir};
use crate::{output, run_cmd};

const PORT_ENV: &str = "DPONE_BIGQUERY_PORT";
const DEFAULT_PORT: u16 = 59050;
/// The gRPC port is the REST port plus this.
const GRPC_PORT_OFFSET: u16 = 10;
const VERSION: &str = "1.4.0";
/// What pip installs into the venv: the emulator, the DuckDB it was probed with, and DuckDB's
/// spatial extension as a wheel: the emulator refuses to start without spatial and would
/// otherwise download it from extensions.duckdb.org.
const PIP_PACKAGES: &[&str] = &[
    "bqemulator==1.4.0",
    "duckdb==1.5.5",
    "duckdb-extension-spatial==1.5.5",
    "duckdb-extensions==1.5.5",
    "numpy",
];
/// The project the emulator serves when a request names none; the tests use it.
const PROJECT: &str = "dpone-test";
/// Copies the spatial extension from its wheel into DuckDB's extension directory
/// (`~/.duckdb/extensions`), where the emulator's `INSTALL spatial` finds it offline; a no-op
/// (0.2 s) when it is there.
const IMPORT_SPATIAL: &str =
    "import duckdb_extensions; duckdb_extensions.import_extension('spatial')";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Bigquery {
    dir: PathBuf,
    port: u16,
}

impl Service for Bigquery {
    const NAME: &'static str = "BigQuery emulator (bqemulator)";
    fn stop(&self) -> Result<()> {
        Bigquery::stop(self)
    }
}

impl Bigquery {
    pub fn new(root: &Path) -> Result<Self> {
        let port = port_from_env(PORT_ENV, DEFAULT_PORT)?;
        if port.checked_add(GRPC_PORT_OFFSET).is_none() {
            bail!(
                "{PORT_ENV}={port} leaves no room for the gRPC port (REST port + {GRPC_PORT_OFFSET})"
            );
        }
        Ok(Bigquery {
            dir: root.join("target").join("services").join("bigquery"),
            port,
        })
    }

    /// The REST endpoint, `http://127.0.0.1:<port>`, as a BigQuery client's API root.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The venv the emulator is installed into.
    fn venv() -> PathBuf {
        tools_dir().join(format!("bqemulator-{VERSION}"))
    }

    /// The Python of the emulator's venv, which has pyarrow (a dependency of bqemulator);
    /// there once [`Bigquery::start`] has run.
    pub fn python(&self) -> PathBuf {
        Self::venv().join("bin").join("python")
    }

    /// Written into the venv only after every install step succeeded: a venv without it is a
    /// half install and is redone.
    fn marker() -> PathBuf {
        Self::venv().join(".installed")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("emulator.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("emulator.log")
    }

    /// Installs the emulator when the cache lacks a complete install: a fresh venv, the pip
    /// packages, then the import of DuckDB's spatial extension.
    fn install() -> Result<()> {
        let python = Self::venv().join("bin").join("python");
        if Self::marker().is_file() {
            // The extension lives in ~/.duckdb, outside the venv, and may have gone since.
            return output(Command::new(&python).args(["-c", IMPORT_SPATIAL]))
                .map(drop)
                .context("could not load DuckDB's spatial extension from the bqemulator venv");
        }
        let venv = Self::venv();
        eprintln!(
            "bqemulator {VERSION} is not installed; installing it into {} (once, a couple of minutes)",
            venv.display()
        );
        install_venv(&venv, "bqemulator and DuckDB", PIP_PACKAGES)?;
        run_cmd(Command::new(&python).args(["-c", IMPORT_SPATIAL]))
            .context("could not load DuckDB's spatial extension from the bqemulator venv")?;
        fs::write(Self::marker(), format!("bqemulator {VERSION}\n"))
            .with_context(|| format!("could not write {}", Self::marker().display()))
    }

    /// Installs and starts the emulator, and waits until its REST API lists the datasets of
    /// `dpone-test`. Starting a running emulator is not an error: one already answering on the
    /// port is reused.
    pub fn start(&self) -> Result<()> {
        Self::install()?;
        if self.answers() {
            println!("BigQuery emulator already running: {}", self.endpoint());
            return Ok(());
        }
        // Ours but not answering yet: still starting, so wait for it rather than start another.
        let mut child = match self.pid() {
            Some(_) => None,
            None => {
                // A pid file naming another process is left over from a crash or a reboot.
                let _ = fs::remove_file(self.pid_file());
                Some(self.spawn()?)
            }
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.answers() {
                println!("BigQuery emulator running: {}", self.endpoint());
                return Ok(());
            }
            // An emulator that exited (a taken port, a broken install) will never answer.
            if let Some(child) = child.as_mut()
                && let Some(status) = child.try_wait().context("could not wait for bqemulator")?
            {
                let _ = fs::remove_file(self.pid_file());
                bail!(
                    "bqemulator exited ({status}) before answering; see {}",
                    self.log_file().display()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "bqemulator did not answer on {} within {}s; see {}",
            self.endpoint(),
            READY_TIMEOUT.as_secs(),
            self.log_file().display()
        )
    }

    /// Starts the emulator in the background, its output in the log, its pid in the pid file.
    fn spawn(&self) -> Result<std::process::Child> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("could not create {}", self.dir.display()))?;
        let log = fs::File::create(self.log_file())
            .with_context(|| format!("could not create {}", self.log_file().display()))?;
        let rest_port = self.port.to_string();
        let grpc_port = (self.port + GRPC_PORT_OFFSET).to_string();
        let child = Command::new(Self::venv().join("bin").join("bqemulator"))
            .arg("start")
            .args(["--rest-host", "127.0.0.1", "--rest-port", &rest_port])
            .args(["--grpc-host", "127.0.0.1", "--grpc-port", &grpc_port])
            .args(["--ephemeral", "--project", PROJECT])
            .args(["--log-level", "warning"])
            // Its own folder for upload bodies (the default, /tmp/bqemu_uploads, is shared
            // with any other emulator on the machine and with whoever cleans /tmp).
            .env("BQEMU_UPLOAD_STAGING_DIR", self.dir.join("uploads"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(&self.dir)
            .spawn()
            .context("could not start bqemulator")?;
        fs::write(self.pid_file(), child.id().to_string())
            .with_context(|| format!("could not write {}", self.pid_file().display()))?;
        Ok(child)
    }

    /// `GET /bigquery/v2/projects/dpone-test/datasets` answers 200 when the emulator is up.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /bigquery/v2/projects/{PROJECT}/datasets HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut reply = Vec::new();
        if stream.read_to_end(&mut reply).is_err() {
            return false;
        }
        // The status line: `HTTP/1.1 200 OK`.
        let reply = String::from_utf8_lossy(&reply);
        let mut status_line = reply.lines().next().unwrap_or("").split_whitespace();
        status_line
            .next()
            .is_some_and(|version| version.starts_with("HTTP/"))
            && status_line.next() == Some("200")
    }

    /// The pid in our pid file when that process is our emulator: a stale file (after a
    /// crash or a reboot) may name an unrelated process.
    fn pid(&self) -> Option<String> {
        let pid = fs::read_to_string(self.pid_file()).ok()?.trim().to_string();
        let cmdline = fs::read(Path::new("/proc").join(&pid).join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("bqemulator")
            .then_some(pid)
    }

    /// Stops the emulator (SIGTERM, then waits). Stopping a stopped one is not an error.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.pid() else {
            let _ = fs::remove_file(self.pid_file());
            println!("BigQuery emulator is not running");
            return Ok(());
        };
        run_cmd(Command::new("kill").arg(&pid))
            .with_context(|| format!("could not stop bqemulator (pid {pid})"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        // A child of this process stays a zombie (empty cmdline) until we exit: that is gone.
        while fs::read(Path::new("/proc").join(&pid).join("cmdline")).is_ok_and(|c| !c.is_empty()) {
            if Instant::now() > deadline {
                bail!(
                    "bqemulator (pid {pid}) is still running {}s after SIGTERM",
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_file(self.pid_file());
        println!("BigQuery emulator stopped");
        Ok(())
    }

    /// Prints whether the emulator answers; `false` when it does not.
    pub fn print_status(&self) -> bool {
        let up = self.answers();
        if up {
            println!(
                "running: {} (log {})",
                self.endpoint(),
                self.log_file().display()
            );
        } else {
            println!("not running");
        }
        up
    }
}
