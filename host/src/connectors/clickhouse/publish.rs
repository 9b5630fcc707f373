//! How a shadow becomes the target on ClickHouse (connectors/sink.rs has the shadow itself),
//! and which targets can be shadowed at all.
//!
//! An `Atomic` database (the default from 20.10) swaps two tables atomically with `EXCHANGE
//! TABLES`; there a multi-table `RENAME` is not atomic. An `Ordinary` database (18.16, and
//! older databases on newer servers) has no `EXCHANGE`, and renames the listed tables in
//! one statement under the server's DDL lock. Only the `Ordinary` path runs against the
//! server in this repository's tests (Debian's 18.16); the `Atomic` one is rendered the same
//! way and its statement unit-tested.

use super::dialect::{NAMES, text_literal};
use crate::connectors::dialect::SqlDialect;
use crate::connectors::{SqlSession, Statement, TableName};
use crate::error::{Error, Result};
use crate::model::{DataType, Value};

/// `database = '<schema>'`, or the session's database for an unqualified table.
pub fn database_is(table: &TableName) -> String {
    match &table.schema {
        Some(s) => format!("database = {}", text_literal(s)),
        None => "database = currentDatabase()".into(),
    }
}

/// The first column of the first row of `sql`, as text.
pub(super) async fn text(s: &mut dyn SqlSession, sql: String) -> Result<Option<String>> {
    let rows = s.query(&Statement::new(sql), &[DataType::Text]).await?;
    Ok(
        match rows.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        },
    )
}

/// Refuses a target whose engine a shadow cannot stand in for: only a non-replicated
/// MergeTree family table can be copied `AS` itself and swapped (a copy of a Distributed
/// table writes into its shards, of a Replicated one registers a second replica).
pub async fn check_engine(s: &mut dyn SqlSession, target: &TableName) -> Result<()> {
    let sql = format!(
        "SELECT engine FROM system.tables WHERE {} AND name = {}",
        database_is(target),
        text_literal(&target.name)
    );
    match text(s, sql).await? {
        Some(engine) if engine.ends_with("MergeTree") && !engine.starts_with("Replicated") => {
            Ok(())
        }
        Some(engine) => Err(Error::config(
            "sink.table",
            format!(
                "{target} is a `{engine}` table: dpone finalizes ClickHouse targets through a copy published by rename, which needs a non-replicated MergeTree family engine (MergeTree, ReplacingMergeTree, ...)"
            ),
        )),
        None => Ok(()),
    }
}

/// The statement that puts `shadow` in the target's place, and the table left holding the
/// old rows, to drop after.
pub async fn statement(
    s: &mut dyn SqlSession,
    target: &TableName,
    shadow: &TableName,
    old: &TableName,
) -> Result<(String, TableName)> {
    let sql = format!(
        "SELECT engine FROM system.databases WHERE name = {}",
        match &target.schema {
            Some(db) => text_literal(db),
            None => "currentDatabase()".into(),
        }
    );
    let atomic = text(s, sql).await?.is_some_and(|e| e == "Atomic");
    Ok(swap_sql(atomic, target, shadow, old))
}

fn swap_sql(
    atomic: bool,
    target: &TableName,
    shadow: &TableName,
    old: &TableName,
) -> (String, TableName) {
    if atomic {
        let sql = format!(
            "EXCHANGE TABLES {} AND {}",
            NAMES.table_ref(target),
            NAMES.table_ref(shadow)
        );
        (sql, shadow.clone())
    } else {
        let sql = format!(
            "RENAME TABLE {} TO {}, {} TO {}",
            NAMES.table_ref(target),
            NAMES.table_ref(old),
            NAMES.table_ref(shadow),
            NAMES.table_ref(target)
        );
        (sql, old.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_databases_exchange_and_ordinary_ones_rename() {
        let t = TableName::parse("db.t", "t").unwrap();
        let (shadow, old) = (t.sibling("s".into()), t.sibling("o".into()));
        assert_eq!(
            swap_sql(true, &t, &shadow, &old),
            (
                "EXCHANGE TABLES \"db\".\"t\" AND \"db\".\"s\"".into(),
                shadow.clone()
            )
        );
        assert_eq!(
            swap_sql(false, &t, &shadow, &old),
            (
                "RENAME TABLE \"db\".\"t\" TO \"db\".\"o\", \"db\".\"s\" TO \"db\".\"t\"".into(),
                old.clone()
            )
        );
    }
}
