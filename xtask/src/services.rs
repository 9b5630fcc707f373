//! A private PostgreSQL cluster for the tests.
//!
//! It lives in `target/services/pg` and listens on 127.0.0.1 only, on its own port, so tests
//! never depend on (or restart) a system cluster. It runs with logical replication on (the
//! xmin and cdc strategies need it) and with durability off, because test data is disposable
//! and fsync dominates the run time of small transactions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{output, run_cmd};

const DEFAULT_PORT: u16 = 55432;
const PORT_ENV: &str = "DPONE_PG_PORT";
/// initdb and pg_ctl refuse to run as root; as root they run as this Debian system user.
const SERVICE_USER: &str = "postgres";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 20;

/// Server settings given on every start, so an existing data dir always gets the current ones.
const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("wal_level", "logical"),
    ("max_replication_slots", "32"),
    ("max_wal_senders", "10"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
];

#[derive(Debug, Clone)]
pub struct Postgres {
    /// `target/services/pg`: holds the data dir, the log and the unix socket.
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    /// True when we run as root: the server tools then run as `SERVICE_USER`, and apt-get
    /// needs no sudo.
    as_root: bool,
}

impl Postgres {
    pub fn new(root: &Path) -> Result<Self> {
        let port = port_from_env(PORT_ENV, DEFAULT_PORT)?;
        let dir = root.join("target").join("services").join("pg");
        Ok(Self {
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            dir,
            port,
            as_root: running_as_root()?,
        })
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Install PostgreSQL if needed, initialize the data dir on first use, start the server
    /// and wait until it accepts connections. Starting a running cluster is not an error.
    pub fn start(&self) -> Result<()> {
        let bin = match find_bin_dir() {
            Some(bin) => bin,
            None => {
                install_postgres(self.as_root)?;
                find_bin_dir().context(
                    "PostgreSQL was installed but no /usr/lib/postgresql/<version>/bin/initdb exists",
                )?
            }
        };
        self.prepare_dir()?;
        self.init_if_needed(&bin)?;

        if let Some(port) = self.running_port(&bin)? {
            if port != self.port {
                bail!(
                    "the private cluster already runs on port {port}, not {}; \
                     run `cargo xtask pg stop` first",
                    self.port
                );
            }
            println!("PostgreSQL already running: {}", self.url());
            return self.wait_until_ready(&bin);
        }
        // A crash or a killed machine leaves postmaster.pid behind; pg_ctl said nothing runs.
        let pid_file = self.data.join("postmaster.pid");
        if pid_file.exists() {
            eprintln!("removing stale {}", pid_file.display());
            fs::remove_file(&pid_file)
                .with_context(|| format!("could not remove {}", pid_file.display()))?;
        }

        let started = run_cmd(
            self.server_tool(&bin, "pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", &READY_TIMEOUT.as_secs().to_string()])
                .arg("-o")
                .arg(self.server_options()?),
        );
        if let Err(err) = started {
            return Err(err.context(format!(
                "PostgreSQL did not start; last lines of {}:\n{}",
                self.log.display(),
                self.log_tail()
            )));
        }
        self.wait_until_ready(&bin)?;
        self.drop_idle_replication_slots(&bin);
        println!("PostgreSQL running: {}", self.url());
        Ok(())
    }

    /// Fast shutdown (disconnects clients). Stopping a cluster that is not running is not an error.
    pub fn stop(&self) -> Result<()> {
        let Some(bin) = find_bin_dir() else {
            println!("PostgreSQL is not installed; nothing to stop");
            return Ok(());
        };
        if self.running_port(&bin)?.is_none() {
            println!("PostgreSQL is not running ({})", self.data.display());
            return Ok(());
        }
        run_cmd(
            self.server_tool(&bin, "pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w"]),
        )
        .context("could not stop the private PostgreSQL cluster")?;
        println!("PostgreSQL stopped");
        Ok(())
    }

    /// Print whether the cluster runs; returns true when it does.
    pub fn print_status(&self) -> Result<bool> {
        let Some(bin) = find_bin_dir() else {
            println!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)");
            return Ok(false);
        };
        match self.running_port(&bin)? {
            Some(port) => {
                println!(
                    "running: postgres://postgres@127.0.0.1:{port}/postgres (data {}, log {})",
                    self.data.display(),
                    self.log.display()
                );
                Ok(true)
            }
            None => {
                println!("not running (data {})", self.data.display());
                Ok(false)
            }
        }
    }

    /// Create `target/services/pg` and, as root, hand it to the service user.
    fn prepare_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("could not create {}", self.dir.display()))?;
        if self.as_root {
            run_cmd(
                Command::new("chown")
                    .args(["-R", &format!("{SERVICE_USER}:")])
                    .arg(&self.dir),
            )
            .with_context(|| format!("could not give {} to {SERVICE_USER}", self.dir.display()))?;
            // A repository under a private home (e.g. /root) is not reachable by the service
            // user even after the chown; say so instead of letting initdb fail obscurely.
            let writable = Command::new("runuser")
                .args(["-u", SERVICE_USER, "--", "test", "-w"])
                .arg(&self.dir)
                .status()
                .context("could not run `runuser` (util-linux)")?;
            if !writable.success() {
                bail!(
                    "the `{SERVICE_USER}` user cannot write {}: every parent directory must be \
                     searchable by it (chmod o+x), or run xtask as a non-root user",
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    fn init_if_needed(&self, bin: &Path) -> Result<()> {
        let version_file = self.data.join("PG_VERSION");
        if version_file.exists() {
            let data_version = fs::read_to_string(&version_file)
                .with_context(|| format!("could not read {}", version_file.display()))?;
            let bin_version = bin_major_version(bin);
            if bin_version.as_deref() != Some(data_version.trim()) {
                bail!(
                    "{} was initialized by PostgreSQL {} but the binaries in {} are version {}; \
                     it holds only test data, so delete {} and start again",
                    self.data.display(),
                    data_version.trim(),
                    bin.display(),
                    bin_version.as_deref().unwrap_or("unknown"),
                    self.dir.display()
                );
            }
            return Ok(());
        }
        // A data dir without PG_VERSION is what an interrupted initdb leaves: start over.
        if self.data.exists() {
            fs::remove_dir_all(&self.data)
                .with_context(|| format!("could not remove {}", self.data.display()))?;
        }
        run_cmd(
            self.server_tool(bin, "initdb")
                .arg("-D")
                .arg(&self.data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                // Durability of a throwaway cluster is not worth the fsync time.
                .arg("--no-sync"),
        )
        .context("initdb failed")
    }

    /// The port of the running server, or None when none runs in our data dir.
    fn running_port(&self, bin: &Path) -> Result<Option<u16>> {
        if !self.data.join("PG_VERSION").exists() {
            return Ok(None);
        }
        let status = self
            .server_tool(bin, "pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data)
            .output()
            .context("could not run `pg_ctl status`")?;
        // pg_ctl status: 0 = running, 3 = not running, 4 = no usable data dir.
        match status.status.code() {
            Some(0) => {}
            Some(3) | Some(4) => return Ok(None),
            _ => bail!(
                "`pg_ctl status` failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            ),
        }
        // The fourth line of postmaster.pid is the port the server listens on.
        let pid_file = self.data.join("postmaster.pid");
        let contents = fs::read_to_string(&pid_file)
            .with_context(|| format!("could not read {}", pid_file.display()))?;
        let port = contents
            .lines()
            .nth(3)
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no port on line 4 of {}", pid_file.display()))?;
        Ok(Some(port))
    }

    fn wait_until_ready(&self, bin: &Path) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &self.port.to_string()])
                .status()
                .context("could not run pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not accept connections on 127.0.0.1:{} within {} s; \
                     last lines of {}:\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// An idle replication slot holds WAL forever, and slots left by an interrupted test run
    /// would use up `max_replication_slots`. Nothing is connected right after a start, so every
    /// inactive slot is a leftover. Best effort: a failure here should not stop the tests.
    fn drop_idle_replication_slots(&self, bin: &Path) {
        let dropped = output(
            Command::new(bin.join("psql"))
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.url())
                .args([
                    "-c",
                    "SELECT slot_name, pg_drop_replication_slot(slot_name) \
                     FROM pg_replication_slots WHERE NOT active",
                ]),
        );
        match dropped {
            Ok(rows) => {
                for row in rows.lines().filter(|row| !row.is_empty()) {
                    let slot = row.split('|').next().unwrap_or(row);
                    eprintln!("dropped leftover replication slot {slot}");
                }
            }
            Err(err) => eprintln!("warning: could not drop leftover replication slots: {err:#}"),
        }
    }

    /// The postmaster command line that pg_ctl passes through `/bin/sh -c`.
    fn server_options(&self) -> Result<String> {
        let socket_dir = self
            .dir
            .to_str()
            .context("the repository path is not UTF-8")?;
        // Single quotes protect spaces from the shell; a quote inside cannot be protected.
        if socket_dir.contains('\'') {
            bail!("the repository path {socket_dir:?} contains a single quote");
        }
        let mut options = format!("-p {} -c unix_socket_directories='{socket_dir}'", self.port);
        for (name, value) in SERVER_SETTINGS {
            options.push_str(&format!(" -c {name}={value}"));
        }
        Ok(options)
    }

    /// A server tool (initdb, pg_ctl), run as the service user when we are root.
    fn server_tool(&self, bin: &Path, tool: &str) -> Command {
        let program = bin.join(tool);
        let mut cmd = if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SERVICE_USER, "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The service user may not be allowed into the caller's working directory.
        cmd.current_dir(&self.dir);
        cmd
    }

    fn log_tail(&self) -> String {
        match fs::read_to_string(&self.log) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            }
            Err(err) => format!("(could not read the log: {err})"),
        }
    }
}

/// Stops the cluster when dropped, so `cargo xtask test` stops it on every path out,
/// including a failed start and failed tests.
#[derive(Debug)]
pub struct StopOnDrop<S: Service>(pub S);

/// A local server xtask starts for tests and stops after them.
pub trait Service {
    const NAME: &'static str;
    fn stop(&self) -> Result<()>;
}

impl Service for Postgres {
    const NAME: &'static str = "PostgreSQL";
    fn stop(&self) -> Result<()> {
        Postgres::stop(self)
    }
}

impl<S: Service> Drop for StopOnDrop<S> {
    fn drop(&mut self) {
        if let Err(err) = self.0.stop() {
            eprintln!("warning: could not stop {}: {err:#}", S::NAME);
        }
    }
}

/// The newest `/usr/lib/postgresql/<major>/bin` that has initdb (Debian/Ubuntu layout).
pub fn find_bin_dir() -> Option<PathBuf> {
    let versions = fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

/// The major version is the name of the folder above `bin`.
fn bin_major_version(bin: &Path) -> Option<String> {
    Some(bin.parent()?.file_name()?.to_str()?.to_owned())
}

fn install_postgres(as_root: bool) -> Result<()> {
    eprintln!("PostgreSQL is not installed; installing the Debian package");
    apt_install(as_root, "postgresql")
}

/// `apt-get install <package>`; refresh the package lists only if the first try fails, since
/// an update is slow and usually unnecessary. Without root it goes through sudo, as on hosted
/// CI runners.
pub fn apt_install(as_root: bool, package: &str) -> Result<()> {
    let apt = |args: &[&str]| {
        let mut cmd = if as_root {
            Command::new("env")
        } else {
            // `env` after sudo, because sudo resets the environment it is given.
            let mut cmd = Command::new("sudo");
            cmd.arg("env");
            cmd
        };
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .args(args);
        run_cmd(&mut cmd)
    };
    let install = ["install", "-y", package];
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install).with_context(|| format!("could not install {package} with apt-get"))?;
    }
    Ok(())
}

/// Creates the Python venv `venv` (removing a half install first) and pip-installs
/// `packages` into it; `what` names the tool in errors. On Debian, installs `python3-venv`
/// when Python lacks the venv module.
pub fn install_venv(venv: &Path, what: &str, packages: &[&str]) -> Result<()> {
    remove_half_install(venv)?;
    fs::create_dir_all(tools_dir())
        .with_context(|| format!("could not create {}", tools_dir().display()))?;
    let create_venv = || run_cmd(Command::new("python3").args(["-m", "venv"]).arg(venv));
    if let Err(err) = create_venv() {
        // Debian's python3 comes without the venv module (and ensurepip): that is
        // `python3-venv`. Elsewhere the failure is the owner's to fix.
        if Command::new("dpkg").arg("--version").output().is_err() {
            return Err(err.context(format!("could not create a Python venv for {what}")));
        }
        eprintln!("`python3 -m venv` failed; installing Debian's python3-venv and retrying");
        remove_half_install(venv)?;
        apt_install(running_as_root()?, "python3-venv")?;
        create_venv().with_context(|| format!("could not create a Python venv for {what}"))?;
    }
    run_cmd(
        Command::new(venv.join("bin").join("pip"))
            .arg("install")
            .args(packages),
    )
    .with_context(|| format!("could not install {what} with pip"))
}

/// Removes what an interrupted install left, so the next one starts from nothing.
pub fn remove_half_install(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)
            .with_context(|| format!("could not remove the half install {}", dir.display()))?;
    }
    Ok(())
}

/// Where tools installed for the tests (tansu, bqemulator) are kept across checkouts:
/// `DPONE_TOOLS_DIR`, default `~/.cache/dpone`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DPONE_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("dpone")
}

/// A service's port: `var` when set, else `default`.
pub fn port_from_env(var: &str, default: u16) -> Result<u16> {
    match std::env::var(var) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{var}={value:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

pub fn running_as_root() -> Result<bool> {
    // `id -u` rather than libc::geteuid: the workspace forbids unsafe code.
    let uid = output(Command::new("id").arg("-u")).context("could not find our user id")?;
    Ok(uid.trim() == "0")
}
