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

/// The slot's acknowledged LSN and the state's stored position (`pg:<LSN>` text inside the
/// state entry), as integers.
async fn positions(p: &mut Pair) -> (u64, u64) {
    let rows = p
        .sink
        .rows(&format!(
            "SELECT CAST(confirmed_flush_lsn AS TEXT), \
             (SELECT entry_value FROM dpone.state_entries WHERE pipeline = '{}' AND entry_key = 'cdc.position') \
             FROM pg_replication_slots WHERE slot_name = 'dpone_{}'",
            p.name, p.name
        ))
        .await;
    let lsn = |text: &str| -> u64 {
        let (hi, lo) = text.split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    let stored = rows[0][1].as_deref().unwrap_or_default();
    let position: String = stored
        .split_once("pg:")
        .unwrap_or_else(|| panic!("no pg: position in the state entry {stored}"))
        .1
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '/')
        .collect();
    (lsn(rows[0][0].as_deref().unwrap()), lsn(&position))
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
    // The first run creates the feed and says so; later runs create nothing.
    assert_eq!(first.source_objects_created.len(), 2, "{first:?}");
    assert!(first.source_objects_created[1].starts_with("replication slot "));
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
    assert!(second.source_objects_created.is_empty(), "{second:?}");
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

/// The feed is the source's, named in `source.change_feed`: the run creates and reads that
/// slot and publication, and `cdc drop-slot` drops the slot but keeps a publication the
/// manifest named (it may be the user's own).
async fn cdc_reads_the_feed_the_source_section_names(mut p: Pair) {
    p.seed(true).await;
    let slot = format!("{}_named", p.name);
    let feed =
        format!("change_feed: {{ slot: {slot}, publication: {slot}_pub }}, table: src.orders }}");
    let yaml = p.manifest(CDC).replacen("table: src.orders }", &feed, 1);
    run(&yaml, None).await.unwrap();
    p.change().await;
    let applied = run(&yaml, None).await.unwrap();
    assert!(
        applied.message.contains("applied changes"),
        "{}",
        applied.message
    );
    same(&mut p, "through the named feed").await;
    let named = |what: &str, q: String| (what.to_string(), q);
    for (what, query) in [
        named(
            "slot",
            format!("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        ),
        named(
            "publication",
            format!("SELECT pubname::text FROM pg_publication WHERE pubname = '{slot}_pub'"),
        ),
    ] {
        assert_eq!(p.source.rows(&query).await.len(), 1, "the named {what}");
    }
    let default = p
        .source
        .rows(&format!(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = 'dpone_{}'",
            p.name
        ))
        .await;
    assert!(default.is_empty(), "no default slot next to the named one");

    let dir = scratch(&format!("{}_drop", p.name));
    std::fs::write(dir.join("m.yaml"), &yaml).unwrap();
    let m = dir.join("m.yaml");
    let dropped = host(&dir, &["cdc", "drop-slot", "-m", m.to_str().unwrap()]);
    let said = text(&dropped);
    assert!(said.contains(&format!("slot {slot}: dropped")), "{said}");
    assert!(said.contains("kept (named in the manifest)"), "{said}");
}

/// A position stored by dpone 0.1 was an integer LSN: it is not a position, so the run says
/// so and takes a new snapshot, which converges whatever the target held.
async fn cdc_takes_a_snapshot_over_a_position_of_dpone_0_1(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest(CDC);
    run(&yaml, None).await.unwrap();
    p.sink
        .exec(&format!(
            "UPDATE dpone.state_entries SET entry_value = '{{\"int\":12345}}' \
             WHERE pipeline = '{}' AND entry_key = 'cdc.position'",
            p.name
        ))
        .await;
    p.change().await;
    let report = run(&yaml, None).await.unwrap();
    assert!(report.message.contains("snapshot"), "{}", report.message);
    same(&mut p, "snapshot over a 0.1 position").await;
    let (acked, stored) = positions(&mut p).await;
    assert_eq!(
        acked, stored,
        "the snapshot stored the feed's start as a pg: position"
    );
}

/// The 0.1 options `cdc.slot` and `cdc.publication` moved to the source section: a manifest
/// that still has them is refused naming the old field and the new one.
#[test]
fn cdc_slot_options_moved_to_the_source_section() {
    for strategy in [
        "mode: cdc, unique_key: [id], cdc.slot: s",
        "mode: cdc, unique_key: [id], cdc: { publication: p }",
    ] {
        let yaml = format!(
            "pipeline: moved\nsource: {{ kind: sqlite, path: a.db, table: t }}\n\
             sink: {{ kind: sqlite, path: b.db, table: t, strategy: {{ {strategy} }} }}\n"
        );
        let err = dpone_host::manifest::Manifest::parse(&yaml, &|_| None).unwrap_err();
        let field = err.field.clone().unwrap_or_default();
        assert!(field.starts_with("sink.strategy.cdc."), "{err}");
        assert!(err.message.contains("source.change_feed."), "{err}");
    }
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
        cdc_refuses_a_key_that_is_not_the_replica_identity,
        cdc_reads_the_feed_the_source_section_names,
        cdc_takes_a_snapshot_over_a_position_of_dpone_0_1
    );
}

#[tokio::test]
async fn cdc_needs_a_postgres_source_on_sqlite() {
    let pair = crate::strategies::Pair::sqlite("cdc_sqlite_source").await;
    let mut pair = pair;
    pair.seed(true).await;
    cdc_needs_a_postgres_source(pair).await;
}
