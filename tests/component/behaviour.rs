//! Every strategy over the behaviour model (10,000 rows with 120 sparse wide columns by
//! default, `DPONE_MATRIX_ROW_COUNT` overrides): generation 0, then 20% changed, 5% deleted
//! and 5% new rows, then a run with no change; after each run the target is compared row by
//! row with the oracle. PostgreSQL -> PostgreSQL, SQLite -> PostgreSQL and SQLite ->
//! SQLite; xmin and cdc need a PostgreSQL source.

use dpone_host::backfill::Start;
use dpone_host::manifest::Manifest;
use dpone_host::matrix::local::Behaviour;
use dpone_host::matrix::model::{ModelConfig, first_day};
use dpone_host::matrix::oracle::{Oracle, Semantics};

use crate::support::{fresh_postgres_database, run, run_campaign, scratch};

/// Where the model's source and target live.
struct Endpoints {
    source: String,
    sink: String,
    state: String,
}

impl Endpoints {
    fn sqlite(name: &str) -> Self {
        let d = scratch(name);
        let d = d.display();
        Endpoints {
            source: format!("{{ kind: sqlite, path: {d}/src.db, table: model }}"),
            sink: format!("kind: sqlite\n  path: {d}/dst.db\n  table: model"),
            state: format!("{{ kind: sqlite, path: {d}/state.db }}"),
        }
    }

    async fn postgres(server: &str, name: &str) -> Self {
        let url = fresh_postgres_database(server, name).await;
        Endpoints {
            source: format!("{{ kind: postgres, url: \"{url}\", table: src.model }}"),
            sink: format!("kind: postgres\n  url: \"{url}\"\n  table: dst.model"),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
        }
    }

    async fn sqlite_to_postgres(server: &str, name: &str) -> Self {
        let d = scratch(name);
        let url = fresh_postgres_database(server, name).await;
        Endpoints {
            source: format!(
                "{{ kind: sqlite, path: {}/src.db, table: model }}",
                d.display()
            ),
            sink: format!("kind: postgres\n  url: \"{url}\"\n  table: dst.model"),
            state: format!("{{ kind: postgres, url: \"{url}\" }}"),
        }
    }

    fn manifest(&self, name: &str, strategy: &str) -> String {
        format!(
            "pipeline: {name}\nsource: {}\nsink:\n  {}\n  strategy: {{ {strategy} }}\nstate: {}\n",
            self.source, self.sink, self.state
        )
    }
}

/// A strategy as the model runs it: its options, its semantics, whether the key is the
/// compound `(region, id)`.
fn case(strategy: &str) -> (String, Semantics, bool) {
    let window = 6;
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
            "mode: replace, unique_key: [id], predicate: [{ column: day, from: '2024-01-01', to: '2024-01-07' }]".into(),
            Semantics::Window {
                first: first_day(),
                days: window,
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
        "backfill" => (String::new(), Semantics::Mirror, false),
        other => panic!("no model case for {other}"),
    }
}

/// Backfill covers the whole key range of the generation: a new campaign whenever the
/// range grows, nothing to do when it does not.
fn backfill_options(max_id: usize) -> String {
    format!(
        "mode: backfill, unique_key: [id], backfill: {{ inner_mode: replace, \
         chunk: {{ column: id, from: 1, to: {max_id}, step: {} }}, parallel_workers: 2 }}",
        max_id.div_ceil(6)
    )
}

async fn three_generations(endpoints: Endpoints, name: &str, strategy: &str) {
    let (options, semantics, compound) = case(strategy);
    let cfg = ModelConfig::from_env(20_261_127, compound);
    let first =
        Manifest::parse(&endpoints.manifest(name, "mode: full_refresh"), &|_| None).unwrap();
    let model = Behaviour::new(&first, cfg);
    let mut oracle = Oracle::new(semantics, model.key.clone());
    let mut rows = Vec::new();
    for (generation, label) in [(0, "generation 0"), (1, "generation 1"), (1, "no change")] {
        if label != "no change" {
            rows = model.seed(generation).await.unwrap();
        }
        if strategy == "backfill" {
            let max_id = rows.len() + rows.len() / 10;
            let yaml = endpoints.manifest(name, &backfill_options(max_id.max(cfg.rows * 21 / 20)));
            run_campaign(&yaml, Start::Run).await.unwrap();
        } else {
            run(&endpoints.manifest(name, &options), None)
                .await
                .unwrap_or_else(|e| panic!("{strategy} {label}: {e}"));
        }
        oracle.run(&rows);
        let n = model
            .check(&oracle, &format!("{strategy} {label}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "{strategy} {label}: empty target");
    }
}

macro_rules! model_cases {
    ($pair:ident, $($strategy:ident),*) => {
        mod $pair {
            $(#[tokio::test] async fn $strategy() {
                let name = concat!("model_", stringify!($pair), "_", stringify!($strategy));
                let Some(endpoints) = super::endpoints(stringify!($pair), name).await else { return };
                super::three_generations(endpoints, name, stringify!($strategy)).await;
            })*
        }
    };
}

async fn endpoints(pair: &str, name: &str) -> Option<Endpoints> {
    if pair == "sqlite_to_sqlite" {
        return Some(Endpoints::sqlite(name));
    }
    let server = crate::support::postgres_url()?;
    Some(match pair {
        "postgres_to_postgres" => Endpoints::postgres(&server, name).await,
        _ => Endpoints::sqlite_to_postgres(&server, name).await,
    })
}

model_cases!(
    postgres_to_postgres,
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill,
    xmin,
    cdc
);
model_cases!(
    sqlite_to_postgres,
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill
);
model_cases!(
    sqlite_to_sqlite,
    full_refresh,
    incremental_append,
    incremental_merge,
    replace,
    partition_replace,
    snapshot_diff,
    scd2,
    backfill
);
