//! The ClickHouse sink beyond the behaviour model: native `REPLACE PARTITION`, the inputs
//! it refuses (a Nullable key in the target, a partition key that is not the column, too
//! many partitions), and a crash between partition replacements that the re-run repairs.

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
