//! `cargo xtask test`: the project's test command (the one `.ci/run` calls).

use std::path::Path;

use anyhow::{Context, Result};

use crate::bench;
use crate::bigquery::Bigquery;
use crate::build::{self, Profile};
use crate::clickhouse::Clickhouse;
use crate::kafka::Kafka;
use crate::services::{Postgres, StopOnDrop};
use crate::{cargo, run_cmd};

/// Build the components (installing componentize-py and componentize-js into the tools
/// cache when missing, for the Python and JavaScript ones) and the host, start the private
/// PostgreSQL, ClickHouse (installing it from Debian's packages when missing), Kafka broker
/// (installing tansu into the tools cache when missing) and BigQuery emulator (installing
/// bqemulator into a venv in the tools cache when missing), run the workspace tests against
/// them, then the benchmark harness at smoke size (so it does not rot), and stop the
/// servers again whatever happened.
pub fn run(root: &Path, cargo_test_args: &[String]) -> Result<()> {
    // The Python and JavaScript components are optional for a build, not for the tests
    // that run them.
    for language in crate::languages::Language::ALL {
        language.ensure_toolchain()?;
    }
    build::build_all(root, Profile::Debug)?;

    let pg = Postgres::new(root)?;
    let url = pg.url();
    // Armed before the start, so a server that started but never became ready is stopped too.
    let _stop = StopOnDrop(pg.clone());
    pg.start()?;
    let ch = Clickhouse::new(root)?;
    let _stop_ch = StopOnDrop(ch.clone());
    ch.start()?;
    let kafka = Kafka::new(root)?;
    let _stop_kafka = StopOnDrop(kafka.clone());
    kafka.start()?;
    let bq = Bigquery::new(root)?;
    let _stop_bq = StopOnDrop(bq.clone());
    bq.start()?;

    let mut cmd = cargo();
    cmd.arg("test");
    // `--workspace` would silently override a `-p <crate>` the caller passes.
    let selects_packages = cargo_test_args
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg.starts_with("-p") || arg.starts_with("--package"));
    if !selects_packages {
        cmd.arg("--workspace");
    }
    run_cmd(
        cmd.args(cargo_test_args)
            .current_dir(root)
            .env("CARGO_TARGET_DIR", build::target_dir(root))
            .env("DPONE_TEST_POSTGRES_URL", &url)
            .env("DPONE_TEST_CLICKHOUSE_URL", ch.url())
            .env("DPONE_TEST_KAFKA_BROKERS", kafka.brokers())
            .env("DPONE_TEST_BIGQUERY_ENDPOINT", bq.endpoint())
            .env("DPONE_COMPONENTS_DIR", build::components_dir(root))
            // The matrix's contract needs no service, so the default run includes it;
            // mock_local is `cargo xtask matrix --mode mock_local`.
            .env("DPONE_RUN_INTEGRATION", "1")
            .env("DPONE_RUN_INTEGRATION_MATRIX", "1")
            .env("DPONE_MATRIX_RUN_MODE", "mock_contract")
            .env(
                "DPONE_MATRIX_ARTIFACT_DIR",
                build::target_dir(root).join("matrix/mock_contract"),
            ),
    )
    .context("tests failed")?;
    bench::run(root, &bench::Options::smoke()).context("the benchmark smoke run failed")
}
