//! Backfill campaigns: a chunked strategy run once per chunk, with a durable ledger.
//!
//! Chunk planning is in [`plan`], the ledger in [`ledger`]. This module runs a campaign:
//! it keys the campaign by a hash of its configuration (so editing the range or the inner
//! mode starts a new campaign instead of mixing two), records the plan, and runs
//! `parallel_workers` workers that each claim a chunk under a lease, renew the lease while
//! the chunk runs, and record the outcome. Retryable failures (source, sink, state) go back
//! to pending until `max_attempts`; config errors and key violations fail the chunk at once.

pub mod ledger;
pub mod plan;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::connectors::{self, Open};
use crate::error::{Error, Kind, Result};
use crate::manifest::Manifest;
use crate::model::{self, value_to_json};
use crate::runner::{self, Prepared, RunOptions};
use crate::runtime::bindings::Chunk;
use crate::runtime::convert::Cross;
pub use ledger::{ChunkRow, Ledger};
pub use plan::CampaignSpec;

/// What a `backfill` command does with the campaign before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Records the plan when new, then runs what is left.
    Run,
    /// Runs what is left of a campaign that exists; fails when it does not.
    Resume,
    /// Makes failed chunks pending again, then runs what is left.
    RetryFailed,
}

/// A campaign's plan and identity.
#[derive(Debug)]
pub struct Campaign {
    pub id: String,
    pub spec: CampaignSpec,
}

/// Plans the campaign of `manifest` (reads the source schema, writes nothing).
pub async fn campaign(manifest: &Manifest, prepared: &Prepared) -> Result<Campaign> {
    let schema = connectors::connect_source(manifest).await?.schema().await?;
    let options = runner::strategy_options(&prepared.info, &manifest.strategy, Some(&schema))?;
    let spec = plan::campaign_spec(&options, &schema)?;
    if spec.parallel_workers > 1 && connectors::publishes_whole_target(manifest.sink.kind()) {
        return Err(Error::config(
            "sink.strategy.backfill.parallel_workers",
            format!(
                "a `{}` sink publishes every chunk by replacing the whole target, so chunks run one at a time: set 1",
                manifest.sink.kind()
            ),
        ));
    }
    // The campaign is what gets loaded where and how; not the worker count or lease
    // length, which may change between invocations of one campaign.
    let identity: Vec<serde_json::Value> = options
        .iter()
        .filter(|(name, _)| {
            !name.starts_with("backfill.parallel_workers")
                && !name.starts_with("backfill.max_chunks")
                && !name.starts_with("backfill.retry_policy")
        })
        .map(|(name, value)| serde_json::json!([name, format!("{value:?}")]))
        .collect();
    let chunks: Vec<serde_json::Value> = spec
        .chunks
        .iter()
        .map(|c| serde_json::json!([value_to_json(&c.low), value_to_json(&c.high)]))
        .collect();
    let key = serde_json::json!({
        "pipeline": manifest.pipeline,
        "source": manifest.source_table().to_string(),
        "sink": manifest.sink_table().to_string(),
        "strategy": prepared.info.name,
        "options": identity,
        "chunks": chunks,
    });
    let digest = Sha256::digest(key.to_string().as_bytes());
    let id: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok(Campaign { id, spec })
}

async fn open_ledger(manifest: &Manifest, id: &str, create: bool) -> Result<Ledger> {
    let open = if create { Open::Create } else { Open::Plan };
    let session = connectors::connect(&manifest.state, Kind::State, open).await?;
    Ledger::open(session, &manifest.pipeline, id, create).await
}

/// The ledger rows of the manifest's campaign (empty when it never ran).
pub async fn status(manifest: &Manifest, prepared: &Prepared) -> Result<(Campaign, Vec<ChunkRow>)> {
    let campaign = campaign(manifest, prepared).await?;
    let rows = open_ledger(manifest, &campaign.id, false)
        .await?
        .chunks()
        .await?;
    Ok((campaign, rows))
}

/// What a campaign invocation did.
#[derive(Debug, serde::Serialize)]
pub struct CampaignReport {
    pub campaign: String,
    pub chunks: usize,
    pub ran: usize,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub rows_written: u64,
    pub wall_seconds: f64,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn now_text() -> String {
    model::time::format_timestamp(now_micros())
}

/// Shared by the workers of one invocation.
struct Shared<'a> {
    manifest: &'a Manifest,
    opts: &'a RunOptions<'a>,
    prepared: &'a Prepared,
    spec: &'a CampaignSpec,
    ledger: Mutex<Ledger>,
    /// Chunks this invocation may still start (`max_chunks`).
    budget: Mutex<Option<usize>>,
    owner_prefix: String,
    /// Set when a chunk failed in a way every chunk would (configuration, sandbox): the
    /// other workers stop claiming.
    stop: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct WorkerTotals {
    ran: usize,
    /// Chunks that finished successfully.
    done: usize,
    rows_written: u64,
}

/// Runs the campaign of `manifest` until every chunk is done or failed (or the
/// `max_chunks` budget is spent). Fails when a chunk failed for good.
pub async fn run(
    manifest: &Manifest,
    opts: &RunOptions<'_>,
    prepared: &Prepared,
    start: Start,
) -> Result<CampaignReport> {
    let started = Instant::now();
    let Campaign { id, spec } = campaign(manifest, prepared).await?;
    // Chunks fence each other with a lock in the sink's transaction; a sink that publishes
    // the whole target has none, so one process works its campaign at a time.
    let _campaign_lock = if connectors::publishes_whole_target(manifest.sink.kind()) {
        let mut state = runner::open_state(manifest).await?;
        state.lock_pipeline(&manifest.pipeline).await?;
        Some(state)
    } else {
        None
    };
    let mut ledger = open_ledger(manifest, &id, true).await?;
    let existing = ledger.chunks().await?;
    match start {
        Start::Resume | Start::RetryFailed if existing.is_empty() => {
            return Err(Error::config(
                "sink.strategy.backfill",
                format!(
                    "campaign {id} of pipeline `{}` has not started (its configuration may have changed); start it with `dpone-host backfill run`",
                    manifest.pipeline
                ),
            ));
        }
        Start::RetryFailed => {
            let reset = ledger.reset_failed(&now_text()).await?;
            tracing::info!("campaign {id}: {reset} failed chunks are pending again");
        }
        _ => {}
    }
    ledger.ensure_plan(&spec.chunks, &now_text()).await?;
    tracing::info!(
        "campaign {id}: {} chunks of `{}`, {} worker(s)",
        spec.chunks.len(),
        spec.column,
        spec.parallel_workers
    );
    let shared = Shared {
        manifest,
        opts,
        prepared,
        spec: &spec,
        ledger: Mutex::new(ledger),
        budget: Mutex::new(spec.max_chunks),
        owner_prefix: uuid::Uuid::new_v4().simple().to_string(),
        stop: std::sync::atomic::AtomicBool::new(false),
    };
    let mut totals = WorkerTotals::default();
    let mut first_error = None;
    // Chunks run alone until one succeeds: the first may create the target, which
    // concurrent chunks would race to do. The other workers join after it.
    loop {
        match step(&shared, 0, &mut totals).await {
            Ok(more) if more && totals.done == 0 => continue,
            Ok(_) => break,
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    let workers = (0..spec.parallel_workers)
        .filter(|_| first_error.is_none())
        .map(|w| worker(&shared, w));
    for result in join_all(workers).await {
        match result {
            Ok(t) => {
                totals.ran += t.ran;
                totals.done += t.done;
                totals.rows_written += t.rows_written;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let rows = shared.ledger.lock().await.chunks().await?;
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
    let report = CampaignReport {
        campaign: id.clone(),
        chunks: rows.len(),
        ran: totals.ran,
        done: count("done"),
        failed: count("failed"),
        pending: rows.len() - count("done") - count("failed"),
        rows_written: totals.rows_written,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(bad) = rows.iter().find(|r| r.status == "failed") {
        return Err(Error::new(
            Kind::Sink,
            format!(
                "campaign {id}: {} of {} chunks failed (first: chunk {} [{}, {}]: {}); fix the cause, then `dpone-host backfill retry-failed`",
                report.failed,
                report.chunks,
                bad.index,
                bad.low,
                bad.high,
                bad.error.as_deref().unwrap_or("no error recorded")
            ),
        ));
    }
    Ok(report)
}

/// Takes one unit of the invocation's chunk budget; `false` when it is spent.
async fn take_budget(shared: &Shared<'_>) -> bool {
    let mut budget = shared.budget.lock().await;
    match budget.as_mut() {
        None => true,
        Some(0) => false,
        Some(n) => {
            *n -= 1;
            true
        }
    }
}

/// A worker: runs chunks until none is left for it.
async fn worker(shared: &Shared<'_>, number: usize) -> Result<WorkerTotals> {
    let mut totals = WorkerTotals::default();
    while step(shared, number, &mut totals).await? {}
    Ok(totals)
}

/// Claims and runs one chunk, or waits for leased chunks; `false` when the worker is done.
async fn step(shared: &Shared<'_>, number: usize, totals: &mut WorkerTotals) -> Result<bool> {
    let owner = format!("{}-w{number}", shared.owner_prefix);
    let lease = i64::from(shared.spec.lease_seconds) * 1_000_000;
    if shared.stop.load(std::sync::atomic::Ordering::SeqCst) || !take_budget(shared).await {
        return Ok(false);
    }
    let claimed = {
        let now = now_micros();
        let mut ledger = shared.ledger.lock().await;
        ledger
            .claim(
                &owner,
                now,
                now + lease,
                shared.spec.max_attempts,
                &now_text(),
            )
            .await?
    };
    let Some(index) = claimed else {
        // Give the budget back: nothing was started with it.
        if let Some(n) = shared.budget.lock().await.as_mut() {
            *n += 1;
        }
        let rows = shared.ledger.lock().await.chunks().await?;
        let leased: Vec<&ChunkRow> = rows.iter().filter(|r| r.status == "running").collect();
        if leased.is_empty() {
            return Ok(false);
        }
        // Another worker (maybe in another process, maybe dead) holds the rest; wait
        // for them to finish or for a lease to expire.
        let wait = leased
            .iter()
            .filter_map(|r| r.lease_expires)
            .min()
            .map_or(1_000_000, |t| (t - now_micros()).clamp(100_000, 1_000_000));
        tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        return Ok(true);
    };
    totals.ran += 1;
    let total = shared.spec.chunks.len();
    let range = shared.spec.chunks[index as usize].clone();
    let label = format!(
        "chunk {}/{total} [{}, {}{}",
        index + 1,
        model::value_display(&range.low),
        model::value_display(&range.high),
        if range.high_inclusive { "]" } else { ")" }
    );
    let chunk = Chunk {
        index: index as u32,
        total: total as u32,
        range: range.cross(),
    };
    tracing::info!("{label}: started by worker {number}");
    let run = runner::run_prepared(shared.manifest, shared.opts, shared.prepared, Some(chunk));
    tokio::pin!(run);
    let renew_every = Duration::from_micros((lease / 3).max(100_000) as u64);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            () = tokio::time::sleep(renew_every) => {
                // A renewal that fails leaves the chunk running: its finalization is fenced
                // (one commit per chunk at a time) and idempotent, so at worst another
                // worker repeats it after the lease expires.
                match shared.ledger.lock().await.renew(index, &owner, now_micros() + lease).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("{label}: lease lost to another worker; the chunk's commits are fenced and idempotent"),
                    Err(e) => tracing::warn!("{label}: could not renew the lease: {e}"),
                }
            }
        }
    };
    let mut ledger = shared.ledger.lock().await;
    match outcome {
        Ok(report) => {
            totals.done += 1;
            totals.rows_written += report.rows_written;
            ledger
                .finish(index, &owner, report.rows_written, &now_text())
                .await?;
            tracing::info!(
                "{label}: done, {} rows read, {} written in {:.2}s",
                report.rows_read,
                report.rows_written,
                report.wall_seconds
            );
        }
        Err((e, _)) => {
            let stopped = matches!(e.kind, Kind::Interrupted | Kind::Terminated);
            let retry = stopped
                || matches!(
                    e.kind,
                    Kind::Source | Kind::Sink | Kind::State | Kind::Internal
                );
            // Every chunk would fail the same way, or the operator stopped the process:
            // stop the campaign with this error (a stopped chunk is pending again).
            let fatal =
                stopped || matches!(e.kind, Kind::Config | Kind::Unsupported | Kind::Sandbox);
            tracing::warn!(
                "{label}: failed ({}): {e}",
                if retry { "will retry" } else { "not retryable" }
            );
            ledger
                .fail(
                    index,
                    &owner,
                    &e.to_string(),
                    retry,
                    shared.spec.max_attempts,
                    &now_text(),
                )
                .await?;
            if fatal {
                shared.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e);
            }
        }
    }
    Ok(true)
}
