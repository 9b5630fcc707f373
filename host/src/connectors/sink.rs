//! [`SqlSink`]: the [`Staging`] and [`Sink`] of every SQL database, over any [`SqlSession`].
//!
//! Contract: nothing here touches the target outside `begin`..`commit` except
//! `ensure_target` (creating a missing target) and `swap` (inside the transaction too).
//! Staging tables are named `__dpone_stg_<run>_<n>` next to the target and are dropped by the
//! strategy, or by [`Sink::drop_leftovers`] when a run fails.
//!
//! Sessions without transactions (ClickHouse) get the same contract from the copy-on-write
//! shadow of `sink/shadow.rs`, whatever their dialect.

use arrow_array::RecordBatch;
use tokio::sync::mpsc;

use super::dialect::{KeyMatch, NewTable, SqlDialect};
use super::render::{NewRows, RowSelection};

mod shadow;
use async_trait::async_trait;

use super::{
    Sink, SqlSession, Staging, StagingWriter, Statement, StatementLog, TableName, WireFormat,
    WireRows, render,
};
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
    /// The statements issued (or, in a dry run, that would be issued), as kept for the report.
    statements: StatementLog,
    /// The manifest section the session was opened from, to reconnect after it died.
    connection: crate::manifest::Connection,
    /// A lock every transaction takes first ([`Self::set_fence`]).
    fence: Option<String>,
    /// Without session transactions: the open transaction's copy-on-write view of the
    /// target ([`shadow`]).
    shadow: shadow::Shadow,
    /// Publishable staging tables whose indexes wait for the end of their load: the
    /// statements still to run, in order ([`Self::build_deferred`]).
    deferred: Vec<(TableName, Vec<String>)>,
    /// Of those, the statements run inside the open transaction: due again if it rolls back.
    built_in_transaction: Vec<(TableName, String)>,
    /// Loaded scratch staging tables and the columns whose statistics are fresh since their
    /// last load ([`Self::analyze_staging`]).
    analyzed: Vec<(TableName, Vec<String>)>,
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
        connection: crate::manifest::Connection,
        target: TableName,
        run_id: &str,
        manifest_predicate: Option<String>,
        dry_run: bool,
        statements: StatementLog,
    ) -> Self {
        SqlSink {
            session,
            target,
            run_tag: run_tag(run_id),
            staging_seq: 0,
            live_staging: Vec::new(),
            released_in_transaction: Vec::new(),
            in_transaction: false,
            manifest_predicate,
            dry_run,
            statements,
            connection,
            fence: None,
            shadow: shadow::Shadow::default(),
            deferred: Vec::new(),
            built_in_transaction: Vec::new(),
            analyzed: Vec::new(),
        }
    }

    pub fn dialect(&self) -> &dyn SqlDialect {
        self.session.dialect()
    }

    /// The session itself, for a sink that keeps its own tables next to the target and
    /// staging (the view of a Kafka topic in the embedded store).
    pub(crate) fn session(&mut self) -> &mut dyn SqlSession {
        self.session.as_mut()
    }

    async fn execute(&mut self, stmt: Statement) -> Result<u64> {
        self.statements.push(&stmt.sql);
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
        self.statements.push(&stmt.sql);
        if self.dry_run {
            return Ok(Vec::new());
        }
        self.session.query(&stmt, types).await
    }

    /// Refuses a column name longer than the dialect takes
    /// ([`SqlDialect::max_identifier_bytes`]).
    fn check_identifiers(&self, schema: &Schema) -> Result<()> {
        let max = self.dialect().max_identifier_bytes();
        match schema.columns.iter().find(|c| c.name.len() > max) {
            Some(c) => Err(Error::new(
                Kind::Sink,
                format!(
                    "column name `{}` is {} bytes; `{}` takes names of at most {max} bytes",
                    crate::text::name(&c.name),
                    c.name.len(),
                    self.target
                ),
            )),
            None => Ok(()),
        }
    }

    /// Creates the target's schema when missing, so staging can live next to the target
    /// before the target exists.
    async fn ensure_schema(&mut self) -> Result<()> {
        if let Some(sql) = render::create_namespace(self.dialect(), &self.target) {
            self.execute(Statement::new(sql)).await?;
        }
        Ok(())
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
        let (counts, sample) = render::key_checks(
            self.dialect(),
            &table,
            key,
            filter,
            self.manifest_predicate.as_deref(),
        )?;
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

    async fn drop_now(&mut self, staging: &TableName) -> Result<()> {
        self.execute(Statement::new(render::drop_table(self.dialect(), staging)))
            .await?;
        self.deferred.retain(|(t, _)| t != staging);
        self.analyzed.retain(|(t, _)| t != staging);
        self.release(staging);
        Ok(())
    }

    /// Before a statement that groups the loaded scratch staging table `staging` by
    /// `columns` or joins it to the target on them: gathers their statistics, where the
    /// database plans with statistics and they are not fresh since the last load.
    async fn analyze_staging(&mut self, staging: &TableName, columns: &[&str]) -> Result<()> {
        let Some(at) = self.analyzed.iter().position(|(t, _)| t == staging) else {
            return Ok(());
        };
        let mut missing: Vec<String> = Vec::new();
        for c in columns {
            let seen = |list: &[String]| list.iter().any(|x| x == c);
            if !seen(&self.analyzed[at].1) && !seen(&missing) {
                missing.push((*c).to_owned());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let d = self.dialect();
        if let Some(sql) = d.analyze(&d.table_ref(staging), &d.column_list(&missing)) {
            self.execute(Statement::new(sql)).await?;
        }
        self.analyzed[at].1.extend(missing);
        Ok(())
    }

    /// Builds the indexes deferred on `staging`, striking off each statement once it has
    /// run: after a failed build (duplicate keys, say) a swap tries again, and fails again,
    /// rather than publish the table without them.
    async fn build_deferred(&mut self, staging: &TableName) -> Result<()> {
        while let Some(at) = self.deferred.iter().position(|(t, _)| t == staging) {
            let Some(sql) = self.deferred[at].1.first().cloned() else {
                self.deferred.swap_remove(at);
                continue;
            };
            self.execute(Statement::new(sql)).await?;
            let built = self.deferred[at].1.remove(0);
            if self.in_transaction {
                self.built_in_transaction.push((staging.clone(), built));
            }
        }
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
}

#[async_trait]
impl Staging for SqlSink {
    /// Creates an empty staging table for this run.
    async fn create_staging(&mut self, schema: &Schema, kind: StagingKind) -> Result<TableName> {
        self.check_identifiers(schema)?;
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
            None => self
                .dialect()
                .create_table(&staging, schema, &[], NewTable::Scratch),
            Some(t) => render::create_like(self.dialect(), &staging, &self.target, t),
        };
        self.execute(Statement::new(ddl)).await?;
        self.live_staging.push(staging.clone());
        if kind == StagingKind::Publishable && !self.dry_run {
            let indexes = self.session.deferrable_indexes(&staging).await?;
            self.deferred.push((staging.clone(), Vec::new()));
            for index in indexes {
                self.execute(Statement::new(index.drop)).await?;
                if let Some((_, build)) = self.deferred.last_mut() {
                    build.extend(index.build);
                }
            }
        }
        Ok(staging)
    }

    /// Bulk-loads every batch from `rx` into `staging`.
    async fn load(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        self.session.bulk_insert(staging, schema, rx).await
    }

    async fn wire_format(
        &mut self,
        staging: &TableName,
        columns: &Schema,
    ) -> Result<Option<WireFormat>> {
        self.session.wire_format(staging, &columns.names()).await
    }

    async fn loaded(&mut self, staging: &TableName, kind: StagingKind) -> Result<()> {
        self.build_deferred(staging).await?;
        if kind == StagingKind::Scratch {
            self.analyzed.retain(|(t, _)| t != staging);
            self.analyzed.push((staging.clone(), Vec::new()));
        }
        Ok(())
    }

    /// Sessions of the sink's connection, when its database takes concurrent bulk loads,
    /// outside a transaction (a staging table created inside one is not visible to them
    /// yet) and not in a dry run.
    async fn writers(&mut self, extra: usize) -> Result<Vec<Box<dyn StagingWriter>>> {
        if self.dry_run || self.in_transaction || !self.session.concurrent_loads() {
            return Ok(Vec::new());
        }
        let mut writers: Vec<Box<dyn StagingWriter>> = Vec::with_capacity(extra);
        for _ in 0..extra {
            let session =
                super::connect(&self.connection, Kind::Sink, super::Open::Existing).await?;
            writers.push(Box::new(SqlWriter(session)));
        }
        Ok(writers)
    }

    /// Bulk-loads every chunk of undecoded rows from `rx` into `staging`.
    async fn load_wire(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<WireRows>,
    ) -> Result<u64> {
        self.session.bulk_insert_wire(staging, schema, rx).await
    }

    async fn staging_row_count(&mut self, staging: &TableName) -> Result<u64> {
        let rows = self
            .query(render::count(self.dialect(), staging), &[DataType::Int64])
            .await?;
        Ok(first_count(&rows, 0))
    }

    async fn distinct_values(
        &mut self,
        staging: &TableName,
        column: &str,
        t: &DataType,
        limit: u32,
    ) -> Result<Vec<Value>> {
        self.analyze_staging(staging, &[column]).await?;
        let rows = self
            .query(
                render::distinct_values(self.dialect(), staging, column, limit),
                std::slice::from_ref(t),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }

    /// NULL key components and duplicate key groups in staging.
    async fn check_keys(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        key: &[String],
    ) -> Result<KeyCheck> {
        self.analyze_staging(staging, &names(key)).await?;
        self.key_check(staging.clone(), schema, key, &[]).await
    }

    /// Drops a staging table; an append still pending from it (no transactions) is
    /// applied to the shadow first.
    async fn drop_staging(&mut self, staging: &TableName) -> Result<()> {
        if self.in_transaction && self.shadow.appends_from(staging) {
            self.settle().await?;
        }
        self.drop_now(staging).await
    }
}

#[async_trait]
impl Sink for SqlSink {
    fn target(&self) -> &TableName {
        &self.target
    }

    /// The target's schema, `None` when it does not exist.
    async fn describe(&mut self) -> Result<Option<Schema>> {
        self.session.table_schema(&self.target).await
    }

    /// Creates the target (and its schema, on PostgreSQL) when missing; an existing one
    /// must pass the session's [`SqlSession::check_target`].
    async fn ensure_target(&mut self, schema: &Schema, key: &[String]) -> Result<()> {
        self.check_identifiers(schema)?;
        for k in key {
            schema.require(k, "sink.strategy.unique_key")?;
        }
        if let Some(existing) = self.describe().await? {
            return self
                .session
                .check_target(&self.target, &existing, schema, key)
                .await;
        }
        self.ensure_schema().await?;
        let ddl = self
            .dialect()
            .create_table(&self.target, schema, key, NewTable::Target);
        self.execute(Statement::new(ddl)).await?;
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        if self.in_transaction {
            return Err(Error::new(
                Kind::Unsupported,
                "begin: a transaction is already open",
            ));
        }
        self.statements.push("BEGIN");
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

    /// Commits, running `also` (the colocated state store's writes) first in the same
    /// transaction.
    async fn commit(&mut self, also: Vec<Statement>) -> Result<()> {
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
            self.shadow_publish().await?;
        }
        for stmt in also {
            self.execute(stmt).await?;
        }
        self.statements.push("COMMIT");
        if !self.dry_run && self.session.transactional() {
            self.session.commit().await?;
        }
        self.in_transaction = false;
        self.built_in_transaction.clear();
        let released = std::mem::take(&mut self.released_in_transaction);
        self.live_staging.retain(|t| !released.contains(t));
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        self.in_transaction = false;
        self.released_in_transaction.clear();
        // Indexes built inside the transaction are gone with it: due again, in order.
        for (staging, sql) in std::mem::take(&mut self.built_in_transaction)
            .into_iter()
            .rev()
        {
            match self.deferred.iter_mut().find(|(t, _)| *t == staging) {
                Some((_, build)) => build.insert(0, sql),
                None => self.deferred.push((staging, vec![sql])),
            }
        }
        self.statements.push("ROLLBACK");
        if !self.session.transactional() {
            return self.shadow_rollback().await;
        }
        if self.dry_run {
            return Ok(());
        }
        self.session.rollback().await
    }

    fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Every transaction of this sink will first take the lock `fence` (a backfill chunk:
    /// a worker whose lease expired and the one that took the chunk over never commit it
    /// at the same time).
    fn set_fence(&mut self, fence: String) {
        self.fence = Some(fence);
    }

    async fn insert_from_staging(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        self.require_transaction("insert-from-staging")?;
        if !self.session.transactional() {
            return self.shadow_insert_from(staging, columns).await;
        }
        let sql = render::insert_from(self.dialect(), &self.target, staging, columns);
        self.execute(Statement::new(sql)).await
    }

    async fn delete_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
    ) -> Result<u64> {
        self.require_transaction("delete-rows")?;
        let joined: Vec<&str> = names(key).into_iter().chain(key_match.compared()).collect();
        self.analyze_staging(staging, &joined).await?;
        if !self.session.transactional() {
            let cond = self.shadow_row_condition(staging, key, key_match, filter)?;
            return self.shadow_delete(cond).await;
        }
        let rows = RowSelection {
            target: &self.target,
            staging,
            key,
            key_match,
            filter,
        };
        let stmt = render::delete_rows(self.dialect(), rows, self.manifest_predicate.as_deref())?;
        self.execute(stmt).await
    }

    async fn update_rows(
        &mut self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
        assignments: &[(String, Value)],
    ) -> Result<u64> {
        self.require_transaction("update-rows")?;
        let joined: Vec<&str> = names(key).into_iter().chain(key_match.compared()).collect();
        self.analyze_staging(staging, &joined).await?;
        if !self.session.transactional() {
            let cond = self.shadow_row_condition(staging, key, key_match, filter)?;
            return self.shadow_update(cond, assignments).await;
        }
        let rows = RowSelection {
            target: &self.target,
            staging,
            key,
            key_match,
            filter,
        };
        let predicate = self.manifest_predicate.as_deref();
        let stmt = render::update_rows(self.dialect(), rows, assignments, predicate)?;
        self.execute(stmt).await
    }

    async fn insert_new_rows(
        &mut self,
        staging: &TableName,
        columns: &[String],
        key: &[String],
        filter: &[Term],
        extra: &[(String, Value)],
    ) -> Result<u64> {
        self.require_transaction("insert-new-rows")?;
        self.analyze_staging(staging, &names(key)).await?;
        if !self.session.transactional() {
            return self
                .shadow_insert_new_rows(staging, columns, key, filter, extra)
                .await;
        }
        let rows = NewRows {
            target: &self.target,
            staging,
            columns,
            key,
            filter,
            extra,
        };
        let stmt =
            render::insert_new_rows(self.dialect(), rows, self.manifest_predicate.as_deref())?;
        self.execute(stmt).await
    }

    /// The same over the target rows matching `filter`, inside the open transaction.
    async fn check_target_keys(
        &mut self,
        schema: &Schema,
        key: &[String],
        filter: &[Term],
    ) -> Result<KeyCheck> {
        let current = if self.session.transactional() {
            self.target.clone()
        } else {
            self.settle().await?;
            self.shadow_current().clone()
        };
        self.key_check(current, schema, key, filter).await
    }

    async fn delete_where(&mut self, filter: &[Term]) -> Result<u64> {
        self.require_transaction("delete-where")?;
        if !self.session.transactional() {
            let cond = render::filter_condition(
                self.dialect(),
                filter,
                self.manifest_predicate.as_deref(),
            )?;
            return self.shadow_delete(cond).await;
        }
        let stmt = render::delete_where(
            self.dialect(),
            &self.target,
            filter,
            self.manifest_predicate.as_deref(),
        )?;
        self.execute(stmt).await
    }

    /// Replaces the target's native partitions holding the staged values of `column`
    /// inside the open transaction; `None`, changing nothing, when the target cannot take
    /// it natively (the caller falls back to delete + insert). Returns (deleted, inserted).
    async fn replace_partitions(
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
        if !self.session.transactional() {
            return self
                .shadow_replace_partitions(staging, columns, column)
                .await;
        }
        let suffix = format!("dpone_{}", self.run_tag);
        self.session
            .replace_partitions(
                &self.target,
                staging,
                columns,
                column,
                &suffix,
                &mut self.statements,
            )
            .await
    }

    async fn truncate_and_insert(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        self.require_transaction("truncate-and-insert")?;
        if !self.session.transactional() {
            self.shadow_empty().await?;
            return self.shadow_insert_from(staging, columns).await;
        }
        let truncate = self
            .dialect()
            .truncate(&self.dialect().table_ref(&self.target));
        self.execute(Statement::new(truncate)).await?;
        self.insert_from_staging(staging, columns).await
    }

    /// Publishes staging as the target inside the open transaction.
    async fn swap(&mut self, staging: &TableName) -> Result<()> {
        self.require_transaction("swap")?;
        self.build_deferred(staging).await?;
        if !self.session.transactional() {
            return self.shadow_swap(staging).await;
        }
        for sql in render::swap(self.dialect(), &self.target, staging) {
            self.execute(Statement::new(sql)).await?;
        }
        self.release(staging);
        Ok(())
    }

    fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Notes a step the plan shows without a statement of the sink's own.
    fn note(&mut self, step: String) {
        self.statements.push(format!("-- {step}"));
    }

    /// After a failed run: rolls back and drops the staging tables the run left. Errors are
    /// logged, not returned, so the run's own error is what the user sees. Returns whether
    /// every leftover is gone.
    async fn drop_leftovers(&mut self) -> bool {
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

    fn statements(&self) -> Vec<String> {
        self.statements.lines()
    }

    async fn reconnect(&mut self) -> Result<()> {
        self.session = super::connect(&self.connection, Kind::Sink, super::Open::Existing).await?;
        self.in_transaction = false;
        self.shadow = shadow::Shadow::default();
        Ok(())
    }

    async fn drop_staging_of(&mut self, run_ids: &[String]) -> Result<usize> {
        let mut dropped = 0;
        for run_id in run_ids {
            let prefix = format!("__dpone_stg_{}_", run_tag(run_id));
            let stmt = self.dialect().tables_with_prefix(&self.target, &prefix);
            let names = self.session.query(&stmt, &[DataType::Text]).await?;
            for name in names.into_iter().flatten() {
                if let Value::Text(name) = name {
                    let table = self.target.sibling(name);
                    self.execute(Statement::new(render::drop_table(self.dialect(), &table)))
                        .await?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    async fn abandon(&mut self) -> Result<()> {
        let terminate = self.session.terminate_statement();
        // Dropping the old session closes its connection; a server that would finish the
        // statement first is told to end it from the new one.
        self.reconnect().await?;
        if let Some(stmt) = terminate {
            self.session.execute(&stmt).await?;
        }
        Ok(())
    }
}

fn names(columns: &[String]) -> Vec<&str> {
    columns.iter().map(String::as_str).collect()
}

/// A [`StagingWriter`] on its own session of the sink's database.
struct SqlWriter(Box<dyn SqlSession>);

#[async_trait]
impl StagingWriter for SqlWriter {
    async fn load(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<u64> {
        self.0.bulk_insert(staging, schema, rx).await
    }

    async fn load_wire(
        &mut self,
        staging: &TableName,
        schema: &Schema,
        rx: mpsc::Receiver<WireRows>,
    ) -> Result<u64> {
        self.0.bulk_insert_wire(staging, schema, rx).await
    }
}

/// The part of a run id that names its staging tables (`__dpone_stg_<tag>_<n>`).
fn run_tag(run_id: &str) -> String {
    run_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect()
}

/// Column `col` of the first row as a count (0 when absent).
pub(crate) fn first_count(rows: &[Vec<Value>], col: usize) -> u64 {
    match rows.first().and_then(|r| r.get(col)) {
        Some(Value::Int(n)) => (*n).max(0) as u64,
        _ => 0,
    }
}

/// The first column of each row, where it is text: a list a catalog query returns.
pub(crate) fn first_texts(rows: Vec<Vec<Value>>) -> Vec<String> {
    rows.into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        })
        .collect()
}
