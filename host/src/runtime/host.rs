//! Capability implementations: the generated `Host` traits over one run's connectors.
//!
//! Each guest handle (scan, staging) lives in the store's `ResourceTable`, bounded by
//! [`MAX_HANDLES`]; a guest can only reach the source, sink and state of the pipeline that
//! instantiated it.

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::mpsc;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::dpone::strategy::{clock, log, sink, source, state, types};
use super::convert::Cross;
use super::engine::{CALL_FUEL, GuestLimiter, Limits, ROW_FUEL};
use super::report::Progress;
use crate::connectors::dialect::KeyMatch;
use crate::connectors::sink::StagingKind;
use crate::connectors::source::{ChangeRead, ScanKind};
use crate::connectors::{ChangeFeed, ScanPart, Sink, Source, StagingWriter, WireRows};
use crate::connectors::{Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{
    self, ChangePart, ChangeWindow, Column, DataType, ScanBounds, ScanStats, Schema,
    SinkCapabilities, SourceCapabilities, Term, Value,
};
use crate::state::StateStore;
use crate::text;

/// Live scan and staging handles a guest may hold at once.
pub const MAX_HANDLES: usize = 256;

/// The largest `limit` of `staging.distinct-values`: the values cross into the guest.
pub const MAX_DISTINCT_VALUES: u32 = 10_000;

fn no_stats() -> ScanStats {
    ScanStats {
        rows: 0,
        bytes: 0,
        max_cursor: None,
        resume: None,
    }
}

/// A scan the guest opened; the host runs it when the guest loads it into staging.
#[derive(Debug)]
pub struct ScanHandle {
    scan: ScanKind,
    stats: ScanStats,
    loaded: bool,
}

/// A staging table this run created.
#[derive(Debug)]
pub struct StagingHandle {
    table: TableName,
    /// Every staging column: the source columns, then the row hash column if any.
    schema: Schema,
    /// The row hash column the host fills while loading.
    row_hash: Option<String>,
    /// Rows loaded into it so far: what a swap publishes, without counting the target.
    rows: u64,
    /// Only a publishable staging table (created like the target) may become the target.
    kind: StagingKind,
}

impl StagingHandle {
    /// The columns read from the source (all but the row hash).
    fn source_schema(&self) -> Schema {
        let mut schema = self.schema.clone();
        schema
            .columns
            .retain(|c| Some(&c.name) != self.row_hash.as_ref());
        schema
    }
}

/// The connectors and bookkeeping of one pipeline run.
pub struct Pipeline {
    pub name: String,
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
    pub state: StateStore,
    /// State commits inside the sink's transaction.
    pub state_colocated: bool,
    /// What the source and the sink connectors declare they can do.
    pub source_capabilities: SourceCapabilities,
    pub sink_capabilities: SinkCapabilities,
    /// The committed entries, read at the first `state.put` to check the budgets.
    committed_state: Option<BTreeMap<String, Value>>,
    /// The run's logical time (`clock.now`), microseconds since the epoch.
    pub now_micros: i64,
    /// `state.put` entries not yet durable.
    pending_state: BTreeMap<String, Value>,
    pub progress: Progress,
    /// How loads move rows (the manifest's `transfer` section).
    pub transfer: crate::manifest::Transfer,
    /// Wall time spent inside host imports, to report the guest's share.
    pub host_seconds: f64,
    pub rows_read: u64,
    /// Of `rows_read`, the rows a load forwarded undecoded.
    pub rows_forwarded: u64,
    /// The most streams one load read in.
    pub read_streams: u32,
    pub rows_written: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The connectors of `manifest`'s pipeline and its state store, for one run.
    pub fn new(
        manifest: &crate::manifest::Manifest,
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
        state: StateStore,
        state_colocated: bool,
        now_micros: i64,
        progress: Progress,
    ) -> Self {
        let declared = "the manifest was validated: its source and sink play those roles";
        Pipeline {
            name: manifest.pipeline.clone(),
            source,
            sink,
            state,
            state_colocated,
            source_capabilities: manifest.source.source_capabilities().expect(declared),
            sink_capabilities: manifest.sink.sink_capabilities().expect(declared),
            committed_state: None,
            now_micros,
            pending_state: BTreeMap::new(),
            progress,
            transfer: manifest.transfer.clone(),
            host_seconds: 0.0,
            rows_read: 0,
            rows_forwarded: 0,
            read_streams: 0,
            rows_written: 0,
        }
    }

    fn now_text(&self) -> String {
        model::time::format_timestamp(self.now_micros)
    }

    /// The staged state entries, to make durable now; the budget check counts them as
    /// committed from here on.
    fn take_pending_state(&mut self) -> BTreeMap<String, Value> {
        let pending = std::mem::take(&mut self.pending_state);
        if let Some(committed) = self.committed_state.as_mut() {
            committed.extend(pending.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        pending
    }

    /// Stages `key = value` unless the pipeline's state (committed entries overlaid with
    /// staged ones) would then exceed its budgets.
    async fn put_state(&mut self, key: String, value: Value, limits: &Limits) -> Result<()> {
        if self.committed_state.is_none() {
            self.committed_state = Some(self.state.entries(&self.name).await?);
        }
        let committed = self.committed_state.as_ref().expect("read above");
        let others = committed
            .iter()
            .filter(|(k, _)| !self.pending_state.contains_key(*k))
            .chain(&self.pending_state)
            .filter(|(k, _)| **k != key);
        let size = |k: &str, v: &Value| (k.len() + model::value_size(v)) as u64;
        let (mut entries, mut bytes) = (1u64, size(&key, &value));
        for (k, v) in others {
            entries += 1;
            bytes += size(k, v);
        }
        let shown: String = key.chars().take(64).collect();
        if entries > limits.state_entries {
            return Err(Error::limit(
                "limits.state_entries",
                format!(
                    "state entry {shown:?} would make {entries} entries, more than the pipeline may hold ({})",
                    limits.state_entries
                ),
            ));
        }
        if bytes > limits.state_bytes {
            return Err(Error::limit(
                "limits.state_bytes",
                format!(
                    "state entry {shown:?} would make the pipeline's state {bytes} bytes, more than it may hold ({})",
                    limits.state_bytes
                ),
            ));
        }
        self.pending_state.insert(key, value);
        Ok(())
    }
}

/// The store data of one instance.
pub struct RunState {
    pub limiter: GuestLimiter,
    pub limits: Limits,
    /// Bytes of strategy log lines printed so far (`limits.log_bytes`).
    log_bytes: u64,
    /// Fuel for host work not yet taken from the guest (see `engine::settle`).
    pub fuel_owed: u64,
    /// Fuel for all the host work of the run so far: past `limits.fuel`, host calls fail
    /// at once, even before the next epoch tick settles what is owed.
    host_fuel: u64,
    /// When the run must stop (`limits.wall_seconds`); `None` for describe-only instances.
    pub deadline: Option<Instant>,
    table: ResourceTable,
    handles: usize,
    wasi: WasiCtx,
    /// `None` for describe-only instances (validate, inspect): every capability refuses.
    pub pipeline: Option<Pipeline>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Links the dpone world and the deterministic, empty WASI (see [`super::sandbox`]).
pub fn add_to_linker(linker: &mut Linker<RunState>) -> Result<()> {
    super::bindings::Strategy::add_to_linker::<RunState, HasSelf<RunState>>(linker, |s| s)
        .map_err(|e| Error::internal(format!("linking the dpone world: {e}")))?;
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| Error::internal(format!("linking WASI: {e}")))
}

impl RunState {
    /// The store data of an instance: `pipeline` is `None` for describe-only instances;
    /// `run_id` seeds the instance's WASI randomness ([`super::sandbox`]).
    pub fn new(limits: &Limits, pipeline: Option<Pipeline>, run_id: &str) -> Self {
        let now = pipeline.as_ref().map_or(0, |p| p.now_micros);
        RunState {
            limiter: GuestLimiter::new(limits),
            limits: *limits,
            log_bytes: 0,
            fuel_owed: 0,
            host_fuel: 0,
            deadline: None,
            table: ResourceTable::new(),
            handles: 0,
            wasi: super::sandbox::wasi_ctx(run_id, now),
            pipeline,
        }
    }

    fn pipeline(&mut self) -> Result<&mut Pipeline> {
        self.pipeline.as_mut().ok_or_else(|| {
            Error::new(
                Kind::Unsupported,
                "capabilities are not available while describing a strategy",
            )
        })
    }

    fn push<T: Send + 'static>(&mut self, value: T) -> Result<Resource<T>> {
        if self.handles >= MAX_HANDLES {
            return Err(Error::new(
                Kind::InvalidHandle,
                format!("the strategy holds more than {MAX_HANDLES} live handles"),
            ));
        }
        let r = self
            .table
            .push(value)
            .map_err(|e| Error::new(Kind::InvalidHandle, e.to_string()))?;
        self.handles += 1;
        Ok(r)
    }

    fn get<T: 'static>(&self, r: &Resource<T>) -> Result<&T> {
        self.table
            .get(r)
            .map_err(|e| Error::new(Kind::InvalidHandle, e.to_string()))
    }

    fn get_mut<T: 'static>(&mut self, r: &Resource<T>) -> Result<&mut T> {
        self.table
            .get_mut(r)
            .map_err(|e| Error::new(Kind::InvalidHandle, e.to_string()))
    }

    fn delete<T: 'static>(&mut self, r: Resource<T>) -> Result<T> {
        let v = self
            .table
            .delete(r)
            .map_err(|e| Error::new(Kind::InvalidHandle, e.to_string()))?;
        self.handles -= 1;
        Ok(v)
    }

    /// Times a host import, so the report can tell guest time from host time, and charges
    /// its [`CALL_FUEL`].
    async fn timed<T>(&mut self, f: impl AsyncFnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.charge(CALL_FUEL);
        if self.host_fuel > self.limits.fuel {
            return Err(Error {
                kind: Kind::Sandbox,
                field: Some("limits.fuel".into()),
                message: format!(
                    "the host work this strategy started used all of its fuel (limits.fuel = {}) and it was stopped",
                    self.limits.fuel
                ),
            });
        }
        let started = Instant::now();
        let out = f(self).await;
        if let Some(p) = self.pipeline.as_mut() {
            p.host_seconds += started.elapsed().as_secs_f64();
        }
        out
    }

    /// Charges [`ROW_FUEL`] for each of `rows` a host call moved, and passes the count on.
    fn charge_rows(&mut self, rows: u64) -> u64 {
        self.charge(rows.saturating_mul(ROW_FUEL));
        rows
    }

    fn charge(&mut self, fuel: u64) {
        self.fuel_owed = self.fuel_owed.saturating_add(fuel);
        self.host_fuel = self.host_fuel.saturating_add(fuel);
    }

    async fn staging(&mut self, r: &Resource<StagingHandle>) -> Result<(TableName, Schema)> {
        let s = self.get(r)?;
        Ok((s.table.clone(), s.schema.clone()))
    }
}

impl types::Host for RunState {
    fn convert_dpone_error(&mut self, err: Error) -> wasmtime::Result<types::DponeError> {
        use types::DponeError as E;
        Ok(match err.kind {
            Kind::Config => E::InvalidConfig(types::FieldError {
                field: err.field.unwrap_or_else(|| "sink.strategy".into()),
                message: err.message,
            }),
            Kind::Source => E::Source(err.message),
            Kind::Sink => E::Sink(err.message),
            Kind::State => E::State(err.message),
            Kind::KeyViolation => E::KeyViolation(err.message),
            Kind::Unsupported => E::Unsupported(err.message),
            Kind::InvalidHandle => E::InvalidHandle(err.message),
            Kind::Limit => E::LimitExceeded(types::FieldError {
                field: err.field.unwrap_or_else(|| "limits".into()),
                message: err.message,
            }),
            // Host bugs and sandbox breaches trap: the guest must not carry on.
            Kind::Sandbox | Kind::Internal | Kind::Interrupted | Kind::Terminated => {
                return Err(wasmtime::Error::new(err));
            }
        })
    }
}

impl source::HostScan for RunState {
    async fn stats(&mut self, scan: Resource<ScanHandle>) -> wasmtime::Result<source::ScanStats> {
        Ok(self.get(&scan)?.stats.clone().cross())
    }

    async fn drop(&mut self, scan: Resource<ScanHandle>) -> wasmtime::Result<()> {
        self.delete(scan)?;
        Ok(())
    }
}

impl source::Host for RunState {
    async fn describe(&mut self) -> Result<source::SourceDescription> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            let schema = p.source.schema().await?;
            Ok(source::SourceDescription {
                name: p.source.name(),
                schema: schema.cross(),
                capabilities: p.source_capabilities.cross(),
            })
        })
        .await
    }

    async fn open_scan(&mut self, bounds: source::ScanBounds) -> Result<Resource<ScanHandle>> {
        let bounds: ScanBounds = bounds.cross();
        self.timed(async |s| {
            let source = &mut s.pipeline()?.source;
            let schema = source.schema().await?;
            source.check_bounds(&schema, &bounds)
        })
        .await?;
        self.push(ScanHandle {
            scan: ScanKind::Table(bounds),
            stats: no_stats(),
            loaded: false,
        })
    }

    async fn open_feed(&mut self, stored: Option<String>) -> Result<source::ChangeWindow> {
        let window: Result<ChangeWindow> = self
            .timed(async |s| {
                let p = s.pipeline()?;
                let dry_run = p.sink.is_dry_run();
                if dry_run {
                    p.sink
                        .note("open the source's change feed (created when missing)".into());
                }
                feed(p)?.open(stored.as_deref(), !dry_run).await
            })
            .await;
        window.map(Cross::cross)
    }

    async fn open_changes(
        &mut self,
        key: Vec<String>,
        after: String,
        up_to: String,
        part: source::ChangePart,
    ) -> Result<Resource<ScanHandle>> {
        let part: ChangePart = part.cross();
        let p = self.pipeline()?;
        let schema = p.source.schema().await?;
        for k in &key {
            schema.require(k, "sink.strategy.unique_key")?;
        }
        if key.is_empty() {
            return Err(Error::config(
                "sink.strategy.unique_key",
                "changes are applied by key: give at least one key column",
            ));
        }
        let read = ChangeRead {
            key,
            after,
            up_to,
            part,
        };
        feed(p)?.check_read(&read)?;
        self.push(ScanHandle {
            scan: ScanKind::Changes(read),
            stats: no_stats(),
            loaded: false,
        })
    }

    async fn ack_feed(&mut self, position: String) -> Result<()> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            if p.sink.is_dry_run() {
                p.sink
                    .note(format!("acknowledge the change feed up to {position}"));
                return Ok(());
            }
            crate::failpoint("cdc.before_ack");
            feed(p)?.ack(&position).await
        })
        .await
    }

    async fn max_value(
        &mut self,
        column: String,
        bounds: source::ScanBounds,
    ) -> Result<types::Value> {
        let bounds: ScanBounds = bounds.cross();
        self.timed(async |s| s.pipeline()?.source.max_value(&column, &bounds).await)
            .await
            .map(Cross::cross)
    }

    async fn row_count(&mut self, bounds: source::ScanBounds) -> Result<u64> {
        let bounds: ScanBounds = bounds.cross();
        self.timed(async |s| s.pipeline()?.source.row_count(&bounds).await)
            .await
    }

    async fn row_version_horizon(&mut self) -> Result<String> {
        self.timed(async |s| s.pipeline()?.source.row_version_horizon().await)
            .await
    }
}

impl sink::HostStaging for RunState {
    async fn name(&mut self, staging: Resource<StagingHandle>) -> wasmtime::Result<String> {
        Ok(self.get(&staging)?.table.to_string())
    }

    async fn row_count(&mut self, staging: Resource<StagingHandle>) -> Result<u64> {
        let (table, _) = self.staging(&staging).await?;
        self.timed(async |s| s.pipeline()?.sink.staging_row_count(&table).await)
            .await
    }

    async fn distinct_values(
        &mut self,
        staging: Resource<StagingHandle>,
        column: String,
        limit: u32,
    ) -> Result<Vec<types::Value>> {
        if limit > MAX_DISTINCT_VALUES {
            return Err(Error::new(
                Kind::InvalidHandle,
                format!(
                    "distinct-values takes a limit of at most {MAX_DISTINCT_VALUES}, not {limit}"
                ),
            ));
        }
        let (table, schema) = self.staging(&staging).await?;
        let t = schema.require(&column, "sink.strategy")?.data_type;
        self.timed(async |s| {
            s.pipeline()?
                .sink
                .distinct_values(&table, &column, &t, limit)
                .await
        })
        .await
        .map(Cross::cross)
    }

    async fn check_keys(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
    ) -> Result<sink::KeyCheck> {
        let (table, schema) = self.staging(&staging).await?;
        self.timed(async |s| s.pipeline()?.sink.check_keys(&table, &schema, &key).await)
            .await
            .map(Cross::cross)
    }

    async fn drop(&mut self, staging: Resource<StagingHandle>) -> wasmtime::Result<()> {
        // The table itself stays until drop-staging or the end-of-run cleanup.
        self.delete(staging)?;
        Ok(())
    }
}

impl sink::Host for RunState {
    async fn capabilities(&mut self) -> wasmtime::Result<sink::SinkCapabilities> {
        Ok(self.pipeline()?.sink_capabilities.cross())
    }

    async fn describe(&mut self) -> Result<sink::TargetDescription> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            let schema = p.sink.describe().await?;
            Ok(sink::TargetDescription {
                table: p.sink.target().to_string(),
                exists: schema.is_some(),
                schema: schema.cross(),
            })
        })
        .await
    }

    async fn ensure_target(&mut self, schema: types::Schema, key: Vec<String>) -> Result<()> {
        let schema: Schema = schema.cross();
        self.timed(async |s| s.pipeline()?.sink.ensure_target(&schema, &key).await)
            .await
    }

    async fn create_staging(
        &mut self,
        schema: types::Schema,
        options: sink::StagingOptions,
    ) -> Result<Resource<StagingHandle>> {
        let schema: Schema = schema.cross();
        let kind = match options.kind {
            sink::StagingKind::Scratch => StagingKind::Scratch,
            sink::StagingKind::Publishable => StagingKind::Publishable,
        };
        let mut full = schema;
        if let Some(column) = &options.row_hash {
            if full.column(column).is_some() {
                return Err(Error::config(
                    "sink.strategy",
                    format!("the row hash column `{column}` is already a source column"),
                ));
            }
            full.columns.push(Column {
                name: column.clone(),
                data_type: DataType::Text,
                nullable: false,
            });
        }
        let table = self
            .timed(async |s| s.pipeline()?.sink.create_staging(&full, kind).await)
            .await?;
        self.push(StagingHandle {
            table,
            schema: full,
            row_hash: options.row_hash,
            rows: 0,
            kind,
        })
    }

    async fn load(
        &mut self,
        staging: Resource<StagingHandle>,
        scan: Resource<ScanHandle>,
    ) -> Result<source::ScanStats> {
        let target = {
            let handle = self.get(&staging)?;
            LoadTarget {
                table: handle.table.clone(),
                source_schema: handle.source_schema(),
                schema: handle.schema.clone(),
                hashed: handle.row_hash.is_some(),
                kind: handle.kind,
            }
        };
        let handle = self.get_mut(&scan)?;
        if handle.loaded {
            return Err(Error::new(
                Kind::InvalidHandle,
                "this scan was already loaded; open a new one",
            ));
        }
        handle.loaded = true;
        let scan_kind = handle.scan.clone();
        let stats = self
            .timed(async |s| load(s.pipeline()?, &target, &scan_kind).await)
            .await?;
        self.get_mut(&scan)?.stats = stats.clone();
        self.get_mut(&staging)?.rows += stats.rows;
        self.pipeline()?.rows_read += stats.rows;
        self.charge_rows(stats.rows);
        Ok(stats.cross())
    }

    async fn begin(&mut self) -> Result<()> {
        self.timed(async |s| s.pipeline()?.sink.begin().await).await
    }

    async fn commit(&mut self) -> Result<()> {
        crate::failpoint("sink.before_commit");
        self.timed(async |s| {
            let p = s.pipeline()?;
            let also = if p.state_colocated {
                let pending = p.take_pending_state();
                p.state.entry_writes(&p.name, &pending, &p.now_text())?
            } else {
                Vec::<Statement>::new()
            };
            p.sink.commit(also).await
        })
        .await
    }

    async fn rollback(&mut self) -> Result<()> {
        self.timed(async |s| s.pipeline()?.sink.rollback().await)
            .await
    }

    async fn insert_from_staging(&mut self, staging: Resource<StagingHandle>) -> Result<u64> {
        let (table, schema) = self.staging(&staging).await?;
        let n = self
            .timed(async |s| {
                s.pipeline()?
                    .sink
                    .insert_from_staging(&table, &schema.names())
                    .await
            })
            .await?;
        self.pipeline()?.rows_written += n;
        Ok(self.charge_rows(n))
    }

    async fn delete_rows(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
        m: sink::KeyMatch,
        filter: Vec<types::Term>,
    ) -> Result<u64> {
        let filter: Vec<Term> = filter.cross();
        let (table, schema) = self.staging(&staging).await?;
        let m = key_match(&schema, &key, m)?;
        self.timed(async |s| {
            let p = s.pipeline()?;
            check_target_use(p, &key, &filter, &[]).await?;
            p.sink.delete_rows(&table, &key, &m, &filter).await
        })
        .await
        .map(|n| self.charge_rows(n))
    }

    async fn update_rows(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
        m: sink::KeyMatch,
        filter: Vec<types::Term>,
        assignments: Vec<sink::Assignment>,
    ) -> Result<u64> {
        let filter: Vec<Term> = filter.cross();
        let (table, schema) = self.staging(&staging).await?;
        let m = key_match(&schema, &key, m)?;
        let assignments = pairs(assignments);
        self.timed(async |s| {
            let p = s.pipeline()?;
            check_target_use(p, &key, &filter, &assignments).await?;
            p.sink
                .update_rows(&table, &key, &m, &filter, &assignments)
                .await
        })
        .await
        .map(|n| self.charge_rows(n))
    }

    async fn insert_new_rows(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
        filter: Vec<types::Term>,
        extra: Vec<sink::Assignment>,
    ) -> Result<u64> {
        let filter: Vec<Term> = filter.cross();
        let (table, schema) = self.staging(&staging).await?;
        key_match(&schema, &key, sink::KeyMatch::InStaging)?;
        let extra = pairs(extra);
        let n = self
            .timed(async |s| {
                let p = s.pipeline()?;
                check_target_use(p, &key, &filter, &extra).await?;
                p.sink
                    .insert_new_rows(&table, &schema.names(), &key, &filter, &extra)
                    .await
            })
            .await?;
        self.pipeline()?.rows_written += n;
        Ok(self.charge_rows(n))
    }

    async fn check_target_keys(
        &mut self,
        key: Vec<String>,
        filter: Vec<types::Term>,
    ) -> Result<sink::KeyCheck> {
        let filter: Vec<Term> = filter.cross();
        self.timed(async |s| {
            let p = s.pipeline()?;
            let schema = check_target_use(p, &key, &filter, &[])
                .await?
                .ok_or_else(|| {
                    Error::new(
                        Kind::Sink,
                        format!("target `{}` does not exist", p.sink.target()),
                    )
                })?;
            p.sink.check_target_keys(&schema, &key, &filter).await
        })
        .await
        .map(Cross::cross)
    }

    async fn delete_where(&mut self, filter: Vec<types::Term>) -> Result<u64> {
        let filter: Vec<Term> = filter.cross();
        self.timed(async |s| {
            let p = s.pipeline()?;
            check_target_use(p, &[], &filter, &[]).await?;
            p.sink.delete_where(&filter).await
        })
        .await
        .map(|n| self.charge_rows(n))
    }

    async fn swap(&mut self, staging: Resource<StagingHandle>) -> Result<()> {
        let handle = self.delete(staging)?;
        if handle.kind != StagingKind::Publishable {
            return Err(Error::new(
                Kind::InvalidHandle,
                "swap publishes only a publishable staging table: a scratch one lacks the target's keys, indexes, grants and durability",
            ));
        }
        if !self.pipeline()?.sink_capabilities.rename_swap {
            return Err(Error::new(
                Kind::Unsupported,
                "swap: this sink does not declare the rename-swap capability",
            ));
        }
        self.timed(async |s| s.pipeline()?.sink.swap(&handle.table).await)
            .await?;
        self.pipeline()?.rows_written += handle.rows;
        self.charge_rows(handle.rows);
        Ok(())
    }

    async fn replace_partitions(
        &mut self,
        staging: Resource<StagingHandle>,
        column: String,
    ) -> Result<Option<sink::Replaced>> {
        let (table, schema) = self.staging(&staging).await?;
        schema.require(&column, "sink.strategy.partition.column")?;
        let replaced = self
            .timed(async |s| {
                let p = s.pipeline()?;
                check_target_use(p, std::slice::from_ref(&column), &[], &[]).await?;
                p.sink
                    .replace_partitions(&table, &schema.names(), &column)
                    .await
            })
            .await?;
        if let Some((deleted, inserted)) = replaced {
            self.pipeline()?.rows_written += inserted;
            self.charge_rows(deleted.saturating_add(inserted));
        }
        Ok(replaced.map(|(deleted, inserted)| sink::Replaced { deleted, inserted }))
    }

    async fn truncate_and_insert(&mut self, staging: Resource<StagingHandle>) -> Result<u64> {
        let (table, schema) = self.staging(&staging).await?;
        let n = self
            .timed(async |s| {
                s.pipeline()?
                    .sink
                    .truncate_and_insert(&table, &schema.names())
                    .await
            })
            .await?;
        self.pipeline()?.rows_written += n;
        Ok(self.charge_rows(n))
    }

    async fn drop_staging(&mut self, staging: Resource<StagingHandle>) -> Result<()> {
        let handle = self.delete(staging)?;
        self.timed(async |s| s.pipeline()?.sink.drop_staging(&handle.table).await)
            .await
    }
}

/// The pipeline's change feed; `unsupported` on sources without one.
fn feed(p: &mut Pipeline) -> Result<&mut dyn ChangeFeed> {
    p.source.change_feed().ok_or_else(no_feed)
}

fn no_feed() -> Error {
    Error::new(
        Kind::Unsupported,
        "this source has no change feed (PostgreSQL and SQL Server sources have one)",
    )
}

/// Checks that a key-match names staging columns, and converts it.
fn key_match(schema: &Schema, key: &[String], m: sink::KeyMatch) -> Result<KeyMatch> {
    for k in key {
        schema.require(k, "sink.strategy.unique_key")?;
    }
    Ok(match m {
        sink::KeyMatch::InStaging => KeyMatch::InStaging,
        sink::KeyMatch::NotInStaging => KeyMatch::NotInStaging,
        sink::KeyMatch::InStagingDiffering(c) => {
            schema.require(&c, "sink.strategy")?;
            KeyMatch::InStagingDiffering(c)
        }
    })
}

/// Checks the columns a strategy names in a call that changes or checks the target (key,
/// filter, assigned columns) against the target's schema, and the values it passes, before
/// any SQL: on SQLite a double-quoted unknown name is a string literal, so an unchecked
/// filter on a missing column would match every row. A dry run whose target is not created
/// yet checks the values only. Returns the target's schema, `None` in that dry run.
async fn check_target_use(
    p: &mut Pipeline,
    key: &[String],
    filter: &[Term],
    assigned: &[(String, Value)],
) -> Result<Option<Schema>> {
    let values = filter.iter().flat_map(Term::values);
    for v in values.chain(assigned.iter().map(|(_, v)| v)) {
        model::check_value(v, "sink.strategy")?;
    }
    let Some(schema) = p.sink.describe().await? else {
        if p.sink.is_dry_run() {
            return Ok(None);
        }
        return Err(Error::new(
            Kind::Sink,
            format!(
                "target `{}` does not exist: create it with ensure-target first",
                p.sink.target()
            ),
        ));
    };
    for k in key {
        schema.require(k, "sink.strategy.unique_key")?;
    }
    let named = filter.iter().filter_map(Term::column);
    for c in named.chain(assigned.iter().map(|(c, _)| c.as_str())) {
        schema.require(c, "sink.strategy")?;
    }
    Ok(Some(schema))
}

fn pairs(assignments: Vec<sink::Assignment>) -> Vec<(String, Value)> {
    assignments
        .into_iter()
        .map(|a| (a.column, a.value.cross()))
        .collect()
}

/// Where a load writes: the staging table, the source columns it reads, whether the host
/// appends the row hash column, and the table's kind.
struct LoadTarget {
    table: TableName,
    source_schema: Schema,
    schema: Schema,
    hashed: bool,
    kind: StagingKind,
}

/// Streams a scan from the source into a staging table: the source reader, a counter (which
/// also appends row hashes) and the sink's bulk writer run concurrently over bounded
/// channels (back-pressure), so memory stays at a few batches per stream whatever the
/// table size.
///
/// Rows travel undecoded ([`load_wire`]) when the source and the staging table share a wire
/// format and column types, no row hash is added, and `transfer.pass_through` allows it;
/// otherwise as Arrow batches. Both paths count the same rows and cursor maximum and
/// write the same values. A whole-table scan may be split (`transfer.parallelism`): several
/// readers of the table as of one moment feed the one counter, which deals their rows out
/// to as many writers.
async fn load(p: &mut Pipeline, target: &LoadTarget, scan: &ScanKind) -> Result<ScanStats> {
    check_staging_types(&p.source.schema().await?, &target.source_schema)?;
    if p.sink.is_dry_run() {
        return plan_load(p, &target.table, &target.source_schema, scan).await;
    }
    let no_bounds = ScanBounds {
        cursor: None,
        filter: Vec::new(),
        limit: None,
        row_versions: None,
        since: None,
    };
    let bounds = match scan {
        ScanKind::Table(bounds) => bounds,
        ScanKind::Changes(_) => &no_bounds,
    };
    let source_schema = &target.source_schema;
    let cursor = bounds.cursor.as_ref().and_then(|c| {
        let i = source_schema
            .columns
            .iter()
            .position(|col| col.name == c.column)?;
        Some((i, source_schema.columns[i].data_type))
    });
    let parts = match scan {
        ScanKind::Table(bounds) if !p.sink.in_transaction() => {
            p.source
                .split(source_schema, bounds, p.transfer.parallelism)
                .await?
        }
        _ => Vec::new(),
    };
    let writers = p.sink.writers(parts.len().saturating_sub(1)).await?;
    let streams = u32::try_from(parts.len().max(1)).unwrap_or(u32::MAX);
    p.read_streams = p.read_streams.max(streams);
    if streams > 1 {
        tracing::info!(
            "load: {streams} streams reading the table as of one moment, {} writers",
            writers.len() + 1
        );
    }
    let (written, mut stats) = if forwards(p, target, scan).await? {
        let (written, stats) =
            load_wire(p, target, bounds, cursor.map(|(i, _)| i), parts, writers).await?;
        p.rows_forwarded += stats.rows;
        (written, stats)
    } else {
        load_arrow(p, target, scan, cursor, parts, writers).await?
    };
    stats.resume = p.source.resume(bounds);
    p.progress.done("load", stats.rows);
    if written != stats.rows {
        return Err(Error::sink(format!(
            "staging received {written} rows but the source sent {}",
            stats.rows
        )));
    }
    p.sink.loaded(&target.table, target.kind).await?;
    Ok(stats)
}

/// Whether a load can forward rows undecoded: a table scan into staging without a row
/// hash, allowed by `transfer.pass_through`, with the source and staging describing the
/// columns in the same wire format.
async fn forwards(p: &mut Pipeline, target: &LoadTarget, scan: &ScanKind) -> Result<bool> {
    if !p.transfer.pass_through || target.hashed || !matches!(scan, ScanKind::Table(_)) {
        return Ok(false);
    }
    let Some(read) = p.source.wire_format(&target.source_schema).await? else {
        return Ok(false);
    };
    let written = p.sink.wire_format(&target.table, &target.schema).await?;
    Ok(written.as_ref() == Some(&read))
}

/// What a load moves from readers to writers: Arrow batches or undecoded rows, each
/// through its own bulk calls.
trait Chunk: Send + Sized + 'static {
    /// Reads one share of a split scan.
    fn read_part<'a>(
        part: Box<dyn ScanPart>,
        columns: &'a Schema,
        cursor: Option<usize>,
        tx: mpsc::Sender<Self>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Loads into staging on the sink's own session.
    fn load<'a>(
        sink: &'a mut Box<dyn Sink>,
        staging: &'a TableName,
        schema: &'a Schema,
        rx: mpsc::Receiver<Self>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Loads into staging on another session of the sink.
    fn load_on<'a>(
        writer: &'a mut Box<dyn StagingWriter>,
        staging: &'a TableName,
        schema: &'a Schema,
        rx: mpsc::Receiver<Self>,
    ) -> BoxFuture<'a, Result<u64>>;
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Chunk for arrow_array::RecordBatch {
    fn read_part<'a>(
        part: Box<dyn ScanPart>,
        columns: &'a Schema,
        _cursor: Option<usize>,
        tx: mpsc::Sender<Self>,
    ) -> BoxFuture<'a, Result<()>> {
        part.read(columns, tx)
    }

    fn load<'a>(
        sink: &'a mut Box<dyn Sink>,
        staging: &'a TableName,
        schema: &'a Schema,
        rx: mpsc::Receiver<Self>,
    ) -> BoxFuture<'a, Result<u64>> {
        sink.load(staging, schema, rx)
    }

    fn load_on<'a>(
        writer: &'a mut Box<dyn StagingWriter>,
        staging: &'a TableName,
        schema: &'a Schema,
        rx: mpsc::Receiver<Self>,
    ) -> BoxFuture<'a, Result<u64>> {
        writer.load(staging, schema, rx)
    }
}

impl Chunk for WireRows {
    fn read_part<'a>(
        part: Box<dyn ScanPart>,
        columns: &'a Schema,
        cursor: Option<usize>,
        tx: mpsc::Sender<Self>,
    ) -> BoxFuture<'a, Result<()>> {
        part.read_wire(columns, cursor, tx)
    }

    fn load<'a>(
        sink: &'a mut Box<dyn Sink>,
        staging: &'a TableName,
        schema: &'a Schema,
        rx: mpsc::Receiver<Self>,
    ) -> BoxFuture<'a, Result<u64>> {
        sink.load_wire(staging, schema, rx)
    }

    fn load_on<'a>(
        writer: &'a mut Box<dyn StagingWriter>,
        staging: &'a TableName,
        schema: &'a Schema,
        rx: mpsc::Receiver<Self>,
    ) -> BoxFuture<'a, Result<u64>> {
        writer.load_wire(staging, schema, rx)
    }
}

/// The readers of a load: the source itself (`single`) or every share of a split read.
async fn read_all<T: Chunk>(
    parts: Vec<Box<dyn ScanPart>>,
    columns: &Schema,
    cursor: Option<usize>,
    tx: mpsc::Sender<T>,
    single: impl AsyncFnOnce(mpsc::Sender<T>) -> Result<()>,
) -> Result<()> {
    if parts.is_empty() {
        return single(tx).await;
    }
    let reads: Vec<_> = parts
        .into_iter()
        .map(|part| T::read_part(part, columns, cursor, tx.clone()))
        .collect();
    // The counter ends when the last reader's sender goes.
    drop(tx);
    futures_util::future::try_join_all(reads).await.map(drop)
}

/// Runs `read` (the readers, sending into the channel of `from_readers`), a counter applying
/// `count` to every chunk, and the writers: the sink's own session and every one of
/// `writers`, concurrently. The counter deals chunks out to the writers in turn. Returns
/// the rows the writers wrote.
async fn pump<T: Chunk>(
    sink: &mut Box<dyn Sink>,
    mut writers: Vec<Box<dyn StagingWriter>>,
    target: &LoadTarget,
    read: impl Future<Output = Result<()>>,
    mut from_readers: mpsc::Receiver<T>,
    mut count: impl FnMut(T) -> Result<T>,
) -> Result<u64> {
    let (to_writers, mut from_counter): (Vec<_>, Vec<_>) = (0..=writers.len())
        .map(|_| mpsc::channel(model::CHANNEL_BATCHES))
        .unzip();
    let counter = async {
        let mut next = 0;
        while let Some(chunk) = from_readers.recv().await {
            let chunk = count(chunk)?;
            // A writer that stopped has failed; its error ends the load.
            if to_writers[next].send(chunk).await.is_err() {
                break;
            }
            next = (next + 1) % to_writers.len();
        }
        drop(to_writers);
        Ok::<(), Error>(())
    };
    let (table, schema) = (&target.table, &target.schema);
    let own = T::load(sink, table, schema, from_counter.remove(0));
    let others = writers
        .iter_mut()
        .zip(from_counter)
        .map(|(w, rx)| T::load_on(w, table, schema, rx));
    let ((), (), own, others) = tokio::try_join!(
        read,
        counter,
        own,
        futures_util::future::try_join_all(others)
    )?;
    Ok(own + others.iter().sum::<u64>())
}

/// The Arrow path of [`load`]: returns the rows staging received and the scan's counters.
async fn load_arrow(
    p: &mut Pipeline,
    target: &LoadTarget,
    scan: &ScanKind,
    cursor: Option<(usize, DataType)>,
    parts: Vec<Box<dyn ScanPart>>,
    writers: Vec<Box<dyn StagingWriter>>,
) -> Result<(u64, ScanStats)> {
    let source_schema = &target.source_schema;
    let staging_arrow = target.schema.to_arrow();
    let mut stats = no_stats();
    let progress = &mut p.progress;
    let count = |batch: arrow_array::RecordBatch| {
        stats.rows += batch.num_rows() as u64;
        stats.bytes += batch.get_array_memory_size() as u64;
        if let Some((i, t)) = &cursor
            && let Some(m) = model::column_max(&batch, *i, t)
        {
            model::keep_max(&mut stats.max_cursor, &m);
        }
        progress.rows("load", stats.rows);
        if !target.hashed {
            return Ok(batch);
        }
        let mut columns = batch.columns().to_vec();
        columns.push(std::sync::Arc::new(model::row_hashes(
            &batch,
            source_schema,
        )));
        arrow_array::RecordBatch::try_new(staging_arrow.clone(), columns).map_err(Error::internal)
    };
    let source = &mut p.source;
    let (tx, rx) = mpsc::channel(model::CHANNEL_BATCHES);
    let read = read_all(parts, source_schema, None, tx, async |tx| match scan {
        ScanKind::Table(bounds) => source.read(source_schema, bounds, tx).await,
        ScanKind::Changes(window) => {
            let feed = source.change_feed().ok_or_else(no_feed)?;
            feed.read(source_schema, window, tx).await
        }
    });
    let written = pump(&mut p.sink, writers, target, read, rx, count).await?;
    Ok((written, stats))
}

/// The undecoded path of [`load`] (see [`WireRows`]); `bytes` counts the rows' wire bytes.
async fn load_wire(
    p: &mut Pipeline,
    target: &LoadTarget,
    bounds: &ScanBounds,
    cursor: Option<usize>,
    parts: Vec<Box<dyn ScanPart>>,
    writers: Vec<Box<dyn StagingWriter>>,
) -> Result<(u64, ScanStats)> {
    let source_schema = &target.source_schema;
    let mut stats = no_stats();
    let progress = &mut p.progress;
    let count = |rows: WireRows| {
        stats.rows += rows.rows;
        stats.bytes += rows.bytes.len() as u64;
        if let Some(m) = &rows.max_cursor {
            model::keep_max(&mut stats.max_cursor, m);
        }
        progress.rows("load", stats.rows);
        Ok(rows)
    };
    let source = &mut p.source;
    let (tx, rx) = mpsc::channel(model::CHANNEL_BATCHES);
    let read = read_all(parts, source_schema, cursor, tx, async |tx| {
        source.read_wire(source_schema, bounds, cursor, tx).await
    });
    let written = pump(&mut p.sink, writers, target, read, rx, count).await?;
    Ok((written, stats))
}

/// Refuses a staging table whose columns do not have their source columns' types. The
/// readers decode source rows as the staging schema declares them (a binary COPY decoder
/// trusts the declared types), so an `int64` column staged as `float64` would load wrong
/// values without an error. A strategy bug, so it traps; nothing is loaded.
fn check_staging_types(source: &Schema, staging: &Schema) -> Result<()> {
    for c in &staging.columns {
        let Some(from) = source.column(&c.name) else {
            return Err(Error::new(
                Kind::Sandbox,
                format!(
                    "staging column {:?} is not a source column: a load fills staging from source columns of the same names",
                    c.name
                ),
            ));
        };
        if from.data_type != c.data_type {
            return Err(Error::new(
                Kind::Sandbox,
                format!(
                    "staging column {:?} is declared {} but the source column is {}: stage source columns with the types `source.describe` gives (nothing was loaded)",
                    c.name,
                    model::type_name(&c.data_type),
                    model::type_name(&from.data_type)
                ),
            ));
        }
    }
    Ok(())
}

/// A dry run's load: no row moves. The plan shows the scan's query, and the counters come
/// from aggregates so the strategy plans with the real row count and cursor.
async fn plan_load(
    p: &mut Pipeline,
    staging: &TableName,
    schema: &Schema,
    scan: &ScanKind,
) -> Result<ScanStats> {
    let bounds = match scan {
        ScanKind::Table(bounds) => bounds,
        ScanKind::Changes(w) => {
            p.sink.note(format!(
                "read the {:?} of changes after {} up to {} from the change feed into {staging}",
                w.part, w.after, w.up_to
            ));
            return Ok(no_stats());
        }
    };
    let query = p.source.describe_scan(schema, bounds)?;
    p.sink.note(format!("scan source: {query}"));
    p.sink.note(format!("bulk load into {staging}"));
    let rows = p.source.row_count(bounds).await?;
    let max_cursor = match &bounds.cursor {
        Some(c) if rows > 0 => Some(p.source.max_value(&c.column, bounds).await?),
        _ => None,
    };
    Ok(ScanStats {
        max_cursor,
        rows,
        ..no_stats()
    })
}

impl state::Host for RunState {
    async fn get(&mut self, key: String) -> Result<Option<types::Value>> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            if let Some(v) = p.pending_state.get(&key) {
                return Ok(Some(v.clone().cross()));
            }
            let name = p.name.clone();
            Ok(p.state.entries(&name).await?.remove(&key).cross())
        })
        .await
    }

    async fn put(&mut self, key: String, value: types::Value) -> Result<()> {
        let value: Value = value.cross();
        self.timed(async |s| {
            let limits = s.limits;
            s.pipeline()?.put_state(key, value, &limits).await
        })
        .await
    }

    async fn commit(&mut self) -> Result<()> {
        let p = self.pipeline()?;
        if p.sink.in_transaction() {
            return Err(Error::new(
                Kind::Unsupported,
                "state.commit while the sink transaction is open: commit the sink first",
            ));
        }
        let pending = p.take_pending_state();
        if p.sink.is_dry_run() {
            for (k, v) in &pending {
                p.sink
                    .note(format!("state: {k} = {}", model::value_display(v)));
            }
            return Ok(());
        }
        let writes = p.state.entry_writes(&p.name, &pending, &p.now_text())?;
        p.state.apply(&writes).await
    }
}

impl log::Host for RunState {
    /// Prints a strategy's log line, cleaned (see [`crate::text`]), until the run's
    /// `limits.log_bytes` are spent; one warning says when later lines are dropped.
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let budget = self.limits.log_bytes;
        if self.log_bytes >= budget {
            return Ok(());
        }
        let message = text::clean(&message, self.limits.message_len());
        self.log_bytes += message.len() as u64;
        match level {
            log::Level::Debug => tracing::debug!(target: "strategy", "{message}"),
            log::Level::Info => tracing::info!(target: "strategy", "{message}"),
            log::Level::Warn => tracing::warn!(target: "strategy", "{message}"),
            log::Level::Error => tracing::error!(target: "strategy", "{message}"),
        }
        if self.log_bytes >= budget {
            tracing::warn!(
                "the strategy logged {budget} bytes (limits.log_bytes): its later log lines are dropped"
            );
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        phase: String,
        done: u64,
        total: Option<u64>,
    ) -> wasmtime::Result<()> {
        let phase = text::clean(&phase, PHASE_CHARS.min(self.limits.message_len()));
        if let Some(p) = self.pipeline.as_mut() {
            p.progress.phase(&phase, done, total);
        }
        Ok(())
    }
}

/// Characters of a progress phase name shown: it is repeated on every progress line.
const PHASE_CHARS: usize = 80;

impl clock::Host for RunState {
    async fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.pipeline.as_ref().map_or(0, |p| p.now_micros))
    }
}
