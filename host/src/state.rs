//! The state store: per-pipeline state entries and the run history.
//!
//! SQLite (a file under `.dpone/`) is the embedded default, PostgreSQL and SQL Server the
//! shared stores. Each keeps the same two tables (`dpone_state_entries`, `dpone_runs`; in
//! schema `dpone` where the database has schemas), written by the same statements in the
//! store's dialect. Contract: entries change only through [`StateStore::entry_writes`],
//! whose statements either run in the sink's own transaction (when the store is the sink's
//! database) or in [`StateStore::apply`] right after the sink committed.

use std::collections::BTreeMap;

use crate::connectors::dialect::NewTable;
use crate::connectors::{SqlSession, Statement, TableName, render};
use crate::error::{Error, Result};
use crate::model::{DataType, Value, value_from_json, value_to_json};

/// `$first..=$last`, the values of an upsert written with `$n` placeholders.
pub(crate) fn numbered(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!("${n}")).collect()
}

/// The schema of a bookkeeping table: (name, type, nullable) per column.
pub(crate) fn bookkeeping_schema(columns: &[(&str, DataType, bool)]) -> crate::model::Schema {
    crate::model::Schema {
        columns: columns
            .iter()
            .map(|(name, t, nullable)| crate::model::Column {
                name: (*name).into(),
                data_type: *t,
                nullable: *nullable,
            })
            .collect(),
        primary_key: Vec::new(),
    }
}

/// One run, as the history keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub strategy_name: String,
    pub strategy_version: String,
    pub strategy_hash: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub rows_read: i64,
    pub rows_written: i64,
    pub outcome: String,
    pub error: Option<String>,
}

/// How long [`StateStore::lock_pipeline`] waits for another run's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A state store on its own connection.
pub struct StateStore {
    session: Box<dyn SqlSession>,
    entries: TableName,
    runs: TableName,
    /// The tables do not exist and may not be created (dry runs, `state show`): the
    /// store reads as empty.
    absent: bool,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens the store; creates its tables when missing if `create`, otherwise a store
    /// without tables reads as empty and refuses writes.
    pub async fn open(mut session: Box<dyn SqlSession>, create: bool) -> Result<Self> {
        let d = session.dialect();
        let (entries, runs) = (
            d.bookkeeping_table("state_entries"),
            d.bookkeeping_table("runs"),
        );
        if !create {
            let absent = session
                .table_schema(&entries)
                .await
                .map_err(|e| Error::state(e.message))?
                .is_none();
            return Ok(StateStore {
                session,
                entries,
                runs,
                absent,
            });
        }
        let mut ddl: Vec<String> = render::create_namespace(session.dialect(), &entries)
            .into_iter()
            .collect();
        let d = session.dialect();
        ddl.push(d.create_table(
            &entries,
            &bookkeeping_schema(&[
                ("pipeline", DataType::Text, false),
                ("entry_key", DataType::Text, false),
                ("entry_value", DataType::Text, false),
                ("updated_at", DataType::Text, false),
            ]),
            &["pipeline".into(), "entry_key".into()],
            NewTable::Target,
        ));
        ddl.push(d.create_table(
            &runs,
            &bookkeeping_schema(&[
                ("run_id", DataType::Text, false),
                ("pipeline", DataType::Text, false),
                ("strategy_name", DataType::Text, false),
                ("strategy_version", DataType::Text, false),
                ("strategy_hash", DataType::Text, false),
                ("started_at", DataType::Text, false),
                ("finished_at", DataType::Text, true),
                ("rows_read", DataType::Int64, false),
                ("rows_written", DataType::Int64, false),
                ("outcome", DataType::Text, false),
                ("error", DataType::Text, true),
            ]),
            &["run_id".into()],
            NewTable::Target,
        ));
        for sql in ddl {
            session
                .execute(&Statement::new(sql))
                .await
                .map_err(|e| Error::state(e.message))?;
        }
        Ok(StateStore {
            session,
            entries,
            runs,
            absent: false,
        })
    }

    /// Makes this process the only one running `pipeline` until the store is dropped.
    /// Fails, without touching anything, when another run of it still holds the lock after
    /// [`LOCK_WAIT`]: a run that was just killed holds it until its server notices the
    /// closed connection, which a restart right after the crash must not mistake for a
    /// concurrent run.
    pub async fn lock_pipeline(&mut self, pipeline: &str) -> Result<()> {
        let name = format!("dpone.pipeline.{pipeline}");
        let started = std::time::Instant::now();
        let locked = loop {
            let locked = self
                .session
                .try_lock(&name)
                .await
                .map_err(|e| Error::state(e.message))?;
            if locked || started.elapsed() >= LOCK_WAIT {
                break locked;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        if locked {
            Ok(())
        } else {
            Err(Error::state(format!(
                "pipeline `{pipeline}` is already running in another process; this run changed nothing"
            )))
        }
    }

    /// The committed entries of a pipeline.
    pub async fn entries(&mut self, pipeline: &str) -> Result<BTreeMap<String, Value>> {
        if self.absent {
            return Ok(BTreeMap::new());
        }
        let stmt = self.statement(
            format!(
                "SELECT entry_key, entry_value FROM {} WHERE pipeline = $1 ORDER BY entry_key",
                self.table_ref(&self.entries)
            ),
            vec![Value::Text(pipeline.into())],
        )?;
        let rows = self
            .session
            .query(&stmt, &[DataType::Text, DataType::Text])
            .await
            .map_err(|e| Error::state(e.message))?;
        let mut out = BTreeMap::new();
        for row in rows {
            if let [Value::Text(k), Value::Text(v)] = row.as_slice() {
                let json: serde_json::Value = serde_json::from_str(v).map_err(Error::state)?;
                out.insert(k.clone(), value_from_json(&json)?);
            }
        }
        Ok(out)
    }

    /// The statements that upsert `entries`; run them in the sink's transaction when the
    /// store is colocated, otherwise through [`Self::apply`].
    pub fn entry_writes(
        &self,
        pipeline: &str,
        entries: &BTreeMap<String, Value>,
        now: &str,
    ) -> Result<Vec<Statement>> {
        let sql = self.session.dialect().upsert(
            &self.entries,
            &["pipeline", "entry_key", "entry_value", "updated_at"],
            &numbered(1..=4),
            &["pipeline", "entry_key"],
            &["entry_value", "updated_at"],
        );
        entries
            .iter()
            .map(|(k, v)| {
                self.statement(
                    sql.clone(),
                    vec![
                        Value::Text(pipeline.into()),
                        Value::Text(k.clone()),
                        Value::Text(value_to_json(v).to_string()),
                        Value::Text(now.into()),
                    ],
                )
            })
            .collect()
    }

    /// `table` quoted in the store's dialect.
    fn table_ref(&self, table: &TableName) -> String {
        self.session.dialect().table_ref(table)
    }

    /// A statement written with `$n` placeholders, in the store's dialect.
    fn statement(&self, sql: String, params: Vec<Value>) -> Result<Statement> {
        render::with_placeholders(self.session.dialect(), Statement { sql, params })
    }

    /// Runs `statements` in one transaction of the store.
    pub async fn apply(&mut self, statements: &[Statement]) -> Result<()> {
        if statements.is_empty() {
            return Ok(());
        }
        let s = &mut self.session;
        s.begin().await.map_err(|e| Error::state(e.message))?;
        for stmt in statements {
            if let Err(e) = s.execute(stmt).await {
                let _ = s.rollback().await;
                return Err(Error::state(e.message));
            }
        }
        s.commit().await.map_err(|e| Error::state(e.message))
    }

    /// Inserts or updates a run in the history.
    pub async fn record_run(&mut self, r: &RunRecord) -> Result<()> {
        let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
        let sql = self.session.dialect().upsert(
            &self.runs,
            &[
                "run_id",
                "pipeline",
                "strategy_name",
                "strategy_version",
                "strategy_hash",
                "started_at",
                "finished_at",
                "rows_read",
                "rows_written",
                "outcome",
                "error",
            ],
            &numbered(1..=11),
            &["run_id"],
            &[
                "finished_at",
                "rows_read",
                "rows_written",
                "outcome",
                "error",
            ],
        );
        let stmt = self.statement(
            sql,
            vec![
                Value::Text(r.run_id.clone()),
                Value::Text(r.pipeline.clone()),
                Value::Text(r.strategy_name.clone()),
                Value::Text(r.strategy_version.clone()),
                Value::Text(r.strategy_hash.clone()),
                Value::Text(r.started_at.clone()),
                opt(&r.finished_at),
                Value::Int(r.rows_read),
                Value::Int(r.rows_written),
                Value::Text(r.outcome.clone()),
                opt(&r.error),
            ],
        )?;
        self.session
            .execute(&stmt)
            .await
            .map_err(|e| Error::state(e.message))?;
        Ok(())
    }

    /// After a crash (kill -9, power loss) a run's history row stays `running`. Called by
    /// a run that holds the pipeline lock, so no other run of `strategy` on `pipeline` is
    /// alive: marks their rows `abandoned` and returns their run ids, whose staging the
    /// caller drops. Runs of other strategies under the same pipeline name (a backfill
    /// campaign's chunks take no pipeline lock) are left alone.
    pub async fn abandon_stale_runs(
        &mut self,
        pipeline: &str,
        strategy: &str,
        this_run: &str,
        now_text: &str,
    ) -> Result<Vec<String>> {
        let scope = vec![
            Value::Text(pipeline.into()),
            Value::Text(strategy.into()),
            Value::Text(this_run.into()),
        ];
        let stale = "pipeline = $1 AND strategy_name = $2 AND run_id <> $3 AND outcome = 'running'";
        let runs = self.table_ref(&self.runs);
        let found = self.statement(
            format!("SELECT run_id FROM {runs} WHERE {stale}"),
            scope.clone(),
        )?;
        let rows = self
            .session
            .query(&found, &[DataType::Text])
            .await
            .map_err(|e| Error::state(e.message))?;
        let ids: Vec<String> = rows
            .into_iter()
            .flatten()
            .filter_map(|v| match v {
                Value::Text(id) => Some(id),
                _ => None,
            })
            .collect();
        if !ids.is_empty() {
            let mut params = scope;
            params.push(Value::Text(now_text.into()));
            let mark = self.statement(
                format!(
                    "UPDATE {runs} SET outcome = 'abandoned', finished_at = $4, \
                     error = 'the process ended before the run finished (killed?); a later run dropped its staging' \
                     WHERE {stale}"
                ),
                params,
            )?;
            self.session
                .execute(&mark)
                .await
                .map_err(|e| Error::state(e.message))?;
        }
        Ok(ids)
    }

    /// The last `limit` runs of a pipeline, newest first.
    pub async fn runs(&mut self, pipeline: &str, limit: u32) -> Result<Vec<RunRecord>> {
        if self.absent {
            return Ok(Vec::new());
        }
        let stmt = self.statement(
            format!(
                "SELECT run_id, pipeline, strategy_name, strategy_version, strategy_hash, started_at, finished_at, \
                 rows_read, rows_written, outcome, error FROM {} WHERE pipeline = $1 ORDER BY started_at DESC{}",
                self.table_ref(&self.runs),
                self.session.dialect().limit(u64::from(limit), true)
            ),
            vec![Value::Text(pipeline.into())],
        )?;
        let t = DataType::Text;
        let types = [t, t, t, t, t, t, t, DataType::Int64, DataType::Int64, t, t];
        let rows = self
            .session
            .query(&stmt, &types)
            .await
            .map_err(|e| Error::state(e.message))?;
        let text = |v: &Value| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        let int = |v: &Value| if let Value::Int(i) = v { *i } else { 0 };
        Ok(rows
            .iter()
            .map(|r| RunRecord {
                run_id: text(&r[0]).unwrap_or_default(),
                pipeline: text(&r[1]).unwrap_or_default(),
                strategy_name: text(&r[2]).unwrap_or_default(),
                strategy_version: text(&r[3]).unwrap_or_default(),
                strategy_hash: text(&r[4]).unwrap_or_default(),
                started_at: text(&r[5]).unwrap_or_default(),
                finished_at: text(&r[6]),
                rows_read: int(&r[7]),
                rows_written: int(&r[8]),
                outcome: text(&r[9]).unwrap_or_default(),
                error: text(&r[10]),
            })
            .collect())
    }
}
