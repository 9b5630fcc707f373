//! The docs match the code: every relative link in the README and `docs/` resolves to a
//! file of the repository, and every manifest they show (a `yaml` block with a top-level
//! `pipeline:`) and every file in `examples/` parses and validates.

use std::path::{Path, PathBuf};

use dpone_host::manifest::Manifest;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// README.md and every Markdown file under docs/.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut files);
    files.sort();
    files
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Inline code spans are not links.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_doc_link_resolves() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !file.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to missing files:\n{}",
        broken.join("\n")
    );
}

/// A value for every `${VAR}` a doc uses, shaped like what its name says.
fn example_env(name: &str) -> Option<String> {
    let value = if name.contains("CLICKHOUSE") || name.ends_with("CH_URL") {
        "http://127.0.0.1:8123/default"
    } else if name.contains("MSSQL") {
        "mssql://sa:secret@127.0.0.1:1433/master"
    } else if name.contains("KAFKA") {
        "127.0.0.1:9092"
    } else if name.contains("REST") {
        "http://127.0.0.1:8080"
    } else if name.contains("ENDPOINT") {
        "http://127.0.0.1:59050"
    } else if name.contains("URL") || name.contains("PG") || name.contains("POSTGRES") {
        "postgres://dpone@127.0.0.1:5432/dpone"
    } else {
        "example"
    };
    Some(value.to_string())
}

/// The `yaml` code blocks of a Markdown text that are whole manifests.
fn manifests(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```yaml") => block = Some(String::new()),
            Some(b) if line.trim_start().starts_with("```") => {
                if b.lines().any(|l| l.starts_with("pipeline:")) {
                    out.push(std::mem::take(b));
                }
                block = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_manifest_in_the_docs_and_examples_parses() {
    let mut shown: Vec<(String, String)> = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, m) in manifests(&text).into_iter().enumerate() {
            shown.push((format!("{} (manifest {})", file.display(), i + 1), m));
        }
    }
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            shown.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert!(shown.len() > 20, "only {} manifests found", shown.len());
    let failed: Vec<String> = shown
        .iter()
        .filter_map(|(at, text)| {
            Manifest::parse(text, &example_env)
                .err()
                .map(|e| format!("{at}: {e}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "manifests that do not parse:\n{}",
        failed.join("\n")
    );
}
