//! `cargo xtask bench`: dpone side by side with the alternatives a user would pick, on the same
//! data, in one run, with ratios (the machine is shared and noisy, so absolute times alone mean
//! little).
//!
//! It generates the benchmark tables in the database `bench_src` of the private PostgreSQL
//! cluster and loads them into `bench_dst` (one schema per contender) in each scenario:
//! full refresh, and incremental merge of 20% changed plus 5% new rows. Contenders take turns
//! within each repetition; every run must leave a target with the source's row count and
//! checksum, or it does not count. A full run ends with the memory-at-scale phase: the narrow
//! full refresh again at `--scale-rows` rows, dpone and the COPY pipe only, for their peak RSS.
//! Results go to `target/bench/results.json` and `docs/benchmarks.md` (`--only` runs some
//! scenarios and leaves the page alone); `--smoke` only checks that the harness still works.

mod bigquery;
mod contenders;
mod data;
mod kafka;
mod mssql;
mod python;
mod report;
mod rest;
mod startup;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::bigquery::Bigquery;
use crate::build::{self, Profile};
use crate::clickhouse::Clickhouse;
use crate::kafka::Kafka;
use crate::output;
use crate::services::{self, Postgres, StopOnDrop};

use contenders::{Contender, GNU_TIME, Load};
use data::Table;
use python::{InstallPolicy, Tools};
use report::{Machine, Outcome, RunRecord, Scenario, ScenarioResult};

pub const SRC_DB: &str = "bench_src";
pub const DST_DB: &str = "bench_dst";
const DEFAULT_ROWS: u64 = 1_000_000;
const DEFAULT_RUNS: u32 = 3;
const DEFAULT_SCALE_ROWS: u64 = 10_000_000;
const SMOKE_ROWS: u64 = 10_000;
const SMOKE_RUNS: u32 = 1;
/// Below this the 20% / 5% change rounds to almost nothing.
const MIN_ROWS: u64 = 100;
const DOCS: &str = "docs/benchmarks.md";
const CLICKHOUSE_WIDE_SKIPPED: &str = "its timestamptz columns have milliseconds, which ClickHouse's DateTime cannot hold before 20.1 (no DateTime64; dpone refuses rather than truncates)";
/// The ClickHouse database each contender loads into.
pub const CH_DB: &str = "bench_clickhouse";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tables {
    Narrow,
    Wide,
    Both,
}

/// A group of scenarios `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// PostgreSQL -> PostgreSQL full refresh and incremental merge.
    Pg,
    /// PostgreSQL -> ClickHouse full refresh.
    Clickhouse,
    /// REST (the mock API) -> PostgreSQL full refresh.
    Rest,
    /// PostgreSQL -> Kafka full refresh.
    Kafka,
    /// PostgreSQL -> BigQuery (the emulator) full refresh.
    Bigquery,
    /// PostgreSQL -> SQL Server and back, full refresh: only with a server given by
    /// DPONE_LIVE_MSSQL_URL (and bcp, sqlcmd on PATH); skipped otherwise.
    Mssql,
    /// Time to first instruction of the same strategy in Rust, Python and JavaScript.
    Startup,
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Rows per generated table [default: 1000000, or 10000 with --smoke].
    #[arg(long)]
    rows: Option<u64>,
    /// Timed runs of each contender in each scenario [default: 3, or 1 with --smoke].
    #[arg(long)]
    runs: Option<u32>,
    /// The tables to generate and load: narrow (20 mixed columns), wide (120 sparse ones).
    #[arg(long, value_enum, default_value_t = Tables::Both)]
    table: Tables,
    /// Check that the harness works: 10000 rows, one run, the debug build, only the Python
    /// contenders that are already installed, results in target/bench/smoke-results.json
    /// (docs untouched).
    #[arg(long)]
    smoke: bool,
    /// Install the Python contenders and clickhouse-client even with --smoke.
    #[arg(long)]
    install: bool,
    /// Run only these scenarios (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Only>,
    /// Leave out the Python contenders (Sling and dlt): neither installed nor run.
    #[arg(long)]
    skip_python: bool,
    /// Rows of the memory-at-scale phase that ends a full run (not --only, not --smoke, the
    /// narrow table included): the narrow full refresh again, dpone and the COPY pipe only,
    /// for their peak RSS; it runs when above --rows, 0 turns it off.
    #[arg(long, default_value_t = DEFAULT_SCALE_ROWS)]
    scale_rows: u64,
}

impl Options {
    /// `cargo xtask bench --smoke`.
    pub fn smoke() -> Self {
        Options {
            rows: None,
            runs: None,
            table: Tables::Both,
            smoke: true,
            install: false,
            only: Vec::new(),
            skip_python: false,
            scale_rows: 0,
        }
    }

    fn wants(&self, scenarios: Only) -> bool {
        self.only.is_empty() || self.only.contains(&scenarios)
    }
}

/// The folders under `target/bench`.
#[derive(Debug)]
pub struct Dirs {
    base: PathBuf,
    /// Manifests, run reports, contender homes.
    work: PathBuf,
    /// One log (and one GNU time output) per run.
    logs: PathBuf,
    venv: PathBuf,
    sling_home: PathBuf,
    dlt_pipelines: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> Result<Self> {
        let base = build::target_dir(root).join("bench");
        let work = base.join("work");
        let dirs = Dirs {
            logs: base.join("logs"),
            venv: base.join("venv"),
            sling_home: work.join("sling-home"),
            dlt_pipelines: work.join("dlt-pipelines"),
            work,
            base,
        };
        // Logs and work files of an earlier run would only mislead.
        for dir in [&dirs.work, &dirs.logs] {
            if dir.exists() {
                fs::remove_dir_all(dir)
                    .with_context(|| format!("could not remove {}", dir.display()))?;
            }
        }
        for dir in [&dirs.logs, &dirs.sling_home, &dirs.dlt_pipelines] {
            fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        Ok(dirs)
    }

    fn log(&self, run_name: &str) -> PathBuf {
        self.logs.join(format!("{run_name}.log"))
    }

    fn rss(&self, run_name: &str) -> PathBuf {
        self.logs.join(format!("{run_name}.rss"))
    }
}

/// psql against the private cluster.
#[derive(Debug)]
pub struct Server {
    pub psql: PathBuf,
    user: String,
    host_port: String,
}

impl Server {
    fn new(pg: &Postgres) -> Result<Self> {
        let bin = services::find_bin_dir().context("no PostgreSQL binaries found")?;
        // `postgres://user@host:port/postgres`
        let url = pg.url();
        let authority = url
            .strip_prefix("postgres://")
            .and_then(|rest| rest.split('/').next())
            .with_context(|| format!("unexpected cluster URL {url}"))?;
        let (user, host_port) = authority
            .split_once('@')
            .with_context(|| format!("no user in the cluster URL {url}"))?;
        Ok(Server {
            psql: bin.join("psql"),
            user: user.to_owned(),
            host_port: host_port.to_owned(),
        })
    }

    pub fn url(&self, db: &str) -> String {
        self.url_with(db, "postgres", None)
    }

    pub fn url_with(&self, db: &str, scheme: &str, password: Option<&str>) -> String {
        let password = password.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{scheme}://{}{password}@{}/{db}", self.user, self.host_port)
    }

    /// Quiet, unaligned, stop at the first error, no ~/.psqlrc.
    pub fn psql_args(&self, db: &str) -> Vec<String> {
        ["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d"]
            .into_iter()
            .map(str::to_owned)
            .chain([self.url(db)])
            .collect()
    }

    fn psql(&self, db: &str) -> Command {
        let mut cmd = Command::new(&self.psql);
        // Checksums render timestamps as text: the same zone on both sides.
        cmd.args(self.psql_args(db)).env("PGTZ", "UTC");
        cmd
    }

    /// Run SQL (several statements run in one transaction) and return the trimmed output.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        Ok(output(self.psql(db).arg("-c").arg(sql))?.trim().to_owned())
    }

    /// The size of `query`'s result as binary COPY: the bytes a load moves.
    fn copy_bytes(&self, db: &str, query: &str) -> Result<u64> {
        let mut child = self
            .psql(db)
            .arg("-c")
            .arg(format!("COPY ({query}) TO STDOUT (FORMAT binary)"))
            .stdout(Stdio::piped())
            .spawn()
            .context("could not start psql")?;
        let mut stdout = child.stdout.take().context("no stdout on psql")?;
        let bytes = io::copy(&mut stdout, &mut io::sink()).context("could not read the COPY")?;
        ensure!(child.wait()?.success(), "psql failed to COPY `{query}`");
        Ok(bytes)
    }
}

/// Everything a contender run needs.
#[derive(Debug)]
pub struct Lab {
    pub server: Server,
    pub dirs: Dirs,
    pub host: PathBuf,
    components: PathBuf,
    pub tools: Tools,
    rows: u64,
    /// The private ClickHouse server.
    pub clickhouse: Clickhouse,
    /// clickhouse-client, the ClickHouse scenario's limit, or why it cannot run.
    pub clickhouse_client: Result<PathBuf, String>,
    /// The private Kafka broker.
    pub kafka: Kafka,
    /// The raw librdkafka client, the Kafka scenario's limit.
    pub kafka_client: PathBuf,
    /// The BigQuery emulator.
    pub bigquery: Bigquery,
}

impl Lab {
    pub fn dpone_env(&self, cmd: &mut Command) {
        cmd.env("DPONE_COMPONENTS_DIR", &self.components)
            .env("DPONE_HOME", self.dirs.work.join("dpone-home"))
            .current_dir(&self.dirs.work);
    }
}

/// What the scenarios need to know about a generated source table.
#[derive(Debug)]
struct Source {
    rows: u64,
    checksum: String,
    copy_bytes: u64,
}

pub fn run(root: &Path, options: &Options) -> Result<()> {
    let rows = options.rows.unwrap_or(if options.smoke {
        SMOKE_ROWS
    } else {
        DEFAULT_ROWS
    });
    let runs = options.runs.unwrap_or(if options.smoke {
        SMOKE_RUNS
    } else {
        DEFAULT_RUNS
    });
    ensure!(rows >= MIN_ROWS, "--rows must be at least {MIN_ROWS}");
    ensure!(runs >= 1, "--runs must be at least 1");
    let tables = match options.table {
        Tables::Narrow => vec![Table::narrow()],
        Tables::Wide => vec![Table::wide()],
        Tables::Both => vec![Table::narrow(), Table::wide()],
    };

    // Times only mean something in release; the smoke run checks the harness, so it takes
    // the debug build `cargo xtask test` has just made instead of compiling release too.
    let profile = if options.smoke {
        Profile::Debug
    } else {
        Profile::Release
    };
    build::build_all(root, profile)?;
    ensure_gnu_time()?;

    let pg = Postgres::new(root)?;
    // Stop the cluster at the end only if this run started it.
    let _stop = if pg.print_status()? {
        None
    } else {
        let stop = StopOnDrop(pg.clone());
        pg.start()?;
        Some(stop)
    };

    let ch = Clickhouse::new(root)?;
    let _stop_ch = if !options.wants(Only::Clickhouse) || ch.print_status() {
        None
    } else {
        let stop = StopOnDrop(ch.clone());
        ch.start()?;
        Some(stop)
    };
    let kafka = Kafka::new(root)?;
    let _stop_kafka = if !options.wants(Only::Kafka) || kafka.print_status() {
        None
    } else {
        let stop = StopOnDrop(kafka.clone());
        kafka.start()?;
        Some(stop)
    };
    let bigquery = Bigquery::new(root)?;
    let _stop_bigquery = if !options.wants(Only::Bigquery) || bigquery.print_status() {
        None
    } else {
        let stop = StopOnDrop(bigquery.clone());
        bigquery.start()?;
        Some(stop)
    };

    let dirs = Dirs::new(root)?;
    // A smoke run installs no contender unless told to: it must not depend on the network.
    let install = !options.smoke || options.install;
    let policy = if options.skip_python {
        InstallPolicy::Skip
    } else if install {
        InstallPolicy::Install
    } else {
        InstallPolicy::UseInstalled
    };
    let tools = python::prepare(root, &dirs, policy);
    let clickhouse_client = if !options.wants(Only::Clickhouse) {
        Err("the ClickHouse scenario does not run".to_owned())
    } else if install {
        ch.client().map_err(|err| format!("{err:#}"))
    } else {
        ch.installed_client()
            .ok_or_else(|| "not installed (smoke mode installs nothing; add --install)".to_owned())
    };
    let (host, components) = snapshot_dpone(root, &dirs, profile)?;
    let kafka_client = if options.wants(Only::Kafka) {
        build::build_example(root, "kafka_raw_client", profile)?
    } else {
        PathBuf::new()
    };
    let lab = Lab {
        server: Server::new(&pg)?,
        dirs,
        host,
        components,
        tools,
        rows,
        clickhouse: ch,
        clickhouse_client,
        kafka,
        kafka_client,
        bigquery,
    };
    let native_insert = options
        .wants(Only::Clickhouse)
        .then_some(Contender::NativeInsert);
    for contender in Contender::ALL.into_iter().chain(native_insert) {
        if let Some(why) = contender.unavailable(&lab) {
            println!("{}: unavailable: {why}", contender.label(&lab));
        }
    }
    create_databases(&lab)?;
    warm_component_cache(&lab)?;

    let mut results = Vec::new();
    for table in &tables {
        if !options.wants(Only::Pg) && !options.wants(Only::Clickhouse) {
            break;
        }
        let source = generate(&lab, table)?;
        if options.wants(Only::Pg) {
            let logs = format!("{}-full", table.name);
            results.push(full_refresh(
                &lab,
                table,
                &source,
                runs,
                &Contender::ALL,
                &logs,
            )?);
            results.push(merge(&lab, table, runs)?);
        }
        if options.wants(Only::Clickhouse) {
            results.push(if table.name == "wide" {
                ScenarioResult::skipped(Scenario::ClickHouse, table, CLICKHOUSE_WIDE_SKIPPED)
            } else {
                clickhouse(&lab, table, runs)?
            });
        }
    }
    if options.wants(Only::Rest) {
        results.push(rest::scenario(&lab, runs)?);
    }
    if options.wants(Only::Kafka) {
        results.push(kafka::scenario(&lab, runs)?);
    }
    if options.wants(Only::Bigquery) {
        results.push(bigquery::scenario(&lab, runs)?);
    }
    // Never in a smoke run: a server in the environment is the user's, not the harness's.
    if options.wants(Only::Mssql) && !options.smoke {
        results.extend(mssql::scenarios(&lab, runs)?);
    }

    let startup = if options.wants(Only::Startup) {
        startup::measure(&lab)?
    } else {
        Vec::new()
    };
    // Last, so that it disturbs none of the tables the other scenarios use; only in a full run
    // with the narrow table, whose figures it is compared with.
    let wants_scale = !options.smoke
        && options.only.is_empty()
        && options.table != Tables::Wide
        && options.scale_rows > 0;
    let scale = if !wants_scale {
        Vec::new()
    } else if options.scale_rows <= rows {
        println!(
            "memory at scale: skipped, --scale-rows {} is not above --rows {rows}",
            options.scale_rows
        );
        Vec::new()
    } else {
        vec![memory_at_scale(&lab, options.scale_rows)?]
    };

    let machine = Machine::collect(root, &lab, rows, runs)?;
    println!();
    print!("{}", report::console(&machine, &results, &scale));
    print!("{}", startup::console(&startup));
    let json_path = lab.dirs.base.join(if options.smoke {
        "smoke-results.json"
    } else {
        "results.json"
    });
    fs::write(
        &json_path,
        serde_json::to_string_pretty(&{
            let mut json = report::json(&lab, &machine, &results, &scale);
            json["startup"] = startup::json(&startup);
            json
        })?,
    )
    .with_context(|| format!("could not write {}", json_path.display()))?;
    println!("results: {}", json_path.display());
    // A run of some scenarios leaves the page of the last full run as it was.
    if !options.smoke && options.only.is_empty() {
        let docs = root.join(DOCS);
        let page =
            report::markdown(&lab, &machine, &results, &scale) + &startup::markdown(&startup);
        fs::write(&docs, page).with_context(|| format!("could not write {}", docs.display()))?;
        println!("table: {}", docs.display());
    }

    let dpone_failures = report::dpone_failures(results.iter().chain(&scale));
    if !dpone_failures.is_empty() {
        bail!(
            "dpone's result did not count:\n  {}",
            dpone_failures.join("\n  ")
        );
    }
    Ok(())
}

/// Copy the host and the components into the work folder, so every run of this benchmark
/// uses the same build even if `target/` is rebuilt meanwhile.
fn snapshot_dpone(root: &Path, dirs: &Dirs, profile: Profile) -> Result<(PathBuf, PathBuf)> {
    let host = dirs.work.join("dpone-host");
    let built = build::host_binary(root, profile);
    fs::copy(&built, &host).with_context(|| format!("could not copy {}", built.display()))?;
    let components = dirs.work.join("strategies");
    fs::create_dir_all(&components)
        .with_context(|| format!("could not create {}", components.display()))?;
    let built = build::components_dir(root);
    for entry in
        fs::read_dir(&built).with_context(|| format!("could not list {}", built.display()))?
    {
        let path = entry?.path();
        if let Some(name) = path
            .file_name()
            .filter(|_| path.extension().is_some_and(|e| e == "wasm"))
        {
            fs::copy(&path, components.join(name))
                .with_context(|| format!("could not copy {}", path.display()))?;
        }
    }
    Ok((host, components))
}

/// GNU time measures peak RSS; Debian ships it as the package `time`.
fn ensure_gnu_time() -> Result<()> {
    if Path::new(GNU_TIME).is_file() {
        return Ok(());
    }
    services::apt_install(services::running_as_root()?, "time")
}

/// Fresh source and target databases, and the target schemas that dpone's incremental_merge
/// and Sling expect to exist.
fn create_databases(lab: &Lab) -> Result<()> {
    for db in [SRC_DB, DST_DB] {
        lab.server.sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        )?;
        lab.server
            .sql("postgres", &format!("CREATE DATABASE {db}"))?;
    }
    let schemas = [Contender::Dpone, Contender::Pipe, Contender::Sling]
        .map(|c| format!("CREATE SCHEMA {}", data::quote(c.schema())))
        .join("; ");
    lab.server.sql(DST_DB, &schemas)?;
    Ok(())
}

/// Compile both strategies into dpone's component cache before the first timed run, as on any
/// machine that has run a pipeline before (`validate` loads the component, connects nowhere).
fn warm_component_cache(lab: &Lab) -> Result<()> {
    let table = Table::narrow();
    for load in [Load::FullRefresh, Load::Merge] {
        let manifest = contenders::write_manifest(lab, &table, load, "bench_warmup")?;
        let mut cmd = Command::new(&lab.host);
        cmd.args(["validate", "--manifest"]).arg(&manifest);
        lab.dpone_env(&mut cmd);
        output(&mut cmd).context("dpone-host validate failed")?;
    }
    Ok(())
}

/// Generates `table` with `--rows` rows as the source of the scenarios.
fn generate(lab: &Lab, table: &Table) -> Result<Source> {
    generate_rows(lab, table, lab.rows)
}

/// Generates `table` with `rows` rows, replacing what the source database had of it.
fn generate_rows(lab: &Lab, table: &Table, rows: u64) -> Result<Source> {
    let qualified = source_table(table);
    println!(
        "generating {} ({} columns, {rows} rows) in {SRC_DB}",
        table.name,
        table.column_count(),
    );
    lab.server.sql(
        SRC_DB,
        &format!(
            "DROP TABLE IF EXISTS {qualified}; {}; {}",
            table.create_sql(&qualified),
            table.fill_sql(&qualified, rows)
        ),
    )?;
    vacuum(lab, SRC_DB, Some(&qualified))?;
    let source = Source {
        rows,
        checksum: lab.server.sql(SRC_DB, &table.checksum_sql(&qualified))?,
        copy_bytes: lab.server.copy_bytes(
            SRC_DB,
            &format!("SELECT {} FROM {qualified}", table.column_list()),
        )?,
    };
    println!(
        "  {} MB as binary COPY, checksum {}",
        source.copy_bytes / 1_000_000,
        source.checksum
    );
    Ok(source)
}

fn source_table(table: &Table) -> String {
    format!("public.{}", data::quote(table.name))
}

/// Settle the table (visibility map, hint bits, statistics) outside the timed runs, so no
/// run pays for the one before it.
fn vacuum(lab: &Lab, db: &str, table: Option<&str>) -> Result<()> {
    lab.server
        .sql(db, &format!("VACUUM (ANALYZE) {}", table.unwrap_or("")))?;
    Ok(())
}

/// Settle the target database and the machine before a timed run: VACUUM takes the dead rows
/// the last run left (else autovacuum may start on them during this one: it vacuumed the
/// pipe's merged target while dpone's next load ran), CHECKPOINT flushes dirty buffers, and
/// `sync` writes the kernel's dirty pages out (with `fsync = off` the CHECKPOINT only hands
/// them to the kernel, which could write them back, along with a Python contender's files,
/// during the next run; adding it did not change the wide full refresh's ratio, but no run
/// should pay for the last one's writes).
fn settle(lab: &Lab) -> Result<()> {
    vacuum(lab, DST_DB, None)?;
    lab.server.sql("postgres", "CHECKPOINT")?;
    crate::run_cmd(&mut Command::new("sync"))
}

/// `<rows> <sum of ids>` of `qualified` in `db`: what the scenarios that load the records
/// table elsewhere compare their targets with.
pub fn rows_and_id_sum(lab: &Lab, db: &str, qualified: &str) -> Result<String> {
    lab.server.sql(
        db,
        &format!("SELECT count(*) || ' ' || sum(id) FROM {qualified}"),
    )
}

/// The contenders in turn, starting one further along in each repetition, so none always
/// runs right after the same other one.
fn turn_order(rep: u32) -> Vec<Contender> {
    turns(&Contender::ALL, rep)
}

/// [`turn_order`] of some contenders.
fn turns(contenders: &[Contender], rep: u32) -> Vec<Contender> {
    let mut order = contenders.to_vec();
    order.rotate_left((rep as usize - 1) % contenders.len());
    order
}

/// The steady state of a scheduled full refresh: each of `contenders` first loads the table
/// once, untimed, so every timed run replaces an existing target (for dpone: its swap path,
/// staging created like the target, rather than the first run's create-and-reload). `logs`
/// begins the names of the runs' logs.
fn full_refresh(
    lab: &Lab,
    table: &Table,
    source: &Source,
    runs: u32,
    contenders: &[Contender],
    logs: &str,
) -> Result<ScenarioResult> {
    let mut result = ScenarioResult::with_contenders(
        Scenario::FullRefresh,
        table,
        lab,
        source.rows,
        source.copy_bytes,
        contenders,
    );
    let mut primed = Vec::new();
    for &contender in contenders {
        if contender.unavailable(lab).is_some() {
            continue;
        }
        let name = format!("{logs}-first-{}", contender.key());
        let first = contender
            .reset(lab, table)
            .and_then(|()| contender.load(lab, table, Load::FullRefresh, 0, &name));
        match first {
            Ok(_) => primed.push(contender),
            Err(err) => result.record(
                lab,
                contender,
                runs,
                RunRecord::new(1, Outcome::Failed(format!("first load: {err:#}")), None),
            ),
        }
    }
    vacuum(lab, DST_DB, None)?;
    for rep in 1..=runs {
        for contender in turns(contenders, rep) {
            if !primed.contains(&contender) {
                continue;
            }
            let name = format!("{logs}-r{rep}-{}", contender.key());
            let measured = settle(lab)
                .and_then(|()| contender.load(lab, table, Load::FullRefresh, rep, &name));
            let record = judge(lab, contender, table, rep, measured, &source.checksum);
            result.record(lab, contender, runs, record);
        }
    }
    Ok(result)
}

/// Per repetition: every contender loads the original table into an empty target (its own
/// first incremental run, so its cursor state is set), the source changes, every contender
/// merges the change (timed), the source changes back.
fn merge(lab: &Lab, table: &Table, runs: u32) -> Result<ScenarioResult> {
    let qualified = source_table(table);
    let moved = data::changed_rows(lab.rows) + data::new_rows(lab.rows);
    let mut result = ScenarioResult::new(Scenario::Merge, table, lab, moved, 0);
    let mut expected = None;
    for rep in 1..=runs {
        let mut loaded = Vec::new();
        for contender in turn_order(rep) {
            if contender.unavailable(lab).is_some() {
                continue;
            }
            let name = format!("{}-merge-r{rep}-{}-initial", table.name, contender.key());
            // The pipe has no state: its first load is a plain full load.
            let first_load = match contender {
                Contender::Pipe => Load::FullRefresh,
                _ => Load::Merge,
            };
            let initial = contender
                .reset(lab, table)
                .and_then(|()| contender.load(lab, table, first_load, rep, &name));
            match initial {
                Ok(_) => loaded.push(contender),
                Err(err) => result.record(
                    lab,
                    contender,
                    runs,
                    RunRecord::new(rep, Outcome::Failed(format!("initial load: {err:#}")), None),
                ),
            }
        }

        lab.server
            .sql(SRC_DB, &table.change_sql(&qualified, lab.rows))?;
        vacuum(lab, SRC_DB, Some(&qualified))?;
        vacuum(lab, DST_DB, None)?;
        if expected.is_none() {
            expected = Some(lab.server.sql(SRC_DB, &table.checksum_sql(&qualified))?);
            result.bytes_moved = lab
                .server
                .copy_bytes(SRC_DB, &table.changed_rows_query(&qualified, lab.rows))?;
        }
        let expected = expected.as_deref().unwrap_or_default();

        for contender in loaded {
            let name = format!("{}-merge-r{rep}-{}", table.name, contender.key());
            let measured =
                settle(lab).and_then(|()| contender.load(lab, table, Load::Merge, rep, &name));
            let record = judge(lab, contender, table, rep, measured, expected);
            result.record(lab, contender, runs, record);
        }

        lab.server
            .sql(SRC_DB, &table.revert_sql(&qualified, lab.rows))?;
        vacuum(lab, SRC_DB, Some(&qualified))?;
    }
    Ok(result)
}

/// PostgreSQL -> ClickHouse full refresh. The limit is the server's own native insert of the
/// same rows: dpone's first load read back once, untimed, into a file in ClickHouse's `Native`
/// format (`RowBinary` on a server that refuses it), which each timed run inserts with
/// clickhouse-client. The CSV pipe is ClickHouse's HTTP text insert (`psql COPY ... CSV | curl
/// INSERT ... FORMAT CSV`), Sling loads with `--mode full-refresh`. Each contender loads once
/// untimed, so the timed runs replace an existing table; dpone loads first, since the native
/// insert's and the pipe's tables are created like its table (so without it neither runs).
/// A run counts when the target has the source's row count, sum of ids and latest
/// `updated_at`. Beside them, PostgreSQL's binary COPY of the rows alone, timed as often.
fn clickhouse(lab: &Lab, table: &Table, runs: u32) -> Result<ScenarioResult> {
    let qualified = source_table(table);
    let select = format!("SELECT {} FROM {qualified}", table.column_list());
    let bytes = lab.server.copy_bytes(SRC_DB, &select)?;
    // The floor under every contender that reads PostgreSQL (the native insert does not):
    // the limit is met only if dpone's whole load takes little longer than this read.
    let mut reads = Vec::new();
    for _ in 0..runs {
        let started = std::time::Instant::now();
        lab.server.copy_bytes(SRC_DB, &select)?;
        reads.push(started.elapsed().as_secs_f64());
    }
    reads.sort_by(f64::total_cmp);
    let source_read_seconds = reads.get(reads.len() / 2).copied();
    let mut result = ScenarioResult::with_contenders(
        Scenario::ClickHouse,
        table,
        lab,
        lab.rows,
        bytes,
        &Contender::CLICKHOUSE,
    );
    // dlt's ClickHouse destination needs its `clickhouse` extra, which the bench venv does not
    // install.
    result.exclude(Contender::Dlt, "not benchmarked against ClickHouse");
    result.relabel(Contender::Pipe, "CSV pipe (psql COPY | curl INSERT)");
    result.source_read_seconds = source_read_seconds;
    contenders::clickhouse_sql(lab, &format!("DROP DATABASE IF EXISTS {CH_DB}"))?;
    contenders::clickhouse_sql(lab, &format!("CREATE DATABASE {CH_DB}"))?;
    let expected = lab.server.sql(
        SRC_DB,
        &format!(
            "SELECT count(*) || ' ' || sum(id) || ' ' || to_char(max(updated_at), 'YYYY-MM-DD HH24:MI:SS') FROM {qualified}"
        ),
    )?;
    let mut primed = Vec::new();
    let mut native_rows = None;
    for contender in Contender::CLICKHOUSE {
        if !result.takes_part(contender) {
            continue;
        }
        let name = format!("{}-clickhouse-first-{}", table.name, contender.key());
        let first = match contender {
            Contender::NativeInsert => {
                contenders::prime_native_insert(lab, table, &name).map(|rows| {
                    result.relabel(contender, &rows.label());
                    native_rows = Some(rows);
                })
            }
            _ => contender.load_clickhouse(lab, table, None, &name).map(drop),
        };
        match first {
            Ok(()) => primed.push(contender),
            Err(err) => {
                let failed = Outcome::Failed(format!("first load: {err:#}"));
                result.record(lab, contender, runs, RunRecord::new(1, failed, None));
                if contender == Contender::Dpone {
                    break;
                }
            }
        }
    }
    for rep in 1..=runs {
        for contender in turns(&Contender::CLICKHOUSE, rep) {
            if !primed.contains(&contender) {
                continue;
            }
            let name = format!("{}-clickhouse-r{rep}-{}", table.name, contender.key());
            let measured = contender.load_clickhouse(lab, table, native_rows.as_ref(), &name);
            let target = format!("{CH_DB}.{}", contender.clickhouse_table(table));
            // toDateTime: on a server that has DateTime64, Sling keeps `updated_at` with a
            // fraction of a second (always 0 here: the source's values are whole seconds).
            let check = format!(
                "SELECT concat(toString(count()), ' ', toString(sum(id)), ' ', toString(toDateTime(max(updated_at)))) FROM {target}"
            );
            let record = gate(
                rep,
                measured,
                "rows, sum of ids, latest updated_at",
                &expected,
                || contenders::clickhouse_sql(lab, &check),
            );
            result.record(lab, contender, runs, record);
        }
    }
    Ok(result)
}

/// The correctness gate: a run counts only if the target has the source's row count and
/// checksum over the source's columns.
fn judge(
    lab: &Lab,
    contender: Contender,
    table: &Table,
    rep: u32,
    measured: Result<contenders::Measured>,
    expected: &str,
) -> RunRecord {
    gate(rep, measured, "rows, checksum", expected, || {
        lab.server
            .sql(DST_DB, &table.checksum_sql(&contender.target(table)))
    })
}

/// The record of a run: failed if it failed, else valid only if `check`, run after it, finds
/// `expected` in the target (`what` names what it compares).
fn gate(
    rep: u32,
    measured: Result<contenders::Measured>,
    what: &str,
    expected: &str,
    check: impl FnOnce() -> Result<String>,
) -> RunRecord {
    let measured = match measured {
        Ok(measured) => measured,
        Err(err) => return RunRecord::new(rep, Outcome::Failed(format!("{err:#}")), None),
    };
    let outcome = match check() {
        Ok(actual) if actual == expected => Outcome::Valid,
        Ok(actual) => Outcome::Invalid(format!(
            "target has ({what}) {actual}, the source {expected}"
        )),
        Err(err) => Outcome::Invalid(format!("could not check the target: {err:#}")),
    };
    RunRecord::new(rep, outcome, Some(measured))
}

/// The memory-at-scale phase: the narrow table generated again with `rows` rows, then its full
/// refresh as in that scenario (a load untimed, then one timed run replacing the target) by
/// dpone and the COPY pipe, for their peak RSS at that size. The source and both targets are
/// dropped afterwards, whatever happened: at 10M rows they take gigabytes of disk.
fn memory_at_scale(lab: &Lab, rows: u64) -> Result<ScenarioResult> {
    let table = Table::narrow();
    let contenders = [Contender::Dpone, Contender::Pipe];
    println!("memory at scale: {rows} rows");
    let result = generate_rows(lab, &table, rows).and_then(|source| {
        let logs = format!("{}-scale", table.name);
        full_refresh(lab, &table, &source, 1, &contenders, &logs)
    });
    let dropped = contenders
        .iter()
        .try_for_each(|contender| contender.reset(lab, &table))
        .and_then(|()| {
            let source = source_table(&table);
            lab.server
                .sql(SRC_DB, &format!("DROP TABLE IF EXISTS {source}"))
        });
    let result = result?;
    dropped.context("could not drop the tables of the memory-at-scale phase")?;
    Ok(result)
}

/// Run a command under `git` in the repository; None if git is missing or fails.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    output(Command::new("git").args(args).current_dir(root))
        .ok()
        .map(|out| out.trim().to_owned())
}
