//! `backfill` campaigns through the real host and component: chunks, the ledger, parallel
//! workers, a worker killed mid-chunk, and configuration errors.

use dpone_host::Kind;
use dpone_host::backfill::Start;

use crate::cli::{host, text};
use crate::strategies::{Pair, Rows, assert_rows, normalize};
use crate::support::{Db, run, run_campaign};

fn replace_campaign(to: u32, step: u32) -> String {
    format!(
        "mode: backfill, unique_key: [id], backfill: {{ inner_mode: replace, \
         chunk: {{ column: id, from: 1, to: {to}, step: {step} }}, parallel_workers: 2 }}"
    )
}

async fn same(p: &mut Pair, what: &str) {
    let expected: Rows = normalize(p.source_rows("").await);
    let actual = normalize(p.target_rows().await);
    assert_rows(&actual, &expected, what);
}

/// Three generations: each campaign replaces its chunks' ranges, so deleted rows go and
/// changed rows change; a finished campaign runs nothing again.
async fn backfill_replace_by_chunks(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest(&replace_campaign(300, 50));
    let report = run_campaign(&yaml, Start::Run).await.unwrap();
    assert_eq!((report.chunks, report.ran, report.done), (6, 6, 6));
    assert_eq!(report.rows_written, 300);
    same(&mut p, "generation 0").await;
    let again = run_campaign(&yaml, Start::Run).await.unwrap();
    assert_eq!(
        (again.ran, again.done),
        (0, 6),
        "a finished campaign runs nothing"
    );

    p.change().await;
    p.delete_source("5, 77, 150").await;
    let yaml = p.manifest(&replace_campaign(320, 50));
    let report = run_campaign(&yaml, Start::Run).await.unwrap();
    assert_eq!((report.chunks, report.done), (7, 7));
    same(&mut p, "generation 1: changes, inserts and deletes").await;

    p.revive().await;
    let yaml = p.manifest(&replace_campaign(320, 40));
    run_campaign(&yaml, Start::Run).await.unwrap();
    same(&mut p, "generation 2: a deleted key is back").await;
    // Idempotent: the same data through yet another chunking changes nothing.
    let yaml = p.manifest(&replace_campaign(320, 7));
    let report = run_campaign(&yaml, Start::Run).await.unwrap();
    assert_eq!(report.done, 46);
    same(&mut p, "generation 2 again").await;
}

/// `incremental_merge` over timestamp chunks (half-open), then `partition_replace`.
async fn backfill_merge_and_partition_modes(mut p: Pair) {
    p.seed(true).await;
    let merge = |to: &str| {
        format!(
            "mode: backfill, unique_key: [id], backfill: {{ inner_mode: incremental_merge, \
             chunk: {{ column: updated_at, from: '2024-01-01 00:00:00', to: '{to}', step: 7 days }} }}"
        )
    };
    let report = run_campaign(&p.manifest(&merge("2024-02-01 00:00:00")), Start::Run)
        .await
        .unwrap();
    assert_eq!(report.chunks, 5, "31 days in 7-day chunks");
    same(&mut p, "merge generation 0").await;
    p.change().await;
    run_campaign(&p.manifest(&merge("2024-03-01 00:00:00")), Start::Run)
        .await
        .unwrap();
    same(&mut p, "merge generation 1").await;

    let partitions = |max: u32| {
        format!(
            "mode: backfill, unique_key: [id], partition: {{ column: id, max_partitions_per_run: {max} }}, \
             backfill: {{ inner_mode: partition_replace, chunk: {{ column: id, from: 1, to: 320, step: 100 }} }}"
        )
    };
    // Partitions (here: each id) hold whole rows of one chunk, as partition_replace needs.
    p.source
        .exec(&format!(
            "UPDATE {} SET name = 'repartitioned' WHERE id % 7 = 0",
            p.source_table
        ))
        .await;
    run_campaign(&p.manifest(&partitions(100)), Start::Run)
        .await
        .unwrap();
    same(&mut p, "partition_replace generation 2").await;
    // Too many partitions in a chunk: a config error naming the field, the campaign stops.
    let before = p.target_rows().await;
    let err = run_campaign(&p.manifest(&partitions(10)), Start::Run)
        .await
        .unwrap_err();
    assert_eq!(err.kind, Kind::Config, "{err}");
    assert_eq!(
        err.field.as_deref(),
        Some("sink.strategy.partition.max_partitions_per_run"),
        "{err}"
    );
    assert_rows(
        &p.target_rows().await,
        &before,
        "target after the refused chunk",
    );
}

async fn backfill_refuses_bad_configuration(mut p: Pair) {
    p.seed(true).await;
    let cases = [
        (
            "mode: backfill, backfill: { inner_mode: replace, chunk: { column: id, from: 1, to: 10, step: 0 } }",
            "sink.strategy.backfill.chunk.step",
        ),
        (
            "mode: backfill, backfill: { inner_mode: replace, chunk: { column: name, from: 1, to: 10, step: 1 } }",
            "sink.strategy.backfill.chunk.column",
        ),
        (
            "mode: backfill, backfill: { inner_mode: replace, chunk: { column: id, from: 1, to: 10 } }",
            "sink.strategy.backfill.chunk.step",
        ),
        (
            "mode: backfill, backfill: { inner_mode: upsert, chunk: { column: id, from: 1, to: 10, step: 5 } }",
            "sink.strategy.backfill.inner_mode",
        ),
        (
            "mode: backfill, backfill: { inner_mode: incremental_merge, chunk: { column: id, from: 1, to: 10, step: 5 } }",
            "sink.strategy.unique_key",
        ),
        (
            "mode: backfill, backfill: { inner_mode: replace, parallel_workers: 0, chunk: { column: id, from: 1, to: 10, step: 5 } }",
            "sink.strategy.backfill.parallel_workers",
        ),
    ];
    for (strategy, field) in cases {
        let err = run_campaign(&p.manifest(strategy), Start::Run)
            .await
            .unwrap_err();
        assert_eq!(err.kind, Kind::Config, "{strategy}: {err}");
        assert_eq!(err.field.as_deref(), Some(field), "{strategy}: {err}");
        assert!(
            !p.target_exists().await,
            "{strategy}: the target was created"
        );
    }
    let yaml = p.manifest(&replace_campaign(10, 5));
    let err = run(&yaml, None).await.unwrap_err();
    assert_eq!(err.kind, Kind::Config);
    assert!(err.message.contains("dpone-host backfill"), "{err}");
    let err = run_campaign(&yaml, Start::Resume).await.unwrap_err();
    assert!(err.message.contains("has not started"), "{err}");
}

/// A chunk with duplicate keys fails for good (a key violation is not retried) while the
/// others finish; once the source is fixed, `retry-failed` runs just that chunk.
async fn backfill_retry_failed_reruns_only_failed_chunks(mut p: Pair) {
    p.seed(false).await;
    let t = p.source_table;
    p.source
        .exec(&format!(
            "INSERT INTO {t} VALUES (120, 'duplicate', '1.00', '2024-03-01 00:00:00.000000')"
        ))
        .await;
    let yaml = p.manifest(&replace_campaign(300, 50));
    let err = run_campaign(&yaml, Start::Run).await.unwrap_err();
    assert!(
        err.message.contains("1 of 6 chunks failed") && err.message.contains("retry-failed"),
        "{err}"
    );
    assert_eq!(
        p.sink.count(p.sink_table).await,
        250,
        "the five good chunks landed"
    );
    p.source
        .exec(&format!("DELETE FROM {t} WHERE name = 'duplicate'"))
        .await;
    let resumed = run_campaign(&yaml, Start::Resume).await.unwrap_err();
    assert!(
        resumed.message.contains("1 of 6 chunks failed"),
        "resume leaves failed chunks: {resumed}"
    );
    let retried = run_campaign(&yaml, Start::RetryFailed).await.unwrap();
    assert_eq!((retried.ran, retried.done, retried.failed), (1, 6, 0));
    same(&mut p, "after retry-failed").await;
}

/// The process dies while chunk 3 of 6 commits (as `kill -9` would); `backfill resume`
/// waits for the dead worker's lease to expire, retries that chunk and finishes the rest,
/// each chunk done exactly once and every row exactly once in the target.
async fn backfill_killed_worker_resumes_exactly_once(mut p: Pair) {
    p.seed(true).await;
    let dir = crate::support::scratch(&format!("{}_cli", p.name));
    let strategy = "mode: backfill, unique_key: [id], backfill: { inner_mode: replace, \
                    chunk: { column: id, from: 1, to: 300, step: 50 }, \
                    retry_policy: { lease_seconds: 2 } }";
    std::fs::write(dir.join("m.yaml"), p.manifest(strategy)).unwrap();
    let m = dir.join("m.yaml");
    let m = m.to_str().unwrap();

    let killed = std::process::Command::new(crate::cli::host_binary())
        .args(["backfill", "run", "-m", m])
        .current_dir(&dir)
        .env("DPONE_COMPONENTS_DIR", crate::support::components_dir())
        .env("DPONE_FAILPOINT", "sink.before_commit@3")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "{}", text(&killed));
    assert!(
        text(&killed).contains("failpoint sink.before_commit"),
        "{}",
        text(&killed)
    );
    assert_eq!(
        p.sink.count(p.sink_table).await,
        100,
        "chunks 1 and 2 committed"
    );

    let status = host(&dir, &["backfill", "status", "-m", m]);
    let shown = text(&status);
    assert!(status.status.success(), "{shown}");
    assert!(
        shown.contains("done     2") && shown.contains("running  1"),
        "{shown}"
    );

    let resumed = host(&dir, &["backfill", "resume", "-m", m]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    same(&mut p, "after resume").await;
    let rows = p
        .sink
        .rows(&format!(
            "SELECT CAST(COUNT(*) AS TEXT), CAST(COUNT(DISTINCT id) AS TEXT) FROM {}",
            p.sink_table
        ))
        .await;
    assert_eq!(rows[0][0], rows[0][1], "no row twice");
    let mut state = Db::postgres(&p.source_address).await;
    let ledger = state
        .rows("SELECT CAST(chunk_index AS TEXT), status, CAST(attempts AS TEXT) FROM dpone.backfill_chunks ORDER BY chunk_index")
        .await;
    let expected: Vec<Vec<Option<String>>> = (0..6)
        .map(|i| {
            let attempts = if i == 2 { "2" } else { "1" };
            vec![
                Some(i.to_string()),
                Some("done".into()),
                Some(attempts.into()),
            ]
        })
        .collect();
    assert_eq!(
        ledger, expected,
        "each chunk done once; the killed one retried once"
    );
}

macro_rules! backfill_pairs {
    ($($case:ident),* $(,)?) => {
        mod sqlite_to_sqlite {
            $(#[tokio::test] async fn $case() {
                super::$case(super::Pair::sqlite(concat!("bf_sqlite_", stringify!($case))).await).await;
            })*
        }
        mod postgres_to_postgres {
            $(#[tokio::test] async fn $case() {
                let Some(server) = crate::support::postgres_url() else { return };
                super::$case(super::Pair::postgres(&server, concat!("bf_pg_", stringify!($case))).await).await;
            })*
        }
        mod sqlite_to_postgres {
            $(#[tokio::test] async fn $case() {
                let Some(server) = crate::support::postgres_url() else { return };
                super::$case(super::Pair::sqlite_to_postgres(&server, concat!("bf_s2p_", stringify!($case))).await).await;
            })*
        }
    };
}

backfill_pairs!(
    backfill_replace_by_chunks,
    backfill_retry_failed_reruns_only_failed_chunks,
    backfill_merge_and_partition_modes,
    backfill_refuses_bad_configuration,
);

mod postgres_only {
    #[tokio::test]
    async fn backfill_killed_worker_resumes_exactly_once() {
        let Some(server) = crate::support::postgres_url() else {
            return;
        };
        let pair = super::Pair::postgres(&server, "bf_killed_worker").await;
        super::backfill_killed_worker_resumes_exactly_once(pair).await;
    }
}
