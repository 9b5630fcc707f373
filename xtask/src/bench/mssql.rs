//! SQL Server -> PostgreSQL and PostgreSQL -> SQL Server full refresh, against `bcp` (the
//! server's own bulk copy tool) as the limit. No SQL Server runs on the benchmark machine, so
//! both scenarios run only against a server the user gives (`vendor_live`):
//! `DPONE_LIVE_MSSQL_URL=mssql://user:password@host:port/database`, with `bcp` and `sqlcmd`
//! (Microsoft's mssql-tools18) on PATH; otherwise each is skipped with a line saying so.
//!
//! The source rows are the `records` table of the other scenarios, written once (untimed) as a
//! text file both `bcp` and `psql COPY` read: fields split by 0x1F, NULL as an empty field.
//! PostgreSQL -> SQL Server: dpone reads PostgreSQL and bulk-loads SQL Server; the limit is
//! `bcp in` of that file into a table of the same types, so it does no PostgreSQL read.
//! SQL Server -> PostgreSQL: the file is first `bcp in` to a source table on the server; dpone
//! reads it and COPYs into PostgreSQL; the limit is `bcp queryout` to a file, then `psql COPY`
//! of it. Every timed run, of either, writes a new target (dpone's first-run path). A run
//! counts when its target has the source's row count and sum of ids.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use super::contenders::{self, Contender, Measured};
use super::data::{Table, quote};
use super::report::{Outcome, RunRecord, Scenario, ScenarioResult};
use super::{DST_DB, Lab, SRC_DB, generate, rows_and_id_sum, turn_order};
use crate::output;

/// The variable naming the server, as for `cargo xtask matrix --mode vendor_live`.
const URL_VAR: &str = "DPONE_LIVE_MSSQL_URL";
/// What the skipped line says.
pub const SKIPPED: &str = "no SQL Server given: set DPONE_LIVE_MSSQL_URL=mssql://user:password@host:port/database and put bcp and sqlcmd (mssql-tools18) on PATH";
/// The field separator of the shared text file: in no value of the records table.
const SEPARATOR: &str = "0x1f";
/// The limit's table: the records table's columns with the SQL Server types dpone creates
/// for them, keyed by `id` as dpone's target is.
const COLUMNS: &str = "id bigint NOT NULL PRIMARY KEY, updated_at datetime2(7) NOT NULL, \
                       region nvarchar(max), day date, amount decimal(18,4), label nvarchar(max)";

/// A SQL Server login, from `DPONE_LIVE_MSSQL_URL`.
#[derive(Debug, Clone, PartialEq)]
struct Login {
    url: String,
    user: String,
    password: String,
    /// `tcp:host,port`, as bcp and sqlcmd take it.
    server: String,
    database: String,
}

impl Login {
    /// The server given by the environment and the tools it needs, or why the scenarios skip.
    fn from_env() -> Option<Self> {
        let url = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty())?;
        let on_path = |tool: &str| {
            Command::new(tool)
                .arg("-?")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if !(on_path("bcp") && on_path("sqlcmd")) {
            return None;
        }
        match Login::parse(&url) {
            Ok(login) => Some(login),
            Err(err) => {
                println!("{URL_VAR}: {err:#}");
                None
            }
        }
    }

    /// `mssql://user:password@host[:port]/database`, user and password percent-encoded.
    fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("mssql://")
            .context("expected mssql://user:password@host:port/database")?;
        let (credentials, place) = rest.rsplit_once('@').context("no user in the URL")?;
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        let (address, database) = place.split_once('/').context("no database in the URL")?;
        let (host, port) = address.split_once(':').unwrap_or((address, "1433"));
        ensure!(!database.is_empty(), "no database in the URL");
        Ok(Login {
            url: url.to_owned(),
            user: percent_decode(user)?,
            password: percent_decode(password)?,
            server: format!("tcp:{host},{port}"),
            database: database.to_owned(),
        })
    }

    /// `sqlcmd` running `sql`, failing on the first error; certificates are trusted as the
    /// matrix's `trust_server_certificate: true` does.
    fn sqlcmd(&self, sql: &str) -> Result<String> {
        let mut cmd = Command::new("sqlcmd");
        cmd.args(["-S", &self.server, "-d", &self.database, "-U", &self.user])
            .args(["-C", "-b", "-h", "-1", "-W", "-Q"])
            .arg(format!("SET NOCOUNT ON; {sql}"))
            .env("SQLCMDPASSWORD", &self.password);
        Ok(output(&mut cmd)?.trim().to_owned())
    }

    /// `bcp <what> <direction> <file>` in character mode with the shared file's separators.
    /// bcp takes the password only as `-P`: it shows in the process list of the benchmark
    /// machine, as it would for any bcp user.
    fn bcp(&self, what: &str, direction: &str, file: &Path) -> Command {
        let mut cmd = Command::new("bcp");
        cmd.args([what, direction])
            .arg(file)
            .args(["-S", &self.server, "-d", &self.database, "-U", &self.user])
            .args([
                "-P",
                &self.password,
                "-u",
                "-c",
                "-t",
                SEPARATOR,
                "-r",
                "0x0a",
            ]);
        if direction == "in" {
            cmd.args(["-b", "100000", "-h", "TABLOCK"]);
        }
        cmd
    }

    /// `COUNT_BIG(*) SUM(id)` of `table`, as PostgreSQL prints `count || ' ' || sum`.
    fn count_and_sum(&self, table: &str) -> Result<String> {
        self.sqlcmd(&format!(
            "SELECT CAST(COUNT_BIG(*) AS varchar(20)) + ' ' + CAST(SUM(id) AS varchar(40)) FROM {table}"
        ))
    }

    fn recreate(&self, table: &str) -> Result<()> {
        self.sqlcmd(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({COLUMNS})"
        ))
        .map(drop)
    }
}

/// `%XX` decoding of a URL's user or password, as dpone-host's SQL Server config does (the
/// xtask does not link the host); `+` stays a plus, as in a URL's user info.
fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).context("a cut %-escape")?;
            out.push(u8::from_str_radix(hex, 16).context("a bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("not UTF-8 once decoded")
}

/// Both scenarios: each one skipped, with [`SKIPPED`], when no server is given.
pub fn scenarios(lab: &Lab, runs: u32) -> Result<Vec<ScenarioResult>> {
    let table = Table::records();
    let Some(login) = Login::from_env() else {
        return Ok([Scenario::PgToMssql, Scenario::MssqlToPg]
            .into_iter()
            .map(|s| ScenarioResult::skipped(s, &table, SKIPPED))
            .collect());
    };
    let source = generate(lab, &table)?;
    let expected = rows_and_id_sum(lab, SRC_DB, &format!("public.{}", quote(table.name)))?;
    let file = lab.dirs.work.join("mssql_records.txt");
    export(lab, &table, &file)?;
    let mut results = Vec::new();
    for scenario in [Scenario::PgToMssql, Scenario::MssqlToPg] {
        let mut result = ScenarioResult::new(scenario, &table, lab, lab.rows, source.copy_bytes);
        for contender in [Contender::Sling, Contender::Dlt] {
            result.exclude(contender, "not benchmarked against SQL Server");
        }
        let limit = match scenario {
            Scenario::PgToMssql => "bcp in of the same rows from a file",
            _ => "bcp queryout to a file, then psql COPY",
        };
        result.relabel(Contender::Pipe, limit);
        if scenario == Scenario::MssqlToPg {
            let src = "dbo.bench_src_records";
            login.recreate(src)?;
            run_quiet(&mut login.bcp(src, "in", &file), lab, "mssql-source")?;
            ensure!(
                login.count_and_sum(src)? == expected,
                "the SQL Server source table {src} does not hold the generated rows"
            );
        }
        for rep in 1..=runs {
            for contender in turn_order(rep) {
                if !matches!(contender, Contender::Dpone | Contender::Pipe) {
                    continue;
                }
                let name = format!("{}-r{rep}-{}", scenario_key(scenario), contender.key());
                let record = match run(lab, &login, &table, scenario, contender, &file, &name) {
                    Err(err) => RunRecord::new(rep, Outcome::Failed(format!("{err:#}")), None),
                    Ok((measured, actual)) => {
                        let outcome = if actual == expected {
                            Outcome::Valid
                        } else {
                            Outcome::Invalid(format!(
                                "target has (rows, sum of ids) {actual}, the source {expected}"
                            ))
                        };
                        RunRecord::new(rep, outcome, Some(measured))
                    }
                };
                result.record(lab, contender, runs, record);
            }
        }
        results.push(result);
    }
    Ok(results)
}

fn scenario_key(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::PgToMssql => "pg-to-mssql",
        _ => "mssql-to-pg",
    }
}

/// The records table as the shared text file (untimed).
fn export(lab: &Lab, table: &Table, file: &Path) -> Result<()> {
    let sql = format!(
        "COPY (SELECT id, to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS.US'), region, day, amount, label \
         FROM public.{}) TO STDOUT (FORMAT csv, DELIMITER E'\\x1f', NULL '', QUOTE E'\\x01')",
        quote(table.name)
    );
    let out =
        fs::File::create(file).with_context(|| format!("could not create {}", file.display()))?;
    let mut cmd = Command::new(&lab.server.psql);
    cmd.args(lab.server.psql_args(SRC_DB))
        .arg("-c")
        .arg(sql)
        .env("PGTZ", "UTC")
        .stdout(out);
    let status = cmd.status().context("could not start psql")?;
    ensure!(status.success(), "psql could not export the records table");
    Ok(())
}

/// One timed load; the measurement and the target's `rows sum`.
fn run(
    lab: &Lab,
    login: &Login,
    table: &Table,
    scenario: Scenario,
    contender: Contender,
    file: &Path,
    name: &str,
) -> Result<(Measured, String)> {
    let rss = lab.dirs.rss(name);
    let log = lab.dirs.log(name);
    match (scenario, contender) {
        (Scenario::PgToMssql, Contender::Dpone) => {
            let target = "dbo.bench_dpone_records";
            login.sqlcmd(&format!("DROP TABLE IF EXISTS {target}"))?;
            let manifest = manifest(
                lab,
                name,
                &format!(
                    "kind: postgres\n  url: \"{}\"\n  table: public.{}",
                    lab.server.url(SRC_DB),
                    table.name
                ),
                &format!(
                    "kind: mssql\n  url: \"{}\"\n  trust_server_certificate: true\n  table: {target}",
                    login.url
                ),
            )?;
            let measured = contenders::run_dpone(lab, &manifest, name)?;
            Ok((measured, login.count_and_sum(target)?))
        }
        (Scenario::PgToMssql, _) => {
            let target = "dbo.bench_pipe_records";
            login.recreate(target)?;
            let mut cmd = contenders::measured(Path::new("bcp"), &rss);
            cmd.args(login.bcp(target, "in", file).get_args());
            let measured = contenders::run_measured(&mut cmd, &log, &rss)?;
            Ok((measured, login.count_and_sum(target)?))
        }
        (_, Contender::Dpone) => {
            let target = Contender::Dpone.target(table);
            Contender::Dpone.reset(lab, table)?;
            let manifest = manifest(
                lab,
                name,
                &format!(
                    "kind: mssql\n  url: \"{}\"\n  trust_server_certificate: true\n  table: dbo.bench_src_records",
                    login.url
                ),
                &format!(
                    "kind: postgres\n  url: \"{}\"\n  table: {target}",
                    lab.server.url(DST_DB)
                ),
            )?;
            let measured = contenders::run_dpone(lab, &manifest, name)?;
            Ok((measured, rows_and_id_sum(lab, DST_DB, &target)?))
        }
        (_, _) => {
            let target = Contender::Pipe.target(table);
            Contender::Pipe.reset(lab, table)?;
            lab.server.sql(DST_DB, &table.create_sql(&target))?;
            let out = lab.dirs.work.join("mssql_queryout.txt");
            let copy = format!(
                "COPY {target} (id, updated_at, region, day, amount, label) FROM STDIN \
                 (FORMAT csv, DELIMITER E'\\x1f', NULL '', QUOTE E'\\x01')"
            );
            let psql: Vec<String> = std::iter::once(lab.server.psql.display().to_string())
                .chain(lab.server.psql_args(DST_DB))
                .collect();
            let bcp: Vec<String> = std::iter::once("bcp".to_owned())
                .chain(
                    login
                        .bcp(
                            "SELECT id, updated_at, region, day, amount, label FROM dbo.bench_src_records",
                            "queryout",
                            &out,
                        )
                        .get_args()
                        .map(|a| a.to_string_lossy().into_owned()),
                )
                .collect();
            let script = format!(
                "{} && {} -c {} < {}",
                shell_words(&bcp),
                shell_words(&psql),
                shell_quote(&copy),
                shell_quote(&out.display().to_string())
            );
            let mut cmd = contenders::measured(Path::new("sh"), &rss);
            cmd.arg("-c").arg(script).env("PGTZ", "UTC");
            let measured = contenders::run_measured(&mut cmd, &log, &rss)?;
            Ok((measured, rows_and_id_sum(lab, DST_DB, &target)?))
        }
    }
}

/// A full_refresh manifest from `source` to `sink` (their sections' bodies), state in the
/// PostgreSQL source database.
fn manifest(lab: &Lab, name: &str, source: &str, sink: &str) -> Result<PathBuf> {
    let text = format!(
        "pipeline: bench_{}\nsource:\n  {source}\nsink:\n  {sink}\n  strategy: {{ mode: full_refresh, unique_key: [id] }}\n\
         state: {{ kind: postgres, url: \"{}\" }}\n",
        name.replace('-', "_"),
        lab.server.url(SRC_DB)
    );
    let path = lab.dirs.work.join(format!("{name}.yaml"));
    fs::write(&path, text).with_context(|| format!("could not write {}", path.display()))?;
    Ok(path)
}

fn run_quiet(cmd: &mut Command, lab: &Lab, name: &str) -> Result<()> {
    let log = lab.dirs.log(name);
    let file =
        fs::File::create(&log).with_context(|| format!("could not create {}", log.display()))?;
    let status = cmd
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!(
            "{:?} failed: {status} (log {})",
            cmd.get_program(),
            log.display()
        );
    }
    Ok(())
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_url_becomes_the_tools_arguments() {
        let login = Login::parse("mssql://sa:p%40ss%3Aword@db.local:14330/bench").unwrap();
        assert_eq!(login.user, "sa");
        assert_eq!(login.password, "p@ss:word");
        assert_eq!(login.server, "tcp:db.local,14330");
        assert_eq!(login.database, "bench");
        let default_port = Login::parse("mssql://sa:x@db/bench").unwrap();
        assert_eq!(default_port.server, "tcp:db,1433");
        for bad in [
            "postgres://a@b/c",
            "mssql://sa:x@db",
            "mssql://sa:x@db/",
            "mssql://db/x%2",
        ] {
            assert!(Login::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
