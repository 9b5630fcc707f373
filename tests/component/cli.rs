//! The `dpone-host` binary as users and schedulers call it: subcommands, output, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{Db, component, components_dir, scratch};

pub(crate) fn host_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/dpone-host");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask build`",
        bin.display()
    );
    bin
}

pub(crate) fn host(dir: &Path, args: &[&str]) -> Output {
    Command::new(host_binary())
        .args(args)
        .current_dir(dir)
        .env("DPONE_COMPONENTS_DIR", components_dir())
        .output()
        .unwrap()
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A SQLite source with 50 rows and a merge manifest in `dir`.
async fn setup(name: &str, strategy: &str) -> PathBuf {
    let dir = scratch(name);
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT, updated_at TIMESTAMP NOT NULL)",
    )
    .await;
    for id in 1..=50 {
        src.exec(&format!(
            "INSERT INTO orders VALUES ({id}, 'n{id}', '2024-01-01 00:00:{:02}.000000')",
            id % 60
        ))
        .await;
    }
    let manifest = format!(
        "pipeline: {name}\nsource: {{ kind: sqlite, path: src.db, table: orders }}\n\
         sink:\n  kind: sqlite\n  path: dst.db\n  table: orders\n  strategy: {{ {strategy} }}\n\
         state: {{ kind: sqlite, path: state.db }}\n"
    );
    std::fs::write(dir.join("m.yaml"), manifest).unwrap();
    dir
}

const MERGE: &str = "mode: incremental_merge, unique_key: [id], cursor_column: updated_at";

#[tokio::test]
async fn validate_accepts_a_good_manifest_and_names_the_bad_field() {
    let dir = setup("cli_validate", MERGE).await;
    let ok = host(&dir, &["validate", "--manifest", "m.yaml"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("valid (incremental_merge 0.2.0, sqlite -> sqlite)"));

    let bad = setup("cli_validate_bad", &format!("{MERGE}, colour: red")).await;
    let out = host(&bad, &["validate", "--manifest", "m.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out)
            .contains("config error: sink.strategy.colour: not an option of incremental_merge"),
        "{}",
        text(&out)
    );
    assert!(!bad.join("dst.db").exists(), "validate connects nowhere");
}

#[tokio::test]
async fn plan_prints_the_statements_and_writes_nothing() {
    let dir = setup("cli_plan", MERGE).await;
    let out = host(&dir, &["plan", "--manifest", "m.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "CREATE TABLE",
        "-- scan source: SELECT \"id\", \"note\", \"updated_at\" FROM \"orders\"",
        "-- bulk load into __dpone_stg_",
        "-- state: cursor.updated_at = timestamp(",
        "BEGIN",
        "DELETE FROM \"orders\" WHERE EXISTS",
        "INSERT INTO \"orders\"",
        "COMMIT",
        "nothing was written.",
    ] {
        assert!(
            stdout.contains(expected),
            "plan lacks {expected:?}:\n{stdout}"
        );
    }
    let mut dst = Db::sqlite(&dir.join("dst.db")).await;
    assert!(
        dst.rows("SELECT name FROM sqlite_master").await.is_empty(),
        "plan created tables"
    );
}

#[tokio::test]
async fn run_reports_json_and_state_show_lists_cursor_and_history() {
    let dir = setup("cli_run", MERGE).await;
    let out = host(
        &dir,
        &[
            "run",
            "--manifest",
            "m.yaml",
            "--report-json",
            "report.json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["rows_read"], 50);
    assert_eq!(report["rows_written"], 50);
    assert!(report["wasm_share"].as_f64().unwrap() < 1.0);
    let state = host(&dir, &["state", "show", "--manifest", "m.yaml"]);
    let shown = text(&state);
    assert!(shown.contains("cursor.updated_at = timestamp("), "{shown}");
    assert!(
        shown.contains("succeeded incremental_merge@0.2.0 read=50 written=50"),
        "{shown}"
    );
}

#[tokio::test]
async fn exit_codes_tell_config_data_and_sandbox_failures_apart() {
    let dir = setup("cli_exit_key", "mode: full_refresh, unique_key: [note]").await;
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec("UPDATE orders SET note = 'same' WHERE id < 3")
        .await;
    let key = host(&dir, &["run", "--manifest", "m.yaml"]);
    assert_eq!(key.status.code(), Some(4), "key violation: {}", text(&key));
    assert!(text(&key).contains("key violation"), "{}", text(&key));

    let dir = setup("cli_exit_fuel", "attack: loop").await;
    let yaml =
        std::fs::read_to_string(dir.join("m.yaml")).unwrap() + "limits: { fuel: 100000000 }\n";
    std::fs::write(dir.join("m.yaml"), yaml).unwrap();
    let probe = component("sandbox_probe");
    let fuel = host(
        &dir,
        &[
            "run",
            "--manifest",
            "m.yaml",
            "--strategy",
            probe.to_str().unwrap(),
        ],
    );
    assert_eq!(fuel.status.code(), Some(6), "sandbox: {}", text(&fuel));
    assert!(text(&fuel).contains("limits.fuel"), "{}", text(&fuel));

    let missing = host(&dir, &["run", "--manifest", "nope.yaml"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}

#[tokio::test]
async fn strategy_inspect_lists_options_and_needs() {
    let dir = scratch("cli_inspect");
    let merge = component("incremental_merge");
    let out = host(&dir, &["strategy", "inspect", merge.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.starts_with("incremental_merge 0.2.0 (sha256 "),
        "{shown}"
    );
    assert!(shown.contains("unique_key"), "{shown}");
    assert!(shown.contains("required"), "{shown}");
    assert!(shown.contains("needs: transactions=true"), "{shown}");
}
