//! The sink operations strategies call, over any [`SqlSession`].
//!
//! Contract: nothing here touches the target outside `begin`..`commit` except
//! `ensure_target` (creating a missing target) and `swap` (inside the transaction too).
//! Staging tables are named `__dpone_stg_<run>_<n>` next to the target and are dropped by the
//! strategy, or by [`SqlSink::drop_leftovers`] when a run fails.
//!
//! Sessions without transactions (ClickHouse) get the same contract from a copy-on-write
//! shadow: the first change after `begin` copies the target to `__dpone_shd_<run>_<n>`,
//! every change rewrites or appends to the shadow (a delete is a copy without the rows, an
//! update a copy with the new values), and `commit` publishes the shadow with one
//! multi-table `RENAME` (the old target goes to `__dpone_old_<run>`, then is dropped).
//! `rollback`, or a crash before the rename, leaves the target as it was; the shadows are
//! this run's leftovers. docs/connectors/clickhouse.md lists the crash windows.

use arrow_array::RecordBatch;
use tokio::sync::mpsc;

use super::render::{KeyMatch, NewRows, RowSelection};
use super::{Dialect, SqlSession, Statement, TableName, render};
use crate::error::{Error, Kind, Result};
use crate::model::{DataType, KeyCheck, Schema, Term, Value};

/// How a staging table will be used (mirrors the WIT `staging-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingKind {
    Scratch,
    Publishable,
}

/// The target table on one connection, plus the staging tables of this run.
pub struct SqlSink {
    session: Box<dyn SqlSession>,
    target: TableName,
    run_tag: String,
    staging_seq: u32,
    live_staging: Vec<TableName>,
    /// Staging tables swapped or dropped inside the open transaction: gone only once it
    /// commits, so a failed commit still cleans them up.
    released_in_transaction: Vec<TableName>,
    in_transaction: bool,
    manifest_predicate: Option<String>,
    dry_run: bool,
    /// Every statement issued (or, in a dry run, that would be issued), in order.
    pub statements: Vec<String>,
    /// A lock every transaction takes first ([`Self::set_fence`]).
    fence: Option<String>,
    /// Without session transactions: the table that becomes the target at commit, once
    /// the open transaction changed anything.
    shadow: Option<TableName>,
    /// Without session transactions: partitions to replace natively at commit, from a
    /// table shaped like the target (ClickHouse `REPLACE PARTITION`).
    pending_partitions: Option<(TableName, Vec<String>)>,
    /// Without session transactions: staging tables to append (with their columns) at
    /// commit, while nothing else changed, so an append costs one `INSERT ... SELECT`
    /// and no copy of the target.
    pending_inserts: Vec<(TableName, Vec<String>)>,
}

impl std::fmt::Debug for SqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SqlSink {
    /// `run_id` names this run's staging tables; `dry_run` records mutations instead of
    /// running them (reads still run: they touch nothing).
    pub fn new(
        session: Box<dyn SqlSession>,
        target: TableName,
        run_id: &str,
        manifest_predicate: Option<String>,
        dry_run: bool,
    ) -> Self {
        let run_tag: String = run_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        SqlSink {
            session,
            target,
            run_tag,
            staging_seq: 0,
            live_staging: Vec::new(),
            released_in_transaction: Vec::new(),
            in_transaction: false,
            manifest_predicate,
            dry_run,
            statements: Vec::new(),
            fence: None,
            shadow: None,
            pending_partitions: None,
            pending_inserts: Vec::new(),
        }
    }

    pub fn target(&self) -> &TableName {
        &self.target
    }

    pub fn dialect(&self) -> Dialect {
        self.session.dialect()
    }

    /// The target's schema, `None` when it does not exist.
    pub async fn describe(&mut self) -> Result<Option<Schema>> {
        self.session.table_schema(&self.target).await
    }

    async fn execute(&mut self, stmt: Statement) -> Result<u64> {
        self.statements.push(stmt.sql.clone());
        tracing::debug!(sql = %stmt.sql, "sink statement");
        if self.dry_run {
            return Ok(0);
        }
        self.session.execute(&stmt).await
    }

    async fn query(
        &mut self,
        stmt: impl Into<Statement>,
        types: &[DataType],
    ) -> Result<Vec<Vec<Value>>> {
        let stmt = stmt.into();
        self.statements.push(stmt.sql.clone());
        if self.dry_run {
            return Ok(Vec::new());
        }
        self.session.query(&stmt, types).await
    }

    /// Creates the target (and its schema, on PostgreSQL) when missing; an existing one
    /// must pass the session's [`SqlSession::check_target`].
    pub async fn ensure_target(&mut self, schema: &Schema, key: &[String]) -> Result<()> {
        for k in key {
            schema.require(k, "sink.strategy.unique_key")?;
        }
        if let Some(existing) = self.describe().await? {
            return self
                .session
                .check_target(&self.target, &existing, key)
                .await;
        }
        self.ensure_schema().await?;
        let ddl = render::create_table(self.dialect(), &self.target, schema, key, false);
        self.execute(Statement::new(ddl)).await?;
        Ok(())
    }

    /// Creates the target's schema when missing, so staging can live next to the target
    /// before the target exists.
    async fn ensure_schema(&mut self) -> Result<()> {
        if let Some(sql) = render::create_namespace(self.dialect(), &self.target) {
            self.execute(Statement::new(sql)).await?;
        }
        Ok(())
    }

    /// Creates an empty staging table for this run.
    pub async fn create_staging(
        &mut self,
        schema: &Schema,
        kind: StagingKind,
    ) -> Result<TableName> {
        self.staging_seq += 1;
        let staging = self
            .target
            .sibling(format!("__dpone_stg_{}_{}", self.run_tag, self.staging_seq));
        self.ensure_schema().await?;
        let target_schema = match kind {
            StagingKind::Scratch => None,
            StagingKind::Publishable => match self.describe().await? {
                Some(t) => Some(t),
                // A dry run only recorded ensure-target: plan from the schema it would create.
                None if self.dry_run => Some(schema.clone()),
                None => {
                    return Err(Error::new(
                        Kind::Sink,
                        format!(
                            "publishable staging needs the target `{}` to exist: call ensure-target first",
                            self.target
                        ),
                    ));
                }
            },
        };
        let ddl = match &target_schema {
            None => render::create_table(self.dialect(), &staging, schema, &[], true),
            Some(t) => render::create_like(self.dialect(), &staging, &self.target, t),
        };
        self.execute(Statement::new(ddl)).await?;
        self.live_staging.push(staging.clone());
        Ok(staging)
    }

    /// Bulk-loads every batch from `rx` into `staging`.
    pub async fn load(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        self.session.bulk_insert(staging, schema, rx).await
    }

    pub async fn staging_row_count(&mut self, staging: &TableName) -> Result<u64> {
        let rows = self
            .query(render::count(staging), &[DataType::Int64])
            .await?;
        Ok(first_count(&rows, 0))
    }

    pub async fn target_row_count(&mut self) -> Result<u64> {
        let rows = self
            .query(render::count(&self.target), &[DataType::Int64])
            .await?;
        Ok(first_count(&rows, 0))
    }

    pub async fn distinct_values(
        &mut self,
        staging: &TableName,
        column: &str,
        t: &DataType,
        limit: u32,
    ) -> Result<Vec<Value>> {
        let rows = self
            .query(
                render::distinct_values(staging, column, limit),
                std::slice::from_ref(t),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }

    /// NULL key components and duplicate key groups in staging.
    pub async fn check_keys(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        key: &[String],
    ) -> Result<KeyCheck> {
        self.key_check(staging.clone(), schema, key, &[]).await
    }

    /// The same over the target rows matching `filter`, inside the open transaction.
    pub async fn check_target_keys(
        &mut self,
        schema: &Schema,
        key: &[String],
        filter: &[Term],
    ) -> Result<KeyCheck> {
        if !self.session.transactional() {
            self.settle().await?;
        }
        let current = self.current().clone();
        self.key_check(current, schema, key, filter).await
    }

    async fn key_check(
        &mut self,
        table: TableName,
        schema: &Schema,
        key: &[String],
        filter: &[Term],
    ) -> Result<KeyCheck> {
        let key_types: Vec<DataType> = key
            .iter()
            .map(|k| {
                schema
                    .require(k, "sink.strategy.unique_key")
                    .map(|c| c.data_type)
            })
            .collect::<Result<_>>()?;
        let (counts, sample) =
            render::key_checks(&table, key, filter, self.manifest_predicate.as_deref())?;
        let counts = self.query(counts, &[DataType::Int64; 3]).await?;
        let (rows, null_key_rows, duplicate_groups) = (
            first_count(&counts, 0),
            first_count(&counts, 1),
            first_count(&counts, 2),
        );
        let sample = if duplicate_groups > 0 {
            self.query(sample, &key_types).await?
        } else {
            Vec::new()
        };
        Ok(KeyCheck {
            rows,
            null_key_rows,
            duplicate_groups,
            sample,
        })
    }

    pub async fn begin(&mut self) -> Result<()> {
        if self.in_transaction {
            return Err(Error::new(
                Kind::Unsupported,
                "begin: a transaction is already open",
            ));
        }
        self.statements.push("BEGIN".into());
        if !self.session.transactional() {
            // The transaction is the shadow the first change creates. There is no lock to
            // fence with: backfill holds the pipeline lock for such sinks instead.
            self.in_transaction = true;
            return Ok(());
        }
        if !self.dry_run {
            self.session.begin().await?;
            if let Some(fence) = &self.fence
                && let Err(e) = self.session.transaction_lock(fence).await
            {
                let _ = self.session.rollback().await;
                return Err(e);
            }
        }
        self.in_transaction = true;
        Ok(())
    }

    /// Every transaction of this sink will first take the lock `fence` (a backfill chunk:
    /// a worker whose lease expired and the one that took the chunk over never commit it
    /// at the same time).
    pub fn set_fence(&mut self, fence: String) {
        self.fence = Some(fence);
    }

    /// Commits, running `also` (the colocated state store's writes) first in the same
    /// transaction.
    pub async fn commit(&mut self, also: Vec<Statement>) -> Result<()> {
        if !self.in_transaction {
            return Err(Error::new(
                Kind::Unsupported,
                "commit: no transaction is open",
            ));
        }
        if !self.session.transactional() {
            if !also.is_empty() {
                return Err(Error::new(
                    Kind::State,
                    "a sink without transactions cannot hold the state store",
                ));
            }
            self.publish_shadow().await?;
        }
        for stmt in also {
            self.execute(stmt).await?;
        }
        self.statements.push("COMMIT".into());
        if !self.dry_run && self.session.transactional() {
            self.session.commit().await?;
        }
        self.in_transaction = false;
        let released = std::mem::take(&mut self.released_in_transaction);
        self.live_staging.retain(|t| !released.contains(t));
        Ok(())
    }

    pub async fn rollback(&mut self) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        self.in_transaction = false;
        self.released_in_transaction.clear();
        self.statements.push("ROLLBACK".into());
        if !self.session.transactional() {
            // Forget the transaction first, so a failed drop cannot leave it half open.
            let shadow = self.shadow.take();
            let copy = self.pending_partitions.take().map(|(copy, _)| copy);
            self.pending_inserts.clear();
            for table in shadow.into_iter().chain(copy) {
                self.drop_now(&table).await?;
            }
            return Ok(());
        }
        if self.dry_run {
            return Ok(());
        }
        self.session.rollback().await
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Notes a step the plan shows without a statement of the sink's own.
    pub fn note(&mut self, step: String) {
        self.statements.push(format!("-- {step}"));
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    fn require_transaction(&self, what: &str) -> Result<()> {
        if self.in_transaction {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Unsupported,
                format!("{what} must run between sink.begin and sink.commit"),
            ))
        }
    }

    pub async fn insert_from_staging(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        self.require_transaction("insert-from-staging")?;
        if !self.session.transactional() {
            if self.shadow.is_none() && self.pending_partitions.is_none() {
                self.pending_inserts
                    .push((staging.clone(), columns.to_vec()));
                self.statements.push(format!(
                    "-- at commit: INSERT INTO {} SELECT ... FROM {staging}",
                    self.target
                ));
                let staging = staging.clone();
                return self.count_where(&staging, None).await;
            }
            let shadow = self.materialize().await?;
            let sql = render::insert_from(&shadow, staging, columns);
            return self.counted_insert(&shadow, Statement::new(sql)).await;
        }
        self.execute(Statement::new(render::insert_from(
            &self.target,
            staging,
            columns,
        )))
        .await
    }

    pub async fn delete_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
    ) -> Result<u64> {
        self.require_transaction("delete-rows")?;
        // The shadow when one is open, else the target itself.
        let current = self.current().clone();
        let rows = RowSelection {
            target: &current,
            staging,
            key,
            key_match,
            filter,
        };
        let predicate = self.manifest_predicate.as_deref();
        if !self.session.transactional() {
            let cond = render::row_condition(self.dialect(), rows, predicate)?;
            return self.shadow_delete(cond).await;
        }
        let stmt = render::delete_rows(self.dialect(), rows, predicate)?;
        self.execute(stmt).await
    }

    pub async fn update_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
        assignments: &[(String, Value)],
    ) -> Result<u64> {
        self.require_transaction("update-rows")?;
        let current = self.current().clone();
        let rows = RowSelection {
            target: &current,
            staging,
            key,
            key_match,
            filter,
        };
        let predicate = self.manifest_predicate.as_deref();
        if !self.session.transactional() {
            let cond = render::row_condition(self.dialect(), rows, predicate)?;
            return self.shadow_update(cond, assignments).await;
        }
        let stmt = render::update_rows(self.dialect(), rows, assignments, predicate)?;
        self.execute(stmt).await
    }

    pub async fn insert_new_rows(
        &mut self,
        staging: &TableName,
        columns: &[String],
        key: &[String],
        filter: &[Term],
        extra: &[(String, Value)],
    ) -> Result<u64> {
        self.require_transaction("insert-new-rows")?;
        if !self.session.transactional() {
            self.settle().await?;
        }
        let predicate = self.manifest_predicate.clone();
        let predicate = predicate.as_deref();
        let current = self.current().clone();
        let rows = NewRows {
            target: &current,
            staging,
            columns,
            key,
            filter,
            extra,
        };
        if !self.session.transactional() {
            let select = render::new_rows_select(self.dialect(), rows, predicate)?;
            let new = self
                .query(
                    Statement {
                        sql: format!("SELECT count() FROM ({})", select.sql),
                        params: select.params,
                    },
                    &[DataType::Int64],
                )
                .await?;
            let new = first_count(&new, 0);
            if new == 0 && !self.dry_run {
                return Ok(0);
            }
            let shadow = self.materialize().await?;
            let rows = NewRows {
                target: &shadow,
                ..rows
            };
            let stmt = render::insert_new_rows(self.dialect(), rows, predicate)?;
            self.execute(stmt).await?;
            return Ok(new);
        }
        let stmt = render::insert_new_rows(self.dialect(), rows, predicate)?;
        self.execute(stmt).await
    }

    pub async fn delete_where(&mut self, filter: &[Term]) -> Result<u64> {
        self.require_transaction("delete-where")?;
        if !self.session.transactional() {
            let cond = render::filter_condition(filter, self.manifest_predicate.as_deref())?;
            return self.shadow_delete(cond).await;
        }
        let stmt = render::delete_where(&self.target, filter, self.manifest_predicate.as_deref())?;
        self.execute(stmt).await
    }

    /// Replaces the target's native partitions holding the staged values of `column`
    /// inside the open transaction; `None`, changing nothing, when the target cannot take
    /// it natively (the caller falls back to delete + insert). Returns (deleted, inserted).
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub async fn replace_partitions(
        &mut self,
        staging: &TableName,
        columns: &[String],
        column: &str,
    ) -> Result<Option<(u64, u64)>> {
        self.require_transaction("replace-partitions")?;
        if self.dry_run {
            self.statements.push(format!(
                "replace the partitions of {} holding the staged values of {column} by swapping leaves (when it is natively partitioned by it)",
                self.target
            ));
            return Ok(None);
        }
        let suffix = format!("dpone_{}", self.run_tag);
        match self.dialect() {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                super::postgres::partitions::replace(
                    self.session.as_mut(),
                    &self.target,
                    staging,
                    columns,
                    column,
                    &suffix,
                    &mut self.statements,
                )
                .await
            }
            #[cfg(feature = "clickhouse")]
            Dialect::Clickhouse { .. } => {
                self.clickhouse_replace_partitions(staging, columns, column)
                    .await
            }
            #[allow(unreachable_patterns)]
            _ => Ok(None),
        }
    }

    /// Loads the staged rows into a copy of the target and notes its partitions for
    /// `REPLACE PARTITION` at commit; `None` when the target is not partitioned by exactly
    /// `column`, or the transaction already changed the target another way.
    #[cfg(feature = "clickhouse")]
    async fn clickhouse_replace_partitions(
        &mut self,
        staging: &TableName,
        columns: &[String],
        column: &str,
    ) -> Result<Option<(u64, u64)>> {
        use super::clickhouse::partitions;
        if self.shadow.is_some() || self.pending_partitions.is_some() {
            return Ok(None);
        }
        let target = self.target.clone();
        if !partitions::partition_key_is(self.session.as_mut(), &target, column).await? {
            return Ok(None);
        }
        self.staging_seq += 1;
        let copy = self
            .target
            .sibling(format!("__dpone_prt_{}_{}", self.run_tag, self.staging_seq));
        let target_schema = self.existing_target().await?;
        let ddl = render::create_like(self.dialect(), &copy, &target, &target_schema);
        self.execute(Statement::new(ddl)).await?;
        self.live_staging.push(copy.clone());
        let inserted = self
            .counted_insert(
                &copy,
                Statement::new(render::insert_from(&copy, staging, columns)),
            )
            .await?;
        let ids = partitions::partition_ids(self.session.as_mut(), &copy).await?;
        let q = render::quote_ident(column);
        let touched = Statement::new(format!(
            "{q} IN (SELECT {q} FROM {})",
            render::table_ref(&copy)
        ));
        let deleted = self.count_where(&target, Some(&touched)).await?;
        self.statements.push(format!(
            "-- at commit: REPLACE PARTITION of {} for partitions {ids:?} from {copy}",
            self.target
        ));
        self.pending_partitions = Some((copy, ids));
        Ok(Some((deleted, inserted)))
    }

    /// Applies the pending partition replacements and appends to `into` (the target, or a
    /// shadow created like it).
    async fn apply_pending(&mut self, into: &TableName) -> Result<()> {
        for (staging, columns) in std::mem::take(&mut self.pending_inserts) {
            let sql = render::insert_from(into, &staging, &columns);
            self.execute(Statement::new(sql)).await?;
        }
        let Some((copy, ids)) = self.pending_partitions.take() else {
            return Ok(());
        };
        #[cfg(feature = "clickhouse")]
        for (i, id) in ids.iter().enumerate() {
            let sql = super::clickhouse::partitions::replace_sql(into, &copy, id);
            self.execute(Statement::new(sql)).await?;
            if i == 0 {
                crate::failpoint("sink.partition_replaced");
            }
        }
        #[cfg(not(feature = "clickhouse"))]
        let _ = (into, ids);
        self.drop_now(&copy).await
    }

    pub async fn truncate_and_insert(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        self.require_transaction("truncate-and-insert")?;
        if !self.session.transactional() {
            self.discard_pending().await?;
            let previous = self.new_shadow().await?;
            self.retire(previous).await?;
            return self.insert_from_staging(staging, columns).await;
        }
        self.execute(Statement::new(render::truncate(
            self.dialect(),
            &self.target,
        )))
        .await?;
        self.insert_from_staging(staging, columns).await
    }

    /// Publishes staging as the target inside the open transaction.
    pub async fn swap(&mut self, staging: &TableName) -> Result<()> {
        self.require_transaction("swap")?;
        if !self.session.transactional() {
            self.discard_pending().await?;
            let previous = self.current().clone();
            self.shadow = Some(staging.clone());
            return self.retire(previous).await;
        }
        for sql in render::swap(&self.target, staging) {
            self.execute(Statement::new(sql)).await?;
        }
        self.release(staging);
        Ok(())
    }

    /// Drops a staging table; an append still pending from it (no transactions) is
    /// applied to the shadow first.
    pub async fn drop_staging(&mut self, staging: &TableName) -> Result<()> {
        if self.in_transaction && self.pending_inserts.iter().any(|(t, _)| t == staging) {
            self.settle().await?;
        }
        self.drop_now(staging).await
    }

    async fn drop_now(&mut self, staging: &TableName) -> Result<()> {
        self.execute(Statement::new(render::drop_table(staging)))
            .await?;
        self.release(staging);
        Ok(())
    }

    fn release(&mut self, staging: &TableName) {
        // Without transactions a drop is final at once.
        if self.in_transaction && self.session.transactional() {
            self.released_in_transaction.push(staging.clone());
        } else {
            self.live_staging.retain(|t| t != staging);
        }
    }

    /// After a failed run: rolls back and drops the staging tables the run left. Errors are
    /// logged, not returned, so the run's own error is what the user sees. Returns whether
    /// every leftover is gone.
    pub async fn drop_leftovers(&mut self) -> bool {
        if let Err(e) = self.rollback().await {
            tracing::warn!("rollback after failure: {e}");
        }
        let mut clean = true;
        for staging in self.live_staging.clone() {
            // After a failed commit, a swapped staging table may already be the target.
            if self.dry_run || staging == self.target {
                continue;
            }
            if let Err(e) = self.drop_staging(&staging).await {
                tracing::warn!("could not drop staging table {staging}: {e}");
                clean = false;
            }
        }
        clean
    }

    /// Replaces a connection that died mid-run (the server rolled its transaction back),
    /// so [`Self::drop_leftovers`] can still remove this run's staging tables.
    pub fn reconnected(&mut self, session: Box<dyn SqlSession>) {
        self.session = session;
        self.in_transaction = false;
        self.shadow = None;
        self.pending_partitions = None;
        self.pending_inserts.clear();
    }
}

/// The copy-on-write shadow of sessions without transactions (module docs).
impl SqlSink {
    /// Applies pending partition replacements to a shadow, so a change that builds on the
    /// transaction's view of the target sees them.
    async fn settle(&mut self) -> Result<()> {
        if self.pending_partitions.is_some() || !self.pending_inserts.is_empty() {
            self.materialize().await?;
        }
        Ok(())
    }

    /// Forgets pending appends and partition replacements that a wholesale replacement of
    /// the target makes moot.
    async fn discard_pending(&mut self) -> Result<()> {
        self.pending_inserts.clear();
        if let Some((copy, _)) = self.pending_partitions.take() {
            self.drop_now(&copy).await?;
        }
        Ok(())
    }

    /// The table holding the open transaction's view of the target.
    fn current(&self) -> &TableName {
        self.shadow.as_ref().unwrap_or(&self.target)
    }

    /// Creates an empty shadow shaped like the target and makes it current; returns the
    /// table that was current.
    async fn new_shadow(&mut self) -> Result<TableName> {
        self.staging_seq += 1;
        let shadow = self
            .target
            .sibling(format!("__dpone_shd_{}_{}", self.run_tag, self.staging_seq));
        let target_schema = self.existing_target().await?;
        let ddl = render::create_like(self.dialect(), &shadow, &self.target, &target_schema);
        self.execute(Statement::new(ddl)).await?;
        self.live_staging.push(shadow.clone());
        Ok(std::mem::replace(self.current_mut(), shadow))
    }

    /// The target's schema; the target must exist (a dry run plans against an empty one).
    async fn existing_target(&mut self) -> Result<Schema> {
        match self.describe().await? {
            Some(schema) => Ok(schema),
            None if self.dry_run => Ok(Schema {
                columns: Vec::new(),
                primary_key: Vec::new(),
            }),
            None => Err(Error::new(
                Kind::Sink,
                format!(
                    "the target {} does not exist: call ensure-target first",
                    self.target
                ),
            )),
        }
    }

    fn current_mut(&mut self) -> &mut TableName {
        self.shadow.get_or_insert_with(|| self.target.clone())
    }

    /// Drops a table that stopped being current, unless it is the target itself.
    async fn retire(&mut self, previous: TableName) -> Result<()> {
        if previous == self.target {
            return Ok(());
        }
        self.drop_now(&previous).await
    }

    /// The shadow, copying the target into a new one on the first change.
    async fn materialize(&mut self) -> Result<TableName> {
        if let Some(shadow) = &self.shadow {
            return Ok(shadow.clone());
        }
        let previous = self.new_shadow().await?;
        let shadow = self.current().clone();
        let sql = format!(
            "INSERT INTO {} SELECT * FROM {}",
            render::table_ref(&shadow),
            render::table_ref(&previous)
        );
        self.execute(Statement::new(sql)).await?;
        self.apply_pending(&shadow).await?;
        Ok(shadow)
    }

    async fn count_where(&mut self, table: &TableName, cond: Option<&Statement>) -> Result<u64> {
        let stmt = match cond {
            None => Statement::new(render::count(table)),
            Some(c) => Statement {
                sql: format!("{} WHERE ifNull(({}), 0)", render::count(table), c.sql),
                params: c.params.clone(),
            },
        };
        let rows = self.query(stmt, &[DataType::Int64]).await?;
        Ok(first_count(&rows, 0))
    }

    /// Runs an insert into `table` and returns the rows it added (the server does not say).
    async fn counted_insert(&mut self, table: &TableName, stmt: Statement) -> Result<u64> {
        let before = self.count_where(table, None).await?;
        self.execute(stmt).await?;
        Ok(self.count_where(table, None).await?.saturating_sub(before))
    }

    /// Deletes the current rows matching `cond` by copying the others into a new shadow;
    /// copies nothing when no row matches.
    async fn shadow_delete(&mut self, cond: Statement) -> Result<u64> {
        self.settle().await?;
        let current = self.current().clone();
        let matched = self.count_where(&current, Some(&cond)).await?;
        if matched == 0 && !self.dry_run {
            return Ok(0);
        }
        let previous = self.new_shadow().await?;
        let sql = format!(
            "INSERT INTO {} SELECT * FROM {} WHERE NOT ifNull(({}), 0)",
            render::table_ref(self.current()),
            render::table_ref(&previous),
            cond.sql
        );
        self.execute(Statement {
            sql,
            params: cond.params,
        })
        .await?;
        self.retire(previous).await?;
        Ok(matched)
    }

    /// Sets `assignments` on the current rows matching `cond` by copying every row into a
    /// new shadow with the new values where `cond` holds.
    async fn shadow_update(
        &mut self,
        cond: Statement,
        assignments: &[(String, Value)],
    ) -> Result<u64> {
        render::check_assignments(assignments)?;
        self.settle().await?;
        let current = self.current().clone();
        let matched = self.count_where(&current, Some(&cond)).await?;
        if matched == 0 && !self.dry_run {
            return Ok(0);
        }
        let columns = self.existing_target().await?.names();
        let mut params = cond.params;
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                let q = render::quote_ident(c);
                match assignments.iter().find(|(a, _)| a == c) {
                    Some((_, v)) => {
                        params.push(v.clone());
                        format!(
                            "if(ifNull(({}), 0), ${}, {q}) AS {q}",
                            cond.sql,
                            params.len()
                        )
                    }
                    None => q,
                }
            })
            .collect();
        let previous = self.new_shadow().await?;
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            render::table_ref(self.current()),
            render::column_list(&columns),
            select.join(", "),
            render::table_ref(&previous)
        );
        self.execute(Statement { sql, params }).await?;
        self.retire(previous).await?;
        Ok(matched)
    }

    /// Publishes the shadow: one statement puts it in the target's place, then the old
    /// rows are dropped.
    async fn publish_shadow(&mut self) -> Result<()> {
        let Some(shadow) = self.shadow.take() else {
            let target = self.target.clone();
            return self.apply_pending(&target).await;
        };
        self.staging_seq += 1;
        let old = self
            .target
            .sibling(format!("__dpone_old_{}_{}", self.run_tag, self.staging_seq));
        let (sql, retired) = self
            .session
            .swap_statement(&self.target, &shadow, &old)
            .await?;
        self.execute(Statement::new(sql)).await?;
        self.live_staging.retain(|t| *t != shadow);
        crate::failpoint("sink.after_publish");
        // The new target is published: a leftover old copy is worth a warning, not a
        // failed run whose state would then lag behind the target.
        if let Err(e) = self
            .execute(Statement::new(render::drop_table(&retired)))
            .await
        {
            tracing::warn!(
                "the target is published, but its old copy {retired} was not dropped: {e}"
            );
        }
        Ok(())
    }
}

fn first_count(rows: &[Vec<Value>], col: usize) -> u64 {
    match rows.first().and_then(|r| r.get(col)) {
        Some(Value::Int(n)) => (*n).max(0) as u64,
        _ => 0,
    }
}
