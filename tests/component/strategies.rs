//! The four foundation strategies through the real host and the real components, on
//! SQLite -> SQLite and PostgreSQL -> PostgreSQL. Each test runs a strategy, changes the
//! source, runs again, and compares the target row by row with what the strategy's
//! semantics say it must hold, computed from the source snapshots the runs saw.

use dpone_host::Kind;
use dpone_host::manifest::Manifest;
use dpone_host::runner;

use crate::support::{Db, component, fresh_postgres_database, run, run_fails, scratch};

pub(crate) type Rows = Vec<Vec<Option<String>>>;

/// One source -> sink setup: where the tables are and how to reach them.
pub(crate) struct Pair {
    pub(crate) name: String,
    pub(crate) source: Db,
    pub(crate) sink: Db,
    pub(crate) source_table: &'static str,
    pub(crate) sink_table: &'static str,
    /// A second source connection's address: a PostgreSQL URL or a SQLite path.
    pub(crate) source_address: String,
    /// The manifest's `source`, `sink` (without strategy) and `state` connection fields.
    pub(crate) source_yaml: String,
    pub(crate) sink_yaml: String,
    pub(crate) state_yaml: String,
}

// Aliased so `ORDER BY id` sorts by the numeric column, not its text.
const COLUMNS: &str = "CAST(id AS TEXT) AS id_text, name, CAST(amount AS TEXT) AS amount_text, CAST(updated_at AS TEXT) AS updated_text";

impl Pair {
    pub(crate) async fn sqlite(name: &str) -> Pair {
        let dir = scratch(name);
        let d = dir.display();
        Pair {
            name: name.into(),
            source: Db::sqlite(&dir.join("src.db")).await,
            sink: Db::sqlite(&dir.join("dst.db")).await,
            source_table: "orders",
            sink_table: "orders",
            source_address: format!("{d}/src.db"),
            source_yaml: format!("{{ kind: sqlite, path: {d}/src.db, table: orders }}"),
            sink_yaml: format!("kind: sqlite\n  path: {d}/dst.db\n  table: orders"),
            state_yaml: format!("{{ kind: sqlite, path: {d}/state.db }}"),
        }
    }

    /// Source and sink in two schemas of a fresh database; state colocated with the sink,
    /// so it commits in the sink's transaction.
    pub(crate) async fn postgres(server: &str, name: &str) -> Pair {
        let url = fresh_postgres_database(server, name).await;
        let mut source = Db::postgres(&url).await;
        source.exec("CREATE SCHEMA src; CREATE SCHEMA dst").await;
        Pair {
            name: name.into(),
            source,
            sink: Db::postgres(&url).await,
            source_table: "src.orders",
            sink_table: "dst.orders",
            source_address: url.clone(),
            source_yaml: format!("{{ kind: postgres, url: \"{url}\", table: src.orders }}"),
            sink_yaml: format!("kind: postgres\n  url: \"{url}\"\n  table: dst.orders"),
            state_yaml: format!("{{ kind: postgres, url: \"{url}\" }}"),
        }
    }

    /// A SQLite source into a PostgreSQL sink, state colocated with the sink.
    pub(crate) async fn sqlite_to_postgres(server: &str, name: &str) -> Pair {
        let dir = scratch(name);
        let url = fresh_postgres_database(server, name).await;
        let mut sink = Db::postgres(&url).await;
        sink.exec("CREATE SCHEMA dst").await;
        Pair {
            name: name.into(),
            source: Db::sqlite(&dir.join("src.db")).await,
            sink,
            source_table: "orders",
            sink_table: "dst.orders",
            source_address: format!("{}/src.db", dir.display()),
            source_yaml: format!(
                "{{ kind: sqlite, path: {}/src.db, table: orders }}",
                dir.display()
            ),
            sink_yaml: format!("kind: postgres\n  url: \"{url}\"\n  table: dst.orders"),
            state_yaml: format!("{{ kind: postgres, url: \"{url}\" }}"),
        }
    }

    /// Another connection to the source, e.g. to hold a transaction open.
    pub(crate) async fn source_connection(&self) -> Db {
        if self.is_postgres() {
            Db::postgres(&self.source_address).await
        } else {
            Db::sqlite(std::path::Path::new(&self.source_address)).await
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.source, Db::Postgres(_))
    }

    pub(crate) fn sink_is_postgres(&self) -> bool {
        matches!(self.sink, Db::Postgres(_))
    }

    pub(crate) async fn delete_source(&mut self, ids: &str) {
        self.source
            .exec(&format!(
                "DELETE FROM {} WHERE id IN ({ids})",
                self.source_table
            ))
            .await;
    }

    /// Generation 3: a deleted key comes back with new values; a changed key changes again.
    pub(crate) async fn revive(&mut self) {
        let t = self.source_table;
        self.source
            .exec(&format!(
                "INSERT INTO {t} VALUES (5, 'back again', '5.50', '2024-03-01 00:00:00.000000')"
            ))
            .await;
        self.source.exec(&format!("UPDATE {t} SET name = 'changed twice', updated_at = '2024-03-02 00:00:00.000000' WHERE id = 10")).await;
    }

    /// Target rows (the source columns, normalized) plus one extra text column.
    pub(crate) async fn target_rows_with(&mut self, extra: &str, order: &str) -> Rows {
        let sql = format!(
            "SELECT {COLUMNS}, {extra} FROM {} ORDER BY id, {order}",
            self.sink_table
        );
        normalize(self.sink.rows(&sql).await)
    }

    pub(crate) fn manifest(&self, strategy: &str) -> String {
        format!(
            "pipeline: {}\nsource: {}\nsink:\n  {}\n  strategy: {{ {strategy} }}\nstate: {}\n",
            self.name, self.source_yaml, self.sink_yaml, self.state_yaml
        )
    }

    /// Generation 0: 300 orders. Amounts keep trailing zeros, names carry unicode,
    /// quotes and control characters, and one name is an empty string, one NULL.
    pub(crate) async fn seed(&mut self, primary_key: bool) {
        let (amount, ts) = if self.is_postgres() {
            ("numeric(12,2)", "timestamp")
        } else {
            ("DECIMAL_TEXT(12,2)", "TIMESTAMP")
        };
        let pk = if primary_key { " PRIMARY KEY" } else { "" };
        let t = self.source_table;
        self.source.exec(&format!("CREATE TABLE {t} (id BIGINT NOT NULL{pk}, name TEXT, amount {amount}, updated_at {ts} NOT NULL)")).await;
        let mut values = Vec::new();
        for id in 1..=300 {
            let name = match id {
                7 => "NULL".to_string(),
                8 => "''".to_string(),
                _ => format!("'client ''{id}'' – žluť\t{}'", id % 7),
            };
            values.push(format!(
                "({id}, {name}, '{}.{:02}', '2024-01-01 00:{:02}:{:02}.000000')",
                id * 3,
                id % 100,
                id / 60,
                id % 60
            ));
        }
        self.source
            .exec(&format!("INSERT INTO {t} VALUES {}", values.join(", ")))
            .await;
    }

    /// Generation 1: 30 rows changed (later cursor), 20 rows inserted.
    pub(crate) async fn change(&mut self) {
        let t = self.source_table;
        // SQLite arithmetic yields a REAL; keep the column's two-decimal text form.
        let bumped = if self.is_postgres() {
            "amount + 1"
        } else {
            "printf('%.2f', amount + 1)"
        };
        self.source.exec(&format!("UPDATE {t} SET amount = {bumped}, name = 'changed', updated_at = '2024-02-01 00:00:00.000000' WHERE id % 10 = 0")).await;
        let values: Vec<String> = (301..=320)
            .map(|id| format!("({id}, 'new {id}', '1.10', '2024-02-02 00:00:00.000000')"))
            .collect();
        self.source
            .exec(&format!("INSERT INTO {t} VALUES {}", values.join(", ")))
            .await;
    }

    pub(crate) async fn source_rows(&mut self, filter: &str) -> Rows {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} {filter} ORDER BY id",
            self.source_table
        );
        self.source.rows(&sql).await
    }

    pub(crate) async fn target_rows(&mut self) -> Rows {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} ORDER BY id, updated_at",
            self.sink_table
        );
        self.sink.rows(&sql).await
    }

    pub(crate) async fn target_exists(&mut self) -> bool {
        let sql = if self.sink_is_postgres() {
            format!("SELECT CAST(to_regclass('{}') AS TEXT)", self.sink_table)
        } else {
            format!(
                "SELECT name FROM sqlite_master WHERE name = '{}'",
                self.sink_table
            )
        };
        self.sink
            .rows(&sql)
            .await
            .first()
            .is_some_and(|r| r[0].is_some())
    }

    pub(crate) async fn state(&self) -> String {
        let manifest = Manifest::parse(&self.manifest("mode: full_refresh"), &|_| None).unwrap();
        let mut store = runner::open_state(&manifest).await.unwrap();
        format!("{:?}", store.entries(&self.name).await.unwrap())
    }
}

/// Timestamps as microseconds, so rows read from SQLite and PostgreSQL compare equal.
pub(crate) fn normalize(rows: Rows) -> Rows {
    let norm = |v: Option<String>| {
        v.map(|text| {
            let looks_like_time = text.len() >= 19
                && text.as_bytes()[4] == b'-'
                && matches!(text.as_bytes()[10], b' ' | b'T');
            match dpone_host::model::time::parse_timestamp(&text) {
                Some(us) if looks_like_time => us.to_string(),
                _ => text,
            }
        })
    };
    rows.into_iter()
        .map(|r| r.into_iter().map(norm).collect())
        .collect()
}

pub(crate) fn assert_rows(actual: &Rows, expected: &Rows, what: &str) {
    if let Some(i) =
        (0..actual.len().max(expected.len())).find(|&i| actual.get(i) != expected.get(i))
    {
        panic!(
            "{what}: first difference at row {i}: target {:?} != expected {:?} ({} target rows, {} expected)",
            actual.get(i),
            expected.get(i),
            actual.len(),
            expected.len()
        );
    }
}

async fn full_refresh(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: full_refresh, unique_key: [id]");
    let report = run(&yaml, None).await.unwrap();
    assert_eq!((report.rows_read, report.rows_written), (300, 300));
    let expected = p.source_rows("").await;
    assert_rows(&p.target_rows().await, &expected, "full_refresh run 1");
    p.change().await;
    p.source
        .exec(&format!("DELETE FROM {} WHERE id = 5", p.source_table))
        .await;
    run(&yaml, None).await.unwrap();
    let expected = p.source_rows("").await;
    assert_rows(
        &p.target_rows().await,
        &expected,
        "full_refresh run 2 (changes, inserts, a delete)",
    );
}

/// Duplicate keys never reach the target, on the swap path (the staging table shaped like
/// the keyed target refuses them, on PostgreSQL when its key is built after the load) as on
/// the reload path (key check).
async fn full_refresh_refuses_duplicate_keys(mut p: Pair) {
    p.seed(false).await;
    let yaml = p.manifest("mode: full_refresh, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    let before = p.target_rows().await;
    let t = p.source_table;
    p.source
        .exec(&format!(
            "INSERT INTO {t} VALUES (3, 'dup', '1.00', '2024-03-01 00:00:00.000000')"
        ))
        .await;
    let err = run_fails(&yaml, None, Kind::KeyViolation).await;
    assert!(
        err.message.contains("dup")
            || err.message.contains("unique")
            || err.message.contains("UNIQUE"),
        "{err}"
    );
    assert_rows(
        &p.target_rows().await,
        &before,
        "target after refused duplicates",
    );
}

async fn incremental_append(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: incremental_append, cursor_column: updated_at");
    run(&yaml, None).await.unwrap();
    let mut expected = p.source_rows("").await;
    assert_rows(&p.target_rows().await, &expected, "append run 1");
    p.change().await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(
        report.rows_written, 50,
        "30 changed + 20 new rows past the cursor"
    );
    // History is kept: the changed rows are appended next to their old versions.
    expected.extend(p.source_rows("WHERE updated_at >= '2024-02-01'").await);
    expected.sort();
    let mut actual = p.target_rows().await;
    actual.sort();
    assert_rows(&actual, &expected, "append run 2");
    let again = run(&yaml, None).await.unwrap();
    assert_eq!(
        again.rows_written, 0,
        "nothing past the cursor: nothing appended"
    );
}

async fn incremental_merge(mut p: Pair) {
    p.seed(false).await;
    let yaml = p.manifest("mode: incremental_merge, unique_key: [id], cursor_column: updated_at");
    run(&yaml, None).await.unwrap();
    let expected = p.source_rows("").await;
    assert_rows(&p.target_rows().await, &expected, "merge run 1");
    p.change().await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(report.rows_read, 50);
    let expected = p.source_rows("").await;
    assert_rows(&p.target_rows().await, &expected, "merge run 2");

    // A duplicate key past the cursor fails before the target or the state moves.
    let state_before = p.state().await;
    let target_before = p.target_rows().await;
    p.source.exec(&format!("INSERT INTO {} VALUES (3, 'dup', '1.00', '2024-03-01 00:00:00.000000'), (3, 'dup', '2.00', '2024-03-01 00:00:00.000000')", p.source_table)).await;
    let err = run_fails(&yaml, None, Kind::KeyViolation).await;
    assert!(err.message.contains("duplicate"), "{err}");
    assert_rows(
        &p.target_rows().await,
        &target_before,
        "target after a key violation",
    );
    assert_eq!(p.state().await, state_before, "state after a key violation");
}

async fn replace(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest(
        "mode: replace, unique_key: [id], predicate: [{ column: id, from: 100, to: 200 }]",
    );
    // Rows outside the window that the target already holds must survive every run.
    run(&p.manifest("mode: full_refresh"), None).await.unwrap();
    p.sink
        .exec(&format!(
            "DELETE FROM {} WHERE id >= 100 AND id < 200",
            p.sink_table
        ))
        .await;
    let outside = p.target_rows().await;
    run(&yaml, None).await.unwrap();
    let mut expected = outside.clone();
    expected.extend(p.source_rows("WHERE id >= 100 AND id < 200").await);
    expected.sort_by_key(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap());
    assert_rows(&p.target_rows().await, &expected, "replace run 1");
    p.change().await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(report.rows_written, 100);
    let mut expected = outside;
    expected.extend(p.source_rows("WHERE id >= 100 AND id < 200").await);
    expected.sort_by_key(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap());
    assert_rows(
        &p.target_rows().await,
        &expected,
        "replace run 2: only the window changed",
    );
}

/// The sink connection dies (PostgreSQL) or the insert aborts (SQLite) after the target's
/// old rows were deleted and before commit: target and state must be as they were.
async fn failed_finalize_changes_nothing(mut p: Pair) {
    p.seed(false).await;
    let yaml = p.manifest("mode: incremental_merge, unique_key: [id], cursor_column: updated_at");
    run(&yaml, None).await.unwrap();
    p.change().await;
    let (state_before, target_before) = (p.state().await, p.target_rows().await);
    let t = p.sink_table;
    if p.is_postgres() {
        p.sink.exec(&format!(
            "CREATE FUNCTION dst.kill_me() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$; \
             CREATE TRIGGER kill_me AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION dst.kill_me()"
        ))
        .await;
    } else {
        p.sink.exec(&format!("CREATE TRIGGER abort_me AFTER INSERT ON {t} BEGIN SELECT RAISE(ABORT, 'injected failure'); END")).await;
    }
    run_fails(&yaml, None, Kind::Sink).await;
    assert_rows(
        &p.target_rows().await,
        &target_before,
        "target after a failed finalize",
    );
    assert_eq!(
        p.state().await,
        state_before,
        "state after a failed finalize"
    );
    let leftovers = p
        .sink
        .rows(if p.is_postgres() {
            "SELECT tablename FROM pg_tables WHERE tablename LIKE '__dpone_stg%'"
        } else {
            "SELECT name FROM sqlite_master WHERE name LIKE '__dpone_stg%'"
        })
        .await;
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// Swapping `--strategy` between two built components changes what the same manifest
/// does, with no host rebuild: merge keeps a row the source deleted, full refresh drops it.
async fn swapping_the_component_changes_behaviour(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: full_refresh, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    p.source
        .exec(&format!("DELETE FROM {} WHERE id = 42", p.source_table))
        .await;
    p.change().await;
    run(&yaml, Some(&component("incremental_merge")))
        .await
        .unwrap();
    assert_eq!(
        p.sink.count(p.sink_table).await,
        320,
        "merge keeps the deleted row 42"
    );
    run(&yaml, None).await.unwrap();
    let expected = p.source_rows("").await;
    assert_rows(
        &p.target_rows().await,
        &expected,
        "full_refresh again: row 42 is gone",
    );
}

/// Two processes never run one pipeline at once: while another holds the pipeline's lock
/// in the state store, a run fails before touching anything.
async fn a_pipeline_runs_once_at_a_time(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: full_refresh");
    let manifest = Manifest::parse(&yaml, &|_| None).unwrap();
    let session = dpone_host::connectors::connect(
        &manifest.state,
        Kind::State,
        dpone_host::connectors::Open::Create,
    )
    .await
    .unwrap();
    let mut holder = dpone_host::state::StateStore::open(session, true)
        .await
        .unwrap();
    holder.lock_pipeline(&p.name).await.unwrap();
    let err = run_fails(&yaml, None, Kind::State).await;
    assert!(err.message.contains("already running"), "{err}");
    assert!(
        !p.target_exists().await,
        "the refused run created the target"
    );
    drop(holder);
    run(&yaml, None).await.unwrap();
    assert_eq!(p.sink.count(p.sink_table).await, 300);
}

/// The snapshot_diff oracle: what the target holds, by key, independent of any SQL.
#[derive(Default)]
struct SnapshotModel {
    rows: std::collections::BTreeMap<i64, (Vec<Option<String>>, &'static str)>,
}

impl SnapshotModel {
    fn apply(&mut self, snapshot: &Rows, policy: &str) {
        let key = |r: &Vec<Option<String>>| r[0].as_deref().unwrap().parse::<i64>().unwrap();
        let keys: std::collections::BTreeSet<i64> = snapshot.iter().map(key).collect();
        match policy {
            "hard_delete" => self.rows.retain(|k, _| keys.contains(k)),
            "soft_delete" => self
                .rows
                .iter_mut()
                .filter(|(k, _)| !keys.contains(k))
                .for_each(|(_, v)| v.1 = "deleted"),
            _ => {}
        }
        for r in snapshot {
            self.rows.insert(key(r), (r.clone(), "live"));
        }
    }

    fn expected(&self) -> Rows {
        self.rows
            .values()
            .map(|(r, state)| r.iter().cloned().chain([Some(state.to_string())]).collect())
            .collect()
    }
}

async fn snapshot_diff_over_generations(mut p: Pair, policy: &str) {
    p.seed(true).await;
    let yaml = p.manifest(&format!("mode: snapshot_diff, unique_key: [id], diff: {{ compare: row_hash, delete_policy: {policy} }}"));
    let state_column = if policy == "soft_delete" {
        "CASE WHEN __dpone__deleted_at IS NULL THEN 'live' ELSE 'deleted' END"
    } else {
        "'live'"
    };
    let mut model = SnapshotModel::default();
    for generation in 0..4 {
        match generation {
            1 => {
                p.change().await;
                p.delete_source("5, 6, 7").await;
            }
            3 => p.revive().await,
            _ => {} // generation 2 changes nothing: the run must be idempotent
        }
        let snapshot = normalize(p.source_rows("").await);
        model.apply(&snapshot, policy);
        let report = run(&yaml, None).await.unwrap();
        assert_rows(
            &p.target_rows_with(state_column, "1").await,
            &model.expected(),
            &format!("snapshot_diff {policy} generation {generation}"),
        );
        if generation == 2 {
            assert_eq!(
                (report.rows_written, report.rows_deleted),
                (0, 0),
                "an unchanged snapshot changes nothing"
            );
        }
    }
}

async fn snapshot_diff_hard_delete(p: Pair) {
    snapshot_diff_over_generations(p, "hard_delete").await;
}

async fn snapshot_diff_soft_delete(p: Pair) {
    snapshot_diff_over_generations(p, "soft_delete").await;
}

async fn snapshot_diff_ignore(p: Pair) {
    snapshot_diff_over_generations(p, "ignore").await;
}

/// The scd2 oracle: every version of every key and whether it is current.
#[derive(Default)]
struct Scd2Model {
    versions: Vec<(Vec<Option<String>>, bool)>,
}

impl Scd2Model {
    fn apply(&mut self, snapshot: &Rows) {
        let by_key: std::collections::HashMap<&Option<String>, &Vec<Option<String>>> =
            snapshot.iter().map(|r| (&r[0], r)).collect();
        for (row, current) in self.versions.iter_mut().filter(|(_, c)| *c) {
            if by_key.get(&row[0]).is_none_or(|now| *now != row) {
                *current = false;
            }
        }
        for r in snapshot {
            if !self.versions.iter().any(|(v, c)| *c && v[0] == r[0]) {
                self.versions.push((r.clone(), true));
            }
        }
    }

    /// Ordered like the target query: by key, then by when the version was opened.
    fn expected(&self) -> Rows {
        let mut rows: Vec<(i64, usize, Vec<Option<String>>)> = self
            .versions
            .iter()
            .enumerate()
            .map(|(i, (r, c))| {
                (
                    r[0].as_deref().unwrap().parse().unwrap(),
                    i,
                    r.iter().cloned().chain([Some(c.to_string())]).collect(),
                )
            })
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, _, r)| r).collect()
    }
}

const CURRENT: &str = "CASE WHEN __dpone__is_current THEN 'true' ELSE 'false' END";

async fn scd2_keeps_one_current_version_per_key(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: scd2, unique_key: [id]");
    let mut model = Scd2Model::default();
    for generation in 0..4 {
        match generation {
            1 => {
                p.change().await;
                p.delete_source("5, 6, 7").await;
            }
            3 => p.revive().await,
            _ => {}
        }
        let snapshot = normalize(p.source_rows("").await);
        model.apply(&snapshot);
        let report = run(&yaml, None).await.unwrap();
        let what = format!("scd2 generation {generation}");
        assert_rows(
            &p.target_rows_with(CURRENT, "__dpone__valid_from_at").await,
            &model.expected(),
            &what,
        );
        if generation == 2 {
            assert_eq!(
                report.rows_written, 0,
                "an unchanged snapshot opens no version"
            );
        }
        let t = p.sink_table;
        let inconsistent = p
            .sink
            .count(&format!(
                "(SELECT 1 FROM {t} WHERE (CASE WHEN __dpone__valid_to_at IS NULL THEN 1 ELSE 0 END) <> (CASE WHEN __dpone__is_current THEN 1 ELSE 0 END)) AS bad"
            ))
            .await;
        assert_eq!(
            inconsistent, 0,
            "{what}: valid_to is NULL exactly on current rows"
        );
    }
}

/// Compound keys match column by column: ("a|b", "c") and ("a", "b|c") are two keys.
async fn scd2_compound_keys_with_separators(mut p: Pair) {
    let t = p.source_table;
    p.source
        .exec(&format!(
            "CREATE TABLE {t} (k1 TEXT NOT NULL, k2 TEXT NOT NULL, v TEXT)"
        ))
        .await;
    p.source
        .exec(&format!(
            "INSERT INTO {t} VALUES ('a|b', 'c', 'one'), ('a', 'b|c', 'two'), ('a||b', '', 'three')"
        ))
        .await;
    let yaml = p.manifest("mode: scd2, unique_key: [k1, k2]");
    run(&yaml, None).await.unwrap();
    p.source
        .exec(&format!("UPDATE {t} SET v = 'changed' WHERE k1 = 'a'"))
        .await;
    run(&yaml, None).await.unwrap();
    // Sorted here, not in SQL: collations order punctuation differently.
    let mut rows = p
        .sink
        .rows(&format!(
            "SELECT k1, k2, v, {CURRENT} FROM {}",
            p.sink_table
        ))
        .await;
    rows.sort_by(|a, b| (&a[0], &a[1], &a[3]).cmp(&(&b[0], &b[1], &b[3])));
    let row = |k1: &str, k2: &str, v: &str, current: &str| {
        [k1, k2, v, current].map(|x| Some(x.to_string())).to_vec()
    };
    let expected = vec![
        row("a", "b|c", "two", "false"),
        row("a", "b|c", "changed", "true"),
        row("a|b", "c", "one", "true"),
        row("a||b", "", "three", "true"),
    ];
    assert_rows(&rows, &expected, "compound keys");
}

/// A target that already breaks the invariant (two current rows for a key, written by
/// someone else) is never committed on: the check before commit fails the run.
async fn scd2_refuses_to_commit_a_broken_invariant(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: scd2, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    let t = p.sink_table;
    p.sink
        .exec(&format!(
            "INSERT INTO {t} (id, name, amount, updated_at, __dpone__row_hash, __dpone__valid_from_at, __dpone__valid_to_at, __dpone__is_current) \
             SELECT id, name, amount, updated_at, __dpone__row_hash, '1999-01-01 00:00:00.000000Z', NULL, __dpone__is_current FROM {t} WHERE id = 1"
        ))
        .await;
    p.change().await;
    let before = p.target_rows_with(CURRENT, "__dpone__valid_from_at").await;
    let err = run_fails(&yaml, None, Kind::KeyViolation).await;
    assert!(
        err.message
            .contains("scd2 invariant: 1 keys would have more than one current row"),
        "{err}"
    );
    assert_rows(
        &p.target_rows_with(CURRENT, "__dpone__valid_from_at").await,
        &before,
        "target after a refused commit",
    );
}

/// The sink connection dies in the middle of an scd2 finalize: nothing changes.
async fn scd2_failed_finalize_changes_nothing(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: scd2, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    p.change().await;
    let (state_before, target_before) = (
        p.state().await,
        p.target_rows_with(CURRENT, "__dpone__valid_from_at").await,
    );
    inject_insert_failure(&mut p).await;
    run_fails(&yaml, None, Kind::Sink).await;
    assert_rows(
        &p.target_rows_with(CURRENT, "__dpone__valid_from_at").await,
        &target_before,
        "scd2 target after a failed finalize",
    );
    assert_eq!(
        p.state().await,
        state_before,
        "state after a failed finalize"
    );
}

/// Makes the next INSERT into the target fail: PostgreSQL kills its own connection, SQLite
/// aborts the statement.
async fn inject_insert_failure(p: &mut Pair) {
    let t = p.sink_table;
    if p.sink_is_postgres() {
        p.sink
            .exec(&format!(
                "CREATE FUNCTION dst.kill_me() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$; \
                 CREATE TRIGGER kill_me AFTER INSERT ON {t} FOR EACH STATEMENT EXECUTE FUNCTION dst.kill_me()"
            ))
            .await;
    } else {
        p.sink.exec(&format!("CREATE TRIGGER abort_me AFTER INSERT ON {t} BEGIN SELECT RAISE(ABORT, 'injected failure'); END")).await;
    }
}

/// Bad options of the history strategies name their field and touch nothing.
async fn history_strategies_refuse_bad_options(mut p: Pair) {
    p.seed(true).await;
    for (strategy, field) in [
        (
            "mode: snapshot_diff, unique_key: [id], diff: { delete_policy: purge }",
            "sink.strategy.diff.delete_policy",
        ),
        (
            "mode: snapshot_diff, unique_key: [id], diff: { colour: red }",
            "sink.strategy.diff.colour",
        ),
        (
            "mode: snapshot_diff, unique_key: [id], diff: { compare: columns }",
            "sink.strategy.diff.compare",
        ),
        ("mode: scd2", "sink.strategy.unique_key"),
        (
            "mode: scd2, unique_key: [id], valid_from_column: name",
            "sink.strategy.valid_from_column",
        ),
        (
            "mode: scd2, unique_key: [id], delete_policy: forget",
            "sink.strategy.delete_policy",
        ),
    ] {
        let err = run_fails(&p.manifest(strategy), None, Kind::Config).await;
        assert_eq!(err.field.as_deref(), Some(field), "{strategy}: {err}");
        assert!(!p.target_exists().await, "{strategy} created the target");
    }
}

/// partition_replace replaces exactly the partitions in staging: the oracle is the old
/// target with those partitions swapped for the source's, everything else as it was.
async fn partition_replace_touches_only_staged_partitions(mut p: Pair) {
    let t = p.source_table;
    let day_type = if p.is_postgres() { "date" } else { "DATE" };
    p.source
        .exec(&format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, day {day_type} NOT NULL, v TEXT)"
        ))
        .await;
    let day = |d: i64| format!("2024-01-0{d}");
    let values: Vec<String> = (1..=40)
        .map(|id| format!("({id}, '{}', 'v{id}')", day(1 + (id - 1) / 10)))
        .collect();
    p.source
        .exec(&format!("INSERT INTO {t} VALUES {}", values.join(", ")))
        .await;
    let rows = "SELECT CAST(id AS TEXT) AS id_text, CAST(day AS TEXT) AS day_text, v";
    const WINDOW: &str = "predicate: [{ column: day, from: '2024-01-02', to: '2024-01-04' }]";
    let whole = p.manifest("mode: partition_replace, unique_key: [id], partition: { column: day }");
    let windowed = p.manifest(&format!(
        "mode: partition_replace, unique_key: [id], partition: {{ column: day }}, {WINDOW}"
    ));
    let guarded = p.manifest(&format!(
        "mode: partition_replace, partition: {{ column: day, max_partitions_per_run: 1 }}, {WINDOW}"
    ));
    let native =
        p.manifest("mode: partition_replace, partition: { column: day, native_mode: required }");
    run(&whole, None).await.unwrap();
    let mut target = normalize(p.source.rows(&format!("{rows} FROM {t} ORDER BY id")).await);
    let target_rows = format!("{rows} FROM {} ORDER BY id", p.sink_table);
    assert_rows(
        &normalize(p.sink.rows(&target_rows).await),
        &target,
        "partition_replace run 1",
    );

    // Every partition changes in the source, but only 2024-01-02 and 2024-01-03 are staged.
    p.source
        .exec(&format!("UPDATE {t} SET v = 'changed'"))
        .await;
    p.source
        .exec(&format!("DELETE FROM {t} WHERE id IN (21, 22, 23)"))
        .await;
    for generation in 1..=2 {
        let report = run(&windowed, None).await.unwrap();
        let staged = normalize(
            p.source
                .rows(&format!(
                    "{rows} FROM {t} WHERE id > 10 AND id <= 30 ORDER BY id"
                ))
                .await,
        );
        target.retain(|r| {
            !(r[1].as_deref() == Some("2024-01-02") || r[1].as_deref() == Some("2024-01-03"))
        });
        target.extend(staged);
        target.sort_by_key(|r| r[0].as_deref().unwrap().parse::<i64>().unwrap());
        target.dedup();
        assert_rows(
            &normalize(p.sink.rows(&target_rows).await),
            &target,
            &format!("partition_replace generation {generation}"),
        );
        assert_eq!(report.rows_written, 17, "two partitions: 10 + 7 rows");
    }

    let before = normalize(p.sink.rows(&target_rows).await);
    let err = run_fails(&guarded, None, Kind::Config).await;
    assert_eq!(
        err.field.as_deref(),
        Some("sink.strategy.partition.max_partitions_per_run"),
        "{err}"
    );
    let err = run_fails(&native, None, Kind::Config).await;
    assert_eq!(
        err.field.as_deref(),
        Some("sink.strategy.partition.native_mode"),
        "{err}"
    );
    assert_rows(
        &normalize(p.sink.rows(&target_rows).await),
        &before,
        "target after refused runs",
    );
}

/// The staging table that replaces the target is loaded without its indexes, which are
/// built once the rows are in (one with storage parameters stays in place): the
/// swapped-in table still has every index, key and unique constraint of the target, and
/// the indexes' comments (`LIKE ... INCLUDING ALL` copies no comment of a key or unique
/// constraint, with or without dpone).
async fn full_refresh_keeps_the_targets_indexes(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: full_refresh, unique_key: [id]");
    run(&yaml, None).await.unwrap();
    let t = p.sink_table;
    p.sink
        .exec(&format!(
            "CREATE INDEX orders_by_amount ON {t} (amount DESC) WHERE amount > 0; \
             COMMENT ON INDEX dst.orders_by_amount IS 'for the report'; \
             ALTER TABLE {t} ADD CONSTRAINT orders_id_name UNIQUE (id, name); \
             CREATE INDEX orders_by_name ON {t} (name) WITH (fillfactor = 70)"
        ))
        .await;
    // Names follow the staging table; definitions and comments must not change.
    let shape = format!(
        "SELECT regexp_replace(pg_get_indexdef(i.indexrelid), 'INDEX \\S+ ON \\S+', 'INDEX ON'), \
                obj_description(i.indexrelid, 'pg_class'), c.contype::text, \
                pg_get_constraintdef(c.oid) \
         FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid \
         WHERE i.indrelid = '{t}'::regclass ORDER BY 1"
    );
    let before = p.sink.rows(&shape).await;
    assert_eq!(before.len(), 4, "{before:?}");
    p.change().await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(report.rows_written, 320);
    assert_eq!(p.sink.rows(&shape).await, before);
    assert_rows(
        &p.target_rows().await,
        &p.source_rows("").await,
        "full_refresh after indexes were added",
    );
}

/// Runs xmin until the target equals the source. Transaction ids are cluster-wide, so a
/// transaction of a concurrent test (another database, same server) can hold the horizon
/// back for a moment: the run then loads less, and a later run the rest.
async fn xmin_until_converged(p: &mut Pair, yaml: &str, what: &str) -> u64 {
    let mut read = 0;
    for _ in 0..100 {
        read += run(yaml, None).await.unwrap().rows_read;
        if p.target_exists().await && p.target_rows().await == p.source_rows("").await {
            return read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_rows(&p.target_rows().await, &p.source_rows("").await, what);
    read
}

/// xmin on PostgreSQL: merges changed rows by transaction id; a transaction still running
/// during a run is loaded by the next run after it commits; deletes are not propagated.
async fn xmin_loads_by_transaction_id(mut p: Pair) {
    p.seed(true).await;
    let yaml = p.manifest("mode: xmin, unique_key: [id]");
    assert_eq!(xmin_until_converged(&mut p, &yaml, "xmin run 1").await, 300);
    p.change().await;
    assert_eq!(
        xmin_until_converged(&mut p, &yaml, "xmin run 2").await,
        50,
        "30 updated + 20 inserted rows, nothing else"
    );

    // A long transaction holds the horizon: rows committed after it started wait with it.
    let t = p.source_table;
    let mut long = p.source_connection().await;
    long.exec(&format!(
        "BEGIN; INSERT INTO {t} VALUES (900, 'long', '9.00', '2024-05-01 00:00:00')"
    ))
    .await;
    p.source
        .exec(&format!(
            "INSERT INTO {t} VALUES (901, 'later', '9.01', '2024-05-01 00:00:00')"
        ))
        .await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(
        report.rows_read, 0,
        "nothing at or above the oldest running transaction"
    );
    long.exec("COMMIT").await;
    assert_eq!(
        xmin_until_converged(&mut p, &yaml, "xmin after the long transaction").await,
        2,
        "both rows, once the long transaction is over"
    );

    p.delete_source("1").await;
    let report = run(&yaml, None).await.unwrap();
    assert_eq!(
        report.rows_read, 0,
        "a delete leaves no new row version behind"
    );
    assert_eq!(
        p.sink.count(p.sink_table).await,
        p.source.count(t).await + 1,
        "deletes are not propagated by xmin"
    );
}

/// xmin refuses sources without transaction ids, before anything is staged.
async fn xmin_needs_a_postgres_source(mut p: Pair) {
    p.seed(true).await;
    let err = run_fails(
        &p.manifest("mode: xmin, unique_key: [id]"),
        None,
        Kind::Unsupported,
    )
    .await;
    assert!(err.message.contains("PostgreSQL"), "{err}");
    assert!(!p.target_exists().await);
}

macro_rules! both_pairs {
    ($($case:ident),* $(,)?) => {
        mod sqlite_to_sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Pair::sqlite(concat!("sqlite_", stringify!($case))).await).await; })*
        }
        mod postgres_to_postgres {
            $(#[tokio::test] async fn $case() {
                let Some(server) = crate::support::postgres_url() else { return };
                super::$case(super::Pair::postgres(&server, stringify!($case)).await).await;
            })*
        }
    };
}

mod postgres_only {
    #[tokio::test]
    async fn full_refresh_keeps_the_targets_indexes() {
        let Some(server) = crate::support::postgres_url() else {
            return;
        };
        super::full_refresh_keeps_the_targets_indexes(
            super::Pair::postgres(&server, "fr_keeps_indexes").await,
        )
        .await;
    }

    #[tokio::test]
    async fn xmin_loads_by_transaction_id() {
        let Some(server) = crate::support::postgres_url() else {
            return;
        };
        super::xmin_loads_by_transaction_id(super::Pair::postgres(&server, "xmin_loads").await)
            .await;
    }
}

/// SQLite -> PostgreSQL, for the strategies that must behave the same across dialects.
macro_rules! sqlite_to_postgres {
    ($($case:ident),* $(,)?) => {
        mod sqlite_to_postgres {
            $(#[tokio::test] async fn $case() {
                let Some(server) = crate::support::postgres_url() else { return };
                let name = concat!("s2p_", stringify!($case));
                super::$case(super::Pair::sqlite_to_postgres(&server, name).await).await;
            })*
        }
    };
}

sqlite_to_postgres!(
    xmin_needs_a_postgres_source,
    snapshot_diff_hard_delete,
    snapshot_diff_soft_delete,
    scd2_keeps_one_current_version_per_key,
    scd2_failed_finalize_changes_nothing,
);

both_pairs!(
    full_refresh,
    full_refresh_refuses_duplicate_keys,
    incremental_append,
    incremental_merge,
    replace,
    failed_finalize_changes_nothing,
    swapping_the_component_changes_behaviour,
    a_pipeline_runs_once_at_a_time,
    snapshot_diff_hard_delete,
    snapshot_diff_soft_delete,
    snapshot_diff_ignore,
    scd2_keeps_one_current_version_per_key,
    scd2_compound_keys_with_separators,
    scd2_failed_finalize_changes_nothing,
    scd2_refuses_to_commit_a_broken_invariant,
    history_strategies_refuse_bad_options,
    partition_replace_touches_only_staged_partitions,
);
