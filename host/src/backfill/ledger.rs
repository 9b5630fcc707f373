//! The campaign ledger: one row per chunk in the state store, claimed under a lease.
//!
//! Contract: a worker runs a chunk only while it holds the chunk's lease (`running`, its
//! owner, `lease_expires` in the future) and renews it while it works; a lease that expires
//! (its worker died) makes the chunk claimable again. On PostgreSQL claims use
//! `FOR UPDATE SKIP LOCKED` (SQL Server: `UPDLOCK, READPAST`), so any number of processes
//! on any machines can work one campaign; SQLite serializes writers on its file lock. Chunk finalizations are idempotent,
//! so a chunk that runs twice (its worker died after committing, before `finish`) is
//! harmless.

use crate::connectors::dialect::NewTable;
use crate::connectors::{SqlSession, Statement, TableName, render};
use crate::error::{Error, Result};
use crate::model::{DataType, RangeTerm, Value, value_from_json, value_to_json};
use crate::state::{bookkeeping_schema, numbered};

/// A chunk's row in the ledger.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChunkRow {
    pub index: i64,
    pub low: String,
    pub high: String,
    /// `pending`, `running`, `done` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<i64>,
    pub rows_written: i64,
    pub error: Option<String>,
}

/// The ledger of one campaign.
pub struct Ledger {
    session: Box<dyn SqlSession>,
    table: TableName,
    pipeline: String,
    campaign: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("campaign", &self.campaign)
            .finish_non_exhaustive()
    }
}

fn state_error(e: Error) -> Error {
    Error::state(e.message)
}

impl Ledger {
    /// Opens the ledger of `campaign`, creating its table when `create`.
    pub async fn open(
        mut session: Box<dyn SqlSession>,
        pipeline: &str,
        campaign: &str,
        create: bool,
    ) -> Result<Self> {
        let table = session.dialect().bookkeeping_table("backfill_chunks");
        if create {
            let mut ddl: Vec<String> = render::create_namespace(session.dialect(), &table)
                .into_iter()
                .collect();
            let (i, t) = (DataType::Int64, DataType::Text);
            ddl.push(session.dialect().create_table(
                &table,
                &bookkeeping_schema(&[
                    ("pipeline", t, false),
                    ("campaign", t, false),
                    ("chunk_index", i, false),
                    ("range_low", t, false),
                    ("range_high", t, false),
                    ("status", t, false),
                    ("attempts", i, false),
                    ("lease_owner", t, true),
                    ("lease_expires", i, true),
                    ("rows_written", i, false),
                    ("error", t, true),
                    ("updated_at", t, false),
                ]),
                &["pipeline".into(), "campaign".into(), "chunk_index".into()],
                NewTable::Target,
            ));
            for sql in ddl {
                session
                    .execute(&Statement::new(sql))
                    .await
                    .map_err(state_error)?;
            }
        }
        Ok(Ledger {
            session,
            table,
            pipeline: pipeline.into(),
            campaign: campaign.into(),
        })
    }

    pub fn campaign(&self) -> &str {
        &self.campaign
    }

    fn scope(&self) -> Vec<Value> {
        vec![
            Value::Text(self.pipeline.clone()),
            Value::Text(self.campaign.clone()),
        ]
    }

    /// A statement written with `$n` placeholders, in the store's dialect.
    fn statement(&self, sql: String, params: Vec<Value>) -> Result<Statement> {
        render::with_placeholders(self.session.dialect(), Statement { sql, params })
    }

    fn table_ref(&self) -> String {
        self.session.dialect().table_ref(&self.table)
    }

    async fn execute(&mut self, sql: String, params: Vec<Value>) -> Result<u64> {
        let stmt = self.statement(sql, params)?;
        self.session.execute(&stmt).await.map_err(state_error)
    }

    /// Records the plan's chunks as `pending`; chunks already in the ledger keep their row.
    pub async fn ensure_plan(&mut self, chunks: &[RangeTerm], now: &str) -> Result<()> {
        let mut values = numbered(1..=5);
        values.extend(["'pending'", "0", "0", "$6"].map(String::from));
        let sql = self.session.dialect().upsert(
            &self.table,
            &[
                "pipeline",
                "campaign",
                "chunk_index",
                "range_low",
                "range_high",
                "status",
                "attempts",
                "rows_written",
                "updated_at",
            ],
            &values,
            &["pipeline", "campaign", "chunk_index"],
            &[],
        );
        self.session.begin().await.map_err(state_error)?;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut params = self.scope();
            params.extend([
                Value::Int(i as i64),
                Value::Text(value_to_json(&chunk.low).to_string()),
                Value::Text(value_to_json(&chunk.high).to_string()),
                Value::Text(now.into()),
            ]);
            if let Err(e) = self.execute(sql.clone(), params).await {
                let _ = self.session.rollback().await;
                return Err(e);
            }
        }
        self.session.commit().await.map_err(state_error)
    }

    /// Claims the next chunk that is pending, or running under an expired lease, for
    /// `owner` until `lease_until` (microseconds since the epoch); counts the attempt.
    /// Chunks whose lease expired on their last attempt are marked failed first.
    pub async fn claim(
        &mut self,
        owner: &str,
        now: i64,
        lease_until: i64,
        max_attempts: u32,
        now_text: &str,
    ) -> Result<Option<i64>> {
        let table = self.table_ref();
        let mut params = self.scope();
        params.extend([
            Value::Int(now),
            Value::Int(i64::from(max_attempts)),
            Value::Text(now_text.into()),
        ]);
        self.execute(
            format!(
                "UPDATE {table} SET status = 'failed', lease_owner = NULL, updated_at = $5, \
                 error = 'the worker holding its lease stopped renewing it on the last attempt' \
                 WHERE pipeline = $1 AND campaign = $2 AND status = 'running' AND lease_expires < $3 \
                 AND attempts >= $4"
            ),
            params,
        )
        .await?;
        let mut params = self.scope();
        params.extend([
            Value::Text(owner.into()),
            Value::Int(lease_until),
            Value::Text(now_text.into()),
            Value::Text(self.pipeline.clone()),
            Value::Text(self.campaign.clone()),
            Value::Int(now),
        ]);
        let sql = self.session.dialect().update_first(
            &self.table,
            "status = 'running', attempts = attempts + 1, lease_owner = $3, lease_expires = $4, \
             updated_at = $5, error = NULL",
            "pipeline = $1 AND campaign = $2",
            "pipeline = $6 AND campaign = $7 AND (status = 'pending' OR (status = 'running' \
             AND lease_expires < $8))",
            "chunk_index",
        );
        let stmt = self.statement(sql, params)?;
        let rows = self
            .session
            .query(&stmt, &[DataType::Int64])
            .await
            .map_err(state_error)?;
        Ok(match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        })
    }

    /// Extends `owner`'s lease on a chunk; `false` when the lease was lost (it expired and
    /// another worker claimed the chunk).
    pub async fn renew(&mut self, index: i64, owner: &str, lease_until: i64) -> Result<bool> {
        let mut params = self.scope();
        params.extend([
            Value::Int(index),
            Value::Text(owner.into()),
            Value::Int(lease_until),
        ]);
        let n = self
            .execute(
                format!(
                    "UPDATE {} SET lease_expires = $5 WHERE pipeline = $1 AND campaign = $2 \
                     AND chunk_index = $3 AND lease_owner = $4 AND status = 'running'",
                    self.table_ref()
                ),
                params,
            )
            .await?;
        Ok(n == 1)
    }

    /// Marks a chunk done by `owner`.
    pub async fn finish(
        &mut self,
        index: i64,
        owner: &str,
        rows_written: u64,
        now_text: &str,
    ) -> Result<()> {
        let mut params = self.scope();
        params.extend([
            Value::Int(index),
            Value::Text(owner.into()),
            Value::Int(i64::try_from(rows_written).unwrap_or(i64::MAX)),
            Value::Text(now_text.into()),
        ]);
        self.execute(
            format!(
                "UPDATE {} SET status = 'done', lease_owner = NULL, lease_expires = NULL, \
                 rows_written = $5, updated_at = $6 WHERE pipeline = $1 AND campaign = $2 \
                 AND chunk_index = $3 AND lease_owner = $4",
                self.table_ref()
            ),
            params,
        )
        .await?;
        Ok(())
    }

    /// Records a failed attempt: back to `pending` when `retry` and attempts remain, else
    /// `failed`.
    pub async fn fail(
        &mut self,
        index: i64,
        owner: &str,
        error: &str,
        retry: bool,
        max_attempts: u32,
        now_text: &str,
    ) -> Result<()> {
        let mut params = self.scope();
        params.extend([
            Value::Int(index),
            Value::Text(owner.into()),
            Value::Text(error.chars().take(2000).collect()),
            Value::Int(if retry { i64::from(max_attempts) } else { 0 }),
            Value::Text(now_text.into()),
        ]);
        self.execute(
            format!(
                "UPDATE {} SET status = CASE WHEN attempts < $6 THEN 'pending' ELSE 'failed' END, \
                 lease_owner = NULL, lease_expires = NULL, error = $5, updated_at = $7 \
                 WHERE pipeline = $1 AND campaign = $2 AND chunk_index = $3 AND lease_owner = $4",
                self.table_ref()
            ),
            params,
        )
        .await?;
        Ok(())
    }

    /// Makes every failed chunk pending again with a fresh attempt budget; returns how many.
    pub async fn reset_failed(&mut self, now_text: &str) -> Result<u64> {
        let mut params = self.scope();
        params.push(Value::Text(now_text.into()));
        self.execute(
            format!(
                "UPDATE {} SET status = 'pending', attempts = 0, updated_at = $3 \
                 WHERE pipeline = $1 AND campaign = $2 AND status = 'failed'",
                self.table_ref()
            ),
            params,
        )
        .await
    }

    /// Every chunk of the campaign, in plan order; empty when the campaign never started.
    pub async fn chunks(&mut self) -> Result<Vec<ChunkRow>> {
        if self
            .session
            .table_schema(&self.table)
            .await
            .map_err(state_error)?
            .is_none()
        {
            return Ok(Vec::new());
        }
        let stmt = self.statement(
            format!(
                "SELECT chunk_index, range_low, range_high, status, attempts, lease_owner, \
                 lease_expires, rows_written, error FROM {} WHERE pipeline = $1 AND campaign = $2 \
                 ORDER BY chunk_index",
                self.table_ref()
            ),
            self.scope(),
        )?;
        let (i, t) = (DataType::Int64, DataType::Text);
        let rows = self
            .session
            .query(&stmt, &[i, t, t, t, i, t, i, i, t])
            .await
            .map_err(state_error)?;
        let text = |v: &Value| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        let int = |v: &Value| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        };
        let shown = |v: &Value| {
            text(v)
                .and_then(|j| serde_json::from_str(&j).ok())
                .and_then(|j| value_from_json(&j).ok())
                .map(|v| crate::model::value_display(&v))
                .unwrap_or_default()
        };
        Ok(rows
            .iter()
            .map(|r| ChunkRow {
                index: int(&r[0]).unwrap_or_default(),
                low: shown(&r[1]),
                high: shown(&r[2]),
                status: text(&r[3]).unwrap_or_default(),
                attempts: int(&r[4]).unwrap_or_default(),
                lease_owner: text(&r[5]),
                lease_expires: int(&r[6]),
                rows_written: int(&r[7]).unwrap_or_default(),
                error: text(&r[8]),
            })
            .collect())
    }
}
