//! Progress on the terminal and the JSON run report.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use serde::Serialize;

/// Shows progress: a rewritten status line when stderr is a terminal, otherwise log lines
/// at most every few seconds per phase (so CI logs stay readable).
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    last: Instant,
    started: Instant,
}

const LOG_EVERY_SECONDS: u64 = 5;

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            terminal: enabled && std::io::stderr().is_terminal(),
            last: Instant::now(),
            started: Instant::now(),
        }
    }

    /// Rows moved so far in a phase.
    pub fn rows(&mut self, phase: &str, rows: u64) {
        let due: u128 = if self.terminal {
            200
        } else {
            u128::from(LOG_EVERY_SECONDS) * 1000
        };
        if self.last.elapsed().as_millis() < due {
            return;
        }
        self.last = Instant::now();
        let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        self.show(&format!("{phase}: {rows} rows ({rate:.0} rows/s)"));
    }

    /// A phase finished.
    pub fn done(&mut self, phase: &str, rows: u64) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        tracing::info!("{phase}: {rows} rows");
    }

    /// A strategy-reported phase.
    pub fn phase(&mut self, phase: &str, done: u64, total: Option<u64>) {
        let text = match total {
            Some(t) => format!("{phase}: {done}/{t}"),
            None => format!("{phase}: {done}"),
        };
        self.show(&text);
    }

    fn show(&self, text: &str) {
        if self.terminal {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
        } else {
            tracing::info!("{text}");
        }
    }
}

/// What `--report-json` writes, and what the CLI summarizes.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub strategy_name: String,
    pub strategy_version: String,
    pub strategy_hash: String,
    /// `succeeded`, `failed` or `planned` (dry run).
    pub outcome: String,
    pub error: Option<ReportError>,
    pub rows_read: u64,
    /// Of `rows_read`, the rows forwarded undecoded (`transfer.pass_through`).
    pub rows_forwarded: u64,
    /// The most streams one load of the run read in (`transfer.parallelism`); 0 without
    /// a load.
    pub read_streams: u32,
    pub rows_written: u64,
    pub rows_deleted: u64,
    pub message: String,
    pub started_at: String,
    pub wall_seconds: f64,
    /// Component load (cache or compile) + instantiation.
    pub wasm_load_seconds: f64,
    pub wasm_cache_hit: bool,
    /// Time inside guest code: calls into the component minus the host imports they made.
    pub wasm_guest_seconds: f64,
    /// (load + guest) / wall.
    pub wasm_share: f64,
    /// Statements issued to the sink (the plan, for a dry run).
    pub sink_statements: Vec<String>,
    /// Objects the run created on the source that hold server resources until removed
    /// (a change feed's replication slot and publication: `dpone-host cdc drop-slot`).
    pub source_objects_created: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportError {
    pub kind: String,
    pub field: Option<String>,
    pub message: String,
    pub exit_code: i32,
}
