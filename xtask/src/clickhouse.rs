//! The private ClickHouse server for the ClickHouse connector's tests: Debian's
//! `clickhouse-server` (18.16 on bookworm), installed when missing, run from a data dir under
//! `target/services/clickhouse` on 127.0.0.1 (HTTP port 58123, `DPONE_CLICKHOUSE_PORT`
//! overrides; native TCP port + 1), never the system instance. Debian's `clickhouse-client`,
//! the native-protocol client, is a package of its own, installed by those that need it.
//!
//! What 18.16 has, found on this server: `ALTER TABLE ... DELETE/UPDATE` mutations (also with
//! `IN (SELECT ...)`), which run asynchronously (no `mutations_sync`: poll
//! `system.mutations`); `RENAME TABLE a TO b, c TO d` in one statement (no `EXCHANGE
//! TABLES`); Decimal, UUID, Nullable; LowCardinality only behind an experimental flag; no
//! DateTime64, no `RowBinaryWithNamesAndTypes`, no query parameters.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::run_cmd;
use crate::services::{Service, apt_install, port_from_env, running_as_root};

const PORT_ENV: &str = "DPONE_CLICKHOUSE_PORT";
const DEFAULT_PORT: u16 = 58123;
/// The Debian package runs the server as this system user.
const SERVICE_USER: &str = "clickhouse";
const SERVER: &str = "/usr/sbin/clickhouse-server";
/// What the Debian package `clickhouse-client` installs.
const CLIENT: &str = "/usr/bin/clickhouse-client";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Clickhouse {
    dir: PathBuf,
    port: u16,
    as_root: bool,
}

impl Service for Clickhouse {
    const NAME: &'static str = "ClickHouse";
    fn stop(&self) -> Result<()> {
        Clickhouse::stop(self)
    }
}

impl Clickhouse {
    pub fn new(root: &Path) -> Result<Self> {
        let port = port_from_env(PORT_ENV, DEFAULT_PORT)?;
        Ok(Self {
            dir: root.join("target").join("services").join("clickhouse"),
            port,
            as_root: running_as_root()?,
        })
    }

    /// The HTTP endpoint, for `curl`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://default@127.0.0.1:{}/default", self.port)
    }

    /// The native TCP port (clickhouse-client, drivers such as Sling's): the HTTP port + 1.
    pub fn native_port(&self) -> u16 {
        self.port + 1
    }

    /// `clickhouse://default@127.0.0.1:<native port>/<database>`, the native protocol's URL.
    pub fn native_url(&self, database: &str) -> String {
        format!(
            "clickhouse://default@127.0.0.1:{}/{database}",
            self.native_port()
        )
    }

    /// clickhouse-client, if its package is installed.
    pub fn installed_client(&self) -> Option<PathBuf> {
        Some(PathBuf::from(CLIENT)).filter(|client| client.is_file())
    }

    /// clickhouse-client, installing its Debian package when missing.
    pub fn client(&self) -> Result<PathBuf> {
        if let Some(client) = self.installed_client() {
            return Ok(client);
        }
        eprintln!("clickhouse-client is not installed; installing the Debian package");
        apt_install(self.as_root, "clickhouse-client")?;
        self.installed_client()
            .with_context(|| format!("the package clickhouse-client installed no {CLIENT}"))
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("clickhouse.pid")
    }

    /// Installs the server if needed, writes its configuration, starts it and waits for
    /// `/ping`. Starting a running server is not an error.
    pub fn start(&self) -> Result<()> {
        if !Path::new(SERVER).is_file() {
            eprintln!("ClickHouse is not installed; installing the Debian package");
            apt_install(self.as_root, "clickhouse-server")?;
        }
        if self.ping() {
            println!("ClickHouse already running: {}", self.url());
            return Ok(());
        }
        if self.server_pid().is_none() {
            self.write_config()?;
            // A pid file of a process that is not our server is left over from a crash.
            let _ = fs::remove_file(self.pid_file());
            self.spawn()?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.ping() {
                println!("ClickHouse running: {}", self.url());
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "ClickHouse did not answer /ping within {}s; see {}",
            READY_TIMEOUT.as_secs(),
            self.dir.join("clickhouse.err.log").display()
        )
    }

    fn spawn(&self) -> Result<()> {
        let mut cmd = if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", SERVICE_USER, "--", SERVER]);
            cmd
        } else {
            Command::new(SERVER)
        };
        run_cmd(
            cmd.arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .arg(format!("--pid-file={}", self.pid_file().display()))
            .arg("--daemon")
            .current_dir(&self.dir),
        )
    }

    /// The pid in our pid file when that process is a ClickHouse server: a stale file
    /// (after a crash or a reboot) may name an unrelated process.
    fn server_pid(&self) -> Option<String> {
        let pid = fs::read_to_string(self.pid_file()).ok()?.trim().to_string();
        let cmdline = fs::read(Path::new("/proc").join(&pid).join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("clickhouse-server")
            .then_some(pid)
    }

    /// Stops the server (SIGTERM, then waits). Stopping a stopped server is not an error.
    pub fn stop(&self) -> Result<()> {
        let Some(pid) = self.server_pid() else {
            let _ = fs::remove_file(self.pid_file());
            println!("ClickHouse is not running ({})", self.dir.display());
            return Ok(());
        };
        let mut kill = if self.as_root {
            Command::new("kill")
        } else {
            let mut cmd = Command::new("sudo");
            cmd.arg("kill");
            cmd
        };
        run_cmd(kill.arg(&pid))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Path::new("/proc").join(&pid).exists() {
            if Instant::now() > deadline {
                bail!(
                    "ClickHouse (pid {pid}) is still running {}s after SIGTERM",
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
        let _ = fs::remove_file(self.pid_file());
        println!("ClickHouse stopped");
        Ok(())
    }

    /// Prints whether the server answers; `false` when it does not.
    pub fn print_status(&self) -> bool {
        let up = self.ping();
        if up {
            println!("running: {} (data {})", self.url(), self.dir.display());
        } else {
            println!("not running ({})", self.dir.display());
        }
        up
    }

    /// `GET /ping` answers `Ok.` when the server is up.
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut reply = String::new();
        stream.read_to_string(&mut reply).is_ok() && reply.ends_with("Ok.\n")
    }

    /// The server's configuration, rewritten on every start so a data dir always gets the
    /// current settings.
    fn write_config(&self) -> Result<()> {
        let d = self.dir.display();
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            fs::create_dir_all(self.dir.join(sub))?;
        }
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/clickhouse.log</log><errorlog>{d}/clickhouse.err.log</errorlog><size>10M</size><count>2</count></logger>
    <http_port>{http}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <timezone>UTC</timezone>
</yandex>
"#,
            http = self.port,
            tcp = self.native_port(),
        );
        let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;
        fs::write(self.dir.join("config.xml"), config)?;
        fs::write(self.dir.join("users.xml"), users)?;
        if self.as_root {
            run_cmd(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{SERVICE_USER}:{SERVICE_USER}"))
                    .arg(&self.dir),
            )?;
        }
        Ok(())
    }
}
