//! `dpone-host`: the command line.
//!
//! Exit codes: 0 success; 1 `matrix run` finished with failed cases; 2 config error or
//! unsupported request (nothing touched); 3 source error; 4 sink error or key violation;
//! 5 state store error; 6 sandbox violation or `limits` budget exceeded by the strategy
//! component (including the `limits.wall_seconds` deadline); 70 internal error; 130 / 143
//! stopped by SIGINT / SIGTERM (after rolling back and dropping staging).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dpone_host::backfill::{self, Start};
use dpone_host::connectors;
use dpone_host::error::{Error, Result};
use dpone_host::manifest::Manifest;
use dpone_host::matrix;
use dpone_host::runner::{self, RunOptions};
use dpone_host::runtime::engine::{Needs, Runtime};
use dpone_host::runtime::report::RunReport;
use dpone_host::runtime::sandbox::WasiMode;

#[derive(Parser, Debug)]
#[command(
    name = "dpone-host",
    version,
    about = "Moves tables from a source to a sink with a load strategy component."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct Target {
    /// The pipeline manifest (YAML).
    #[arg(long, short)]
    manifest: PathBuf,
    /// A strategy component to use instead of the manifest's `sink.strategy.mode`.
    #[arg(long)]
    strategy: Option<PathBuf>,
    /// Where built-in strategies (`<mode>.wasm`) live [default: $DPONE_COMPONENTS_DIR or
    /// <dpone-host dir>/../strategies].
    #[arg(long)]
    components_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline once.
    Run {
        #[command(flatten)]
        target: Target,
        /// Write the run report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
    },
    /// Dry run: read metadata, print the steps and SQL the run would issue, touch nothing.
    Plan {
        #[command(flatten)]
        target: Target,
    },
    /// Check the manifest and the strategy's options without connecting anywhere.
    Validate {
        #[command(flatten)]
        target: Target,
    },
    /// Strategy components.
    Strategy {
        #[command(subcommand)]
        command: StrategyCommand,
    },
    /// Pipeline state.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Backfill campaigns of a chunked strategy (`sink.strategy.mode: backfill`).
    Backfill {
        #[command(subcommand)]
        command: BackfillCommand,
    },
    /// Change feeds of `cdc` pipelines.
    Cdc {
        #[command(subcommand)]
        command: CdcCommand,
    },
    /// The integration matrix: 25 source -> sink pairs, 200 cases (docs/integration-matrix.md).
    Matrix {
        #[command(subcommand)]
        command: MatrixCommand,
    },
}

#[derive(clap::Args, Debug)]
struct MatrixFilters {
    /// Case ids, comma-separated (`*` for all) [env: DPONE_MATRIX_CASE_ID].
    #[arg(long = "case")]
    case_id: Option<String>,
    /// Sources, comma-separated [env: DPONE_MATRIX_SOURCE_FILTER].
    #[arg(long)]
    source: Option<String>,
    /// Sinks, comma-separated [env: DPONE_MATRIX_SINK_FILTER].
    #[arg(long)]
    sink: Option<String>,
    /// Strategies, comma-separated [env: DPONE_MATRIX_STRATEGY_FILTER].
    #[arg(long)]
    strategy: Option<String>,
}

impl MatrixFilters {
    fn resolve(self) -> matrix::runner::Filters {
        let env = matrix::runner::Filters::from_env();
        matrix::runner::Filters {
            case_id: self.case_id.unwrap_or(env.case_id),
            source: self.source.unwrap_or(env.source),
            sink: self.sink.unwrap_or(env.sink),
            strategy: self.strategy.unwrap_or(env.strategy),
        }
    }
}

#[derive(Subcommand, Debug)]
enum MatrixCommand {
    /// List the selected cases with their extras, profiles and guide.
    List {
        #[command(flatten)]
        filters: MatrixFilters,
    },
    /// Run the selected cases; exits 1 when a case failed.
    Run {
        /// mock_contract, mock_local or vendor_live [env: DPONE_MATRIX_RUN_MODE].
        #[arg(long)]
        mode: Option<String>,
        #[command(flatten)]
        filters: MatrixFilters,
        /// Write `<case_id>.json` and `summary.json` here [env: DPONE_MATRIX_ARTIFACT_DIR].
        #[arg(long)]
        artifact_dir: Option<PathBuf>,
        /// The repository checkout whose docs/source-sink guides are checked.
        #[arg(long, default_value = ".")]
        repo_root: PathBuf,
        /// Where the strategy components are [default: as for `run`].
        #[arg(long)]
        components_dir: Option<PathBuf>,
    },
    /// Print the summary table of a finished run from its artifact directory.
    Report {
        #[arg(long)]
        artifact_dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BackfillCommand {
    /// Print the campaign's chunks; reads the source's column type and writes nothing.
    Plan {
        #[command(flatten)]
        target: Target,
    },
    /// Start the campaign (or continue it) and run chunks until none is left.
    Run {
        #[command(flatten)]
        target: Target,
        /// Write the campaign report as JSON to this file.
        #[arg(long)]
        report_json: Option<PathBuf>,
    },
    /// Continue a started campaign: pending chunks and chunks whose lease expired.
    Resume {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        report_json: Option<PathBuf>,
    },
    /// Make failed chunks pending again, then continue.
    RetryFailed {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        report_json: Option<PathBuf>,
    },
    /// Print every chunk's status, attempts, lease and error.
    Status {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
enum CdcCommand {
    /// Drop the pipeline's replication slot and publication on the source (retire a cdc
    /// pipeline; a slot nobody reads keeps WAL on the source forever).
    DropSlot {
        #[arg(long, short)]
        manifest: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum StrategyCommand {
    /// Print a component's name, version, options and needed sink capabilities.
    Inspect { component: PathBuf },
}

#[derive(Subcommand, Debug)]
enum StateCommand {
    /// Print the pipeline's state entries and recent runs.
    Show {
        #[arg(long, short)]
        manifest: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour())
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::internal(format!("tokio runtime: {e}"))),
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Colour log lines only on a terminal, and never when `NO_COLOR` is set (no-color.org):
/// a file or a pipe gets plain text.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(u8::try_from(e.kind.exit_code()).unwrap_or(1))
}

/// From here on, SIGINT and SIGTERM stop the run cleanly instead of killing the process.
fn listen_for_stop() {
    if let Err(e) = dpone_host::stop::listen() {
        tracing::warn!("cannot handle SIGINT and SIGTERM: {e}");
    }
}

fn components_dir(t: &Target) -> PathBuf {
    t.components_dir
        .clone()
        .unwrap_or_else(runner::default_components_dir)
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run {
            target,
            report_json,
        } => {
            let manifest = Manifest::load(&target.manifest)?;
            listen_for_stop();
            let opts = RunOptions {
                strategy: target.strategy.as_deref(),
                components_dir: components_dir(&target),
                dry_run: false,
                progress: true,
            };
            let prepared = runner::prepare(&manifest, &opts).await?;
            if prepared.info.chunked {
                return campaign(&manifest, &opts, &prepared, Start::Run, report_json).await;
            }
            let (result, report) =
                match runner::run_prepared(&manifest, &opts, &prepared, None).await {
                    Ok(report) => (Ok(()), Some(report)),
                    Err((e, report)) => (Err(e), report),
                };
            if let Some(report) = &report {
                summarize(report);
                if let Some(path) = &report_json {
                    let json = serde_json::to_vec_pretty(report).map_err(Error::internal)?;
                    let written = runner::write_artifact(path, &json)
                        .map_err(|e| Error::config("--report-json", e.to_string()));
                    // The run's own failure matters more than a report that could not be written.
                    if let (Err(e), Ok(())) = (written, &result) {
                        return Err(e);
                    }
                }
            }
            result
        }
        Command::Plan { target } => {
            let manifest = Manifest::load(&target.manifest)?;
            let opts = RunOptions {
                strategy: target.strategy.as_deref(),
                components_dir: components_dir(&target),
                dry_run: true,
                progress: false,
            };
            let report = runner::run(&manifest, &opts).await.map_err(|(e, _)| e)?;
            println!(
                "plan for pipeline {} with {} {} ({}):",
                report.pipeline,
                report.strategy_name,
                report.strategy_version,
                short(&report.strategy_hash)
            );
            for (i, sql) in report.sink_statements.iter().enumerate() {
                println!("{:>3}. {sql}", i + 1);
            }
            println!("nothing was written.");
            Ok(())
        }
        Command::Validate { target } => {
            let manifest = Manifest::load(&target.manifest)?;
            let runtime = Runtime::new(runner::open_cache(&runner::open_work_dir()?))?;
            let (bytes, origin, field) = runner::read_component(
                Some(&manifest),
                target.strategy.as_deref(),
                &components_dir(&target),
            )?;
            let loaded = runtime.load(&bytes, &origin, field, manifest.limits().wasi)?;
            let limits = manifest.limits_for(&loaded.needs);
            let info = runner::describe(&runtime, &loaded, &limits).await?;
            runner::strategy_options(&info, &manifest.strategy, None)?;
            println!(
                "{}: valid ({} {}, {} -> {})",
                target.manifest.display(),
                info.name,
                info.version,
                manifest.source.kind(),
                manifest.sink.kind()
            );
            Ok(())
        }
        Command::Strategy {
            command: StrategyCommand::Inspect { component },
        } => {
            let runtime = Runtime::new(runner::open_cache(&runner::open_work_dir()?))?;
            let (bytes, origin, field) =
                runner::read_component(None, Some(&component), &PathBuf::new())?;
            let loaded = runtime.load(&bytes, &origin, field, WasiMode::Virtual)?;
            let limits = Manifest::default_limits_for(&loaded.needs);
            let described = std::time::Instant::now();
            let info = runner::describe(&runtime, &loaded, &limits).await?;
            let describe_seconds = described.elapsed().as_secs_f64();
            println!("{} {} (sha256 {})", info.name, info.version, loaded.hash);
            println!("  {}", info.description);
            println!(
                "  needs: transactions={} rename_swap={} mutable_target={}",
                info.needs.transactions, info.needs.rename_swap, info.needs.mutable_target
            );
            println!(
                "  sandbox: memory_mb={} fuel={} ({})",
                limits.memory_mb,
                limits.fuel,
                if loaded.needs == Needs::default() {
                    "the defaults"
                } else {
                    "declared by the component; the manifest's limits override"
                }
            );
            if loaded.ambient_imports.is_empty() {
                println!("  wasi: cli and io only (runs under limits.wasi: strict too)");
            } else {
                println!(
                    "  wasi: also imports {} (served virtual: deterministic and empty; refused under limits.wasi: strict)",
                    loaded.ambient_imports.join(", ")
                );
            }
            println!(
                "  start: loaded in {:.3} s ({}), describe answered in {describe_seconds:.3} s",
                loaded.load_seconds,
                if loaded.cache_hit {
                    "from the compile cache"
                } else {
                    "compiled, now cached"
                }
            );
            println!("  options:");
            for o in &info.options {
                println!(
                    "    {:<16} {:<10} {:<9} {}",
                    o.name,
                    kind_name(o.kind),
                    if o.required { "required" } else { "optional" },
                    o.description
                );
            }
            Ok(())
        }
        Command::Backfill { command } => backfill(command).await,
        Command::Matrix { command } => matrix_command(command).await,
        Command::Cdc {
            command: CdcCommand::DropSlot { manifest },
        } => {
            let manifest = Manifest::load(&manifest)?;
            let mut feed = connectors::manifest_feed(&manifest).ok_or_else(|| {
                Error::config(
                    "source.kind",
                    format!(
                        "a `{}` source has no change feed to drop",
                        manifest.source.kind()
                    ),
                )
            })?;
            println!("{}", feed.drop_feed().await?);
            println!("the next run of this pipeline takes a new snapshot");
            Ok(())
        }
        Command::State {
            command: StateCommand::Show { manifest },
        } => {
            let manifest = Manifest::load(&manifest)?;
            let mut state = runner::open_state(&manifest).await?;
            println!("pipeline {}", manifest.pipeline);
            println!("state entries:");
            for (k, v) in state.entries(&manifest.pipeline).await? {
                println!("  {k} = {}", dpone_host::model::value_display(&v));
            }
            println!("recent runs:");
            for r in state.runs(&manifest.pipeline, 10).await? {
                println!(
                    "  {} {} {} {}@{} read={} written={}{}",
                    r.started_at,
                    r.run_id,
                    r.outcome,
                    r.strategy_name,
                    r.strategy_version,
                    r.rows_read,
                    r.rows_written,
                    r.error.map(|e| format!(" error: {e}")).unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// The `backfill` commands: `plan` and `status` read; `run`, `resume` and `retry-failed`
/// run chunks until the campaign is done, failed or stopped.
async fn backfill(command: BackfillCommand) -> Result<()> {
    let (target, start, report_json) = match command {
        BackfillCommand::Plan { target } => return backfill_show(&target, false).await,
        BackfillCommand::Status { target } => return backfill_show(&target, true).await,
        BackfillCommand::Run {
            target,
            report_json,
        } => (target, Start::Run, report_json),
        BackfillCommand::Resume {
            target,
            report_json,
        } => (target, Start::Resume, report_json),
        BackfillCommand::RetryFailed {
            target,
            report_json,
        } => (target, Start::RetryFailed, report_json),
    };
    let manifest = Manifest::load(&target.manifest)?;
    let opts = RunOptions {
        strategy: target.strategy.as_deref(),
        components_dir: components_dir(&target),
        dry_run: false,
        progress: false,
    };
    let prepared = chunked(runner::prepare(&manifest, &opts).await?)?;
    listen_for_stop();
    campaign(&manifest, &opts, &prepared, start, report_json).await
}

async fn matrix_command(command: MatrixCommand) -> Result<()> {
    match command {
        MatrixCommand::List { filters } => {
            let filters = filters.resolve();
            for c in matrix::catalog::cases()
                .iter()
                .filter(|c| filters.matches(c))
            {
                println!(
                    "{:<44} extras={:<20} profiles={:<30} {}",
                    c.id,
                    c.extras.join(","),
                    c.profiles.join(","),
                    c.guide
                );
            }
            Ok(())
        }
        MatrixCommand::Run {
            mode,
            filters,
            artifact_dir,
            repo_root,
            components_dir,
        } => {
            let mode = mode
                .or_else(|| std::env::var("DPONE_MATRIX_RUN_MODE").ok())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "mock_contract".into());
            let opts = matrix::runner::Options {
                mode: matrix::runner::Mode::parse(&mode)?,
                filters: filters.resolve(),
                artifact_dir: artifact_dir
                    .or_else(|| std::env::var_os("DPONE_MATRIX_ARTIFACT_DIR").map(PathBuf::from)),
                repo_root,
                components_dir: components_dir.unwrap_or_else(runner::default_components_dir),
                rows: matrix::model::rows_from_env()?,
            };
            let (summary, _) = matrix::runner::run(&opts).await?;
            print!("{}", matrix::runner::table(&summary));
            if summary.failed > 0 {
                // Exit 1: cases failed; the other codes mean the run itself could not go on.
                eprintln!("{} matrix cases failed", summary.failed);
                std::process::exit(1);
            }
            Ok(())
        }
        MatrixCommand::Report { artifact_dir } => {
            let path = artifact_dir.join("summary.json");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::config("--artifact-dir", format!("{}: {e}", path.display())))?;
            let summary: matrix::runner::Summary = serde_json::from_str(&text)
                .map_err(|e| Error::config("--artifact-dir", format!("{}: {e}", path.display())))?;
            print!("{}", matrix::runner::table(&summary));
            Ok(())
        }
    }
}

/// Refuses a component that does not run in chunks, naming the field that chose it.
fn chunked(prepared: runner::Prepared) -> Result<runner::Prepared> {
    if prepared.info.chunked {
        Ok(prepared)
    } else {
        Err(Error::config(
            "sink.strategy.mode",
            format!(
                "{} does not run in chunks; `dpone-host backfill` needs a chunked strategy such as backfill",
                prepared.info.name
            ),
        ))
    }
}

/// Runs a campaign and prints (and writes) its report.
async fn campaign(
    manifest: &Manifest,
    opts: &RunOptions<'_>,
    prepared: &runner::Prepared,
    start: Start,
    report_json: Option<PathBuf>,
) -> Result<()> {
    let report = backfill::run(manifest, opts, prepared, start).await?;
    eprintln!(
        "{} backfill campaign {}: {} chunks, {} done, {} failed, {} pending; this invocation ran {} and wrote {} rows in {:.2}s",
        manifest.pipeline,
        report.campaign,
        report.chunks,
        report.done,
        report.failed,
        report.pending,
        report.ran,
        report.rows_written,
        report.wall_seconds
    );
    if let Some(path) = report_json {
        let json = serde_json::to_vec_pretty(&report).map_err(Error::internal)?;
        runner::write_artifact(&path, &json)
            .map_err(|e| Error::config("--report-json", e.to_string()))?;
    }
    Ok(())
}

/// `backfill plan` (the chunks, from the manifest) or `backfill status` (the ledger).
async fn backfill_show(target: &Target, ledger: bool) -> Result<()> {
    let manifest = Manifest::load(&target.manifest)?;
    let opts = RunOptions {
        strategy: target.strategy.as_deref(),
        components_dir: components_dir(target),
        dry_run: true,
        progress: false,
    };
    let prepared = chunked(runner::prepare(&manifest, &opts).await?)?;
    let (campaign, rows) = backfill::status(&manifest, &prepared).await?;
    let spec = &campaign.spec;
    println!(
        "pipeline {} campaign {}: {} chunks of `{}`, {} worker(s), {} attempts per chunk, {}s leases",
        manifest.pipeline,
        campaign.id,
        spec.chunks.len(),
        spec.column,
        spec.parallel_workers,
        spec.max_attempts,
        spec.lease_seconds
    );
    if !ledger {
        for (i, c) in spec.chunks.iter().enumerate() {
            println!(
                "{:>6}  [{}, {}{}",
                i,
                dpone_host::model::value_display(&c.low),
                dpone_host::model::value_display(&c.high),
                if c.high_inclusive { "]" } else { ")" }
            );
        }
        println!("nothing was written.");
        return Ok(());
    }
    if rows.is_empty() {
        println!("not started: `dpone-host backfill run` starts it");
        return Ok(());
    }
    for status in ["done", "running", "pending", "failed"] {
        let n = rows.iter().filter(|r| r.status == status).count();
        println!("  {status:<8} {n}");
    }
    for r in rows.iter().filter(|r| r.status != "done") {
        let inclusive = usize::try_from(r.index)
            .ok()
            .and_then(|i| spec.chunks.get(i))
            .is_some_and(|c| c.high_inclusive);
        println!(
            "{:>6}  [{}, {}{}  {:<8} attempts={}{}{}",
            r.index,
            r.low,
            r.high,
            if inclusive { "]" } else { ")" },
            r.status,
            r.attempts,
            r.lease_owner
                .as_ref()
                .map(|o| format!(" lease={o}"))
                .unwrap_or_default(),
            r.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn kind_name(kind: dpone_host::runtime::bindings::OptionKind) -> &'static str {
    use dpone_host::runtime::bindings::OptionKind as K;
    match kind {
        K::Text => "text",
        K::TextList => "text-list",
        K::Integer => "integer",
        K::Boolean => "boolean",
        K::Filter => "filter",
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn summarize(r: &RunReport) {
    eprintln!(
        "{} {} {} {}: read {} rows, wrote {}, deleted {} in {:.2}s (wasm {:.2}% of wall time){}",
        r.pipeline,
        r.strategy_name,
        r.strategy_version,
        r.outcome,
        r.rows_read,
        r.rows_written,
        r.rows_deleted,
        r.wall_seconds,
        r.wasm_share * 100.0,
        if r.message.is_empty() {
            String::new()
        } else {
            format!(" - {}", r.message)
        }
    );
    if !r.source_objects_created.is_empty() {
        eprintln!(
            "created on the source: {} (they keep server resources until `dpone-host cdc drop-slot` removes them)",
            r.source_objects_created.join(", ")
        );
    }
}
