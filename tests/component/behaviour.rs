//! Every strategy over the behaviour model (10,000 rows with 120 sparse wide columns by
//! default, `DPONE_MATRIX_ROW_COUNT` overrides): generation 0, then 20% changed, 5% deleted
//! and 5% new rows, then a run with no change; after each run the target is compared row by
//! row with the oracle. PostgreSQL -> PostgreSQL, SQLite -> PostgreSQL and SQLite ->
//! SQLite; xmin and cdc need a PostgreSQL source. Crashes: before the commit on PostgreSQL
//! and ClickHouse targets, and on ClickHouse also after the shadow is published and
//! before the state is written; on a Kafka topic (no producer transactions on the test
//! broker) before the produce, in its middle and after it. (The ClickHouse and Kafka pairs'
//! three generations run in the matrix: `cargo xtask matrix --mode mock_local`.)

use dpone_host::backfill::Start;
use dpone_host::manifest::Manifest;
use dpone_host::matrix::catalog::{backfill_options, strategy_options};
use dpone_host::matrix::local::Behaviour;
use dpone_host::matrix::model::{Domain, ModelConfig};
use dpone_host::matrix::oracle::Oracle;

use crate::support::{fresh_postgres_database, run, run_campaign, scratch};

/// Where the model's source and target live.
struct Endpoints {
    source: String,
    sink: String,
    state: String,
    /// Backfill workers: 1 where the sink publishes the whole target per chunk.
    workers: usize,
    /// The values both ends hold.
    domain: Domain,
}

impl Endpoints {
    fn sqlite(name: &str) -> Self {
        let d = scratch(name);
        let d = d.display();
        Endpoints {
            source: format!("{{ kind: sqlite, path: {d}/src.db, table: model }}"),
            sink: format!("kind: sqlite\n  path: {d}/dst.db\n  table: model"),
            state: format!("{{ kind: sqlite, path: {d}/state.db }}"),
            workers: 2,
            domain: Domain::Full,
        }
    }

    async fn postgres(server: &str, name: &str) -> Self {
        Endpoints::postgres_at(&fresh_postgres_database(server, name).await)
    }

    /// Source, target and state in the database at `url`.
    fn postgres_at(url: &str) -> Self {
        Endpoints {
            source: format!("{{ kind: postgres, url: \"{url}\", table: src.model }}"),
            sink: format!("kind: postgres\n  url: \"{url}\"\n  table: dst.model"),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
            workers: 2,
            domain: Domain::Full,
        }
    }

    async fn postgres_to_clickhouse(server: &str, clickhouse: &str, name: &str) -> Self {
        let url = fresh_postgres_database(server, name).await;
        let db = crate::support::Ch::connect(clickhouse)
            .await
            .fresh_database(name)
            .await;
        Endpoints {
            source: format!("{{ kind: postgres, url: \"{url}\", table: src.model }}"),
            sink: format!("kind: clickhouse\n  url: \"{clickhouse}\"\n  table: {db}.model"),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
            workers: 1,
            domain: Domain::Epoch,
        }
    }

    /// A compacted topic as the target, written without producer transactions (the test
    /// broker has none), a partition count that spreads the keys, and no batching delay so a
    /// crash in the middle of the produce leaves part of the records delivered.
    async fn postgres_to_kafka(server: &str, brokers: &str, name: &str) -> Self {
        let url = fresh_postgres_database(server, name).await;
        crate::kafka::fresh_topic(brokers, name, None).await;
        Endpoints {
            source: format!("{{ kind: postgres, url: \"{url}\", table: src.model }}"),
            sink: format!(
                "kind: kafka\n  brokers: \"{brokers}\"\n  topic: {name}\n  exactly_once: false\n  partitions: 3\n  properties: {{ linger.ms: \"0\" }}"
            ),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
            workers: 1,
            domain: Domain::Full,
        }
    }

    async fn postgres_to_bigquery(server: &str, endpoint: &str, name: &str) -> Self {
        let url = fresh_postgres_database(server, name).await;
        let bq = crate::support::Bq::fresh(endpoint, name).await;
        Endpoints {
            source: format!("{{ kind: postgres, url: \"{url}\", table: src.model }}"),
            sink: bq.sink("model", ""),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
            workers: 1,
            domain: Domain::Calendar,
        }
    }

    async fn sqlite_to_postgres(server: &str, name: &str) -> Self {
        let d = scratch(name);
        let url = fresh_postgres_database(server, name).await;
        Endpoints {
            source: format!(
                "{{ kind: sqlite, path: {}/src.db, table: model }}",
                d.display()
            ),
            sink: format!("kind: postgres\n  url: \"{url}\"\n  table: dst.model"),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
            workers: 2,
            domain: Domain::Full,
        }
    }

    fn manifest(&self, name: &str, strategy: &str) -> String {
        format!(
            "pipeline: {name}\nsource: {}\nsink:\n  {}\n  strategy: {{ {strategy} }}\nstate: {}\n",
            self.source, self.sink, self.state
        )
    }
}

async fn three_generations(endpoints: Endpoints, name: &str, strategy: &str) {
    three_generations_of(endpoints, name, strategy, None).await
}

/// [`three_generations`] of `component` in place of the built-in `strategy` it implements.
async fn three_generations_of(
    endpoints: Endpoints,
    name: &str,
    strategy: &str,
    component: Option<&std::path::Path>,
) {
    let (options, semantics, compound) = strategy_options(strategy);
    let cfg = ModelConfig::from_env(20_261_127, compound, endpoints.domain)
        .unwrap_or_else(|e| panic!("{e}"));
    let first =
        Manifest::parse(&endpoints.manifest(name, "mode: full_refresh"), &|_| None).unwrap();
    let model = Behaviour::new(&first, cfg);
    let mut oracle = Oracle::new(semantics, model.key.clone());
    let mut rows = Vec::new();
    for (generation, label) in [(0, "generation 0"), (1, "generation 1"), (1, "no change")] {
        if label != "no change" {
            rows = model.seed(generation).await.unwrap();
        }
        if strategy == "backfill" {
            let max_id = cfg.rows * 21 / 20 + generation as usize;
            let yaml = endpoints.manifest(name, &backfill_options(max_id, endpoints.workers));
            run_campaign(&yaml, Start::Run).await.unwrap();
        } else {
            run(&endpoints.manifest(name, &options), component)
                .await
                .unwrap_or_else(|e| panic!("{strategy} {label}: {e}"));
        }
        oracle.run(&rows);
        let n = model
            .check(&oracle, &format!("{strategy} {label}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "{strategy} {label}: empty target");
    }
}

/// The process dies at `failpoint` (as `kill -9` would there): before the commit, target
/// and state are as before; after the publish, the target may be ahead of the state. Either
/// way the next run converges to the oracle.
async fn crash_then_converge(endpoints: Endpoints, name: &str, strategy: &str, failpoint: &str) {
    let (options, semantics, compound) = strategy_options(strategy);
    let cfg = ModelConfig {
        seed: 7,
        rows: 600,
        compound_key: compound,
        domain: endpoints.domain,
    };
    // Backfill: a campaign per generation (a finished campaign runs nothing again).
    let options = |generation: usize| {
        if strategy == "backfill" {
            backfill_options(700 + generation, endpoints.workers)
        } else {
            options.clone()
        }
    };
    let yaml = endpoints.manifest(name, &options(0));
    let manifest = Manifest::parse(&yaml, &|_| None).unwrap();
    let model = Behaviour::new(&manifest, cfg);
    let mut oracle = Oracle::new(semantics, model.key.clone());
    let rows = model.seed(0).await.unwrap();
    let normal_run = async |yaml: &str| {
        if strategy == "backfill" {
            run_campaign(yaml, Start::Run).await.map(|_| ())
        } else {
            run(yaml, None).await.map(|_| ())
        }
    };
    normal_run(&yaml).await.unwrap();
    oracle.run(&rows);
    model.check(&oracle, "before the crash").await.unwrap();

    let rows = model.seed(1).await.unwrap();
    let snapshot = async || {
        let mut target = model.target(&[]).await.unwrap();
        dpone_host::matrix::oracle::sort_rows(&mut target, &model.key);
        let mut state = dpone_host::runner::open_state(&manifest).await.unwrap();
        (target, format!("{:?}", state.entries(name).await.unwrap()))
    };
    let before = snapshot().await;
    let dir = scratch(&format!("{name}_cli"));
    let yaml = endpoints.manifest(name, &options(1));
    std::fs::write(dir.join("m.yaml"), &yaml).unwrap();
    let crashed = std::process::Command::new(crate::cli::host_binary())
        .args(["run", "-m", "m.yaml"])
        .current_dir(&dir)
        .env("DPONE_COMPONENTS_DIR", crate::support::components_dir())
        .env("DPONE_FAILPOINT", failpoint)
        .output()
        .unwrap();
    let out = crate::cli::text(&crashed);
    let point = failpoint.split(['@', '+']).next().unwrap_or(failpoint);
    assert!(
        !crashed.status.success() && out.contains(&format!("failpoint {point}:")),
        "{out}"
    );
    if failpoint == "sink.before_commit" {
        assert!(
            snapshot().await == before,
            "{strategy}: the crash changed the target or the state"
        );
    } else {
        let after = snapshot().await;
        let changed = after.0.iter().filter(|r| !before.0.contains(r)).count();
        eprintln!("{strategy} {failpoint}: the crash left {changed} target rows changed");
    }

    normal_run(&yaml).await.unwrap();
    oracle.run(&rows);
    model.check(&oracle, "after the crash").await.unwrap();
}

/// Seeding a PostgreSQL source returns only once every transaction older than it has ended
/// (xids are per cluster, so another test's open transaction counts), so an xmin run right
/// after it loads every seeded row.
#[tokio::test]
async fn seeding_waits_for_older_transactions() {
    use sqlx::{Connection, Executor};
    let Some(server) = crate::support::postgres_url() else {
        return;
    };
    let name = "seeding_waits";
    let endpoints = Endpoints::postgres(&server, name).await;
    let manifest =
        Manifest::parse(&endpoints.manifest(name, "mode: full_refresh"), &|_| None).unwrap();
    let cfg = ModelConfig {
        seed: 1,
        rows: 100,
        compound_key: false,
        domain: Domain::Full,
    };
    let model = Behaviour::new(&manifest, cfg);
    let mut older = sqlx::PgConnection::connect(&server).await.unwrap();
    older
        .execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    let seeding = model.seed(0);
    tokio::pin!(seeding);
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), &mut seeding).await;
    assert!(
        early.is_err(),
        "seeding returned while an older transaction was open"
    );
    older.execute("COMMIT").await.unwrap();
    assert_eq!(seeding.await.unwrap().len(), 100);
}

macro_rules! crash_cases {
    ($module:ident, $pair:literal, $failpoint:literal, $($strategy:ident),*) => {
        mod $module {
            $(#[tokio::test] async fn $strategy() {
                let name = concat!(stringify!($module), "_", stringify!($strategy));
                let Some(endpoints) = super::endpoints($pair, name).await else { return };
                super::crash_then_converge(endpoints, name, stringify!($strategy), $failpoint).await;
            })*
        }
    };
}

crash_cases!(
    crash_before_commit,
    "postgres_to_postgres",
    "sink.before_commit",
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill,
    xmin,
    cdc
);
crash_cases!(
    clickhouse_crash_before_commit,
    "postgres_to_clickhouse",
    "sink.before_commit",
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill,
    xmin,
    cdc
);
// Append has no shadow to publish (it inserts at commit), and a crash after its insert
// appends the rows again on the next run: the window docs/connectors/clickhouse.md names.
crash_cases!(
    clickhouse_crash_after_publish,
    "postgres_to_clickhouse",
    "sink.after_publish",
    full_refresh,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill,
    xmin,
    cdc
);

// BigQuery publishes the shadow in one multi-statement transaction: a crash before it
// leaves the target as it was, a crash after it (before the state commits) is repaired by
// the next run. Append inserts at commit, outside a shadow: the window of
// docs/connectors/bigquery.md.
crash_cases!(
    bigquery_crash_before_commit,
    "postgres_to_bigquery",
    "sink.before_commit",
    full_refresh,
    incremental_append,
    incremental_merge,
    snapshot_diff,
    scd2
);
crash_cases!(
    bigquery_crash_after_publish,
    "postgres_to_bigquery",
    "sink.after_publish",
    full_refresh,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2
);

// A topic has no transaction of its own here (the test broker has none): the produce is the
// publish, and a crash in its middle leaves part of the records. The next run's view reads
// them from the topic, so it produces the rest and nothing twice per key.
crash_cases!(
    kafka_crash_before_commit,
    "postgres_to_kafka",
    "sink.before_commit",
    full_refresh,
    incremental_merge,
    replace,
    snapshot_diff
);
crash_cases!(
    kafka_crash_mid_produce,
    "postgres_to_kafka",
    "sink.mid_produce@40+2000",
    full_refresh,
    incremental_merge,
    replace,
    snapshot_diff
);
crash_cases!(
    kafka_crash_after_publish,
    "postgres_to_kafka",
    "sink.after_publish",
    full_refresh,
    incremental_merge,
    replace,
    snapshot_diff
);

macro_rules! model_cases {
    ($pair:ident, $($strategy:ident),*) => {
        mod $pair {
            $(#[tokio::test] async fn $strategy() {
                let name = concat!("model_", stringify!($pair), "_", stringify!($strategy));
                let Some(endpoints) = super::endpoints(stringify!($pair), name).await else { return };
                super::three_generations(endpoints, name, stringify!($strategy)).await;
            })*
        }
    };
}

async fn endpoints(pair: &str, name: &str) -> Option<Endpoints> {
    if pair == "sqlite_to_sqlite" {
        return Some(Endpoints::sqlite(name));
    }
    let server = crate::support::postgres_url()?;
    Some(match pair {
        "postgres_to_postgres" => Endpoints::postgres(&server, name).await,
        "postgres_to_clickhouse" => {
            let clickhouse = crate::support::clickhouse_url()?;
            Endpoints::postgres_to_clickhouse(&server, &clickhouse, name).await
        }
        "postgres_to_bigquery" => {
            let endpoint = crate::support::bigquery_endpoint()?;
            Endpoints::postgres_to_bigquery(&server, &endpoint, name).await
        }
        "postgres_to_kafka" => {
            let brokers = crate::support::kafka_brokers()?;
            Endpoints::postgres_to_kafka(&server, &brokers, name).await
        }
        _ => Endpoints::sqlite_to_postgres(&server, name).await,
    })
}

model_cases!(
    postgres_to_postgres,
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill,
    xmin,
    cdc
);
model_cases!(
    sqlite_to_postgres,
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill
);
model_cases!(
    sqlite_to_sqlite,
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill
);

/// The Python and JavaScript `snapshot_diff` (examples/strategies/python, .../js) held to
/// the same model, target and oracle as their Rust twin.
mod language_twins {
    use crate::support::component;

    /// The built twins: the Python and the JavaScript `snapshot_diff`.
    const TWINS: [&str; 2] = ["snapshot_diff_py", "snapshot_diff_js"];

    async fn snapshot_diff(twin: &str, pair: &str) {
        let name = format!("model_{twin}_{pair}");
        let Some(endpoints) = super::endpoints(pair, &name).await else {
            return;
        };
        let path = component(twin);
        super::three_generations_of(endpoints, &name, "snapshot_diff", Some(&path)).await;
    }

    /// The sink statements of a `snapshot_diff` run of `strategy` (`None`: the built-in)
    /// over a fresh copy of one small source, with the run id and the run's folder taken
    /// out: what differs between two runs of the same inputs.
    async fn statements(run_name: &str, strategy: Option<&std::path::Path>) -> Vec<String> {
        let dir = crate::support::scratch(run_name);
        let mut src = crate::support::Db::sqlite(&dir.join("src.db")).await;
        src.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
            .await;
        src.exec("INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 3.0)")
            .await;
        let yaml = format!(
            "pipeline: twin\n\
             source: {{ kind: sqlite, path: {d}/src.db, table: t }}\n\
             sink:\n  kind: sqlite\n  path: {d}/dst.db\n  table: t\n  strategy: {{ mode: snapshot_diff, unique_key: [id] }}\n\
             state: {{ kind: sqlite, path: {d}/state.db }}\n",
            d = dir.display()
        );
        let report = crate::support::run(&yaml, strategy).await.unwrap();
        let dir = dir.display().to_string();
        // Staging tables are named after the run id's first 12 digits.
        let run = &report.run_id[..12];
        report
            .sink_statements
            .iter()
            .map(|s| s.replace(run, "<run>").replace(&dir, "<dir>"))
            .collect()
    }

    /// Two runs of each twin on the same inputs make the same host calls, and they are the
    /// calls the Rust strategy makes.
    #[tokio::test]
    async fn runs_are_deterministic_and_call_the_host_as_the_rust_twin_does() {
        let rust = statements("twin_rust", None).await;
        assert!(rust.len() > 3, "{rust:?}");
        for twin in TWINS {
            let path = component(twin);
            let first = statements(&format!("{twin}_1"), Some(&path)).await;
            let second = statements(&format!("{twin}_2"), Some(&path)).await;
            assert_eq!(first, second, "{twin}");
            assert_eq!(first, rust, "{twin}");
        }
    }

    #[tokio::test]
    async fn snapshot_diff_sqlite_to_sqlite() {
        for twin in TWINS {
            snapshot_diff(twin, "sqlite_to_sqlite").await
        }
    }

    #[tokio::test]
    async fn snapshot_diff_postgres_to_postgres() {
        for twin in TWINS {
            snapshot_diff(twin, "postgres_to_postgres").await
        }
    }
}

/// PostgreSQL -> PostgreSQL loads forward rows undecoded (`transfer.pass_through`, the
/// default) and split whole-table reads over streams in one snapshot
/// (`transfer.parallelism`). The same three generations of the model run in two databases:
/// one with `parallelism: 3`, one with `pass_through: false, parallelism: 1` (every row
/// through Arrow, one stream). After every run the targets must be the same, byte for byte
/// (binary COPY of every row). The first must have forwarded every row it read (none
/// where the strategy stages a row hash: those take the Arrow path) and read in three
/// streams (one for xmin, whose window reads in the session's own snapshot).
mod pass_through {
    use dpone_host::manifest::Manifest;
    use dpone_host::matrix::catalog::strategy_options;
    use dpone_host::matrix::local::Behaviour;
    use dpone_host::matrix::model::{Domain, ModelConfig};

    use crate::support::{fresh_postgres_database, run};

    /// The target as binary COPY, in the order of each row's text (appends may repeat a
    /// key): every value in PostgreSQL's own binary form, so equal bytes mean equal stored
    /// values.
    async fn target_bytes(url: &str) -> Vec<u8> {
        use futures_util::StreamExt;
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let mut stream = conn
            .copy_out_raw("COPY (SELECT * FROM dst.model AS t ORDER BY CAST(t AS TEXT)) TO STDOUT (FORMAT binary)")
            .await
            .unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        bytes
    }

    async fn both_paths(strategy: &str) {
        let Some(server) = crate::support::postgres_url() else {
            return;
        };
        let (options, _, compound) = strategy_options(strategy);
        let name = format!("wire_{strategy}");
        let urls = [
            fresh_postgres_database(&server, &format!("{name}_forwarded")).await,
            fresh_postgres_database(&server, &format!("{name}_arrow")).await,
        ];
        let endpoints = urls.each_ref().map(|u| super::Endpoints::postgres_at(u));
        let cfg = ModelConfig::from_env(20_261_206, compound, Domain::Full)
            .unwrap_or_else(|e| panic!("{e}"));
        let manifests = endpoints
            .each_ref()
            .map(|e| Manifest::parse(&e.manifest(&name, "mode: full_refresh"), &|_| None).unwrap());
        let models = manifests.each_ref().map(|m| Behaviour::new(m, cfg));
        let yamls = [
            format!(
                "{}transfer: {{ parallelism: 3 }}\n",
                endpoints[0].manifest(&name, &options)
            ),
            format!(
                "{}transfer: {{ pass_through: false, parallelism: 1 }}\n",
                endpoints[1].manifest(&name, &options)
            ),
        ];
        // snapshot_diff stages a row hash column: its rows take the Arrow path.
        let hashed = strategy == "snapshot_diff";
        for (generation, label) in [(0, "generation 0"), (1, "generation 1"), (1, "no change")] {
            if label != "no change" {
                for model in &models {
                    model.seed(generation).await.unwrap();
                }
            }
            let mut reports = Vec::new();
            for yaml in &yamls {
                reports.push(
                    run(yaml, None)
                        .await
                        .unwrap_or_else(|e| panic!("{strategy} {label}: {e}")),
                );
            }
            let (fast, plain) = (&reports[0], &reports[1]);
            let forwarded = if hashed { 0 } else { fast.rows_read };
            assert_eq!(fast.rows_forwarded, forwarded, "{strategy} {label}");
            assert!(
                hashed || label == "no change" || fast.rows_forwarded > 0,
                "{strategy} {label}: nothing was forwarded"
            );
            let streams = if strategy == "xmin" { 1 } else { 3 };
            assert_eq!(fast.read_streams, streams, "{strategy} {label}");
            assert_eq!(plain.rows_forwarded, 0, "{strategy} {label}");
            assert_eq!(plain.read_streams, 1, "{strategy} {label}");
            assert_eq!(fast.rows_read, plain.rows_read, "{strategy} {label}");
            let (a, b) = (target_bytes(&urls[0]).await, target_bytes(&urls[1]).await);
            assert!(a.len() > 19, "{strategy} {label}: empty target");
            assert!(a == b, "{strategy} {label}: the targets differ");
        }
    }

    macro_rules! cases {
        ($($strategy:ident),*) => {
            $(#[tokio::test] async fn $strategy() {
                both_paths(stringify!($strategy)).await
            })*
        };
    }

    cases!(
        full_refresh,
        incremental_append,
        incremental_merge,
        replace,
        partition_replace,
        snapshot_diff,
        xmin
    );
}
