//! The canonical matrix: 5 sources x 5 sinks = 25 pairs, 200 cases (the user's runbook,
//! `dpone.integration_matrix`). Rules, in order:
//!
//! - every pair: full_refresh, incremental_append, incremental_merge, replace (100);
//! - every pair: snapshot_diff (25);
//! - every pair whose sink is not Kafka: partition_replace, scd2, backfill (60);
//! - PostgreSQL sources: xmin (5);
//! - PostgreSQL and SQL Server sources: cdc (10).
//!
//! A case id is `<source>_to_<sink>__<strategy>`. Each case knows its install extras (the
//! cargo features of its connectors), the live profiles it needs, its guide and a minimal
//! manifest.

use super::model::first_day;
use super::oracle::Semantics;
use crate::model::time;

pub const SOURCES: [&str; 5] = ["postgres", "mssql", "clickhouse", "rest", "kafka"];
pub const SINKS: [&str; 5] = ["mssql", "postgres", "clickhouse", "bigquery", "kafka"];
pub const COMMON: [&str; 4] = [
    "full_refresh",
    "incremental_append",
    "incremental_merge",
    "replace",
];
pub const DB_TARGET: [&str; 3] = ["partition_replace", "scd2", "backfill"];
pub const STRATEGIES: [&str; 10] = [
    "full_refresh",
    "incremental_append",
    "incremental_merge",
    "replace",
    "snapshot_diff",
    "partition_replace",
    "scd2",
    "backfill",
    "xmin",
    "cdc",
];

/// Every live profile, with what makes it available.
pub const PROFILES: [(&str, &str); 6] = [
    (
        "postgres_live",
        "a PostgreSQL server: mock_local starts the private one; vendor_live reads DPONE_LIVE_POSTGRES_URL",
    ),
    (
        "mssql_live",
        "a SQL Server: vendor_live reads DPONE_LIVE_MSSQL_URL (no SQL Server can run on the build machines, so mock_local has none)",
    ),
    (
        "clickhouse_live",
        "a ClickHouse server: mock_local uses the private one of `cargo xtask` (DPONE_MATRIX_CLICKHOUSE_URL or DPONE_TEST_CLICKHOUSE_URL), vendor_live reads DPONE_LIVE_CLICKHOUSE_URL",
    ),
    (
        "bigquery_live",
        "a BigQuery project: mock_local uses the private emulator of `cargo xtask bigquery start` (DPONE_MATRIX_BIGQUERY_ENDPOINT or DPONE_TEST_BIGQUERY_ENDPOINT), vendor_live reads DPONE_LIVE_BIGQUERY_PROJECT and DPONE_LIVE_BIGQUERY_CREDENTIALS_JSON (signing in to Google is built, never run here)",
    ),
    (
        "kafka_live",
        "a Kafka broker: mock_local uses the private tansu of `cargo xtask kafka start` (DPONE_MATRIX_KAFKA_BROKERS or DPONE_TEST_KAFKA_BROKERS; no producer transactions), vendor_live reads DPONE_LIVE_KAFKA_BROKERS",
    ),
    (
        "rest_mock",
        "the mock REST API `cargo xtask matrix --mode mock_local` serves on a loopback port (DPONE_MATRIX_REST_URL)",
    ),
];

/// One case of the matrix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    pub id: String,
    pub source: &'static str,
    pub sink: &'static str,
    pub strategy: &'static str,
    /// Cargo features of the host this case needs.
    pub extras: Vec<&'static str>,
    pub profiles: Vec<&'static str>,
    /// The source -> sink guide, relative to the repository root.
    pub guide: String,
}

fn profile(connector: &str) -> &'static str {
    match connector {
        "postgres" => "postgres_live",
        "mssql" => "mssql_live",
        "clickhouse" => "clickhouse_live",
        "bigquery" => "bigquery_live",
        "kafka" => "kafka_live",
        _ => "rest_mock",
    }
}

fn extra(connector: &str) -> &'static str {
    match connector {
        "postgres" => "postgres",
        "mssql" => "mssql",
        "clickhouse" => "clickhouse",
        "bigquery" => "bigquery",
        "kafka" => "kafka",
        _ => "rest",
    }
}

/// Whether the matrix has `strategy` for `source -> sink`.
pub fn applies(source: &str, sink: &str, strategy: &str) -> bool {
    match strategy {
        s if COMMON.contains(&s) || s == "snapshot_diff" => true,
        s if DB_TARGET.contains(&s) => sink != "kafka",
        "xmin" => source == "postgres",
        "cdc" => source == "postgres" || source == "mssql",
        _ => false,
    }
}

/// Why the matrix has no case for a strategy on a pair (for the guides).
pub fn excluded_because(source: &str, sink: &str, strategy: &str) -> Option<&'static str> {
    if applies(source, sink, strategy) {
        return None;
    }
    Some(match strategy {
        "partition_replace" | "scd2" | "backfill" => {
            "a Kafka topic's consumers see the latest event per key, not a table: partitions, history versions and chunk ranges are table concepts the matrix checks on database sinks only"
        }
        "xmin" => "xmin is PostgreSQL's transaction id: only a PostgreSQL source has it",
        _ => "needs a change log: PostgreSQL logical replication or SQL Server change tables",
    })
}

/// Every case, in source, sink, strategy order.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for source in SOURCES {
        for sink in SINKS {
            for strategy in STRATEGIES {
                if !applies(source, sink, strategy) {
                    continue;
                }
                let mut extras = vec![extra(source)];
                if extra(sink) != extra(source) {
                    extras.push(extra(sink));
                }
                let mut profiles = vec![profile(source)];
                if profile(sink) != profile(source) {
                    profiles.push(profile(sink));
                }
                out.push(Case {
                    id: format!("{source}_to_{sink}__{strategy}"),
                    source,
                    sink,
                    strategy,
                    extras,
                    profiles,
                    guide: guide_path(source, sink),
                });
            }
        }
    }
    out
}

pub fn guide_path(source: &str, sink: &str) -> String {
    format!("docs/source-sink/{source}-to-{sink}.md")
}

/// The model's columns as a REST or Kafka source declares them (JSON carries no schema).
const DECLARED_COLUMNS: &str = "[{ name: id, type: int64, nullable: false }, { name: region, type: text, nullable: false }, \
     { name: updated_at, type: timestamp, nullable: false }, { name: day, type: date, nullable: false }, \
     { name: amount, type: 'decimal(18,4)' }, { name: label, type: text }]";

/// The manifest section of `connector` as a source or sink of case `id`. Endpoints come
/// from `${DPONE_MATRIX_*}` variables (docs/integration-matrix.md).
pub fn connection(connector: &str, sink: bool, id: &str) -> String {
    let table = if sink {
        format!("matrix_dst.{id}")
    } else {
        "matrix_src.model".into()
    };
    match connector {
        "postgres" => {
            format!("kind: postgres\n  url: \"${{DPONE_MATRIX_POSTGRES_URL}}\"\n  table: {table}")
        }
        // Test servers (the official container image) have self-signed certificates. A cdc
        // case reads the capture instance the matrix enables on the model table, all
        // changes compacted per key by dpone.
        "mssql" => {
            let feed = if !sink && id.ends_with("__cdc") {
                "\n  change_feed: { capture_instance: matrix_src_model, net_changes: false }"
            } else {
                ""
            };
            format!(
                "kind: mssql\n  url: \"${{DPONE_MATRIX_MSSQL_URL}}\"\n  table: {table}\n  trust_server_certificate: true{feed}"
            )
        }
        "clickhouse" => {
            format!(
                "kind: clickhouse\n  url: \"${{DPONE_MATRIX_CLICKHOUSE_URL}}\"\n  table: {table}"
            )
        }
        "bigquery" => format!(
            "kind: bigquery\n  project: \"${{DPONE_MATRIX_BIGQUERY_PROJECT}}\"\n  dataset: matrix_dst\n  table: {id}\n  endpoint: \"${{DPONE_MATRIX_BIGQUERY_ENDPOINT}}\"\n  credentials_json: \"${{DPONE_MATRIX_BIGQUERY_CREDENTIALS_JSON}}\""
        ),
        // An incremental_append target is an event log; the others are compacted tables.
        // Brokers without producer transactions (the local tansu) say so in the variable.
        "kafka" if sink => format!(
            "kind: kafka\n  brokers: \"${{DPONE_MATRIX_KAFKA_BROKERS}}\"\n  topic: dpone_matrix_{id}\n  exactly_once: \"${{DPONE_MATRIX_KAFKA_EXACTLY_ONCE}}\"{}",
            if id.ends_with("__incremental_append") {
                "\n  append_only: true"
            } else {
                ""
            }
        ),
        "kafka" => format!(
            "kind: kafka\n  brokers: \"${{DPONE_MATRIX_KAFKA_BROKERS}}\"\n  topic: dpone_matrix_model\n  primary_key: [id]\n  columns: {DECLARED_COLUMNS}"
        ),
        _ => format!(
            "kind: rest\n  url: \"${{DPONE_MATRIX_REST_URL}}/model\"\n  table: model\n  records_path: data\n  pagination: {{ type: page_number, param: page, size_param: per_page, size: 500 }}\n  primary_key: [id]\n  columns: {DECLARED_COLUMNS}"
        ),
    }
}

/// The `sink.strategy` options of a strategy over the behaviour model, its oracle
/// semantics, and whether it keys on the compound `(region, id)`.
pub fn strategy_options(strategy: &str) -> (String, Semantics, bool) {
    let window_days = 6;
    let window_end = time::format_date(first_day() + window_days);
    match strategy {
        "full_refresh" => ("mode: full_refresh, unique_key: [id]".into(), Semantics::Mirror, false),
        "incremental_append" => (
            "mode: incremental_append, cursor_column: updated_at".into(),
            Semantics::Append,
            false,
        ),
        "incremental_merge" => (
            "mode: incremental_merge, unique_key: [id], cursor_column: updated_at".into(),
            Semantics::Merge,
            false,
        ),
        "replace" => (
            format!(
                "mode: replace, unique_key: [id], predicate: [{{ column: day, from: '{}', to: '{window_end}' }}]",
                time::format_date(first_day())
            ),
            Semantics::Window {
                first: first_day(),
                days: window_days,
            },
            false,
        ),
        "partition_replace" => (
            "mode: partition_replace, unique_key: [id], partition: { column: day }".into(),
            Semantics::Partitions,
            false,
        ),
        "snapshot_diff" => (
            "mode: snapshot_diff, unique_key: [region, id], diff: { compare: row_hash, delete_policy: hard_delete }".into(),
            Semantics::Mirror,
            true,
        ),
        "scd2" => ("mode: scd2, unique_key: [region, id]".into(), Semantics::Scd2, true),
        "xmin" => ("mode: xmin, unique_key: [id]".into(), Semantics::ChangedRows, false),
        "cdc" => ("mode: cdc, unique_key: [region, id]".into(), Semantics::Mirror, true),
        _ => (
            backfill_options(super::model::DEFAULT_ROWS * 21 / 20, 2),
            Semantics::Mirror,
            false,
        ),
    }
}

/// Backfill over ids `1..=max_id` in six chunks with `workers` workers: the campaign
/// changes when the key range grows, and a finished campaign runs nothing again.
pub fn backfill_options(max_id: usize, workers: usize) -> String {
    format!(
        "mode: backfill, unique_key: [id], backfill: {{ inner_mode: replace, \
         chunk: {{ column: id, from: 1, to: {max_id}, step: {} }}, parallel_workers: {workers}, \
         retry_policy: {{ lease_seconds: 2 }} }}",
        max_id.div_ceil(6)
    )
}

/// The minimal manifest of a case.
pub fn manifest(case: &Case) -> String {
    let (options, _, _) = strategy_options(case.strategy);
    let state = "{ kind: sqlite, path: .dpone/matrix-state.db }";
    format!(
        "pipeline: {}\nsource:\n  {}\nsink:\n  {}\n  strategy: {{ {options} }}\nstate: {state}\n",
        case.id,
        connection(case.source, false, &case.id),
        connection(case.sink, true, &case.id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_25_pairs_and_200_cases_by_the_runbook_rules() {
        let cases = cases();
        assert_eq!(cases.len(), 200);
        let pairs: std::collections::BTreeSet<_> =
            cases.iter().map(|c| (c.source, c.sink)).collect();
        assert_eq!(pairs.len(), 25);
        let count = |f: &dyn Fn(&Case) -> bool| cases.iter().filter(|c| f(c)).count();
        assert_eq!(count(&|c| COMMON.contains(&c.strategy)), 100);
        assert_eq!(count(&|c| c.strategy == "snapshot_diff"), 25);
        assert_eq!(count(&|c| DB_TARGET.contains(&c.strategy)), 60);
        assert_eq!(count(&|c| c.strategy == "xmin"), 5);
        assert_eq!(count(&|c| c.strategy == "cdc"), 10);
        assert!(
            cases
                .iter()
                .all(|c| c.id == format!("{}_to_{}__{}", c.source, c.sink, c.strategy))
        );
        let ids: std::collections::BTreeSet<_> = cases.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), 200, "ids are unique");
        assert!(
            !cases
                .iter()
                .any(|c| c.sink == "kafka" && DB_TARGET.contains(&c.strategy))
        );
    }

    #[test]
    fn every_case_declares_extras_profiles_and_a_guide() {
        for c in cases() {
            assert!(!c.extras.is_empty() && !c.profiles.is_empty(), "{}", c.id);
            assert!(
                c.profiles
                    .iter()
                    .all(|p| PROFILES.iter().any(|(name, _)| name == p))
            );
            assert_eq!(
                c.guide,
                format!("docs/source-sink/{}-to-{}.md", c.source, c.sink)
            );
        }
        let c = cases()
            .into_iter()
            .find(|c| c.id == "postgres_to_postgres__xmin")
            .unwrap();
        assert_eq!(
            (c.extras, c.profiles),
            (vec!["postgres"], vec!["postgres_live"])
        );
    }
}
