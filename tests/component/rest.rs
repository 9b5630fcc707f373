//! The REST source against the mock API of `rest_api.rs`: each pagination style, each
//! auth scheme, each fault mode, the incremental parameter, and a value that does not fit.

use dpone_host::Kind;
use serde_json::{Value as Json, json};

use crate::rest_api::{Auth, Faults, MockApi};
use crate::support::{Db, run, run_fails, scratch};

const RECORDS: i64 = 35;

fn record(id: i64, updated: &str) -> Json {
    json!({
        "id": id,
        "name": format!("n{id}"),
        "amount": format!("{}.50", id * 3),
        "updated_at": updated,
        "meta": { "tag": format!("t{}", id % 4) },
    })
}

fn records(n: i64) -> Vec<Json> {
    (1..=n)
        .map(|id| record(id, &format!("2024-01-01T00:00:{:02}", id % 60)))
        .collect()
}

/// A REST -> SQLite manifest over `api` at `path`; `extra` goes into the source section.
fn manifest(dir: &std::path::Path, api: &MockApi, path: &str, extra: &str, mode: &str) -> String {
    format!(
        "pipeline: rest_test\n\
         source:\n  kind: rest\n  table: orders\n  url: \"{base}{path}\"\n  query: {{ limit: \"10\" }}\n\
         \x20 retries: {{ attempts: 4, initial_ms: 10, max_ms: 100 }}\n{extra}\
         \x20 columns:\n\
         \x20   - {{ name: id, type: int64, nullable: false }}\n\
         \x20   - {{ name: name, type: text }}\n\
         \x20   - {{ name: amount, type: 'decimal(10,2)' }}\n\
         \x20   - {{ name: updated_at, type: timestamp, nullable: false }}\n\
         \x20   - {{ name: tag, type: text, path: meta.tag }}\n\
         \x20 primary_key: [id]\n\
         sink: {{ kind: sqlite, path: {d}/dst.db, table: t, strategy: {{ {mode} }} }}\n\
         state: {{ kind: sqlite, path: {d}/state.db }}\n",
        base = api.base,
        d = dir.display()
    )
}

const FULL: &str = "mode: full_refresh";

async fn ids(dir: &std::path::Path) -> Vec<i64> {
    let mut db = Db::sqlite(&dir.join("dst.db")).await;
    db.rows("SELECT CAST(id AS TEXT) FROM t ORDER BY id")
        .await
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn every_pagination_style_reads_every_record_once() {
    let api = MockApi::start(records(RECORDS)).await;
    for (name, path, pagination) in [
        ("none", "/all", "{ type: none }"),
        (
            "page_number",
            "/page",
            "{ type: page_number, param: page, size_param: limit, size: 10, total_path: total }",
        ),
        (
            "offset",
            "/offset",
            "{ type: offset, offset_param: offset, limit_param: limit, limit: 10, total_path: total }",
        ),
        (
            "cursor",
            "/cursor",
            "{ type: cursor, param: cursor, token_path: next_cursor }",
        ),
        (
            "page_number_concurrent",
            "/page",
            "{ type: page_number, param: page, size_param: limit, size: 10 }\n  concurrency: 3",
        ),
        (
            "offset_concurrent",
            "/offset",
            "{ type: offset, offset_param: offset, limit_param: limit, limit: 10 }\n  concurrency: 4",
        ),
        ("link_header", "/link", "{ type: link_header }"),
        ("next_link", "/next", "{ type: next_link, next_path: next }"),
    ] {
        let dir = scratch(&format!("rest_{name}"));
        let records_path = if matches!(name, "none" | "link_header") {
            ""
        } else {
            "  records_path: data\n"
        };
        let extra = format!("{records_path}  pagination: {pagination}\n");
        let before = api.requests().len();
        let report = run(&manifest(&dir, &api, path, &extra, FULL), None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.rows_written, RECORDS as u64, "{name}");
        assert_eq!(ids(&dir).await, (1..=RECORDS).collect::<Vec<_>>(), "{name}");
        let requests = api.requests().len() - before;
        // Concurrent pages may fetch a few past the last one.
        assert!(
            (1..=8).contains(&requests),
            "{name}: {requests} requests for {RECORDS} records in pages of 10"
        );
    }
}

#[tokio::test]
async fn each_auth_scheme_is_sent_and_no_secret_shows() {
    let api = MockApi::start(records(5)).await;
    for (name, server, client) in [
        (
            "bearer",
            Auth::Bearer("tok-SECRET-1".into()),
            "{ type: bearer, token: tok-SECRET-1 }",
        ),
        (
            "basic",
            Auth::Basic("me".into(), "pw-SECRET-2".into()),
            "{ type: basic, username: me, password: pw-SECRET-2 }",
        ),
        (
            "key_header",
            Auth::KeyHeader("key-SECRET-3".into()),
            "{ type: api_key, name: X-Api-Key, value: key-SECRET-3 }",
        ),
        (
            "key_query",
            Auth::KeyQuery("key-SECRET-4".into()),
            "{ type: api_key, name: api_key, value: key-SECRET-4, in: query }",
        ),
    ] {
        api.set_auth(server);
        let dir = scratch(&format!("rest_auth_{name}"));
        let good = manifest(&dir, &api, "/all", &format!("  auth: {client}\n"), FULL);
        let report = run(&good, None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.rows_written, 5, "{name}");
        assert!(
            !format!("{report:?}").contains("SECRET"),
            "{name}: {report:?}"
        );
        // A wrong secret is refused by the API; the error names the URL and the status,
        // never the secret.
        let wrong = good.replace("SECRET", "WRONG-SECRET");
        let err = run_fails(&wrong, None, Kind::Source).await;
        assert!(err.message.contains("401"), "{name}: {err}");
        assert!(err.message.contains(&api.base), "{name}: {err}");
        assert!(!err.message.contains("SECRET"), "{name}: {err}");
    }
}

#[tokio::test]
async fn transient_faults_are_retried_and_persistent_ones_fail_cleanly() {
    let api = MockApi::start(records(RECORDS)).await;
    let dir = scratch("rest_faults");
    let paged = "  records_path: data\n  timeout_seconds: 1\n  pagination: { type: page_number, param: page, size_param: limit, size: 10 }\n";
    let yaml = manifest(&dir, &api, "/page", paged, FULL);
    for (name, faults) in [
        (
            "429 and 500",
            Faults {
                rate_limited: 2,
                server_errors: 1,
                ..Faults::default()
            },
        ),
        (
            "a body cut short",
            Faults {
                truncated: 1,
                ..Faults::default()
            },
        ),
        (
            "a page slower than the timeout",
            Faults {
                slow: 1,
                slow_ms: 2500,
                ..Faults::default()
            },
        ),
    ] {
        api.set_faults(faults);
        let report = run(&yaml, None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.rows_written, RECORDS as u64, "{name}");
    }
    // Persistent failures: the run fails naming the URL, the status and the attempts,
    // and the target keeps what the last good run wrote.
    api.set_records(records(3));
    api.set_faults(Faults {
        server_errors: 100,
        ..Faults::default()
    });
    let err = run_fails(&yaml, None, Kind::Source).await;
    for said in [
        "500",
        "after 4 attempt(s)",
        "/page?",
        "the mock failed on purpose",
    ] {
        assert!(err.message.contains(said), "{said} not in: {err}");
    }
    assert_eq!(
        ids(&dir).await.len(),
        RECORDS as usize,
        "a failed run changed the target"
    );
    api.set_faults(Faults::default());
}

/// Offset pages that shift under concurrent writes repeat records; the declared key keeps
/// each record once, so the key check of the load passes.
#[tokio::test]
async fn a_record_repeated_across_pages_is_kept_once() {
    let api = MockApi::start(records(RECORDS)).await;
    api.set_faults(Faults {
        shifting_offsets: true,
        ..Faults::default()
    });
    let dir = scratch("rest_shifting");
    let extra = "  records_path: data\n  pagination: { type: offset, offset_param: offset, limit_param: limit, limit: 10 }\n";
    let report = run(&manifest(&dir, &api, "/offset", extra, FULL), None)
        .await
        .unwrap();
    assert_eq!(report.rows_written, RECORDS as u64);
    assert_eq!(ids(&dir).await, (1..=RECORDS).collect::<Vec<_>>());
}

/// Without a source `primary_key`, the strategy's `unique_key` is the key repeated records
/// are dropped by; `dedupe: false` keeps them, and then the load's key check refuses them.
#[tokio::test]
async fn repeated_records_are_dropped_by_the_unique_key_unless_dedupe_is_off() {
    let api = MockApi::start(records(RECORDS)).await;
    api.set_faults(Faults {
        shifting_offsets: true,
        ..Faults::default()
    });
    let offset = "  records_path: data\n  pagination: { type: offset, offset_param: offset, limit_param: limit, limit: 10 }\n";
    let mode = "mode: incremental_merge, unique_key: [id]";
    let dir = scratch("rest_unique_key");
    let keyless = |extra: &str| {
        manifest(&dir, &api, "/offset", &format!("{offset}{extra}"), mode)
            .replace("  primary_key: [id]\n", "")
    };
    let report = run(&keyless(""), None).await.unwrap();
    assert_eq!(report.rows_written, RECORDS as u64);
    assert_eq!(ids(&dir).await, (1..=RECORDS).collect::<Vec<_>>());

    run_fails(&keyless("  dedupe: false\n"), None, Kind::KeyViolation).await;
    assert_eq!(
        ids(&dir).await.len(),
        RECORDS as usize,
        "the target changed"
    );

    let unknown = manifest(
        &dir,
        &api,
        "/offset",
        offset,
        "mode: incremental_merge, unique_key: [nope]",
    );
    let unknown = run_fails(&unknown, None, Kind::Config).await;
    assert_eq!(
        unknown.field.as_deref(),
        Some("sink.strategy.unique_key"),
        "{unknown}"
    );
}

/// A read with `incremental` resumes after the largest cursor it loaded: the position
/// `rest:<column>=<value>` is stored with the state, sent as the parameter of the next run
/// (which reads only what is new), and kept when nothing new came.
#[tokio::test]
async fn the_position_is_the_largest_cursor_read_and_the_next_run_starts_after_it() {
    let api = MockApi::start(records(20)).await;
    let dir = scratch("rest_position");
    let extra = "  records_path: data\n  pagination: { type: cursor, param: cursor, token_path: next_cursor }\n\
                 \x20 incremental: { cursor_column: updated_at, param: since }\n";
    // No cursor_column: the position alone keeps the second run to what is new.
    let yaml = manifest(
        &dir,
        &api,
        "/cursor",
        extra,
        "mode: incremental_merge, unique_key: [id]",
    );
    let position = async || {
        let mut db = Db::sqlite(&dir.join("state.db")).await;
        db.rows("SELECT entry_value FROM dpone_state_entries WHERE entry_key = 'position.source'")
            .await
            .first()
            .and_then(|r| r[0].clone())
    };
    assert_eq!(run(&yaml, None).await.unwrap().rows_written, 20);
    let first = position().await.expect("no position stored");
    assert!(
        first.contains(r#"rest:updated_at=\"2024-01-01T00:00:20.000000\""#),
        "{first}"
    );

    let mut more = records(20);
    more.push(record(21, "2024-02-02T00:00:00"));
    api.set_records(more);
    let before = api.requests().len();
    assert_eq!(run(&yaml, None).await.unwrap().rows_read, 1);
    let asked = api.requests()[before..].join("\n");
    assert!(asked.contains("since=2024-01-01T00%3A00%3A20"), "{asked}");
    let second = position().await.unwrap();
    assert!(second.contains("2024-02-02T00:00:00"), "{second}");

    assert_eq!(run(&yaml, None).await.unwrap().rows_read, 0);
    assert_eq!(
        position().await.unwrap(),
        second,
        "an empty read keeps the position"
    );
    assert_eq!(ids(&dir).await.len(), 21);
}

/// With `incremental`, the API filters by the stored cursor; the host filters too, so the
/// run's rows are exactly those past the cursor.
#[tokio::test]
async fn the_incremental_parameter_carries_the_stored_cursor() {
    let api = MockApi::start(records(20)).await;
    let dir = scratch("rest_incremental");
    let extra = "  records_path: data\n  pagination: { type: page_number, param: page, size_param: limit, size: 10 }\n\
                 \x20 incremental: { cursor_column: updated_at, param: since }\n";
    let yaml = manifest(
        &dir,
        &api,
        "/page",
        extra,
        "mode: incremental_merge, unique_key: [id], cursor_column: updated_at",
    );
    let first = run(&yaml, None).await.unwrap();
    assert_eq!(first.rows_read, 20);
    let mut changed = records(20);
    changed[4] = record(5, "2024-02-01T00:00:00");
    changed.push(record(21, "2024-02-02T00:00:00"));
    api.set_records(changed);
    let before = api.requests().len();
    let second = run(&yaml, None).await.unwrap();
    assert_eq!(second.rows_read, 2, "{second:?}");
    let asked = api.requests()[before..].join("\n");
    assert!(
        asked.contains("since=2024-01-01T00%3A00%3A20")
            || asked.contains("since=2024-01-01T00:00:20"),
        "the stored cursor was not sent: {asked}"
    );
    assert_eq!(ids(&dir).await.len(), 21);
}

#[tokio::test]
async fn a_value_that_does_not_fit_fails_with_its_page_and_record() {
    let mut bad = records(15);
    bad[12]["amount"] = json!("twelve");
    let api = MockApi::start(bad).await;
    let dir = scratch("rest_bad_value");
    let extra = "  records_path: data\n  pagination: { type: page_number, param: page, size_param: limit, size: 10 }\n";
    let err = run_fails(
        &manifest(&dir, &api, "/page", extra, FULL),
        None,
        Kind::Source,
    )
    .await;
    assert!(
        err.message.contains("page 2, record 2, column `amount`"),
        "{err}"
    );
    assert!(err.message.contains("twelve"), "{err}");
}

#[tokio::test]
async fn more_pages_than_max_pages_is_an_error_not_a_silent_cut() {
    let api = MockApi::start(records(RECORDS)).await;
    let dir = scratch("rest_max_pages");
    let extra = "  records_path: data\n  max_pages: 2\n  pagination: { type: page_number, param: page, size_param: limit, size: 10 }\n";
    let err = run_fails(
        &manifest(&dir, &api, "/page", extra, FULL),
        None,
        Kind::Config,
    )
    .await;
    assert_eq!(err.field.as_deref(), Some("source.max_pages"), "{err}");
}

/// The CLI's log lines (retry warnings name the URL) and its error never carry a secret,
/// neither a header token nor an API key sent as a query parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    let api = MockApi::start(records(5)).await;
    for (server, client) in [
        (
            Auth::KeyQuery("key-SECRET-5".into()),
            "{ type: api_key, name: api_key, value: \"${REST_KEY}\", in: query }",
        ),
        (
            Auth::Bearer("key-SECRET-5".into()),
            "{ type: bearer, token: \"${REST_KEY}\" }",
        ),
    ] {
        api.set_auth(server);
        api.set_faults(Faults {
            server_errors: 2,
            ..Faults::default()
        });
        let dir = scratch("rest_secret_log");
        let yaml = manifest(&dir, &api, "/all", &format!("  auth: {client}\n"), FULL);
        std::fs::write(dir.join("m.yaml"), &yaml).unwrap();
        let run = |key: &str| {
            std::process::Command::new(crate::cli::host_binary())
                .args(["run", "-m", "m.yaml"])
                .current_dir(&dir)
                .env("DPONE_COMPONENTS_DIR", crate::support::components_dir())
                .env("REST_KEY", key)
                .output()
                .unwrap()
        };
        let ok = run("key-SECRET-5");
        let said = crate::cli::text(&ok);
        assert!(ok.status.success(), "{said}");
        assert!(said.contains("retrying"), "no retry was logged: {said}");
        let refused = run("key-SECRET-6");
        let said = format!("{said}{}", crate::cli::text(&refused));
        assert_eq!(refused.status.code(), Some(3), "{said}");
        assert!(!said.contains("SECRET"), "a secret reached the log: {said}");
    }
}
