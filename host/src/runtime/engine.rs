//! The wasmtime engine, the compiled-component cache and the sandbox limits.
//!
//! One [`Runtime`] per process. Components are compiled once per content hash and cached
//! as serialized artifacts under the cache root (a `cap-std` directory handle), so a run
//! loads native code instead of recompiling.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, ResourceLimiter, UpdateDeadline};

use super::bindings::{Strategy, StrategyPre};
use super::host::RunState;
use super::sandbox::WasiMode;
use crate::error::{Error, Kind, Result};

/// Default guest fuel per run: about two seconds of pure guest compute here, far more than
/// a built-in strategy needs (they spend their time waiting on the host).
pub const DEFAULT_FUEL: u64 = 20_000_000_000;

/// Default cap on a strategy's linear memory.
pub const DEFAULT_MEMORY_MB: u64 = 64;

/// How often (in fuel units) a running guest yields to the async executor, so a busy
/// guest never starves the host's I/O, its deadline or Ctrl-C handling.
const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

/// How often the engine's epoch advances. At each tick a running guest stops at its next
/// loop or call to settle the fuel of its host calls and check its wall-clock deadline.
const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// The compile cache's size past which the least recently used entries are removed: a
/// compiled Rust strategy takes 0.2 to 0.7 MB, a Python or JavaScript one about 40 MB, and every
/// rebuild of a component is a new entry.
pub const CACHE_BYTES: u64 = 1 << 30;

/// Default cap on a pipeline's state entries (`limits.state_entries`).
pub const DEFAULT_STATE_ENTRIES: u64 = 1000;

/// Default cap on the bytes of a pipeline's state keys and values (`limits.state_bytes`).
pub const DEFAULT_STATE_BYTES: u64 = 1 << 20;

/// Default wall-clock deadline of a run (`limits.wall_seconds`): four hours.
pub const DEFAULT_WALL_SECONDS: u64 = 4 * 3600;

/// Default bytes of strategy log lines a run prints (`limits.log_bytes`).
pub const DEFAULT_LOG_BYTES: u64 = 1 << 20;

/// Default length of one strategy text: a log line, a progress phase, the summary
/// message or an error (`limits.message_chars`).
pub const DEFAULT_MESSAGE_CHARS: u64 = 4096;

/// Default number of sink statements a run keeps for its report and plan
/// (`limits.report_statements`).
pub const DEFAULT_REPORT_STATEMENTS: u64 = 1000;

/// Fuel a host call costs before the work it does: with [`ROW_FUEL`], fuel bounds the
/// host work a strategy starts, not only its own instructions (the default fuel pays for
/// about 20,000 calls, or 2 billion rows moved).
pub const CALL_FUEL: u64 = 1_000_000;

/// Fuel per row a host call reads, writes or deletes.
pub const ROW_FUEL: u64 = 10;

/// Sandbox limits of one run (the manifest's `limits` section). Every budget of what a
/// strategy can make the host hold or do is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Guest instructions plus [`CALL_FUEL`] per host call and [`ROW_FUEL`] per row.
    pub fuel: u64,
    pub memory_mb: u64,
    /// State entries the pipeline may hold (committed and staged together).
    pub state_entries: u64,
    /// Bytes of keys and values the pipeline's state may hold.
    pub state_bytes: u64,
    /// Wall-clock deadline of a run, from its start.
    pub wall_seconds: u64,
    /// Bytes of strategy log lines one run prints; later lines are dropped.
    pub log_bytes: u64,
    /// Characters of one strategy text (log line, phase, summary, error) kept.
    pub message_chars: u64,
    /// Sink statements a run keeps for its report and plan.
    pub report_statements: u64,
    /// Which WASI interfaces the component may import.
    pub wasi: WasiMode,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: DEFAULT_FUEL,
            memory_mb: DEFAULT_MEMORY_MB,
            state_entries: DEFAULT_STATE_ENTRIES,
            state_bytes: DEFAULT_STATE_BYTES,
            wall_seconds: DEFAULT_WALL_SECONDS,
            log_bytes: DEFAULT_LOG_BYTES,
            message_chars: DEFAULT_MESSAGE_CHARS,
            report_statements: DEFAULT_REPORT_STATEMENTS,
            wasi: WasiMode::default(),
        }
    }
}

impl Limits {
    /// [`Self::message_chars`] as a length.
    pub fn message_len(&self) -> usize {
        usize::try_from(self.message_chars).unwrap_or(usize::MAX)
    }
}

/// Caps guest memory and table growth; a denied growth traps with a message that names
/// the manifest limit, which [`classify_trap`] surfaces.
#[derive(Debug)]
pub struct GuestLimiter {
    memory_bytes: usize,
    pub exceeded: Option<String>,
}

impl GuestLimiter {
    pub fn new(limits: &Limits) -> Self {
        let memory_bytes =
            usize::try_from(limits.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        GuestLimiter {
            memory_bytes,
            exceeded: None,
        }
    }
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let msg = format!(
                "the strategy tried to grow its memory from {} MiB to {} MiB, past limits.memory_mb = {}",
                current >> 20,
                desired.div_ceil(1 << 20),
                self.memory_bytes >> 20
            );
            self.exceeded = Some(msg.clone());
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A loaded strategy component, ready to instantiate.
pub struct LoadedStrategy {
    pub pre: StrategyPre<RunState>,
    /// Hex SHA-256 of the component bytes: the run history records it.
    pub hash: String,
    /// Time spent loading (cache hit) or compiling (miss), for the run report.
    pub load_seconds: f64,
    pub cache_hit: bool,
    /// What the component declares it needs: the defaults of its memory and fuel limits.
    pub needs: Needs,
    /// The WASI interfaces it imports beyond `wasi:cli` and `wasi:io`, served virtual.
    pub ambient_imports: Vec<String>,
}

impl std::fmt::Debug for LoadedStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedStrategy")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The process-wide engine, linker and component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RunState>,
    cache: Option<Dir>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// `cache` is the component cache directory, or `None` to always compile.
    pub fn new(cache: Option<Dir>) -> Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.consume_fuel(true);
        config.epoch_interruption(true);
        let engine =
            Engine::new(&config).map_err(|e| Error::internal(format!("wasmtime engine: {e}")))?;
        let ticking = engine.weak();
        std::thread::Builder::new()
            .name("dpone-epoch".into())
            .spawn(move || {
                // Ends with the engine.
                while let Some(engine) = ticking.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::internal(format!("epoch thread: {e}")))?;
        let mut linker = Linker::new(&engine);
        super::host::add_to_linker(&mut linker)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads a component from its bytes: from the cache when compiled before, otherwise
    /// compiled and cached. Refuses, with a config error naming `field`, a file that is
    /// not a component, declares malformed needs or does not export the
    /// `dpone:strategy/strategy` world; with a sandbox error, one that imports something
    /// `wasi` does not allow.
    pub fn load(
        &self,
        bytes: &[u8],
        origin: &str,
        field: &str,
        wasi: WasiMode,
    ) -> Result<LoadedStrategy> {
        let started = Instant::now();
        let needs = Needs::declared(bytes).map_err(|e| {
            Error::config(
                field,
                format!("{origin}: custom section {NEEDS_SECTION}: {e}"),
            )
        })?;
        let hash = hex(&Sha256::digest(bytes));
        let mut engine_hash = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = format!("{hash}-{:016x}.cwasm", engine_hash.finish());
        let (component, cache_hit) = match self.cached(&key) {
            Some(c) => (c, true),
            None => {
                tracing::info!(
                    "compiling {origin} to native code (its first run here; cached for later runs)"
                );
                let c = Component::new(&self.engine, bytes).map_err(|e| {
                    Error::config(
                        field,
                        format!(
                            "{origin} is not a WebAssembly component: {}",
                            root_cause(&e)
                        ),
                    )
                })?;
                self.store_cached(&key, &c);
                (c, false)
            }
        };
        refuse_other_contract(&self.engine, &component, origin, field)?;
        refuse_ambient_imports(&self.engine, &component, origin, wasi)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            Error::new(
                Kind::Sandbox,
                format!(
                    "{origin} needs an import the dpone sandbox does not provide: {}",
                    root_cause(&e)
                ),
            )
        })?;
        let pre = StrategyPre::new(instance_pre).map_err(|e| {
            Error::config(
                field,
                format!(
                    "{origin} does not implement the dpone:strategy/strategy world: {}",
                    root_cause(&e)
                ),
            )
        })?;
        Ok(LoadedStrategy {
            ambient_imports: ambient_imports(&self.engine, &component),
            needs,
            pre,
            hash,
            load_seconds: started.elapsed().as_secs_f64(),
            cache_hit,
        })
    }

    fn cached(&self, key: &str) -> Option<Component> {
        let dir = self.cache.as_ref()?;
        let bytes = dir.read(key).ok()?;
        // The modification time is the entry's last use: eviction keeps the recent ones.
        if let Ok(file) = dir.open_with(key, cap_std::fs::OpenOptions::new().append(true)) {
            let _ = file.into_std().set_modified(std::time::SystemTime::now());
        }
        // SAFETY: the cache directory is the host's own (opened from its configured root);
        // entries are written only by `store_cached` from components this engine compiled,
        // and are keyed by the component's content hash and the engine's compatibility
        // hash, so a stale or foreign entry is never picked. Anyone able to write there
        // could replace the host binary just as well.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, bytes) };
        component.ok()
    }

    fn store_cached(&self, key: &str, component: &Component) {
        let Some(dir) = &self.cache else { return };
        let Ok(bytes) = component.serialize() else {
            return;
        };
        // Write then rename, so a concurrent reader never sees a partial artifact.
        let tmp = format!("{key}.{}.tmp", std::process::id());
        let written = dir
            .write(&tmp, &bytes)
            .and_then(|()| dir.rename(&tmp, dir, key));
        if let Err(e) = written {
            tracing::warn!("could not cache the compiled component: {e}");
        }
        evict(dir, CACHE_BYTES, key);
    }

    /// Instantiates a fresh, sandboxed instance for one run. A trapped instance cannot be
    /// re-entered, so every call site that may trap gets its own store.
    pub async fn instantiate(
        &self,
        loaded: &LoadedStrategy,
        state: RunState,
        limits: &Limits,
    ) -> std::result::Result<(wasmtime::Store<RunState>, Strategy), (Error, RunState)> {
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter as &mut dyn ResourceLimiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(settle);
        let configured = store
            .set_fuel(limits.fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)))
            .map_err(|e| Error::internal(e.to_string()));
        let instance = match configured {
            Ok(()) => loaded
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| classify_trap(&e, store.data(), limits)),
            Err(e) => Err(e),
        };
        match instance {
            Ok(instance) => Ok((store, instance)),
            // The caller gets its connections back to clean up and record the failure.
            Err(e) => Err((e, store.into_data())),
        }
    }
}

/// At each epoch tick: charges the guest's fuel for the host work it started since the
/// last tick ([`CALL_FUEL`], [`ROW_FUEL`]; host imports cannot reach the store's fuel
/// themselves), and stops a guest past its deadline.
fn settle(mut store: wasmtime::StoreContextMut<'_, RunState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data_mut();
    let owed = std::mem::take(&mut state.fuel_owed);
    if let Some(deadline) = state.deadline
        && Instant::now() >= deadline
    {
        return Err(wasmtime::Error::new(deadline_passed(&state.limits)));
    }
    if owed > 0 {
        let fuel = store.get_fuel()?;
        store.set_fuel(fuel.saturating_sub(owed))?;
    }
    Ok(UpdateDeadline::Continue(1))
}

/// The error of a run stopped by its deadline.
pub fn deadline_passed(limits: &Limits) -> Error {
    Error::limit(
        "limits.wall_seconds",
        format!(
            "the run passed its deadline of {} s and was stopped: its transaction was rolled back and its staging dropped",
            limits.wall_seconds
        ),
    )
}

/// The contract version this host speaks: the `package` line of `wit/strategy.wit`.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Refuses a component built against another version of the `dpone:strategy` package,
/// naming both versions, before linking would fail with a less helpful message.
fn refuse_other_contract(
    engine: &Engine,
    component: &Component,
    origin: &str,
    field: &str,
) -> Result<()> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .chain(ty.exports(engine).map(|(name, _)| name.to_string()));
    let other = names
        .filter_map(|name| {
            let rest = name.strip_prefix("dpone:strategy/")?;
            let (_, version) = rest.split_once('@')?;
            (version != CONTRACT_VERSION).then(|| version.to_string())
        })
        .next();
    match other {
        None => Ok(()),
        Some(version) => Err(Error::config(
            field,
            format!(
                "{origin} was built against dpone:strategy@{version}; this dpone-host speaks dpone:strategy@{CONTRACT_VERSION}: rebuild the component against the wit/ directory of this release (docs/strategies.md lists what changed)"
            ),
        )),
    }
}

/// The imports of `component` outside the namespaces `allowed`.
fn imports_outside(engine: &Engine, component: &Component, allowed: &[&str]) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| !allowed.iter().any(|p| name.starts_with(p)))
        .collect()
}

/// The WASI interfaces `component` imports beyond `wasi:cli` and `wasi:io`: what
/// `limits.wasi: strict` refuses.
fn ambient_imports(engine: &Engine, component: &Component) -> Vec<String> {
    imports_outside(engine, component, WasiMode::Strict.allowed_imports())
}

/// Refuses a component importing what `wasi` does not allow, before it runs: a run's
/// decisions depend only on what the host gives it. Under `strict` the error names
/// `limits.wasi`, the setting that would let it run.
fn refuse_ambient_imports(
    engine: &Engine,
    component: &Component,
    origin: &str,
    wasi: WasiMode,
) -> Result<()> {
    let allowed = wasi.allowed_imports();
    let refused = imports_outside(engine, component, allowed);
    if refused.is_empty() {
        return Ok(());
    }
    let namespaces = allowed
        .iter()
        .map(|p| p.trim_end_matches('/'))
        .collect::<Vec<_>>()
        .join(", ");
    let (field, why) = match wasi {
        WasiMode::Strict => (
            Some("limits.wasi".to_string()),
            format!(
                "limits.wasi is strict: a strategy may import only {namespaces}; `virtual` links clocks, random, files and sockets deterministic and empty"
            ),
        ),
        WasiMode::Virtual => (None, format!("a strategy may import only {namespaces}")),
    };
    Err(Error {
        kind: Kind::Sandbox,
        field,
        message: format!(
            "{origin} imports {} which the dpone sandbox does not provide ({why})",
            refused.join(", ")
        ),
    })
}

/// Name of the custom section in which a component declares its needs.
pub const NEEDS_SECTION: &str = "dpone:needs";

/// The memory and fuel a component declares it needs, in a top-level custom section
/// [`NEEDS_SECTION`] of `key = value` lines (`memory_mb`, `fuel`). They replace the
/// defaults of `limits.memory_mb` and `limits.fuel`; a value the manifest sets wins, so
/// the operator keeps the last word. A declaration cannot lift the sandbox much: at most
/// [`MAX_DECLARED_MEMORY_MB`] and [`MAX_DECLARED_FUEL`]; more must be set in the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub memory_mb: Option<u64>,
    pub fuel: Option<u64>,
}

impl Needs {
    /// The needs declared in a component's bytes; none when it has no such section.
    /// Only the outer component's sections are read: a core module cannot declare them.
    pub fn declared(bytes: &[u8]) -> std::result::Result<Needs, String> {
        let mut needs = Needs::default();
        for text in custom_sections(bytes, NEEDS_SECTION) {
            let text = std::str::from_utf8(text).map_err(|_| "is not UTF-8".to_string())?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let (key, value) = line
                    .split_once('=')
                    .ok_or_else(|| format!("line {line:?} is not key = value"))?;
                let key = key.trim();
                let max = match key {
                    "memory_mb" => MAX_DECLARED_MEMORY_MB,
                    "fuel" => MAX_DECLARED_FUEL,
                    other => return Err(format!("unknown key {other:?} (memory_mb, fuel)")),
                };
                let value: u64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| (1..=max).contains(v))
                    .ok_or_else(|| format!("{key} must be an integer from 1 to {max}"))?;
                if key == "memory_mb" {
                    needs.memory_mb = Some(value);
                } else {
                    needs.fuel = Some(value);
                }
            }
        }
        Ok(needs)
    }
}

/// The largest `limits.memory_mb` a manifest may set.
pub const MAX_MEMORY_MB: u64 = 4096;

/// The most memory a component may declare it needs: a quarter of what a manifest may set.
pub const MAX_DECLARED_MEMORY_MB: u64 = 1024;

/// The most fuel a component may declare it needs: ten times the default.
pub const MAX_DECLARED_FUEL: u64 = 10 * DEFAULT_FUEL;

/// The payloads of the top-level custom sections named `name`. Stops quietly at malformed
/// bytes: compiling the component reports those.
fn custom_sections<'a>(bytes: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    let mut found = Vec::new();
    let mut at = 8; // magic and version/layer
    while at < bytes.len() {
        let id = bytes[at];
        let Some((size, len)) = leb_u32(&bytes[at + 1..]) else {
            break;
        };
        let start = at + 1 + len;
        let Some(section) = start
            .checked_add(size as usize)
            .and_then(|end| bytes.get(start..end))
        else {
            break;
        };
        if id == 0
            && let Some((name_len, n)) = leb_u32(section)
            && let Some(section_name) = section.get(n..n + name_len as usize)
            && section_name == name.as_bytes()
        {
            found.push(&section[n + name_len as usize..]);
        }
        at = start + size as usize;
    }
    found
}

/// Removes the least recently used compiled components (`.cwasm`, by modification time)
/// until the cache holds at most `budget` bytes, never `keep` (the entry just written). A
/// process loading an entry that is removed meanwhile has it open or compiles it again.
fn evict(dir: &Dir, budget: u64, keep: &str) {
    let Ok(entries) = dir.entries() else { return };
    let mut found: Vec<(std::time::SystemTime, u64, String)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let meta = entry.metadata().ok()?;
            let used = meta.modified().ok()?.into_std();
            name.ends_with(".cwasm").then_some((used, meta.len(), name))
        })
        .collect();
    let mut total: u64 = found.iter().map(|(_, size, _)| size).sum();
    found.sort();
    for (_, size, name) in found {
        if total <= budget {
            break;
        }
        if name != keep && dir.remove_file(&name).is_ok() {
            tracing::info!("compile cache: removed {name}, the least recently used entry");
            total -= size;
        }
    }
}

/// An unsigned LEB128 u32 and its length in bytes; `None` when truncated or too large.
fn leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((u32::try_from(value).ok()?, i + 1));
        }
    }
    None
}

/// Turns a failed guest call into a host error: fuel and memory limits name their
/// manifest field; a host error raised inside an import keeps its kind; other traps are
/// strategy bugs (sandbox kind).
pub fn classify_trap(err: &wasmtime::Error, state: &RunState, limits: &Limits) -> Error {
    if let Some(msg) = &state.limiter.exceeded {
        return Error {
            kind: Kind::Sandbox,
            field: Some("limits.memory_mb".into()),
            message: msg.clone(),
        };
    }
    if let Some(host) = err.downcast_ref::<Error>() {
        return Error {
            kind: host.kind,
            field: host.field.clone(),
            message: host.message.clone(),
        };
    }
    if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
        return Error {
            kind: Kind::Sandbox,
            field: Some("limits.fuel".into()),
            message: format!(
                "the strategy used all of its fuel (limits.fuel = {}: its own instructions and the host work it started) and was stopped",
                limits.fuel
            ),
        };
    }
    // A trap's backtrace names the guest's functions: text the component chose.
    Error::new(
        Kind::Sandbox,
        format!(
            "the strategy trapped: {}",
            crate::text::clean(&root_cause(err), limits.message_len())
        ),
    )
}

fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component header followed by `sections` (id, payload); payloads under 128 bytes,
    /// so a length is one LEB128 byte.
    fn component(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        for (id, payload) in sections {
            assert!(payload.len() < 128);
            bytes.push(*id);
            bytes.push(u8::try_from(payload.len()).unwrap());
            bytes.extend(payload);
        }
        bytes
    }

    fn custom(name: &str, text: &str) -> (u8, Vec<u8>) {
        let mut payload = vec![u8::try_from(name.len()).unwrap()];
        payload.extend(name.as_bytes());
        payload.extend(text.as_bytes());
        (0, payload)
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_entries_past_its_budget() {
        let root = std::env::temp_dir().join(format!("dpone-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        for (name, used) in [
            ("a.cwasm", 3),
            ("b.cwasm", 1),
            ("c.cwasm", 2),
            ("d.cwasm", 4),
        ] {
            dir.write(name, [0u8; 100]).unwrap();
            let file = std::fs::File::options()
                .append(true)
                .open(root.join(name))
                .unwrap();
            file.set_modified(at(used)).unwrap();
        }
        dir.write("other.txt", [0u8; 1000]).unwrap();
        // b is the oldest, but it is the entry just written.
        evict(&dir, 250, "b.cwasm");
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["b.cwasm", "d.cwasm", "other.txt"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn needs_are_read_from_the_custom_section() {
        let bytes = component(&[
            (1, vec![0; 3]),
            custom("other", "memory_mb = 9"),
            custom(NEEDS_SECTION, "memory_mb = 256\nfuel=7\n"),
        ]);
        assert_eq!(
            Needs::declared(&bytes),
            Ok(Needs {
                memory_mb: Some(256),
                fuel: Some(7)
            })
        );
        assert_eq!(Needs::declared(&component(&[])), Ok(Needs::default()));
    }

    #[test]
    fn malformed_section_bytes_end_the_search_without_a_panic() {
        let whole = component(&[custom(NEEDS_SECTION, "memory_mb = 256")]);
        for cut in 0..whole.len() {
            assert_eq!(
                Needs::declared(&whole[..cut]),
                Ok(Needs::default()),
                "{cut}"
            );
        }
        // A section size in LEB128 that does not fit a u32, or that runs past the end.
        let mut huge = component(&[]);
        huge.extend([0, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(Needs::declared(&huge), Ok(Needs::default()));
        let mut long = component(&[]);
        long.extend([0, 0x7f, 1, b'x']);
        assert_eq!(Needs::declared(&long), Ok(Needs::default()));
    }

    #[test]
    fn malformed_needs_say_what_is_wrong() {
        for (text, said) in [
            ("memory_mb = 0", "from 1 to 1024"),
            ("memory_mb = 2000", "from 1 to 1024"),
            ("fuel = -1", "from 1 to 200000000000"),
            ("fuel = 200000000001", "from 1 to 200000000000"),
            ("cpu = x", "unknown key"),
            ("memory_mb", "not key = value"),
        ] {
            let err = Needs::declared(&component(&[custom(NEEDS_SECTION, text)])).unwrap_err();
            assert!(err.contains(said), "{text}: {err}");
        }
    }
}
