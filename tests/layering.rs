//! The modules' dependencies point one way (ops → twins → kernels/fast CPU → backends → layers
//! → training → verification/bench → CLI): read from the sources, every `crate::<module>` path
//! outside comments is an edge between top-level modules of `src/`. The graph must have no
//! cycle, the oracle must depend only on the ops, the twins and the small shared helpers, and
//! no runtime module may reach the test harness (`verify`) or the benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The lowercase identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::` (`crate::gpu::..`, `crate::{gpu, ops}`).
fn targets(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `wgtrain_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                out.insert(ident(part.trim()).to_string());
            }
        } else {
            out.insert(ident(rest).to_string());
        }
    }
    out.remove("");
    out
}

/// Top-level module → the top-level modules it uses (lib.rs and main.rs left out), and for each
/// edge a file that makes it.
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        assert!(
            !std::fs::read_to_string(&f)
                .unwrap()
                .contains("super::super::"),
            "{rel}: name other modules through crate::, not super::super::"
        );
        let code: String = std::fs::read_to_string(&f)
            .unwrap()
            .lines()
            .map(|l| l.find("//").map_or(l, |i| &l[..i]))
            .collect::<Vec<_>>()
            .join("\n");
        let edges = g.entry(top.clone()).or_default();
        for t in targets(&code) {
            if t != top {
                edges.entry(t).or_insert_with(|| rel.clone());
            }
        }
    }
    g
}

/// A cycle through `node`, if the graph has one reachable from it.
fn cycle(
    g: &BTreeMap<String, BTreeMap<String, String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|n| n == node) {
        let mut c = path[i..].to_vec();
        c.push(node.to_string());
        return Some(c);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in g.get(node).into_iter().flat_map(|e| e.keys()) {
        if let Some(c) = cycle(g, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn the_parser_finds_paths_and_groups_and_skips_comments() {
    let t = targets("use crate::gpu::kernels;\nuse crate::{ops, verify::Check};\nx_crate::bench");
    assert_eq!(t, ["gpu", "ops", "verify"].map(String::from).into());
    let g = graph();
    // The walk sees the modules it is about, with the edges known to exist.
    assert!(g["backend"].contains_key("gpu"), "{g:?}");
    assert!(g["verify"].contains_key("oracle"), "{g:?}");
}

#[test]
fn modules_form_no_import_cycle() {
    let g = graph();
    let mut done = BTreeSet::new();
    for node in g.keys() {
        if let Some(c) = cycle(&g, node, &mut Vec::new(), &mut done) {
            let via: Vec<String> = c
                .windows(2)
                .map(|w| format!("{} → {} ({})", w[0], w[1], g[&w[0]][&w[1]]))
                .collect();
            panic!("import cycle: {}", via.join(", "));
        }
    }
}

#[test]
fn the_oracle_is_a_leaf_over_ops_and_twins() {
    let g = graph();
    let allowed = ["ops", "cpu", "error", "util"];
    for (t, file) in &g["oracle"] {
        assert!(
            allowed.contains(&t.as_str()),
            "the oracle uses crate::{t} ({file}); it may use only {allowed:?}"
        );
    }
}

#[test]
fn the_runtime_never_imports_the_test_harness_or_the_benchmarks() {
    let g = graph();
    let harness = ["verify", "bench"];
    for (module, edges) in &g {
        if harness.contains(&module.as_str()) {
            continue;
        }
        for h in harness {
            if let Some(file) = edges.get(h) {
                panic!("{module} uses crate::{h} ({file})");
            }
        }
    }
}
