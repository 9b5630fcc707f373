//! REST -> PostgreSQL full refresh over the mock API (`xtask/src/rest_mock.rs`): dpone's REST
//! source against a plain client, Python's standard library fetching the same pages and
//! `psql COPY` writing them into a table it creates, which is about the least a hand-written
//! loader does. Both read `/page?page=N&per_page=PAGE`; a run counts when the target has the
//! records' row count and checksum. As in the PostgreSQL full refresh scenario, this is the
//! steady state of a scheduled refresh: dpone loads once untimed, so each timed run replaces
//! an existing target (its swap path), while the client creates its table every run.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::contenders::{self, Contender, Measured};
use super::data::{Table, quote};
use super::report::{Outcome, RunRecord, Scenario, ScenarioResult};
use super::{DST_DB, Lab, SRC_DB, generate, judge, settle, turn_order};
use crate::rest_mock::MockApi;

/// Records per page: what a bulk export endpoint typically allows.
const PAGE: u32 = 10_000;

pub fn scenario(lab: &Lab, runs: u32) -> Result<ScenarioResult> {
    let table = Table::records();
    let source = generate(lab, &table)?;
    let records = records_json(lab, &table)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("could not start the mock API's runtime")?;
    let api = runtime.block_on(MockApi::start(records));
    let url = format!("{}/page", api.base);
    let mut result = ScenarioResult::new(Scenario::Rest, &table, lab, lab.rows, source.copy_bytes);
    for contender in [Contender::Sling, Contender::Dlt] {
        result.exclude(contender, "not benchmarked against a REST API");
    }
    result.relabel(Contender::Pipe, "plain client (Python urllib | psql COPY)");
    let primed = Contender::Dpone
        .reset(lab, &table)
        .and_then(|()| dpone(lab, &table, &url, "rest-first-dpone"));
    let dpone_ready = match primed {
        Ok(_) => true,
        Err(err) => {
            let failed = Outcome::Failed(format!("first load: {err:#}"));
            result.record(lab, Contender::Dpone, runs, RunRecord::new(1, failed, None));
            false
        }
    };
    for rep in 1..=runs {
        for contender in turn_order(rep) {
            let runs_here = match contender {
                Contender::Dpone => dpone_ready,
                Contender::Pipe => true,
                _ => false,
            };
            if !runs_here {
                continue;
            }
            let name = format!("rest-r{rep}-{}", contender.key());
            let fresh = match contender {
                Contender::Dpone => Ok(()),
                _ => contender.reset(lab, &table),
            };
            let measured = fresh
                .and_then(|()| settle(lab))
                .and_then(|()| load(lab, &table, contender, &url, &name));
            let record = judge(lab, contender, &table, rep, measured, &source.checksum);
            result.record(lab, contender, runs, record);
        }
    }
    Ok(result)
}

fn load(lab: &Lab, table: &Table, contender: Contender, url: &str, name: &str) -> Result<Measured> {
    match contender {
        Contender::Dpone => dpone(lab, table, url, name),
        _ => plain_client(lab, table, url, name),
    }
}

/// The source table's rows as the JSON records the API serves.
fn records_json(lab: &Lab, table: &Table) -> Result<Vec<serde_json::Value>> {
    let sql = format!(
        "COPY (SELECT json_build_object('id', id, 'updated_at', to_char(updated_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), \
         'region', region, 'day', day::text, 'amount', amount::text, 'label', label) \
         FROM public.{} ORDER BY id) TO STDOUT",
        quote(table.name)
    );
    let text = lab.server.sql(SRC_DB, &sql)?;
    text.lines()
        .map(|line| serde_json::from_str(line).context("a record is not JSON"))
        .collect()
}

/// dpone full_refresh from the API (state in the target database).
fn dpone(lab: &Lab, table: &Table, url: &str, name: &str) -> Result<Measured> {
    let sink_url = lab.server.url(DST_DB);
    let manifest = format!(
        "pipeline: bench_rest\n\
         source:\n  kind: rest\n  table: records\n  url: \"{url}\"\n  records_path: data\n  \
           pagination: {{ type: page_number, param: page, size_param: per_page, size: {PAGE} }}\n  \
           primary_key: [id]\n  columns:\n    \
             - {{ name: id, type: int64, nullable: false }}\n    \
             - {{ name: updated_at, type: timestamp, nullable: false }}\n    \
             - {{ name: region, type: text }}\n    \
             - {{ name: day, type: date }}\n    \
             - {{ name: amount, type: 'decimal(18,4)' }}\n    \
             - {{ name: label, type: text }}\n\
         sink:\n  kind: postgres\n  url: \"{sink_url}\"\n  table: {schema}.{table}\n  \
           strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: postgres, url: \"{sink_url}\" }}\n",
        schema = Contender::Dpone.schema(),
        table = table.name,
    );
    let path = lab.dirs.work.join("bench_rest.yaml");
    fs::write(&path, manifest).with_context(|| format!("could not write {}", path.display()))?;
    contenders::run_dpone(lab, &path, name)
}

/// The plain client: fetch every page, write each record as a CSV line into `psql COPY`,
/// into a target created like the source.
const PLAIN_CLIENT: &str = r#"
import csv, json, subprocess, sys, urllib.request
url, per_page, psql, target = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
copy = subprocess.Popen(psql.split("\x1f") + ["-c", f"COPY {target} FROM STDIN (FORMAT csv)"],
                        stdin=subprocess.PIPE, text=True)
out = csv.writer(copy.stdin, lineterminator="\n")
page = 1
while True:
    with urllib.request.urlopen(f"{url}?page={page}&per_page={per_page}") as r:
        data = json.load(r)["data"]
    if not data:
        break
    for rec in data:
        out.writerow([rec["id"], rec["updated_at"], rec["region"], rec["day"], rec["amount"],
                      "" if rec["label"] is None else rec["label"]])
    page += 1
copy.stdin.close()
sys.exit(copy.wait())
"#;

fn plain_client(lab: &Lab, table: &Table, url: &str, name: &str) -> Result<Measured> {
    let target = Contender::Pipe.target(table);
    lab.server.sql(DST_DB, &table.create_sql(&target))?;
    let script = lab.dirs.work.join("rest_plain_client.py");
    fs::write(&script, PLAIN_CLIENT)
        .with_context(|| format!("could not write {}", script.display()))?;
    let psql = std::iter::once(lab.server.psql.display().to_string())
        .chain(lab.server.psql_args(DST_DB))
        .collect::<Vec<_>>()
        .join("\x1f");
    let rss = lab.dirs.rss(name);
    let mut cmd = contenders::measured(Path::new("python3"), &rss);
    cmd.arg("-S")
        .arg(&script)
        .args([url, &PAGE.to_string(), &psql, &target])
        .env("PGTZ", "UTC");
    contenders::run_measured(&mut cmd, &lab.dirs.log(name), &rss)
}
