//! BigQuery's GoogleSQL: backtick-quoted names with backslash escapes, named `@pN`
//! parameters, datasets as namespaces, no enforced keys, `PARTITION BY` / `CLUSTER BY` on
//! targets dpone creates, and correlated subqueries through a table's alias (a column is
//! never qualified by its dataset-qualified table path, which GoogleSQL reads as a field
//! path).

use super::types::native_type;
use crate::connectors::dialect::{NewTable, SqlDialect, standard_create_table};
use crate::connectors::{Statement, TableName};
use crate::error::Result;
use crate::model::{DataType, Schema, Value};

/// The most query parameters one BigQuery query may bind.
const MAX_PARAMS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigqueryDialect {
    /// The session's default dataset: where unqualified tables live.
    pub dataset: String,
    /// `partition_by` of the manifest, for a target dpone creates.
    pub partition_by: Option<String>,
    /// `cluster_by` of the manifest, for a target dpone creates.
    pub cluster_by: Vec<String>,
}

impl BigqueryDialect {
    /// The `PARTITION BY` expression of `column` (of type `t`): the column itself for a
    /// DATE, its day for a TIMESTAMP or DATETIME; `None` for a type BigQuery cannot
    /// partition by time.
    pub fn partition_expression(&self, column: &str, t: &DataType) -> Option<String> {
        let q = self.quote_ident(column);
        match t {
            DataType::Date => Some(q),
            DataType::Timestamp | DataType::TimestampTz => Some(format!("DATE({q})")),
            _ => None,
        }
    }
}

/// The implicit alias of a rendered table reference: its last quoted name (GoogleSQL
/// names a table in a `FROM` after the last part of its path).
fn implicit_alias(table_ref: &str) -> &str {
    let bytes = table_ref.as_bytes();
    let mut i = bytes.len().saturating_sub(1);
    while i > 0 {
        i -= 1;
        if bytes[i] == b'`' {
            let backslashes = bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count();
            if backslashes % 2 == 0 {
                return &table_ref[i..];
            }
        }
    }
    table_ref
}

impl SqlDialect for BigqueryDialect {
    /// `` `...` `` with `\` and `` ` `` escaped by a backslash: a name stays one name.
    fn quote_ident(&self, name: &str) -> String {
        format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
    }

    /// `@pN`, bound by the session with the value's BigQuery type; NULL is written as
    /// `NULL`, so it takes the type its place in the statement gives it (a typed NULL
    /// parameter would not compare with a column of another type).
    fn placeholder(&self, n: usize, value: &Value) -> Result<String> {
        Ok(match value {
            Value::Null => "NULL".into(),
            _ => format!("@p{n}"),
        })
    }

    fn max_params(&self) -> usize {
        MAX_PARAMS
    }

    fn tables_with_prefix(&self, near: &TableName, prefix: &str) -> Statement {
        let dataset = near.schema.as_deref().unwrap_or(&self.dataset);
        Statement {
            sql: format!(
                "SELECT table_name FROM {}.INFORMATION_SCHEMA.TABLES WHERE STARTS_WITH(table_name, @p1)",
                self.quote_ident(dataset)
            ),
            params: vec![Value::Text(prefix.into())],
        }
    }

    fn max_identifier_bytes(&self) -> usize {
        // Column names of at most 300 characters.
        300
    }

    fn native_type(&self, t: &DataType) -> String {
        native_type(t)
    }

    /// `` `dataset`.`table` ``, the session's dataset where the name has none: every
    /// statement names its dataset (the emulator does not apply a query's default dataset
    /// to DDL).
    fn table_ref(&self, table: &TableName) -> String {
        let dataset = table.schema.as_deref().unwrap_or(&self.dataset);
        format!(
            "{}.{}",
            self.quote_ident(dataset),
            self.quote_ident(&table.name)
        )
    }

    fn create_namespace(&self, quoted: &str) -> Option<String> {
        Some(format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
    }

    fn declares_primary_key(&self) -> bool {
        // `PRIMARY KEY (...) NOT ENFORCED` is informational on BigQuery and not parsed by
        // the emulator; keys are checked in staging instead (`keys-enforced` is false).
        false
    }

    /// The standard `CREATE TABLE`; a target dpone creates is partitioned and clustered
    /// as the manifest says.
    fn create_table(
        &self,
        table: &TableName,
        schema: &Schema,
        key: &[String],
        role: NewTable,
    ) -> String {
        let mut sql = standard_create_table(self, table, schema, key, role);
        if role != NewTable::Target {
            return sql;
        }
        if let Some(column) = &self.partition_by
            && let Some(expr) = schema
                .column(column)
                .and_then(|c| self.partition_expression(column, &c.data_type))
        {
            sql.push_str(&format!(" PARTITION BY {expr}"));
        }
        if !self.cluster_by.is_empty() {
            sql.push_str(&format!(
                " CLUSTER BY {}",
                self.column_list(&self.cluster_by)
            ));
        }
        sql
    }

    fn correlation_name<'a>(&self, table_ref: &'a str) -> &'a str {
        implicit_alias(table_ref)
    }

    fn truncate(&self, table: &str) -> String {
        // A DELETE needs a WHERE clause on BigQuery.
        format!("DELETE FROM {table} WHERE TRUE")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> BigqueryDialect {
        BigqueryDialect {
            dataset: "d".into(),
            partition_by: Some("day".into()),
            cluster_by: vec!["id".into()],
        }
    }

    #[test]
    fn names_stay_one_name() {
        let d = dialect();
        assert_eq!(d.quote_ident("a`b\\c"), "`a\\`b\\\\c`");
        assert_eq!(implicit_alias("`d`.`t`"), "`t`");
        assert_eq!(implicit_alias("`d`.`a\\`.\\`b`"), "`a\\`.\\`b`");
        assert_eq!(implicit_alias("`t`"), "`t`");
    }

    #[test]
    fn keys_correlate_through_the_alias() {
        use crate::connectors::dialect::KeyMatch;
        let d = dialect();
        let sql = d.key_match("`d`.`t`", "`d`.`s`", &["id".into()], &KeyMatch::InStaging);
        assert_eq!(
            sql,
            "EXISTS (SELECT 1 FROM `d`.`s` AS s WHERE s.`id` = `t`.`id`)"
        );
    }

    #[test]
    fn targets_are_partitioned_and_clustered_as_configured() {
        let d = dialect();
        let schema = Schema {
            columns: vec![
                crate::model::Column {
                    name: "id".into(),
                    data_type: DataType::Int64,
                    nullable: false,
                },
                crate::model::Column {
                    name: "day".into(),
                    data_type: DataType::Date,
                    nullable: false,
                },
            ],
            primary_key: vec!["id".into()],
        };
        let t = TableName::parse("t", "t").unwrap();
        assert_eq!(
            d.create_table(&t, &schema, &["id".into()], NewTable::Target),
            "CREATE TABLE IF NOT EXISTS `d`.`t` (`id` INT64 NOT NULL, `day` DATE NOT NULL) PARTITION BY `day` CLUSTER BY `id`"
        );
        assert!(
            !d.create_table(&t, &schema, &[], NewTable::Scratch)
                .contains("PARTITION")
        );
    }
}
