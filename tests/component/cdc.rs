//! `cdc` through the real host and component against the real PostgreSQL server: a
//! snapshot, then changes applied in commit order, a crash between the sink commit and the
//! slot acknowledgement, unchanged TOAST values, and slot hygiene.

use dpone_host::Kind;

use crate::cli::{host, host_binary, text};
use crate::strategies::{Pair, assert_rows, normalize};
use crate::support::{components_dir, run, run_fails, scratch};

const CDC: &str = "mode: cdc, unique_key: [id]";

async fn same(p: &mut Pair, what: &str) {
    let expected = normalize(p.source_rows("").await);
    assert_rows(&normalize(p.target_rows().await), &expected, what);
}

/// The slot's acknowledged LSN and the state's stored position, as integers.
async fn positions(p: &mut Pair) -> (u64, u64) {
    let rows = p
        .sink
        .rows(&format!(
            "SELECT CAST(confirmed_flush_lsn - '0/0' AS TEXT), \
             (SELECT entry_value FROM dpone.state_entries WHERE pipeline = '{}' AND entry_key = 'cdc.position') \
             FROM pg_replication_slots WHERE slot_name = 'dpone_{}'",
            p.name, p.name
        ))
        .await;
    let digits = |v: &Option<String>| -> u64 {
        v.as_deref()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    (digits(&rows[0][0]), digits(&rows[0][1]))
}

async fn cdc_applies_changes_in_commit_order(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest(CDC);
    let first = run(&yaml, None).await.unwrap();
    assert!(
        first.message.contains("snapshot of 300 rows"),
        "{}",
        first.message
    );
    same(&mut p, "snapshot").await;

    let t = p.source_table;
    p.change().await;
    p.delete_source("5, 77").await;
    for sql in [
        // Updated, then deleted, in one transaction.
        format!(
            "BEGIN; UPDATE {t} SET name = 'gone soon' WHERE id = 100; DELETE FROM {t} WHERE id = 100; COMMIT"
        ),
        // Deleted, then back with other values.
        format!("DELETE FROM {t} WHERE id = 200"),
        format!("INSERT INTO {t} VALUES (200, 'reborn', '0.10', '2024-02-03 00:00:00')"),
        // The key itself changes: the old key must go.
        format!("UPDATE {t} SET id = 1000 WHERE id = 300"),
        // Several updates of one row: the last one wins.
        format!("UPDATE {t} SET name = 'v1' WHERE id = 11"),
        format!("UPDATE {t} SET name = 'v2', amount = 0 WHERE id = 11"),
    ] {
        p.source.exec(&sql).await;
    }
    let second = run(&yaml, None).await.unwrap();
    assert!(
        second.message.contains("applied changes"),
        "{}",
        second.message
    );
    same(&mut p, "generation 1").await;
    let (acked, stored) = positions(&mut p).await;
    assert_eq!(
        acked, stored,
        "the slot is acknowledged up to the stored position"
    );

    // Other transactions (the state store's, other tests') move the log on; none of ours.
    let third = run(&yaml, None).await.unwrap();
    assert_eq!(
        (third.rows_written, third.rows_deleted),
        (0, 0),
        "{}",
        third.message
    );
    same(&mut p, "no change").await;

    p.revive().await;
    run(&yaml, None).await.unwrap();
    same(&mut p, "generation 2").await;
}

/// The process dies after the sink committed and before the slot was acknowledged. The
/// next run reads the same changes again and leaves the target exactly as the source.
async fn cdc_crash_before_ack_replays_without_duplicates(mut p: Pair) {
    p.seed(true).await;
    let dir = scratch(&format!("{}_cli", p.name));
    std::fs::write(dir.join("m.yaml"), p.manifest(CDC)).unwrap();
    let m = dir.join("m.yaml");
    let m = m.to_str().unwrap();
    let snapshot = host(&dir, &["run", "-m", m]);
    assert!(snapshot.status.success(), "{}", text(&snapshot));

    p.change().await;
    p.delete_source("3").await;
    let killed = std::process::Command::new(host_binary())
        .args(["run", "-m", m])
        .current_dir(&dir)
        .env("DPONE_COMPONENTS_DIR", components_dir())
        .env("DPONE_FAILPOINT", "cdc.before_ack")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "{}", text(&killed));
    assert!(
        text(&killed).contains("failpoint cdc.before_ack"),
        "{}",
        text(&killed)
    );
    same(&mut p, "the sink committed before the crash").await;
    let (acked, stored) = positions(&mut p).await;
    assert!(
        acked < stored,
        "the slot was not acknowledged: {acked} vs {stored}"
    );

    p.delete_source("4").await;
    let replay = host(&dir, &["run", "-m", m]);
    assert!(replay.status.success(), "{}", text(&replay));
    same(&mut p, "after the replay").await;
    let counts = p
        .sink
        .rows(&format!(
            "SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT id) AS TEXT) FROM {}",
            p.sink_table
        ))
        .await;
    assert_eq!(counts[0][0], counts[0][1], "no key twice");
    let (acked, stored) = positions(&mut p).await;
    assert_eq!(acked, stored);

    // Retiring the pipeline: the slot and publication go; a next run starts over.
    let dropped = host(&dir, &["cdc", "drop-slot", "-m", m]);
    assert!(text(&dropped).contains("dropped"), "{}", text(&dropped));
    p.source
        .exec(&format!(
            "UPDATE {} SET name = 'after the drop' WHERE id = 9",
            p.source_table
        ))
        .await;
    let fresh = host(&dir, &["run", "-m", m]);
    assert!(text(&fresh).contains("snapshot"), "{}", text(&fresh));
    same(&mut p, "new snapshot after the slot was dropped").await;
}

/// Updates that leave a TOASTed column alone do not carry its value. With REPLICA IDENTITY
/// FULL the old row does; within one window an earlier change of the key does; otherwise
/// the run refuses, says what to do and changes nothing.
async fn cdc_unchanged_toast_values(mut p: Pair) {
    let big = "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 400) g)";
    p.source
        .exec(&format!(
            "CREATE TABLE src.docs (id BIGINT PRIMARY KEY, small TEXT, big TEXT); \
             ALTER TABLE src.docs REPLICA IDENTITY FULL; \
             INSERT INTO src.docs SELECT i, 's' || i, {big} FROM generate_series(1, 3) i"
        ))
        .await;
    let yaml = p
        .manifest(CDC)
        .replace("src.orders", "src.docs")
        .replace("dst.orders", "dst.docs");
    let docs = "SELECT CAST(id AS TEXT), small, md5(big) FROM {} ORDER BY id";
    let rows = |table: &str| docs.replace("{}", table);
    run(&yaml, None).await.unwrap();

    p.source
        .exec("UPDATE src.docs SET small = 'changed' WHERE id = 1")
        .await;
    run(&yaml, None).await.unwrap();
    let expected = p.source.rows(&rows("src.docs")).await;
    assert_rows(
        &p.sink.rows(&rows("dst.docs")).await,
        &expected,
        "REPLICA IDENTITY FULL",
    );

    p.source
        .exec(&format!(
            "ALTER TABLE src.docs REPLICA IDENTITY DEFAULT; \
             INSERT INTO src.docs VALUES (4, 's4', {big}); \
             UPDATE src.docs SET small = 'changed in the same window' WHERE id = 4"
        ))
        .await;
    run(&yaml, None).await.unwrap();
    let expected = p.source.rows(&rows("src.docs")).await;
    assert_rows(
        &p.sink.rows(&rows("dst.docs")).await,
        &expected,
        "resolved within the window",
    );

    p.source
        .exec("UPDATE src.docs SET small = 'no big value' WHERE id = 2")
        .await;
    let before = p.sink.rows(&rows("dst.docs")).await;
    let err = run_fails(&yaml, None, Kind::Source).await;
    assert!(err.message.contains("REPLICA IDENTITY FULL"), "{err}");
    assert_rows(
        &p.sink.rows(&rows("dst.docs")).await,
        &before,
        "target after the refusal",
    );
}

/// A partitioned source: the publication publishes its partitions' changes under its own
/// name, so they reach the target.
async fn cdc_partitioned_source(mut p: Pair) {
    p.source
        .exec(
            "CREATE TABLE src.parts (id BIGINT NOT NULL, day DATE NOT NULL, note TEXT, PRIMARY KEY (id, day)) \
             PARTITION BY LIST (day); \
             CREATE TABLE src.parts_1 PARTITION OF src.parts FOR VALUES IN ('2024-01-01'); \
             CREATE TABLE src.parts_2 PARTITION OF src.parts FOR VALUES IN ('2024-01-02'); \
             INSERT INTO src.parts SELECT i, DATE '2024-01-01' + (i % 2), 'v' || i FROM generate_series(1, 40) i",
        )
        .await;
    let yaml = p
        .manifest("mode: cdc, unique_key: [id, day]")
        .replace("src.orders", "src.parts")
        .replace("dst.orders", "dst.parts");
    let rows = "SELECT CAST(id AS TEXT), CAST(day AS TEXT), note FROM {} ORDER BY id";
    let q = |t: &str| rows.replace("{}", t);
    run(&yaml, None).await.unwrap();
    p.source
        .exec(
            "UPDATE src.parts SET note = 'changed' WHERE id < 10; DELETE FROM src.parts WHERE id > 35; \
             INSERT INTO src.parts VALUES (100, '2024-01-02', 'new')",
        )
        .await;
    let report = run(&yaml, None).await.unwrap();
    assert!(report.rows_written > 0, "{}", report.message);
    let expected = p.source.rows(&q("src.parts")).await;
    assert_rows(
        &p.sink.rows(&q("dst.parts")).await,
        &expected,
        "partitioned source",
    );
}

/// An update that changes the key and leaves a TOASTed column alone, under the default
/// replica identity: the old row carries the key only, so the value is unknown. The run
/// refuses instead of writing NULL.
async fn cdc_key_change_with_toast_refuses(mut p: Pair) {
    let big = "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 400) g)";
    p.source
        .exec(&format!(
            "CREATE TABLE src.docs (id BIGINT PRIMARY KEY, small TEXT, big TEXT); \
             INSERT INTO src.docs SELECT i, 's' || i, {big} FROM generate_series(1, 3) i"
        ))
        .await;
    let yaml = p
        .manifest(CDC)
        .replace("src.orders", "src.docs")
        .replace("dst.orders", "dst.docs");
    run(&yaml, None).await.unwrap();
    p.source
        .exec("UPDATE src.docs SET id = 99 WHERE id = 3")
        .await;
    let err = run_fails(&yaml, None, Kind::Source).await;
    assert!(err.message.contains("REPLICA IDENTITY FULL"), "{err}");
    let nulls = p
        .sink
        .rows("SELECT CAST(COUNT(*) AS TEXT) FROM dst.docs WHERE big IS NULL")
        .await;
    assert_eq!(nulls[0][0].as_deref(), Some("0"));
}

/// `unique_key` must be the replica identity: otherwise updates would not carry it.
async fn cdc_refuses_a_key_that_is_not_the_replica_identity(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: cdc, unique_key: [amount, id]");
    run(&yaml, None).await.unwrap();
    p.source
        .exec(&format!(
            "UPDATE {} SET name = 'moved' WHERE id = 1",
            p.source_table
        ))
        .await;
    let err = run_fails(&yaml, None, Kind::Config).await;
    assert_eq!(
        err.field.as_deref(),
        Some("sink.strategy.unique_key"),
        "{err}"
    );
    assert!(err.message.contains("replica identity"), "{err}");
}

async fn cdc_needs_a_postgres_source(p: Pair) {
    let err = run_fails(&p.manifest(CDC), None, Kind::Unsupported).await;
    assert!(err.message.contains("PostgreSQL"), "{err}");
}

mod postgres_to_postgres {
    macro_rules! pg {
        ($($case:ident),*) => {
            $(#[tokio::test] async fn $case() {
                let Some(server) = crate::support::postgres_url() else { return };
                let pair = crate::strategies::Pair::postgres(&server, concat!("cdc_", stringify!($case))).await;
                super::$case(pair).await;
            })*
        };
    }
    pg!(
        cdc_applies_changes_in_commit_order,
        cdc_crash_before_ack_replays_without_duplicates,
        cdc_unchanged_toast_values,
        cdc_partitioned_source,
        cdc_key_change_with_toast_refuses,
        cdc_refuses_a_key_that_is_not_the_replica_identity
    );
}

#[tokio::test]
async fn cdc_needs_a_postgres_source_on_sqlite() {
    let pair = crate::strategies::Pair::sqlite("cdc_sqlite_source").await;
    let mut pair = pair;
    pair.seed(true).await;
    cdc_needs_a_postgres_source(pair).await;
}
