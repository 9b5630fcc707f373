//! Native partition replacement on ClickHouse: `ALTER TABLE target REPLACE PARTITION ID
//! '<id>' FROM <copy>` for each partition the staged rows fall into, where the copy is a
//! table created `AS` the target (same engine, sorting and partition key) loaded from
//! staging.
//!
//! Used only when the target is partitioned by exactly the column asked for, so each
//! partition holds one value and replacing it removes nothing that is not staged; otherwise
//! [`partition_key_is`] says no and the strategy falls back to delete + insert. Each
//! `REPLACE PARTITION` is atomic for its partition; the sink runs them at commit, after
//! which a crash leaves some partitions replaced: the re-run replaces them again with the
//! same rows, which converges.

use super::dialect::{NAMES, text_literal};
use super::publish::database_is;
use crate::connectors::dialect::SqlDialect;
use crate::connectors::{SqlSession, Statement, TableName};
use crate::error::Result;
use crate::model::{DataType, Value};

/// Whether `target`'s partition key is exactly `column`.
pub async fn partition_key_is(
    s: &mut dyn SqlSession,
    target: &TableName,
    column: &str,
) -> Result<bool> {
    let sql = format!(
        "SELECT partition_key FROM system.tables WHERE {} AND name = {}",
        database_is(target),
        text_literal(&target.name)
    );
    let rows = s.query(&Statement::new(sql), &[DataType::Text]).await?;
    Ok(match rows.first().and_then(|r| r.first()) {
        Some(Value::Text(key)) => {
            let key = key.trim();
            let unquoted = key
                .strip_prefix('`')
                .and_then(|k| k.strip_suffix('`'))
                .unwrap_or(key);
            unquoted == column
        }
        _ => false,
    })
}

/// The ids of the partitions `table` has rows in.
pub async fn partition_ids(s: &mut dyn SqlSession, table: &TableName) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT DISTINCT partition_id FROM system.parts WHERE {} AND table = {} AND active ORDER BY partition_id",
        database_is(table),
        text_literal(&table.name)
    );
    let rows = s.query(&Statement::new(sql), &[DataType::Text]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(Value::Text(id)) => Some(id),
            _ => None,
        })
        .collect())
}

/// Replaces partition `id` of `target` with the same partition of `copy`.
pub fn replace_sql(target: &TableName, copy: &TableName, id: &str) -> String {
    format!(
        "ALTER TABLE {} REPLACE PARTITION ID {} FROM {}",
        NAMES.table_ref(target),
        text_literal(id),
        NAMES.table_ref(copy)
    )
}
