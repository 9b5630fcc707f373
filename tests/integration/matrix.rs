//! The integration matrix as a cargo test target: the Rust form of the runbook's
//! `uv run pytest tests/integration/matrix`. It runs only with `DPONE_RUN_INTEGRATION=1`
//! and `DPONE_RUN_INTEGRATION_MATRIX=1` (`cargo xtask matrix` and `cargo xtask test` set
//! them); the mode, filters, artifact directory and row count come from the `DPONE_MATRIX_*`
//! variables (docs/integration-matrix.md).

use std::path::{Path, PathBuf};

use dpone_host::matrix::model::rows_from_env;
use dpone_host::matrix::runner::{self, Filters, Mode, Options, Status};

fn gate(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

#[tokio::test]
async fn integration_matrix() {
    if !gate("DPONE_RUN_INTEGRATION") || !gate("DPONE_RUN_INTEGRATION_MATRIX") {
        // Shown with `--nocapture` (as `cargo xtask matrix` runs it); the test passes.
        eprintln!(
            "SKIPPED: the integration matrix runs only with DPONE_RUN_INTEGRATION=1 and \
             DPONE_RUN_INTEGRATION_MATRIX=1 (`cargo xtask matrix --mode mock_contract` sets them)"
        );
        return;
    }
    let mode = std::env::var("DPONE_MATRIX_RUN_MODE")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "mock_contract".into());
    let mode = Mode::parse(&mode).unwrap_or_else(|e| panic!("{e}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = Options {
        mode,
        filters: Filters::from_env(),
        // cargo runs tests in the package directory: a relative directory means the
        // workspace's, as for every other command.
        artifact_dir: std::env::var_os("DPONE_MATRIX_ARTIFACT_DIR").map(|d| root.join(d)),
        repo_root: root.clone(),
        components_dir: std::env::var_os("DPONE_COMPONENTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/strategies")),
        rows: rows_from_env().unwrap_or_else(|e| panic!("{e}")),
    };
    let (summary, results) = runner::run(&opts).await.unwrap_or_else(|e| panic!("{e}"));
    println!("{}", runner::table(&summary));
    assert!(summary.total > 0, "the filters selected no case");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .map(|r| format!("{}: {}", r.case_id, r.reason))
        .collect();
    assert!(
        failed.is_empty(),
        "{} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The matrix workflow runs on demand only: a push or pull request must never start it.
#[test]
fn the_matrix_workflow_is_dispatch_only() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.github/workflows/integration-matrix.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let on = doc.get("on").expect("an `on:` section");
    let triggers: Vec<&str> = on
        .as_mapping()
        .expect("`on:` is a mapping")
        .keys()
        .filter_map(serde_yaml_ng::Value::as_str)
        .collect();
    assert_eq!(triggers, ["workflow_dispatch"], "{text}");
    let inputs = on["workflow_dispatch"]["inputs"].as_mapping().unwrap();
    for input in [
        "run_mode",
        "source_filter",
        "sink_filter",
        "strategy_filter",
        "case_id_filter",
    ] {
        assert!(inputs.contains_key(input), "input {input} missing");
    }
    for filter in [
        "source_filter",
        "sink_filter",
        "strategy_filter",
        "case_id_filter",
    ] {
        assert_eq!(
            on["workflow_dispatch"]["inputs"][filter]["default"].as_str(),
            Some("*")
        );
    }
}
