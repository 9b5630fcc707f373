//! The benchmark tables: their columns, the server-side SQL that generates them, the change
//! the merge scenario applies, and the checksum that says whether a target holds the source.
//!
//! Every value is a pure function of the row number `g` and a version `v` (0 = as generated,
//! 1 = changed), so the same `--rows` gives the same bytes on every run and machine, and the
//! change can be undone by regenerating the original rows.

/// A generated column: a PostgreSQL type and an expression over `g` (bigint) and `{v}`.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    sql_type: String,
    expr: String,
}

impl Column {
    fn new(name: impl Into<String>, sql_type: impl Into<String>, expr: impl Into<String>) -> Self {
        Column {
            name: name.into(),
            sql_type: sql_type.into(),
            expr: expr.into(),
        }
    }
}

/// One benchmark table. Its first two columns are always `id` (the primary key, the merge
/// key) and `updated_at` (the merge cursor).
#[derive(Debug, Clone)]
pub struct Table {
    pub name: &'static str,
    columns: Vec<Column>,
}

/// Every CHANGE_EVERY-th row (20%) changes in the merge scenario...
const CHANGE_EVERY: u64 = 5;
/// ...and one new row per NEW_EVERY existing rows (5%) appears.
const NEW_EVERY: u64 = 20;

/// The common head of both tables. A changed row's `updated_at` lies 400 days later, past
/// every original one even at 10M rows (one second per row is 116 days).
fn key_columns() -> Vec<Column> {
    vec![
        Column::new("id", "bigint NOT NULL", "g"),
        Column::new(
            "updated_at",
            "timestamp NOT NULL",
            "timestamp '2024-01-01' + {v} * interval '400 days' + g * interval '1 second'",
        ),
    ]
}

impl Table {
    /// ~20 columns of mixed types, ~300 bytes a row, few NULLs.
    pub fn narrow() -> Self {
        let mut columns = key_columns();
        columns.extend([
            Column::new("customer_id", "integer", "((g * 7919) % 100000)::int"),
            Column::new("quantity", "smallint", "((g + {v}) % 100)::smallint"),
            Column::new(
                "amount",
                "numeric(12,2)",
                "round(((g * 104729) % 10000000) / 100.0 + {v} * 0.5, 2)",
            ),
            Column::new("price", "double precision", "(g * 1.37 + {v})::float8"),
            Column::new("ratio", "real", "((g % 1000) / 7.0)::real"),
            Column::new("name", "text", "'customer ' || (g % 50000)"),
            Column::new(
                "status",
                "varchar(16)",
                "(ARRAY['pending','paid','shipped','delivered','refunded'])[1 + ((g + {v}) % 5)::int]",
            ),
            Column::new(
                "note",
                "text",
                "CASE WHEN g % 3 = 0 THEN NULL ELSE repeat(md5(g::text), (1 + g % 2)::int) END",
            ),
            Column::new("is_active", "boolean", "(g + {v}) % 2 = 0"),
            // From 1970, so ClickHouse's Date (1970 to 2149) holds it too.
            Column::new("birth_date", "date", "date '1970-01-01' + (g % 20000)::int"),
            Column::new(
                "created_at",
                "timestamptz",
                "timestamptz '2020-01-01 00:00:00+00' + g * interval '1 minute'",
            ),
            Column::new("ext_id", "uuid", "md5('ext-' || g)::uuid"),
            Column::new(
                "attributes",
                "jsonb",
                "jsonb_build_object('g', g, 'tier', g % 7, 'tags', \
                 jsonb_build_array('t' || g % 10, 'x'), 'rev', {v})",
            ),
            Column::new("payload", "bytea", payload("md5(g::text)")),
            Column::new("big_counter", "bigint", "g * 1000003 + {v}"),
            Column::new(
                "flags",
                "integer",
                "CASE WHEN g % 5 = 1 THEN NULL ELSE (g % 1000)::int END",
            ),
            Column::new(
                "country",
                "char(2)",
                "chr(65 + (g % 26)::int) || chr(65 + (g / 26 % 26)::int)",
            ),
            Column::new(
                "description",
                "text",
                "'item ' || g || ' ' || repeat('x', (g % 50)::int)",
            ),
        ]);
        Table {
            name: "narrow",
            columns,
        }
    }

    /// 120 columns: the two key columns and 118 sparse ones of rotating types, each set in
    /// one row out of ten (so ~90% of the cells are NULL).
    pub fn wide() -> Self {
        const SPARSE: usize = 118;
        let kinds: [(&str, &str); 14] = [
            ("integer", "((g * {j}) % 100000)::int"),
            ("bigint", "g * {j} + {v}"),
            (
                "numeric(12,2)",
                "round((g % 100000 + {j}) / 100.0 + {v}, 2)",
            ),
            ("text", "'w' || g || '-' || {j} || '-' || {v}"),
            ("boolean", "(g + {j} + {v}) % 3 = 0"),
            ("date", "date '2000-01-01' + ((g + {j}) % 9000)::int"),
            (
                "timestamp",
                "timestamp '2022-01-01' + (g + {j}) * interval '1 second'",
            ),
            (
                "timestamptz",
                "timestamptz '2022-01-01 00:00:00+00' + (g * {j}) * interval '1 millisecond'",
            ),
            ("double precision", "(g / ({j} + 0.5))::float8 + {v}"),
            ("uuid", "md5(g || '-' || {j})::uuid"),
            ("jsonb", "jsonb_build_object('g', g, 'c', {j}, 'rev', {v})"),
            ("bytea", &payload("md5(g || ':' || {j})")),
            ("smallint", "((g + {j}) % 30000)::smallint"),
            ("real", "((g % 997) / ({j} + 3.0))::real"),
        ];
        let mut columns = key_columns();
        for j in 1..=SPARSE {
            let (sql_type, expr) = kinds[(j - 1) % kinds.len()];
            let expr = expr.replace("{j}", &j.to_string());
            columns.push(Column::new(
                format!("c{j:03}"),
                sql_type,
                format!("CASE WHEN (g + {j}) % 10 = 0 THEN {expr} END"),
            ));
        }
        Table {
            name: "wide",
            columns,
        }
    }

    /// The records the REST scenario serves from the mock API: six columns a JSON API
    /// carries (numbers, text, ISO dates and timestamps, decimals as strings, some nulls).
    pub fn records() -> Self {
        let mut columns = key_columns();
        columns.extend([
            Column::new(
                "region",
                "text",
                "(ARRAY['north','south','east','west'])[1 + (g % 4)::int]",
            ),
            Column::new("day", "date", "date '2024-01-01' + (g % 365)::int"),
            Column::new(
                "amount",
                "numeric(18,4)",
                "round(((g * 104729) % 100000000) / 10000.0 + {v}, 4)",
            ),
            Column::new(
                "label",
                "text",
                "CASE WHEN g % 7 = 0 THEN NULL ELSE 'record ' || g END",
            ),
        ]);
        Table {
            name: "records",
            columns,
        }
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// `(name, PostgreSQL type)` of every column in order, the type as the DDL has it
    /// (`bigint NOT NULL`, `numeric(18,4)`).
    pub fn columns(&self) -> impl Iterator<Item = (&str, &str)> {
        self.columns
            .iter()
            .map(|c| (c.name.as_str(), c.sql_type.as_str()))
    }

    /// `"id", "updated_at", ...`
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The select list that writes the columns as CSV a ClickHouse table made by dpone
    /// reads: booleans as 0/1, timestamps with a time zone as UTC text, bytes as hex text
    /// (PostgreSQL's `\x...` reads as an escape in ClickHouse's CSV).
    pub fn clickhouse_csv_columns(&self) -> String {
        self.columns
            .iter()
            .map(|c| {
                let q = quote(&c.name);
                match base_type(&c.sql_type) {
                    "boolean" => format!("{q}::int AS {q}"),
                    "bytea" => format!("encode({q}, 'hex') AS {q}"),
                    "timestamptz" => {
                        format!("to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS {q}")
                    }
                    _ => q,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The source table's DDL, primary key included: also what the COPY pipe creates in the
    /// target, i.e. what `CREATE TABLE ... (LIKE source INCLUDING ALL)` would give (the
    /// source has nothing else to copy), which can not reach across databases.
    pub fn create_sql(&self, qualified: &str) -> String {
        let columns = self
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), c.sql_type))
            .collect::<Vec<_>>()
            .join(", ");
        format!("CREATE TABLE {qualified} ({columns}, PRIMARY KEY (\"id\"))")
    }

    /// Statements that fill an empty `qualified` with `rows` rows.
    pub fn fill_sql(&self, qualified: &str, rows: u64) -> String {
        self.insert_sql(qualified, 0, &format!("g BETWEEN 1 AND {rows}"), rows)
    }

    /// Statements that change 20% of the rows (all columns regenerated at version 1, so
    /// `updated_at` moves past every original value) and add 5% new ones.
    pub fn change_sql(&self, qualified: &str, rows: u64) -> String {
        let changed = format!("{} OR {}", self.changed_filter("g"), new_filter("g", rows));
        format!(
            "DELETE FROM {qualified} WHERE {}; {}",
            self.changed_filter("id"),
            self.insert_sql(qualified, 1, &changed, rows + new_rows(rows))
        )
    }

    /// Statements that undo `change_sql`.
    pub fn revert_sql(&self, qualified: &str, rows: u64) -> String {
        let changed = format!(
            "{} OR {}",
            self.changed_filter("id"),
            new_filter("id", rows)
        );
        let original = format!("{} AND g <= {rows}", self.changed_filter("g"));
        format!(
            "DELETE FROM {qualified} WHERE {changed}; {}",
            self.insert_sql(qualified, 0, &original, rows)
        )
    }

    /// The rows `change_sql` touched, for counting their COPY bytes.
    pub fn changed_rows_query(&self, qualified: &str, rows: u64) -> String {
        format!(
            "SELECT {} FROM {qualified} WHERE {} OR {}",
            self.column_list(),
            self.changed_filter("id"),
            new_filter("id", rows)
        )
    }

    /// One line, `<count> <md5>`, over the source's columns only (a contender may add
    /// columns of its own), each cast back to its source type so that a target that stores
    /// `uuid` as `varchar` or `real` as `double precision` compares by value. Run it with
    /// TimeZone UTC on both sides.
    pub fn checksum_sql(&self, qualified: &str) -> String {
        let fields = self
            .columns
            .iter()
            .map(|c| format!("{}::{}", quote(&c.name), base_type(&c.sql_type)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT count(*) || ' ' || coalesce(md5(string_agg(md5(ROW({fields})::text), '' \
             ORDER BY \"id\")), '-') FROM {qualified}"
        )
    }

    fn changed_filter(&self, column: &str) -> String {
        format!("{column} % {CHANGE_EVERY} = 0")
    }

    fn insert_sql(&self, qualified: &str, version: u8, filter: &str, last: u64) -> String {
        let exprs = self
            .columns
            .iter()
            .map(|c| c.expr.replace("{v}", &version.to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {qualified} ({}) SELECT {exprs} FROM generate_series(1::bigint, {last}) AS g WHERE {filter}",
            self.column_list()
        )
    }
}

/// 17 bytes: a 0x01 byte, then the 16 bytes of an md5 given as hex. Sling 1.4.11 takes a
/// bytea value that starts with `[` and ends with `]` for JSON and sends it as text, which
/// PostgreSQL rejects as invalid UTF-8 (about one md5 in 33,000 does both); the fixed
/// first byte keeps Sling in the race.
fn payload(md5_hex: &str) -> String {
    format!("decode('01' || {md5_hex}, 'hex')")
}

/// Rows the merge scenario changes.
pub fn changed_rows(rows: u64) -> u64 {
    rows / CHANGE_EVERY
}

/// Rows the merge scenario adds.
pub fn new_rows(rows: u64) -> u64 {
    rows / NEW_EVERY
}

fn new_filter(column: &str, rows: u64) -> String {
    format!("{column} > {rows}")
}

/// `varchar(16) NOT NULL` -> `varchar(16)`: the type to cast a target column back to.
fn base_type(sql_type: &str) -> &str {
    sql_type.trim_end_matches(" NOT NULL")
}

/// A double-quoted identifier (ours never contain quotes, but keep the rule anyway).
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_has_twenty_columns_and_wide_one_hundred_twenty() {
        assert_eq!(Table::narrow().column_count(), 20);
        assert_eq!(Table::wide().column_count(), 120);
    }

    #[test]
    fn every_expression_is_fully_substituted() {
        for table in [Table::narrow(), Table::wide()] {
            let sql = format!(
                "{} {} {}",
                table.fill_sql("t", 10),
                table.change_sql("t", 10),
                table.revert_sql("t", 10)
            );
            assert!(!sql.contains("{v}") && !sql.contains("{j}"), "{sql}");
        }
    }

    #[test]
    fn checksum_casts_to_the_source_types_without_constraints() {
        let sql = Table::narrow().checksum_sql("s.t");
        assert!(
            sql.contains("\"id\"::bigint, \"updated_at\"::timestamp,"),
            "{sql}"
        );
        assert!(sql.contains("\"status\"::varchar(16)"), "{sql}");
    }

    #[test]
    fn change_counts() {
        assert_eq!(changed_rows(1_000_000), 200_000);
        assert_eq!(new_rows(1_000_000), 50_000);
    }
}
