//! The ClickHouse sink beyond the behaviour model: native `REPLACE PARTITION`, the inputs
//! it refuses (a Nullable key in the target, a partition key that is not the column, too
//! many partitions), and a crash between partition replacements that the re-run repairs.
//! The ClickHouse source's split reads: by partition, each share pinned to the moment of
//! the split, and failing when a merge or mutation moved rows it cannot pin.

use dpone_host::Kind;

use crate::support::{Ch, Db, clickhouse_url, fresh_postgres_database, run, run_fails};

const TARGET_ROWS: &str = "SELECT toString(id), toString(day), note FROM {} ORDER BY toString(id)";
const SOURCE_ROWS: &str =
    "SELECT CAST(id AS TEXT), CAST(day AS TEXT), note FROM src.events ORDER BY 1";

/// A PostgreSQL source of 90 events over three days and a fresh ClickHouse database.
struct Setup {
    pg: Db,
    pg_url: String,
    ch: Ch,
    ch_url: String,
    db: String,
}

async fn setup(name: &str) -> Option<Setup> {
    let ch_url = clickhouse_url()?;
    let server = crate::support::postgres_url()?;
    let pg_url = fresh_postgres_database(&server, name).await;
    let mut pg = Db::postgres(&pg_url).await;
    pg.exec(
        "CREATE SCHEMA src;
         CREATE TABLE src.events (id BIGINT PRIMARY KEY, day DATE NOT NULL, note TEXT);
         INSERT INTO src.events SELECT i, DATE '2024-01-01' + (i % 3), 'v1 ' || i FROM generate_series(1, 90) i;",
    )
    .await;
    let mut ch = Ch::connect(&ch_url).await;
    let db = ch.fresh_database(name).await;
    Some(Setup {
        pg,
        pg_url,
        ch,
        ch_url,
        db,
    })
}

impl Setup {
    fn manifest(&self, strategy: &str) -> String {
        format!(
            "pipeline: {db}\nsource: {{ kind: postgres, url: \"{pg}\", table: src.events }}\n\
             sink:\n  kind: clickhouse\n  url: \"{ch}\"\n  table: {db}.events\n  strategy: {{ {strategy} }}\n\
             state: {{ kind: postgres, url: \"{pg}\" }}\n",
            db = self.db,
            pg = self.pg_url,
            ch = self.ch_url,
        )
    }

    fn partition_replace(&self, native_mode: &str, days: &str, extra: &str) -> String {
        self.manifest(&format!(
            "mode: partition_replace, unique_key: [id], partition: {{ column: day, native_mode: {native_mode}{extra} }}, \
             predicate: [{{ column: day, in: [{days}] }}]"
        ))
    }

    async fn target_rows(&mut self) -> Vec<Vec<Option<String>>> {
        let sql = TARGET_ROWS.replace("{}", &format!("{}.events", self.db));
        self.ch.rows(&sql, 3).await
    }

    async fn source_rows(&mut self) -> Vec<Vec<Option<String>>> {
        self.pg.rows(SOURCE_ROWS).await
    }

    /// The target's active parts, by partition: a partition replaced natively gets new
    /// parts, an untouched one keeps its own.
    async fn parts(&mut self) -> Vec<Vec<Option<String>>> {
        let sql = format!(
            "SELECT partition_id, name FROM system.parts WHERE database = '{}' AND table = 'events' AND active ORDER BY partition_id, name",
            self.db
        );
        self.ch.rows(&sql, 2).await
    }

    async fn create_target(&mut self, partition_by: &str) {
        self.ch
            .exec(&format!(
                "CREATE TABLE {}.events (id Int64, day Date, note Nullable(String)) \
                 ENGINE = MergeTree PARTITION BY {partition_by} ORDER BY id",
                self.db
            ))
            .await;
    }
}

const ALL_DAYS: &str = "'2024-01-01', '2024-01-02', '2024-01-03'";

#[tokio::test]
async fn native_partitions_replace_only_the_touched_ones() {
    let Some(mut s) = setup("ch_native_partitions").await else {
        return;
    };
    s.create_target("day").await;
    let report = run(&s.partition_replace("required", ALL_DAYS, ""), None)
        .await
        .unwrap();
    assert_eq!(report.rows_written, 90);
    assert_eq!(s.target_rows().await, s.source_rows().await);
    let before = s.parts().await;

    s.pg.exec("UPDATE src.events SET note = 'v2' WHERE day = '2024-01-02'")
        .await;
    run(&s.partition_replace("required", "'2024-01-02'", ""), None)
        .await
        .unwrap();
    assert_eq!(s.target_rows().await, s.source_rows().await);
    let after = s.parts().await;
    let of = |parts: &[Vec<Option<String>>], id: &str| -> Vec<Option<String>> {
        parts
            .iter()
            .filter(|p| p[0].as_deref() == Some(id))
            .map(|p| p[1].clone())
            .collect()
    };
    assert_eq!(of(&after, "20240101"), of(&before, "20240101"));
    assert_eq!(of(&after, "20240103"), of(&before, "20240103"));
    assert_ne!(of(&after, "20240102"), of(&before, "20240102"));
}

#[tokio::test]
async fn a_partition_key_that_is_not_the_column_is_refused_or_falls_back() {
    let Some(mut s) = setup("ch_partition_mismatch").await else {
        return;
    };
    s.create_target("toYYYYMM(day)").await;
    let err = run_fails(
        &s.partition_replace("required", ALL_DAYS, ""),
        None,
        Kind::Config,
    )
    .await;
    assert_eq!(
        err.field.as_deref(),
        Some("sink.strategy.partition.native_mode"),
        "{err}"
    );
    assert!(s.target_rows().await.is_empty(), "a refused run wrote rows");

    run(&s.partition_replace("auto", ALL_DAYS, ""), None)
        .await
        .unwrap();
    assert_eq!(s.target_rows().await, s.source_rows().await);
}

#[tokio::test]
async fn more_partitions_than_allowed_are_refused_before_any_change() {
    let Some(mut s) = setup("ch_too_many_partitions").await else {
        return;
    };
    s.create_target("day").await;
    let yaml = s.partition_replace("auto", ALL_DAYS, ", max_partitions_per_run: 2");
    let err = run_fails(&yaml, None, Kind::Config).await;
    assert!(
        err.field.as_deref() == Some("sink.strategy.partition.max_partitions_per_run"),
        "{err}"
    );
    assert!(s.target_rows().await.is_empty(), "a refused run wrote rows");
}

#[tokio::test]
async fn a_nullable_key_in_the_target_is_refused() {
    let Some(mut s) = setup("ch_nullable_key").await else {
        return;
    };
    s.ch.exec(&format!(
        "CREATE TABLE {}.events (id Nullable(Int64), day Date, note Nullable(String)) \
         ENGINE = MergeTree ORDER BY tuple()",
        s.db
    ))
    .await;
    let err = run_fails(
        &s.manifest("mode: incremental_merge, unique_key: [id]"),
        None,
        Kind::Config,
    )
    .await;
    assert!(
        err.field.as_deref() == Some("sink.strategy.unique_key")
            && err.message.contains("Nullable"),
        "{err}"
    );
}

#[tokio::test]
async fn a_crash_between_partition_replacements_converges_on_rerun() {
    let Some(mut s) = setup("ch_partition_crash").await else {
        return;
    };
    s.create_target("day").await;
    run(&s.partition_replace("required", ALL_DAYS, ""), None)
        .await
        .unwrap();
    s.pg.exec("UPDATE src.events SET note = 'v2'").await;
    let yaml = s.partition_replace("required", ALL_DAYS, "");
    let dir = crate::support::scratch("ch_partition_crash_cli");
    std::fs::write(dir.join("m.yaml"), &yaml).unwrap();
    let crashed = std::process::Command::new(crate::cli::host_binary())
        .args(["run", "-m", "m.yaml"])
        .current_dir(&dir)
        .env("DPONE_COMPONENTS_DIR", crate::support::components_dir())
        .env("DPONE_FAILPOINT", "sink.partition_replaced")
        .output()
        .unwrap();
    let out = crate::cli::text(&crashed);
    assert!(
        !crashed.status.success() && out.contains("failpoint sink.partition_replaced"),
        "{out}"
    );
    // One partition has the new notes, the others the old: the window the docs describe.
    let notes: std::collections::BTreeSet<_> = s
        .target_rows()
        .await
        .into_iter()
        .map(|r| r[2].clone().unwrap_or_default().starts_with("v2"))
        .collect();
    assert_eq!(notes.len(), 2, "expected a half-replaced target");

    run(&yaml, None).await.unwrap();
    assert_eq!(s.target_rows().await, s.source_rows().await);
}

#[tokio::test]
async fn inserts_load_the_same_rows_gzipped_or_plain() {
    let Some(mut s) = setup("ch_compression").await else {
        return;
    };
    let full_refresh = |compression: &str| {
        s.manifest("mode: full_refresh, unique_key: [id]").replace(
            "  strategy:",
            &format!("  compression: {compression}\n  strategy:"),
        )
    };
    let (plain, gzip, zstd) = (
        full_refresh("none"),
        full_refresh("gzip"),
        full_refresh("zstd"),
    );
    run(&plain, None).await.unwrap();
    assert_eq!(s.target_rows().await, s.source_rows().await);
    s.pg.exec("UPDATE src.events SET note = 'v2 ' || id").await;
    run(&gzip, None).await.unwrap();
    assert_eq!(s.target_rows().await, s.source_rows().await);
    let err = run_fails(&zstd, None, Kind::Config).await;
    assert_eq!(err.field.as_deref(), Some("sink.compression"), "{err}");
}

/// ClickHouse's primary key enforces nothing, so even a swap (which on PostgreSQL relies on
/// the target's key refusing duplicates while staging loads) checks keys in staging.
#[tokio::test]
async fn a_full_refresh_swap_refuses_duplicate_keys() {
    let Some(mut s) = setup("ch_duplicate_keys").await else {
        return;
    };
    let yaml = s.manifest("mode: full_refresh, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    let before = s.target_rows().await;
    s.pg.exec("ALTER TABLE src.events DROP CONSTRAINT events_pkey; INSERT INTO src.events SELECT id, day, 'dup' FROM src.events WHERE id <= 3")
        .await;
    let err = run_fails(&yaml, None, Kind::KeyViolation).await;
    assert!(err.message.contains("3 duplicated keys"), "{err}");
    assert_eq!(s.target_rows().await, before, "the target changed");
}

/// A ClickHouse source table `<db>.src` of 90 events over three daily partitions, from
/// three inserts (so each partition has several parts), `engine` its engine.
async fn ch_source(s: &mut Setup, engine: &str) {
    s.ch.exec(&format!(
        "CREATE TABLE {db}.src (id Int64, day Date, note String) ENGINE = {engine} PARTITION BY day ORDER BY id",
        db = s.db
    ))
    .await;
    for insert in 0..3 {
        s.ch.exec(&format!(
            "INSERT INTO {}.src SELECT number + 1, toDate('2024-01-01') + (number % 3), concat('v1 ', toString(number + 1)) \
             FROM system.numbers WHERE number >= {} LIMIT 30",
            s.db,
            insert * 30
        ))
        .await;
    }
}

impl Setup {
    /// ClickHouse `<db>.src` -> PostgreSQL `dst.events`, full refresh, read in `parallelism`.
    fn clickhouse_source_manifest(&self, parallelism: &str) -> String {
        format!(
            "pipeline: {db}_read\nsource: {{ kind: clickhouse, url: \"{ch}\", table: {db}.src }}\n\
             sink: {{ kind: postgres, url: \"{pg}\", table: dst.events, strategy: {{ mode: full_refresh, unique_key: [id] }} }}\n\
             state: {{ kind: postgres, url: \"{pg}\" }}\ntransfer: {{ parallelism: {parallelism} }}\n",
            db = self.db,
            pg = self.pg_url,
            ch = self.ch_url,
        )
    }

    async fn ch_source_rows(&mut self) -> Vec<Vec<Option<String>>> {
        let sql = TARGET_ROWS.replace("{}", &format!("{}.src", self.db));
        self.ch.rows(&sql, 3).await
    }

    async fn pg_target_rows(&mut self) -> Vec<Vec<Option<String>>> {
        self.pg
            .rows("SELECT CAST(id AS TEXT), CAST(day AS TEXT), note FROM dst.events ORDER BY 1")
            .await
    }
}

/// A number of streams splits a plain MergeTree source by partition (at most one stream
/// per partition); `auto` and the engines whose merges drop rows read in one stream. Every
/// way loads the same rows.
#[tokio::test]
async fn a_partitioned_source_is_read_in_one_stream_per_share_of_partitions() {
    let Some(mut s) = setup("ch_split_reads").await else {
        return;
    };
    ch_source(&mut s, "MergeTree").await;
    for (parallelism, streams) in [("3", 3), ("2", 2), ("8", 3), ("auto", 1), ("1", 1)] {
        let report = run(&s.clickhouse_source_manifest(parallelism), None)
            .await
            .unwrap_or_else(|e| panic!("parallelism {parallelism}: {e}"));
        assert_eq!(report.read_streams, streams, "parallelism {parallelism}");
        assert_eq!(report.rows_read, 90, "parallelism {parallelism}");
        assert_eq!(s.pg_target_rows().await, s.ch_source_rows().await);
    }
    s.ch.exec(&format!("DROP TABLE {}.src", s.db)).await;
    ch_source(&mut s, "ReplacingMergeTree").await;
    let report = run(&s.clickhouse_source_manifest("3"), None).await.unwrap();
    assert_eq!(
        report.read_streams, 1,
        "a ReplacingMergeTree source was split"
    );
    assert_eq!(s.pg_target_rows().await, s.ch_source_rows().await);
}

/// Reads every share of `parts`: per share, its ids in order or its error.
async fn read_shares(
    parts: Vec<Box<dyn dpone_host::connectors::ScanPart>>,
    schema: &dpone_host::model::Schema,
) -> Vec<Result<Vec<i64>, dpone_host::Error>> {
    use dpone_host::model::{DataType, Value, value_at};
    let mut shares = Vec::new();
    for part in parts {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let read = part.read(schema, tx).await;
        let mut ids = Vec::new();
        while let Some(batch) = rx.recv().await {
            for row in 0..batch.num_rows() {
                match value_at(batch.column(0), &DataType::Int64, row) {
                    Value::Int(id) => ids.push(id),
                    other => panic!("id {other:?}"),
                }
            }
        }
        ids.sort_unstable();
        shares.push(read.map(|()| ids));
    }
    shares
}

async fn split_in_three(
    source: &mut Box<dyn dpone_host::connectors::Source>,
    schema: &dpone_host::model::Schema,
    bounds: &dpone_host::model::ScanBounds,
) -> Vec<Box<dyn dpone_host::connectors::ScanPart>> {
    use dpone_host::manifest::Parallelism;
    source
        .split(schema, bounds, Parallelism::Streams(3))
        .await
        .unwrap()
}

/// A split read is the table at the moment of the split: rows inserted after it are left
/// out and parts from before it merged since are read whole. A merge of a part from before
/// the split with one from after fails the share of that partition, an added column or a
/// mutation every share, naming the way out.
#[tokio::test]
async fn a_split_read_is_the_table_at_the_split_or_fails() {
    use dpone_host::connectors::connect_source;
    use dpone_host::manifest::Manifest;
    use dpone_host::model::ScanBounds;
    let Some(mut s) = setup("ch_split_snapshot").await else {
        return;
    };
    ch_source(&mut s, "MergeTree").await;
    let manifest = Manifest::parse(&s.clickhouse_source_manifest("3"), &|_| None).unwrap();
    let mut source = connect_source(&manifest).await.unwrap();
    let schema = source.schema().await.unwrap();
    let bounds = ScanBounds {
        cursor: None,
        filter: Vec::new(),
        limit: None,
        row_versions: None,
        since: None,
    };
    let db = s.db.clone();

    // Parts from before the split merged since: read whole. A row inserted after it into
    // one of its partitions: left out. Merges stop first, so none joins that row to the
    // parts from before (that is the next case).
    let parts = split_in_three(&mut source, &schema, &bounds).await;
    assert_eq!(parts.len(), 3);
    merge_partition(&mut s, "20240101").await;
    s.ch.exec(&format!(
        "SYSTEM STOP MERGES {db}.src; INSERT INTO {db}.src VALUES (1000, '2024-01-02', 'late')"
    ))
    .await;
    let shares = read_shares(parts, &schema).await;
    s.ch.exec(&format!("SYSTEM START MERGES {db}.src")).await;
    let mut ids: Vec<i64> = shares.into_iter().flat_map(Result::unwrap).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=90).collect::<Vec<i64>>(),
        "not the rows at the split"
    );

    // A merge of a part from before the split with one from after: that share fails.
    let parts = split_in_three(&mut source, &schema, &bounds).await;
    s.ch.exec(&format!(
        "INSERT INTO {db}.src VALUES (2000, '2024-01-03', 'later')"
    ))
    .await;
    merge_partition(&mut s, "20240103").await;
    let shares = read_shares(parts, &schema).await;
    let failed = failures(&shares);
    assert_eq!(failed.len(), 1, "{shares:?}");
    let read: usize = shares
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(Vec::len)
        .sum();
    assert_eq!(read, 61, "2024-01-01 and 2024-01-02 (with the late row)");

    // A column added after the split (no mutation, no row changed): every share fails.
    let parts = split_in_three(&mut source, &schema, &bounds).await;
    assert_eq!(parts.len(), 3);
    s.ch.exec(&format!(
        "ALTER TABLE {db}.src ADD COLUMN extra String DEFAULT ''"
    ))
    .await;
    let shares = read_shares(parts, &schema).await;
    assert_eq!(failures(&shares).len(), 3, "{shares:?}");

    // A mutation begun after the split, which keeps the row count: every share fails.
    let parts = split_in_three(&mut source, &schema, &bounds).await;
    s.ch.exec(&format!(
        "ALTER TABLE {db}.src UPDATE note = 'v2' WHERE id = 2"
    ))
    .await;
    let shares = read_shares(parts, &schema).await;
    assert_eq!(failures(&shares).len(), 3, "{shares:?}");
}

/// The errors of `shares`, each checked to be the changed-table failure.
fn failures(shares: &[Result<Vec<i64>, dpone_host::Error>]) -> Vec<&dpone_host::Error> {
    let failed: Vec<&dpone_host::Error> = shares.iter().filter_map(|r| r.as_ref().err()).collect();
    for e in &failed {
        assert_eq!(e.kind, Kind::Source, "{e}");
        assert!(
            e.message.contains("changed while it was read in 3 streams")
                && e.message.contains("transfer.parallelism: 1"),
            "{e}"
        );
    }
    failed
}

/// Merges partition `id` of `<db>.src` into one part. OPTIMIZE does nothing while a
/// background merge holds the parts, so it is repeated until the partition has one part.
async fn merge_partition(s: &mut Setup, id: &str) {
    let parts = format!(
        "SELECT toString(count()) FROM system.parts WHERE database = '{}' AND table = 'src' AND active AND partition_id = '{id}'",
        s.db
    );
    for _ in 0..100 {
        s.ch.exec(&format!(
            "OPTIMIZE TABLE {}.src PARTITION ID '{id}' FINAL",
            s.db
        ))
        .await;
        if s.ch.rows(&parts, 1).await == [[Some("1".to_string())]] {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("partition {id} was not merged into one part");
}
