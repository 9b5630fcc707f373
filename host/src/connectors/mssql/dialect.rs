//! SQL Server's T-SQL: `[x]` names, `@Pn` parameters, `OFFSET .. FETCH` limits,
//! `IF OBJECT_ID(..) IS NULL` creates, `sp_rename` swaps, `INTERSECT` as the NULL-safe
//! comparison, `COUNT_BIG`, long in-lists through one `OPENJSON` parameter, and
//! `rowversion` row versions.
//!
//! Finalization primitives stay `DELETE` + `INSERT ... SELECT` and `UPDATE` rather than
//! `MERGE`: each is one statement of the sink's transaction already, their row counts are
//! exact, and `MERGE` adds known concurrency pitfalls (it needs `HOLDLOCK` to be safe) for
//! nothing the transaction does not give. The state store's upsert is the one `MERGE`.

use super::types::{native_type, parse_row_version};
use crate::connectors::dialect::{NewTable, SqlDialect, standard_create_table};
use crate::connectors::{Statement, TableName};
use crate::error::Result;
use crate::model::{Column, DataType, Schema, Value};

/// A T-SQL Unicode string literal: `N'...'` with `'` doubled, the only escape T-SQL has.
pub fn nstring(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

#[derive(Debug, Clone, Default)]
pub struct MssqlDialect {
    /// The source table's `rowversion` column (`row_version_column` in the manifest).
    pub row_version_column: Option<String>,
}

impl SqlDialect for MssqlDialect {
    /// `[...]` with `]` doubled.
    fn quote_ident(&self, name: &str) -> String {
        format!("[{}]", name.replace(']', "]]"))
    }

    fn placeholder(&self, n: usize, _value: &Value) -> Result<String> {
        Ok(format!("@P{n}"))
    }

    fn max_params(&self) -> usize {
        // The server takes 2,100 parameters in one request.
        2_100
    }

    /// Timestamps are read at microsecond precision, but `datetime2(7)` and `datetime`
    /// columns hold finer fractions: a bound read back from a column (a cursor's maximum)
    /// is the column's value cut to microseconds. `> v` and `<= v` compare against
    /// `v + 900 ns`, so every value that reads as `v` counts as `v`: a cursor neither
    /// re-reads nor skips its boundary rows.
    fn compare_bound(&self, op: &str, param: String, value: &Value) -> String {
        let wide = match value {
            Value::Timestamp(_) => "datetime2(7)",
            Value::TimestampTz(_) => "datetimeoffset(7)",
            _ => return param,
        };
        match op {
            ">" | "<=" => format!("DATEADD(NANOSECOND, 900, CAST({param} AS {wide}))"),
            _ => param,
        }
    }

    fn tables_with_prefix(&self, near: &TableName, prefix: &str) -> Statement {
        let schema = near.schema.clone().map_or(Value::Null, Value::Text);
        Statement {
            sql: "SELECT t.name FROM sys.tables AS t \
                  WHERE t.schema_id = SCHEMA_ID(COALESCE(@P1, SCHEMA_NAME())) \
                  AND LEFT(t.name, LEN(@P2)) = @P2"
                .into(),
            params: vec![schema, Value::Text(prefix.into())],
        }
    }

    fn max_identifier_bytes(&self) -> usize {
        // sysname is nvarchar(128): 128 characters, so 128 bytes of ASCII and never fewer
        // characters than that.
        128
    }

    fn native_type(&self, t: &DataType) -> String {
        native_type(t)
    }

    /// `CREATE SCHEMA` must be alone in its batch, hence the `EXEC`.
    fn create_namespace(&self, quoted: &str) -> Option<String> {
        Some(format!(
            "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE QUOTENAME(name) = {}) EXEC({})",
            nstring(quoted),
            nstring(&format!("CREATE SCHEMA {quoted}"))
        ))
    }

    /// Key columns get bounded types: an index key holds at most 900 bytes, so text keys
    /// are `nvarchar(450)` and byte keys `varbinary(900)` (a longer value is refused by the
    /// server when loaded, never cut).
    fn column_def(&self, column: &Column, not_null: bool, in_key: bool) -> String {
        let t = match &column.data_type {
            DataType::Text | DataType::Json if in_key => "nvarchar(450)".to_string(),
            DataType::Bytes if in_key => "varbinary(900)".to_string(),
            other => self.native_type(other),
        };
        let null = if not_null { "NOT NULL" } else { "NULL" };
        format!("{} {t} {null}", self.quote_ident(&column.name))
    }

    /// Needs an `ORDER BY`: an unordered limit orders by nothing (`(SELECT NULL)`).
    fn limit(&self, n: u64, ordered: bool) -> String {
        let order = if ordered {
            ""
        } else {
            " ORDER BY (SELECT NULL)"
        };
        format!("{order} OFFSET 0 ROWS FETCH NEXT {n} ROWS ONLY")
    }

    fn count_all(&self) -> &'static str {
        "COUNT_BIG(*)"
    }

    /// `[c] IN (SELECT [value] FROM OPENJSON(@Pn))`: one parameter for any number of
    /// values (SQL Server 2016 and later); the server converts each text to the column's
    /// type.
    fn in_json_array(&self, quoted: &str, param: &str) -> Option<String> {
        Some(format!(
            "{quoted} IN (SELECT [value] FROM OPENJSON({param}))"
        ))
    }

    /// `sp_rename` takes part in the open transaction, like every DDL statement here.
    fn rename_table(&self, table: &TableName, to: &str) -> String {
        format!(
            "EXEC sp_rename {}, {}, N'OBJECT'",
            nstring(&self.table_ref(table)),
            nstring(to)
        )
    }

    /// `NOT EXISTS (SELECT a INTERSECT SELECT b)`: set operators treat NULLs as equal, and
    /// it runs on every version (`IS DISTINCT FROM` needs SQL Server 2022).
    fn null_safe_differs(&self, a: &str, b: &str) -> String {
        format!("NOT EXISTS (SELECT {a} INTERSECT SELECT {b})")
    }

    fn truncate(&self, table: &str) -> String {
        // Transactional on SQL Server: rolled back with the rest.
        format!("TRUNCATE TABLE {table}")
    }

    fn row_version(&self, position: &str) -> Result<(String, Value)> {
        let column = self.row_version_column.as_deref().ok_or_else(|| {
            crate::Error::config(
                "source.row_version_column",
                "row-version scans on SQL Server read the table's rowversion column: name it",
            )
        })?;
        let version = parse_row_version(position)?;
        Ok((
            self.quote_ident(column),
            Value::Bytes(version.to_be_bytes().to_vec()),
        ))
    }

    /// `MERGE .. WITH (HOLDLOCK)`: the key range stays locked from the match to the
    /// insert, so two sessions upserting one key cannot both insert it.
    fn upsert(
        &self,
        table: &TableName,
        columns: &[&str],
        values: &[String],
        key: &[&str],
        update: &[&str],
    ) -> String {
        let q = |c: &&str| self.quote_ident(c);
        let source: Vec<String> = columns
            .iter()
            .zip(values)
            .map(|(c, v)| format!("{v} AS {}", q(c)))
            .collect();
        let on: Vec<String> = key
            .iter()
            .map(|k| format!("t.{k} = s.{k}", k = q(k)))
            .collect();
        let matched = if update.is_empty() {
            String::new()
        } else {
            let sets: Vec<String> = update
                .iter()
                .map(|c| format!("t.{c} = s.{c}", c = q(c)))
                .collect();
            format!(" WHEN MATCHED THEN UPDATE SET {}", sets.join(", "))
        };
        let names: Vec<String> = columns.iter().map(q).collect();
        let from_source: Vec<String> = names.iter().map(|c| format!("s.{c}")).collect();
        format!(
            "MERGE {} WITH (HOLDLOCK) AS t USING (SELECT {}) AS s ON {}{matched} \
             WHEN NOT MATCHED THEN INSERT ({}) VALUES ({});",
            self.table_ref(table),
            source.join(", "),
            on.join(" AND "),
            names.join(", "),
            from_source.join(", ")
        )
    }

    /// The first row by `order` read with `UPDLOCK, READPAST` (rows other sessions hold
    /// are skipped) and updated through the CTE, `OUTPUT` returning its `order` value.
    fn update_first(
        &self,
        table: &TableName,
        set: &str,
        _scope: &str,
        pick: &str,
        order: &str,
    ) -> String {
        let o = self.quote_ident(order);
        format!(
            "WITH next AS (SELECT TOP (1) * FROM {} WITH (UPDLOCK, READPAST, ROWLOCK) \
             WHERE {pick} ORDER BY {o}) UPDATE next SET {set} OUTPUT inserted.{o}",
            self.table_ref(table)
        )
    }

    /// `IF OBJECT_ID(N'..', N'U') IS NULL CREATE TABLE ..` for a missing target.
    fn create_table(
        &self,
        table: &TableName,
        schema: &Schema,
        key: &[String],
        role: NewTable,
    ) -> String {
        if role != NewTable::Target {
            return standard_create_table(self, table, schema, key, role);
        }
        let create = standard_create_table(self, table, schema, key, NewTable::TargetCopy);
        format!(
            "IF OBJECT_ID({}, N'U') IS NULL {create}",
            nstring(&self.table_ref(table))
        )
    }
}

#[cfg(test)]
mod tests {
    //! Every statement the connector renders, as text and parsed by `sqlparser`'s MS SQL
    //! dialect: no SQL Server runs here, so a statement that does not parse fails.

    use super::*;
    use crate::connectors::dialect::KeyMatch;
    use crate::connectors::mssql::assert_t_sql;
    use crate::connectors::render::{self, NewRows, RowSelection};
    use crate::model::{
        CompareTerm, Comparison, CursorBound, DecimalSpec, InTerm, RangeTerm, RowVersionBound,
        ScanBounds, Term,
    };

    const D: MssqlDialect = MssqlDialect {
        row_version_column: None,
    };

    fn orders() -> (TableName, TableName, Schema) {
        let col = |n: &str, t, nullable| Column {
            name: n.into(),
            data_type: t,
            nullable,
        };
        let target = TableName {
            schema: Some("dbo".into()),
            name: "or]ders".into(),
        };
        let staging = target.sibling("__dpone_stg_r1_1".into());
        let schema = Schema {
            columns: vec![
                col("id", DataType::Int64, false),
                col("code", DataType::Text, true),
                col(
                    "amount",
                    DataType::Decimal(Some(DecimalSpec {
                        precision: 12,
                        scale: 2,
                    })),
                    true,
                ),
                col("updated_at", DataType::Timestamp, true),
                col("payload", DataType::Json, true),
                col("row_hash", DataType::Text, true),
                col("is_current", DataType::Boolean, true),
            ],
            primary_key: vec!["id".into(), "code".into()],
        };
        (target, staging, schema)
    }

    #[test]
    fn names_parameters_and_limits() {
        assert_eq!(D.quote_ident("a]b"), "[a]]b]");
        assert_eq!(D.placeholder(3, &Value::Int(1)).unwrap(), "@P3");
        assert_eq!(nstring("it's"), "N'it''s'");
        let (t, _, s) = orders();
        let bounds = ScanBounds {
            cursor: Some(CursorBound {
                column: "updated_at".into(),
                after: Some(Value::Timestamp(5)),
                up_to: Some(Value::Timestamp(9)),
            }),
            filter: vec![Term::Compare(CompareTerm {
                column: "code".into(),
                op: Comparison::Ne,
                value: Value::Text("x'; DROP TABLE t; --".into()),
            })],
            limit: Some(100),
            row_versions: None,
            since: None,
        };
        let d: &dyn SqlDialect = &D;
        let st = render::select(d, &t, &s, &bounds, None, &|n, v| d.placeholder(n, v)).unwrap();
        assert_eq!(
            st.sql,
            "SELECT [id], [code], [amount], [updated_at], [payload], [row_hash], [is_current] FROM [dbo].[or]]ders] \
             WHERE [updated_at] > DATEADD(NANOSECOND, 900, CAST(@P1 AS datetime2(7))) \
             AND [updated_at] <= DATEADD(NANOSECOND, 900, CAST(@P2 AS datetime2(7))) AND [code] <> @P3 \
             ORDER BY [updated_at] OFFSET 0 ROWS FETCH NEXT 100 ROWS ONLY"
        );
        assert!(!st.sql.contains("DROP"));
        assert_t_sql(&st.sql);
        let unordered = ScanBounds {
            cursor: None,
            ..bounds
        };
        let count = render::aggregate(d, &t, &s, &unordered, None, d.count_all()).unwrap();
        assert!(
            count.sql.ends_with(
                "ORDER BY (SELECT NULL) OFFSET 0 ROWS FETCH NEXT 100 ROWS ONLY) AS scan"
            ),
            "{}",
            count.sql
        );
        assert!(count.sql.starts_with("SELECT COUNT_BIG(*) FROM ("));
        assert_t_sql(&count.sql);
    }

    /// An in-list past the 2,100-parameter limit stays one parameter: a JSON array the
    /// server expands with OPENJSON.
    #[test]
    fn long_in_lists_bind_one_json_array() {
        let (t, _, _) = orders();
        let values: Vec<Value> = (0..5_000).map(Value::Int).collect();
        let d: &dyn SqlDialect = &D;
        let st = render::delete_where(
            d,
            &t,
            &[Term::InList(InTerm {
                column: "id".into(),
                values,
            })],
            None,
        )
        .unwrap();
        assert_eq!(
            st.sql,
            "DELETE FROM [dbo].[or]]ders] WHERE [id] IN (SELECT [value] FROM OPENJSON(@P1))"
        );
        assert_eq!(st.params.len(), 1);
        let Value::Text(array) = &st.params[0] else {
            panic!("{:?}", st.params[0])
        };
        assert!(array.starts_with("[\"0\",\"1\","), "{array}");
        assert_t_sql(&st.sql);
        let dates: Vec<Value> = (0..1_001).map(Value::TimestampTz).collect();
        let st = render::delete_where(
            d,
            &t,
            &[Term::InList(InTerm {
                column: "updated_at".into(),
                values: dates,
            })],
            None,
        )
        .unwrap();
        let Value::Text(array) = &st.params[0] else {
            panic!()
        };
        assert!(
            array.starts_with("[\"1970-01-01 00:00:00.000000+00:00\""),
            "{array}"
        );
        let bytes: Vec<Value> = (0..1_001).map(|i| Value::Bytes(vec![i as u8])).collect();
        let err = render::delete_where(
            d,
            &t,
            &[Term::InList(InTerm {
                column: "id".into(),
                values: bytes,
            })],
            None,
        );
        assert!(err.is_ok(), "1,001 byte values still fit as parameters");
        let bytes: Vec<Value> = (0..2_101).map(|i| Value::Bytes(vec![i as u8])).collect();
        let err = render::delete_where(
            d,
            &t,
            &[Term::InList(InTerm {
                column: "id".into(),
                values: bytes,
            })],
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("more than 2100 parameters"), "{err}");
    }

    #[test]
    fn finalize_statements_render_and_parse() {
        let (t, stg, s) = orders();
        let d: &dyn SqlDialect = &D;
        let key: Vec<String> = s.primary_key.clone();
        let current = Term::Compare(CompareTerm {
            column: "is_current".into(),
            op: Comparison::Eq,
            value: Value::Boolean(true),
        });
        let window = Term::Range(RangeTerm {
            column: "updated_at".into(),
            low: Value::Timestamp(1),
            high: Value::Timestamp(2),
            high_inclusive: false,
        });
        let select = |m| RowSelection {
            target: &t,
            staging: &stg,
            key: &key,
            key_match: m,
            filter: std::slice::from_ref(&current),
        };
        let differing = KeyMatch::InStagingDiffering("row_hash".into());
        let mut all: Vec<String> = Vec::new();
        for m in [&KeyMatch::InStaging, &KeyMatch::NotInStaging, &differing] {
            all.push(
                render::delete_rows(d, select(m), Some("[code] <> N'z'"))
                    .unwrap()
                    .sql,
            );
        }
        let expire = render::update_rows(
            d,
            select(&differing),
            &[
                ("is_current".into(), Value::Boolean(false)),
                ("updated_at".into(), Value::Timestamp(9)),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            expire.sql,
            "UPDATE [dbo].[or]]ders] SET [is_current] = @P2, [updated_at] = @P3 WHERE EXISTS \
             (SELECT 1 FROM [dbo].[__dpone_stg_r1_1] AS s WHERE s.[id] = [dbo].[or]]ders].[id] \
             AND s.[code] = [dbo].[or]]ders].[code] AND NOT EXISTS (SELECT s.[row_hash] INTERSECT \
             SELECT [dbo].[or]]ders].[row_hash])) AND [is_current] = @P1"
        );
        all.push(expire.sql);
        all.push(
            render::insert_new_rows(
                d,
                NewRows {
                    target: &t,
                    staging: &stg,
                    columns: &s.names(),
                    key: &key,
                    filter: std::slice::from_ref(&current),
                    extra: &[],
                },
                None,
            )
            .unwrap()
            .sql,
        );
        all.push(
            render::delete_where(d, &t, &[window, Term::IsNull("code".into())], None)
                .unwrap()
                .sql,
        );
        all.push(render::insert_from(d, &t, &stg, &s.names()));
        all.extend(render::swap(d, &t, &stg));
        all.push(d.truncate(&d.table_ref(&t)));
        let (counts, sample) = render::key_checks(d, &stg, &key, &[current], None).unwrap();
        all.push(counts.sql);
        all.push(sample.sql);
        all.push(render::distinct_values(d, &stg, "code", 10));
        all.push(render::count(d, &stg));
        all.push(render::drop_table(d, &stg));
        all.push(d.tables_with_prefix(&t, "__dpone_stg_r1_").sql);
        for sql in &all {
            assert_t_sql(sql);
        }
        assert_eq!(
            render::swap(d, &t, &stg)[1],
            "EXEC sp_rename N'[dbo].[__dpone_stg_r1_1]', N'or]ders', N'OBJECT'"
        );
    }

    #[test]
    fn tables_are_created_with_bounded_keys_only_when_missing() {
        let (t, stg, s) = orders();
        let d: &dyn SqlDialect = &D;
        let key = s.primary_key.clone();
        let target = d.create_table(&t, &s, &key, NewTable::Target);
        assert_eq!(
            target,
            "IF OBJECT_ID(N'[dbo].[or]]ders]', N'U') IS NULL CREATE TABLE [dbo].[or]]ders] \
             ([id] bigint NOT NULL, [code] nvarchar(450) NOT NULL, [amount] decimal(12,2) NULL, \
             [updated_at] datetime2(7) NULL, [payload] nvarchar(max) NULL, [row_hash] nvarchar(max) NULL, \
             [is_current] bit NULL, PRIMARY KEY ([id], [code]))"
        );
        let scratch = d.create_table(&stg, &s, &key, NewTable::Scratch);
        assert!(scratch.contains("[code] nvarchar(max) NULL"), "{scratch}");
        assert!(!scratch.contains("PRIMARY KEY"), "{scratch}");
        let copy = render::create_like(d, &stg, &t, &s);
        assert!(copy.starts_with("CREATE TABLE [dbo].[__dpone_stg_r1_1] ([id] bigint NOT NULL"));
        let namespace = render::create_namespace(d, &t).unwrap();
        assert_eq!(
            namespace,
            "IF NOT EXISTS (SELECT 1 FROM sys.schemas WHERE QUOTENAME(name) = N'[dbo]') EXEC(N'CREATE SCHEMA [dbo]')"
        );
        for sql in [target, scratch, copy, namespace] {
            assert_t_sql(&sql);
        }
    }

    #[test]
    fn bookkeeping_statements_render_and_parse() {
        let d: &dyn SqlDialect = &D;
        let entries = d.bookkeeping_table("state_entries");
        assert_eq!(d.table_ref(&entries), "[dpone].[state_entries]");
        let upsert = d.upsert(
            &entries,
            &["pipeline", "entry_key", "entry_value"],
            &crate::state::numbered(1..=3),
            &["pipeline", "entry_key"],
            &["entry_value"],
        );
        let upsert = render::with_placeholders(
            d,
            Statement {
                sql: upsert,
                params: vec![
                    Value::Text("p".into()),
                    Value::Text("k".into()),
                    Value::Text("v".into()),
                ],
            },
        )
        .unwrap();
        assert_eq!(
            upsert.sql,
            "MERGE [dpone].[state_entries] WITH (HOLDLOCK) AS t USING (SELECT @P1 AS [pipeline], @P2 AS [entry_key], \
             @P3 AS [entry_value]) AS s ON t.[pipeline] = s.[pipeline] AND t.[entry_key] = s.[entry_key] \
             WHEN MATCHED THEN UPDATE SET t.[entry_value] = s.[entry_value] WHEN NOT MATCHED THEN \
             INSERT ([pipeline], [entry_key], [entry_value]) VALUES (s.[pipeline], s.[entry_key], s.[entry_value]);"
        );
        let missing = render::with_placeholders(d, Statement::new("SELECT $1"));
        assert!(
            missing.is_err(),
            "a placeholder without its parameter is refused"
        );
        let insert_only = d.upsert(&entries, &["pipeline"], &["@P1".into()], &["pipeline"], &[]);
        assert!(!insert_only.contains("WHEN MATCHED"), "{insert_only}");
        let claim = d.update_first(
            &d.bookkeeping_table("backfill_chunks"),
            "status = 'running', attempts = attempts + 1",
            "pipeline = @P1",
            "pipeline = @P1 AND status = 'pending'",
            "chunk_index",
        );
        assert_eq!(
            claim,
            "WITH next AS (SELECT TOP (1) * FROM [dpone].[backfill_chunks] WITH (UPDLOCK, READPAST, ROWLOCK) \
             WHERE pipeline = @P1 AND status = 'pending' ORDER BY [chunk_index]) UPDATE next SET \
             status = 'running', attempts = attempts + 1 OUTPUT inserted.[chunk_index]"
        );
        let state = d.create_table(
            &entries,
            &crate::state::bookkeeping_schema(&[
                ("pipeline", DataType::Text, false),
                ("entry_value", DataType::Text, false),
            ]),
            &["pipeline".into()],
            NewTable::Target,
        );
        // sqlparser takes table hints after an alias (the SELECT order), MERGE has them
        // before it: the hint is checked as text above, the rest parsed without it.
        for sql in [upsert.sql, insert_only, claim, state] {
            assert_t_sql(&sql.replace("WITH (HOLDLOCK) ", ""));
        }
    }

    #[test]
    fn row_versions_compare_rowversion_bytes_and_need_the_column() {
        let (t, _, s) = orders();
        let bounds = ScanBounds {
            cursor: None,
            filter: vec![],
            limit: None,
            row_versions: Some(RowVersionBound {
                after: Some("mssqlrv:7".into()),
                up_to: "mssqlrv:9".into(),
            }),
            since: None,
        };
        let d: &dyn SqlDialect = &D;
        let err =
            render::select(d, &t, &s, &bounds, None, &|n, v| d.placeholder(n, v)).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("source.row_version_column"));
        let with = MssqlDialect {
            row_version_column: Some("rv".into()),
        };
        let d: &dyn SqlDialect = &with;
        let st = render::select(d, &t, &s, &bounds, None, &|n, v| d.placeholder(n, v)).unwrap();
        assert!(
            st.sql.ends_with("WHERE [rv] > @P1 AND [rv] <= @P2"),
            "{}",
            st.sql
        );
        assert_eq!(
            st.params,
            [
                Value::Bytes(7u64.to_be_bytes().to_vec()),
                Value::Bytes(9u64.to_be_bytes().to_vec())
            ]
        );
        assert_t_sql(&st.sql);
    }
}
