//! `cargo xtask matrix`: builds the components, starts the local services the mode needs,
//! and runs the matrix test target (`tests/integration/matrix.rs`) with the gates set.

use std::path::Path;

use anyhow::{Context, Result};

use crate::bigquery::Bigquery;
use crate::build::{self, Profile};
use crate::clickhouse::Clickhouse;
use crate::kafka::Kafka;
use crate::services::{Postgres, StopOnDrop};
use crate::{cargo, run_cmd};

/// Each flag defaults to its runbook variable (named in its help); a flag and a variable
/// that disagree are an error naming both.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// mock_contract (no services), mock_local (the services started here) or vendor_live
    /// (endpoints from DPONE_LIVE_* variables) [env: DPONE_MATRIX_RUN_MODE; default:
    /// mock_contract].
    #[arg(long)]
    mode: Option<String>,
    /// Sources, comma-separated (`*` for all) [env: DPONE_MATRIX_SOURCE_FILTER; default: *].
    #[arg(long)]
    source: Option<String>,
    /// Sinks, comma-separated [env: DPONE_MATRIX_SINK_FILTER; default: *].
    #[arg(long)]
    sink: Option<String>,
    /// Strategies, comma-separated [env: DPONE_MATRIX_STRATEGY_FILTER; default: *].
    #[arg(long)]
    strategy: Option<String>,
    /// Case ids, comma-separated [env: DPONE_MATRIX_CASE_ID; default: *].
    #[arg(long = "case")]
    case_id: Option<String>,
    /// Where `<case_id>.json` and `summary.json` go [env: DPONE_MATRIX_ARTIFACT_DIR;
    /// default: target/matrix/<mode>].
    #[arg(long)]
    artifact_dir: Option<String>,
}

/// The matrix run's settings: flags and variables resolved.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    mode: String,
    source: String,
    sink: String,
    strategy: String,
    case_id: String,
    artifact_dir: Option<String>,
}

impl Options {
    /// Resolves every setting from its flag, its variable (read through `env`) or its
    /// default. Pure apart from `env`.
    fn settings(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let pick = |flag: &Option<String>, name: &str, var: &str| -> Result<Option<String>> {
            let set = env(var).filter(|v| !v.is_empty());
            match (flag, set) {
                (Some(f), Some(v)) if *f != v => anyhow::bail!(
                    "--{name} {f:?} disagrees with {var}={v:?}: give one of them (the flag defaults to the variable)"
                ),
                (Some(f), _) => Ok(Some(f.clone())),
                (None, v) => Ok(v),
            }
        };
        let all = |v: Option<String>| v.unwrap_or_else(|| "*".into());
        Ok(Settings {
            mode: pick(&self.mode, "mode", "DPONE_MATRIX_RUN_MODE")?
                .unwrap_or_else(|| "mock_contract".into()),
            source: all(pick(&self.source, "source", "DPONE_MATRIX_SOURCE_FILTER")?),
            sink: all(pick(&self.sink, "sink", "DPONE_MATRIX_SINK_FILTER")?),
            strategy: all(pick(
                &self.strategy,
                "strategy",
                "DPONE_MATRIX_STRATEGY_FILTER",
            )?),
            case_id: all(pick(&self.case_id, "case", "DPONE_MATRIX_CASE_ID")?),
            artifact_dir: pick(
                &self.artifact_dir,
                "artifact-dir",
                "DPONE_MATRIX_ARTIFACT_DIR",
            )?,
        })
    }
}

pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let opts = opts.settings(&|var| std::env::var(var).ok())?;
    build::build_all(root, Profile::Debug)?;
    // Absolute, so the test (which cargo runs in its package directory) writes where the
    // caller means.
    let artifacts = match &opts.artifact_dir {
        Some(dir) => std::path::absolute(dir)
            .with_context(|| format!("artifact dir {dir}"))?
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
    // The mock API runs on this process's runtime for as long as the tests do.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    if opts.mode == "mock_local" {
        let api = runtime.block_on(crate::rest_mock::MockApi::start(Vec::new()));
        eprintln!("mock REST API: {}", api.base);
        cmd.env("DPONE_MATRIX_REST_URL", &api.base);
    }
    let _stop = if opts.mode == "mock_local" {
        let pg = Postgres::new(root)?;
        let stop_pg = StopOnDrop(pg.clone());
        pg.start()?;
        cmd.env("DPONE_MATRIX_POSTGRES_URL", pg.url());
        let ch = Clickhouse::new(root)?;
        let stop_ch = StopOnDrop(ch.clone());
        ch.start()?;
        cmd.env("DPONE_MATRIX_CLICKHOUSE_URL", ch.url());
        let kafka = Kafka::new(root)?;
        let stop_kafka = StopOnDrop(kafka.clone());
        kafka.start()?;
        cmd.env("DPONE_MATRIX_KAFKA_BROKERS", kafka.brokers());
        let bq = Bigquery::new(root)?;
        let stop_bq = StopOnDrop(bq.clone());
        bq.start()?;
        cmd.env("DPONE_MATRIX_BIGQUERY_ENDPOINT", bq.endpoint());
        Some((stop_pg, stop_ch, stop_kafka, stop_bq))
    } else {
        None
    };
    run_cmd(&mut cmd).context("the matrix run failed")?;
    eprintln!("artifacts: {artifacts}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Options {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let mut argv = vec!["matrix"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::parse_from(argv).options
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn variables_are_the_defaults_of_the_flags() {
        let vars = env(&[
            ("DPONE_MATRIX_SOURCE_FILTER", "postgres"),
            ("DPONE_MATRIX_ARTIFACT_DIR", "/tmp/m"),
            ("DPONE_MATRIX_RUN_MODE", "mock_local"),
        ]);
        let s = options(&[]).settings(&vars).unwrap();
        assert_eq!(s.source, "postgres");
        assert_eq!(s.mode, "mock_local");
        assert_eq!(s.artifact_dir.as_deref(), Some("/tmp/m"));
        assert_eq!(s.sink, "*");
        // A flag alone, or agreeing with its variable, is fine.
        let s = options(&["--mode", "mock_local", "--sink", "sqlite"])
            .settings(&vars)
            .unwrap();
        assert_eq!((s.mode.as_str(), s.sink.as_str()), ("mock_local", "sqlite"));
        let s = options(&[]).settings(&env(&[])).unwrap();
        assert_eq!(
            (s.mode.as_str(), s.case_id.as_str()),
            ("mock_contract", "*")
        );
    }

    #[test]
    fn a_flag_that_disagrees_with_its_variable_is_an_error_naming_both() {
        let vars = env(&[("DPONE_MATRIX_SOURCE_FILTER", "postgres")]);
        let err = options(&["--source", "sqlite"])
            .settings(&vars)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--source"), "{err}");
        assert!(err.contains("DPONE_MATRIX_SOURCE_FILTER"), "{err}");
    }
}
