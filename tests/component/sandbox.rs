//! Hostile components built in the repo (strategies/sandbox_probe, sandbox_escape,
//! not_a_strategy) against the real host sandbox.

use dpone_host::Kind;

use crate::support::{Db, component, run_fails, scratch};

/// A manifest over empty SQLite databases: the probes never touch them.
async fn probe_manifest(name: &str, strategy_options: &str, limits: &str) -> String {
    let dir = scratch(name);
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

#[tokio::test]
async fn files_sockets_and_clocks_are_refused_before_the_component_runs() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    for attack in [
        "file, target: /etc/passwd",
        &format!("socket, target: \"{addr}\""),
        "clock",
    ] {
        let yaml = probe_manifest("escape", &format!("attack: {attack}"), "").await;
        let err = run_fails(&yaml, Some(&component("sandbox_escape")), Kind::Sandbox).await;
        for refused in ["wasi:filesystem", "wasi:sockets", "wasi:clocks"] {
            assert!(
                err.message.contains(refused),
                "{refused} not named in: {err}"
            );
        }
    }
    assert!(
        listener.accept().is_err(),
        "the escape component reached the socket"
    );
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
