//! The BigQuery sink beyond the behaviour model, against the emulator: every type loads
//! exactly (NUMERIC at its limits, timestamps with microseconds and zones, bytes, JSON),
//! duplicate keys and a mismatched existing table are refused before the target changes,
//! and native partitions replace only the staged ones.

use dpone_host::Kind;
use dpone_host::model::{DataType, DecimalSpec, Value, time};

use crate::support::{Bq, Db, bigquery_endpoint, fresh_postgres_database, run, run_fails};

/// A PostgreSQL source database and a fresh BigQuery dataset.
struct Setup {
    pg: Db,
    pg_url: String,
    bq: Bq,
}

async fn setup(name: &str, source: &str) -> Option<Setup> {
    let endpoint = bigquery_endpoint()?;
    let server = crate::support::postgres_url()?;
    let pg_url = fresh_postgres_database(&server, name).await;
    let mut pg = Db::postgres(&pg_url).await;
    pg.exec(&format!("CREATE SCHEMA src; {source}")).await;
    let bq = Bq::fresh(&endpoint, name).await;
    Some(Setup { pg, pg_url, bq })
}

impl Setup {
    fn manifest(&self, table: &str, sink_extra: &str, strategy: &str) -> String {
        format!(
            "pipeline: {table}\nsource: {{ kind: postgres, url: \"{pg}\", table: src.{table} }}\n\
             sink:\n  {sink}\n  strategy: {{ {strategy} }}\n\
             state: {{ kind: postgres, url: \"{pg}\" }}\n",
            pg = self.pg_url,
            sink = self.bq.sink(table, sink_extra),
        )
    }

    async fn events(&mut self) -> Vec<Vec<Value>> {
        let sql = format!(
            "SELECT id, day, note FROM `{}`.`events` ORDER BY id",
            self.bq.dataset
        );
        self.bq
            .values(&sql, &[DataType::Int64, DataType::Date, DataType::Text])
            .await
    }
}

const EVENTS: &str = "CREATE TABLE src.events (id BIGINT PRIMARY KEY, day DATE NOT NULL, note TEXT);
     INSERT INTO src.events SELECT i, DATE '2024-01-01' + (i % 3), 'v1 ' || i FROM generate_series(1, 90) i;";

fn utc(text: &str) -> i64 {
    time::parse_timestamp(text).unwrap()
}

#[tokio::test]
async fn every_type_loads_exactly() {
    let Some(mut s) = setup(
        "bq_types",
        "CREATE TABLE src.typed (id BIGINT PRIMARY KEY, amount NUMERIC(38,9), at TIMESTAMPTZ,
            local TIMESTAMP, day DATE, payload JSONB, raw BYTEA, note TEXT, ok BOOLEAN, f DOUBLE PRECISION);
         INSERT INTO src.typed VALUES
           (1, 99999999999999999999999999999.999999999, '2024-02-29 23:59:59.999999+05:30',
            '0001-01-01 00:00:00.000001', '9999-12-31', '{\"a\": [1, 2]}', '\\x00ff', 'ünï ✓', true, 1.5),
           (2, -99999999999999999999999999999.999999999, '1969-12-31 23:59:59.000001+00',
            '2024-01-02 03:04:05.123456', '1970-01-01', '\"text\"', '\\x', '', false, -2.25),
           (3, 0.000000001, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    )
    .await
    else {
        return;
    };
    let yaml = s.manifest("typed", "", "mode: full_refresh, unique_key: [id]");
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(report.rows_written, 3);
    let numeric = DataType::Decimal(Some(DecimalSpec {
        precision: 38,
        scale: 9,
    }));
    let types = [
        DataType::Int64,
        numeric,
        DataType::TimestampTz,
        DataType::Timestamp,
        DataType::Date,
        DataType::Json,
        DataType::Bytes,
        DataType::Text,
        DataType::Boolean,
        DataType::Float64,
    ];
    let sql = format!(
        "SELECT `id`, `amount`, `at`, `local`, `day`, `payload`, `raw`, `note`, `ok`, `f` FROM `{}`.`typed` ORDER BY `id`",
        s.bq.dataset
    );
    let mut rows = s.bq.values(&sql, &types).await;
    // JSON compares as JSON: BigQuery writes it without the spaces PostgreSQL keeps.
    let json: Vec<Option<serde_json::Value>> = rows
        .iter_mut()
        .map(|r| match std::mem::replace(&mut r[5], Value::Null) {
            Value::Json(text) => Some(serde_json::from_str(&text).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(
        json,
        vec![
            Some(serde_json::json!({"a": [1, 2]})),
            Some(serde_json::json!("text")),
            None
        ]
    );
    let d = |s: &str| Value::Decimal(s.into());
    assert_eq!(
        rows,
        vec![
            vec![
                Value::Int(1),
                d("99999999999999999999999999999.999999999"),
                Value::TimestampTz(utc("2024-02-29T18:29:59.999999Z")),
                Value::Timestamp(utc("0001-01-01T00:00:00.000001")),
                Value::Date(time::parse_date("9999-12-31").unwrap()),
                Value::Null,
                Value::Bytes(vec![0, 255]),
                Value::Text("ünï ✓".into()),
                Value::Boolean(true),
                Value::Float(1.5),
            ],
            vec![
                Value::Int(2),
                d("-99999999999999999999999999999.999999999"),
                Value::TimestampTz(utc("1969-12-31T23:59:59.000001Z")),
                Value::Timestamp(utc("2024-01-02T03:04:05.123456")),
                Value::Date(0),
                Value::Null,
                Value::Bytes(Vec::new()),
                Value::Text(String::new()),
                Value::Boolean(false),
                Value::Float(-2.25),
            ],
            vec![
                Value::Int(3),
                d("0.000000001"),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ]
    );
}

#[tokio::test]
async fn duplicate_keys_are_refused_before_the_target_changes() {
    let Some(mut s) = setup("bq_duplicate_keys", EVENTS).await else {
        return;
    };
    let yaml = s.manifest("events", "", "mode: full_refresh, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    let before = s.events().await;
    assert_eq!(before.len(), 90);
    s.pg.exec("ALTER TABLE src.events DROP CONSTRAINT events_pkey; UPDATE src.events SET note = 'v2'; INSERT INTO src.events SELECT id, day, 'dup' FROM src.events WHERE id <= 3")
        .await;
    let err = run_fails(&yaml, None, Kind::KeyViolation).await;
    assert!(err.message.contains("3 duplicated keys"), "{err}");
    assert_eq!(s.events().await, before, "the target changed");
}

#[tokio::test]
async fn an_existing_table_of_other_types_is_refused_before_any_load() {
    let Some(mut s) = setup("bq_type_mismatch", EVENTS).await else {
        return;
    };
    let d = s.bq.dataset.clone();
    s.bq.exec(&format!(
        "CREATE TABLE `{d}`.`events` (id INT64, day STRING, note STRING)"
    ))
    .await;
    let yaml = s.manifest("events", "", "mode: full_refresh, unique_key: [id]");
    let err = run_fails(&yaml, None, Kind::Config).await;
    assert!(
        err.to_string().contains("sink.table")
            && err
                .message
                .contains("`day` (date, DATE in BigQuery): the table has it as STRING"),
        "{err}"
    );
    let left =
        s.bq.values(
            &format!("SELECT COUNT(*) FROM `{d}`.INFORMATION_SCHEMA.TABLES"),
            &[DataType::Int64],
        )
        .await;
    assert_eq!(left, vec![vec![Value::Int(1)]], "a staging table was left");
}

#[tokio::test]
async fn native_partitions_replace_only_the_staged_ones() {
    let Some(mut s) = setup("bq_partitions", EVENTS).await else {
        return;
    };
    let strategy = |days: &str| {
        format!(
            "mode: partition_replace, unique_key: [id], partition: {{ column: day, native_mode: required }}, \
             predicate: [{{ column: day, in: [{days}] }}]"
        )
    };
    let sink_extra = "\n  partition_by: day\n  cluster_by: [id]";
    let all = "'2024-01-01', '2024-01-02', '2024-01-03'";
    let report = run(&s.manifest("events", sink_extra, &strategy(all)), None)
        .await
        .unwrap();
    assert_eq!(report.rows_written, 90);
    assert_eq!(s.events().await.len(), 90);

    s.pg.exec(
        "UPDATE src.events SET note = 'v2 ' || id; DELETE FROM src.events WHERE id IN (4, 5)",
    )
    .await;
    run(
        &s.manifest("events", sink_extra, &strategy("'2024-01-02'")),
        None,
    )
    .await
    .unwrap();
    let day2 = time::parse_date("2024-01-02").unwrap();
    let rows = s.events().await;
    for row in &rows {
        let (Value::Int(id), Value::Date(day), Value::Text(note)) = (&row[0], &row[1], &row[2])
        else {
            panic!("{row:?}");
        };
        let expected = if *day == day2 { "v2" } else { "v1" };
        assert_eq!(note, &format!("{expected} {id}"), "{row:?}");
    }
    // id 4 was on 2024-01-02 (replaced: gone), id 5 on 2024-01-03 (untouched: kept).
    let ids: Vec<&Value> = rows.iter().map(|r| &r[0]).collect();
    assert!(!ids.contains(&&Value::Int(4)) && ids.contains(&&Value::Int(5)));
    assert_eq!(rows.len(), 89);
}

#[tokio::test]
async fn a_malformed_service_account_key_is_refused_naming_the_field_not_the_key() {
    use dpone_host::connectors::bigquery::config::BigqueryConfig;
    let key =
        r#"{"type": "service_account", "client_email": "a@b", "private_key": "s3cr3t-not-a-pem"}"#;
    let config = BigqueryConfig {
        project: "p".into(),
        dataset: "d".into(),
        table: None,
        location: None,
        endpoint: None,
        credentials_json: Some(dpone_host::secret::Secret::new(key)),
        partition_by: None,
        cluster_by: Vec::new(),
    };
    let Err(err) = dpone_host::connectors::connect(
        &dpone_host::manifest::Connection::Bigquery(config),
        Kind::Sink,
        dpone_host::connectors::Open::Plan,
    )
    .await
    else {
        panic!("a malformed key was accepted");
    };
    let text = err.to_string();
    assert!(text.contains("sink.credentials_json"), "{text}");
    assert!(!text.contains("s3cr3t"), "the key leaked: {text}");
}

/// A value the load job refuses (text that is not JSON, from a SQLite `JSON` column, which
/// SQLite does not check): the run fails naming the job and its error, and the target keeps
/// its rows.
#[tokio::test]
async fn a_failed_load_job_fails_the_run_and_changes_nothing() {
    let Some(endpoint) = bigquery_endpoint() else {
        return;
    };
    let mut bq = Bq::fresh(&endpoint, "bq_failed_load").await;
    let dir = crate::support::scratch("bq_failed_load");
    let mut db = Db::sqlite(&dir.join("src.db")).await;
    db.exec("CREATE TABLE events (id INTEGER PRIMARY KEY, payload JSON); INSERT INTO events VALUES (1, '{\"a\": 1}')")
        .await;
    let yaml = format!(
        "pipeline: bq_failed_load\nsource: {{ kind: sqlite, path: {d}/src.db, table: events }}\n\
         sink:\n  {}\n  strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: sqlite, path: {d}/state.db }}\n",
        bq.sink("events", ""),
        d = dir.display()
    );
    run(&yaml, None).await.unwrap();
    let ids = format!("SELECT `id` FROM `{}`.`events` ORDER BY `id`", bq.dataset);
    assert_eq!(
        bq.values(&ids, &[DataType::Int64]).await,
        vec![vec![Value::Int(1)]]
    );

    db.exec("INSERT INTO events VALUES (2, 'not json')").await;
    let err = run_fails(&yaml, None, Kind::Sink).await;
    assert!(
        err.message.starts_with("BigQuery: job ") && err.message.contains("invalid"),
        "{err}"
    );
    assert_eq!(
        bq.values(&ids, &[DataType::Int64]).await,
        vec![vec![Value::Int(1)]]
    );
}
