//! The results of a bench run: per-run records, their summaries and ratios to dpone, the
//! peak RSS of the memory-at-scale phase against the main run's, and the three renderings
//! (console table, JSON, `docs/benchmarks.md`).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde_json::{Value, json};

use super::contenders::{Contender, Measured};
use super::data::{self, Table};
use super::{CH_DB, DST_DB, Lab, SRC_DB, git};
use crate::output;

/// Longest failure reason shown in a table cell (the JSON keeps all of it).
const NOTE_CHARS: usize = 220;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    FullRefresh,
    Merge,
    ClickHouse,
    Rest,
    Kafka,
    BigQuery,
    PgToMssql,
    MssqlToPg,
}

impl Scenario {
    fn key(self) -> &'static str {
        match self {
            Scenario::FullRefresh => "pg_to_pg_full_refresh",
            Scenario::Merge => "pg_to_pg_incremental_merge",
            Scenario::ClickHouse => "pg_to_clickhouse_full_refresh",
            Scenario::Rest => "rest_to_pg_full_refresh",
            Scenario::Kafka => "pg_to_kafka_full_refresh",
            Scenario::BigQuery => "pg_to_bigquery_full_refresh",
            Scenario::PgToMssql => "pg_to_mssql_full_refresh",
            Scenario::MssqlToPg => "mssql_to_pg_full_refresh",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::FullRefresh => "PostgreSQL -> PostgreSQL full_refresh",
            Scenario::Merge => {
                "PostgreSQL -> PostgreSQL incremental_merge (20% changed + 5% new rows)"
            }
            Scenario::ClickHouse => "PostgreSQL -> ClickHouse full_refresh",
            Scenario::Rest => "REST (the mock API, pages of 10,000) -> PostgreSQL full_refresh",
            Scenario::Kafka => {
                "PostgreSQL -> Kafka full_refresh (a compacted topic keyed by id, tansu)"
            }
            Scenario::BigQuery => {
                "PostgreSQL -> BigQuery full_refresh (the emulator, bqemulator over DuckDB)"
            }
            Scenario::PgToMssql => "PostgreSQL -> SQL Server full_refresh (vendor_live only)",
            Scenario::MssqlToPg => "SQL Server -> PostgreSQL full_refresh (vendor_live only)",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The target matched the source.
    Valid,
    /// The contender finished but the target does not match.
    Invalid(String),
    /// The contender (or its preparation) failed.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    rep: u32,
    outcome: Outcome,
    measured: Option<Measured>,
}

impl RunRecord {
    pub fn new(rep: u32, outcome: Outcome, measured: Option<Measured>) -> Self {
        RunRecord {
            rep,
            outcome,
            measured,
        }
    }
}

#[derive(Debug)]
struct ContenderRuns {
    contender: Contender,
    label: String,
    unavailable: Option<String>,
    runs: Vec<RunRecord>,
}

#[derive(Debug)]
pub struct ScenarioResult {
    scenario: Scenario,
    table: &'static str,
    columns: usize,
    skipped: Option<&'static str>,
    rows_moved: u64,
    /// Binary COPY size of the rows a run moves.
    pub bytes_moved: u64,
    /// The median time PostgreSQL took to send those rows as binary COPY to a reader that
    /// discards them: the floor under any load of them from that source.
    pub source_read_seconds: Option<f64>,
    contenders: Vec<ContenderRuns>,
}

impl ScenarioResult {
    /// A scenario of [`Contender::ALL`].
    pub fn new(
        scenario: Scenario,
        table: &Table,
        lab: &Lab,
        rows_moved: u64,
        bytes_moved: u64,
    ) -> Self {
        Self::with_contenders(
            scenario,
            table,
            lab,
            rows_moved,
            bytes_moved,
            &Contender::ALL,
        )
    }

    /// A scenario of `contenders`, in the order its tables list them.
    pub fn with_contenders(
        scenario: Scenario,
        table: &Table,
        lab: &Lab,
        rows_moved: u64,
        bytes_moved: u64,
        contenders: &[Contender],
    ) -> Self {
        ScenarioResult {
            scenario,
            table: table.name,
            columns: table.column_count(),
            skipped: None,
            rows_moved,
            bytes_moved,
            source_read_seconds: None,
            contenders: contenders
                .iter()
                .map(|&contender| ContenderRuns {
                    contender,
                    label: contender.label(lab),
                    unavailable: contender.unavailable(lab),
                    runs: Vec::new(),
                })
                .collect(),
        }
    }

    pub fn skipped(scenario: Scenario, table: &Table, reason: &'static str) -> Self {
        println!("[{} {}] skipped: {reason}", table.name, scenario.key());
        ScenarioResult {
            scenario,
            table: table.name,
            columns: table.column_count(),
            skipped: Some(reason),
            rows_moved: 0,
            bytes_moved: 0,
            source_read_seconds: None,
            contenders: Vec::new(),
        }
    }

    /// Names a contender differently in this scenario.
    pub fn relabel(&mut self, contender: Contender, label: &str) {
        if let Some(entry) = self
            .contenders
            .iter_mut()
            .find(|c| c.contender == contender)
        {
            entry.label = label.to_owned();
        }
    }

    /// Whether `contender` is one of this scenario's and neither unavailable nor excluded.
    pub fn takes_part(&self, contender: Contender) -> bool {
        self.contenders
            .iter()
            .any(|c| c.contender == contender && c.unavailable.is_none())
    }

    /// Marks a contender as not run in this scenario, and why.
    pub fn exclude(&mut self, contender: Contender, why: &str) {
        if let Some(entry) = self
            .contenders
            .iter_mut()
            .find(|c| c.contender == contender)
        {
            entry.unavailable = Some(why.to_owned());
        }
    }

    /// Keep a run and say how it went.
    pub fn record(&mut self, lab: &Lab, contender: Contender, runs: u32, record: RunRecord) {
        let time = record
            .measured
            .as_ref()
            .map(|m| format!("{:.2} s, ", m.wall_seconds))
            .unwrap_or_default();
        let outcome = match &record.outcome {
            Outcome::Valid => "valid".to_owned(),
            Outcome::Invalid(why) => format!("INVALID: {why}"),
            Outcome::Failed(why) => format!("FAILED: {why}"),
        };
        println!(
            "[{} {} {}/{runs}] {}: {time}{outcome}",
            self.table,
            self.scenario.key(),
            record.rep,
            contender.label(lab)
        );
        if let Some(entry) = self
            .contenders
            .iter_mut()
            .find(|c| c.contender == contender)
        {
            entry.runs.push(record);
        }
    }

    fn summary(&self, contender: Contender) -> Option<Summary> {
        self.contenders
            .iter()
            .find(|c| c.contender == contender)
            .and_then(|c| Summary::of(&c.runs))
    }
}

/// The valid runs of one contender in one scenario.
#[derive(Debug, Clone, Copy)]
struct Summary {
    valid: usize,
    median: f64,
    min: f64,
    max: f64,
    /// The largest of the runs' peak RSS.
    peak_rss_kib: u64,
    /// The median of the runs' peak RSS: what the memory-at-scale phase is compared with.
    median_rss_kib: u64,
    wasm_share: Option<f64>,
}

impl Summary {
    fn of(runs: &[RunRecord]) -> Option<Self> {
        let valid: Vec<&Measured> = runs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Valid))
            .filter_map(|r| r.measured.as_ref())
            .collect();
        let mut walls: Vec<f64> = valid.iter().map(|m| m.wall_seconds).collect();
        let mut shares: Vec<f64> = valid
            .iter()
            .filter_map(|m| m.dpone.as_ref().map(|d| d.wasm_share))
            .collect();
        let mut rss: Vec<f64> = valid.iter().map(|m| m.peak_rss_kib as f64).collect();
        Some(Summary {
            valid: valid.len(),
            median: median(&mut walls)?,
            min: walls.iter().copied().fold(f64::INFINITY, f64::min),
            max: walls.iter().copied().fold(0.0, f64::max),
            peak_rss_kib: valid.iter().map(|m| m.peak_rss_kib).max()?,
            median_rss_kib: median(&mut rss)?.round() as u64,
            wasm_share: median(&mut shares),
        })
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// How dpone compares with one contender (both medians): dpone's time over the contender's,
/// and dpone's speed over the contender's (the reciprocal; 0.9 means dpone moves rows at 90%
/// of the contender's rate).
fn ratios(dpone: Option<Summary>, other: Option<Summary>) -> Option<(f64, f64)> {
    let (dpone, other) = (dpone?, other?);
    Some((dpone.median / other.median, other.median / dpone.median))
}

/// Machine and run facts for the report header.
#[derive(Debug)]
pub struct Machine {
    date: String,
    cpu: String,
    cores: usize,
    memory_gib: f64,
    postgres: String,
    commit: String,
    rows: u64,
    runs: u32,
}

impl Machine {
    pub fn collect(root: &Path, lab: &Lab, rows: u64, runs: u32) -> Result<Self> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let dirty = git(root, &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
        let commit = git(root, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
        Ok(Machine {
            date: output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
                .trim()
                .to_owned(),
            cpu: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_else(|| "unknown CPU".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            postgres: lab.server.sql("postgres", "SHOW server_version")?,
            commit: if dirty {
                format!("{commit} (with uncommitted changes)")
            } else {
                commit
            },
            rows,
            runs,
        })
    }
}

/// Target checks, evaluated on this run.
struct Target {
    target: String,
    measured: String,
    status: &'static str,
}

/// How far dpone's peak RSS may grow from the main run's rows to the memory-at-scale phase's.
const RSS_GROWTH_LIMIT: f64 = 1.5;

fn targets(machine: &Machine, results: &[ScenarioResult], scale: &[ScenarioResult]) -> Vec<Target> {
    let versus = |scenario: Scenario, limit: Contender, at_least: f64, target: &str| {
        let measured: Vec<(String, f64)> = results
            .iter()
            .filter(|r| r.scenario == scenario)
            .filter_map(|r| {
                let (_, speed) = ratios(r.summary(Contender::Dpone), r.summary(limit))?;
                Some((r.table.to_owned(), speed))
            })
            .collect();
        Target {
            target: target.to_owned(),
            status: status(
                !measured.is_empty(),
                measured.iter().all(|(_, s)| *s >= at_least),
            ),
            measured: join_or_none(measured.iter().map(|(t, s)| format!("{t} {s:.2}x"))),
        }
    };
    let shares: Vec<(String, f64)> = results
        .iter()
        .filter_map(|r| {
            let share = r.summary(Contender::Dpone)?.wasm_share?;
            Some((format!("{} {}", r.table, short(r.scenario)), share))
        })
        .collect();
    let dpone_growth: Vec<(String, u64, u64, f64)> = growth(results, scale)
        .iter()
        .filter(|g| g.entry.contender == Contender::Dpone)
        .filter_map(|g| Some((g.name(), g.base_kib?, g.scale_kib?, g.ratio()?)))
        .collect();
    let rss_target = match scale_rows(scale) {
        Some(rows) => format!(
            "dpone peak RSS at {} rows within {RSS_GROWTH_LIMIT}x of the {} figure",
            count(rows),
            count(machine.rows)
        ),
        None => format!(
            "dpone peak RSS at --scale-rows within {RSS_GROWTH_LIMIT}x of the --rows figure"
        ),
    };
    vec![
        versus(
            Scenario::FullRefresh,
            Contender::Pipe,
            1.0,
            "full refresh >= 1.0x the single-stream COPY pipe (dpone speed / pipe speed)",
        ),
        versus(
            Scenario::Merge,
            Contender::Pipe,
            0.8,
            "incremental_merge >= 0.8x the pipe",
        ),
        versus(
            Scenario::ClickHouse,
            Contender::NativeInsert,
            0.9,
            "PostgreSQL -> ClickHouse >= 0.9x the native insert",
        ),
        Target {
            target: "wasm share of dpone's wall time <= 1%".into(),
            status: status(!shares.is_empty(), shares.iter().all(|(_, s)| *s <= 0.01)),
            measured: join_or_none(shares.iter().map(|(n, s)| format!("{n} {}", percent(*s)))),
        },
        Target {
            target: rss_target,
            status: status(
                !dpone_growth.is_empty(),
                dpone_growth
                    .iter()
                    .all(|(.., ratio)| *ratio <= RSS_GROWTH_LIMIT),
            ),
            measured: join_or_none(dpone_growth.iter().map(|(n, base, at_scale, ratio)| {
                format!("{n} {} -> {} ({ratio:.2}x)", mib(*base), mib(*at_scale))
            })),
        },
    ]
}

/// One contender's peak RSS in a scenario of the memory-at-scale phase, next to the same
/// scenario's in the main run.
struct Growth<'a> {
    /// The scenario at scale.
    result: &'a ScenarioResult,
    entry: &'a ContenderRuns,
    /// The median of the peak RSS of the main run's valid runs.
    base_kib: Option<u64>,
    /// Likewise at scale (one run).
    scale_kib: Option<u64>,
    /// The wall time at scale.
    scale_seconds: Option<f64>,
}

impl Growth<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.result.table, short(self.result.scenario))
    }

    fn ratio(&self) -> Option<f64> {
        Some(self.scale_kib? as f64 / self.base_kib? as f64)
    }
}

fn growth<'a>(results: &'a [ScenarioResult], scale: &'a [ScenarioResult]) -> Vec<Growth<'a>> {
    scale
        .iter()
        .flat_map(|at_scale| {
            let base = results
                .iter()
                .find(|r| r.scenario == at_scale.scenario && r.table == at_scale.table);
            at_scale.contenders.iter().map(move |entry| {
                let summary = Summary::of(&entry.runs);
                Growth {
                    result: at_scale,
                    entry,
                    base_kib: base
                        .and_then(|b| b.summary(entry.contender))
                        .map(|s| s.median_rss_kib),
                    scale_kib: summary.map(|s| s.median_rss_kib),
                    scale_seconds: summary.map(|s| s.median),
                }
            })
        })
        .collect()
}

/// The rows of the memory-at-scale phase, if it ran.
fn scale_rows(scale: &[ScenarioResult]) -> Option<u64> {
    scale.first().map(|r| r.rows_moved)
}

fn growth_title(machine: &Machine, scale_rows: u64) -> String {
    format!(
        "Peak RSS from {} to {} rows",
        count(machine.rows),
        count(scale_rows)
    )
}

fn growth_headers(machine: &Machine, scale_rows: u64) -> [String; 7] {
    let (rows, scale_rows) = (count(machine.rows), count(scale_rows));
    [
        "scenario".into(),
        "contender".into(),
        format!("peak RSS at {rows} rows"),
        format!("peak RSS at {scale_rows} rows"),
        "ratio".into(),
        format!("wall s at {scale_rows} rows"),
        "note".into(),
    ]
}

fn growth_rows(results: &[ScenarioResult], scale: &[ScenarioResult]) -> Vec<[String; 7]> {
    let or_dash = |cell: Option<String>| cell.unwrap_or_else(|| "-".into());
    growth(results, scale)
        .iter()
        .map(|g| {
            [
                g.name(),
                g.entry.label.clone(),
                or_dash(g.base_kib.map(mib)),
                or_dash(g.scale_kib.map(mib)),
                or_dash(g.ratio().map(|r| format!("{r:.2}x"))),
                or_dash(g.scale_seconds.map(|s| format!("{s:.2}"))),
                truncate(&note(g.entry), NOTE_CHARS),
            ]
        })
        .collect()
}

fn short(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::FullRefresh => "full_refresh",
        Scenario::Merge => "merge",
        Scenario::ClickHouse => "clickhouse",
        Scenario::Rest => "rest",
        Scenario::Kafka => "kafka",
        Scenario::BigQuery => "bigquery",
        Scenario::PgToMssql => "pg_to_mssql",
        Scenario::MssqlToPg => "mssql_to_pg",
    }
}

fn status(measured: bool, met: bool) -> &'static str {
    match (measured, met) {
        (false, _) => "not measured",
        (true, true) => "met",
        (true, false) => "NOT met",
    }
}

fn join_or_none(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// dpone runs that did not count, as lines for the error message.
pub fn dpone_failures<'a>(results: impl IntoIterator<Item = &'a ScenarioResult>) -> Vec<String> {
    let mut failures = Vec::new();
    for result in results {
        for entry in result
            .contenders
            .iter()
            .filter(|c| c.contender == Contender::Dpone)
        {
            for run in &entry.runs {
                if let Outcome::Invalid(why) | Outcome::Failed(why) = &run.outcome {
                    failures.push(format!(
                        "{} {} run {}: {why}",
                        result.table,
                        result.scenario.key(),
                        run.rep
                    ));
                }
            }
        }
    }
    failures
}

const HEADERS: [&str; 11] = [
    "contender",
    "valid runs",
    "median s",
    "min-max s",
    "rows/s",
    "MB/s",
    "peak RSS",
    "wasm share",
    "time dpone/this",
    "speed dpone/this",
    "note",
];

/// One table row per contender, shared by the console and the markdown renderings.
fn rows(result: &ScenarioResult, note_chars: usize) -> Vec<[String; 11]> {
    let dpone = result.summary(Contender::Dpone);
    result
        .contenders
        .iter()
        .map(|entry| {
            let summary = Summary::of(&entry.runs);
            let attempted = entry.runs.len();
            let note = truncate(&note(entry), note_chars);
            let Some(s) = summary else {
                let mut row: [String; 11] = Default::default();
                row[0] = entry.label.clone();
                row[1] = format!("0/{attempted}");
                for cell in &mut row[2..10] {
                    *cell = "-".into();
                }
                row[10] = note;
                return row;
            };
            let (time_ratio, speed_ratio) = ratios(dpone, summary)
                .map(|(t, s)| (format!("{t:.2}"), format!("{s:.2}x")))
                .unwrap_or(("-".into(), "-".into()));
            [
                entry.label.clone(),
                format!("{}/{attempted}", s.valid),
                format!("{:.2}", s.median),
                format!("{:.2}-{:.2}", s.min, s.max),
                thousands((result.rows_moved as f64 / s.median) as u64),
                format!("{:.1}", result.bytes_moved as f64 / 1e6 / s.median),
                mib(s.peak_rss_kib),
                s.wasm_share.map(percent).unwrap_or_else(|| "-".into()),
                time_ratio,
                speed_ratio,
                note,
            ]
        })
        .collect()
}

fn note(entry: &ContenderRuns) -> String {
    if let Some(why) = &entry.unavailable {
        return format!("not run: {why}");
    }
    entry
        .runs
        .iter()
        .filter_map(|run| match &run.outcome {
            Outcome::Valid => None,
            Outcome::Invalid(why) => Some(format!("run {} invalid: {why}", run.rep)),
            Outcome::Failed(why) => Some(format!("run {} failed: {why}", run.rep)),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max_chars).collect();
    format!("{cut}...")
}

fn heading(result: &ScenarioResult) -> String {
    let mut heading = format!(
        "{}, table {} ({} columns)",
        result.scenario.title(),
        result.table,
        result.columns
    );
    match result.skipped {
        Some(why) => write!(heading, ": skipped, {why}").unwrap_or(()),
        None => write!(
            heading,
            ": {} rows, {:.1} MB as binary COPY per run",
            thousands(result.rows_moved),
            result.bytes_moved as f64 / 1e6
        )
        .unwrap_or(()),
    }
    if let Some(seconds) = result.source_read_seconds {
        write!(
            heading,
            "; PostgreSQL's binary COPY of them alone, read and discarded: {seconds:.2} s (median)"
        )
        .unwrap_or(());
    }
    heading
}

pub fn console(machine: &Machine, results: &[ScenarioResult], scale: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} rows, {} runs, {} cores, {:.0} GiB, PostgreSQL {}, {}",
        thousands(machine.rows),
        machine.runs,
        machine.cores,
        machine.memory_gib,
        machine.postgres,
        machine.date
    );
    for result in results {
        let _ = writeln!(out, "\n{}", heading(result));
        if result.skipped.is_some() {
            continue;
        }
        out += &console_table(&HEADERS.map(String::from), &rows(result, NOTE_CHARS));
    }
    if let Some(scale_rows) = scale_rows(scale) {
        let _ = writeln!(out, "\n{}", growth_title(machine, scale_rows));
        out += &console_table(
            &growth_headers(machine, scale_rows),
            &growth_rows(results, scale),
        );
    }
    let _ = writeln!(out, "\ntargets:");
    for target in targets(machine, results, scale) {
        let _ = writeln!(
            out,
            "  {}: {} ({})",
            target.target, target.measured, target.status
        );
    }
    out
}

/// Lines of a table for the console, indented: the columns padded to their widest cell but
/// the last (the note), which is left as long as it is.
fn console_table<R: AsRef<[String]>>(headers: &[String], rows: &[R]) -> String {
    let widths: Vec<usize> = (0..headers.len().saturating_sub(1))
        .map(|i| {
            rows.iter()
                .map(|row| row.as_ref()[i].chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            match widths.get(i) {
                Some(width) => {
                    let _ = write!(line, "{cell:<width$}  ");
                }
                None => line.push_str(cell),
            }
        }
        line.trim_end().to_owned()
    };
    let mut out = String::new();
    for cells in std::iter::once(headers).chain(rows.iter().map(|row| row.as_ref())) {
        let _ = writeln!(out, "  {}", line(cells));
    }
    out
}

/// A markdown table, `|` in cells escaped.
fn markdown_table<R: AsRef<[String]>>(headers: &[String], rows: &[R]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "| {} |", headers.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(headers.len()));
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .map(|cell| cell.replace('|', "\\|"))
            .collect();
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md
}

pub fn json(
    lab: &Lab,
    machine: &Machine,
    results: &[ScenarioResult],
    scale: &[ScenarioResult],
) -> Value {
    let scenarios: Vec<Value> = results.iter().map(scenario_json).collect();
    let peak_rss: Vec<Value> = growth(results, scale)
        .iter()
        .map(|g| {
            json!({
                "scenario": g.result.scenario.key(),
                "table": g.result.table,
                "contender": g.entry.contender.key(),
                "median_peak_rss_kib_at_rows": g.base_kib,
                "peak_rss_kib_at_scale_rows": g.scale_kib,
                "ratio": g.ratio(),
            })
        })
        .collect();
    json!({
        "machine": {
            "date": machine.date,
            "cpu": machine.cpu,
            "cores": machine.cores,
            "memory_gib": machine.memory_gib,
            "postgres": machine.postgres,
            "commit": machine.commit,
        },
        "settings": {
            "rows": machine.rows,
            "runs": machine.runs,
            "source_database": SRC_DB,
            "target_database": DST_DB,
            "python_tools": {
                "sling": lab.tools.sling.as_ref().ok().map(|s| s.version.clone()),
                "dlt": lab.tools.dlt.as_ref().ok().map(|d| d.version.clone()),
            },
        },
        "scenarios": scenarios,
        "memory_at_scale": {
            "rows": scale_rows(scale),
            "scenarios": scale.iter().map(scenario_json).collect::<Vec<_>>(),
            "peak_rss": peak_rss,
        },
        "targets": targets(machine, results, scale).iter().map(|t| json!({
            "target": t.target, "measured": t.measured, "status": t.status,
        })).collect::<Vec<_>>(),
    })
}

fn scenario_json(result: &ScenarioResult) -> Value {
    let dpone = result.summary(Contender::Dpone);
    let contenders: Vec<Value> = result
        .contenders
        .iter()
        .map(|entry| {
            let summary = Summary::of(&entry.runs).map(|s| {
                let ratios = ratios(dpone, Some(s));
                json!({
                    "valid_runs": s.valid,
                    "median_seconds": s.median,
                    "min_seconds": s.min,
                    "max_seconds": s.max,
                    "rows_per_second": result.rows_moved as f64 / s.median,
                    "mb_per_second": result.bytes_moved as f64 / 1e6 / s.median,
                    "peak_rss_kib": s.peak_rss_kib,
                    "median_peak_rss_kib": s.median_rss_kib,
                    "wasm_share": s.wasm_share,
                    "dpone_time_ratio": ratios.map(|r| r.0),
                    "dpone_speed_ratio": ratios.map(|r| r.1),
                })
            });
            json!({
                "contender": entry.contender.key(),
                "label": entry.label,
                "unavailable": entry.unavailable,
                "summary": summary,
                "runs": entry.runs.iter().map(run_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "scenario": result.scenario.key(),
        "title": result.scenario.title(),
        "table": result.table,
        "columns": result.columns,
        "skipped": result.skipped,
        "rows_moved": result.rows_moved,
        "bytes_moved": result.bytes_moved,
        "source_read_median_seconds": result.source_read_seconds,
        "contenders": contenders,
    })
}

fn run_json(run: &RunRecord) -> Value {
    let (outcome, reason) = match &run.outcome {
        Outcome::Valid => ("valid", None),
        Outcome::Invalid(why) => ("invalid", Some(why.as_str())),
        Outcome::Failed(why) => ("failed", Some(why.as_str())),
    };
    let measured = run.measured.as_ref();
    json!({
        "run": run.rep,
        "outcome": outcome,
        "reason": reason,
        "wall_seconds": measured.map(|m| m.wall_seconds),
        "peak_rss_kib": measured.map(|m| m.peak_rss_kib),
        "dpone_report": measured.and_then(|m| m.dpone.as_ref()).map(|d| json!({
            "wall_seconds": d.wall_seconds,
            "wasm_load_seconds": d.wasm_load_seconds,
            "wasm_guest_seconds": d.wasm_guest_seconds,
            "wasm_share": d.wasm_share,
            "rows_read": d.rows_read,
            "rows_written": d.rows_written,
        })),
    })
}

pub fn markdown(
    lab: &Lab,
    machine: &Machine,
    results: &[ScenarioResult],
    scale: &[ScenarioResult],
) -> String {
    let mut md = String::new();
    let tools = [Contender::Sling.label(lab), Contender::Dlt.label(lab)].join(", ");
    let narrow = Table::narrow();
    let wide = Table::wide();
    let _ = write!(
        md,
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` ([xtask/src/bench.rs](../xtask/src/bench.rs)) from its \
         last full run; rerun it rather than editing this file. The raw numbers of that run, \
         every repetition included, are in `target/bench/results.json`.\n\n\
         ## This run\n\n\
         | | |\n|---|---|\n\
         | date | {date} |\n\
         | machine | {cores} cores ({cpu}), {mem:.0} GiB memory |\n\
         | PostgreSQL | {pg}, the private cluster of `cargo xtask pg` (127.0.0.1, fsync off); source database `{SRC_DB}`, target database `{DST_DB}` on the same server |\n\
         | rows per table | {rows}; the merge changes {changed} rows and adds {new} |\n\
         | repetitions | {runs} per contender and scenario, contenders taking turns; median (min-max) of the valid runs |\n\
         | dpone commit | {commit} |\n\
         | Python contenders | {tools} |\n\n",
        date = machine.date,
        cores = machine.cores,
        cpu = machine.cpu,
        mem = machine.memory_gib,
        pg = machine.postgres,
        rows = thousands(machine.rows),
        changed = thousands(data::changed_rows(machine.rows)),
        new = thousands(data::new_rows(machine.rows)),
        runs = machine.runs,
        commit = machine.commit,
    );

    let _ = write!(
        md,
        "## Targets\n\n\
         The targets dpone holds itself to (issue 19 raised them from issue 6's 0.9x for a full \
         refresh and 0.5x for a merge).\n\n\
         | target | this run | status |\n|---|---|---|\n"
    );
    for target in targets(machine, results, scale) {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            target.target, target.measured, target.status
        );
    }

    let _ = write!(md, "\n## Results\n");
    for result in results {
        let _ = write!(md, "\n### {}\n\n", heading(result));
        if result.skipped.is_some() {
            continue;
        }
        md += &markdown_table(&HEADERS.map(String::from), &rows(result, NOTE_CHARS));
    }

    if let Some(scale_rows) = scale_rows(scale) {
        let _ = write!(
            md,
            "\n## {}\n\n\
             The memory-at-scale phase, after every other scenario: the narrow table generated \
             again with {scale} rows and loaded by dpone and the COPY pipe as in the full \
             refresh above (a first load, untimed, then one timed run that replaces the target). \
             Its peak RSS is set against the median of the peak RSS of the same contender's \
             valid runs at {rows} rows.\n\n",
            growth_title(machine, scale_rows),
            scale = thousands(scale_rows),
            rows = thousands(machine.rows),
        );
        md += &markdown_table(
            &growth_headers(machine, scale_rows),
            &growth_rows(results, scale),
        );
    }

    let _ = write!(
        md,
        "\n## How it is measured\n\n\
         - **Data.** Generated server-side (`generate_series`), deterministic: `narrow` has \
         {narrow_cols} columns (bigint key, timestamp cursor, int, smallint, numeric(12,2), \
         float8, real, text, varchar, nullable text, boolean, date, timestamptz, md5-derived \
         uuid, jsonb, bytea, char(2), ...); `wide` has {wide_cols} columns, 118 of them sparse \
         (one value in ten rows, rotating types). MB/s counts the binary COPY size of the rows a \
         run moves.\n\
         - **Full refresh.** The steady state of a scheduled refresh: each contender loads the \
         table once, untimed, then every timed run replaces its existing target. dpone: \
         `full_refresh` with `unique_key: [id]` (its swap path: staging `LIKE target INCLUDING \
         ALL`, loaded with its primary key dropped and built again once the rows are in, then \
         drop and rename in one transaction), with the manifest's \
         defaults: rows forwarded from source to staging as binary COPY tuples, undecoded \
         (`transfer.pass_through`), in one stream (`transfer.parallelism: auto` splits only \
         tables over 2 GiB). COPY \
         pipe: `psql -c \"COPY (SELECT ...) TO STDOUT (FORMAT binary)\" | psql -1 -c \"CREATE \
         TABLE ...\" -c \"COPY ... FROM STDIN (FORMAT binary)\"` into a fresh table with the \
         source's DDL and primary key (what `LIKE source INCLUDING ALL` gives; LIKE cannot \
         reach across databases). Sling: `--mode full-refresh`. dlt: `sql_table` (pyarrow \
         backend) with `write_disposition=\"replace\"`.\n\
         - **Incremental merge.** Each repetition: every contender loads the original table \
         into an empty target with its merge mode (so its cursor state is set; the pipe does a \
         full load), then the source changes (20% of the rows rewritten with a later \
         `updated_at`, 5% new), then each contender merges the change (timed), then the source \
         changes back. dpone: `incremental_merge`, `unique_key: [id]`, `cursor_column: \
         updated_at`, state in the target database (rows forwarded undecoded into a scratch \
         staging table, whose key column is analyzed before the key check and the merge). COPY \
         pipe: the target's \
         `max(updated_at)`, then the rows past it into a temporary table, `DELETE ... USING` + \
         `INSERT ... SELECT`, one transaction. Sling: `--mode incremental --primary-key id \
         --update-key updated_at`. dlt: `merge` with `primary_key=\"id\"` and \
         `dlt.sources.incremental(\"updated_at\")`.\n\
         - **PostgreSQL -> ClickHouse.** The private server of `cargo xtask clickhouse` \
         (Debian's `clickhouse-server`, 18.16 on bookworm, on 127.0.0.1), the narrow table only. \
         Each contender loads once untimed, then every timed run replaces its table. dpone: \
         `full_refresh`, `unique_key: [id]`, state in the target PostgreSQL database. The \
         limit, the ClickHouse native insert: the table of dpone's first load read back once, \
         untimed, with `clickhouse-client --query \"SELECT * FROM ... FORMAT Native\"` into a \
         file (the source's rows in the types every table here has); each timed run creates a \
         fresh table like dpone's before the clock starts, then `clickhouse-client --query \
         \"INSERT INTO ... FORMAT Native\" < file` over the native protocol: no PostgreSQL read \
         and no encoding, the server's own block format (were `Native` refused, `RowBinary`, and \
         its label would say so). CSV pipe: `psql -c \"COPY (SELECT ...) TO STDOUT (FORMAT \
         csv)\" | curl --data-binary @- '.../?query=INSERT INTO ... FORMAT CSV'`, ClickHouse's \
         text insert over HTTP, into a fresh table like dpone's. Sling: `--mode full-refresh` \
         over the native protocol (`clickhouse://default@127.0.0.1:{native_port}/{CH_DB}`); \
         when it fails, its own error is the note. dlt is not run: its ClickHouse destination \
         needs the `dlt[clickhouse]` extra, which the bench venv does not install. A run \
         counts when its table has the source's row count, sum of ids and latest \
         `updated_at`. The scenario's heading also gives the floor under every contender \
         that reads PostgreSQL: `psql -c \"COPY (SELECT ...) TO STDOUT (FORMAT binary)\"` \
         read and discarded by the harness, timed as many times as the runs (median).\n\
         - **REST -> PostgreSQL.** The mock API of `xtask/src/rest_mock.rs` serves the \
         records table's rows as JSON pages of 10,000 (each record rendered once, so the server \
         costs about a copy per page). As in the full refresh above, dpone loads once untimed \
         and each timed run replaces its existing target (`full_refresh`, `unique_key: [id]`, \
         the read deduplicating by `id`). The limit: a plain client, Python's standard \
         library fetching the same pages and writing CSV into `psql COPY`, into a table it \
         creates each run.\n\
         - **PostgreSQL -> Kafka.** A compacted topic keyed by `id` on the private tansu \
         broker (in memory; installed as a debug build, so the broker bounds both contenders). \
         dpone: `full_refresh`, `exactly_once: false` (tansu serves no transactions), into a \
         new topic each run. The limit: [host/examples/kafka_raw_client.rs](../host/examples/kafka_raw_client.rs), \
         raw librdkafka (the same build) producing the records of dpone's untimed first run, \
         read back from its topic, with dpone's producer settings; it reads no PostgreSQL and \
         encodes nothing. A run counts when its topic holds exactly those records (count and \
         an order-independent digest of every key and value).\n\
         - **PostgreSQL -> BigQuery.** The BigQuery emulator of `cargo xtask bigquery` \
         (bqemulator 1.4.0: BigQuery's REST API over DuckDB, in memory, no credentials), so \
         the emulator bounds both contenders; it says nothing of Google's service. dpone: \
         `full_refresh`, `unique_key: [id]`, into a new table each run (a Parquet load job \
         through a resumable upload). The limit: the emulator's own load of the same rows as \
         a Parquet file ([xtask/src/bench/bigquery_load.py](../xtask/src/bench/bigquery_load.py)), \
         made once, untimed, from the source (`COPY ... (FORMAT csv)`, then pyarrow with the \
         Arrow types dpone reads the columns as); each timed run creates the table with \
         dpone's BigQuery types, uploads the file in one resumable upload and waits for the \
         load job: no PostgreSQL read and no encoding. Both load once untimed first. A run \
         counts when its table has the source's row count and sum of ids.\n\
         - **Memory at scale.** Last in a full run (neither `--only` nor `--smoke`): the narrow \
         table generated again with `--scale-rows` rows (10,000,000 unless told otherwise), \
         then its PostgreSQL -> PostgreSQL full refresh as above, by dpone and the COPY pipe \
         only: a first load into an empty target, untimed, then one timed run that replaces it \
         (dpone's swap path, as in the main runs), through the same correctness gate. Its peak \
         RSS is set against the median peak RSS of the contender's valid runs at `--rows`. The \
         source and both targets are dropped afterwards.\n\
         - **Correctness gate.** After every run the target must have the source's row count \
         and `md5(string_agg(md5(ROW(...)::text), '' ORDER BY id))` over the source's columns, \
         each cast back to its source type (dlt and Sling store some types differently and \
         may add columns of their own); otherwise the run is marked invalid and not counted.\n\
         - **Measures.** Wall time of the contender's process tree from start to exit (dpone \
         included: process start, component load, connections). Peak RSS: GNU time `%M` of the \
         tree (its largest process; for a pipe, the sum of its two clients); server \
         processes are not counted for anyone. wasm share: dpone's run report \
         `(wasm_load_seconds + wasm_guest_seconds) / wall_seconds`, with the component cache \
         warm. `time dpone/this` < 1 and `speed dpone/this` > 1 mean dpone is faster. Before \
         each timed run VACUUM ANALYZE settles the target database (it takes the last run's dead \
         rows, which autovacuum could otherwise start on during this one), a CHECKPOINT flushes dirty \
         buffers and `sync` writes the kernel's dirty pages out (the cluster runs with \
         `fsync = off`, so without it the kernel could write back the last run's data, and a \
         Python contender's files, during this one); VACUUM ANALYZE settles the source after it is generated or changed. \
         Autovacuum stays on.\n\
         - **Contender setup.** Sling and dlt run from a venv under `target/bench/venv` with the \
         versions pinned in `xtask/bench-requirements.txt`; Sling through its PyPI wrapper with \
         `SLING_BINARY` set to the binary of the `sling-linux-amd64` wheel. dlt loads Arrow data \
         into PostgreSQL as CSV through COPY, which cannot carry raw bytes: \
         [xtask/bench_dlt.py](../xtask/bench_dlt.py) hex-encodes bytea values (`\\x...`) in a \
         map, the workaround dlt's own error message asks for. Sling 1.4.11 sends a bytea \
         value that starts with `[` and ends with `]` as text (taking it for JSON) and the \
         COPY fails, so every generated bytea value starts with a 0x01 byte. \
         clickhouse-client is Debian's package, installed when missing. A contender that \
         cannot be installed or fails is listed with the reason.\n\
         - **Reproduce.** `cargo xtask bench` (`--rows N`, `--runs N`, `--table \
         narrow|wide|both`, `--only pg,clickhouse,rest,kafka,bigquery,mssql` for some scenarios, \
         which leaves this page as it is; `mssql` runs only against a server given by \
         `DPONE_LIVE_MSSQL_URL`; `--skip-python` leaves Sling and dlt out, neither installed \
         nor run; `--scale-rows N` sets the rows of the memory-at-scale phase, which runs when \
         they are above `--rows`, and 0 turns it off): so `cargo xtask bench --rows 10000000 \
         --skip-python` runs dpone, the pipes and the native insert alone at 10M rows. `cargo \
         xtask bench --smoke` (10,000 rows, one run, no memory-at-scale phase, part of `cargo \
         xtask test`, on the debug build) checks that the harness works and fails if dpone's \
         result does not count.\n",
        narrow_cols = narrow.column_count(),
        wide_cols = wide.column_count(),
        native_port = lab.clickhouse.native_port(),
    );
    md
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A row count as titles say it: 10M, 10k; thousands separated when not round.
fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        thousands(n)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn row_counts() {
        assert_eq!(count(10_000_000), "10M");
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(10_000), "10k");
        assert_eq!(count(1_500_000), "1500k");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn speed_ratio_is_the_reciprocal_of_the_time_ratio() {
        let summary = |median| Summary {
            valid: 1,
            median,
            min: median,
            max: median,
            peak_rss_kib: 1,
            median_rss_kib: 1,
            wasm_share: None,
        };
        let (time, speed) = ratios(Some(summary(4.0)), Some(summary(3.6))).unwrap_or_default();
        assert!((time - 4.0 / 3.6).abs() < 1e-9);
        assert!((speed - 0.9).abs() < 1e-9);
    }
}
