//! The copy-on-write shadow: how a sink whose session has no transactions that span its
//! statements (ClickHouse, BigQuery) keeps the sink contract, for any dialect.
//!
//! The first change after `begin` copies the target to `__dpone_shd_<run>_<n>`, every change
//! rewrites or appends to the shadow (a delete is a copy without the rows, an update a copy
//! with the new values, written with the dialect's `holds` and `choose`), and `commit`
//! publishes the shadow with the session's swap statement (ClickHouse: a rename, the old
//! target going to `__dpone_old_<run>`, then dropped; BigQuery: one multi-statement
//! transaction that replaces the target's rows with the shadow's). An append while nothing else changed waits for the
//! commit and costs one `INSERT ... SELECT` into the target, no copy; a native partition
//! replacement loads a copy shaped like the target and runs the session's partition
//! replacements at commit. `rollback`, or a crash before the publishing statement, leaves
//! the target as it was; the shadows are this run's leftovers.
//! docs/connectors/clickhouse.md and docs/connectors/bigquery.md list the crash windows.

use super::{SqlSink, first_count};
use crate::connectors::dialect::KeyMatch;
use crate::connectors::render::{self, NewRows, RowSelection};
use crate::connectors::{Sink, Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{DataType, Schema, Term, Value};

/// The open transaction's state on a sink without session transactions.
#[derive(Debug, Default)]
pub(super) struct Shadow {
    /// The table that becomes the target at commit, once the transaction changed anything.
    current: Option<TableName>,
    /// A table shaped like the target whose partitions replace the target's at commit.
    partitions: Option<TableName>,
    /// Staging tables to append (with their columns) at commit, while nothing else changed,
    /// so an append costs one `INSERT ... SELECT` and no copy of the target.
    inserts: Vec<(TableName, Vec<String>)>,
}

impl Shadow {
    /// Whether an append from `staging` still waits for the commit.
    pub(super) fn appends_from(&self, staging: &TableName) -> bool {
        self.inserts.iter().any(|(t, _)| t == staging)
    }
}

impl SqlSink {
    /// `rollback`: forgets the transaction first, so a failed drop cannot leave it half
    /// open, then drops its shadow and partition copy.
    pub(super) async fn shadow_rollback(&mut self) -> Result<()> {
        let shadow = std::mem::take(&mut self.shadow);
        for table in shadow.current.into_iter().chain(shadow.partitions) {
            self.drop_now(&table).await?;
        }
        Ok(())
    }

    /// `insert-from-staging`: deferred to the commit while nothing else changed, else into
    /// the shadow.
    pub(super) async fn shadow_insert_from(
        &mut self,
        staging: &TableName,
        columns: &[String],
    ) -> Result<u64> {
        if self.shadow.current.is_none() && self.shadow.partitions.is_none() {
            self.shadow
                .inserts
                .push((staging.clone(), columns.to_vec()));
            self.statements.push(format!(
                "-- at commit: INSERT INTO {} SELECT ... FROM {staging}",
                self.target
            ));
            return self.count_where(staging, None).await;
        }
        let shadow = self.materialize().await?;
        let sql = render::insert_from(self.dialect(), &shadow, staging, columns);
        self.counted_insert(&shadow, Statement::new(sql)).await
    }

    /// The condition selecting the shadow's rows whose key relates to staging as asked.
    pub(super) fn shadow_row_condition(
        &self,
        staging: &TableName,
        key: &[String],
        key_match: &KeyMatch,
        filter: &[Term],
    ) -> Result<Statement> {
        let rows = RowSelection {
            target: self.shadow_current(),
            staging,
            key,
            key_match,
            filter,
        };
        render::row_condition(self.dialect(), rows, self.manifest_predicate.as_deref())
    }

    /// `insert-new-rows`: counts the new rows first, and copies the target only when there
    /// are some.
    pub(super) async fn shadow_insert_new_rows(
        &mut self,
        staging: &TableName,
        columns: &[String],
        key: &[String],
        filter: &[Term],
        extra: &[(String, Value)],
    ) -> Result<u64> {
        self.settle().await?;
        let predicate = self.manifest_predicate.clone();
        let predicate = predicate.as_deref();
        let current = self.shadow_current().clone();
        let rows = NewRows {
            target: &current,
            staging,
            columns,
            key,
            filter,
            extra,
        };
        let select = render::new_rows_select(self.dialect(), rows, predicate)?;
        let new = self
            .query(
                Statement {
                    sql: format!("SELECT COUNT(*) FROM ({}) AS new_rows", select.sql),
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
        Ok(new)
    }

    /// `truncate-and-insert`'s truncate: an empty shadow replaces whatever was current.
    pub(super) async fn shadow_empty(&mut self) -> Result<()> {
        self.discard_pending().await?;
        let previous = self.new_shadow().await?;
        self.retire(previous).await
    }

    /// `swap`: staging becomes the shadow.
    pub(super) async fn shadow_swap(&mut self, staging: &TableName) -> Result<()> {
        self.discard_pending().await?;
        let previous = self.shadow_current().clone();
        self.shadow.current = Some(staging.clone());
        self.retire(previous).await
    }

    /// `replace-partitions`: loads the staged rows into a copy of the target and notes its partitions for
    /// `REPLACE PARTITION` at commit; `None` when the target is not partitioned by exactly
    /// `column`, or the transaction already changed the target another way.
    pub(super) async fn shadow_replace_partitions(
        &mut self,
        staging: &TableName,
        columns: &[String],
        column: &str,
    ) -> Result<Option<(u64, u64)>> {
        if self.shadow.current.is_some() || self.shadow.partitions.is_some() {
            return Ok(None);
        }
        let target = self.target.clone();
        if !self.session.partitioned_by(&target, column).await? {
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
                Statement::new(render::insert_from(self.dialect(), &copy, staging, columns)),
            )
            .await?;
        let q = self.dialect().quote_ident(column);
        let touched = Statement::new(format!(
            "{q} IN (SELECT {q} FROM {})",
            self.dialect().table_ref(&copy)
        ));
        let deleted = self.count_where(&target, Some(&touched)).await?;
        self.statements.push(format!(
            "-- at commit: replace the partitions of {} that {copy} has rows in",
            self.target
        ));
        self.shadow.partitions = Some(copy);
        Ok(Some((deleted, inserted)))
    }

    /// Applies the pending partition replacements and appends to `into` (the target, or a
    /// shadow created like it).
    async fn apply_pending(&mut self, into: &TableName) -> Result<()> {
        for (staging, columns) in std::mem::take(&mut self.shadow.inserts) {
            let sql = render::insert_from(self.dialect(), into, &staging, &columns);
            self.execute(Statement::new(sql)).await?;
        }
        let Some(copy) = self.shadow.partitions.take() else {
            return Ok(());
        };
        let replacements = self.session.partition_replacements(into, &copy).await?;
        for (i, sql) in replacements.into_iter().enumerate() {
            self.execute(Statement::new(sql)).await?;
            if i == 0 {
                crate::failpoint("sink.partition_replaced");
            }
        }
        self.drop_now(&copy).await
    }

    /// Applies pending partition replacements to a shadow, so a change that builds on the
    /// transaction's view of the target sees them.
    pub(super) async fn settle(&mut self) -> Result<()> {
        if self.shadow.partitions.is_some() || !self.shadow.inserts.is_empty() {
            self.materialize().await?;
        }
        Ok(())
    }

    /// Forgets pending appends and partition replacements that a wholesale replacement of
    /// the target makes moot.
    async fn discard_pending(&mut self) -> Result<()> {
        self.shadow.inserts.clear();
        if let Some(copy) = self.shadow.partitions.take() {
            self.drop_now(&copy).await?;
        }
        Ok(())
    }

    /// The table holding the open transaction's view of the target.
    pub(super) fn shadow_current(&self) -> &TableName {
        self.shadow.current.as_ref().unwrap_or(&self.target)
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
        self.shadow
            .current
            .get_or_insert_with(|| self.target.clone())
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
        if let Some(shadow) = &self.shadow.current {
            return Ok(shadow.clone());
        }
        let previous = self.new_shadow().await?;
        let shadow = self.shadow_current().clone();
        let sql = format!(
            "INSERT INTO {} SELECT * FROM {}",
            self.dialect().table_ref(&shadow),
            self.dialect().table_ref(&previous)
        );
        self.execute(Statement::new(sql)).await?;
        self.apply_pending(&shadow).await?;
        Ok(shadow)
    }

    async fn count_where(&mut self, table: &TableName, cond: Option<&Statement>) -> Result<u64> {
        let stmt = match cond {
            None => Statement::new(render::count(self.dialect(), table)),
            Some(c) => Statement {
                sql: format!(
                    "{} WHERE {}",
                    render::count(self.dialect(), table),
                    self.dialect().holds(&c.sql)
                ),
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
    pub(super) async fn shadow_delete(&mut self, cond: Statement) -> Result<u64> {
        self.settle().await?;
        let current = self.shadow_current().clone();
        let matched = self.count_where(&current, Some(&cond)).await?;
        if matched == 0 && !self.dry_run {
            return Ok(0);
        }
        let previous = self.new_shadow().await?;
        let sql = format!(
            "INSERT INTO {} SELECT * FROM {} WHERE NOT {}",
            self.dialect().table_ref(self.shadow_current()),
            self.dialect().table_ref(&previous),
            self.dialect().holds(&cond.sql)
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
    pub(super) async fn shadow_update(
        &mut self,
        cond: Statement,
        assignments: &[(String, Value)],
    ) -> Result<u64> {
        render::check_assignments(assignments)?;
        self.settle().await?;
        let current = self.shadow_current().clone();
        let matched = self.count_where(&current, Some(&cond)).await?;
        if matched == 0 && !self.dry_run {
            return Ok(0);
        }
        let columns = self.existing_target().await?.names();
        let d = self.dialect();
        let mut params = cond.params;
        let mut select = Vec::with_capacity(columns.len());
        for c in &columns {
            let q = d.quote_ident(c);
            select.push(match assignments.iter().find(|(a, _)| a == c) {
                Some((_, v)) => {
                    params.push(v.clone());
                    let value = d.placeholder(params.len(), v)?;
                    format!("{} AS {q}", d.choose(&cond.sql, &value, &q))
                }
                None => q,
            });
        }
        let previous = self.new_shadow().await?;
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            self.dialect().table_ref(self.shadow_current()),
            self.dialect().column_list(&columns),
            select.join(", "),
            self.dialect().table_ref(&previous)
        );
        self.execute(Statement { sql, params }).await?;
        self.retire(previous).await?;
        Ok(matched)
    }

    /// Publishes the shadow: one statement puts it in the target's place, then the old
    /// rows are dropped.
    pub(super) async fn shadow_publish(&mut self) -> Result<()> {
        let Some(shadow) = self.shadow.current.take() else {
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
            .execute(Statement::new(render::drop_table(self.dialect(), &retired)))
            .await
        {
            tracing::warn!(
                "the target is published, but its old copy {retired} was not dropped: {e}"
            );
        }
        Ok(())
    }
}
