//! Time to first instruction: how long `dpone-host strategy inspect` takes to load the
//! `snapshot_diff` strategy written in Rust, Python and JavaScript and get its `describe`
//! answer, on a cold compile cache (the component is compiled to native code) and a warm one
//! (the cached code is read). The guest's first instruction runs inside the describe call,
//! so load + describe bounds it from above.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::Lab;
use crate::output;

/// Warm loads per component; the one with the median whole-process time is reported.
const WARM_RUNS: usize = 3;

/// The components measured: the same strategy in each language.
const COMPONENTS: [(&str, &str); 3] = [
    ("Rust", "snapshot_diff"),
    ("Python", "snapshot_diff_py"),
    ("JavaScript", "snapshot_diff_js"),
];

/// One inspect: what the host reports of its load and describe, and the process's wall time.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    load_seconds: f64,
    describe_seconds: f64,
    process_seconds: f64,
}

#[derive(Debug)]
pub struct Startup {
    language: &'static str,
    file: String,
    size_bytes: u64,
    cold: Timing,
    warm: Timing,
}

/// Measures every component built; a language whose component is missing is skipped with
/// a line (its toolchain could not be installed).
pub fn measure(lab: &Lab) -> Result<Vec<Startup>> {
    let mut measured = Vec::new();
    for (language, name) in COMPONENTS {
        let path = lab.components.join(format!("{name}.wasm"));
        if !path.is_file() {
            println!(
                "startup: no {} (the {language} toolchain was not installed)",
                path.display()
            );
            continue;
        }
        let home = lab.dirs.work.join(format!("startup-home-{name}"));
        if home.exists() {
            fs::remove_dir_all(&home)
                .with_context(|| format!("could not clear {}", home.display()))?;
        }
        let cold = inspect(lab, &path, &home, false)?;
        let mut warm: Vec<Timing> = (0..WARM_RUNS)
            .map(|_| inspect(lab, &path, &home, true))
            .collect::<Result<_>>()?;
        warm.sort_by(|a, b| a.process_seconds.total_cmp(&b.process_seconds));
        measured.push(Startup {
            language,
            file: format!("{name}.wasm"),
            size_bytes: fs::metadata(&path)?.len(),
            cold,
            warm: warm[WARM_RUNS / 2],
        });
    }
    Ok(measured)
}

fn inspect(lab: &Lab, component: &Path, home: &Path, cached: bool) -> Result<Timing> {
    let started = Instant::now();
    let out = output(
        Command::new(&lab.host)
            .args(["strategy", "inspect"])
            .arg(component)
            .env("DPONE_HOME", home),
    )
    .with_context(|| format!("dpone-host strategy inspect {} failed", component.display()))?;
    let process_seconds = started.elapsed().as_secs_f64();
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("start: loaded in "))
        .with_context(|| format!("no start line in the inspect output:\n{out}"))?;
    // "<load> s (<how>), describe answered in <describe> s"
    let load_seconds = number(line.split(' ').next())?;
    let describe_seconds = number(line.rsplit(' ').nth(1))?;
    if line.contains("from the compile cache") != cached {
        bail!(
            "expected a {} load: {line}",
            if cached { "cached" } else { "compiling" }
        );
    }
    Ok(Timing {
        load_seconds,
        describe_seconds,
        process_seconds,
    })
}

fn number(text: Option<&str>) -> Result<f64> {
    text.and_then(|t| t.parse().ok())
        .with_context(|| format!("not a number of seconds: {text:?}"))
}

fn rows(startup: &[Startup]) -> Vec<[String; 7]> {
    startup
        .iter()
        .map(|s| {
            [
                s.language.to_owned(),
                s.file.clone(),
                format!("{:.1} MB", s.size_bytes as f64 / 1e6),
                format!("{:.2} s", s.cold.load_seconds),
                format!("{:.3} s", s.warm.load_seconds),
                format!("{:.3} s", s.warm.load_seconds + s.warm.describe_seconds),
                format!("{:.3} s", s.warm.process_seconds),
            ]
        })
        .collect()
}

const HEADERS: [&str; 7] = [
    "language",
    "component",
    "size",
    "cold load (compile)",
    "warm load (cache)",
    "warm load + describe",
    "warm inspect, whole process",
];

pub fn console(startup: &[Startup]) -> String {
    if startup.is_empty() {
        return String::new();
    }
    let mut out = String::from("\ntime to first instruction (dpone-host strategy inspect):\n");
    let _ = writeln!(out, "  {}", HEADERS.join(" | "));
    for row in rows(startup) {
        let _ = writeln!(out, "  {}", row.join("  "));
    }
    out
}

pub fn markdown(startup: &[Startup]) -> String {
    if startup.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\n## Time to first instruction\n\n\
         `dpone-host strategy inspect` of the same strategy (`snapshot_diff`) built from \
         Rust, Python (componentize-py) and JavaScript (componentize-js): the load on a cold \
         compile cache (compiling to native code), then on the warm cache the run with the \
         median whole-process time of three. The guest's first instruction runs inside `describe`, so load + describe \
         bounds it from above. A Python or JavaScript component carries its language \
         runtime, which is what its size and compile time are.\n\n",
    );
    let _ = writeln!(md, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(HEADERS.len()));
    for row in rows(startup) {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md
}

pub fn json(startup: &[Startup]) -> Value {
    let timing = |t: &Timing| {
        json!({
            "load_seconds": t.load_seconds,
            "describe_seconds": t.describe_seconds,
            "process_seconds": t.process_seconds,
        })
    };
    startup
        .iter()
        .map(|s| {
            json!({
                "language": s.language,
                "component": s.file,
                "size_bytes": s.size_bytes,
                "cold": timing(&s.cold),
                "warm_median": timing(&s.warm),
            })
        })
        .collect()
}
