//! PostgreSQL -> BigQuery full refresh on the BigQuery emulator (`xtask/src/bigquery.rs`:
//! bqemulator, BigQuery's REST API over DuckDB, in memory): dpone against the emulator's own load
//! of the same rows as a Parquet file. The limit's file is made once, untimed, from the source
//! table (`psql COPY ... (FORMAT csv)`, then pyarrow with the Arrow types dpone reads the columns
//! as, written as dpone writes its load file); a timed run of the limit (`bigquery_load.py load`
//! beside this file, the emulator venv's Python, standard library only) creates the table with the
//! BigQuery types dpone gives it, sends the file in one resumable upload and waits for the load
//! job: what dpone does after reading and encoding, and nothing else. So the limit does no
//! PostgreSQL read and no encoding, dpone does both. Each contender loads once untimed first (so
//! neither pays for the emulator's first load); every timed run writes a new table of this
//! benchmark's dataset (`bench_<tag>`) and a run counts when that table has the source's row count
//! and sum of ids. A table that counts is dropped once checked, so the emulator's memory does not
//! grow from run to run; one that does not is kept, to be looked at.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::contenders::{self, Contender, Measured};
use super::data::{Table, quote};
use super::report::{Outcome, RunRecord, Scenario, ScenarioResult};
use super::{Lab, SRC_DB, generate, rows_and_id_sum, turn_order};
use crate::output;

/// The project in every request; the emulator serves any project it is asked for.
const PROJECT: &str = "dpone-bench";
/// The limit: `parquet` makes its file, `load` is its timed run.
const LOAD_SCRIPT: &str = include_str!("bigquery_load.py");
/// How long a query that checks a target may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the runs of one benchmark share.
#[derive(Debug)]
struct Setup {
    /// Seconds since the epoch when the scenario started: names the dataset and pipelines.
    tag: u64,
    /// `bench_<tag>`.
    dataset: String,
    /// `public.<table>`.
    source: String,
    /// `[[name, PostgreSQL type], ...]`: what the script builds the Parquet schema and the
    /// table's fields from.
    columns: String,
    /// [`LOAD_SCRIPT`] in the work folder.
    script: PathBuf,
    /// The limit's file.
    parquet: PathBuf,
}

pub fn scenario(lab: &Lab, runs: u32) -> Result<ScenarioResult> {
    let table = Table::records();
    let source = generate(lab, &table)?;
    let mut result =
        ScenarioResult::new(Scenario::BigQuery, &table, lab, lab.rows, source.copy_bytes);
    for contender in [Contender::Sling, Contender::Dlt] {
        result.exclude(contender, "not benchmarked against BigQuery");
    }
    result.relabel(
        Contender::Pipe,
        "the emulator's own load of the same rows as a Parquet file",
    );
    // The emulator may be one that an earlier benchmark left running: a new dataset.
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let setup = Setup {
        tag,
        dataset: format!("bench_{tag}"),
        source: format!("public.{}", table.name),
        columns: serde_json::to_string(&table.columns().collect::<Vec<_>>())?,
        script: lab.dirs.work.join("bigquery_load.py"),
        parquet: lab.dirs.work.join("bigquery_records.parquet"),
    };
    let expected = rows_and_id_sum(lab, SRC_DB, &format!("public.{}", quote(table.name)))?;
    if let Err(err) = create_dataset(lab, &setup.dataset) {
        for contender in [Contender::Dpone, Contender::Pipe] {
            let failed = Outcome::Failed(format!("first load: {err:#}"));
            result.record(lab, contender, runs, RunRecord::new(1, failed, None));
        }
        return Ok(result);
    }
    let mut primed = Vec::new();
    for contender in [Contender::Dpone, Contender::Pipe] {
        let target = format!("{}_first_{}", table.name, contender.key());
        let name = format!("bigquery-first-{}", contender.key());
        let prepared = match contender {
            Contender::Dpone => Ok(()),
            _ => export_parquet(lab, &table, &setup),
        };
        let first = prepared
            .and_then(|()| load(lab, &setup, contender, &target, &name))
            .and_then(|_| check(lab, &setup, &target, &expected));
        match first {
            Ok(()) => primed.push(contender),
            Err(err) => {
                let failed = Outcome::Failed(format!("first load: {err:#}"));
                result.record(lab, contender, runs, RunRecord::new(1, failed, None));
            }
        }
    }
    for rep in 1..=runs {
        for contender in turn_order(rep).into_iter().filter(|c| primed.contains(c)) {
            let target = format!("{}_r{rep}_{}", table.name, contender.key());
            let name = format!("bigquery-r{rep}-{}", contender.key());
            let record = match load(lab, &setup, contender, &target, &name) {
                Err(err) => RunRecord::new(rep, Outcome::Failed(format!("{err:#}")), None),
                Ok(measured) => {
                    let outcome = match check(lab, &setup, &target, &expected) {
                        Ok(()) => Outcome::Valid,
                        Err(err) => Outcome::Invalid(format!("{err:#}")),
                    };
                    RunRecord::new(rep, outcome, Some(measured))
                }
            };
            result.record(lab, contender, runs, record);
        }
    }
    Ok(result)
}

/// One load of the contender into the new table `target`, measured.
fn load(
    lab: &Lab,
    setup: &Setup,
    contender: Contender,
    target: &str,
    name: &str,
) -> Result<Measured> {
    match contender {
        Contender::Dpone => dpone(lab, setup, target, name),
        Contender::Pipe => emulator_load(lab, setup, target, name),
        other => bail!("{} is not benchmarked against BigQuery", other.key()),
    }
}

/// dpone full_refresh into the new table `target` (its own pipeline, so its own state,
/// kept in the source database).
fn dpone(lab: &Lab, setup: &Setup, target: &str, name: &str) -> Result<Measured> {
    let src = lab.server.url(SRC_DB);
    let pipeline = format!("bench_bigquery_{}_{target}", setup.tag);
    let manifest = format!(
        "pipeline: {pipeline}\n\
         source: {{ kind: postgres, url: \"{src}\", table: {source} }}\n\
         sink:\n  kind: bigquery\n  project: {PROJECT}\n  dataset: {dataset}\n  \
           table: {target}\n  endpoint: \"{endpoint}\"\n  \
           strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: postgres, url: \"{src}\" }}\n",
        source = setup.source,
        dataset = setup.dataset,
        endpoint = lab.bigquery.endpoint(),
    );
    let path = lab.dirs.work.join(format!("{pipeline}.yaml"));
    fs::write(&path, manifest).with_context(|| format!("could not write {}", path.display()))?;
    contenders::run_dpone(lab, &path, name)
}

/// The limit's file, untimed: the source table as PostgreSQL's CSV, then as Parquet (the
/// script's `parquet`). Also writes the script into the work folder.
fn export_parquet(lab: &Lab, table: &Table, setup: &Setup) -> Result<()> {
    fs::write(&setup.script, LOAD_SCRIPT)
        .with_context(|| format!("could not write {}", setup.script.display()))?;
    let csv = lab.dirs.work.join("bigquery_records.csv");
    let file =
        fs::File::create(&csv).with_context(|| format!("could not create {}", csv.display()))?;
    let copy = format!(
        "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)",
        table.column_list(),
        setup.source
    );
    output(lab.server.psql(SRC_DB).arg("-c").arg(&copy).stdout(file))
        .context("could not export the source table as CSV")?;
    output(
        Command::new(lab.bigquery.python())
            .arg(&setup.script)
            .arg("parquet")
            .arg(&setup.columns)
            .arg(&csv)
            .arg(&setup.parquet),
    )
    .context("could not write the source table as Parquet")?;
    fs::remove_file(&csv).with_context(|| format!("could not remove {}", csv.display()))
}

/// The script's `load` under GNU time: create `target`, upload the Parquet file, wait for
/// the load job. `-S`: it needs only the standard library, so no site-packages.
fn emulator_load(lab: &Lab, setup: &Setup, target: &str, name: &str) -> Result<Measured> {
    let rss = lab.dirs.rss(name);
    let mut cmd = contenders::measured(&lab.bigquery.python(), &rss);
    cmd.arg("-S")
        .arg(&setup.script)
        .arg("load")
        .arg(lab.bigquery.endpoint())
        .args([PROJECT, &setup.dataset, target, &setup.columns])
        .arg(&setup.parquet);
    contenders::run_measured(&mut cmd, &lab.dirs.log(name), &rss)
}

/// The dataset every table of this benchmark goes to.
fn create_dataset(lab: &Lab, dataset: &str) -> Result<()> {
    let body = json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}});
    api(lab, "POST", "datasets", Some(&body))
        .with_context(|| format!("could not create dataset {dataset}"))
        .map(drop)
}

/// Passes when `target` has the source's `<rows> <sum of ids>` (`expected`), then drops it
/// (a target that does not pass is kept, to be looked at; one that cannot be dropped is
/// only warned about).
fn check(lab: &Lab, setup: &Setup, target: &str, expected: &str) -> Result<()> {
    let actual = count_and_sum(lab, &setup.dataset, target)
        .with_context(|| format!("could not count {target}"))?;
    ensure!(
        actual == expected,
        "{target} has (rows, sum of ids) {actual}, the source {expected}"
    );
    let table = format!("datasets/{}/tables/{target}", setup.dataset);
    if let Err(err) = api(lab, "DELETE", &table, None) {
        println!("warning: could not drop {target}: {err:#}");
    }
    Ok(())
}

/// `<rows> <sum of ids>` of `dataset.table`, as the source's `count(*) || ' ' || sum(id)`.
fn count_and_sum(lab: &Lab, dataset: &str, table: &str) -> Result<String> {
    let query = json!({
        "query": format!("SELECT COUNT(*), SUM(id) FROM `{dataset}`.`{table}`"),
        "useLegacySql": false,
        "timeoutMs": 60_000,
    });
    let mut answer = api(lab, "POST", "queries", Some(&query))?;
    let started = Instant::now();
    while answer["jobComplete"] == false {
        let job = answer["jobReference"]["jobId"]
            .as_str()
            .with_context(|| format!("a query answer without a job id: {answer}"))?
            .to_owned();
        ensure!(
            started.elapsed() < QUERY_TIMEOUT,
            "query job {job} not done after {} s",
            QUERY_TIMEOUT.as_secs()
        );
        answer = api(lab, "GET", &format!("queries/{job}?timeoutMs=10000"), None)?;
    }
    let cell = |i: usize| {
        answer["rows"][0]["f"][i]["v"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no value {i} in the query answer {answer}"))
    };
    Ok(format!("{} {}", cell(0)?, cell(1)?))
}

/// One call of the emulator's REST API, `<method> <endpoint>/bigquery/v2/projects/
/// dpone-bench/<path>`, through curl: its JSON answer (null when empty). Fails with the
/// API's message on an `error` answer (an HTTP error) and on an `errors` list (how the
/// emulator answers a failed query, with HTTP 200).
fn api(lab: &Lab, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let url = format!(
        "{}/bigquery/v2/projects/{PROJECT}/{path}",
        lab.bigquery.endpoint()
    );
    let mut cmd = Command::new("curl");
    // The emulator is on 127.0.0.1: never through a proxy from the environment.
    cmd.args(["-sS", "--noproxy", "*", "-X", method]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(body.to_string());
    }
    let text =
        output(cmd.arg(&url)).with_context(|| format!("BigQuery emulator: {method} {url}"))?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let answer: Value = serde_json::from_str(&text)
        .with_context(|| format!("BigQuery emulator: {method} {url} answered {text}"))?;
    if let Some(error) = answer.get("error").or_else(|| answer["errors"].get(0)) {
        let message = error["message"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        bail!("BigQuery emulator: {method} {url}: {message}");
    }
    Ok(answer)
}
