//! Hostile components built in the repo (strategies/sandbox_probe, sandbox_escape,
//! not_a_strategy) against the real host sandbox.

use dpone_host::Kind;

use crate::support::{Db, component, run, run_fails, scratch};

/// A manifest over SQLite databases in a fresh directory: an empty source table `t`, a
/// target `t` the probe may create.
async fn probe_manifest(name: &str, strategy_options: &str, limits: &str) -> String {
    probe_manifest_at(&scratch(name), name, strategy_options, limits).await
}

/// [`probe_manifest`] in `dir`, for tests that also put files there.
async fn probe_manifest_at(
    dir: &std::path::Path,
    name: &str,
    strategy_options: &str,
    limits: &str,
) -> String {
    let mut src = Db::sqlite(&dir.join("src.db")).await;
    src.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
    format!(
        "pipeline: {name}\n\
         source: {{ kind: sqlite, path: {d}/src.db, table: t }}\n\
         sink:\n  kind: sqlite\n  path: {d}/dst.db\n  table: t\n  strategy: {{ {strategy_options} }}\n\
         state: {{ kind: sqlite, path: {d}/state.db }}\n{limits}",
        d = dir.display()
    )
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_fuel() {
    let yaml = probe_manifest("loop", "attack: loop", "limits: { fuel: 200000000 }").await;
    let started = std::time::Instant::now();
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Sandbox).await;
    assert_eq!(err.field.as_deref(), Some("limits.fuel"), "{err}");
    assert!(err.message.contains("fuel"), "{err}");
    assert!(started.elapsed().as_secs() < 30);
}

#[tokio::test]
async fn allocating_past_the_cap_is_stopped() {
    let yaml = probe_manifest("alloc", "attack: alloc", "limits: { memory_mb: 16 }").await;
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Sandbox).await;
    assert_eq!(err.field.as_deref(), Some("limits.memory_mb"), "{err}");
    assert!(err.message.contains("limits.memory_mb = 16"), "{err}");
}

#[tokio::test]
async fn state_is_bounded_in_bytes_and_entries() {
    for (attack, limits, field) in [
        (
            "state_bytes",
            "limits: { state_bytes: 1000000 }",
            "limits.state_bytes",
        ),
        (
            "state_entries",
            "limits: { state_entries: 50 }",
            "limits.state_entries",
        ),
    ] {
        let yaml = probe_manifest(attack, &format!("attack: {attack}"), limits).await;
        let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Limit).await;
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
        assert!(!err.message.contains("LEAKED"), "{err}");
    }
}

#[tokio::test]
async fn distinct_values_are_capped() {
    let yaml = probe_manifest("distinct", "attack: distinct_values", "").await;
    let err = run_fails(
        &yaml,
        Some(&component("sandbox_probe")),
        Kind::InvalidHandle,
    )
    .await;
    assert!(err.message.contains("at most 10000"), "{err}");
}

/// The loaders decode source rows as the staging schema declares them: a staging column of
/// another type than its source column would load wrong values, so the load is refused.
#[tokio::test]
async fn a_staging_column_of_another_type_than_its_source_is_refused() {
    let yaml = probe_manifest("mistyped", "attack: mistyped_staging", "").await;
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Sandbox).await;
    assert!(
        err.message
            .contains("declared float64 but the source column is int64"),
        "{err}"
    );
}

/// A scratch staging table (no keys, indexes or grants; UNLOGGED on PostgreSQL) never
/// becomes the target, and a sink that does not declare rename-swap takes no swap.
#[tokio::test]
async fn swap_takes_only_publishable_staging_on_sinks_that_declare_it() {
    for (attack, kind, said) in [
        (
            "swap_scratch",
            Kind::InvalidHandle,
            "only a publishable staging table",
        ),
        ("swap", Kind::Unsupported, "rename-swap"),
    ] {
        let yaml = probe_manifest(attack, &format!("attack: {attack}"), "").await;
        let err = run_fails(&yaml, Some(&component("sandbox_probe")), kind).await;
        assert!(err.message.contains(said), "{err}");
    }
}

#[tokio::test]
async fn environment_variables_are_invisible() {
    let home = std::env::var("HOME").expect("the test host has HOME");
    let yaml = probe_manifest("env", "attack: env, target: HOME", "").await;
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Unsupported).await;
    assert!(err.message.starts_with("blocked:"), "{err}");
    assert!(err.message.contains("no variables visible"), "{err}");
    assert!(!err.message.contains(&home));
}

/// The hostile components that import clocks, random, files and sockets: the Rust one and
/// the Python one (whose runtime imports them all).
const ESCAPERS: [&str; 2] = ["sandbox_escape", "sandbox_probe_py"];

#[tokio::test]
async fn under_strict_wasi_files_sockets_and_clocks_are_refused_before_the_component_runs() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    for escaper in ESCAPERS {
        for attack in [
            "file, target: /etc/passwd",
            &format!("socket, target: \"{addr}\""),
            "clock",
        ] {
            let yaml = probe_manifest(
                "escape_strict",
                &format!("attack: {attack}"),
                "limits: { wasi: strict }",
            )
            .await;
            let err = run_fails(&yaml, Some(&component(escaper)), Kind::Sandbox).await;
            assert_eq!(err.field.as_deref(), Some("limits.wasi"), "{err}");
            for refused in ["wasi:filesystem", "wasi:sockets", "wasi:clocks", "strict"] {
                assert!(
                    err.message.contains(refused),
                    "{escaper}: {refused} not named in: {err}"
                );
            }
        }
    }
    assert!(
        listener.accept().is_err(),
        "an escape component reached the socket"
    );
}

/// Under the default virtual WASI the components run, and find no file, no network and
/// no clock but the run's logical time.
#[tokio::test]
async fn under_virtual_wasi_files_and_sockets_fail_and_clocks_read_the_logical_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    for escaper in ESCAPERS {
        for attack in [
            "file, target: /etc/passwd".to_string(),
            format!("socket, target: \"{addr}\""),
        ] {
            let yaml = probe_manifest("escape_virtual", &format!("attack: {attack}"), "").await;
            let err = run_fails(&yaml, Some(&component(escaper)), Kind::Unsupported).await;
            assert!(err.message.starts_with("blocked:"), "{escaper}: {err}");
            assert!(!err.message.contains("LEAKED"), "{escaper}: {err}");
        }
        let yaml = probe_manifest("escape_clock", "attack: clock", "").await;
        let report = run(&yaml, Some(&component(escaper))).await.unwrap();
        let started = logical_micros(&report.started_at);
        let said = &report.message;
        if escaper == "sandbox_escape" {
            assert_eq!(said, &format!("clock: {}", started / 1_000_000));
        } else {
            assert_eq!(
                said,
                &format!("clock: wall={started} monotonic={}", started * 1000)
            );
        }
    }
    assert!(
        listener.accept().is_err(),
        "an escape component reached the socket"
    );
}

/// The run's logical time from a report's `started_at`, microseconds since the epoch.
fn logical_micros(started_at: &str) -> i64 {
    dpone_host::model::time::parse_timestamp(started_at)
        .unwrap_or_else(|| panic!("started_at {started_at:?} is not a timestamp"))
}

/// A Python component is held by the same limits as a Rust one, with the same errors.
#[tokio::test]
async fn a_python_component_is_stopped_by_fuel_and_memory_and_sees_no_environment() {
    let probe = component("sandbox_probe_py");
    let yaml = probe_manifest("py_loop", "attack: loop", "limits: { fuel: 2000000000 }").await;
    let err = run_fails(&yaml, Some(&probe), Kind::Sandbox).await;
    assert_eq!(err.field.as_deref(), Some("limits.fuel"), "{err}");

    // The component declares 128 MiB, its cap without a manifest value ...
    let yaml = probe_manifest("py_alloc", "attack: alloc", "").await;
    let err = run_fails(&yaml, Some(&probe), Kind::Sandbox).await;
    assert_eq!(err.field.as_deref(), Some("limits.memory_mb"), "{err}");
    assert!(err.message.contains("limits.memory_mb = 128"), "{err}");
    // ... and the manifest's value wins over the declaration.
    let yaml = probe_manifest(
        "py_alloc_capped",
        "attack: alloc",
        "limits: { memory_mb: 40 }",
    )
    .await;
    let err = run_fails(&yaml, Some(&probe), Kind::Sandbox).await;
    assert!(err.message.contains("limits.memory_mb = 40"), "{err}");

    let home = std::env::var("HOME").expect("the test host has HOME");
    let yaml = probe_manifest("py_env", "attack: env, target: HOME", "").await;
    let err = run_fails(&yaml, Some(&probe), Kind::Unsupported).await;
    assert!(err.message.contains("no variables visible"), "{err}");
    assert!(!err.message.contains(&home));
}

/// Randomness comes from the run id: each run reads other bytes, and the same run id
/// always gives the same ones (unit-tested in `runtime::sandbox`).
#[tokio::test]
async fn randomness_differs_between_runs_and_clocks_do_not_advance() {
    let probe = component("sandbox_probe_py");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let yaml = probe_manifest("py_entropy", "attack: entropy", "").await;
        let report = run(&yaml, Some(&probe)).await.unwrap();
        let started = logical_micros(&report.started_at);
        assert!(
            report.message.ends_with(&format!(
                "clock: wall={started} monotonic={}",
                started * 1000
            )),
            "{}",
            report.message
        );
        seen.push(report.message);
    }
    // "entropy: urandom=.. random=.. uuid4=.. clock: ..": each of the three draws differs.
    for draw in 1..=3 {
        let nth = |m: &str| m.split_whitespace().nth(draw).unwrap().to_string();
        assert_ne!(nth(&seen[0]), nth(&seen[1]), "{seen:?}");
    }
}

#[tokio::test]
async fn a_component_of_another_world_is_refused() {
    let yaml = probe_manifest("other_world", "mode: full_refresh", "").await;
    let err = run_fails(&yaml, Some(&component("not_a_strategy")), Kind::Config).await;
    assert_eq!(err.field.as_deref(), Some("--strategy"));
    assert!(
        err.message
            .contains("does not implement the dpone:strategy/strategy world"),
        "{err}"
    );
}

#[tokio::test]
async fn a_component_of_the_previous_contract_is_refused_naming_both_versions() {
    let yaml = probe_manifest("old_contract", "mode: full_refresh", "").await;
    let err = run_fails(&yaml, Some(&component("old_contract")), Kind::Config).await;
    assert_eq!(err.field.as_deref(), Some("--strategy"));
    for named in ["dpone:strategy@0.1.0", "dpone:strategy@0.2.0", "rebuild"] {
        assert!(err.message.contains(named), "{named} not named in: {err}");
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused() {
    let dir = scratch("not_wasm");
    std::fs::write(dir.join("x.wasm"), b"\0asm garbage").unwrap();
    let yaml = probe_manifest("not_wasm_run", "mode: full_refresh", "").await;
    let err = run_fails(&yaml, Some(&dir.join("x.wasm")), Kind::Config).await;
    assert!(
        err.message.contains("is not a WebAssembly component"),
        "{err}"
    );
}

#[tokio::test]
async fn the_probe_runs_when_it_attacks_nothing_forbidden() {
    // Guards the tests above: the probe itself loads and runs under the sandbox, and its
    // own errors come back as config errors naming the option.
    let yaml = probe_manifest("probe_ok", "attack: nothing", "").await;
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Config).await;
    assert_eq!(err.field.as_deref(), Some("sink.strategy.attack"), "{err}");
}

/// Runs a probe manifest and returns the error with the run's report.
async fn run_with_report(
    yaml: &str,
) -> (dpone_host::Error, dpone_host::runtime::report::RunReport) {
    let manifest = dpone_host::manifest::Manifest::parse(yaml, &|_| None).unwrap();
    let strategy = component("sandbox_probe");
    let opts = dpone_host::runner::RunOptions {
        strategy: Some(&strategy),
        components_dir: crate::support::components_dir(),
        dry_run: false,
        progress: false,
    };
    match dpone_host::runner::run(&manifest, &opts).await {
        Ok(r) => panic!("the probe's run succeeded: {r:?}"),
        Err((e, report)) => (e, report.expect("a run that connected has a report")),
    }
}

/// Fuel counts the host work a strategy starts, not only its instructions: a loop of
/// cheap host calls is stopped after about `limits.fuel / 1,000,000` calls. Without that,
/// 50 million fuel would pay for some 170,000 calls.
#[tokio::test]
async fn host_calls_spend_fuel() {
    let yaml = probe_manifest(
        "call_loop",
        "attack: call_loop",
        "limits: { fuel: 50000000 }",
    )
    .await;
    let (err, report) = run_with_report(&yaml).await;
    assert_eq!(err.kind, Kind::Sandbox, "{err}");
    assert_eq!(err.field.as_deref(), Some("limits.fuel"), "{err}");
    let counts = report
        .sink_statements
        .iter()
        .filter(|s| s.starts_with("SELECT COUNT(*)"))
        .count();
    assert!(
        (1..=60).contains(&counts),
        "{counts} host calls ran on 50 million fuel: {err}"
    );
}

/// A strategy may name only columns the target has: on SQLite an unknown double-quoted
/// name is a string literal, so `delete-where` on it would match every row. Malformed
/// decimal text never reaches a connector.
#[tokio::test]
async fn unknown_columns_and_malformed_values_are_refused_before_any_sql() {
    for (attack, said) in [
        ("unknown_column", "no column `no_such_column`"),
        ("bad_decimal", "malformed decimal value"),
    ] {
        let dir = scratch(attack);
        let yaml = probe_manifest_at(&dir, attack, &format!("attack: {attack}"), "").await;
        let mut dst = Db::sqlite(&dir.join("dst.db")).await;
        dst.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)").await;
        dst.exec("INSERT INTO t VALUES (1), (2), (3)").await;
        let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Config).await;
        assert!(err.message.contains(said), "{err}");
        assert!(!err.message.contains("LEAKED"), "{err}");
        assert_eq!(dst.count("t").await, 3, "{attack} deleted target rows");
    }
}

/// A strategy that keeps the target locked (a transaction open after
/// `truncate-and-insert`, then endless host calls) is stopped at `limits.wall_seconds` (its
/// fuel is raised so that the deadline, not the fuel, ends it);
/// its transaction rolls back, so the lock goes and the target keeps its rows, and its
/// staging is dropped.
#[tokio::test]
async fn the_deadline_stops_a_strategy_holding_a_lock_and_the_lock_is_released() {
    let Some(server) = crate::support::postgres_url() else {
        return;
    };
    let url = crate::support::fresh_postgres_database(&server, "deadline").await;
    let mut db = Db::postgres(&url).await;
    db.exec("CREATE TABLE src (id BIGINT PRIMARY KEY)").await;
    db.exec("INSERT INTO src SELECT generate_series(1, 100)")
        .await;
    db.exec("CREATE TABLE dst (id BIGINT PRIMARY KEY)").await;
    db.exec("INSERT INTO dst VALUES (-1)").await;
    let yaml = format!(
        "pipeline: deadline\n\
         source: {{ kind: postgres, url: \"{url}\", table: public.src }}\n\
         sink: {{ kind: postgres, url: \"{url}\", table: public.dst, strategy: {{ attack: lock_loop }} }}\n\
         state: {{ kind: sqlite, path: {}/state.db }}\n\
         limits: {{ wall_seconds: 2, fuel: 1000000000000 }}\n",
        scratch("deadline").display()
    );
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Limit).await;
    assert_eq!(err.field.as_deref(), Some("limits.wall_seconds"), "{err}");
    let locks = db
        .rows(
            "SELECT count(*)::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'dst'",
        )
        .await;
    assert_eq!(
        locks[0][0].as_deref(),
        Some("0"),
        "the target is still locked"
    );
    db.exec("SET lock_timeout = '2s'; BEGIN; LOCK TABLE dst IN ACCESS EXCLUSIVE MODE; COMMIT")
        .await;
    assert_eq!(db.count("dst").await, 1, "the truncate was not rolled back");
    let staging = db
        .rows("SELECT count(*)::text FROM pg_tables WHERE tablename LIKE '__dpone_stg%'")
        .await;
    assert_eq!(
        staging[0][0].as_deref(),
        Some("0"),
        "staging was left behind"
    );
}

/// Escape sequences, carriage returns and newlines from a strategy's log lines, progress
/// phase and error reach neither stdout nor stderr raw, and its log output is bounded by
/// `limits.log_bytes` however much it logs.
#[tokio::test]
async fn guest_text_reaches_the_terminal_clean_and_bounded() {
    let dir = scratch("noisy");
    let yaml = probe_manifest_at(
        &dir,
        "noisy",
        "attack: noisy",
        "limits: { log_bytes: 100000 }",
    )
    .await;
    std::fs::write(dir.join("m.yaml"), yaml).unwrap();
    let probe = component("sandbox_probe");
    let out = crate::cli::host(
        &dir,
        &["run", "-m", "m.yaml", "--strategy", probe.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", crate::cli::text(&out));
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(stream);
        assert!(!stream.contains(&0x1b), "ESC reached {name}");
        assert!(!stream.contains(&b'\r'), "CR reached {name}");
        assert!(!text.contains('\u{9b}'), "CSI reached {name}");
        assert!(
            !text.lines().any(|l| l.starts_with("ERROR forged")),
            "a forged line reached {name}"
        );
    }
    assert!(
        out.stderr.len() < 200_000,
        "{} bytes of log for limits.log_bytes = 100000",
        out.stderr.len()
    );
    let text = crate::cli::text(&out);
    assert!(
        text.contains("\\u{1b}[2J"),
        "the escaped text is shown: {text}"
    );
    assert!(text.contains("limits.log_bytes"), "{text}");
}

/// The host's memory stays flat while a strategy repeatedly hands it 30 MB state values,
/// 1 MB column names and 1 MB log lines (every one refused or cut): its peak RSS stays
/// under 512 MiB, where keeping them would take over 3 GiB.
#[tokio::test]
async fn the_host_does_not_grow_with_what_a_strategy_hands_it() {
    let dir = scratch("grow_host");
    let yaml = probe_manifest_at(
        &dir,
        "grow_host",
        "attack: grow_host",
        "limits: { memory_mb: 128 }",
    )
    .await;
    std::fs::write(dir.join("m.yaml"), yaml).unwrap();
    let probe = component("sandbox_probe");
    let mut child = std::process::Command::new(crate::cli::host_binary())
        .args(["run", "-m", "m.yaml", "--strategy", probe.to_str().unwrap()])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0_u64;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "the probe's run failed: {status}");
    eprintln!("grow_host: peak RSS {} MiB", peak_kib / 1024);
    assert!(peak_kib > 0, "the peak RSS was never read");
    assert!(
        peak_kib < 512 * 1024,
        "the host grew to {} MiB",
        peak_kib / 1024
    );
}

/// A PostgreSQL source and target for the stop tests, and a manifest of the probe's
/// `lock_loop` over them.
async fn lock_loop_pipeline(name: &str) -> Option<(Db, std::path::PathBuf)> {
    let server = crate::support::postgres_url()?;
    let url = crate::support::fresh_postgres_database(&server, name).await;
    let mut db = Db::postgres(&url).await;
    db.exec(
        "CREATE TABLE src (id BIGINT PRIMARY KEY); INSERT INTO src SELECT generate_series(1, 100)",
    )
    .await;
    db.exec("CREATE TABLE dst (id BIGINT PRIMARY KEY); INSERT INTO dst VALUES (-1)")
        .await;
    let dir = scratch(name);
    std::fs::write(
        dir.join("m.yaml"),
        format!(
            "pipeline: {name}\n\
             source: {{ kind: postgres, url: \"{url}\", table: public.src }}\n\
             sink: {{ kind: postgres, url: \"{url}\", table: public.dst, strategy: {{ attack: lock_loop }} }}\n\
             state: {{ kind: sqlite, path: state.db }}\n\
             limits: {{ fuel: 1000000000000 }}\n"
        ),
    )
    .unwrap();
    Some((db, dir))
}

async fn count_of(db: &mut Db, sql: &str) -> i64 {
    db.rows(sql).await[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

const DST_LOCKS: &str = "SELECT count(*)::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'dst'";
const STAGING: &str = "SELECT count(*)::text FROM pg_tables WHERE tablename LIKE '__dpone_stg%'";

/// Starts the probe's `lock_loop` through the CLI and waits until it holds the target's
/// lock inside its transaction.
async fn start_locked(db: &mut Db, dir: &std::path::Path) -> std::process::Child {
    let probe = component("sandbox_probe");
    let mut child = std::process::Command::new(crate::cli::host_binary())
        .args(["run", "-m", "m.yaml", "--strategy", probe.to_str().unwrap()])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if count_of(db, DST_LOCKS).await > 0 && count_of(db, STAGING).await > 0 {
            return child;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the probe never locked the target");
}

fn signal(child: &std::process::Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// SIGTERM stops a run cleanly: it rolls back (the lock goes, the target keeps its rows),
/// drops its staging and exits 143. After a SIGKILL, which no process can handle, the next
/// run of the pipeline drops what the killed run left and marks its history row
/// `abandoned`.
#[tokio::test]
async fn a_stopped_run_cleans_up_and_a_killed_one_is_cleaned_up_by_the_next() {
    let Some((mut db, dir)) = lock_loop_pipeline("stops").await else {
        return;
    };
    let mut run = start_locked(&mut db, &dir).await;
    signal(&run, "-TERM");
    assert_eq!(run.wait().unwrap().code(), Some(143));
    assert_eq!(
        count_of(&mut db, DST_LOCKS).await,
        0,
        "the target is still locked"
    );
    assert_eq!(
        count_of(&mut db, STAGING).await,
        0,
        "staging was left behind"
    );
    assert_eq!(db.count("dst").await, 1, "the truncate was not rolled back");

    let mut run = start_locked(&mut db, &dir).await;
    signal(&run, "-KILL");
    run.wait().unwrap();
    assert!(
        count_of(&mut db, STAGING).await > 0,
        "a killed run cannot clean up"
    );
    let probe = component("sandbox_probe");
    let mut manifest = std::fs::read_to_string(dir.join("m.yaml")).unwrap();
    manifest = manifest.replace("attack: lock_loop", "attack: env, target: HOME");
    std::fs::write(dir.join("next.yaml"), manifest).unwrap();
    let next = crate::cli::host(
        &dir,
        &[
            "run",
            "-m",
            "next.yaml",
            "--strategy",
            probe.to_str().unwrap(),
        ],
    );
    let said = crate::cli::text(&next);
    assert_eq!(next.status.code(), Some(2), "{said}");
    assert!(said.contains("marked abandoned"), "{said}");
    assert_eq!(
        count_of(&mut db, STAGING).await,
        0,
        "the next run left the staging"
    );
    let mut state = Db::sqlite(&dir.join("state.db")).await;
    let outcomes = state
        .rows("SELECT outcome FROM dpone_runs ORDER BY started_at")
        .await;
    let outcomes: Vec<&str> = outcomes.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "abandoned", "failed"]);
}

/// A run acknowledges only positions of the change window it opened: a strategy cannot
/// move its slot past changes it never read.
#[tokio::test]
async fn a_change_feed_takes_acknowledgements_only_inside_the_open_window() {
    let Some(server) = crate::support::postgres_url() else {
        return;
    };
    let url = crate::support::fresh_postgres_database(&server, "ack_beyond").await;
    let mut db = Db::postgres(&url).await;
    db.exec("CREATE TABLE src (id BIGINT PRIMARY KEY)").await;
    let yaml = format!(
        "pipeline: ack_beyond\n\
         source: {{ kind: postgres, url: \"{url}\", table: public.src }}\n\
         sink: {{ kind: postgres, url: \"{url}\", table: public.dst, strategy: {{ attack: ack_beyond }} }}\n\
         state: {{ kind: sqlite, path: {}/state.db }}\n",
        scratch("ack_beyond").display()
    );
    let err = run_fails(&yaml, Some(&component("sandbox_probe")), Kind::Sandbox).await;
    assert!(err.message.contains("outside the window"), "{err}");
    let moved = db
        .rows(
            "SELECT (confirmed_flush_lsn > pg_current_wal_lsn())::text FROM pg_replication_slots WHERE database = current_database()",
        )
        .await;
    assert_eq!(
        moved,
        [[Some("false".to_string())]],
        "the slot moved past the WAL"
    );
    db.exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()")
        .await;
}
