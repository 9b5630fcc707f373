//! Runs the matrix: the preflight of every selected case (`mock_contract`), or the
//! preflight and then the behaviour model against real services (`mock_local` with the
//! services this machine starts, `vendor_live` with caller-provided endpoints). A case whose
//! profiles are not available in the mode is `not_run`, with the missing profiles named,
//! never `passed`. Writes `<case_id>.json` per case and `summary.json` when given an
//! artifact directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::catalog::{self, Case, PROFILES};
use super::local::Behaviour;
use super::model::{Domain, ModelConfig};
use super::oracle::Oracle;
use crate::backfill::{self, Start};
use crate::connectors::{self, Open, Statement, render};
use crate::error::{Error, Kind, Result};
use crate::manifest::Manifest;
use crate::runner::{self, RunOptions};
use crate::runtime::bindings::StrategyInfo;
use crate::runtime::engine::{Limits, Runtime};

/// How cases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Preflight only: no credentials, no services.
    MockContract,
    /// Preflight, then the behaviour model against the services this machine runs.
    MockLocal,
    /// Preflight, then the behaviour model against endpoints from `DPONE_LIVE_*`.
    VendorLive,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode> {
        match text {
            "mock_contract" => Ok(Mode::MockContract),
            "mock_local" => Ok(Mode::MockLocal),
            "vendor_live" => Ok(Mode::VendorLive),
            other => Err(Error::config(
                "DPONE_MATRIX_RUN_MODE",
                format!("`{other}` is not mock_contract, mock_local or vendor_live"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::MockContract => "mock_contract",
            Mode::MockLocal => "mock_local",
            Mode::VendorLive => "vendor_live",
        }
    }
}

/// Comma lists per dimension; `*` or empty selects everything.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub case_id: String,
    pub source: String,
    pub sink: String,
    pub strategy: String,
}

impl Filters {
    /// `DPONE_MATRIX_CASE_ID`, `DPONE_MATRIX_SOURCE_FILTER`, `DPONE_MATRIX_SINK_FILTER`,
    /// `DPONE_MATRIX_STRATEGY_FILTER`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Filters {
            case_id: var("DPONE_MATRIX_CASE_ID"),
            source: var("DPONE_MATRIX_SOURCE_FILTER"),
            sink: var("DPONE_MATRIX_SINK_FILTER"),
            strategy: var("DPONE_MATRIX_STRATEGY_FILTER"),
        }
    }

    pub fn matches(&self, case: &Case) -> bool {
        let pick = |list: &str, value: &str| {
            let list = list.trim();
            list.is_empty()
                || list
                    .split(',')
                    .map(str::trim)
                    .any(|v| v == "*" || v == value)
        };
        pick(&self.case_id, &case.id)
            && pick(&self.source, case.source)
            && pick(&self.sink, case.sink)
            && pick(&self.strategy, case.strategy)
    }
}

/// Everything a matrix run needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub filters: Filters,
    pub artifact_dir: Option<PathBuf>,
    /// Where `docs/source-sink/` is.
    pub repo_root: PathBuf,
    pub components_dir: PathBuf,
    /// Rows of generation 0 in the local modes.
    pub rows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    NotRun,
}

/// One case's artifact.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub case_id: String,
    pub mode: Mode,
    pub status: Status,
    pub reason: String,
    pub source: String,
    pub sink: String,
    pub strategy: String,
    pub profiles: Vec<String>,
    pub missing_profiles: Vec<String>,
    pub extras: Vec<String>,
    pub guide: String,
    /// The checks that passed, in order.
    pub checks: Vec<String>,
    /// Target rows after each run (local modes).
    pub target_rows: BTreeMap<String, usize>,
    pub source_rows: BTreeMap<String, usize>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub not_run: usize,
}

impl Counts {
    fn add(&mut self, status: Status) {
        match status {
            Status::Passed => self.passed += 1,
            Status::Failed => self.failed += 1,
            Status::NotRun => self.not_run += 1,
        }
    }
}

/// The run's totals, as `summary.json` keeps them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub mode: Mode,
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub not_run: usize,
    pub by_source: BTreeMap<String, Counts>,
    pub by_sink: BTreeMap<String, Counts>,
    pub by_strategy: BTreeMap<String, Counts>,
    /// Why cases did not run or failed, with how many.
    pub reasons: BTreeMap<String, usize>,
    pub seconds: f64,
}

/// Example endpoints: what a manifest's `${DPONE_MATRIX_*}` reads in mock_contract.
const EXAMPLE_ENV: [(&str, &str); 9] = [
    (
        "DPONE_MATRIX_POSTGRES_URL",
        "postgres://dpone@localhost:5432/matrix",
    ),
    (
        "DPONE_MATRIX_MSSQL_URL",
        "mssql://sa:example@localhost:1433/matrix",
    ),
    (
        "DPONE_MATRIX_CLICKHOUSE_URL",
        "http://localhost:8123/matrix",
    ),
    ("DPONE_MATRIX_REST_URL", "http://localhost:8080"),
    ("DPONE_MATRIX_KAFKA_BROKERS", "localhost:9092"),
    ("DPONE_MATRIX_KAFKA_EXACTLY_ONCE", "true"),
    ("DPONE_MATRIX_BIGQUERY_PROJECT", "dpone-matrix"),
    ("DPONE_MATRIX_BIGQUERY_CREDENTIALS_JSON", "{}"),
    ("DPONE_MATRIX_BIGQUERY_ENDPOINT", "http://localhost:9050"),
];

/// Whether the server of `scheme://[user[:password]@]host:port/...` accepts a connection
/// within a second.
fn answers(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok()
        })
}

/// The manifest variables a profile provides in `mode`, or `None` when it is not available.
fn endpoint(mode: Mode, profile: &str) -> Option<Vec<(&'static str, String)>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let one = |var: &'static str, value: Option<String>| value.map(|v| vec![(var, v)]);
    match (mode, profile) {
        (Mode::MockContract, _) => None,
        // A local service counts only while it answers, so a stopped one makes its cases
        // not_run rather than failed.
        (Mode::MockLocal, "postgres_live") => one(
            "DPONE_MATRIX_POSTGRES_URL",
            env("DPONE_MATRIX_POSTGRES_URL")
                .or_else(|| env("DPONE_TEST_POSTGRES_URL"))
                .filter(|url| answers(url)),
        ),
        (Mode::MockLocal, "clickhouse_live") => one(
            "DPONE_MATRIX_CLICKHOUSE_URL",
            env("DPONE_MATRIX_CLICKHOUSE_URL")
                .or_else(|| env("DPONE_TEST_CLICKHOUSE_URL"))
                .filter(|url| answers(url)),
        ),
        // tansu serves no EndTxn: its cases produce without a transaction.
        (Mode::MockLocal, "kafka_live") => Some(vec![
            (
                "DPONE_MATRIX_KAFKA_BROKERS",
                env("DPONE_MATRIX_KAFKA_BROKERS")
                    .or_else(|| env("DPONE_TEST_KAFKA_BROKERS"))
                    .filter(|b| answers(b))?,
            ),
            ("DPONE_MATRIX_KAFKA_EXACTLY_ONCE", "false".into()),
        ]),
        (Mode::MockLocal, "rest_mock") => one(
            "DPONE_MATRIX_REST_URL",
            env("DPONE_MATRIX_REST_URL").filter(|url| answers(url)),
        ),
        // The emulator takes requests without credentials.
        (Mode::MockLocal, "bigquery_live") => Some(vec![
            (
                "DPONE_MATRIX_BIGQUERY_ENDPOINT",
                env("DPONE_MATRIX_BIGQUERY_ENDPOINT")
                    .or_else(|| env("DPONE_TEST_BIGQUERY_ENDPOINT"))
                    .filter(|url| answers(url))?,
            ),
            ("DPONE_MATRIX_BIGQUERY_PROJECT", "dpone-matrix".into()),
            ("DPONE_MATRIX_BIGQUERY_CREDENTIALS_JSON", String::new()),
        ]),
        (Mode::MockLocal, _) => None,
        (Mode::VendorLive, "postgres_live") => {
            one("DPONE_MATRIX_POSTGRES_URL", env("DPONE_LIVE_POSTGRES_URL"))
        }
        (Mode::VendorLive, "mssql_live") => {
            one("DPONE_MATRIX_MSSQL_URL", env("DPONE_LIVE_MSSQL_URL"))
        }
        (Mode::VendorLive, "clickhouse_live") => one(
            "DPONE_MATRIX_CLICKHOUSE_URL",
            env("DPONE_LIVE_CLICKHOUSE_URL"),
        ),
        (Mode::VendorLive, "kafka_live") => Some(vec![
            (
                "DPONE_MATRIX_KAFKA_BROKERS",
                env("DPONE_LIVE_KAFKA_BROKERS")?,
            ),
            (
                "DPONE_MATRIX_KAFKA_EXACTLY_ONCE",
                env("DPONE_LIVE_KAFKA_EXACTLY_ONCE").unwrap_or_else(|| "true".into()),
            ),
        ]),
        (Mode::VendorLive, "bigquery_live") => Some(vec![
            (
                "DPONE_MATRIX_BIGQUERY_ENDPOINT",
                crate::connectors::bigquery::config::GOOGLE_ENDPOINT.into(),
            ),
            (
                "DPONE_MATRIX_BIGQUERY_PROJECT",
                env("DPONE_LIVE_BIGQUERY_PROJECT")?,
            ),
            (
                "DPONE_MATRIX_BIGQUERY_CREDENTIALS_JSON",
                env("DPONE_LIVE_BIGQUERY_CREDENTIALS_JSON")?,
            ),
        ]),
        (Mode::VendorLive, _) => None,
    }
}

/// The cargo features compiled into this host: a case's extras must be among them.
pub fn compiled_features() -> Vec<&'static str> {
    [
        ("sqlite", cfg!(feature = "sqlite")),
        ("postgres", cfg!(feature = "postgres")),
        ("mssql", cfg!(feature = "mssql")),
        ("clickhouse", cfg!(feature = "clickhouse")),
        ("rest", cfg!(feature = "rest")),
        ("kafka", cfg!(feature = "kafka")),
        ("bigquery", cfg!(feature = "bigquery")),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect()
}

/// Strategy components, loaded and described once per strategy.
struct Components {
    runtime: Runtime,
    dir: PathBuf,
    described: BTreeMap<String, std::result::Result<StrategyInfo, String>>,
}

impl Components {
    async fn describe(&mut self, strategy: &str) -> std::result::Result<StrategyInfo, String> {
        if let Some(found) = self.described.get(strategy) {
            return found.clone();
        }
        let path = self.dir.join(format!("{strategy}.wasm"));
        let described = async {
            let (bytes, origin, field) = runner::read_component(None, Some(&path), &self.dir)?;
            let loaded = self
                .runtime
                .load(&bytes, &origin, field, Limits::default().wasi)?;
            let limits = Manifest::default_limits_for(&loaded.needs);
            runner::describe(&self.runtime, &loaded, &limits).await
        }
        .await
        .map_err(|e| format!("component {}: {e}", path.display()));
        self.described.insert(strategy.into(), described.clone());
        described
    }
}

/// The first fenced YAML block of a guide.
fn guide_manifest(text: &str) -> Option<&str> {
    let start = text.find("```yaml\n")? + "```yaml\n".len();
    let end = start + text[start..].find("```")?;
    Some(&text[start..end])
}

fn example_env(k: &str) -> Option<String> {
    EXAMPLE_ENV
        .iter()
        .find(|(name, _)| *name == k)
        .map(|(_, v)| (*v).to_string())
}

/// The credential-free checks of a case; the names of those that passed, or why one failed.
async fn preflight(
    case: &Case,
    opts: &Options,
    components: &mut Components,
    checks: &mut Vec<String>,
) -> std::result::Result<(), String> {
    let guide = opts.repo_root.join(&case.guide);
    let text = std::fs::read_to_string(&guide).map_err(|e| format!("guide {}: {e}", case.guide))?;
    if !text.contains(&format!("`{}`", case.strategy)) {
        return Err(format!(
            "guide {} does not cover `{}`",
            case.guide, case.strategy
        ));
    }
    let example = guide_manifest(&text)
        .ok_or_else(|| format!("guide {} has no ```yaml manifest", case.guide))?;
    let parsed = Manifest::parse(example, &example_env)
        .map_err(|e| format!("the manifest of guide {} is refused: {e}", case.guide))?;
    if (parsed.source.kind(), parsed.sink.kind()) != (case.source, case.sink) {
        return Err(format!(
            "the manifest of guide {} is {} -> {}",
            case.guide,
            parsed.source.kind(),
            parsed.sink.kind()
        ));
    }
    checks.push("guide".into());

    let compiled = compiled_features();
    if let Some(missing) = case.extras.iter().find(|e| !compiled.contains(e)) {
        return Err(format!(
            "install extra (cargo feature) `{missing}` is not in this build"
        ));
    }
    checks.push("extras".into());
    if let Some(unknown) = case
        .profiles
        .iter()
        .find(|p| !PROFILES.iter().any(|(name, _)| name == *p))
    {
        return Err(format!("profile `{unknown}` is not declared"));
    }
    checks.push("profiles".into());

    let manifest = Manifest::parse(&catalog::manifest(case), &example_env)
        .map_err(|e| format!("manifest fragment refused: {e}"))?;
    let info = components.describe(case.strategy).await?;
    runner::strategy_options(&info, &manifest.strategy, None)
        .map_err(|e| format!("manifest fragment refused by {}: {e}", case.strategy))?;
    checks.push("manifest".into());
    checks.push("component".into());

    let declared = manifest
        .sink
        .sink_capabilities()
        .ok_or_else(|| format!("capabilities: `{}` cannot be a sink", case.sink))?;
    if let Some(what) = runner::missing_capability(&info, &declared) {
        return Err(format!(
            "capabilities: {} needs {what}, which the {} sink does not offer",
            case.strategy, case.sink
        ));
    }
    checks.push("capabilities".into());
    Ok(())
}

/// Runs the behaviour model for a case against live endpoints: generation 0, generation
/// 1, then no change, each checked by the oracle.
async fn run_model(
    case: &Case,
    opts: &Options,
    env: &BTreeMap<&'static str, String>,
    result: &mut CaseResult,
) -> Result<()> {
    let (options, semantics, compound) = catalog::strategy_options(case.strategy);
    let work = std::env::temp_dir().join("dpone-matrix").join(&case.id);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(Error::internal)?;
    let state = format!(
        "{{ kind: sqlite, path: \"{}\" }}",
        work.join("state.db").display()
    );
    // Only the case's own profiles' variables: a live run never falls back to an example.
    let lookup = |k: &str| env.get(k).cloned();
    let yaml = |options: &str| {
        format!(
            "pipeline: {}\nsource:\n  {}\nsink:\n  {}\n  strategy: {{ {options} }}\nstate: {state}\n",
            case.id,
            catalog::connection(case.source, false, &case.id),
            catalog::connection(case.sink, true, &case.id)
        )
    };
    let first = Manifest::parse(&yaml(&options), &lookup)?;
    let cfg = ModelConfig {
        seed: 20_261_127,
        rows: opts.rows,
        compound_key: compound,
        domain: Domain::of(&[case.source, case.sink]),
    };
    // A fresh target and feed: leftovers of an earlier matrix run must not count.
    drop_leftovers(&first).await?;
    let model = Behaviour::new(&first, cfg);
    let mut oracle = Oracle::new(semantics, model.key.clone());
    let mut rows = Vec::new();
    let run_opts = RunOptions {
        strategy: None,
        components_dir: opts.components_dir.clone(),
        dry_run: false,
        progress: false,
    };
    let outcome = async {
        for (generation, label) in [(0, "generation_0"), (1, "generation_1"), (1, "no_change")] {
            if label != "no_change" {
                rows = model.seed(generation).await?;
            }
            result.source_rows.insert(label.into(), rows.len());
            if case.strategy == "backfill" {
                let manifest = Manifest::parse(
                    &yaml(&catalog::backfill_options(
                        opts.rows * 21 / 20 + generation as usize,
                        if connectors::publishes_whole_target(case.sink) {
                            1
                        } else {
                            2
                        },
                    )),
                    &lookup,
                )?;
                let prepared = runner::prepare(&manifest, &run_opts).await?;
                backfill::run(&manifest, &run_opts, &prepared, Start::Run).await?;
            } else {
                runner::run(&first, &run_opts).await.map_err(|(e, _)| e)?;
            }
            oracle.run(&rows);
            let n = model.check(&oracle, label).await?;
            result.target_rows.insert(label.into(), n);
        }
        Ok::<(), Error>(())
    }
    .await;
    // The run's own failure matters more than one of the cleanup.
    if case.strategy == "cdc" {
        let cleaned = drop_leftovers(&first).await;
        return outcome.and(cleaned);
    }
    outcome
}

/// Drops the case's target (a table, or a Kafka topic) and, on a PostgreSQL source, its
/// replication slot and publication.
async fn drop_leftovers(manifest: &Manifest) -> Result<()> {
    match &manifest.sink {
        #[cfg(feature = "kafka")]
        crate::manifest::Connection::Kafka(c) => {
            let client = connectors::kafka::client::KafkaClient::new(c, Kind::Sink);
            client.delete_topic(&c.topic).await?;
        }
        _ => {
            let mut sink = connectors::connect(&manifest.sink, Kind::Sink, Open::Existing).await?;
            let drop = render::drop_table(sink.dialect(), &manifest.sink_table());
            sink.execute(&Statement::new(drop)).await?;
        }
    }
    if let Some(mut feed) = connectors::manifest_feed(manifest) {
        feed.drop_feed().await?;
    }
    Ok(())
}

/// Runs the selected cases in `opts.mode`; writes artifacts; returns the summary.
pub async fn run(opts: &Options) -> Result<(Summary, Vec<CaseResult>)> {
    let started = Instant::now();
    let mut components = Components {
        runtime: Runtime::new(None)?,
        dir: opts.components_dir.clone(),
        described: BTreeMap::new(),
    };
    if let Some(dir) = &opts.artifact_dir {
        clear_artifacts(dir)?;
    }
    let mut results = Vec::new();
    for case in catalog::cases().iter().filter(|c| opts.filters.matches(c)) {
        let case_started = Instant::now();
        let mut result = CaseResult {
            case_id: case.id.clone(),
            mode: opts.mode,
            status: Status::Passed,
            reason: String::new(),
            source: case.source.into(),
            sink: case.sink.into(),
            strategy: case.strategy.into(),
            profiles: case.profiles.iter().map(|p| p.to_string()).collect(),
            missing_profiles: Vec::new(),
            extras: case.extras.iter().map(|e| e.to_string()).collect(),
            guide: case.guide.clone(),
            checks: Vec::new(),
            target_rows: BTreeMap::new(),
            source_rows: BTreeMap::new(),
            seconds: 0.0,
        };
        let preflight = preflight(case, opts, &mut components, &mut result.checks).await;
        let mut env = BTreeMap::new();
        if opts.mode != Mode::MockContract {
            for p in &case.profiles {
                match endpoint(opts.mode, p) {
                    Some(vars) => env.extend(vars),
                    None => result.missing_profiles.push(p.to_string()),
                }
            }
        }
        match preflight {
            // A case that cannot run here is not run, whatever else is wrong with it.
            _ if !result.missing_profiles.is_empty() => {
                result.status = Status::NotRun;
                result.reason = format!(
                    "profile {} not available in {}",
                    result.missing_profiles.join(", "),
                    opts.mode.name()
                );
                if let Err(reason) = preflight {
                    result.reason.push_str(&format!("; preflight: {reason}"));
                }
            }
            Err(reason) => {
                result.status = Status::Failed;
                result.reason = reason;
            }
            Ok(()) if opts.mode == Mode::MockContract => {
                result.reason =
                    "preflight: guide, extras, profiles, manifest, component, capabilities".into();
            }
            Ok(()) => match run_model(case, opts, &env, &mut result).await {
                Ok(()) => {
                    result.checks.push("behaviour".into());
                    result.reason =
                        "oracle matched after generation 0, generation 1 and a run with no change"
                            .into();
                }
                Err(e) => {
                    result.status = Status::Failed;
                    result.reason = e.to_string();
                }
            },
        }
        result.seconds = case_started.elapsed().as_secs_f64();
        if let Some(dir) = &opts.artifact_dir {
            write_json(&dir.join(format!("{}.json", case.id)), &result)?;
        }
        results.push(result);
    }
    let summary = summarize(opts.mode, &results, started.elapsed().as_secs_f64());
    if let Some(dir) = &opts.artifact_dir {
        write_json(&dir.join("summary.json"), &summary)?;
    }
    Ok((summary, results))
}

/// Removes the `.json` files of an earlier run, so the directory holds this run only.
fn clear_artifacts(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(&path).map_err(|e| {
                Error::config(
                    "DPONE_MATRIX_ARTIFACT_DIR",
                    format!("{}: {e}", path.display()),
                )
            })?;
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(
                "DPONE_MATRIX_ARTIFACT_DIR",
                format!("{}: {e}", dir.display()),
            )
        })?;
    }
    let json = serde_json::to_vec_pretty(value).map_err(Error::internal)?;
    runner::write_artifact(path, &json).map_err(|e| {
        Error::config(
            "DPONE_MATRIX_ARTIFACT_DIR",
            format!("{}: {e}", path.display()),
        )
    })
}

/// Totals per source, sink and strategy, and the reasons of what did not pass, with how
/// many cases share each.
pub fn summarize(mode: Mode, results: &[CaseResult], seconds: f64) -> Summary {
    let mut summary = Summary {
        mode,
        total: results.len(),
        passed: 0,
        failed: 0,
        not_run: 0,
        by_source: BTreeMap::new(),
        by_sink: BTreeMap::new(),
        by_strategy: BTreeMap::new(),
        reasons: BTreeMap::new(),
        seconds,
    };
    for r in results {
        match r.status {
            Status::Passed => summary.passed += 1,
            Status::Failed => summary.failed += 1,
            Status::NotRun => summary.not_run += 1,
        }
        summary
            .by_source
            .entry(r.source.clone())
            .or_default()
            .add(r.status);
        summary
            .by_sink
            .entry(r.sink.clone())
            .or_default()
            .add(r.status);
        summary
            .by_strategy
            .entry(r.strategy.clone())
            .or_default()
            .add(r.status);
        if r.status != Status::Passed {
            *summary.reasons.entry(r.reason.clone()).or_default() += 1;
        }
    }
    summary
}

/// The summary as a text table.
pub fn table(summary: &Summary) -> String {
    let mut out = format!(
        "matrix {}: {} cases, {} passed, {} failed, {} not run ({:.1}s)\n",
        summary.mode.name(),
        summary.total,
        summary.passed,
        summary.failed,
        summary.not_run,
        summary.seconds
    );
    for (title, group) in [
        ("source", &summary.by_source),
        ("sink", &summary.by_sink),
        ("strategy", &summary.by_strategy),
    ] {
        out.push_str(&format!("\n{title:<20} passed  failed  not_run\n"));
        for (name, c) in group {
            out.push_str(&format!(
                "{name:<20} {:>6}  {:>6}  {:>7}\n",
                c.passed, c.failed, c.not_run
            ));
        }
    }
    if !summary.reasons.is_empty() {
        out.push_str("\nnot passed, by reason:\n");
        for (reason, n) in &summary.reasons {
            out.push_str(&format!("{n:>5}  {reason}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::answers;

    #[test]
    fn a_profile_server_counts_only_while_it_accepts_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(answers(&format!("postgres://u:p@127.0.0.1:{port}/db")));
        assert!(answers(&format!(
            "http://default@127.0.0.1:{port}/default?x=1"
        )));
        drop(listener);
        assert!(!answers(&format!("http://127.0.0.1:{port}/default")));
        assert!(!answers("not a url"));
    }
}
