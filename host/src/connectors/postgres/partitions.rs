//! Native partition replacement on PostgreSQL: each leaf of a declaratively partitioned
//! target that staging touches is swapped for a new table loaded from staging (detach,
//! attach with the same bound, drop, rename), inside the caller's transaction.
//!
//! A swap leaves no dead tuples and takes no row locks on the old leaf's rows, which a
//! delete + insert of a whole partition would. It is only used when it is exactly a
//! partition replacement: the target is partitioned by the one column asked for, at one
//! level, every staged row falls into an existing leaf, and no touched leaf holds a value
//! that is not staged (a leaf spanning several values would lose the others). Otherwise
//! [`replace`] returns `None` having changed nothing, and the strategy falls back to
//! delete + insert. The swapped leaf loses grants given on it directly (not those on the
//! parent); indexes come from the parent's partitioned indexes.

use crate::connectors::{SqlSession, Statement, TableName, render};
use crate::error::Result;
use crate::model::{DataType, Value};

/// Rows deleted (the old leaves') and inserted (staging's).
pub type Replaced = (u64, u64);

fn count(rows: &[Vec<Value>]) -> u64 {
    match rows.first().and_then(|r| r.first()) {
        Some(Value::Int(n)) => (*n).max(0) as u64,
        _ => 0,
    }
}

/// Replaces the leaves of `target` holding the staged values of `column`; `statements`
/// collects what ran, for the run report.
pub async fn replace(
    s: &mut dyn SqlSession,
    target: &TableName,
    staging: &TableName,
    columns: &[String],
    column: &str,
    suffix: &str,
    statements: &mut crate::connectors::StatementLog,
) -> Result<Option<Replaced>> {
    let target_ref = render::table_ref(target);
    let key_def = Statement {
        sql: "SELECT pg_get_partkeydef(to_regclass($1))".into(),
        params: vec![Value::Text(target_ref.clone())],
    };
    let key_def = match s.query(&key_def, &[DataType::Text]).await?.first() {
        Some(row) => match row.first() {
            Some(Value::Text(def)) => def.clone(),
            _ => return Ok(None),
        },
        None => return Ok(None),
    };
    let partitioned_by_column = key_def.split_once(' ').is_some_and(|(_, cols)| {
        cols == format!("({})", render::quote_ident(column)) || cols == format!("({column})")
    });
    if !partitioned_by_column {
        tracing::info!(
            "{target} is partitioned by {key_def}, not by `{column}` alone: replacing by delete + insert"
        );
        return Ok(None);
    }
    // Held to the end of the transaction: no writer can put an unstaged value into a leaf
    // between the checks below and the swap, and concurrent swaps queue here instead of
    // deadlocking on the lock upgrade DETACH would need.
    let lock = format!("LOCK TABLE {target_ref} IN ACCESS EXCLUSIVE MODE");
    statements.push(lock.clone());
    s.execute(&Statement::new(lock)).await?;
    let leaves = Statement {
        sql: "SELECT n.nspname::text, c.relname::text, pg_get_partition_constraintdef(t.relid), \
              pg_get_expr(c.relpartbound, c.oid), t.level::text, CAST(t.isleaf AS text) \
              FROM pg_partition_tree(to_regclass($1)) t JOIN pg_class c ON c.oid = t.relid \
              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.level > 0"
            .into(),
        params: vec![Value::Text(target_ref.clone())],
    };
    let t = DataType::Text;
    let rows = s.query(&leaves, &[t, t, t, t, t, t]).await?;
    let mut leaves = Vec::new();
    for row in rows {
        let [
            Value::Text(namespace),
            Value::Text(relname),
            Value::Text(constraint),
            Value::Text(bound),
            Value::Text(level),
            Value::Text(leaf),
        ] = row.as_slice()
        else {
            return Ok(None);
        };
        if level != "1" || leaf != "true" {
            tracing::info!("{target} has sub-partitions: replacing by delete + insert");
            return Ok(None);
        }
        let leaf = TableName {
            schema: Some(namespace.clone()),
            name: relname.clone(),
        };
        leaves.push((leaf, constraint.clone(), bound.clone()));
    }
    let staging_ref = render::table_ref(staging);
    let col = render::quote_ident(column);
    let staged_rows = count(
        &s.query(
            &Statement::new(format!("SELECT COUNT(*) FROM {staging_ref}")),
            &[DataType::Int64],
        )
        .await?,
    );
    // The catalog's own constraint text decides which staged rows each leaf takes.
    let mut touched = Vec::new();
    let mut covered = 0;
    for (leaf, constraint, bound) in leaves {
        let name = render::table_ref(&leaf);
        let n = count(
            &s.query(
                &Statement::new(format!(
                    "SELECT COUNT(*) FROM {staging_ref} WHERE {constraint}"
                )),
                &[DataType::Int64],
            )
            .await?,
        );
        if n == 0 {
            continue;
        }
        let foreign = count(
            &s.query(
                &Statement::new(format!(
                    "SELECT COUNT(*) FROM {name} WHERE {col} IS NULL OR {col} NOT IN (SELECT {col} FROM {staging_ref} WHERE {col} IS NOT NULL)"
                )),
                &[DataType::Int64],
            )
            .await?,
        );
        if foreign > 0 {
            tracing::info!(
                "partition {name} also holds values that are not staged: replacing by delete + insert"
            );
            return Ok(None);
        }
        covered += n;
        touched.push((leaf, constraint, bound));
    }
    if covered != staged_rows {
        tracing::info!(
            "some staged rows fit no partition of {target}: replacing by delete + insert"
        );
        return Ok(None);
    }
    let column_list = render::column_list(columns);
    let (mut deleted, mut inserted) = (0, 0);
    for (leaf, constraint, bound) in touched {
        let name = render::table_ref(&leaf);
        deleted += count(
            &s.query(
                &Statement::new(format!("SELECT COUNT(*) FROM {name}")),
                &[DataType::Int64],
            )
            .await?,
        );
        let fresh = render::table_ref(&leaf.sibling(format!("{}_{suffix}", leaf.name)));
        let steps = [
            format!(
                "CREATE TABLE {fresh} (LIKE {target_ref} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
            ),
            format!(
                "INSERT INTO {fresh} ({column_list}) SELECT {column_list} FROM {staging_ref} WHERE {constraint}"
            ),
            format!("ALTER TABLE {target_ref} DETACH PARTITION {name}"),
            format!("ALTER TABLE {target_ref} ATTACH PARTITION {fresh} {bound}"),
            format!("DROP TABLE {name}"),
            format!(
                "ALTER TABLE {fresh} RENAME TO {}",
                render::quote_ident(&leaf.name)
            ),
        ];
        for (i, sql) in steps.into_iter().enumerate() {
            statements.push(sql.clone());
            let n = s.execute(&Statement::new(sql)).await?;
            if i == 1 {
                inserted += n;
            }
        }
    }
    Ok(Some((deleted, inserted)))
}
