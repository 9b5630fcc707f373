//! ClickHouse's SQL: backslash escapes inside quoted names, values as audited literals
//! (the servers dpone supports, 18.16 and later, bind no parameters over HTTP), databases
//! as namespaces, MergeTree tables sorted by the key, `Nullable` columns, comment-marked
//! types, and no correlated subqueries: keys match through `IN` over tuples.

use super::types::{literal, native_type, quote_string, type_comment};
use crate::connectors::dialect::{KeyMatch, SqlDialect};
use crate::connectors::{Statement, TableName};
use crate::error::Result;
use crate::model::{Column, DataType, Value};

/// Text as a ClickHouse string literal, for the connector's own queries of system tables.
pub fn text_literal(text: &str) -> String {
    quote_string(text.as_bytes())
}

/// The dialect as the connector's own statements quote names with (quoting does not
/// depend on the server's version).
pub const NAMES: ClickhouseDialect = ClickhouseDialect { datetime64: false };

#[derive(Debug, Clone, Copy)]
pub struct ClickhouseDialect {
    /// The server has `DateTime64` (20.1 and later): timestamps keep microseconds.
    pub datetime64: bool,
}

impl SqlDialect for ClickhouseDialect {
    /// `"..."` with ClickHouse's backslash escapes, which it applies inside double quotes
    /// too: a name with `\` or `"` in it stays one name.
    fn quote_ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }

    /// The value's literal ([`literal`]): the one path by which values reach ClickHouse's
    /// SQL text, checked and escaped there.
    fn placeholder(&self, _n: usize, value: &Value) -> Result<String> {
        literal(value, self.datetime64)
    }

    fn tables_with_prefix(&self, near: &TableName, prefix: &str) -> Statement {
        let database = near
            .schema
            .as_deref()
            .map_or_else(|| "currentDatabase()".to_string(), text_literal);
        Statement::new(format!(
            "SELECT name FROM system.tables WHERE database = {database} AND startsWith(name, {})",
            text_literal(prefix)
        ))
    }

    fn max_params(&self) -> usize {
        // Literals, not parameters: the statement size is the only bound.
        usize::MAX
    }

    fn native_type(&self, t: &DataType) -> String {
        native_type(t, self.datetime64)
    }

    fn create_namespace(&self, quoted: &str) -> Option<String> {
        Some(format!("CREATE DATABASE IF NOT EXISTS {quoted}"))
    }

    /// `"c" Nullable(T) COMMENT 'dpone:boolean'`: key columns are never Nullable (the
    /// server cannot sort by one before 20.x), marked types carry their comment.
    fn column_def(&self, column: &Column, not_null: bool, _in_key: bool) -> String {
        let t = self.native_type(&column.data_type);
        let t = if not_null {
            t
        } else {
            format!("Nullable({t})")
        };
        let q = self.quote_ident(&column.name);
        match type_comment(&column.data_type) {
            Some(comment) => format!("{q} {t} COMMENT '{comment}'"),
            None => format!("{q} {t}"),
        }
    }

    fn declares_primary_key(&self) -> bool {
        // The sorting key is the primary key; it is never unique.
        false
    }

    fn table_options(&self, key: &[String], staging: bool) -> String {
        // MergeTree sorts by the key; staging needs no order.
        let order = if staging || key.is_empty() {
            "tuple()".to_string()
        } else {
            format!("({})", self.column_list(key))
        };
        format!(" ENGINE = MergeTree ORDER BY {order}")
    }

    fn create_like(&self, staging: &str, target: &str) -> Option<String> {
        // Same columns, engine, sorting and partition key.
        Some(format!("CREATE TABLE {staging} AS {target}"))
    }

    /// An aggregate over no rows gives the type's default (0, 1970-01-01), not NULL.
    fn max_of(&self, quoted: &str) -> String {
        format!("if(count() = 0, NULL, max({quoted}))")
    }

    /// `(k..) [NOT] IN (SELECT k.. FROM staging)`. A differing column compares as
    /// (key, is NULL, text) fingerprints, so NULL differs from every value and equals NULL.
    fn key_match(&self, _target: &str, staging: &str, key: &[String], m: &KeyMatch) -> String {
        let keys = self.column_list(key);
        let in_staging = format!("({keys}) IN (SELECT {keys} FROM {staging})");
        match m {
            KeyMatch::InStaging => in_staging,
            KeyMatch::NotInStaging => format!("NOT ({in_staging})"),
            KeyMatch::InStagingDiffering(column) => {
                let c = self.quote_ident(column);
                let fingerprint = format!("{keys}, isNull({c}), ifNull(toString({c}), '')");
                format!(
                    "{in_staging} AND ({fingerprint}) NOT IN (SELECT {fingerprint} FROM {staging})"
                )
            }
        }
    }

    /// `(s.k..) NOT IN (SELECT k.. FROM target WHERE <filter>)`.
    fn no_target_row(&self, target: &str, key: &[String], filter: &[String]) -> String {
        let s_keys: Vec<String> = key
            .iter()
            .map(|k| format!("s.{}", self.quote_ident(k)))
            .collect();
        let filtered = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filter.join(" AND "))
        };
        format!(
            "({}) NOT IN (SELECT {} FROM {target}{filtered})",
            s_keys.join(", "),
            self.column_list(key)
        )
    }

    fn holds(&self, cond: &str) -> String {
        format!("ifNull(({cond}), 0)")
    }

    fn choose(&self, cond: &str, then: &str, otherwise: &str) -> String {
        format!("if({}, {then}, {otherwise})", self.holds(cond))
    }
}
