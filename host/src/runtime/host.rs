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
use super::engine::GuestLimiter;
use super::report::Progress;
use crate::connectors::render::KeyMatch;
use crate::connectors::sink::{SqlSink, StagingKind};
use crate::connectors::source::{self as source_ops, ChangeWindow, ScanKind, SqlSource};
use crate::connectors::{Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{
    self, ChangeFeed, ChangePart, Column, DataType, FeedPosition, ScanBounds, ScanStats, Schema,
    Value,
};
use crate::state::StateStore;

/// Live scan and staging handles a guest may hold at once.
pub const MAX_HANDLES: usize = 256;

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
    pub source: SqlSource,
    pub sink: SqlSink,
    pub state: StateStore,
    /// State commits inside the sink's transaction.
    pub state_colocated: bool,
    /// The run's logical time (`clock.now`), microseconds since the epoch.
    pub now_micros: i64,
    /// `state.put` entries not yet durable.
    pending_state: BTreeMap<String, Value>,
    pub progress: Progress,
    /// Wall time spent inside host imports, to report the guest's share.
    pub host_seconds: f64,
    pub rows_read: u64,
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
    pub fn new(
        name: String,
        source: SqlSource,
        sink: SqlSink,
        state: StateStore,
        state_colocated: bool,
        now_micros: i64,
        progress: Progress,
    ) -> Self {
        Pipeline {
            name,
            source,
            sink,
            state,
            state_colocated,
            now_micros,
            pending_state: BTreeMap::new(),
            progress,
            host_seconds: 0.0,
            rows_read: 0,
            rows_written: 0,
        }
    }

    fn now_text(&self) -> String {
        model::time::format_timestamp(self.now_micros)
    }
}

/// The store data of one instance.
pub struct RunState {
    pub limiter: GuestLimiter,
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

/// Links the dpone world and the locked-down WASI (see [`super::sandbox`]).
pub fn add_to_linker(linker: &mut Linker<RunState>) -> Result<()> {
    super::bindings::Strategy::add_to_linker::<RunState, HasSelf<RunState>>(linker, |s| s)
        .map_err(|e| Error::internal(format!("linking the dpone world: {e}")))?;
    wasmtime_wasi::p2::add_to_linker_async(linker)
        .map_err(|e| Error::internal(format!("linking WASI: {e}")))
}

impl RunState {
    pub fn new(limiter: GuestLimiter, pipeline: Option<Pipeline>) -> Self {
        RunState {
            limiter,
            table: ResourceTable::new(),
            handles: 0,
            wasi: super::sandbox::wasi_ctx(),
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

    /// Times a host import, so the report can tell guest time from host time.
    async fn timed<T>(&mut self, f: impl AsyncFnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let out = f(self).await;
        if let Some(p) = self.pipeline.as_mut() {
            p.host_seconds += started.elapsed().as_secs_f64();
        }
        out
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
            // Host bugs and sandbox breaches trap: the guest must not carry on.
            Kind::Sandbox | Kind::Internal => return Err(wasmtime::Error::new(err)),
        })
    }
}

impl source::HostScan for RunState {
    async fn stats(&mut self, scan: Resource<ScanHandle>) -> wasmtime::Result<ScanStats> {
        Ok(self.get(&scan)?.stats.clone())
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
                name: p.source.table().to_string(),
                schema,
                capabilities: source::SourceCapabilities {
                    cursor_scan: true,
                    bounded_predicate: true,
                    xmin: p.source.has_xmin(),
                    cdc: p.source.has_cdc(),
                },
            })
        })
        .await
    }

    async fn open_scan(&mut self, bounds: ScanBounds) -> Result<Resource<ScanHandle>> {
        let source = &mut self.pipeline()?.source;
        let schema = source.schema().await?;
        source.check_bounds(&schema, &bounds)?;
        let stats = ScanStats {
            rows: 0,
            bytes: 0,
            max_cursor: None,
        };
        self.push(ScanHandle {
            scan: ScanKind::Table(bounds),
            stats,
            loaded: false,
        })
    }

    async fn open_feed(&mut self, feed: ChangeFeed) -> Result<FeedPosition> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            let names = source_ops::feed_names(&p.name, &feed)?;
            let dry_run = p.sink.is_dry_run();
            if dry_run {
                p.sink.note(format!(
                    "open change feed: slot {}, publication {} (created when missing)",
                    names.slot, names.publication
                ));
            }
            p.source.open_feed(&names, !dry_run).await
        })
        .await
    }

    async fn open_changes(
        &mut self,
        feed: ChangeFeed,
        key: Vec<String>,
        after: u64,
        up_to: u64,
        part: ChangePart,
    ) -> Result<Resource<ScanHandle>> {
        let p = self.pipeline()?;
        let names = source_ops::feed_names(&p.name, &feed)?;
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
        let window = ChangeWindow {
            names,
            key,
            after,
            up_to,
            part,
        };
        self.push(ScanHandle {
            scan: ScanKind::Changes(window),
            stats: ScanStats {
                rows: 0,
                bytes: 0,
                max_cursor: None,
            },
            loaded: false,
        })
    }

    async fn ack_feed(&mut self, feed: ChangeFeed, position: u64) -> Result<()> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            let names = source_ops::feed_names(&p.name, &feed)?;
            if p.sink.is_dry_run() {
                p.sink
                    .note(format!("acknowledge the change feed up to {position}"));
                return Ok(());
            }
            crate::failpoint("cdc.before_ack");
            p.source.ack_feed(&names, position).await
        })
        .await
    }

    async fn max_value(&mut self, column: String, bounds: ScanBounds) -> Result<Value> {
        self.timed(async |s| s.pipeline()?.source.max_value(&column, &bounds).await)
            .await
    }

    async fn row_count(&mut self, bounds: ScanBounds) -> Result<u64> {
        self.timed(async |s| s.pipeline()?.source.row_count(&bounds).await)
            .await
    }

    async fn xmin_horizon(&mut self) -> Result<u64> {
        self.timed(async |s| s.pipeline()?.source.xmin_horizon().await)
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
    ) -> Result<Vec<Value>> {
        let (table, schema) = self.staging(&staging).await?;
        let t = schema.require(&column, "sink.strategy")?.data_type;
        self.timed(async |s| {
            s.pipeline()?
                .sink
                .distinct_values(&table, &column, &t, limit)
                .await
        })
        .await
    }

    async fn check_keys(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
    ) -> Result<sink::KeyCheck> {
        let (table, schema) = self.staging(&staging).await?;
        self.timed(async |s| s.pipeline()?.sink.check_keys(&table, &schema, &key).await)
            .await
    }

    async fn drop(&mut self, staging: Resource<StagingHandle>) -> wasmtime::Result<()> {
        // The table itself stays until drop-staging or the end-of-run cleanup.
        self.delete(staging)?;
        Ok(())
    }
}

impl sink::Host for RunState {
    async fn capabilities(&mut self) -> wasmtime::Result<sink::SinkCapabilities> {
        Ok(self.pipeline()?.sink.capabilities())
    }

    async fn describe(&mut self) -> Result<sink::TargetDescription> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            let schema = p.sink.describe().await?;
            Ok(sink::TargetDescription {
                table: p.sink.target().to_string(),
                exists: schema.is_some(),
                schema,
            })
        })
        .await
    }

    async fn ensure_target(&mut self, schema: Schema, key: Vec<String>) -> Result<()> {
        self.timed(async |s| s.pipeline()?.sink.ensure_target(&schema, &key).await)
            .await
    }

    async fn create_staging(
        &mut self,
        schema: Schema,
        options: sink::StagingOptions,
    ) -> Result<Resource<StagingHandle>> {
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
        })
    }

    async fn load(
        &mut self,
        staging: Resource<StagingHandle>,
        scan: Resource<ScanHandle>,
    ) -> Result<ScanStats> {
        let target = {
            let handle = self.get(&staging)?;
            LoadTarget {
                table: handle.table.clone(),
                source_schema: handle.source_schema(),
                schema: handle.schema.clone(),
                hashed: handle.row_hash.is_some(),
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
        let p = self.pipeline()?;
        p.rows_read += stats.rows;
        Ok(stats)
    }

    async fn begin(&mut self) -> Result<()> {
        self.timed(async |s| s.pipeline()?.sink.begin().await).await
    }

    async fn commit(&mut self) -> Result<()> {
        crate::failpoint("sink.before_commit");
        self.timed(async |s| {
            let p = s.pipeline()?;
            let also = if p.state_colocated {
                let pending = std::mem::take(&mut p.pending_state);
                p.state.entry_writes(&p.name, &pending, &p.now_text())
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
        Ok(n)
    }

    async fn delete_rows(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
        m: sink::KeyMatch,
        filter: Vec<types::Term>,
    ) -> Result<u64> {
        let (table, schema) = self.staging(&staging).await?;
        let m = key_match(&schema, &key, m)?;
        self.timed(async |s| {
            s.pipeline()?
                .sink
                .delete_rows(&table, &key, &m, &filter)
                .await
        })
        .await
    }

    async fn update_rows(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
        m: sink::KeyMatch,
        filter: Vec<types::Term>,
        assignments: Vec<sink::Assignment>,
    ) -> Result<u64> {
        let (table, schema) = self.staging(&staging).await?;
        let m = key_match(&schema, &key, m)?;
        let assignments = pairs(assignments);
        self.timed(async |s| {
            s.pipeline()?
                .sink
                .update_rows(&table, &key, &m, &filter, &assignments)
                .await
        })
        .await
    }

    async fn insert_new_rows(
        &mut self,
        staging: Resource<StagingHandle>,
        key: Vec<String>,
        filter: Vec<types::Term>,
        extra: Vec<sink::Assignment>,
    ) -> Result<u64> {
        let (table, schema) = self.staging(&staging).await?;
        key_match(&schema, &key, sink::KeyMatch::InStaging)?;
        let extra = pairs(extra);
        let n = self
            .timed(async |s| {
                s.pipeline()?
                    .sink
                    .insert_new_rows(&table, &schema.names(), &key, &filter, &extra)
                    .await
            })
            .await?;
        self.pipeline()?.rows_written += n;
        Ok(n)
    }

    async fn check_target_keys(
        &mut self,
        key: Vec<String>,
        filter: Vec<types::Term>,
    ) -> Result<sink::KeyCheck> {
        self.timed(async |s| {
            let p = s.pipeline()?;
            let schema = p.sink.describe().await?.ok_or_else(|| {
                Error::new(
                    Kind::Sink,
                    format!("target `{}` does not exist", p.sink.target()),
                )
            })?;
            p.sink.check_target_keys(&schema, &key, &filter).await
        })
        .await
    }

    async fn delete_where(&mut self, filter: Vec<types::Term>) -> Result<u64> {
        self.timed(async |s| s.pipeline()?.sink.delete_where(&filter).await)
            .await
    }

    async fn swap(&mut self, staging: Resource<StagingHandle>) -> Result<()> {
        let handle = self.delete(staging)?;
        self.timed(async |s| s.pipeline()?.sink.swap(&handle.table).await)
            .await?;
        self.pipeline()?.rows_written += handle.rows;
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
                s.pipeline()?
                    .sink
                    .replace_partitions(&table, &schema.names(), &column)
                    .await
            })
            .await?;
        if let Some((_, inserted)) = replaced {
            self.pipeline()?.rows_written += inserted;
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
        Ok(n)
    }

    async fn drop_staging(&mut self, staging: Resource<StagingHandle>) -> Result<()> {
        let handle = self.delete(staging)?;
        self.timed(async |s| s.pipeline()?.sink.drop_staging(&handle.table).await)
            .await
    }
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

fn pairs(assignments: Vec<sink::Assignment>) -> Vec<(String, Value)> {
    assignments
        .into_iter()
        .map(|a| (a.column, a.value))
        .collect()
}

/// Where a load writes: the staging table, the source columns it reads, and whether the
/// host appends the row hash column.
struct LoadTarget {
    table: TableName,
    source_schema: Schema,
    schema: Schema,
    hashed: bool,
}

/// Streams a scan from the source into a staging table: the source reader, a counter (which
/// also appends row hashes) and the sink's bulk writer run concurrently over bounded
/// channels (back-pressure), so memory stays at a few batches whatever the table size.
async fn load(p: &mut Pipeline, target: &LoadTarget, scan: &ScanKind) -> Result<ScanStats> {
    if p.sink.is_dry_run() {
        return plan_load(p, &target.table, &target.source_schema, scan).await;
    }
    let no_bounds = ScanBounds {
        cursor: None,
        filter: Vec::new(),
        limit: None,
        xmin: None,
    };
    let bounds = match scan {
        ScanKind::Table(bounds) => bounds,
        ScanKind::Changes(_) => &no_bounds,
    };
    let (to_counter, mut from_source) = mpsc::channel(model::CHANNEL_BATCHES);
    let (to_sink, from_counter) = mpsc::channel(model::CHANNEL_BATCHES);
    let source_schema = &target.source_schema;
    let cursor = bounds.cursor.as_ref().and_then(|c| {
        let i = source_schema
            .columns
            .iter()
            .position(|col| col.name == c.column)?;
        Some((i, source_schema.columns[i].data_type))
    });
    let staging_arrow = target.schema.to_arrow();
    let mut stats = ScanStats {
        rows: 0,
        bytes: 0,
        max_cursor: None,
    };
    let progress = &mut p.progress;
    let count = async {
        while let Some(batch) = from_source.recv().await {
            let batch: arrow_array::RecordBatch = batch;
            stats.rows += batch.num_rows() as u64;
            stats.bytes += batch.get_array_memory_size() as u64;
            if let Some((i, t)) = &cursor
                && let Some(m) = model::column_max(&batch, *i, t)
                && stats.max_cursor.as_ref().is_none_or(|cur| {
                    model::compare_values(&m, cur) == Some(std::cmp::Ordering::Greater)
                })
            {
                stats.max_cursor = Some(m);
            }
            let batch = if target.hashed {
                let mut columns = batch.columns().to_vec();
                columns.push(std::sync::Arc::new(model::row_hashes(
                    &batch,
                    source_schema,
                )));
                arrow_array::RecordBatch::try_new(staging_arrow.clone(), columns)
                    .map_err(Error::internal)?
            } else {
                batch
            };
            progress.rows("load", stats.rows);
            if to_sink.send(batch).await.is_err() {
                break;
            }
        }
        drop(to_sink);
        Ok::<(), Error>(())
    };
    let source = &mut p.source;
    let read = async {
        match scan {
            ScanKind::Table(bounds) => source.read(source_schema, bounds, to_counter).await,
            ScanKind::Changes(window) => {
                source.read_changes(source_schema, window, to_counter).await
            }
        }
    };
    let write = p.sink.load(&target.table, &target.schema, from_counter);
    let ((), (), written) = tokio::try_join!(read, count, write)?;
    p.progress.done("load", stats.rows);
    if written != stats.rows {
        return Err(Error::sink(format!(
            "staging received {written} rows but the source sent {}",
            stats.rows
        )));
    }
    Ok(stats)
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
                "read the {:?} of changes in ({}, {}] from slot {} into {staging}",
                w.part, w.after, w.up_to, w.names.slot
            ));
            return Ok(ScanStats {
                rows: 0,
                bytes: 0,
                max_cursor: None,
            });
        }
    };
    let query = p.source.select(schema, bounds, false)?;
    p.sink.note(format!("scan source: {}", query.sql));
    p.sink.note(format!("bulk load into {staging}"));
    let rows = p.source.row_count(bounds).await?;
    let max_cursor = match &bounds.cursor {
        Some(c) if rows > 0 => Some(p.source.max_value(&c.column, bounds).await?),
        _ => None,
    };
    Ok(ScanStats {
        rows,
        bytes: 0,
        max_cursor,
    })
}

impl state::Host for RunState {
    async fn get(&mut self, key: String) -> Result<Option<Value>> {
        let p = self.pipeline()?;
        if let Some(v) = p.pending_state.get(&key) {
            return Ok(Some(v.clone()));
        }
        let name = p.name.clone();
        Ok(p.state.entries(&name).await?.remove(&key))
    }

    async fn put(&mut self, key: String, value: Value) -> wasmtime::Result<()> {
        self.pipeline()?.pending_state.insert(key, value);
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let p = self.pipeline()?;
        if p.sink.in_transaction() {
            return Err(Error::new(
                Kind::Unsupported,
                "state.commit while the sink transaction is open: commit the sink first",
            ));
        }
        let pending = std::mem::take(&mut p.pending_state);
        if p.sink.is_dry_run() {
            for (k, v) in &pending {
                p.sink
                    .note(format!("state: {k} = {}", model::value_display(v)));
            }
            return Ok(());
        }
        let writes = p.state.entry_writes(&p.name, &pending, &p.now_text());
        p.state.apply(&writes).await
    }
}

impl log::Host for RunState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let message: String = message.chars().take(4096).collect();
        match level {
            log::Level::Debug => tracing::debug!(target: "strategy", "{message}"),
            log::Level::Info => tracing::info!(target: "strategy", "{message}"),
            log::Level::Warn => tracing::warn!(target: "strategy", "{message}"),
            log::Level::Error => tracing::error!(target: "strategy", "{message}"),
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        phase: String,
        done: u64,
        total: Option<u64>,
    ) -> wasmtime::Result<()> {
        if let Some(p) = self.pipeline.as_mut() {
            p.progress.phase(&phase, done, total);
        }
        Ok(())
    }
}

impl clock::Host for RunState {
    async fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.pipeline.as_ref().map_or(0, |p| p.now_micros))
    }
}
