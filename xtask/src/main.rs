//! `cargo xtask`: the one entry point for building, running local services, testing and the
//! quickstart. Each area lives in its own module; this file only parses the command line and
//! holds the two helpers every area needs (the repository root and running a child command).

mod bench;
mod bigquery;
mod build;
mod clickhouse;
mod kafka;
mod languages;
mod matrix;
mod quickstart;
// Its fault and auth switches serve the component tests, which include this file.
#[allow(dead_code)]
mod rest_mock;
mod services;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for dpone")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the strategy components (wasm32-wasip2) and the dpone-host binary.
    Build {
        /// Build the host in release mode (components are always built in release mode).
        #[arg(long)]
        release: bool,
    },
    /// Manage the private PostgreSQL cluster used by the tests (never the system one).
    Pg {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Manage the private ClickHouse server (never the system one), for the ClickHouse
    /// connector: installed from Debian when missing.
    Clickhouse {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Manage the private Kafka-protocol broker (tansu, in memory), for the Kafka
    /// connector: installed into the tools cache when missing.
    Kafka {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Manage the BigQuery emulator (bqemulator, in memory), for the BigQuery connector:
    /// installed into a Python venv in the tools cache when missing.
    Bigquery {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Build everything, start the private PostgreSQL, run `cargo test --workspace`, stop it.
    Test {
        /// Extra arguments passed to `cargo test` (write them after `--`).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Build, create a 10,000-row SQLite source and run the quickstart pipeline twice.
    Quickstart,
    /// Benchmark dpone against a raw COPY pipe, Sling and dlt (docs/benchmarks.md).
    Bench(bench::Options),
    /// Run the integration matrix (docs/integration-matrix.md).
    Matrix(matrix::Options),
}

#[derive(Debug, Subcommand)]
enum ServiceAction {
    /// Install if missing, initialize (first time only) and start the server, then wait until
    /// it accepts connections.
    Start,
    /// Stop the server.
    Stop,
    /// Say whether the server runs; exits with 3 when it does not.
    Status,
}

fn main() -> ExitCode {
    match run_task(Cli::parse().task) {
        Ok(code) => code,
        Err(err) => {
            // Print the context chain ourselves: anyhow's Debug output would append a
            // backtrace whenever RUST_BACKTRACE is set, burying the message.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run_task(task: Task) -> Result<ExitCode> {
    let root = repo_root();
    match task {
        Task::Build { release } => {
            build::build_all(&root, build::Profile::from_release_flag(release))?;
        }
        Task::Pg { action } => {
            let pg = services::Postgres::new(&root)?;
            match action {
                ServiceAction::Start => pg.start()?,
                ServiceAction::Stop => pg.stop()?,
                ServiceAction::Status => {
                    if !pg.print_status()? {
                        // Same code as `pg_ctl status`, so scripts can tell "stopped" from "broken".
                        return Ok(ExitCode::from(3));
                    }
                }
            }
        }
        Task::Clickhouse { action } => {
            let ch = clickhouse::Clickhouse::new(&root)?;
            match action {
                ServiceAction::Start => ch.start()?,
                ServiceAction::Stop => ch.stop()?,
                ServiceAction::Status => {
                    if !ch.print_status() {
                        return Ok(ExitCode::from(3));
                    }
                }
            }
        }
        Task::Kafka { action } => {
            let kafka = kafka::Kafka::new(&root)?;
            match action {
                ServiceAction::Start => kafka.start()?,
                ServiceAction::Stop => kafka.stop()?,
                ServiceAction::Status => {
                    if !kafka.print_status() {
                        return Ok(ExitCode::from(3));
                    }
                }
            }
        }
        Task::Bigquery { action } => {
            let bq = bigquery::Bigquery::new(&root)?;
            match action {
                ServiceAction::Start => bq.start()?,
                ServiceAction::Stop => bq.stop()?,
                ServiceAction::Status => {
                    if !bq.print_status() {
                        return Ok(ExitCode::from(3));
                    }
                }
            }
        }
        Task::Test { cargo_test_args } => test::run(&root, &cargo_test_args)?,
        Task::Quickstart => quickstart::run(&root)?,
        Task::Bench(options) => bench::run(&root, &options)?,
        Task::Matrix(options) => matrix::run(&root, &options)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The repository root: xtask lives one level below it.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ always has a parent directory")
        .to_path_buf()
}

/// The cargo that started us (set by `cargo run`), so nested builds use the same toolchain.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Echo a command, run it with inherited stdio, and fail with the command line if it fails.
fn run_cmd(cmd: &mut Command) -> Result<()> {
    let line = command_line(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run a command quietly and return its stdout; fail with its stderr if it fails.
fn output(cmd: &mut Command) -> Result<String> {
    let line = command_line(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
