//! The modules of vioblk-sim form no import cycle (issue 12, shape 5): the layers listed in
//! `src/lib.rs` only point down.
//!
//! Reads the crate's sources, takes every `crate::MODULE` path outside comments and outside
//! `#[cfg(test)]` modules (tests may use a double from a higher layer), and looks for a cycle.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of `text` without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::NAME` references in `code`, the names only.
fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `vioblk_sim::crate::` does not occur; skip `$crate::` in macros.
        if code[..at].ends_with('$') {
            continue;
        }
        let name: String = code[at + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The graph of the crate's top-level modules (a directory module includes its files).
fn graph(src: &Path) -> Graph {
    let mut g = Graph::new();
    for entry in std::fs::read_dir(src).expect("src/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            for f in std::fs::read_dir(&path).expect("module dir") {
                files.push(f.expect("entry").path());
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path.clone());
        } else {
            continue;
        }
        let deps = g.entry(name.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source");
            deps.extend(references(&code(&text)).into_iter().filter(|d| *d != name));
        }
    }
    g
}

/// A cycle in `g`, as the path that closes it, if there is one.
fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_form_no_cycle() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for m in ["class", "target", "report", "cli", "stats", "disk", "scsi"] {
        assert!(g.contains_key(m), "module {m} not found: {g:?}");
    }
    assert_eq!(cycle(&g), None, "{g:#?}");
    // The layering the issue asks for, edge by edge.
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    assert!(
        deps("target").is_empty(),
        "target is a leaf: {:?}",
        deps("target")
    );
    assert!(
        deps("scsi").is_empty(),
        "scsi is a leaf: {:?}",
        deps("scsi")
    );
    for low in [
        "class", "target", "report", "stats", "disk", "stack", "qemu",
    ] {
        assert!(!deps(low).contains("cli"), "{low} names cli");
    }
    assert!(!deps("class").contains("report") && !deps("target").contains("report"));
}

/// The layers of `src/lib.rs`, leaves first: a module names only modules of its own layer or
/// of layers before it.
const LAYERS: &[&[&str]] = &[
    &["scsi", "target"],
    &["device", "faults", "image_report"],
    &["class", "workload"],
    &["stats"],
    &["report", "html", "compare"],
    &["ram", "disk"],
    &["stack", "qemu", "driver"],
    &["cli"],
];

/// Edges of `g` that point to a later layer (or to a module in no layer).
fn upward(g: &Graph) -> Vec<String> {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut bad = Vec::new();
    for (m, deps) in g {
        for d in deps {
            match (layer(m), layer(d)) {
                (Some(a), Some(b)) if b <= a => {}
                _ => bad.push(format!("{m} -> {d}")),
            }
        }
    }
    bad
}

#[test]
fn the_modules_follow_the_layers() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let missing: Vec<&String> = g
        .keys()
        .filter(|m| !LAYERS.iter().any(|l| l.contains(&m.as_str())))
        .collect();
    assert!(missing.is_empty(), "modules in no layer: {missing:?}");
    assert_eq!(upward(&g), Vec::<String>::new());
    // And the check fires.
    let mut bad = Graph::new();
    bad.entry("class".into())
        .or_default()
        .insert("report".into());
    assert_eq!(upward(&bad), ["class -> report"]);
}

#[test]
fn a_cycle_is_found() {
    let mut g = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.to_owned()).or_default().insert(b.to_owned());
    };
    edge(&mut g, "cli", "report");
    edge(&mut g, "report", "class");
    assert_eq!(cycle(&g), None);
    edge(&mut g, "class", "target");
    edge(&mut g, "target", "report");
    assert_eq!(
        cycle(&g),
        Some(vec![
            "class".into(),
            "target".into(),
            "report".into(),
            "class".into()
        ])
    );
    // Comments and test modules do not count; code does.
    let text = "use crate::a::X; // crate::b\n/// [`crate::c`]\nfn f() { crate::d::g() }\n\
                #[cfg(test)]\nmod tests { use crate::e; }";
    let found: Vec<String> = references(&code(text)).into_iter().collect();
    assert_eq!(found, ["a", "d"]);
}
