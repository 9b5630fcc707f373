//! `cargo xtask quickstart`: the SQLite -> SQLite pipeline of `examples/quickstart.yaml`, run
//! twice on a machine with no database server: a first load of 10,000 rows, then an incremental
//! merge of 500 updated and 100 new rows.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use crate::build::{self, Profile};
use crate::run_cmd;

/// Relative to the repository root, as the manifest's paths are.
const WORK_DIR: &str = ".dpone/quickstart";
const MANIFEST: &str = "examples/quickstart.yaml";
const INITIAL_ROWS: i64 = 10_000;
/// Every UPDATE_EVERY-th order changes between the runs: 500 of the first 10,000.
const UPDATE_EVERY: i64 = 20;
const UPDATED_ROWS: i64 = INITIAL_ROWS / UPDATE_EVERY;
const INSERTED_ROWS: i64 = 100;
/// The status the second run must carry into the target for exactly the updated rows.
const UPDATED_STATUS: &str = "refunded";
const STATUSES: [&str; 4] = ["pending", "paid", "shipped", "delivered"];

pub fn run(root: &Path) -> Result<()> {
    build::build_all(root, Profile::Debug)?;
    let host = build::host_binary(root, Profile::Debug);

    // Source, target, state and old reports all go: every quickstart starts from nothing.
    let work_dir = root.join(WORK_DIR);
    if work_dir.exists() {
        fs::remove_dir_all(&work_dir)
            .with_context(|| format!("could not remove {}", work_dir.display()))?;
    }
    fs::create_dir_all(&work_dir)
        .with_context(|| format!("could not create {}", work_dir.display()))?;
    let source_db = work_dir.join("source.db");
    let target_db = work_dir.join("target.db");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;

    build::phase("creating the source database");
    runtime.block_on(create_source(&source_db))?;
    println!("source: {} orders in {}", INITIAL_ROWS, source_db.display());
    build::phase("run 1: the first load (compiles the strategy component once, then caches it)");
    let first = run_pipeline(root, &host, "run1.json")?;

    build::phase("run 2: an incremental merge of the changed rows");
    runtime.block_on(change_source(&source_db))?;
    println!("source: {UPDATED_ROWS} orders updated, {INSERTED_ROWS} inserted");
    let second = run_pipeline(root, &host, "run2.json")?;

    let (target_rows, target_updated) = runtime.block_on(count_target(&target_db))?;
    println!();
    println!("quickstart summary");
    for (name, report) in [("run 1", &first), ("run 2", &second)] {
        println!(
            "  {name}: outcome {}, {} rows read, {} rows written",
            report.outcome, report.rows_read, report.rows_written
        );
    }
    println!(
        "  target {}: {target_rows} orders, {target_updated} with the run-2 update",
        target_db.display()
    );

    let expected_rows = INITIAL_ROWS + INSERTED_ROWS;
    ensure!(
        target_rows == expected_rows,
        "the target holds {target_rows} orders, expected {expected_rows}"
    );
    ensure!(
        target_updated == UPDATED_ROWS,
        "{target_updated} target orders carry status {UPDATED_STATUS:?}, expected {UPDATED_ROWS}"
    );
    Ok(())
}

/// The fields of a `--report-json` report that the summary shows.
#[derive(Debug)]
struct RunReport {
    outcome: String,
    rows_read: u64,
    rows_written: u64,
}

fn run_pipeline(root: &Path, host: &Path, report_name: &str) -> Result<RunReport> {
    let report_path = format!("{WORK_DIR}/{report_name}");
    run_cmd(
        Command::new(host)
            .args(["run", "--manifest", MANIFEST, "--report-json", &report_path])
            .current_dir(root)
            .env("DPONE_COMPONENTS_DIR", build::components_dir(root)),
    )
    .with_context(|| format!("the quickstart pipeline failed (report: {report_path})"))?;
    read_report(&root.join(&report_path))
}

fn read_report(path: &Path) -> Result<RunReport> {
    let text =
        fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let count = |field: &str| {
        json[field]
            .as_u64()
            .with_context(|| format!("{} has no numeric field `{field}`", path.display()))
    };
    Ok(RunReport {
        outcome: json["outcome"]
            .as_str()
            .with_context(|| format!("{} has no string field `outcome`", path.display()))?
            .to_owned(),
        rows_read: count("rows_read")?,
        rows_written: count("rows_written")?,
    })
}

async fn connect(path: &Path, create: bool) -> Result<SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .connect()
        .await
        .with_context(|| format!("could not open {}", path.display()))
}

async fn create_source(path: &Path) -> Result<()> {
    let mut conn = connect(path, true).await?;
    sqlx::query(
        "CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer TEXT NOT NULL,
            amount DECIMAL_TEXT(12,2),
            status TEXT,
            updated_at TIMESTAMP NOT NULL
        )",
    )
    .execute(&mut conn)
    .await
    .context("could not create the source table")?;

    // One transaction: SQLite commits 10,000 single-row inserts in well under a second that way.
    let mut tx = conn.begin().await?;
    for id in 1..=INITIAL_ROWS {
        insert_order(&mut tx, id, STATUSES[(id % 4) as usize], timestamp(1, id)).await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// Update every UPDATE_EVERY-th order and add INSERTED_ROWS new ones, all stamped later than
/// every existing `updated_at`, so the second run's cursor picks up exactly these 600 rows.
async fn change_source(path: &Path) -> Result<()> {
    let mut conn = connect(path, false).await?;
    let mut tx = conn.begin().await?;
    for (n, id) in (UPDATE_EVERY..=INITIAL_ROWS)
        .step_by(UPDATE_EVERY as usize)
        .enumerate()
    {
        sqlx::query("UPDATE orders SET status = ?, amount = ?, updated_at = ? WHERE id = ?")
            .bind(UPDATED_STATUS)
            .bind(amount(id * 104_729))
            .bind(timestamp(2, n as i64))
            .bind(id)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("could not update source order {id}"))?;
    }
    for n in 1..=INSERTED_ROWS {
        let stamp = timestamp(2, UPDATED_ROWS + n);
        insert_order(&mut tx, INITIAL_ROWS + n, STATUSES[0], stamp).await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

async fn insert_order(
    conn: &mut SqliteConnection,
    id: i64,
    status: &str,
    updated_at: String,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO orders (id, customer, amount, status, updated_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(format!("customer-{:03}", (id * 37) % 250))
    .bind(amount(id * 7919))
    .bind(status)
    .bind(updated_at)
    .execute(conn)
    .await
    .with_context(|| format!("could not insert source order {id}"))?;
    Ok(())
}

/// (all target orders, target orders carrying the run-2 status).
async fn count_target(path: &Path) -> Result<(i64, i64)> {
    if !path.exists() {
        bail!("the pipeline did not create {}", path.display());
    }
    let mut conn = connect(path, false).await?;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut conn)
        .await
        .context("could not count the target orders")?;
    let updated: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = ?")
        .bind(UPDATED_STATUS)
        .fetch_one(&mut conn)
        .await
        .context("could not count the updated target orders")?;
    conn.close().await?;
    Ok((rows, updated))
}

/// A deterministic amount between 1.00 and 1000.99, as the decimal text SQLite stores.
fn amount(seed: i64) -> String {
    let cents = seed % 100_000 + 100;
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `2024-<month>-01 00:00:00` plus `minutes`, in the text form SQLite sources use.
/// Callers stay within four weeks, so the day never leaves the month.
fn timestamp(month: u32, minutes: i64) -> String {
    debug_assert!((0..28 * 24 * 60).contains(&minutes));
    format!(
        "2024-{month:02}-{:02} {:02}:{:02}:00.000000",
        1 + minutes / (24 * 60),
        minutes / 60 % 24,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_sqlite_text_and_sort_chronologically() {
        assert_eq!(timestamp(1, 0), "2024-01-01 00:00:00.000000");
        assert_eq!(timestamp(1, 10_000), "2024-01-07 22:40:00.000000");
        // Text comparison is what a cursor on a TEXT timestamp column uses.
        assert!(timestamp(2, 0) > timestamp(1, INITIAL_ROWS));
    }

    /// The second run's cursor must see exactly the 600 changed rows, whatever the host does.
    #[tokio::test]
    async fn source_changes_are_exactly_the_rows_past_the_first_cursor() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("dpone-quickstart-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let db = dir.join("source.db");
        create_source(&db).await?;
        let mut conn = connect(&db, false).await?;
        let first_cursor: String = sqlx::query_scalar("SELECT MAX(updated_at) FROM orders")
            .fetch_one(&mut conn)
            .await?;
        change_source(&db).await?;
        let past_cursor: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE updated_at > ?")
                .bind(&first_cursor)
                .fetch_one(&mut conn)
                .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        fs::remove_dir_all(&dir)?;
        assert_eq!(past_cursor, UPDATED_ROWS + INSERTED_ROWS);
        assert_eq!(total, INITIAL_ROWS + INSERTED_ROWS);
        Ok(())
    }

    #[test]
    fn amounts_have_two_decimals() {
        assert_eq!(amount(0), "1.00");
        assert_eq!(amount(99_999), "1000.99");
        assert_eq!(amount(7919), "80.19");
    }
}
