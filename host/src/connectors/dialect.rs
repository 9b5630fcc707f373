//! What differs between SQL dialects: one [`SqlDialect`] per SQL connector, in its
//! `dialect.rs`. [`super::render`] builds every statement from these answers, so no shared
//! code asks which database it talks to.
//!
//! The defaults are standard SQL as PostgreSQL and SQLite speak it: `"x"` identifiers,
//! `$n` parameters, `LIMIT n`, correlated `EXISTS` subqueries, transactional DDL.

use std::fmt::Debug;

use super::{Statement, TableName};
use crate::error::{Error, Kind, Result};
use crate::model::{Column, DataType, Schema, Value};

/// What a `CREATE TABLE` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewTable {
    /// The target, when missing: its key, NOT NULL columns, `IF NOT EXISTS`.
    Target,
    /// A publishable staging table shaped like the target (key, NOT NULL), where the
    /// dialect has no `CREATE TABLE ... LIKE`; it must not exist yet.
    TargetCopy,
    /// A scratch staging table: no constraints (key checks must see NULLs and
    /// duplicates), the dialect's cheap table kind; it must not exist yet.
    Scratch,
}

/// How a target row's key relates to staging (the WIT `key-match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMatch {
    InStaging,
    InStagingDiffering(String),
    NotInStaging,
}

impl KeyMatch {
    /// The column compared besides the key, if any.
    pub fn compared(&self) -> Option<&str> {
        match self {
            KeyMatch::InStagingDiffering(column) => Some(column),
            KeyMatch::InStaging | KeyMatch::NotInStaging => None,
        }
    }
}

/// One SQL dialect. Contract: every identifier goes through [`Self::quote_ident`], every
/// value through [`Self::placeholder`] (a bound parameter, or on servers without them the
/// dialect's audited literal), so no rendered statement carries text a value or a name
/// could break out of.
pub trait SqlDialect: Send + Sync + Debug {
    /// Quotes an identifier: `"` doubled inside `"..."` by default.
    fn quote_ident(&self, name: &str) -> String {
        format!("\"{}\"", name.replace('"', "\"\""))
    }

    /// What parameter `n` (1-based), holding `value`, is written as: `$n` by default.
    /// Fails only where the dialect renders the value itself and it is not well-formed.
    fn placeholder(&self, n: usize, _value: &Value) -> Result<String> {
        Ok(format!("${n}"))
    }

    /// The right side of `column <op> value` when the value is bound as `param`: the
    /// parameter itself by default. (SQL Server widens microsecond timestamps past the
    /// 100 ns its columns hold, see its dialect.)
    fn compare_bound(&self, _op: &str, param: String, _value: &Value) -> String {
        param
    }

    /// The most parameters one statement may bind; a statement needing more is refused
    /// with an error instead of failing at the server.
    fn max_params(&self) -> usize;

    /// The names of the tables next to `near` (in its schema or database) whose names
    /// start with `prefix`: one text column. Finds the staging a killed run left.
    fn tables_with_prefix(&self, near: &TableName, prefix: &str) -> Statement {
        let schema = near.schema.clone().map_or(Value::Null, Value::Text);
        Statement {
            sql: "SELECT table_name::text FROM information_schema.tables \
                  WHERE table_schema = coalesce($1, current_schema()) AND starts_with(table_name, $2)"
                .into(),
            params: vec![schema, Value::Text(prefix.into())],
        }
    }

    /// The longest column name, in bytes, a table created here may have. A longer one is
    /// refused before any DDL: PostgreSQL would cut it silently (two long names could
    /// become one column), and no name a strategy passes grows a statement without bound.
    fn max_identifier_bytes(&self) -> usize {
        1024
    }

    /// The DDL type of a portable type.
    fn native_type(&self, t: &DataType) -> String;

    /// `CREATE <namespace> IF NOT EXISTS <quoted>` for a table's schema (a database on
    /// ClickHouse); `None` where tables live in one namespace.
    fn create_namespace(&self, _quoted: &str) -> Option<String> {
        None
    }

    /// The table dpone keeps its own bookkeeping in (state, run history, backfill ledger):
    /// `dpone.<name>` where the database has namespaces, else `dpone_<name>`.
    fn bookkeeping_table(&self, name: &str) -> TableName {
        if self.create_namespace("dpone").is_some() {
            TableName {
                schema: Some("dpone".into()),
                name: name.into(),
            }
        } else {
            TableName {
                schema: None,
                name: format!("dpone_{name}"),
            }
        }
    }

    /// What a `SELECT` of rows to claim ends with so concurrent claimers skip each other's
    /// rows (`FOR UPDATE SKIP LOCKED`); nothing where writers are serialized anyway.
    fn skip_locked(&self) -> &'static str {
        ""
    }

    /// Inserts one row (`values` are the expressions of `columns`), or where a row with
    /// the same `key` exists, sets its `update` columns to the new values (none: keeps it
    /// as it is). Atomic against a concurrent insert of the same key.
    fn upsert(
        &self,
        table: &TableName,
        columns: &[&str],
        values: &[String],
        key: &[&str],
        update: &[&str],
    ) -> String {
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|c| self.quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let action = if update.is_empty() {
            "DO NOTHING".to_string()
        } else {
            let sets: Vec<String> = update
                .iter()
                .map(|c| format!("{q} = excluded.{q}", q = self.quote_ident(c)))
                .collect();
            format!("DO UPDATE SET {}", sets.join(", "))
        };
        format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {action}",
            self.table_ref(table),
            list(columns),
            values.join(", "),
            list(key)
        )
    }

    /// Claims one row: among the rows matching `pick`, the first by `order` (skipping rows
    /// another session holds, where rows are locked) gets `set`; returns its `order`
    /// value, no row when none matched. `scope` is `pick`'s part that identifies the
    /// rows' group, for dialects that update the chosen row through the group.
    fn update_first(
        &self,
        table: &TableName,
        set: &str,
        scope: &str,
        pick: &str,
        order: &str,
    ) -> String {
        let t = self.table_ref(table);
        let o = self.quote_ident(order);
        format!(
            "UPDATE {t} SET {set} WHERE {scope} AND {o} = (SELECT {o} FROM {t} WHERE {pick} \
             ORDER BY {o}{}{}) RETURNING {o}",
            self.limit(1, true),
            self.skip_locked()
        )
    }

    /// A column definition of `CREATE TABLE`; `in_key`: the column is part of the primary
    /// key the table declares.
    fn column_def(&self, column: &Column, not_null: bool, _in_key: bool) -> String {
        let t = self.native_type(&column.data_type);
        let q = self.quote_ident(&column.name);
        if not_null {
            format!("{q} {t} NOT NULL")
        } else {
            format!("{q} {t}")
        }
    }

    /// Whether `CREATE TABLE` declares the key as a `PRIMARY KEY` constraint.
    fn declares_primary_key(&self) -> bool {
        true
    }

    /// Words between `CREATE` and `TABLE` for a staging table (`UNLOGGED `: it is rebuilt,
    /// never recovered).
    fn staging_table_kind(&self) -> &'static str {
        ""
    }

    /// What follows the column list of `CREATE TABLE` (an engine clause).
    fn table_options(&self, _key: &[String], _staging: bool) -> String {
        String::new()
    }

    /// `CREATE TABLE staging` shaped like the existing `target` (columns, key and, where
    /// the dialect can copy them, indexes and defaults); `None`: from the target's schema.
    fn create_like(&self, _staging: &str, _target: &str) -> Option<String> {
        None
    }

    /// ` LIMIT n`, appended to a `SELECT`; `ordered`: the `SELECT` ends with an `ORDER BY`
    /// (SQL Server's `OFFSET .. FETCH` needs one).
    fn limit(&self, n: u64, _ordered: bool) -> String {
        format!(" LIMIT {n}")
    }

    /// The aggregate counting a table's rows, as a 64-bit integer.
    fn count_all(&self) -> &'static str {
        "COUNT(*)"
    }

    /// The condition that `quoted` is one of the values of a JSON array bound as the text
    /// parameter `param`: how an in-list longer than [`IN_LIST_PARAMS`] values stays one
    /// parameter where the dialect can expand an array server-side; `None`: one parameter
    /// per value, up to [`Self::max_params`].
    fn in_json_array(&self, _quoted: &str, _param: &str) -> Option<String> {
        None
    }

    /// Renames `table` to `to` (in its schema) inside the open transaction.
    fn rename_table(&self, table: &TableName, to: &str) -> String {
        format!(
            "ALTER TABLE {} RENAME TO {}",
            self.table_ref(table),
            self.quote_ident(to)
        )
    }

    /// The largest value of a quoted column, NULL over no rows.
    fn max_of(&self, quoted: &str) -> String {
        format!("MAX({quoted})")
    }

    /// `a` and `b` differ, NULL-safe: NULL differs from every value and equals NULL.
    fn null_safe_differs(&self, a: &str, b: &str) -> String {
        format!("{a} IS DISTINCT FROM {b}")
    }

    /// The condition on a row of `target` (a table reference) that holds when its key
    /// relates to `staging` as `m`. By default a correlated `[NOT] EXISTS (SELECT 1 FROM
    /// staging AS s WHERE s.k = target.k ...)`, correlated through the target's full name
    /// (SQLite cannot alias the table of a DELETE or UPDATE). Keys were checked to be
    /// non-NULL, so `=` is exact.
    fn key_match(&self, target: &str, staging: &str, key: &[String], m: &KeyMatch) -> String {
        let target = self.correlation_name(target);
        let mut on: Vec<String> = key
            .iter()
            .map(|k| format!("s.{q} = {target}.{q}", q = self.quote_ident(k)))
            .collect();
        if let KeyMatch::InStagingDiffering(column) = m {
            let q = self.quote_ident(column);
            on.push(self.null_safe_differs(&format!("s.{q}"), &format!("{target}.{q}")));
        }
        let not = if *m == KeyMatch::NotInStaging {
            "NOT "
        } else {
            ""
        };
        format!(
            "{not}EXISTS (SELECT 1 FROM {staging} AS s WHERE {})",
            on.join(" AND ")
        )
    }

    /// The condition on a staging row `s` that holds when no row of `target` has its key
    /// and satisfies every one of `filter` (rendered conditions on the target's columns).
    fn no_target_row(&self, target: &str, key: &[String], filter: &[String]) -> String {
        let name = self.correlation_name(target);
        let mut on: Vec<String> = key
            .iter()
            .map(|k| format!("{name}.{q} = s.{q}", q = self.quote_ident(k)))
            .collect();
        on.extend(filter.iter().cloned());
        format!(
            "NOT EXISTS (SELECT 1 FROM {target} WHERE {})",
            on.join(" AND ")
        )
    }

    /// How a column of the table `table_ref` (a rendered reference) is qualified in a
    /// correlated subquery: by the reference itself by default. (GoogleSQL reads a
    /// dataset-qualified path before a column as a field path, and takes the table's
    /// last name instead.)
    fn correlation_name<'a>(&self, table_ref: &'a str) -> &'a str {
        table_ref
    }

    /// `cond` as a condition that is false where it is NULL.
    fn holds(&self, cond: &str) -> String {
        format!("COALESCE(({cond}), FALSE)")
    }

    /// `then` where `cond` holds, else `otherwise`.
    fn choose(&self, cond: &str, then: &str, otherwise: &str) -> String {
        format!(
            "CASE WHEN {} THEN {then} ELSE {otherwise} END",
            self.holds(cond)
        )
    }

    /// The statement gathering planner statistics of `columns` (a column list) of a table,
    /// where the planner needs them before it would gather them itself; `None` by default.
    fn analyze(&self, _table: &str, _columns: &str) -> Option<String> {
        None
    }

    /// Empties a table inside the open transaction.
    fn truncate(&self, table: &str) -> String {
        format!("DELETE FROM {table}")
    }

    /// The expression of a row's version and the value a row-version position binds as,
    /// for the `row-versions` scan bound; `unsupported` where rows carry no version.
    fn row_version(&self, _position: &str) -> Result<(String, Value)> {
        Err(Error::new(
            Kind::Unsupported,
            "this source has no row versions (PostgreSQL has xmin; SQL Server reads a rowversion column: source.row_version_column)",
        ))
    }

    /// Refuses a scan bound this dialect cannot compare correctly (SQLite keeps decimals
    /// as text, which would compare as text).
    fn check_cursor(&self, _column: &str, _t: &DataType) -> Result<()> {
        Ok(())
    }

    /// `"schema"."table"` or `"table"`.
    fn table_ref(&self, table: &TableName) -> String {
        match &table.schema {
            Some(s) => format!("{}.{}", self.quote_ident(s), self.quote_ident(&table.name)),
            None => self.quote_ident(&table.name),
        }
    }

    /// `"a", "b", "c"`.
    fn column_list(&self, columns: &[String]) -> String {
        columns
            .iter()
            .map(|c| self.quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `CREATE TABLE` of `role` (see [`NewTable`]); `key` becomes a target's primary key.
    fn create_table(
        &self,
        table: &TableName,
        schema: &Schema,
        key: &[String],
        role: NewTable,
    ) -> String {
        standard_create_table(self, table, schema, key, role)
    }
}

/// In-lists longer than this bind one JSON array where the dialect can expand one
/// ([`SqlDialect::in_json_array`]): SQL Server takes at most 2,100 parameters a statement.
pub const IN_LIST_PARAMS: usize = 1000;

/// `CREATE [kind] TABLE [IF NOT EXISTS] t (columns, PRIMARY KEY (key)) options`: the
/// standard form of [`SqlDialect::create_table`], for dialects that only wrap it.
pub fn standard_create_table<D: SqlDialect + ?Sized>(
    d: &D,
    table: &TableName,
    schema: &Schema,
    key: &[String],
    role: NewTable,
) -> String {
    let scratch = role == NewTable::Scratch;
    let mut cols: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let in_key = !scratch && key.contains(&c.name);
            d.column_def(c, in_key || (!scratch && !c.nullable), in_key)
        })
        .collect();
    if !scratch && !key.is_empty() && d.declares_primary_key() {
        cols.push(format!("PRIMARY KEY ({})", d.column_list(key)));
    }
    let kind = if scratch { d.staging_table_kind() } else { "" };
    let if_not_exists = if role == NewTable::Target {
        "IF NOT EXISTS "
    } else {
        ""
    };
    format!(
        "CREATE {kind}TABLE {if_not_exists}{} ({}){}",
        d.table_ref(table),
        cols.join(", "),
        d.table_options(key, scratch)
    )
}
