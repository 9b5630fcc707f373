//! One pipeline run, start to finish: load the strategy component, check the manifest's
//! strategy options against what it declares, connect, call `run`, clean up, record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde_yaml_ng::Value as Yaml;

use crate::connectors::{self, Open};
use crate::error::{Error, Kind, Result};
use crate::manifest::{Manifest, StrategySection};
use crate::model::{
    self, CompareTerm, Comparison, DataType, InTerm, RangeTerm, Schema, SinkCapabilities, Term,
    Value,
};
use crate::runtime::bindings::{Chunk, OptionKind, OptionValue, RunContext, StrategyInfo};
use crate::runtime::convert::Cross;
use crate::runtime::engine::{Limits, LoadedStrategy, Runtime, classify_trap, deadline_passed};
use crate::runtime::host::{Pipeline, RunState};
use crate::runtime::report::{Progress, ReportError, RunReport};
use crate::state::{RunRecord, StateStore};
use crate::stop;
use crate::text;

/// Where built-in strategy components are found: `DPONE_COMPONENTS_DIR`, else
/// `<dir of dpone-host>/../strategies` (what `cargo xtask build` produces).
pub fn default_components_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DPONE_COMPONENTS_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("strategies"))
        .unwrap_or_else(|| "strategies".into())
}

/// The component a run uses: `--strategy` when given, else `sink.strategy.mode` from the
/// components directory. Returns the bytes, a display name and the manifest field to blame.
pub fn read_component(
    manifest: Option<&Manifest>,
    strategy: Option<&Path>,
    components_dir: &Path,
) -> Result<(Vec<u8>, String, &'static str)> {
    let (path, field) = match (strategy, manifest.and_then(|m| m.strategy.mode.as_deref())) {
        (Some(p), _) => (p.to_path_buf(), "--strategy"),
        (None, Some(mode)) => (
            components_dir.join(format!("{mode}.wasm")),
            "sink.strategy.mode",
        ),
        (None, None) => {
            return Err(Error::config(
                "sink.strategy.mode",
                "required (or pass --strategy path.wasm)",
            ));
        }
    };
    let bytes = open_parent(&path)
        .and_then(|(dir, name)| dir.read(name))
        .map_err(|e| {
            Error::config(
                field,
                format!("cannot read strategy component {}: {e}", path.display()),
            )
        })?;
    Ok((bytes, path.display().to_string(), field))
}

/// A directory handle on a user-given file's parent, and the file's name in it: the one
/// way the host reaches files named on the command line.
fn open_parent(path: &Path) -> std::io::Result<(Dir, &std::ffi::OsStr)> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file path", path.display())))?;
    Ok((Dir::open_ambient_dir(parent, ambient_authority())?, name))
}

/// The host's working directory for state, cache and artifacts, opened once.
pub fn open_work_dir() -> Result<Dir> {
    let root = std::env::var("DPONE_HOME").unwrap_or_else(|_| ".dpone".into());
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::config("", format!("cannot create {root}: {e}")))?;
    Dir::open_ambient_dir(&root, ambient_authority())
        .map_err(|e| Error::config("", format!("cannot open {root}: {e}")))
}

/// Writes an artifact (a report) through a directory handle on its parent, replacing it
/// atomically so a reader never sees half a file.
pub fn write_artifact(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (dir, name) = open_parent(path)?;
    let tmp = format!(".{}.tmp", name.to_string_lossy());
    dir.write(&tmp, bytes)?;
    dir.rename(&tmp, &dir, name)
}

/// The component cache directory inside the work dir.
pub fn open_cache(work: &Dir) -> Option<Dir> {
    work.create_dir_all("cache/components").ok()?;
    work.open_dir("cache/components").ok()
}

/// Calls `describe` on a fresh describe-only instance.
pub async fn describe(
    runtime: &Runtime,
    loaded: &LoadedStrategy,
    limits: &Limits,
) -> Result<StrategyInfo> {
    let state = RunState::new(limits, None, "");
    let (mut store, instance) = runtime
        .instantiate(loaded, state, limits)
        .await
        .map_err(|(e, _)| e)?;
    instance
        .call_describe(&mut store)
        .await
        .map_err(|e| classify_trap(&e, store.data(), limits))
}

/// Checks the manifest's strategy options against the component's declaration and
/// converts them. With `schema`, filter values are typed by the source column; without
/// it (validate), they are checked for shape only. Pure.
pub fn strategy_options(
    info: &StrategyInfo,
    section: &StrategySection,
    schema: Option<&Schema>,
) -> Result<Vec<(String, OptionValue)>> {
    let declared: Vec<&str> = info.options.iter().map(|o| o.name.as_str()).collect();
    let options = flatten(&section.options, &declared);
    for name in options.keys() {
        if !declared.contains(&name.as_str()) {
            return Err(Error::config(
                format!("sink.strategy.{name}"),
                format!(
                    "not an option of {} {} (options: mode, predicate_sql, {})",
                    info.name,
                    info.version,
                    declared.join(", ")
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for spec in &info.options {
        let field = format!("sink.strategy.{}", spec.name);
        let Some(raw) = options.get(&spec.name) else {
            if spec.required {
                return Err(Error::config(
                    field,
                    format!("required by {}: {}", info.name, spec.description),
                ));
            }
            continue;
        };
        out.push((
            spec.name.clone(),
            option_value(spec.kind, raw, &field, schema)?,
        ));
    }
    Ok(out)
}

/// Nested option sections become dotted names (`diff: {compare: row_hash}` is option
/// `diff.compare`), unless the strategy declares the section itself as one option.
fn flatten(options: &BTreeMap<String, Yaml>, declared: &[&str]) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    for (name, value) in options {
        match value {
            Yaml::Mapping(map) if !declared.contains(&name.as_str()) => {
                let nested: BTreeMap<String, Yaml> = map
                    .iter()
                    .map(|(k, v)| (format!("{name}.{}", k.as_str().unwrap_or("?")), v.clone()))
                    .collect();
                out.extend(flatten(&nested, declared));
            }
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    out
}

fn option_value(
    kind: OptionKind,
    raw: &Yaml,
    field: &str,
    schema: Option<&Schema>,
) -> Result<OptionValue> {
    let wrong = |what: &str| Error::config(field, format!("must be {what}"));
    Ok(match kind {
        // A number is accepted as its text: `from: 100` and `from: "100"` mean the same.
        OptionKind::Text => OptionValue::Text(match raw {
            Yaml::String(s) => s.clone(),
            Yaml::Number(n) => n.to_string(),
            _ => return Err(wrong("a string")),
        }),
        OptionKind::TextList => match raw {
            Yaml::String(s) => OptionValue::TextList(vec![s.clone()]),
            Yaml::Sequence(items) if !items.is_empty() => OptionValue::TextList(
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| wrong("a list of strings"))?,
            ),
            _ => return Err(wrong("a string or a non-empty list of strings")),
        },
        OptionKind::Integer => {
            OptionValue::Integer(raw.as_i64().ok_or_else(|| wrong("an integer"))?)
        }
        OptionKind::Boolean => {
            OptionValue::Boolean(raw.as_bool().ok_or_else(|| wrong("true or false"))?)
        }
        OptionKind::Filter => OptionValue::Filter(filter(raw, field, schema)?.cross()),
    })
}

/// A manifest filter: a list of terms, each one of
/// `{column, op: eq|ne|lt|le|gt|ge, value}`, `{column, from, to}` (half-open; add
/// `to_inclusive: true` for `<=`), `{column, in: [..]}`, `{column, is_null: true|false}`,
/// or `{sql: true}` (the manifest's `predicate_sql`).
fn filter(raw: &Yaml, field: &str, schema: Option<&Schema>) -> Result<Vec<Term>> {
    let items = raw
        .as_sequence()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::config(field, "must be a non-empty list of terms"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| term(item, &format!("{field}[{i}]"), schema))
        .collect()
}

fn term(item: &Yaml, at: &str, schema: Option<&Schema>) -> Result<Term> {
    let map = item
        .as_mapping()
        .ok_or_else(|| Error::config(at, "must be a mapping"))?;
    let keys: Vec<&str> = map.keys().filter_map(Yaml::as_str).collect();
    let get = |k: &str| item.get(k);
    if keys == ["sql"] {
        return match get("sql").and_then(Yaml::as_bool) {
            Some(true) => Ok(Term::ManifestPredicate),
            _ => Err(Error::config(
                format!("{at}.sql"),
                "must be true (refers to sink.strategy.predicate_sql)",
            )),
        };
    }
    let column = get("column")
        .and_then(Yaml::as_str)
        .ok_or_else(|| Error::config(format!("{at}.column"), "required"))?
        .to_string();
    let data_type = match schema {
        Some(s) => Some(s.require(&column, &format!("{at}.column"))?.data_type),
        None => None,
    };
    let value = |k: &str| -> Result<Value> {
        let raw = get(k).ok_or_else(|| Error::config(format!("{at}.{k}"), "required"))?;
        typed_value(raw, data_type.as_ref(), &format!("{at}.{k}"))
    };
    let mut rest: Vec<&str> = keys.iter().copied().filter(|k| *k != "column").collect();
    rest.sort_unstable();
    match rest.as_slice() {
        ["op", "value"] => {
            let op = match get("op").and_then(Yaml::as_str) {
                Some("eq") => Comparison::Eq,
                Some("ne") => Comparison::Ne,
                Some("lt") => Comparison::Lt,
                Some("le") => Comparison::Le,
                Some("gt") => Comparison::Gt,
                Some("ge") => Comparison::Ge,
                _ => {
                    return Err(Error::config(
                        format!("{at}.op"),
                        "must be one of eq, ne, lt, le, gt, ge",
                    ));
                }
            };
            Ok(Term::Compare(CompareTerm {
                column,
                op,
                value: value("value")?,
            }))
        }
        ["from", "to"] | ["from", "to", "to_inclusive"] => {
            let high_inclusive = match get("to_inclusive") {
                None => false,
                Some(v) => v.as_bool().ok_or_else(|| {
                    Error::config(format!("{at}.to_inclusive"), "must be true or false")
                })?,
            };
            Ok(Term::Range(RangeTerm {
                column,
                low: value("from")?,
                high: value("to")?,
                high_inclusive,
            }))
        }
        ["in"] => {
            let list = get("in")
                .and_then(Yaml::as_sequence)
                .ok_or_else(|| Error::config(format!("{at}.in"), "must be a list"))?;
            let values = list
                .iter()
                .enumerate()
                .map(|(j, v)| typed_value(v, data_type.as_ref(), &format!("{at}.in[{j}]")))
                .collect::<Result<_>>()?;
            Ok(Term::InList(InTerm { column, values }))
        }
        ["is_null"] => match get("is_null").and_then(Yaml::as_bool) {
            Some(true) => Ok(Term::IsNull(column)),
            Some(false) => Ok(Term::IsNotNull(column)),
            None => Err(Error::config(
                format!("{at}.is_null"),
                "must be true or false",
            )),
        },
        _ => Err(Error::config(
            at,
            "expected {column, op, value}, {column, from, to}, {column, in}, {column, is_null} or {sql: true}",
        )),
    }
}

/// A YAML scalar as a value of the column's portable type (loosely typed without one).
fn typed_value(raw: &Yaml, t: Option<&DataType>, at: &str) -> Result<Value> {
    let bad = |what: &str| Error::config(at, format!("must be {what}"));
    let text = || {
        raw.as_str()
            .map(str::to_string)
            .or_else(|| raw.as_i64().map(|i| i.to_string()))
            .or_else(|| raw.as_f64().map(|f| f.to_string()))
    };
    let Some(t) = t else {
        return Ok(match raw {
            Yaml::Bool(b) => Value::Boolean(*b),
            Yaml::Number(n) if n.is_i64() => Value::Int(n.as_i64().unwrap_or_default()),
            Yaml::Number(n) => Value::Float(n.as_f64().unwrap_or_default()),
            Yaml::String(s) => Value::Text(s.clone()),
            _ => return Err(bad("a scalar")),
        });
    };
    Ok(match t {
        DataType::Boolean => Value::Boolean(raw.as_bool().ok_or_else(|| bad("true or false"))?),
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            Value::Int(raw.as_i64().ok_or_else(|| bad("an integer"))?)
        }
        DataType::Float32 | DataType::Float64 => {
            Value::Float(raw.as_f64().ok_or_else(|| bad("a number"))?)
        }
        DataType::Decimal(_) => {
            let s = text().ok_or_else(|| bad("a decimal"))?;
            model::parse_decimal(&s, 38).ok_or_else(|| bad("a decimal"))?;
            Value::Decimal(s)
        }
        DataType::Text => Value::Text(text().ok_or_else(|| bad("a string"))?),
        DataType::Json => Value::Json(text().ok_or_else(|| bad("a string"))?),
        DataType::Uuid => {
            let s = raw.as_str().ok_or_else(|| bad("a uuid"))?;
            Value::Uuid(model::uuid_text(
                &model::parse_uuid(s).ok_or_else(|| bad("a uuid"))?,
            ))
        }
        DataType::Date => Value::Date(
            raw.as_str()
                .and_then(model::time::parse_date)
                .ok_or_else(|| bad("a date YYYY-MM-DD"))?,
        ),
        DataType::Timestamp => Value::Timestamp(
            raw.as_str()
                .and_then(model::time::parse_timestamp)
                .ok_or_else(|| bad("a timestamp"))?,
        ),
        DataType::TimestampTz => Value::TimestampTz(
            raw.as_str()
                .and_then(model::time::parse_timestamp)
                .ok_or_else(|| bad("a timestamp"))?,
        ),
        DataType::Bytes => {
            return Err(bad(
                "a column that is not bytes (bytes columns cannot be filtered)",
            ));
        }
    })
}

/// Everything a run needs besides the manifest.
#[derive(Debug)]
pub struct RunOptions<'a> {
    pub strategy: Option<&'a Path>,
    pub components_dir: PathBuf,
    /// Plan only: read metadata, issue no write, print the statements.
    pub dry_run: bool,
    pub progress: bool,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A strategy component loaded, described and checked against the manifest's options,
/// ready for any number of runs.
#[derive(Debug)]
pub struct Prepared {
    pub runtime: Runtime,
    pub loaded: LoadedStrategy,
    pub info: StrategyInfo,
    /// When loading began: the first run's wall time includes the load it paid for.
    started: Instant,
    load_reported: std::sync::atomic::AtomicBool,
}

/// Loads the run's component and checks the manifest's options against it, before any
/// connection: a bad option never opens a socket.
pub async fn prepare(manifest: &Manifest, opts: &RunOptions<'_>) -> Result<Prepared> {
    let started = Instant::now();
    let work = open_work_dir()?;
    let runtime = Runtime::new(open_cache(&work))?;
    let (bytes, origin, field) =
        read_component(Some(manifest), opts.strategy, &opts.components_dir)?;
    let loaded = runtime.load(&bytes, &origin, field, manifest.limits().wasi)?;
    let info = describe(&runtime, &loaded, &manifest.limits_for(&loaded.needs)).await?;
    strategy_options(&info, &manifest.strategy, None)?;
    Ok(Prepared {
        runtime,
        loaded,
        info,
        started,
        load_reported: std::sync::atomic::AtomicBool::new(false),
    })
}

/// Runs (or plans) a pipeline whose strategy is not chunked. Returns the report; a failed
/// run is an `Err` carrying the error, with the report (outcome `failed`) alongside.
pub async fn run(
    manifest: &Manifest,
    opts: &RunOptions<'_>,
) -> std::result::Result<RunReport, (Error, Option<RunReport>)> {
    let prepared = prepare(manifest, opts).await.map_err(|e| (e, None))?;
    if prepared.info.chunked {
        return Err((
            Error::config(
                "sink.strategy.mode",
                format!(
                    "{} runs chunk by chunk: use `dpone-host backfill plan|run|resume|retry-failed|status`",
                    prepared.info.name
                ),
            ),
            None,
        ));
    }
    run_prepared(manifest, opts, &prepared, None).await
}

/// One run of a prepared strategy; `chunk` is the backfill chunk it covers, if any. A chunk
/// run does not take the pipeline lock: the campaign's leases keep chunks apart.
pub async fn run_prepared(
    manifest: &Manifest,
    opts: &RunOptions<'_>,
    prepared: &Prepared,
    chunk: Option<Chunk>,
) -> std::result::Result<RunReport, (Error, Option<RunReport>)> {
    let Prepared {
        runtime,
        loaded,
        info,
        ..
    } = prepared;
    // The first run of a prepared component reports its load; later ones (backfill chunks)
    // reuse the compiled component.
    let first = !prepared
        .load_reported
        .swap(true, std::sync::atomic::Ordering::SeqCst);
    let (started, load_seconds) = if first {
        (prepared.started, loaded.load_seconds)
    } else {
        (Instant::now(), 0.0)
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let now = now_micros();
    let mut report = RunReport {
        run_id: run_id.clone(),
        pipeline: manifest.pipeline.clone(),
        strategy_name: info.name.clone(),
        strategy_version: info.version.clone(),
        strategy_hash: loaded.hash.clone(),
        outcome: "failed".into(),
        error: None,
        rows_read: 0,
        rows_forwarded: 0,
        read_streams: 0,
        rows_written: 0,
        rows_deleted: 0,
        message: String::new(),
        started_at: model::time::format_timestamp(now),
        wall_seconds: 0.0,
        wasm_load_seconds: load_seconds,
        wasm_cache_hit: loaded.cache_hit,
        wasm_guest_seconds: 0.0,
        wasm_share: 0.0,
        sink_statements: Vec::new(),
        source_objects_created: Vec::new(),
    };
    let run = Run {
        manifest,
        opts,
        runtime,
        loaded,
        info,
        run_id: &run_id,
        now,
        chunk,
        deadline: Instant::now() + Duration::from_secs(manifest.limits().wall_seconds),
    };
    let result = run.execute(&mut report).await;
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.wasm_share =
        (report.wasm_load_seconds + report.wasm_guest_seconds) / report.wall_seconds.max(1e-9);
    match result {
        Ok(()) => Ok(report),
        Err(e) => {
            report.error = Some(ReportError {
                kind: format!("{:?}", e.kind),
                field: e.field.clone(),
                message: e.message.clone(),
                exit_code: e.kind.exit_code(),
            });
            Err((e, Some(report)))
        }
    }
}

/// One run of a loaded strategy: what every step of it needs.
struct Run<'a> {
    manifest: &'a Manifest,
    opts: &'a RunOptions<'a>,
    runtime: &'a Runtime,
    loaded: &'a LoadedStrategy,
    info: &'a StrategyInfo,
    run_id: &'a str,
    /// The run's logical time, microseconds since the epoch.
    now: i64,
    chunk: Option<Chunk>,
    /// When the run must stop (`limits.wall_seconds` from its start).
    deadline: Instant,
}

impl Run<'_> {
    /// `work`, unless the run's deadline passes or a stop is asked first: then `work` is
    /// dropped where it stands (a guest stops at its next yield, a host call at its next
    /// await) and the error says why.
    async fn bounded<T>(&self, work: impl Future<Output = T>) -> Result<T> {
        tokio::select! {
            out = work => Ok(out),
            () = tokio::time::sleep_until(self.deadline.into()) => {
                Err(deadline_passed(&self.manifest.limits()))
            }
            stop = stop::requested() => Err(stop),
        }
    }

    async fn execute(&self, report: &mut RunReport) -> Result<()> {
        let Run {
            manifest,
            opts,
            loaded,
            info,
            run_id,
            ..
        } = *self;
        // The history records every run that reached the state store, whatever fails next.
        let open = if opts.dry_run {
            Open::Plan
        } else {
            Open::Create
        };
        let mut state = StateStore::open(
            connectors::connect(&manifest.state, Kind::State, open).await?,
            !opts.dry_run,
        )
        .await?;
        let mut record = RunRecord {
            run_id: run_id.into(),
            pipeline: manifest.pipeline.clone(),
            strategy_name: info.name.clone(),
            strategy_version: info.version.clone(),
            strategy_hash: loaded.hash.clone(),
            started_at: report.started_at.clone(),
            finished_at: None,
            rows_read: 0,
            rows_written: 0,
            outcome: "running".into(),
            error: None,
        };
        let mut stale = Vec::new();
        if !opts.dry_run {
            if self.chunk.is_none() {
                state.lock_pipeline(&manifest.pipeline).await?;
                stale = state
                    .abandon_stale_runs(
                        &manifest.pipeline,
                        &info.name,
                        run_id,
                        &model::time::format_timestamp(now_micros()),
                    )
                    .await?;
            }
            state.record_run(&record).await?;
        }
        let (result, mut state) = self.run_strategy(report, state, &stale).await;
        report.outcome = match (&result, opts.dry_run) {
            (Ok(()), true) => "planned".into(),
            (Ok(()), false) => "succeeded".into(),
            (Err(_), _) => "failed".into(),
        };
        if !opts.dry_run {
            record.finished_at = Some(model::time::format_timestamp(now_micros()));
            record.rows_read = report.rows_read as i64;
            record.rows_written = report.rows_written as i64;
            record.outcome = report.outcome.clone();
            record.error = result.as_ref().err().map(ToString::to_string);
            if let Err(e) = state.record_run(&record).await {
                tracing::warn!("could not record the run in the history: {e}");
            }
        }
        result
    }

    /// Connects source and sink, drops the staging of the `stale` runs (killed before
    /// their cleanup), runs the component, cleans up. Always hands the state store back so
    /// the run can be recorded.
    async fn run_strategy(
        &self,
        report: &mut RunReport,
        state: StateStore,
        stale: &[String],
    ) -> (Result<()>, StateStore) {
        let Run {
            manifest,
            opts,
            runtime,
            loaded,
            info,
            run_id,
            now,
            ..
        } = *self;
        let prepared = async {
            let mut source = connectors::connect_source(manifest).await?;
            let schema = source.schema().await?;
            let options = strategy_options(info, &manifest.strategy, Some(&schema))?;
            let mut sink = connectors::connect_sink(manifest, run_id, opts.dry_run).await?;
            if !stale.is_empty() {
                let dropped = sink.drop_staging_of(stale).await?;
                tracing::warn!(
                    "{} earlier run(s) of this pipeline ended without finishing (killed?): marked abandoned in the history, {dropped} staging table(s) dropped",
                    stale.len()
                );
            }
            if let Some(chunk) = &self.chunk {
                let range: model::RangeTerm = chunk.range.clone().cross();
                sink.set_fence(format!(
                    "dpone.chunk.{}.{}.{}",
                    manifest.pipeline,
                    model::value_display(&range.low),
                    model::value_display(&range.high)
                ));
            }
            check_needs(info, manifest, opts.strategy.is_some())?;
            Ok::<_, Error>((source, sink, options))
        };
        let (source, sink, options) = match self.bounded(prepared).await.and_then(|r| r) {
            Ok(parts) => parts,
            Err(e) => return (Err(e), state),
        };
        let colocated = manifest.state_colocated() && !opts.dry_run;
        let pipeline = Pipeline::new(
            manifest,
            source,
            sink,
            state,
            colocated,
            now,
            Progress::new(opts.progress),
        );
        let instantiated = Instant::now();
        let limits = manifest.limits_for(&loaded.needs);
        let mut run_state = RunState::new(&limits, Some(pipeline), run_id);
        run_state.deadline = Some(self.deadline);
        let (mut store, instance) = match runtime.instantiate(loaded, run_state, &limits).await {
            Ok(pair) => pair,
            Err((e, run_state)) => {
                return (
                    Err(e),
                    run_state
                        .pipeline
                        .expect("run instances carry a pipeline")
                        .state,
                );
            }
        };
        report.wasm_load_seconds += instantiated.elapsed().as_secs_f64();
        let ctx = RunContext {
            pipeline: manifest.pipeline.clone(),
            run_id: run_id.into(),
            options,
            chunk: self.chunk.clone(),
        };
        let called = Instant::now();
        let (outcome, stopped) = match self.bounded(instance.call_run(&mut store, &ctx)).await {
            Ok(outcome) => (Some(outcome), None),
            Err(stop) => (None, Some(stop)),
        };
        let call_seconds = called.elapsed().as_secs_f64();
        let was_stopped = stopped.is_some();
        let trapped = match (stopped, &outcome) {
            (Some(stop), _) => Some(stop),
            (None, Some(Err(e))) => Some(classify_trap(e, store.data(), &limits)),
            _ => None,
        };
        let mut pipeline = store
            .into_data()
            .pipeline
            .expect("run instances carry a pipeline");
        report.wasm_guest_seconds = (call_seconds - pipeline.host_seconds).max(0.0);
        report.rows_read = pipeline.rows_read;
        report.rows_forwarded = pipeline.rows_forwarded;
        report.read_streams = pipeline.read_streams;
        report.rows_written = pipeline.rows_written;
        let mut result = match (trapped, outcome) {
            (Some(e), _) => Err(e),
            (None, Some(Ok(Ok(summary)))) => {
                report.rows_deleted = summary.rows_deleted;
                report.message = text::clean(&summary.message, limits.message_len());
                Ok(())
            }
            (None, Some(Ok(Err(guest)))) => Err(guest_error(guest, &limits)),
            (None, _) => unreachable!("a failed or stopped call is classified above"),
        };
        if result.is_ok() && pipeline.sink.in_transaction() {
            result = Err(Error::new(
                Kind::Sandbox,
                format!(
                    "{} returned without committing or rolling back its transaction; it was rolled back",
                    info.name
                ),
            ));
        }
        // A call stopped mid-flight may have left a statement running, holding locks.
        if was_stopped
            && !opts.dry_run
            && let Err(e) = pipeline.sink.abandon().await
        {
            tracing::warn!("could not end the sink's work in flight: {e}");
        }
        // Leftovers exist only after failures or careless strategies; never leave them, even
        // when the failure was the sink connection itself.
        if !pipeline.sink.drop_leftovers().await && !opts.dry_run {
            match pipeline.sink.reconnect().await {
                Ok(()) => {
                    pipeline.sink.drop_leftovers().await;
                }
                Err(e) => tracing::warn!("could not reconnect to drop staging tables: {e}"),
            }
        }
        report.sink_statements = pipeline.sink.statements();
        report.source_objects_created = pipeline
            .source
            .change_feed()
            .map(|feed| feed.created())
            .unwrap_or_default();
        (result, pipeline.state)
    }
}

/// The first capability a strategy needs that `caps` lacks, in words; `None` when the
/// sink meets all its needs. One rule for runs and the matrix preflight.
pub fn missing_capability(info: &StrategyInfo, caps: &SinkCapabilities) -> Option<&'static str> {
    [
        (
            info.needs.transactions && !caps.transactions,
            "transactions",
        ),
        (info.needs.rename_swap && !caps.rename_swap, "rename-swap"),
        (
            info.needs.mutable_target && caps.append_only_log,
            "a mutable target (the sink is an append-only log)",
        ),
    ]
    .into_iter()
    .find_map(|(missing, what)| missing.then_some(what))
}

/// Refuses a strategy whose needs the sink cannot meet, before anything runs.
fn check_needs(info: &StrategyInfo, manifest: &Manifest, overridden: bool) -> Result<()> {
    let declared = manifest.sink.sink_capabilities().ok_or_else(|| {
        Error::config(
            "sink.kind",
            format!("`{}` cannot be a sink", manifest.sink.kind()),
        )
    })?;
    match missing_capability(info, &declared) {
        Some(what) => Err(Error::config(
            if overridden {
                "--strategy"
            } else {
                "sink.strategy.mode"
            },
            format!(
                "{} needs {what}, which sink `{}` does not offer",
                info.name,
                manifest.sink_table()
            ),
        )),
        None => Ok(()),
    }
}

/// A strategy's own error, its text cleaned and cut to `limits.message_chars` (it is
/// printed, stored in the run history and written to the report).
fn guest_error(
    e: crate::runtime::bindings::dpone::strategy::types::DponeError,
    limits: &Limits,
) -> Error {
    use crate::runtime::bindings::dpone::strategy::types::DponeError as E;
    let m = |message: String| text::clean(&message, limits.message_len());
    match e {
        E::InvalidConfig(f) => Error::config(text::name(&f.field), m(f.message)),
        E::Source(message) => Error::new(Kind::Source, m(message)),
        E::Sink(message) => Error::new(Kind::Sink, m(message)),
        E::State(message) => Error::new(Kind::State, m(message)),
        E::KeyViolation(message) => Error::new(Kind::KeyViolation, m(message)),
        E::Unsupported(message) => Error::new(Kind::Unsupported, m(message)),
        E::InvalidHandle(message) => Error::new(Kind::InvalidHandle, m(message)),
        E::LimitExceeded(f) => Error::limit(text::name(&f.field), m(f.message)),
    }
}

/// Opens the state store of a manifest (for `state show`).
pub async fn open_state(manifest: &Manifest) -> Result<StateStore> {
    StateStore::open(
        connectors::connect(&manifest.state, Kind::State, Open::Plan).await?,
        false,
    )
    .await
}
