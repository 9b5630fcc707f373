//! The private Kafka-protocol broker for the Kafka connector's tests: `tansu` 0.6.0 from
//! crates.io, installed once into a cache outside the repository (`DPONE_TOOLS_DIR`, default
//! `~/.cache/dpone`; `cargo install` takes about 10 minutes on 2 cores), run on 127.0.0.1
//! (port 59092, `DPONE_KAFKA_PORT` overrides) with in-memory storage: every start is an
//! empty cluster.
//!
//! What tansu 0.6.0 does not do, found in its source and against librdkafka: no `EndTxn`
//! (producer transactions cannot commit: the tests produce with `exactly_once: false`), no
//! `CreatePartitions`, no compaction (it keeps every record; readers compact), and
//! `ListOffsets` latest reports the last batch's base offset + 1 (dpone reads each partition
//! to its end instead of trusting it).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::services::{Service, port_from_env, tools_dir};
use crate::{cargo, run_cmd};

const PORT_ENV: &str = "DPONE_KAFKA_PORT";
const DEFAULT_PORT: u16 = 59092;
const VERSION: &str = "0.6.0";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Kafka {
    dir: PathBuf,
    port: u16,
}

impl Service for Kafka {
    const NAME: &'static str = "Kafka (tansu)";
    fn stop(&self) -> Result<()> {
        Kafka::stop(self)
    }
}

impl Kafka {
    pub fn new(root: &Path) -> Result<Self> {
        Ok(Kafka {
            dir: root.join("target").join("services").join("kafka"),
            port: port_from_env(PORT_ENV, DEFAULT_PORT)?,
        })
    }

    /// `host:port`, as a manifest's `brokers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn binary() -> PathBuf {
        tools_dir()
            .join(format!("tansu-{VERSION}"))
            .join("bin")
            .join("tansu")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("tansu.pid")
    }

    /// Installs the broker when the cache lacks it.
    fn install() -> Result<()> {
        if Self::binary().is_file() {
            return Ok(());
        }
        let root = tools_dir().join(format!("tansu-{VERSION}"));
        eprintln!(
            "tansu {VERSION} is not installed; installing it into {} (once, about 10 minutes)",
            root.display()
        );
        run_cmd(
            cargo()
                .args(["install", &format!("tansu@{VERSION}"), "--locked"])
                .args(["--features", "dynostore", "--debug", "--root"])
                .arg(&root),
        )
        .context("could not install tansu")
    }

    /// Installs and starts the broker, and waits until it accepts connections. Starting a
    /// running broker is not an error.
    pub fn start(&self) -> Result<()> {
        Self::install()?;
        if self.pid().is_some() && self.accepts() {
            println!("Kafka (tansu) already running: {}", self.brokers());
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let log = fs::File::create(self.dir.join("tansu.log"))?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(Self::binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(&self.dir)
            .spawn()
            .context("could not start tansu")?;
        fs::write(self.pid_file(), child.id().to_string())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.accepts() {
                println!("Kafka (tansu) running: {}", self.brokers());
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "tansu did not accept connections within {}s; see {}",
            READY_TIMEOUT.as_secs(),
            self.dir.join("tansu.log").display()
        )
    }

    fn accepts(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    /// The pid in our pid file when that process is our broker.
    fn pid(&self) -> Option<String> {
        let pid = fs::read_to_string(self.pid_file()).ok()?.trim().to_string();
        let cmdline = fs::read(Path::new("/proc").join(&pid).join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("tansu")
            .then_some(pid)
    }

    /// Stops the broker; stopping a stopped one is not an error.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.pid() else {
            let _ = fs::remove_file(self.pid_file());
            println!("Kafka (tansu) is not running");
            return Ok(());
        };
        run_cmd(Command::new("kill").arg(&pid))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Path::new("/proc").join(&pid).join("cmdline").exists()
            && fs::read(Path::new("/proc").join(&pid).join("cmdline")).is_ok_and(|c| !c.is_empty())
        {
            if Instant::now() > deadline {
                bail!(
                    "tansu (pid {pid}) is still running {}s after SIGTERM",
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_file(self.pid_file());
        println!("Kafka (tansu) stopped");
        Ok(())
    }

    pub fn print_status(&self) -> bool {
        let up = self.pid().is_some() && self.accepts();
        if up {
            println!("running: {}", self.brokers());
        } else {
            println!("not running");
        }
        up
    }
}
