//! Native partition replacement on SQL Server: the partitions of a partitioned target that
//! staging touches are emptied with `TRUNCATE TABLE .. WITH (PARTITIONS (..))` and refilled
//! from staging, inside the caller's transaction.
//!
//! `TRUNCATE .. WITH (PARTITIONS)` (SQL Server 2016+) is the metadata operation an
//! `ALTER TABLE .. SWITCH PARTITION` out to an empty table would be, without that table: a
//! switch target must match the target's columns, indexes and filegroup exactly, which
//! dpone would have to rebuild from the catalog for every partition. Like a switch it logs
//! page deallocations, not rows, and needs every index aligned with the partition scheme.
//!
//! It is only used when it is exactly a partition replacement: the target's clustered index
//! or heap is partitioned by the one column asked for, every index is aligned, nothing makes
//! the truncation fail (CDC, replication, a referencing foreign key, an indexed view), and no
//! touched partition holds a value that is not staged (a partition spanning a range of values would
//! lose the others). Otherwise [`replace`] returns `None` having changed nothing, and the
//! strategy deletes and inserts.

use super::dialect::{MssqlDialect, nstring};
use crate::connectors::dialect::SqlDialect;
use crate::connectors::sink::first_count;
use crate::connectors::{SqlSession, Statement, StatementLog, TableName};
use crate::error::Result;
use crate::model::{DataType, Value};

/// Rows deleted (the old partitions') and inserted (staging's).
pub type Replaced = (u64, u64);

async fn count(s: &mut dyn SqlSession, sql: String) -> Result<u64> {
    let rows = s.query(&Statement::new(sql), &[DataType::Int64]).await?;
    Ok(first_count(&rows, 0))
}

/// The catalog facts that decide whether `target` can be truncated by partition: its heap or
/// clustered index's partition function and first partitioning column, how many of its
/// indexes are not on a scheme of that function (unaligned), and what makes
/// `TRUNCATE .. WITH (PARTITIONS)` fail outright (change data capture, replication, a
/// foreign key referencing it, an indexed view on it).
pub fn scheme_sql(target: &str) -> String {
    format!(
        "SELECT pf.name, c.name, \
         (SELECT COUNT_BIG(*) FROM sys.indexes AS a \
          LEFT JOIN sys.partition_schemes AS aps ON aps.data_space_id = a.data_space_id \
          WHERE a.object_id = i.object_id AND (aps.function_id IS NULL OR aps.function_id <> pf.function_id)), \
         (SELECT COUNT_BIG(*) FROM sys.tables AS t WHERE t.object_id = i.object_id \
          AND (t.is_tracked_by_cdc = 1 OR t.is_replicated = 1)) \
         + (SELECT COUNT_BIG(*) FROM sys.foreign_keys AS f WHERE f.referenced_object_id = i.object_id) \
         + (SELECT COUNT_BIG(*) FROM sys.sql_expression_dependencies AS x \
            JOIN sys.views AS v ON v.object_id = x.referencing_id \
            JOIN sys.indexes AS vi ON vi.object_id = v.object_id \
            WHERE x.referenced_id = i.object_id) \
         FROM sys.indexes AS i \
         JOIN sys.partition_schemes AS ps ON ps.data_space_id = i.data_space_id \
         JOIN sys.partition_functions AS pf ON pf.function_id = ps.function_id \
         JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id \
          AND ic.partition_ordinal = 1 \
         JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
         WHERE i.object_id = OBJECT_ID({}) AND i.index_id IN (0, 1)",
        nstring(target)
    )
}

/// Replaces the partitions of `target` holding the staged values of `column`;
/// `statements` collects what ran, for the run report.
pub async fn replace(
    s: &mut dyn SqlSession,
    target: &TableName,
    staging: &TableName,
    columns: &[String],
    column: &str,
    statements: &mut StatementLog,
) -> Result<Option<Replaced>> {
    let d = MssqlDialect::default();
    let target_ref = d.table_ref(target);
    let found = s
        .query(
            &Statement::new(scheme_sql(&target_ref)),
            &[
                DataType::Text,
                DataType::Text,
                DataType::Int64,
                DataType::Int64,
            ],
        )
        .await?;
    let function = match found.first().map(Vec::as_slice) {
        Some(
            [
                Value::Text(function),
                Value::Text(by),
                Value::Int(unaligned),
                Value::Int(blockers),
            ],
        ) => {
            if by != column {
                tracing::info!(
                    "{target} is partitioned by `{by}`, not by `{column}`: replacing by delete + insert"
                );
                return Ok(None);
            }
            if *unaligned > 0 {
                tracing::info!(
                    "{target} has indexes not aligned with its partition scheme: replacing by delete + insert"
                );
                return Ok(None);
            }
            if *blockers > 0 {
                tracing::info!(
                    "{target} is tracked by change data capture or replication, referenced by a foreign key or under an indexed view, which partition truncation refuses: replacing by delete + insert"
                );
                return Ok(None);
            }
            d.quote_ident(function)
        }
        _ => return Ok(None),
    };
    let plan = Plan {
        target: target_ref,
        staging: d.table_ref(staging),
        column: d.quote_ident(column),
        function,
        columns: d.column_list(columns),
    };
    // Held to the end of the transaction: no writer can put an unstaged value into a
    // touched partition between the checks below and the truncation.
    let lock = plan.lock();
    statements.push(&lock);
    s.query(&Statement::new(lock), &[DataType::Int64]).await?;
    let touched: Vec<i64> = s
        .query(&Statement::new(plan.touched()), &[DataType::Int64])
        .await?
        .into_iter()
        .filter_map(|r| match r.first() {
            Some(Value::Int(p)) => Some(*p),
            _ => None,
        })
        .collect();
    if touched.is_empty() {
        return Ok(Some((0, 0)));
    }
    let list: Vec<String> = touched.iter().map(i64::to_string).collect();
    let list = list.join(", ");
    if count(s, plan.foreign(&list)).await? > 0 {
        tracing::info!(
            "the partitions of {target} that staging touches also hold values that are not staged: replacing by delete + insert"
        );
        return Ok(None);
    }
    let deleted = count(s, plan.deleted(&list)).await?;
    let (truncate, insert) = (plan.truncate(&list), plan.insert());
    statements.push(&truncate);
    s.execute(&Statement::new(truncate)).await?;
    statements.push(&insert);
    let inserted = s.execute(&Statement::new(insert)).await?;
    Ok(Some((deleted, inserted)))
}

/// The statements of one replacement: `target` partitioned by `function` on `column`,
/// refilled from `staging` (all quoted already); `list` is the touched partition numbers.
struct Plan {
    target: String,
    staging: String,
    column: String,
    function: String,
    columns: String,
}

impl Plan {
    fn partition_of(&self, expr: &str) -> String {
        format!("$PARTITION.{}({expr})", self.function)
    }

    fn lock(&self) -> String {
        format!(
            "SELECT COUNT_BIG(*) FROM {} WITH (TABLOCKX, HOLDLOCK) WHERE 1 = 0",
            self.target
        )
    }

    /// The partitions staging's values fall in.
    fn touched(&self) -> String {
        format!(
            "SELECT DISTINCT CAST({} AS BIGINT) FROM {}",
            self.partition_of(&self.column),
            self.staging
        )
    }

    fn in_touched(&self, list: &str) -> String {
        format!("{} IN ({list})", self.partition_of(&self.column))
    }

    /// Target rows in the touched partitions whose value staging does not hold.
    fn foreign(&self, list: &str) -> String {
        let (col, staging) = (&self.column, &self.staging);
        format!(
            "SELECT COUNT_BIG(*) FROM {} WHERE {} AND ({col} IS NULL OR {col} NOT IN \
             (SELECT {col} FROM {staging} WHERE {col} IS NOT NULL))",
            self.target,
            self.in_touched(list)
        )
    }

    fn deleted(&self, list: &str) -> String {
        format!(
            "SELECT COUNT_BIG(*) FROM {} WHERE {}",
            self.target,
            self.in_touched(list)
        )
    }

    fn truncate(&self, list: &str) -> String {
        format!("TRUNCATE TABLE {} WITH (PARTITIONS ({list}))", self.target)
    }

    fn insert(&self) -> String {
        format!(
            "INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging}",
            target = self.target,
            columns = self.columns,
            staging = self.staging
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_query_parses() {
        let sql = scheme_sql("[dbo].[or'ders]");
        assert!(sql.contains("OBJECT_ID(N'[dbo].[or''ders]')"), "{sql}");
        crate::connectors::mssql::assert_t_sql(&sql);
    }

    /// Every statement of a replacement, as text and parsed. `$PARTITION.f(c)` is beyond
    /// sqlparser's T-SQL grammar: each statement is also parsed with it written as the
    /// scalar function call `dbo.f(c)` of the same shape. `TRUNCATE .. WITH (PARTITIONS ..)`
    /// is too: its `TRUNCATE TABLE` is parsed and its partition clause checked as text.
    #[test]
    fn the_replacement_statements_parse() {
        let d = MssqlDialect::default();
        let plan = Plan {
            target: d.table_ref(&TableName {
                schema: Some("dbo".into()),
                name: "or'ders]".into(),
            }),
            staging: "[dbo].[orders__stage]".into(),
            column: d.quote_ident("day"),
            function: d.quote_ident("pf_day"),
            columns: d.column_list(&["id".into(), "day".into()]),
        };
        let list = "3, 4";
        assert_eq!(plan.target, "[dbo].[or'ders]]]");
        assert_eq!(
            plan.touched(),
            "SELECT DISTINCT CAST($PARTITION.[pf_day]([day]) AS BIGINT) FROM [dbo].[orders__stage]"
        );
        assert_eq!(
            plan.deleted(list),
            "SELECT COUNT_BIG(*) FROM [dbo].[or'ders]]] WHERE $PARTITION.[pf_day]([day]) IN (3, 4)"
        );
        assert_eq!(
            plan.insert(),
            "INSERT INTO [dbo].[or'ders]]] ([id], [day]) SELECT [id], [day] FROM [dbo].[orders__stage]"
        );
        let truncate = plan.truncate(list);
        assert_eq!(
            truncate,
            "TRUNCATE TABLE [dbo].[or'ders]]] WITH (PARTITIONS (3, 4))"
        );
        for sql in [
            plan.lock(),
            plan.touched(),
            plan.foreign(list),
            plan.deleted(list),
            plan.insert(),
        ] {
            crate::connectors::mssql::assert_t_sql(&sql.replace("$PARTITION.", "dbo."));
        }
        let (table, partitions) = truncate.split_once(" WITH ").unwrap();
        crate::connectors::mssql::assert_t_sql(table);
        assert_eq!(partitions, "(PARTITIONS (3, 4))");
    }
}
