//! The contenders and how each one loads a table: dpone, the raw binary COPY pipe (the
//! physical limit), Sling and dlt; against ClickHouse also the server's own native insert (the
//! limit there). Every run is one child process tree under GNU time, so wall time and peak RSS
//! are measured the same way for all of them.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};

use super::data::{Table, quote};
use super::{CH_DB, DST_DB, Lab, SRC_DB};

/// GNU time: `%M` is the peak RSS (KiB) of the largest process of the tree it waits for.
pub const GNU_TIME: &str = "/usr/bin/time";
/// The password dlt's postgres destination insists on; trust auth ignores it.
const DLT_PASSWORD: &str = "bench";
const LOG_TAIL_LINES: usize = 6;
/// The native insert's formats, in the order it tries them: the server's own block format,
/// then its row format for a server that refuses the first.
const INSERT_FORMATS: [&str; 2] = ["Native", "RowBinary"];
/// Why the native insert has no PostgreSQL target to reset or load.
const NATIVE_INSERT_ONLY: &str = "the native insert is ClickHouse's own and loads only ClickHouse";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    Dpone,
    Pipe,
    Sling,
    Dlt,
    /// ClickHouse's own client inserting the rows from a file in the server's binary format:
    /// the limit of the ClickHouse scenario, and in no other.
    NativeInsert,
}

/// What a load must do to the contender's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// The target becomes the source (dpone full_refresh, Sling full-refresh, dlt replace).
    FullRefresh,
    /// Upsert by `id` the rows past the `updated_at` cursor (dpone incremental_merge, Sling
    /// incremental, dlt merge); on an empty target, the first load of the merge scenario.
    Merge,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall_seconds: f64,
    pub peak_rss_kib: u64,
    /// dpone's own run report; None for the other contenders.
    pub dpone: Option<DponeReport>,
}

/// The fields of dpone's `--report-json` the benchmark uses.
#[derive(Debug, Clone)]
pub struct DponeReport {
    pub wall_seconds: f64,
    pub wasm_load_seconds: f64,
    pub wasm_guest_seconds: f64,
    pub wasm_share: f64,
    pub rows_read: u64,
    pub rows_written: u64,
}

impl Contender {
    /// The contenders of the scenarios (the ClickHouse one excepted), in the order of the first
    /// repetition (later ones rotate it).
    pub const ALL: [Contender; 4] = [
        Contender::Dpone,
        Contender::Pipe,
        Contender::Sling,
        Contender::Dlt,
    ];

    /// The contenders of the ClickHouse scenario, likewise; dpone first, since the native
    /// insert's and the pipe's tables are created like its table.
    pub const CLICKHOUSE: [Contender; 5] = [
        Contender::Dpone,
        Contender::NativeInsert,
        Contender::Pipe,
        Contender::Sling,
        Contender::Dlt,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Contender::Dpone => "dpone",
            Contender::Pipe => "copy_pipe",
            Contender::Sling => "sling",
            Contender::Dlt => "dlt",
            Contender::NativeInsert => "clickhouse_native",
        }
    }

    /// The name in tables, with the version where there is one.
    pub fn label(self, lab: &Lab) -> String {
        match self {
            Contender::Dpone => "dpone".into(),
            Contender::Pipe => "COPY pipe (psql | psql)".into(),
            Contender::Sling => match &lab.tools.sling {
                Ok(sling) => format!("Sling {}", sling.version),
                Err(_) => "Sling".into(),
            },
            Contender::Dlt => match &lab.tools.dlt {
                Ok(dlt) => format!("dlt {} (pyarrow)", dlt.version),
                Err(_) => "dlt".into(),
            },
            Contender::NativeInsert => "ClickHouse native insert (clickhouse-client)".into(),
        }
    }

    /// Why this contender cannot run, if it cannot.
    pub fn unavailable(self, lab: &Lab) -> Option<String> {
        match self {
            Contender::Dpone | Contender::Pipe => None,
            Contender::Sling => lab.tools.sling.as_ref().err().cloned(),
            Contender::Dlt => lab.tools.dlt.as_ref().err().cloned(),
            Contender::NativeInsert => lab.clickhouse_client.as_ref().err().cloned(),
        }
    }

    /// Each contender writes into its own schema of the target database.
    pub fn schema(self) -> &'static str {
        match self {
            Contender::Dpone => "bench_dpone",
            Contender::Pipe => "bench_pipe",
            Contender::Sling => "bench_sling",
            Contender::Dlt => "bench_dlt",
            Contender::NativeInsert => "bench_native_insert",
        }
    }

    pub fn target(self, table: &Table) -> String {
        format!("{}.{}", quote(self.schema()), quote(table.name))
    }

    /// Drop the target and whatever state the contender keeps about it, so the next load
    /// starts from nothing. dpone's state needs no reset: every merge repetition uses its
    /// own pipeline name.
    pub fn reset(self, lab: &Lab, table: &Table) -> Result<()> {
        let server = &lab.server;
        match self {
            Contender::Dpone | Contender::Pipe => {
                server.sql(
                    DST_DB,
                    &format!("DROP TABLE IF EXISTS {}", self.target(table)),
                )?;
            }
            Contender::Sling => {
                let tmp = format!(
                    "{}.{}",
                    quote(self.schema()),
                    quote(&format!("{}_tmp", table.name))
                );
                server.sql(
                    DST_DB,
                    &format!("DROP TABLE IF EXISTS {}, {tmp}", self.target(table)),
                )?;
            }
            Contender::Dlt => {
                // dlt keeps its state in the dataset (and a staging dataset for merges) and in
                // its pipelines folder; it restores the former into the latter.
                server.sql(
                    DST_DB,
                    &format!(
                        "DROP SCHEMA IF EXISTS {0} CASCADE; DROP SCHEMA IF EXISTS {1} CASCADE",
                        quote(self.schema()),
                        quote(&format!("{}_staging", self.schema()))
                    ),
                )?;
                let pipeline_dir = lab.dirs.dlt_pipelines.join(dlt_pipeline_name(table));
                if pipeline_dir.exists() {
                    fs::remove_dir_all(&pipeline_dir)
                        .with_context(|| format!("could not remove {}", pipeline_dir.display()))?;
                }
            }
            Contender::NativeInsert => bail!(NATIVE_INSERT_ONLY),
        }
        Ok(())
    }

    /// Run one load of repetition `rep` and measure it. `run_name` names the logs.
    pub fn load(
        self,
        lab: &Lab,
        table: &Table,
        load: Load,
        rep: u32,
        run_name: &str,
    ) -> Result<Measured> {
        match self {
            Contender::Dpone => dpone(lab, table, load, rep, run_name),
            Contender::Pipe => pipe(lab, table, load, run_name),
            Contender::Sling => sling(lab, table, load, run_name),
            Contender::Dlt => dlt(lab, table, load, run_name),
            Contender::NativeInsert => bail!(NATIVE_INSERT_ONLY),
        }
    }
}

impl Contender {
    /// The contender's table in the ClickHouse database [`CH_DB`].
    pub fn clickhouse_table(self, table: &Table) -> String {
        format!("{}_{}", self.key(), table.name)
    }

    /// One full refresh of `table` into ClickHouse, measured. The native insert inserts
    /// `rows`, which [`prime_native_insert`] made; the other contenders read the source.
    pub fn load_clickhouse(
        self,
        lab: &Lab,
        table: &Table,
        rows: Option<&NativeRows>,
        run_name: &str,
    ) -> Result<Measured> {
        match self {
            Contender::Dpone => dpone_clickhouse(lab, table, run_name),
            Contender::Pipe => pipe_clickhouse(lab, table, run_name),
            Contender::Sling => sling_clickhouse(lab, table, run_name),
            Contender::NativeInsert => native_insert(
                lab,
                table,
                rows.context("the native insert has no rows: its first load did not succeed")?,
                run_name,
            ),
            Contender::Dlt => bail!("dlt is not benchmarked against ClickHouse"),
        }
    }
}

/// The native insert's input: the source's rows as a file in one of [`INSERT_FORMATS`], made
/// once, untimed, and removed when dropped (it is about as large as the binary COPY).
#[derive(Debug)]
pub struct NativeRows {
    path: PathBuf,
    format: &'static str,
}

impl NativeRows {
    /// The native insert's name in tables: the format it inserts, and why when not `Native`.
    pub fn label(&self) -> String {
        let [preferred, _] = INSERT_FORMATS;
        let format = if self.format == preferred {
            preferred.to_owned()
        } else {
            format!("{}: this server refused {preferred}", self.format)
        };
        format!("ClickHouse native insert (clickhouse-client, {format})")
    }
}

impl Drop for NativeRows {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Runs SQL on the private ClickHouse server (through curl) and returns the trimmed output.
pub fn clickhouse_sql(lab: &Lab, sql: &str) -> Result<String> {
    let out = crate::output(
        Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary"])
            .arg(sql)
            .arg(lab.clickhouse.endpoint()),
    )
    .with_context(|| format!("ClickHouse: {sql}"))?;
    Ok(out.trim().to_owned())
}

/// dpone full_refresh from PostgreSQL into ClickHouse (state in the target PostgreSQL
/// database, since ClickHouse cannot hold it).
fn dpone_clickhouse(lab: &Lab, table: &Table, run_name: &str) -> Result<Measured> {
    let pipeline = format!("bench_clickhouse_{}", table.name);
    let manifest = format!(
        "pipeline: {pipeline}\n\
         source: {{ kind: postgres, url: \"{source_url}\", table: public.{table} }}\n\
         sink:\n  \
           kind: clickhouse\n  \
           url: \"{sink_url}\"\n  \
           table: {CH_DB}.{target}\n  \
           strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: postgres, url: \"{state_url}\" }}\n",
        source_url = lab.server.url(SRC_DB),
        sink_url = lab.clickhouse.url(),
        state_url = lab.server.url(DST_DB),
        table = table.name,
        target = Contender::Dpone.clickhouse_table(table),
    );
    let path = lab.dirs.work.join(format!("{pipeline}.yaml"));
    fs::write(&path, manifest).with_context(|| format!("could not write {}", path.display()))?;
    run_dpone(lab, &path, run_name)
}

/// Replaces `contender`'s ClickHouse table with an empty one created like dpone's (so dpone's
/// first load must have run), outside the timed run; returns its qualified name.
fn fresh_clickhouse_table(lab: &Lab, contender: Contender, table: &Table) -> Result<String> {
    let target = format!("{CH_DB}.{}", contender.clickhouse_table(table));
    let like = format!("{CH_DB}.{}", Contender::Dpone.clickhouse_table(table));
    clickhouse_sql(lab, &format!("DROP TABLE IF EXISTS {target}"))?;
    clickhouse_sql(lab, &format!("CREATE TABLE {target} AS {like}"))?;
    Ok(target)
}

/// `psql -c "COPY (SELECT ...) TO STDOUT (FORMAT csv)" | curl --data-binary @- ".../?query=
/// INSERT INTO ... FORMAT CSV"`: ClickHouse's own text insert over HTTP, into a fresh table
/// created like dpone's. Booleans go as 0/1 and timestamps with a time zone as UTC text,
/// which CSV into `UInt8`/`DateTime` needs.
fn pipe_clickhouse(lab: &Lab, table: &Table, run_name: &str) -> Result<Measured> {
    let target = fresh_clickhouse_table(lab, Contender::Pipe, table)?;
    let copy_out = format!(
        "COPY (SELECT {} FROM public.{}) TO STDOUT (FORMAT csv)",
        table.clickhouse_csv_columns(),
        quote(table.name)
    );
    let query = format!("INSERT INTO {target} FORMAT CSV").replace(' ', "%20");
    let args = [
        "-sS",
        "--fail-with-body",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        "@-",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("{}?query={query}", lab.clickhouse.endpoint())])
    .collect::<Vec<_>>();
    piped(
        lab,
        run_name,
        Instant::now(),
        &copy_out,
        Path::new("/usr/bin/curl"),
        &args,
    )
}

/// The native insert's untimed first load: dpone's table (which its first load filled with
/// the source's rows, in the column types every contender's table here has) written by
/// clickhouse-client to a file in the first of [`INSERT_FORMATS`], then inserted once; if
/// either step fails, the same with the next format. Returns the rows every timed run
/// inserts, or each format's error.
pub fn prime_native_insert(lab: &Lab, table: &Table, run_name: &str) -> Result<NativeRows> {
    let source = format!("{CH_DB}.{}", Contender::Dpone.clickhouse_table(table));
    let mut refused = Vec::new();
    for format in INSERT_FORMATS {
        let rows = NativeRows {
            path: lab.dirs.work.join(format!(
                "clickhouse_{}.{}",
                table.name,
                format.to_lowercase()
            )),
            format,
        };
        let name = format!("{run_name}-{}", format.to_lowercase());
        let first =
            export_rows(lab, &source, &rows).and_then(|()| native_insert(lab, table, &rows, &name));
        match first {
            Ok(_) => return Ok(rows),
            Err(err) => {
                println!("ClickHouse native insert: {format} failed: {err:#}");
                refused.push(format!("{format}: {err:#}"));
            }
        }
    }
    bail!("{}", refused.join("; "))
}

/// `clickhouse-client --query "SELECT * FROM <source> FORMAT <format>" > <file>`.
fn export_rows(lab: &Lab, source: &str, rows: &NativeRows) -> Result<()> {
    let file = File::create(&rows.path)
        .with_context(|| format!("could not create {}", rows.path.display()))?;
    let mut cmd = Command::new(clickhouse_client(lab)?);
    cmd.args(clickhouse_client_args(lab))
        .arg("--query")
        .arg(format!("SELECT * FROM {source} FORMAT {}", rows.format))
        .stdout(file);
    crate::output(&mut cmd)
        .with_context(|| format!("could not export {source} as {}", rows.format))?;
    Ok(())
}

/// `clickhouse-client --query "INSERT INTO <target> FORMAT <format>" < <file>` over the native
/// protocol, into a fresh table created like dpone's: the server's own insert of the rows,
/// with no PostgreSQL read and no encoding. The client parses the file into blocks and
/// sends them, and its process is what is measured, as any contender's.
fn native_insert(lab: &Lab, table: &Table, rows: &NativeRows, run_name: &str) -> Result<Measured> {
    let target = fresh_clickhouse_table(lab, Contender::NativeInsert, table)?;
    let input = File::open(&rows.path)
        .with_context(|| format!("could not open {}", rows.path.display()))?;
    let rss = lab.dirs.rss(run_name);
    let mut cmd = measured(&clickhouse_client(lab)?, &rss);
    cmd.args(clickhouse_client_args(lab))
        .arg("--query")
        .arg(format!("INSERT INTO {target} FORMAT {}", rows.format));
    run_measured_with_input(&mut cmd, Stdio::from(input), &lab.dirs.log(run_name), &rss)
}

fn clickhouse_client(lab: &Lab) -> Result<PathBuf> {
    lab.clickhouse_client
        .clone()
        .map_err(|why| anyhow!("{why}"))
}

/// Points clickhouse-client at the private server's native port.
fn clickhouse_client_args(lab: &Lab) -> [String; 4] {
    [
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        lab.clickhouse.native_port().to_string(),
    ]
}

fn dpone(lab: &Lab, table: &Table, load: Load, rep: u32, run_name: &str) -> Result<Measured> {
    // One pipeline (so one set of state entries) per scenario and repetition: the initial
    // load and the timed merge of a repetition share it, the next repetition starts afresh.
    let scenario = match load {
        Load::FullRefresh => "full",
        Load::Merge => "merge",
    };
    let pipeline = format!("bench_{scenario}_{}_r{rep}", table.name);
    let manifest = write_manifest(lab, table, load, &pipeline)?;
    run_dpone(lab, &manifest, run_name)
}

/// `dpone-host run` of `manifest`, measured, with its run report.
pub fn run_dpone(lab: &Lab, manifest: &Path, run_name: &str) -> Result<Measured> {
    let report = lab.dirs.work.join(format!("{run_name}.report.json"));
    let mut cmd = measured(&lab.host, &lab.dirs.rss(run_name));
    cmd.arg("run")
        .arg("--manifest")
        .arg(manifest)
        .arg("--report-json")
        .arg(&report);
    lab.dpone_env(&mut cmd);
    let mut measured = run_measured(&mut cmd, &lab.dirs.log(run_name), &lab.dirs.rss(run_name))?;
    measured.dpone = Some(read_report(&report)?);
    Ok(measured)
}

/// The dpone manifest of one run: the full_refresh or incremental_merge strategy with the
/// state store colocated in the target database, as the docs recommend.
pub fn write_manifest(lab: &Lab, table: &Table, load: Load, pipeline: &str) -> Result<PathBuf> {
    let strategy = match load {
        Load::FullRefresh => "{ mode: full_refresh, unique_key: [id] }",
        Load::Merge => "{ mode: incremental_merge, unique_key: [id], cursor_column: updated_at }",
    };
    let sink_url = lab.server.url(DST_DB);
    let manifest = format!(
        "pipeline: {pipeline}\n\
         source: {{ kind: postgres, url: \"{source_url}\", table: public.{table} }}\n\
         sink:\n  \
           kind: postgres\n  \
           url: \"{sink_url}\"\n  \
           table: {schema}.{table}\n  \
           strategy: {strategy}\n\
         state: {{ kind: postgres, url: \"{sink_url}\" }}\n",
        source_url = lab.server.url(SRC_DB),
        table = table.name,
        schema = Contender::Dpone.schema(),
    );
    let path = lab.dirs.work.join(format!("{pipeline}.yaml"));
    fs::write(&path, manifest).with_context(|| format!("could not write {}", path.display()))?;
    Ok(path)
}

fn read_report(path: &Path) -> Result<DponeReport> {
    let text =
        fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    if json["outcome"] != "succeeded" {
        bail!(
            "dpone reported outcome {} ({})",
            json["outcome"],
            json["error"]
        );
    }
    let number = |field: &str| {
        json[field]
            .as_f64()
            .with_context(|| format!("{} has no numeric field `{field}`", path.display()))
    };
    Ok(DponeReport {
        wall_seconds: number("wall_seconds")?,
        wasm_load_seconds: number("wasm_load_seconds")?,
        wasm_guest_seconds: number("wasm_guest_seconds")?,
        wasm_share: number("wasm_share")?,
        rows_read: number("rows_read")? as u64,
        rows_written: number("rows_written")? as u64,
    })
}

/// `psql -c "COPY (SELECT ...) TO STDOUT (FORMAT binary)" | psql -1 -c ... -c "COPY ... FROM
/// STDIN (FORMAT binary)"`, two processes joined by a pipe, both under GNU time; the peak RSS
/// is the sum of both psql clients, which run side by side.
///
/// Full refresh: a fresh table with the source's DDL (primary key included, as dpone's
/// publishable staging has), filled in the transaction that creates it. Merge: the changed
/// rows (past the target's largest `updated_at`, read first) into a temporary table (never
/// WAL-logged), then DELETE USING + INSERT SELECT, all in one transaction.
fn pipe(lab: &Lab, table: &Table, load: Load, run_name: &str) -> Result<Measured> {
    let server = &lab.server;
    let target = Contender::Pipe.target(table);
    let source = format!("public.{}", quote(table.name));
    let started = Instant::now();
    let (filter, statements) = match load {
        Load::FullRefresh => (
            String::new(),
            vec![
                format!("DROP TABLE IF EXISTS {target}"),
                table.create_sql(&target),
                format!("COPY {target} FROM STDIN (FORMAT binary)"),
            ],
        ),
        Load::Merge => {
            let cursor = server.sql(DST_DB, &format!("SELECT max(updated_at) FROM {target}"))?;
            let filter = if cursor.is_empty() {
                String::new()
            } else {
                format!(" WHERE updated_at > '{cursor}'::timestamp")
            };
            let statements = vec![
                format!("CREATE TEMP TABLE bench_stage (LIKE {target}) ON COMMIT DROP"),
                "COPY bench_stage FROM STDIN (FORMAT binary)".to_owned(),
                format!("DELETE FROM {target} AS t USING bench_stage AS s WHERE t.id = s.id"),
                format!(
                    "INSERT INTO {target} ({0}) SELECT {0} FROM bench_stage",
                    table.column_list()
                ),
            ];
            (filter, statements)
        }
    };
    let copy_out = format!(
        "COPY (SELECT {} FROM {source}{filter}) TO STDOUT (FORMAT binary)",
        table.column_list()
    );

    let mut args = server.psql_args(DST_DB);
    args.push("--single-transaction".into());
    for statement in statements {
        args.extend(["-c".into(), statement]);
    }
    piped(lab, run_name, started, &copy_out, &server.psql, &args)
}

/// `psql -c <copy_out>` (a `COPY ... TO STDOUT`) piped into `program args`, both under GNU
/// time; the wall time counts from `started`, the peak RSS is the sum of both processes,
/// which run side by side.
fn piped(
    lab: &Lab,
    run_name: &str,
    started: Instant,
    copy_out: &str,
    program: &Path,
    args: &[String],
) -> Result<Measured> {
    let server = &lab.server;
    let out_name = format!("{run_name}-out");
    let in_name = format!("{run_name}-in");
    let mut producer = measured(&server.psql, &lab.dirs.rss(&out_name));
    producer
        .args(server.psql_args(SRC_DB))
        .arg("-c")
        .arg(copy_out)
        .stdout(Stdio::piped())
        .stderr(log_file(&lab.dirs.log(&out_name))?);
    let mut producer = producer
        .spawn()
        .context("could not start the producing psql")?;
    let copy_stream = producer
        .stdout
        .take()
        .context("no stdout on the producing psql")?;

    // The Command owns the pipe's read end until it is dropped; were it still alive while
    // a failed consumer leaves the producer writing into a full pipe, the wait below would
    // never return. So it lives only in this block.
    let consumed = {
        let mut consumer = measured(program, &lab.dirs.rss(&in_name));
        let in_log = log_file(&lab.dirs.log(&in_name))?;
        consumer
            .args(args)
            .stdin(Stdio::from(copy_stream))
            .stdout(in_log.try_clone()?)
            .stderr(in_log);
        consumer
            .spawn()
            .with_context(|| format!("could not start {}", program.display()))
    };
    let consumed = consumed.and_then(|mut child| Ok(child.wait()?));
    // Wait for the producer whatever happened to the consumer, so no child is left behind.
    let produced = producer.wait();
    let wall_seconds = started.elapsed().as_secs_f64();

    check_status(produced?, &lab.dirs.log(&out_name))?;
    check_status(consumed?, &lab.dirs.log(&in_name))?;
    Ok(Measured {
        wall_seconds,
        peak_rss_kib: read_rss(&lab.dirs.rss(&out_name))? + read_rss(&lab.dirs.rss(&in_name))?,
        dpone: None,
    })
}

fn sling(lab: &Lab, table: &Table, load: Load, run_name: &str) -> Result<Measured> {
    let target = format!("{}.{}", Contender::Sling.schema(), table.name);
    run_sling(
        lab,
        table,
        load,
        &sling_postgres_url(lab, DST_DB),
        &target,
        run_name,
    )
}

fn sling_postgres_url(lab: &Lab, db: &str) -> String {
    format!("{}?sslmode=disable", lab.server.url(db))
}

/// Sling `--mode full-refresh` into its table of the ClickHouse database [`CH_DB`], over the
/// native protocol (Sling's default for ClickHouse).
fn sling_clickhouse(lab: &Lab, table: &Table, run_name: &str) -> Result<Measured> {
    let target = format!("{CH_DB}.{}", Contender::Sling.clickhouse_table(table));
    let target_url = lab.clickhouse.native_url(CH_DB);
    run_sling(
        lab,
        table,
        Load::FullRefresh,
        &target_url,
        &target,
        run_name,
    )
}

/// `sling run` of `public.<table>` of the source database into `target` (`schema.table`) of
/// the connection `target_url`, measured.
fn run_sling(
    lab: &Lab,
    table: &Table,
    load: Load,
    target_url: &str,
    target: &str,
    run_name: &str,
) -> Result<Measured> {
    let sling = lab.tools.sling.as_ref().map_err(|why| anyhow!("{why}"))?;
    let mut cmd = measured(&sling.wrapper, &lab.dirs.rss(run_name));
    cmd.args(["run", "--src-conn", "BENCH_SRC", "--src-stream"])
        .arg(format!("public.{}", table.name))
        .args(["--tgt-conn", "BENCH_DST", "--tgt-object", target]);
    match load {
        Load::FullRefresh => cmd.args(["--mode", "full-refresh"]),
        Load::Merge => cmd.args([
            "--mode",
            "incremental",
            "--primary-key",
            "id",
            "--update-key",
            "updated_at",
        ]),
    };
    cmd.env("BENCH_SRC", sling_postgres_url(lab, SRC_DB))
        .env("BENCH_DST", target_url)
        .env("SLING_BINARY", &sling.binary)
        .env("SLING_HOME_DIR", &lab.dirs.sling_home)
        .env("SLING_DISABLE_TELEMETRY", "true");
    run_measured(&mut cmd, &lab.dirs.log(run_name), &lab.dirs.rss(run_name))
}

fn dlt(lab: &Lab, table: &Table, load: Load, run_name: &str) -> Result<Measured> {
    let dlt = lab.tools.dlt.as_ref().map_err(|why| anyhow!("{why}"))?;
    let mode = match load {
        Load::FullRefresh => "replace",
        Load::Merge => "merge",
    };
    let mut cmd = measured(&dlt.python, &lab.dirs.rss(run_name));
    cmd.arg(&dlt.script)
        // SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql:// URL.
        .arg(lab.server.url_with(SRC_DB, "postgresql+psycopg2", None))
        .arg(table.name)
        .arg(
            lab.server
                .url_with(DST_DB, "postgresql", Some(DLT_PASSWORD)),
        )
        .arg(Contender::Dlt.schema())
        .arg(&lab.dirs.dlt_pipelines)
        .arg(mode)
        .env("RUNTIME__DLTHUB_TELEMETRY", "false")
        .env("DLT_DATA_DIR", &lab.dirs.dlt_pipelines);
    run_measured(&mut cmd, &lab.dirs.log(run_name), &lab.dirs.rss(run_name))
}

fn dlt_pipeline_name(table: &Table) -> String {
    // Must match `pipeline_name` in bench_dlt.py.
    format!("bench_{}", table.name)
}

/// `program` under GNU time, which writes the peak RSS to `rss`.
pub fn measured(program: &Path, rss: &Path) -> Command {
    let mut cmd = Command::new(GNU_TIME);
    cmd.args(["-f", "%M", "-o"]).arg(rss).arg(program);
    cmd
}

/// Run with no input and stdout and stderr in `log`; fail with the log's last lines.
pub fn run_measured(cmd: &mut Command, log: &Path, rss: &Path) -> Result<Measured> {
    run_measured_with_input(cmd, Stdio::null(), log, rss)
}

/// [`run_measured`] with `stdin` as the command's input.
fn run_measured_with_input(
    cmd: &mut Command,
    stdin: Stdio,
    log: &Path,
    rss: &Path,
) -> Result<Measured> {
    let file = log_file(log)?;
    cmd.stdin(stdin).stdout(file.try_clone()?).stderr(file);
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    let wall_seconds = started.elapsed().as_secs_f64();
    check_status(status, log)?;
    Ok(Measured {
        wall_seconds,
        peak_rss_kib: read_rss(rss)?,
        dpone: None,
    })
}

fn log_file(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("could not create {}", path.display()))
}

fn check_status(status: ExitStatus, log: &Path) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    bail!("{status}: {} (log {})", log_tail(log), log.display())
}

/// The last lines of a log, on one line, without colour codes.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" | ");
    strip_ansi(&tail)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip a CSI sequence: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// GNU time's `-o` file: a "Command exited with non-zero status" line may precede the number.
fn read_rss(path: &Path) -> Result<u64> {
    let text =
        fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    text.lines()
        .rev()
        .find_map(|line| line.trim().parse().ok())
        .with_context(|| format!("no peak RSS in {}: {text:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_removed() {
        assert_eq!(
            strip_ansi("\x1b[90m11:38PM\x1b[0m \x1b[32mINF\x1b[0m done"),
            "11:38PM INF done"
        );
    }
}
