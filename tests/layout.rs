//! The house rule that modules form no import cycle (README, "Where things are"), checked
//! on the source itself: every `crate::<module>` and `super::<module>` path outside
//! comments and test modules is an edge between top-level modules of `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of a file under `src/` (`src/proxy/layer/retry.rs` → `proxy`).
fn top_module(rel: &Path) -> String {
    let first = rel.components().next().expect("a path under src/");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifiers that follow `prefix` (e.g. `crate::`) in `line`.
fn targets<'a>(line: &'a str, prefix: &str) -> impl Iterator<Item = &'a str> {
    line.match_indices(prefix).filter_map(move |(at, _)| {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let rest = &line[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let from = top_module(rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        // `super::x` in a top-level folder's module names a sibling of the same folder.
        let nested = rel.components().count() > 1;
        for line in code.lines() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            let mut to: Vec<&str> = targets(line, "crate::").collect();
            if !nested {
                to.extend(targets(line, "super::"));
            }
            for t in to {
                if t != from && t != "self" && t != "super" {
                    edges.entry(from.clone()).or_default().insert(t.to_owned());
                }
            }
        }
    }
    edges
}

/// A cycle through `start`, if any (depth-first).
fn cycle_from(
    edges: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    node: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    for next in edges.get(node).into_iter().flatten() {
        if next == start {
            let mut c = path.clone();
            c.push(start.to_owned());
            return Some(c);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(c) = cycle_from(edges, start, next, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_import_cycle() {
    let edges = graph();
    assert!(
        edges.get("proxy").is_some_and(|e| e.contains("guard")),
        "the scan found no edge proxy -> guard; is it reading the source? {edges:?}"
    );
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = cycle_from(&edges, start, start, &mut path) {
            panic!(
                "import cycle: {}; move the shared piece into a module both can use \
                 (see README, Where things are)",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    edges.entry("c".into()).or_default().insert("a".into());
    let mut path = vec!["a".to_owned()];
    assert_eq!(
        cycle_from(&edges, "a", "a", &mut path),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let line = "use crate::guard::Guard; let x = my_crate::foo;";
    assert_eq!(targets(line, "crate::").collect::<Vec<_>>(), ["guard"]);
}
