//! Shared test plumbing: where the built components are, scratch databases, and running a
//! pipeline through the real host with the real `.wasm` files.

use std::path::{Path, PathBuf};

use dpone_host::manifest::Manifest;
use dpone_host::runner::{self, RunOptions};
use dpone_host::runtime::report::RunReport;
use dpone_host::{Error, Kind};
use sqlx::{Connection, Executor, Row};

/// The built components (`cargo xtask build` puts them in `target/strategies`).
pub fn components_dir() -> PathBuf {
    let dir = std::env::var_os("DPONE_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/strategies"));
    assert!(
        dir.join("full_refresh.wasm").exists(),
        "no built components in {}: run `cargo xtask build` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

pub fn component(name: &str) -> PathBuf {
    components_dir().join(format!("{name}.wasm"))
}

/// A fresh scratch directory under the target dir, removed at the start of the next use.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a manifest (YAML text) through the host; `strategy` overrides `sink.strategy.mode`.
pub async fn run(yaml: &str, strategy: Option<&Path>) -> Result<RunReport, Error> {
    let manifest = Manifest::parse(yaml, &|k| std::env::var(k).ok())?;
    let opts = RunOptions {
        strategy,
        components_dir: components_dir(),
        dry_run: false,
        progress: false,
    };
    runner::run(&manifest, &opts).await.map_err(|(e, _)| e)
}

/// Runs a backfill campaign of a manifest (YAML text) through the host.
pub async fn run_campaign(
    yaml: &str,
    start: dpone_host::backfill::Start,
) -> Result<dpone_host::backfill::CampaignReport, Error> {
    let manifest = Manifest::parse(yaml, &|k| std::env::var(k).ok())?;
    let opts = RunOptions {
        strategy: None,
        components_dir: components_dir(),
        dry_run: false,
        progress: false,
    };
    let prepared = runner::prepare(&manifest, &opts).await?;
    dpone_host::backfill::run(&manifest, &opts, &prepared, start).await
}

/// Like [`run`], asserting the run failed with `kind`.
pub async fn run_fails(yaml: &str, strategy: Option<&Path>, kind: Kind) -> Error {
    match run(yaml, strategy).await {
        Ok(r) => panic!("expected a {kind:?} failure, the run succeeded: {r:?}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "unexpected error: {e}");
            e
        }
    }
}

/// A database the tests read and write directly, to seed sources and check targets.
pub enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    pub async fn sqlite(path: &Path) -> Db {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Db::Sqlite(sqlx::SqliteConnection::connect_with(&opts).await.unwrap())
    }

    pub async fn postgres(url: &str) -> Db {
        Db::Postgres(sqlx::PgConnection::connect(url).await.unwrap())
    }

    pub async fn exec(&mut self, sql: &str) {
        let result = match self {
            Db::Sqlite(c) => c.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
            Db::Postgres(c) => c.execute(sqlx::raw_sql(sql)).await.map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every row of `sql` with each column cast to text (NULL as `None`), in query order.
    pub async fn rows(&mut self, sql: &str) -> Vec<Vec<Option<String>>> {
        macro_rules! fetch {
            ($c:expr) => {{
                let rows = $c
                    .fetch_all(sqlx::raw_sql(sql))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                            .collect()
                    })
                    .collect()
            }};
        }
        match self {
            Db::Sqlite(c) => fetch!(c),
            Db::Postgres(c) => fetch!(c),
        }
    }

    pub async fn count(&mut self, table: &str) -> i64 {
        let rows = self
            .rows(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
            .await;
        rows[0][0].as_deref().unwrap().parse().unwrap()
    }
}

/// The PostgreSQL server the tests may use (`cargo xtask test` starts a private one and
/// sets this). Without it, PostgreSQL tests say so and pass vacuously: the README's test
/// command always sets it.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("DPONE_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        eprintln!(
            "SKIPPED: DPONE_TEST_POSTGRES_URL is not set (run the tests with `cargo xtask test`)"
        );
    }
    url
}

/// A fresh database on the test server; returns its URL.
pub async fn fresh_postgres_database(server_url: &str, name: &str) -> String {
    let mut admin = sqlx::PgConnection::connect(server_url).await.unwrap();
    let db = format!("dpone_test_{name}");
    // A database with a replication slot cannot be dropped, and slots are per server.
    admin
        .execute(sqlx::raw_sql(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{db}'"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::raw_sql(&format!("CREATE DATABASE {db}")))
        .await
        .unwrap();
    let base = server_url.rsplit_once('/').map_or(server_url, |(b, _)| b);
    format!("{base}/{db}")
}

/// The ClickHouse server the tests may use (`cargo xtask test` starts a private one and
/// sets this). Without it, ClickHouse tests say so and pass vacuously.
pub fn clickhouse_url() -> Option<String> {
    let url = std::env::var("DPONE_TEST_CLICKHOUSE_URL").ok();
    if url.is_none() {
        eprintln!(
            "SKIPPED: DPONE_TEST_CLICKHOUSE_URL is not set (run the tests with `cargo xtask test`)"
        );
    }
    url
}

/// The Kafka broker the tests may use (`cargo xtask test` starts a private one and sets
/// this). Without it, Kafka tests say so and pass vacuously.
pub fn kafka_brokers() -> Option<String> {
    let brokers = std::env::var("DPONE_TEST_KAFKA_BROKERS").ok();
    if brokers.is_none() {
        eprintln!(
            "SKIPPED: DPONE_TEST_KAFKA_BROKERS is not set (run the tests with `cargo xtask test`)"
        );
    }
    brokers
}

/// A ClickHouse connection through the host's own client.
pub struct Ch(Box<dyn dpone_host::connectors::SqlSession>);

impl Ch {
    pub async fn connect(url: &str) -> Ch {
        Ch(Box::new(
            dpone_host::connectors::clickhouse::ClickhouseSession::connect(url, Kind::Sink)
                .await
                .unwrap(),
        ))
    }

    /// Runs `;`-separated statements (none may contain `;` in a literal).
    pub async fn exec(&mut self, sql: &str) {
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            self.0
                .execute(&dpone_host::connectors::Statement::new(stmt))
                .await
                .unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
    }

    /// Every row of `sql` (`columns` columns of `String`) as text, NULL as `None`.
    pub async fn rows(&mut self, sql: &str, columns: usize) -> Vec<Vec<Option<String>>> {
        use dpone_host::model::{DataType, Value};
        let rows = self
            .0
            .query(
                &dpone_host::connectors::Statement::new(sql),
                &vec![DataType::Text; columns],
            )
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|v| match v {
                        Value::Text(t) => Some(t),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    /// A fresh database on the test server; returns its name.
    pub async fn fresh_database(&mut self, name: &str) -> String {
        let db = format!("dpone_test_{name}");
        self.exec(&format!(
            "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"
        ))
        .await;
        db
    }
}

/// The BigQuery emulator the tests may use (`cargo xtask test` starts a private one and sets
/// this). Without it, BigQuery tests say so and pass vacuously.
pub fn bigquery_endpoint() -> Option<String> {
    let endpoint = std::env::var("DPONE_TEST_BIGQUERY_ENDPOINT").ok();
    if endpoint.is_none() {
        eprintln!(
            "SKIPPED: DPONE_TEST_BIGQUERY_ENDPOINT is not set (run the tests with `cargo xtask test`)"
        );
    }
    endpoint
}

/// A fresh dataset on the BigQuery emulator, through the host's own client.
pub struct Bq {
    session: Box<dyn dpone_host::connectors::SqlSession>,
    pub endpoint: String,
    pub dataset: String,
}

impl Bq {
    /// Drops dataset `dpone_test_<name>` with its tables and creates it again.
    pub async fn fresh(endpoint: &str, name: &str) -> Bq {
        use dpone_host::connectors::bigquery::config::BigqueryConfig;
        let dataset = format!("dpone_test_{name}");
        let config = BigqueryConfig {
            project: "dpone-test".into(),
            dataset: dataset.clone(),
            table: None,
            location: None,
            endpoint: Some(endpoint.into()),
            credentials_json: None,
            partition_by: None,
            cluster_by: Vec::new(),
        };
        let session = dpone_host::connectors::connect(
            &dpone_host::manifest::Connection::Bigquery(config),
            Kind::Sink,
            dpone_host::connectors::Open::Create,
        )
        .await
        .unwrap();
        let mut bq = Bq {
            session,
            endpoint: endpoint.into(),
            dataset,
        };
        let d = bq.dataset.clone();
        bq.exec(&format!("DROP SCHEMA IF EXISTS `{d}` CASCADE"))
            .await;
        bq.exec(&format!("CREATE SCHEMA `{d}`")).await;
        bq
    }

    /// The manifest's sink section for `table` in this dataset (no strategy line).
    pub fn sink(&self, table: &str, extra: &str) -> String {
        format!(
            "kind: bigquery\n  project: dpone-test\n  dataset: {}\n  table: {table}\n  endpoint: \"{}\"{extra}",
            self.dataset, self.endpoint
        )
    }

    pub async fn exec(&mut self, sql: &str) {
        self.session
            .execute(&dpone_host::connectors::Statement::new(sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Every row of `sql`, decoded as `types`.
    pub async fn values(
        &mut self,
        sql: &str,
        types: &[dpone_host::model::DataType],
    ) -> Vec<Vec<dpone_host::model::Value>> {
        self.session
            .query(&dpone_host::connectors::Statement::new(sql), types)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
