//! `partition_replace` on a declaratively partitioned PostgreSQL target: the native path
//! swaps exactly the touched leaves; `auto` falls back to delete + insert where a swap
//! would lose rows, `required` refuses instead.

use dpone_host::Kind;

use crate::support::{Db, fresh_postgres_database, run, run_fails};

const LEAF_OIDS: &str = "SELECT c.relname::text, CAST(c.oid AS TEXT) FROM pg_inherits i \
     JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'dst.events'::regclass ORDER BY 1";
const ROWS: &str = "SELECT CAST(id AS TEXT), CAST(day AS TEXT), note FROM {} ORDER BY id";

#[tokio::test]
async fn native_partitions_swap_only_the_touched_leaves() {
    let Some(server) = crate::support::postgres_url() else {
        return;
    };
    let url = fresh_postgres_database(&server, "native_partitions").await;
    let mut db = Db::postgres(&url).await;
    db.exec(
        "CREATE SCHEMA src; CREATE SCHEMA dst;
         CREATE TABLE src.events (id BIGINT NOT NULL, day DATE NOT NULL, note TEXT, PRIMARY KEY (id, day));
         INSERT INTO src.events SELECT i, DATE '2024-01-01' + (i % 3), 'v1 ' || i FROM generate_series(1, 90) i;
         CREATE TABLE dst.events (id BIGINT NOT NULL, day DATE NOT NULL, note TEXT, PRIMARY KEY (id, day))
           PARTITION BY LIST (day);
         CREATE TABLE dst.events_d1 PARTITION OF dst.events FOR VALUES IN ('2024-01-01');
         CREATE TABLE dst.events_d2 PARTITION OF dst.events FOR VALUES IN ('2024-01-02');
         CREATE TABLE dst.events_d3 PARTITION OF dst.events FOR VALUES IN ('2024-01-03');
         CREATE TABLE dst.events_rest PARTITION OF dst.events FOR VALUES IN ('2024-01-04', '2024-01-05');",
    )
    .await;
    let manifest = |mode: &str, days: &str| {
        format!(
            "pipeline: native_partitions\nsource: {{ kind: postgres, url: \"{url}\", table: src.events }}\n\
             sink:\n  kind: postgres\n  url: \"{url}\"\n  table: dst.events\n  strategy: {{ mode: partition_replace, \
             partition: {{ column: day, native_mode: {mode} }}, predicate: [{{ column: day, in: [{days}] }}] }}\n\
             state: {{ kind: postgres, url: \"{url}\" }}\n"
        )
    };
    let all = "'2024-01-01', '2024-01-02', '2024-01-03'";
    let report = run(&manifest("required", all), None).await.unwrap();
    assert_eq!(report.rows_written, 90);
    let rows = |t: &str| ROWS.replace("{}", t);
    let expected = db.rows(&rows("src.events")).await;
    assert_eq!(db.rows(&rows("dst.events")).await, expected);
    let before = db.rows(LEAF_OIDS).await;

    // Only 2024-01-02 changes: its leaf is swapped (new oid), the others are untouched.
    db.exec("UPDATE src.events SET note = 'v2' WHERE day = '2024-01-02'")
        .await;
    run(&manifest("required", "'2024-01-02'"), None)
        .await
        .unwrap();
    assert_eq!(
        db.rows(&rows("dst.events")).await,
        db.rows(&rows("src.events")).await
    );
    let after = db.rows(LEAF_OIDS).await;
    let names: Vec<_> = after.iter().map(|r| r[0].clone()).collect();
    assert_eq!(
        names,
        before.iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    );
    for (b, a) in before.iter().zip(&after) {
        let swapped = b[1] != a[1];
        assert_eq!(
            swapped,
            a[0].as_deref() == Some("events_d2"),
            "leaf {:?}: before {:?}, after {:?}",
            a[0],
            b[1],
            a[1]
        );
    }

    // A leaf holding two values with only one staged: a swap would drop the other.
    db.exec(
        "INSERT INTO src.events VALUES (1000, '2024-01-04', 'four'), (1001, '2024-01-05', 'five');
         INSERT INTO dst.events VALUES (1001, '2024-01-05', 'five')",
    )
    .await;
    let before = db.rows(&rows("dst.events")).await;
    let err = run_fails(&manifest("required", "'2024-01-04'"), None, Kind::Config).await;
    assert_eq!(
        err.field.as_deref(),
        Some("sink.strategy.partition.native_mode"),
        "{err}"
    );
    assert_eq!(
        db.rows(&rows("dst.events")).await,
        before,
        "nothing replaced"
    );
    run(&manifest("auto", "'2024-01-04'"), None).await.unwrap();
    assert_eq!(
        db.rows(&rows("dst.events")).await,
        db.rows(&rows("src.events")).await,
        "auto fell back to delete + insert and kept 2024-01-05"
    );
}
