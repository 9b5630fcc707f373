//! Statement rendering, shared by every SQL dialect.
//!
//! Strategies hand the host structured bounds and filters; this module turns them into SQL
//! with quoted identifiers and `$n` placeholders. Values only ever travel as parameters.
//! Everything here is pure, so `dpone-host plan` can print the exact statements a run issues.

use super::{Dialect, Statement, TableName};
use crate::error::{Error, Result};
use crate::model::{Comparison, DataType, ScanBounds, Schema, Term, Value};

/// Quotes an identifier for both dialects: `"` doubled inside `"..."`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"` or `"table"`.
pub fn table_ref(table: &TableName) -> String {
    match &table.schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&table.name)),
        None => quote_ident(&table.name),
    }
}

/// `"a", "b", "c"`.
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dialect's DDL type for a portable type.
pub fn native_type(dialect: Dialect, t: &DataType) -> String {
    match dialect {
        #[cfg(feature = "postgres")]
        Dialect::Postgres => super::postgres::types::native_type(t),
        #[cfg(feature = "sqlite")]
        Dialect::Sqlite => super::sqlite::types::native_type(t),
        #[cfg(feature = "clickhouse")]
        Dialect::Clickhouse { datetime64 } => super::clickhouse::types::native_type(t, datetime64),
    }
}

/// ClickHouse has no DDL transactions, no `UPDATE` and no correlated subqueries: its
/// rendering differs in the places that use them.
fn is_clickhouse(dialect: Dialect) -> bool {
    #[cfg(feature = "clickhouse")]
    if matches!(dialect, Dialect::Clickhouse { .. }) {
        return true;
    }
    let _ = dialect;
    false
}

/// The statement creating a table's schema (a database on ClickHouse) when missing;
/// `None` where tables live in one namespace (SQLite).
pub fn create_namespace(dialect: Dialect, table: &TableName) -> Option<String> {
    let schema = quote_ident(table.schema.as_ref()?);
    if is_clickhouse(dialect) {
        Some(format!("CREATE DATABASE IF NOT EXISTS {schema}"))
    } else if is_postgres(dialect) {
        Some(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
    } else {
        None
    }
}

/// Renders placeholders: `$n` for ordinary statements; a session may render its own for
/// reads (see [`super::SqlSession::read_placeholder`]).
pub type Placeholder<'a> = &'a dyn Fn(usize, &Value) -> String;

/// The `$n` placeholder.
pub fn dollar(n: usize, _: &Value) -> String {
    format!("${n}")
}

/// Builds a WHERE clause and its parameters.
struct Where<'a> {
    parts: Vec<String>,
    params: Vec<Value>,
    placeholder: Placeholder<'a>,
}

impl<'a> Where<'a> {
    fn new(placeholder: Placeholder<'a>) -> Self {
        Where {
            parts: Vec::new(),
            params: Vec::new(),
            placeholder,
        }
    }

    fn param(&mut self, v: &Value) -> String {
        self.params.push(v.clone());
        (self.placeholder)(self.params.len(), v)
    }

    fn compare(&mut self, column: &str, op: &str, v: &Value) {
        let p = self.param(v);
        self.parts.push(format!("{} {op} {p}", quote_ident(column)));
    }

    fn term(&mut self, term: &Term, manifest_predicate: Option<&str>) -> Result<()> {
        match term {
            Term::Compare(c) => {
                if c.value == Value::Null {
                    return Err(Error::config(
                        "sink.strategy",
                        format!(
                            "comparison on `{}` with NULL never matches; use is-null",
                            c.column
                        ),
                    ));
                }
                let op = match c.op {
                    Comparison::Eq => "=",
                    Comparison::Ne => "<>",
                    Comparison::Lt => "<",
                    Comparison::Le => "<=",
                    Comparison::Gt => ">",
                    Comparison::Ge => ">=",
                };
                self.compare(&c.column, op, &c.value);
            }
            Term::Range(r) => {
                self.compare(&r.column, ">=", &r.low);
                self.compare(
                    &r.column,
                    if r.high_inclusive { "<=" } else { "<" },
                    &r.high,
                );
            }
            Term::InList(i) if i.values.is_empty() => self.parts.push("1 = 0".into()),
            Term::InList(i) => {
                let ps: Vec<String> = i.values.iter().map(|v| self.param(v)).collect();
                self.parts
                    .push(format!("{} IN ({})", quote_ident(&i.column), ps.join(", ")));
            }
            Term::IsNull(c) => self.parts.push(format!("{} IS NULL", quote_ident(c))),
            Term::IsNotNull(c) => self.parts.push(format!("{} IS NOT NULL", quote_ident(c))),
            Term::ManifestPredicate => {
                let sql = manifest_predicate.ok_or_else(|| {
                    Error::config(
                        "sink.strategy.predicate_sql",
                        "the strategy refers to the manifest predicate, but none is set",
                    )
                })?;
                self.parts.push(format!("({sql})"));
            }
        }
        Ok(())
    }

    fn bounds(
        &mut self,
        dialect: Dialect,
        bounds: &ScanBounds,
        manifest_predicate: Option<&str>,
    ) -> Result<()> {
        if let Some(x) = &bounds.row_versions {
            let row_xid = row_xid64(dialect)?;
            if let Some(after) = &x.after {
                let p = self.param(&xid_value(after)?);
                self.parts.push(format!("{row_xid} > {p}"));
            }
            let p = self.param(&xid_value(&x.up_to)?);
            self.parts.push(format!("{row_xid} <= {p}"));
        }
        if let Some(c) = &bounds.cursor {
            if let Some(after) = c.after.as_ref().filter(|v| **v != Value::Null) {
                self.compare(&c.column, ">", after);
            }
            if let Some(up_to) = c.up_to.as_ref().filter(|v| **v != Value::Null) {
                self.compare(&c.column, "<=", up_to);
            }
        }
        for t in &bounds.filter {
            self.term(t, manifest_predicate)?;
        }
        Ok(())
    }

    fn sql(&self) -> String {
        if self.parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.parts.join(" AND "))
        }
    }
}

/// A row's transaction id widened to 64 bits (PostgreSQL): the row's 32-bit `xmin` placed
/// in the epoch of the snapshot's next xid, or the previous epoch when it is above that
/// xid's low half (the row predates the last wraparound). Exact for every xid younger than
/// 2^31 transactions, which covers every row not yet frozen.
fn row_xid64(dialect: Dialect) -> Result<&'static str> {
    if !is_postgres(dialect) {
        return Err(Error::new(
            crate::Kind::Unsupported,
            "row-version bounds need a PostgreSQL source (xmin)",
        ));
    }
    Ok(
        "((((pg_snapshot_xmax(pg_current_snapshot())::text::bigint >> 32) << 32) | xmin::text::bigint) \
       - CASE WHEN xmin::text::bigint > (pg_snapshot_xmax(pg_current_snapshot())::text::bigint & 4294967295) \
       THEN 4294967296 ELSE 0 END)",
    )
}

/// The transaction id of a row-version position, as the `bigint` [`row_xid64`] compares.
fn xid_value(position: &str) -> Result<Value> {
    #[cfg(feature = "postgres")]
    return super::postgres::types::parse_xid_position(position).map(Value::Int);
    #[cfg(not(feature = "postgres"))]
    Err(Error::new(
        crate::Kind::Unsupported,
        format!("row-version position `{position}` needs a PostgreSQL source"),
    ))
}

/// Checks that every column a scan's bounds name exists in `schema`.
pub fn check_bound_columns(schema: &Schema, bounds: &ScanBounds) -> Result<()> {
    let mut names: Vec<&str> = bounds.cursor.iter().map(|c| c.column.as_str()).collect();
    for t in &bounds.filter {
        match t {
            Term::Compare(c) => names.push(&c.column),
            Term::Range(r) => names.push(&r.column),
            Term::InList(i) => names.push(&i.column),
            Term::IsNull(c) | Term::IsNotNull(c) => names.push(c),
            Term::ManifestPredicate => {}
        }
    }
    for n in names {
        schema.require(n, "sink.strategy")?;
    }
    Ok(())
}

/// `SELECT <columns> FROM <table> WHERE <bounds> [ORDER BY cursor] [LIMIT n]`. A limited
/// cursor scan is ordered by the cursor so the rows it takes are the first ones past it.
pub fn select(
    dialect: Dialect,
    table: &TableName,
    schema: &Schema,
    bounds: &ScanBounds,
    manifest_predicate: Option<&str>,
    placeholder: Placeholder<'_>,
) -> Result<Statement> {
    let mut w = Where::new(placeholder);
    w.bounds(dialect, bounds, manifest_predicate)?;
    let mut sql = format!(
        "SELECT {} FROM {}{}",
        column_list(&schema.names()),
        table_ref(table),
        w.sql()
    );
    if let Some(limit) = bounds.limit {
        if let Some(c) = &bounds.cursor {
            sql.push_str(&format!(" ORDER BY {}", quote_ident(&c.column)));
        }
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Ok(Statement {
        sql,
        params: w.params,
    })
}

/// `SELECT <aggregate> FROM (<bounded select>) AS scan`, so limits apply before aggregating.
pub fn aggregate(
    dialect: Dialect,
    table: &TableName,
    schema: &Schema,
    bounds: &ScanBounds,
    manifest_predicate: Option<&str>,
    aggregate: &str,
) -> Result<Statement> {
    let inner = select(dialect, table, schema, bounds, manifest_predicate, &dollar)?;
    Ok(Statement {
        sql: format!("SELECT {aggregate} FROM ({}) AS scan", inner.sql),
        params: inner.params,
    })
}

/// The largest value of `column`, NULL over no rows (a ClickHouse aggregate over no rows
/// gives the type's default, 0 or 1970-01-01, instead).
pub fn max_of(dialect: Dialect, column: &str) -> String {
    let c = quote_ident(column);
    if is_clickhouse(dialect) {
        format!("if(count() = 0, NULL, max({c}))")
    } else {
        format!("MAX({c})")
    }
}

/// `CREATE TABLE` for a target (`key` becomes its primary key) or a staging table (no
/// constraints, so key checks can see NULLs and duplicates; PostgreSQL: UNLOGGED).
pub fn create_table(
    dialect: Dialect,
    table: &TableName,
    schema: &Schema,
    key: &[String],
    staging: bool,
) -> String {
    let clickhouse = is_clickhouse(dialect);
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let not_null = !staging && (!c.nullable || key.contains(&c.name));
            let t = native_type(dialect, &c.data_type);
            match (clickhouse, not_null) {
                (true, _) => clickhouse_column(&c.name, &c.data_type, &t, not_null),
                (false, true) => format!("{} {t} NOT NULL", quote_ident(&c.name)),
                (false, false) => format!("{} {t}", quote_ident(&c.name)),
            }
        })
        .collect();
    if clickhouse {
        // MergeTree sorts by the key (never Nullable); staging needs no order.
        let order = if staging || key.is_empty() {
            "tuple()".to_string()
        } else {
            format!("({})", column_list(key))
        };
        let if_not_exists = if staging { "" } else { "IF NOT EXISTS " };
        return format!(
            "CREATE TABLE {if_not_exists}{} ({}) ENGINE = MergeTree ORDER BY {order}",
            table_ref(table),
            cols.join(", ")
        );
    }
    if !staging && !key.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", column_list(key)));
    }
    let unlogged = if staging && is_postgres(dialect) {
        "UNLOGGED "
    } else {
        ""
    };
    let if_not_exists = if staging { "" } else { "IF NOT EXISTS " };
    format!(
        "CREATE {unlogged}TABLE {if_not_exists}{} ({})",
        table_ref(table),
        cols.join(", ")
    )
}

/// `"c" Nullable(T) COMMENT 'dpone:boolean'`: a ClickHouse column definition.
fn clickhouse_column(name: &str, portable: &DataType, t: &str, not_null: bool) -> String {
    let t = if not_null {
        t.to_string()
    } else {
        format!("Nullable({t})")
    };
    #[cfg(feature = "clickhouse")]
    if let Some(comment) = super::clickhouse::types::type_comment(portable) {
        return format!("{} {t} COMMENT '{comment}'", quote_ident(name));
    }
    let _ = portable;
    format!("{} {t}", quote_ident(name))
}

/// A staging table shaped like the target, to be swapped in. PostgreSQL copies the whole
/// definition (defaults, constraints, indexes); elsewhere columns and primary key.
pub fn create_like(
    dialect: Dialect,
    staging: &TableName,
    target: &TableName,
    target_schema: &Schema,
) -> String {
    if is_postgres(dialect) {
        return format!(
            "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
            table_ref(staging),
            table_ref(target)
        );
    }
    if is_clickhouse(dialect) {
        // Same columns, engine, sorting and partition key.
        return format!(
            "CREATE TABLE {} AS {}",
            table_ref(staging),
            table_ref(target)
        );
    }
    create_table(
        dialect,
        staging,
        target_schema,
        &target_schema.primary_key,
        false,
    )
    .replace("IF NOT EXISTS ", "")
}

fn is_postgres(dialect: Dialect) -> bool {
    #[cfg(feature = "postgres")]
    if dialect == Dialect::Postgres {
        return true;
    }
    let _ = dialect;
    false
}

pub fn drop_table(table: &TableName) -> String {
    format!("DROP TABLE IF EXISTS {}", table_ref(table))
}

/// `INSERT INTO target (cols) SELECT cols FROM staging`.
pub fn insert_from(target: &TableName, staging: &TableName, columns: &[String]) -> String {
    let cols = column_list(columns);
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
        table_ref(target),
        table_ref(staging)
    )
}

/// How a target row's key relates to staging (the WIT `key-match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    InStaging,
    InStagingDiffering(String),
    NotInStaging,
}

/// `[NOT] EXISTS (SELECT 1 FROM staging AS s WHERE s.k = <target>.k ...)`: the condition
/// on a target row, correlated through the target's full name (SQLite cannot alias the
/// table of a DELETE or UPDATE). Keys were checked to be non-NULL, so `=` is exact.
fn key_match(
    dialect: Dialect,
    target: &TableName,
    staging: &TableName,
    key: &[String],
    m: &KeyMatch,
) -> String {
    if is_clickhouse(dialect) {
        return key_match_in(staging, key, m);
    }
    let t = table_ref(target);
    let mut on: Vec<String> = key
        .iter()
        .map(|k| format!("s.{q} = {t}.{q}", q = quote_ident(k)))
        .collect();
    if let KeyMatch::InStagingDiffering(column) = m {
        let q = quote_ident(column);
        let differs = if is_postgres(dialect) {
            "IS DISTINCT FROM"
        } else {
            "IS NOT"
        };
        on.push(format!("s.{q} {differs} {t}.{q}"));
    }
    let not = if *m == KeyMatch::NotInStaging {
        "NOT "
    } else {
        ""
    };
    format!(
        "{not}EXISTS (SELECT 1 FROM {} AS s WHERE {})",
        table_ref(staging),
        on.join(" AND ")
    )
}

/// `(k..) [NOT] IN (SELECT k.. FROM staging)`: the key match without a correlated
/// subquery (ClickHouse). A differing column compares as (is NULL, text) pairs, so NULL
/// differs from every value and equals NULL.
fn key_match_in(staging: &TableName, key: &[String], m: &KeyMatch) -> String {
    let keys = format!("({})", column_list(key));
    let in_staging = format!(
        "{keys} IN (SELECT {} FROM {})",
        column_list(key),
        table_ref(staging)
    );
    match m {
        KeyMatch::InStaging => in_staging,
        KeyMatch::NotInStaging => format!("NOT ({in_staging})"),
        KeyMatch::InStagingDiffering(column) => {
            let c = quote_ident(column);
            let fingerprint = format!(
                "{}, isNull({c}), ifNull(toString({c}), '')",
                column_list(key)
            );
            format!(
                "{in_staging} AND ({fingerprint}) NOT IN (SELECT {fingerprint} FROM {})",
                table_ref(staging)
            )
        }
    }
}

fn nonempty_key(key: &[String]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::config(
            "sink.strategy.unique_key",
            "a key is required to match target rows with staging",
        ));
    }
    Ok(())
}

/// Target rows chosen by how their key relates to staging, and by a filter.
#[derive(Debug, Clone, Copy)]
pub struct RowSelection<'a> {
    pub target: &'a TableName,
    pub staging: &'a TableName,
    pub key: &'a [String],
    pub key_match: &'a KeyMatch,
    pub filter: &'a [Term],
}

impl RowSelection<'_> {
    /// The WHERE clause (and parameters, after `w`'s) selecting these rows.
    fn render(
        &self,
        dialect: Dialect,
        w: &mut Where<'_>,
        manifest_predicate: Option<&str>,
    ) -> Result<()> {
        nonempty_key(self.key)?;
        w.parts.push(key_match(
            dialect,
            self.target,
            self.staging,
            self.key,
            self.key_match,
        ));
        for t in self.filter {
            w.term(t, manifest_predicate)?;
        }
        Ok(())
    }
}

/// The condition selecting these rows, and its parameters: the WHERE clause of
/// [`delete_rows`] and [`update_rows`], and what sinks without DELETE and UPDATE
/// (ClickHouse) rewrite a table by.
pub fn row_condition(
    dialect: Dialect,
    rows: RowSelection<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let mut w = Where::new(&dollar);
    rows.render(dialect, &mut w, manifest_predicate)?;
    Ok(Statement {
        sql: w.parts.join(" AND "),
        params: w.params,
    })
}

/// The condition of a filter, as [`row_condition`]. An empty filter is refused: a strategy
/// that wants every row gone says so with `truncate-and-insert`.
pub fn filter_condition(filter: &[Term], manifest_predicate: Option<&str>) -> Result<Statement> {
    if filter.is_empty() {
        return Err(Error::new(
            crate::Kind::Unsupported,
            "delete-where with an empty filter would delete every row",
        ));
    }
    let mut w = Where::new(&dollar);
    for t in filter {
        w.term(t, manifest_predicate)?;
    }
    Ok(Statement {
        sql: w.parts.join(" AND "),
        params: w.params,
    })
}

/// `DELETE FROM target WHERE <key match> AND <filter>`.
pub fn delete_rows(
    dialect: Dialect,
    rows: RowSelection<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let cond = row_condition(dialect, rows, manifest_predicate)?;
    Ok(Statement {
        sql: format!("DELETE FROM {} WHERE {}", table_ref(rows.target), cond.sql),
        params: cond.params,
    })
}

/// Refuses an update that would change nothing.
pub fn check_assignments(assignments: &[(String, Value)]) -> Result<()> {
    if assignments.is_empty() {
        return Err(Error::new(
            crate::Kind::Unsupported,
            "update-rows with no assignments changes nothing",
        ));
    }
    Ok(())
}

/// `UPDATE target SET c = $n, ... WHERE <key match> AND <filter>` (the condition's
/// parameters first).
pub fn update_rows(
    dialect: Dialect,
    rows: RowSelection<'_>,
    assignments: &[(String, Value)],
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    check_assignments(assignments)?;
    let mut cond = row_condition(dialect, rows, manifest_predicate)?;
    let sets: Vec<String> = assignments
        .iter()
        .map(|(c, v)| {
            cond.params.push(v.clone());
            format!("{} = ${}", quote_ident(c), cond.params.len())
        })
        .collect();
    Ok(Statement {
        sql: format!(
            "UPDATE {} SET {} WHERE {}",
            table_ref(rows.target),
            sets.join(", "),
            cond.sql
        ),
        params: cond.params,
    })
}

/// The staging rows whose `key` has no target row matching `filter`, inserted as `columns`
/// plus `extra` target columns set to constants.
#[derive(Debug, Clone, Copy)]
pub struct NewRows<'a> {
    pub target: &'a TableName,
    pub staging: &'a TableName,
    pub columns: &'a [String],
    pub key: &'a [String],
    pub filter: &'a [Term],
    pub extra: &'a [(String, Value)],
}

/// `SELECT s.cols, $n.. FROM staging AS s WHERE NOT EXISTS (SELECT 1 FROM target WHERE
/// target.k = s.k AND <filter>)`: the rows [`insert_new_rows`] inserts. Unqualified filter
/// columns resolve to the target, the innermost table. ClickHouse has no correlated
/// subquery: there the keys are `NOT IN` the filtered target's keys.
pub fn new_rows_select(
    dialect: Dialect,
    rows: NewRows<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let NewRows {
        target,
        staging,
        columns,
        key,
        filter,
        extra,
    } = rows;
    nonempty_key(key)?;
    let t = table_ref(target);
    let mut w = Where::new(&dollar);
    let mut select: Vec<String> = columns
        .iter()
        .map(|c| format!("s.{}", quote_ident(c)))
        .collect();
    select.extend(extra.iter().map(|(_, v)| w.param(v)));
    let clickhouse = is_clickhouse(dialect);
    if !clickhouse {
        for k in key {
            w.parts.push(format!("{t}.{q} = s.{q}", q = quote_ident(k)));
        }
    }
    for f in filter {
        w.term(f, manifest_predicate)?;
    }
    let absent = if clickhouse {
        let s_keys: Vec<String> = key
            .iter()
            .map(|k| format!("s.{}", quote_ident(k)))
            .collect();
        format!(
            "({}) NOT IN (SELECT {} FROM {t}{})",
            s_keys.join(", "),
            column_list(key),
            w.sql()
        )
    } else {
        format!("NOT EXISTS (SELECT 1 FROM {t}{})", w.sql())
    };
    Ok(Statement {
        sql: format!(
            "SELECT {} FROM {} AS s WHERE {absent}",
            select.join(", "),
            table_ref(staging)
        ),
        params: w.params,
    })
}

/// `INSERT INTO target (cols, extra) <new_rows_select>`.
pub fn insert_new_rows(
    dialect: Dialect,
    rows: NewRows<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let select = new_rows_select(dialect, rows, manifest_predicate)?;
    let mut target_columns = rows.columns.to_vec();
    target_columns.extend(rows.extra.iter().map(|(c, _)| c.clone()));
    Ok(Statement {
        sql: format!(
            "INSERT INTO {} ({}) {}",
            table_ref(rows.target),
            column_list(&target_columns),
            select.sql
        ),
        params: select.params,
    })
}

/// `DELETE FROM target WHERE <filter>`; an empty filter is refused ([`filter_condition`]).
pub fn delete_where(
    target: &TableName,
    filter: &[Term],
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let cond = filter_condition(filter, manifest_predicate)?;
    Ok(Statement {
        sql: format!("DELETE FROM {} WHERE {}", table_ref(target), cond.sql),
        params: cond.params,
    })
}

/// Empties the target inside the current transaction.
pub fn truncate(dialect: Dialect, target: &TableName) -> String {
    if is_postgres(dialect) {
        format!("TRUNCATE TABLE {}", table_ref(target))
    } else {
        format!("DELETE FROM {}", table_ref(target))
    }
}

/// Drops the target and renames staging into its place; run inside one transaction.
pub fn swap(target: &TableName, staging: &TableName) -> [String; 2] {
    [
        drop_table(target),
        format!(
            "ALTER TABLE {} RENAME TO {}",
            table_ref(staging),
            quote_ident(&target.name)
        ),
    ]
}

/// The two queries of a key check over the rows of `table` matching `filter`: (rows, rows
/// with a NULL key component, key groups occurring more than once), and up to five of the
/// duplicated keys. The filter's `$n` repeat inside one statement: one set of parameters.
pub fn key_checks(
    table: &TableName,
    key: &[String],
    filter: &[Term],
    manifest_predicate: Option<&str>,
) -> Result<(Statement, Statement)> {
    nonempty_key(key)?;
    let mut w = Where::new(&dollar);
    for f in filter {
        w.term(f, manifest_predicate)?;
    }
    let scope = if filter.is_empty() {
        table_ref(table)
    } else {
        format!("(SELECT * FROM {}{}) AS scoped", table_ref(table), w.sql())
    };
    let any_null: Vec<String> = key
        .iter()
        .map(|k| format!("{} IS NULL", quote_ident(k)))
        .collect();
    let cols = column_list(key);
    let counts = format!(
        "SELECT (SELECT COUNT(*) FROM {scope}), (SELECT COUNT(*) FROM {scope} WHERE {nulls}), \
         (SELECT COUNT(*) FROM (SELECT 1 FROM {scope} GROUP BY {cols} HAVING COUNT(*) > 1) AS d)",
        nulls = any_null.join(" OR "),
    );
    let sample = format!(
        "SELECT {cols} FROM {scope} GROUP BY {cols} HAVING COUNT(*) > 1 ORDER BY {cols} LIMIT 5"
    );
    Ok((
        Statement {
            sql: counts,
            params: w.params.clone(),
        },
        Statement {
            sql: sample,
            params: w.params,
        },
    ))
}

/// Up to `limit` distinct values of a column, sorted.
pub fn distinct_values(table: &TableName, column: &str, limit: u32) -> String {
    let c = quote_ident(column);
    format!(
        "SELECT DISTINCT {c} FROM {} ORDER BY {c} LIMIT {limit}",
        table_ref(table)
    )
}

pub fn count(table: &TableName) -> String {
    format!("SELECT COUNT(*) FROM {}", table_ref(table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, CompareTerm, CursorBound, InTerm, RangeTerm};

    fn selection<'a>(
        target: &'a TableName,
        staging: &'a TableName,
        key: &'a [String],
        key_match: &'a KeyMatch,
        filter: &'a [Term],
    ) -> RowSelection<'a> {
        RowSelection {
            target,
            staging,
            key,
            key_match,
            filter,
        }
    }

    fn orders() -> (TableName, Schema) {
        let col = |n: &str, t| Column {
            name: n.into(),
            data_type: t,
            nullable: true,
        };
        let schema = Schema {
            columns: vec![
                col("id", DataType::Int64),
                col("up\"dated", DataType::TimestampTz),
            ],
            primary_key: vec!["id".into()],
        };
        (
            TableName {
                schema: Some("public".into()),
                name: "orders".into(),
            },
            schema,
        )
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn identifiers_are_quoted_and_values_are_parameters() {
        let (t, s) = orders();
        let bounds = ScanBounds {
            cursor: Some(CursorBound {
                column: "up\"dated".into(),
                after: Some(Value::TimestampTz(5)),
                up_to: None,
            }),
            filter: vec![
                Term::InList(InTerm {
                    column: "id".into(),
                    values: vec![Value::Int(1), Value::Int(2)],
                }),
                Term::Compare(CompareTerm {
                    column: "id".into(),
                    op: Comparison::Ne,
                    value: Value::Text("x'; DROP".into()),
                }),
            ],
            limit: Some(10),
            row_versions: None,
            since: None,
        };
        let st = select(Dialect::Postgres, &t, &s, &bounds, None, &dollar).unwrap();
        assert_eq!(
            st.sql,
            "SELECT \"id\", \"up\"\"dated\" FROM \"public\".\"orders\" WHERE \"up\"\"dated\" > $1 \
             AND \"id\" IN ($2, $3) AND \"id\" <> $4 ORDER BY \"up\"\"dated\" LIMIT 10"
        );
        assert_eq!(st.params.len(), 4);
        assert!(!st.sql.contains("DROP"));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn xmin_bounds_compare_widened_transaction_ids() {
        let (t, s) = orders();
        let bounds = ScanBounds {
            cursor: None,
            filter: vec![],
            limit: None,
            row_versions: Some(crate::model::RowVersionBound {
                after: Some("pgxid:7".into()),
                up_to: "pgxid:9".into(),
            }),
            since: None,
        };
        let st = select(Dialect::Postgres, &t, &s, &bounds, None, &dollar).unwrap();
        assert!(st.sql.contains("| xmin::text::bigint)"), "{}", st.sql);
        assert!(st.sql.contains(" > $1 AND "), "{}", st.sql);
        assert!(st.sql.ends_with(" <= $2"), "{}", st.sql);
        assert_eq!(st.params, [Value::Int(7), Value::Int(9)]);
        #[cfg(feature = "sqlite")]
        assert!(select(Dialect::Sqlite, &t, &s, &bounds, None, &dollar).is_err());
    }

    #[test]
    fn ranges_are_half_open_unless_inclusive() {
        let (t, _) = orders();
        let range = |inc| {
            Term::Range(RangeTerm {
                column: "id".into(),
                low: Value::Int(1),
                high: Value::Int(9),
                high_inclusive: inc,
            })
        };
        assert_eq!(
            delete_where(&t, &[range(false)], None).unwrap().sql,
            "DELETE FROM \"public\".\"orders\" WHERE \"id\" >= $1 AND \"id\" < $2"
        );
        assert_eq!(
            delete_where(&t, &[range(true)], None).unwrap().sql,
            "DELETE FROM \"public\".\"orders\" WHERE \"id\" >= $1 AND \"id\" <= $2"
        );
        assert!(delete_where(&t, &[], None).is_err());
    }

    #[test]
    fn manifest_predicate_is_the_only_raw_sql() {
        let (t, _) = orders();
        let st = delete_where(&t, &[Term::ManifestPredicate], Some("region = 'eu'")).unwrap();
        assert_eq!(
            st.sql,
            "DELETE FROM \"public\".\"orders\" WHERE (region = 'eu')"
        );
        let err = delete_where(&t, &[Term::ManifestPredicate], None).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("sink.strategy.predicate_sql"));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_finalize_statements() {
        let (t, s) = orders();
        let stg = t.sibling("__dpone_stg_r1".into());
        let id = ["id".into()];
        assert_eq!(
            delete_rows(
                Dialect::Postgres,
                selection(&t, &stg, &id, &KeyMatch::InStaging, &[]),
                None
            )
            .unwrap()
            .sql,
            "DELETE FROM \"public\".\"orders\" WHERE EXISTS (SELECT 1 FROM \"public\".\"__dpone_stg_r1\" AS s WHERE s.\"id\" = \"public\".\"orders\".\"id\")"
        );
        let current = Term::Compare(CompareTerm {
            column: "cur".into(),
            op: Comparison::Eq,
            value: Value::Boolean(true),
        });
        let differing = KeyMatch::InStagingDiffering("h".into());
        let expire = update_rows(
            Dialect::Postgres,
            selection(&t, &stg, &id, &differing, std::slice::from_ref(&current)),
            &[
                ("to".into(), Value::TimestampTz(9)),
                ("cur".into(), Value::Boolean(false)),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            expire.sql,
            "UPDATE \"public\".\"orders\" SET \"to\" = $2, \"cur\" = $3 WHERE EXISTS (SELECT 1 FROM \"public\".\"__dpone_stg_r1\" AS s \
             WHERE s.\"id\" = \"public\".\"orders\".\"id\" AND s.\"h\" IS DISTINCT FROM \"public\".\"orders\".\"h\") AND \"cur\" = $1"
        );
        assert_eq!(
            expire.params,
            [
                Value::Boolean(true),
                Value::TimestampTz(9),
                Value::Boolean(false)
            ]
        );
        let insert = insert_new_rows(
            Dialect::Postgres,
            NewRows {
                target: &t,
                staging: &stg,
                columns: &["id".into()],
                key: &id,
                filter: &[current],
                extra: &[("from".into(), Value::TimestampTz(9))],
            },
            None,
        )
        .unwrap();
        assert_eq!(
            insert.sql,
            "INSERT INTO \"public\".\"orders\" (\"id\", \"from\") SELECT s.\"id\", $1 FROM \"public\".\"__dpone_stg_r1\" AS s \
             WHERE NOT EXISTS (SELECT 1 FROM \"public\".\"orders\" WHERE \"public\".\"orders\".\"id\" = s.\"id\" AND \"cur\" = $2)"
        );
        assert!(
            delete_rows(
                Dialect::Postgres,
                selection(&t, &stg, &[], &KeyMatch::NotInStaging, &[]),
                None
            )
            .is_err()
        );
        assert_eq!(
            insert_from(&t, &stg, &s.names()),
            "INSERT INTO \"public\".\"orders\" (\"id\", \"up\"\"dated\") SELECT \"id\", \"up\"\"dated\" FROM \"public\".\"__dpone_stg_r1\""
        );
        assert_eq!(
            truncate(Dialect::Postgres, &t),
            "TRUNCATE TABLE \"public\".\"orders\""
        );
        assert_eq!(
            swap(&t, &stg),
            [
                "DROP TABLE IF EXISTS \"public\".\"orders\"".to_string(),
                "ALTER TABLE \"public\".\"__dpone_stg_r1\" RENAME TO \"orders\"".to_string()
            ]
        );
        assert!(
            create_table(Dialect::Postgres, &stg, &s, &[], true)
                .starts_with("CREATE UNLOGGED TABLE \"public\".\"__dpone_stg_r1\"")
        );
        assert_eq!(
            create_like(Dialect::Postgres, &stg, &t, &s),
            "CREATE TABLE \"public\".\"__dpone_stg_r1\" (LIKE \"public\".\"orders\" INCLUDING ALL)"
        );
        assert_eq!(
            key_checks(&stg, &["id".into()], &[], None).unwrap().0.sql,
            "SELECT (SELECT COUNT(*) FROM \"public\".\"__dpone_stg_r1\"), (SELECT COUNT(*) FROM \"public\".\"__dpone_stg_r1\" WHERE \"id\" IS NULL), \
             (SELECT COUNT(*) FROM (SELECT 1 FROM \"public\".\"__dpone_stg_r1\" GROUP BY \"id\" HAVING COUNT(*) > 1) AS d)"
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_matches_keys_by_correlated_exists() {
        let t = TableName {
            schema: None,
            name: "orders".into(),
        };
        let stg = t.sibling("stg".into());
        let key = ["a".into(), "b".into()];
        assert_eq!(
            delete_rows(
                Dialect::Sqlite,
                selection(
                    &t,
                    &stg,
                    &key,
                    &KeyMatch::InStagingDiffering("h".into()),
                    &[]
                ),
                None
            )
            .unwrap()
            .sql,
            "DELETE FROM \"orders\" WHERE EXISTS (SELECT 1 FROM \"stg\" AS s WHERE s.\"a\" = \"orders\".\"a\" AND s.\"b\" = \"orders\".\"b\" AND s.\"h\" IS NOT \"orders\".\"h\")"
        );
        assert_eq!(
            delete_rows(
                Dialect::Sqlite,
                selection(&t, &stg, &key, &KeyMatch::NotInStaging, &[]),
                None
            )
            .unwrap()
            .sql,
            "DELETE FROM \"orders\" WHERE NOT EXISTS (SELECT 1 FROM \"stg\" AS s WHERE s.\"a\" = \"orders\".\"a\" AND s.\"b\" = \"orders\".\"b\")"
        );
        assert_eq!(truncate(Dialect::Sqlite, &t), "DELETE FROM \"orders\"");
    }
}
