//! SQLite's SQL: the standard dialect with one namespace, `IS NOT` as its NULL-safe
//! comparison, and decimals kept as text.

use super::types::native_type;
use crate::connectors::dialect::SqlDialect;
use crate::connectors::{Statement, TableName};
use crate::error::{Error, Result};
use crate::model::{DataType, Value};

#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteDialect;

impl SqlDialect for SqliteDialect {
    fn max_params(&self) -> usize {
        // SQLITE_MAX_VARIABLE_NUMBER of the bundled library (3.32 and later).
        32_766
    }

    fn native_type(&self, t: &DataType) -> String {
        native_type(t)
    }

    fn tables_with_prefix(&self, _near: &TableName, prefix: &str) -> Statement {
        Statement {
            sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, length($1)) = $1"
                .into(),
            params: vec![Value::Text(prefix.into())],
        }
    }

    fn null_safe_differs(&self, a: &str, b: &str) -> String {
        format!("{a} IS NOT {b}")
    }

    fn check_cursor(&self, column: &str, t: &DataType) -> Result<()> {
        if matches!(t, DataType::Decimal(_)) {
            return Err(Error::config(
                "sink.strategy.cursor_column",
                format!(
                    "`{column}` is a decimal, which SQLite keeps as text and would compare as text; use an integer or timestamp cursor"
                ),
            ));
        }
        Ok(())
    }
}
