//! Statement rendering, shared by every SQL dialect.
//!
//! Strategies hand the host structured bounds and filters; this module turns them into SQL
//! through the connector's [`SqlDialect`]: identifiers quoted by it, values written as its
//! placeholders. Values only ever travel as parameters (or, on servers without them, as the
//! dialect's audited literals); the one raw SQL text is the manifest's `predicate_sql`.
//! Everything here is pure, so `dpone-host plan` can print the exact statements a run issues.

use super::dialect::{IN_LIST_PARAMS, KeyMatch, NewTable, SqlDialect};
use super::{Statement, TableName};
use crate::error::{Error, Result};
use crate::model::{Comparison, DataType, ScanBounds, Schema, Term, Value};

/// Renders a placeholder for parameter `n` holding a value: the dialect's, or a session's
/// own for reads (see [`super::SqlSession::read_placeholder`]).
pub type Placeholder<'a> = &'a dyn Fn(usize, &Value) -> Result<String>;

/// Builds a WHERE clause and its parameters.
struct Where<'a> {
    d: &'a dyn SqlDialect,
    parts: Vec<String>,
    params: Vec<Value>,
    placeholder: Placeholder<'a>,
}

impl<'a> Where<'a> {
    fn new(d: &'a dyn SqlDialect, placeholder: Placeholder<'a>) -> Self {
        Where {
            d,
            parts: Vec::new(),
            params: Vec::new(),
            placeholder,
        }
    }

    fn param(&mut self, v: &Value) -> Result<String> {
        if self.params.len() >= self.d.max_params() {
            return Err(Error::new(
                crate::Kind::Unsupported,
                format!(
                    "the statement would bind more than {} parameters, the most this database takes in one statement",
                    self.d.max_params()
                ),
            ));
        }
        self.params.push(v.clone());
        (self.placeholder)(self.params.len(), v)
    }

    /// `quoted IN (p1, p2, ..)`, one parameter per value.
    fn in_list(&mut self, quoted: &str, values: &[Value]) -> Result<()> {
        let ps = values
            .iter()
            .map(|v| self.param(v))
            .collect::<Result<Vec<_>>>()?;
        self.parts.push(format!("{quoted} IN ({})", ps.join(", ")));
        Ok(())
    }

    fn compare(&mut self, column: &str, op: &str, v: &Value) -> Result<()> {
        let p = self.param(v)?;
        let bound = self.d.compare_bound(op, p, v);
        self.parts
            .push(format!("{} {op} {bound}", self.d.quote_ident(column)));
        Ok(())
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
                self.compare(&c.column, op, &c.value)?;
            }
            Term::Range(r) => {
                self.compare(&r.column, ">=", &r.low)?;
                self.compare(
                    &r.column,
                    if r.high_inclusive { "<=" } else { "<" },
                    &r.high,
                )?;
            }
            Term::InList(i) if i.values.is_empty() => self.parts.push("1 = 0".into()),
            Term::InList(i) if i.values.len() > IN_LIST_PARAMS => {
                let quoted = self.d.quote_ident(&i.column);
                let Some(array) = json_array_text(&i.values) else {
                    return self.in_list(&quoted, &i.values);
                };
                let p = self.param(&Value::Text(array))?;
                match self.d.in_json_array(&quoted, &p) {
                    Some(sql) => self.parts.push(sql),
                    None => {
                        // The dialect expands no arrays: a parameter per value after all.
                        self.params.pop();
                        self.in_list(&quoted, &i.values)?;
                    }
                }
            }
            Term::InList(i) => {
                let quoted = self.d.quote_ident(&i.column);
                self.in_list(&quoted, &i.values)?;
            }
            Term::IsNull(c) => self
                .parts
                .push(format!("{} IS NULL", self.d.quote_ident(c))),
            Term::IsNotNull(c) => self
                .parts
                .push(format!("{} IS NOT NULL", self.d.quote_ident(c))),
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

    fn bounds(&mut self, bounds: &ScanBounds, manifest_predicate: Option<&str>) -> Result<()> {
        if let Some(x) = &bounds.row_versions {
            if let Some(after) = &x.after {
                let (row_version, v) = self.d.row_version(after)?;
                let p = self.param(&v)?;
                self.parts.push(format!("{row_version} > {p}"));
            }
            let (row_version, v) = self.d.row_version(&x.up_to)?;
            let p = self.param(&v)?;
            self.parts.push(format!("{row_version} <= {p}"));
        }
        if let Some(c) = &bounds.cursor {
            if let Some(after) = c.after.as_ref().filter(|v| **v != Value::Null) {
                self.compare(&c.column, ">", after)?;
            }
            if let Some(up_to) = c.up_to.as_ref().filter(|v| **v != Value::Null) {
                self.compare(&c.column, "<=", up_to)?;
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

    fn condition(self) -> Statement {
        Statement {
            sql: self.parts.join(" AND "),
            params: self.params,
        }
    }
}

/// Values as a JSON array of their text in the forms a server converts implicitly to the
/// column's type (ISO dates and timestamps, `1`/`0` booleans); `None` when one has no such
/// form (bytes, NULL).
fn json_array_text(values: &[Value]) -> Option<String> {
    use crate::model::time::format_timestamp;
    let text = |v: &Value| -> Option<String> {
        Some(match v {
            Value::Null | Value::Bytes(_) => return None,
            Value::Boolean(b) => u8::from(*b).to_string(),
            Value::Timestamp(t) => format_timestamp(*t),
            Value::TimestampTz(t) => format!("{}+00:00", format_timestamp(*t)),
            other => crate::model::canonical_text(other)?,
        })
    };
    let items = values
        .iter()
        .map(|v| text(v).map(serde_json::Value::String))
        .collect::<Option<Vec<_>>>()?;
    Some(serde_json::Value::Array(items).to_string())
}

/// The dialect's own placeholders: what every statement but a session's reads uses.
fn placeholders(d: &dyn SqlDialect) -> impl Fn(usize, &Value) -> Result<String> + '_ {
    move |n, v| d.placeholder(n, v)
}

/// Checks that every column a scan's bounds name exists in `schema`, and that the dialect
/// compares the cursor correctly.
pub fn check_bound_columns(d: &dyn SqlDialect, schema: &Schema, bounds: &ScanBounds) -> Result<()> {
    crate::model::check_terms(schema, &bounds.filter, "sink.strategy")?;
    if let Some(c) = &bounds.cursor {
        d.check_cursor(
            &c.column,
            &schema.require(&c.column, "sink.strategy")?.data_type,
        )?;
        for v in c.after.iter().chain(&c.up_to) {
            crate::model::check_value(v, "sink.strategy")?;
        }
    }
    Ok(())
}

/// `SELECT <columns> FROM <table> WHERE <bounds> [ORDER BY cursor] [LIMIT n]`. A limited
/// cursor scan is ordered by the cursor so the rows it takes are the first ones past it.
pub fn select(
    d: &dyn SqlDialect,
    table: &TableName,
    schema: &Schema,
    bounds: &ScanBounds,
    manifest_predicate: Option<&str>,
    placeholder: Placeholder<'_>,
) -> Result<Statement> {
    select_share(
        d,
        table,
        schema,
        bounds,
        manifest_predicate,
        placeholder,
        None,
    )
}

/// [`select`] of one share of a split read: `share` (the connector's own SQL, see
/// [`super::SnapshotSplit`]) is one more condition.
pub fn select_share(
    d: &dyn SqlDialect,
    table: &TableName,
    schema: &Schema,
    bounds: &ScanBounds,
    manifest_predicate: Option<&str>,
    placeholder: Placeholder<'_>,
    share: Option<&str>,
) -> Result<Statement> {
    let mut w = Where::new(d, placeholder);
    w.bounds(bounds, manifest_predicate)?;
    w.parts.extend(share.map(str::to_owned));
    if bounds.limit == Some(0) {
        // No row: some dialects cannot say `LIMIT 0` (SQL Server's FETCH needs one).
        w.parts.push("1 = 0".into());
    }
    let mut sql = format!(
        "SELECT {} FROM {}{}",
        d.column_list(&schema.names()),
        d.table_ref(table),
        w.sql()
    );
    if let Some(limit) = bounds.limit.filter(|n| *n > 0) {
        if let Some(c) = &bounds.cursor {
            sql.push_str(&format!(" ORDER BY {}", d.quote_ident(&c.column)));
        }
        sql.push_str(&d.limit(limit, bounds.cursor.is_some()));
    }
    Ok(Statement {
        sql,
        params: w.params,
    })
}

/// `SELECT <aggregate> FROM (<bounded select>) AS scan`, so limits apply before aggregating.
pub fn aggregate(
    d: &dyn SqlDialect,
    table: &TableName,
    schema: &Schema,
    bounds: &ScanBounds,
    manifest_predicate: Option<&str>,
    aggregate: &str,
) -> Result<Statement> {
    let inner = select(
        d,
        table,
        schema,
        bounds,
        manifest_predicate,
        &placeholders(d),
    )?;
    Ok(Statement {
        sql: format!("SELECT {aggregate} FROM ({}) AS scan", inner.sql),
        params: inner.params,
    })
}

/// The statement creating a table's schema when missing; `None` where tables live in one
/// namespace.
pub fn create_namespace(d: &dyn SqlDialect, table: &TableName) -> Option<String> {
    d.create_namespace(&d.quote_ident(table.schema.as_ref()?))
}

/// A staging table shaped like the target, to be swapped in: the dialect's copy of the
/// definition where it has one, else the target's columns and primary key.
pub fn create_like(
    d: &dyn SqlDialect,
    staging: &TableName,
    target: &TableName,
    target_schema: &Schema,
) -> String {
    d.create_like(&d.table_ref(staging), &d.table_ref(target))
        .unwrap_or_else(|| {
            d.create_table(
                staging,
                target_schema,
                &target_schema.primary_key,
                NewTable::TargetCopy,
            )
        })
}

pub fn drop_table(d: &dyn SqlDialect, table: &TableName) -> String {
    format!("DROP TABLE IF EXISTS {}", d.table_ref(table))
}

/// `INSERT INTO target (cols) SELECT cols FROM source`.
pub fn insert_from(
    d: &dyn SqlDialect,
    target: &TableName,
    source: &TableName,
    columns: &[String],
) -> String {
    let cols = d.column_list(columns);
    format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM {}",
        d.table_ref(target),
        d.table_ref(source)
    )
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

/// The condition selecting these rows, and its parameters: the WHERE clause of
/// [`delete_rows`] and [`update_rows`], and what sinks without DELETE and UPDATE rewrite a
/// table by.
pub fn row_condition(
    d: &dyn SqlDialect,
    rows: RowSelection<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    nonempty_key(rows.key)?;
    let placeholder = placeholders(d);
    let mut w = Where::new(d, &placeholder);
    w.parts.push(d.key_match(
        &d.table_ref(rows.target),
        &d.table_ref(rows.staging),
        rows.key,
        rows.key_match,
    ));
    for t in rows.filter {
        w.term(t, manifest_predicate)?;
    }
    Ok(w.condition())
}

/// The condition of a filter, as [`row_condition`]. An empty filter is refused: a strategy
/// that wants every row gone says so with `truncate-and-insert`.
pub fn filter_condition(
    d: &dyn SqlDialect,
    filter: &[Term],
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    if filter.is_empty() {
        return Err(Error::new(
            crate::Kind::Unsupported,
            "delete-where with an empty filter would delete every row",
        ));
    }
    let placeholder = placeholders(d);
    let mut w = Where::new(d, &placeholder);
    for t in filter {
        w.term(t, manifest_predicate)?;
    }
    Ok(w.condition())
}

/// `DELETE FROM target WHERE <key match> AND <filter>`.
pub fn delete_rows(
    d: &dyn SqlDialect,
    rows: RowSelection<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let cond = row_condition(d, rows, manifest_predicate)?;
    Ok(Statement {
        sql: format!(
            "DELETE FROM {} WHERE {}",
            d.table_ref(rows.target),
            cond.sql
        ),
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
    d: &dyn SqlDialect,
    rows: RowSelection<'_>,
    assignments: &[(String, Value)],
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    check_assignments(assignments)?;
    let mut cond = row_condition(d, rows, manifest_predicate)?;
    let mut sets = Vec::with_capacity(assignments.len());
    for (c, v) in assignments {
        cond.params.push(v.clone());
        let p = d.placeholder(cond.params.len(), v)?;
        sets.push(format!("{} = {p}", d.quote_ident(c)));
    }
    Ok(Statement {
        sql: format!(
            "UPDATE {} SET {} WHERE {}",
            d.table_ref(rows.target),
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

/// `SELECT s.cols, $n.. FROM staging AS s WHERE <no target row with the key satisfies
/// filter>`: the rows [`insert_new_rows`] inserts. Unqualified filter columns resolve to
/// the target, the innermost table.
pub fn new_rows_select(
    d: &dyn SqlDialect,
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
    let placeholder = placeholders(d);
    let mut w = Where::new(d, &placeholder);
    let mut select: Vec<String> = columns
        .iter()
        .map(|c| format!("s.{}", d.quote_ident(c)))
        .collect();
    for (_, v) in extra {
        select.push(w.param(v)?);
    }
    for f in filter {
        w.term(f, manifest_predicate)?;
    }
    let absent = d.no_target_row(&d.table_ref(target), key, &w.parts);
    Ok(Statement {
        sql: format!(
            "SELECT {} FROM {} AS s WHERE {absent}",
            select.join(", "),
            d.table_ref(staging)
        ),
        params: w.params,
    })
}

/// `INSERT INTO target (cols, extra) <new_rows_select>`.
pub fn insert_new_rows(
    d: &dyn SqlDialect,
    rows: NewRows<'_>,
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let select = new_rows_select(d, rows, manifest_predicate)?;
    let mut target_columns = rows.columns.to_vec();
    target_columns.extend(rows.extra.iter().map(|(c, _)| c.clone()));
    Ok(Statement {
        sql: format!(
            "INSERT INTO {} ({}) {}",
            d.table_ref(rows.target),
            d.column_list(&target_columns),
            select.sql
        ),
        params: select.params,
    })
}

/// `DELETE FROM target WHERE <filter>`; an empty filter is refused ([`filter_condition`]).
pub fn delete_where(
    d: &dyn SqlDialect,
    target: &TableName,
    filter: &[Term],
    manifest_predicate: Option<&str>,
) -> Result<Statement> {
    let cond = filter_condition(d, filter, manifest_predicate)?;
    Ok(Statement {
        sql: format!("DELETE FROM {} WHERE {}", d.table_ref(target), cond.sql),
        params: cond.params,
    })
}

/// Drops the target and renames staging into its place; run inside one transaction.
pub fn swap(d: &dyn SqlDialect, target: &TableName, staging: &TableName) -> [String; 2] {
    [drop_table(d, target), d.rename_table(staging, &target.name)]
}

/// The name of the per-key row count inside [`key_checks`].
const KEY_ROWS: &str = "__dpone_key_rows";

/// The two queries of a key check over the rows of `table` matching `filter`: (rows, rows
/// with a NULL key component, key groups occurring more than once), and up to five of the
/// duplicated keys. The counts come from one scan grouped by the key (three scans took 1.5x
/// as long over 200,000 staged rows of 120 columns); its count column is named
/// [`KEY_ROWS`], which a key column must not be.
pub fn key_checks(
    d: &dyn SqlDialect,
    table: &TableName,
    key: &[String],
    filter: &[Term],
    manifest_predicate: Option<&str>,
) -> Result<(Statement, Statement)> {
    nonempty_key(key)?;
    if key.iter().any(|k| k == KEY_ROWS) {
        return Err(Error::config(
            "sink.strategy.unique_key",
            format!("`{KEY_ROWS}` is a name dpone keeps for itself: rename the column"),
        ));
    }
    let placeholder = placeholders(d);
    let mut w = Where::new(d, &placeholder);
    for f in filter {
        w.term(f, manifest_predicate)?;
    }
    let scope = if filter.is_empty() {
        d.table_ref(table)
    } else {
        format!(
            "(SELECT * FROM {}{}) AS scoped",
            d.table_ref(table),
            w.sql()
        )
    };
    let any_null: Vec<String> = key
        .iter()
        .map(|k| format!("{} IS NULL", d.quote_ident(k)))
        .collect();
    let cols = d.column_list(key);
    let rows = d.quote_ident(KEY_ROWS);
    let total = |expr: &str| {
        format!(
            "CAST(COALESCE(SUM({expr}), 0) AS {})",
            d.native_type(&DataType::Int64)
        )
    };
    let counts = format!(
        "SELECT {}, {}, {} FROM (SELECT {cols}, {n} AS {rows} FROM {scope} GROUP BY {cols}) AS g",
        total(&rows),
        total(&format!(
            "CASE WHEN {} THEN {rows} ELSE 0 END",
            any_null.join(" OR ")
        )),
        total(&format!("CASE WHEN {rows} > 1 THEN 1 ELSE 0 END")),
        n = d.count_all(),
    );
    let sample = format!(
        "SELECT {cols} FROM {scope} GROUP BY {cols} HAVING COUNT(*) > 1 ORDER BY {cols}{}",
        d.limit(5, true)
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
pub fn distinct_values(d: &dyn SqlDialect, table: &TableName, column: &str, limit: u32) -> String {
    let c = d.quote_ident(column);
    format!(
        "SELECT DISTINCT {c} FROM {} ORDER BY {c}{}",
        d.table_ref(table),
        d.limit(u64::from(limit), true)
    )
}

pub fn count(d: &dyn SqlDialect, table: &TableName) -> String {
    format!("SELECT {} FROM {}", d.count_all(), d.table_ref(table))
}

/// `stmt`, written with `$n` placeholders, in the dialect's placeholders: dpone's own
/// bookkeeping statements (state, run history, backfill ledger) are written once for
/// every store. A `$n` without a parameter is an error.
pub fn with_placeholders(d: &dyn SqlDialect, stmt: Statement) -> Result<Statement> {
    let mut sql = String::with_capacity(stmt.sql.len());
    let mut rest = stmt.sql.as_str();
    while let Some(at) = rest.find('$') {
        sql.push_str(&rest[..at]);
        let digits: String = rest[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let n: usize = digits.parse().unwrap_or(0);
        let value = n
            .checked_sub(1)
            .and_then(|i| stmt.params.get(i))
            .ok_or_else(|| {
                Error::internal(format!("`${digits}` has no parameter: {}", stmt.sql))
            })?;
        sql.push_str(&d.placeholder(n, value)?);
        rest = &rest[at + 1 + digits.len()..];
    }
    sql.push_str(rest);
    Ok(Statement {
        sql,
        params: stmt.params,
    })
}

/// `"a", "b"` in the standard quoting, for connectors' own SQL on servers that use it.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"` or `"table"` in the standard quoting (see [`quote_ident`]).
pub fn table_ref(table: &TableName) -> String {
    match &table.schema {
        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&table.name)),
        None => quote_ident(&table.name),
    }
}

/// `"a", "b", "c"` in the standard quoting (see [`quote_ident`]).
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, CompareTerm, CursorBound, DataType, InTerm, RangeTerm};

    /// The defaults alone: standard SQL.
    #[derive(Debug)]
    struct Standard;

    impl SqlDialect for Standard {
        fn max_params(&self) -> usize {
            3
        }

        fn native_type(&self, _: &DataType) -> String {
            "TEXT".into()
        }
    }

    #[cfg(feature = "postgres")]
    const PG: &dyn SqlDialect = &crate::connectors::postgres::dialect::PostgresDialect;
    #[cfg(feature = "sqlite")]
    const SQLITE: &dyn SqlDialect = &crate::connectors::sqlite::dialect::SqliteDialect;

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
        let st = select(PG, &t, &s, &bounds, None, &placeholders(PG)).unwrap();
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
        let st = select(PG, &t, &s, &bounds, None, &placeholders(PG)).unwrap();
        assert!(st.sql.contains("| xmin::text::bigint)"), "{}", st.sql);
        assert!(st.sql.contains(" > $1 AND "), "{}", st.sql);
        assert!(st.sql.ends_with(" <= $2"), "{}", st.sql);
        assert_eq!(st.params, [Value::Int(7), Value::Int(9)]);
        #[cfg(feature = "sqlite")]
        assert!(select(SQLITE, &t, &s, &bounds, None, &placeholders(SQLITE)).is_err());
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
            delete_where(&Standard, &t, &[range(false)], None)
                .unwrap()
                .sql,
            "DELETE FROM \"public\".\"orders\" WHERE \"id\" >= $1 AND \"id\" < $2"
        );
        assert_eq!(
            delete_where(&Standard, &t, &[range(true)], None)
                .unwrap()
                .sql,
            "DELETE FROM \"public\".\"orders\" WHERE \"id\" >= $1 AND \"id\" <= $2"
        );
        assert!(delete_where(&Standard, &t, &[], None).is_err());
    }

    #[test]
    fn manifest_predicate_is_the_only_raw_sql() {
        let (t, _) = orders();
        let st = delete_where(
            &Standard,
            &t,
            &[Term::ManifestPredicate],
            Some("region = 'eu'"),
        )
        .unwrap();
        assert_eq!(
            st.sql,
            "DELETE FROM \"public\".\"orders\" WHERE (region = 'eu')"
        );
        let err = delete_where(&Standard, &t, &[Term::ManifestPredicate], None).unwrap_err();
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
                PG,
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
            PG,
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
            PG,
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
                PG,
                selection(&t, &stg, &[], &KeyMatch::NotInStaging, &[]),
                None
            )
            .is_err()
        );
        assert_eq!(
            insert_from(PG, &t, &stg, &s.names()),
            "INSERT INTO \"public\".\"orders\" (\"id\", \"up\"\"dated\") SELECT \"id\", \"up\"\"dated\" FROM \"public\".\"__dpone_stg_r1\""
        );
        assert_eq!(
            PG.truncate(&PG.table_ref(&t)),
            "TRUNCATE TABLE \"public\".\"orders\""
        );
        assert_eq!(
            swap(PG, &t, &stg),
            [
                "DROP TABLE IF EXISTS \"public\".\"orders\"".to_string(),
                "ALTER TABLE \"public\".\"__dpone_stg_r1\" RENAME TO \"orders\"".to_string()
            ]
        );
        assert!(
            PG.create_table(&stg, &s, &[], NewTable::Scratch)
                .starts_with("CREATE UNLOGGED TABLE \"public\".\"__dpone_stg_r1\"")
        );
        assert_eq!(
            create_like(PG, &stg, &t, &s),
            "CREATE TABLE \"public\".\"__dpone_stg_r1\" (LIKE \"public\".\"orders\" INCLUDING ALL)"
        );
        assert_eq!(
            key_checks(PG, &stg, &["id".into()], &[], None)
                .unwrap()
                .0
                .sql,
            "SELECT CAST(COALESCE(SUM(\"__dpone_key_rows\"), 0) AS bigint), \
             CAST(COALESCE(SUM(CASE WHEN \"id\" IS NULL THEN \"__dpone_key_rows\" ELSE 0 END), 0) AS bigint), \
             CAST(COALESCE(SUM(CASE WHEN \"__dpone_key_rows\" > 1 THEN 1 ELSE 0 END), 0) AS bigint) \
             FROM (SELECT \"id\", COUNT(*) AS \"__dpone_key_rows\" FROM \"public\".\"__dpone_stg_r1\" GROUP BY \"id\") AS g"
        );
        let e = key_checks(PG, &stg, &["id".into(), KEY_ROWS.into()], &[], None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sink.strategy.unique_key"), "{e}");
    }

    /// Without `CREATE TABLE ... LIKE`, a publishable staging table is the target's
    /// definition under another name; a column named like a DDL keyword keeps its name.
    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_publishable_staging_copies_the_target_definition_exactly() {
        let t = TableName {
            schema: None,
            name: "orders".into(),
        };
        let stg = t.sibling("stg".into());
        let mut s = orders().1;
        s.columns[1].name = "x IF NOT EXISTS y".into();
        assert_eq!(
            create_like(SQLITE, &stg, &t, &s),
            "CREATE TABLE \"stg\" (\"id\" BIGINT NOT NULL, \"x IF NOT EXISTS y\" TIMESTAMPTZ, PRIMARY KEY (\"id\"))"
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
                SQLITE,
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
                SQLITE,
                selection(&t, &stg, &key, &KeyMatch::NotInStaging, &[]),
                None
            )
            .unwrap()
            .sql,
            "DELETE FROM \"orders\" WHERE NOT EXISTS (SELECT 1 FROM \"stg\" AS s WHERE s.\"a\" = \"orders\".\"a\" AND s.\"b\" = \"orders\".\"b\")"
        );
        assert_eq!(
            SQLITE.truncate(&SQLITE.table_ref(&t)),
            "DELETE FROM \"orders\""
        );
    }

    #[test]
    fn statements_past_the_parameter_limit_are_refused() {
        let (t, _) = orders();
        let many = Term::InList(InTerm {
            column: "id".into(),
            values: (1..=4).map(Value::Int).collect(),
        });
        let err = delete_where(&Standard, &t, &[many], None).unwrap_err();
        assert!(err.message.contains("more than 3 parameters"), "{err}");
    }

    #[cfg(feature = "clickhouse")]
    #[test]
    fn clickhouse_quotes_its_way_writes_literals_and_matches_keys_with_in() {
        use crate::connectors::clickhouse::dialect::ClickhouseDialect;
        let ch = &ClickhouseDialect { datetime64: false };
        let t = TableName {
            schema: Some("db".into()),
            name: "or\\ders\"x".into(),
        };
        let stg = t.sibling("stg".into());
        let id = ["id".into()];
        let note = Term::Compare(CompareTerm {
            column: "note".into(),
            op: Comparison::Eq,
            value: Value::Text("it's -- $1 /* */".into()),
        });
        let st = delete_rows(
            ch,
            selection(
                &t,
                &stg,
                &id,
                &KeyMatch::NotInStaging,
                std::slice::from_ref(&note),
            ),
            Some("x = '$1' -- $2"),
        )
        .unwrap();
        assert_eq!(
            st.sql,
            "DELETE FROM \"db\".\"or\\\\ders\\\"x\" WHERE NOT ((\"id\") IN (SELECT \"id\" FROM \"db\".\"stg\")) \
             AND \"note\" = 'it\\'s -- $1 /* */'"
        );
        let with_predicate = delete_rows(
            ch,
            selection(
                &t,
                &stg,
                &id,
                &KeyMatch::InStaging,
                &[Term::ManifestPredicate],
            ),
            Some("x = '$1' -- $2"),
        )
        .unwrap();
        assert!(
            with_predicate.sql.ends_with("AND (x = '$1' -- $2)"),
            "the manifest predicate passes untouched: {}",
            with_predicate.sql
        );
        let bad = Term::Compare(CompareTerm {
            column: "amount".into(),
            op: Comparison::Eq,
            value: Value::Decimal("1); DROP TABLE t; --".into()),
        });
        assert!(delete_where(ch, &t, &[bad], None).is_err());
    }
}
