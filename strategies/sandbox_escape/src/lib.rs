//! `sandbox_escape`: a hostile component for the host's sandbox tests. Never use it in a
//! pipeline.
//!
//! Its `run` attempts what option `attack` names, against option `target` where one is
//! needed:
//! - `file`: reads the file at `target` and lists `/` and `.`;
//! - `socket`: opens a TCP connection to `target` (`host:port`);
//! - `clock`: reads the wall clock.
//!
//! These need `wasi:filesystem`, `wasi:sockets` and `wasi:clocks`. Under `limits.wasi:
//! strict` the host refuses them: the component must be rejected before it runs. Under the
//! default `virtual` they are linked empty: a successful attack returns `ok` with a message
//! saying what leaked (`LEAKED ...`), the clock attack returns `clock: <seconds since the
//! epoch>` (which must be the run's logical time), a blocked one returns
//! `unsupported("blocked: <error>")`. It touches no source, sink or state.

use std::time::{SystemTime, UNIX_EPOCH};

use dpone_strategy_sdk::{
    CapabilityNeeds, DponeError, Guest, OptionKind, Options, RunContext, RunSummary, StrategyInfo,
    invalid_config, optional, required,
};

const ATTACK: &str = "attack";
const TARGET: &str = "target";

struct SandboxEscape;

impl Guest for SandboxEscape {
    fn describe() -> StrategyInfo {
        StrategyInfo {
            name: "sandbox_escape".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test-only hostile component that attempts to escape the sandbox.".into(),
            options: vec![
                required(ATTACK, OptionKind::Text, "One of file, socket, clock."),
                optional(
                    TARGET,
                    OptionKind::Text,
                    "File path or host:port that the file and socket attacks use.",
                ),
            ],
            needs: CapabilityNeeds {
                transactions: false,
                rename_swap: false,
                mutable_target: false,
            },
            chunked: false,
        }
    }

    fn run(ctx: RunContext) -> Result<RunSummary, DponeError> {
        let options = Options::new(ctx.options);
        let message = match options.required_text(ATTACK)?.as_str() {
            "file" => read_files(&options.required_text(TARGET)?),
            "socket" => connect(&options.required_text(TARGET)?),
            "clock" => read_clock(),
            other => Err(invalid_config(ATTACK, &format!("unknown attack {other:?}"))),
        }?;
        Ok(RunSummary {
            rows_read: 0,
            rows_written: 0,
            rows_deleted: 0,
            message,
        })
    }
}

fn read_files(path: &str) -> Result<String, DponeError> {
    let attempts = [
        (
            format!("file {path}"),
            std::fs::read_to_string(path).map_err(|e| e.to_string()),
        ),
        ("dir /".to_string(), list_dir("/")),
        ("dir .".to_string(), list_dir(".")),
    ];
    let (leaked, blocked): (Vec<_>, Vec<_>) =
        attempts.into_iter().partition(|(_, result)| result.is_ok());
    if leaked.is_empty() {
        let errors: Vec<String> = blocked
            .into_iter()
            .filter_map(|(what, result)| result.err().map(|err| format!("{what}: {err}")))
            .collect();
        return Err(blocked_by(errors.join("; ")));
    }
    let leaks: Vec<String> = leaked
        .into_iter()
        .filter_map(|(what, result)| result.ok().map(|found| format!("LEAKED {what}: {found}")))
        .collect();
    Ok(leaks.join("; "))
}

fn list_dir(path: &str) -> Result<String, String> {
    let entries = std::fs::read_dir(path).map_err(|e| e.to_string())?;
    let names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    Ok(names.join(","))
}

fn connect(address: &str) -> Result<String, DponeError> {
    std::net::TcpStream::connect(address)
        .map(|_| format!("LEAKED socket connected to {address}"))
        .map_err(blocked_by)
}

fn read_clock() -> Result<String, DponeError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| format!("clock: {}", since.as_secs()))
        .map_err(blocked_by)
}

fn blocked_by(err: impl std::fmt::Display) -> DponeError {
    DponeError::Unsupported(format!("blocked: {err}"))
}

dpone_strategy_sdk::export_strategy!(SandboxEscape);
