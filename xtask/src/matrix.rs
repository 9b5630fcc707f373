//! `cargo xtask matrix`: builds the components, starts the local services the mode needs,
//! and runs the matrix test target (`tests/integration/matrix.rs`) with the gates set.

use std::path::Path;

use anyhow::{Context, Result};

use crate::build::{self, Profile};
use crate::clickhouse::Clickhouse;
use crate::services::{Postgres, StopOnDrop};
use crate::{cargo, run_cmd};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// mock_contract (no services), mock_local (the services started here) or vendor_live
    /// (endpoints from DPONE_LIVE_* variables).
    #[arg(long, default_value = "mock_contract")]
    mode: String,
    /// Sources, comma-separated (`*` for all).
    #[arg(long, default_value = "*")]
    source: String,
    /// Sinks, comma-separated.
    #[arg(long, default_value = "*")]
    sink: String,
    /// Strategies, comma-separated.
    #[arg(long, default_value = "*")]
    strategy: String,
    /// Case ids, comma-separated.
    #[arg(long = "case", default_value = "*")]
    case_id: String,
    /// Where `<case_id>.json` and `summary.json` go [default: target/matrix/<mode>].
    #[arg(long)]
    artifact_dir: Option<String>,
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    build::build_all(root, Profile::Debug)?;
    // Absolute, so the test (which cargo runs in its package directory) writes where the
    // caller means.
    let artifacts = match &opts.artifact_dir {
        Some(dir) => std::path::absolute(dir)
            .with_context(|| format!("--artifact-dir {dir}"))?
            .display()
            .to_string(),
        None => build::target_dir(root)
            .join("matrix")
            .join(&opts.mode)
            .display()
            .to_string(),
    };
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "dpone-tests",
        "--test",
        "matrix",
        "--",
        "--nocapture",
    ])
    .current_dir(root)
    .env("CARGO_TARGET_DIR", build::target_dir(root))
    .env("DPONE_COMPONENTS_DIR", build::components_dir(root))
    .env("DPONE_RUN_INTEGRATION", "1")
    .env("DPONE_RUN_INTEGRATION_MATRIX", "1")
    .env("DPONE_MATRIX_RUN_MODE", &opts.mode)
    .env("DPONE_MATRIX_SOURCE_FILTER", &opts.source)
    .env("DPONE_MATRIX_SINK_FILTER", &opts.sink)
    .env("DPONE_MATRIX_STRATEGY_FILTER", &opts.strategy)
    .env("DPONE_MATRIX_CASE_ID", &opts.case_id)
    .env("DPONE_MATRIX_ARTIFACT_DIR", &artifacts);
    // Only mock_local uses the services this machine runs; the others must not start any.
    let _stop = if opts.mode == "mock_local" {
        let pg = Postgres::new(root)?;
        let stop_pg = StopOnDrop(pg.clone());
        pg.start()?;
        cmd.env("DPONE_MATRIX_POSTGRES_URL", pg.url());
        let ch = Clickhouse::new(root)?;
        let stop_ch = StopOnDrop(ch.clone());
        ch.start()?;
        cmd.env("DPONE_MATRIX_CLICKHOUSE_URL", ch.url());
        Some((stop_pg, stop_ch))
    } else {
        None
    };
    run_cmd(&mut cmd).context("the matrix run failed")?;
    eprintln!("artifacts: {artifacts}");
    Ok(())
}
