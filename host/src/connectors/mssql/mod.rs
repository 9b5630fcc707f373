//! SQL Server: source, sink and state store through tiberius, with TDS bulk load into
//! staging; its change feed reads CDC capture instances.

pub mod client;
pub mod config;
pub mod dialect;
pub mod feed;
pub mod partitions;
pub mod types;

pub use client::MssqlSession;

/// Fails the test unless `sql` parses with `sqlparser`'s T-SQL grammar: no SQL Server runs
/// where dpone is built, so every statement the connector renders is at least parsed.
#[cfg(test)]
pub(crate) fn assert_t_sql(sql: &str) {
    let dialect = sqlparser::dialect::MsSqlDialect {};
    if let Err(e) = sqlparser::parser::Parser::parse_sql(&dialect, sql) {
        panic!("does not parse as T-SQL: {e}\n{sql}");
    }
}
