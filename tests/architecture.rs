//! The layering of DESIGN.md, checked: the sans-I/O core depends on no
//! async runtime, network or TLS stack, and no library crate depends on the
//! simulator.

#![allow(clippy::print_stderr)] // reports what it found

use std::process::Command;

fn normal_deps(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crate_names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_model_crate_has_no_io_dependencies() {
    let deps = crate_names(&normal_deps("model"));
    for banned in [
        "tokio", "quinn", "rustls", "chitchat", "storage", "gossip", "proxy", "hyper",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "model depends on {banned}: {deps:?}"
        );
    }
}

#[test]
fn nothing_depends_on_the_simulator_and_libraries_keep_their_lane() {
    for lib in ["model", "gossip", "storage", "proxy", "ringhost"] {
        let deps = crate_names(&normal_deps(lib));
        assert!(!deps.iter().any(|d| d == "sim"), "{lib} depends on sim");
    }
    // gossip, storage and proxy do not depend on each other.
    for (lib, others) in [
        ("gossip", ["storage", "proxy"]),
        ("storage", ["gossip", "proxy"]),
        ("proxy", ["gossip", "storage"]),
    ] {
        let deps = crate_names(&normal_deps(lib));
        for o in others {
            assert!(!deps.iter().any(|d| d == o), "{lib} depends on {o}");
        }
    }
}

// ---------------------------------------------------------------------------
// Import cycles between files.
//
// Each file is a node; an edge runs from a file to every module file it
// names through `crate::…` or `super::…` (in `use` trees, paths and doc
// links alike, comments aside) and to each child it declares with `mod`.
// The crate root (lib.rs, main.rs) only registers modules and re-exports
// them, so it takes no part; nor do unit tests (a file's `mod tests` at
// its end, or a `tests.rs` of their own), which name their parent. A cycle means two files each need the other:
// neither can be understood, tested or replaced alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The module path of `file` inside the crate whose sources are in `dir`:
/// `[]` for the root, `["admin"]` for admin.rs or admin/mod.rs.
fn module_of(dir: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(dir).expect("file inside its crate");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && (stem == "lib" || stem == "main"))) {
        parts.push(stem.to_owned());
    }
    parts
}

/// The text without comments (line comments to the end of the line, block
/// comments whole). String literals are not parsed: a `//` inside one cuts
/// the rest of that line, which can only hide a path, never invent one.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn ident_at(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Every path a use tree starting at `s` names (after `crate::` or
/// `super::`): `a::b::{c, d::e}` gives `a::b::c` and `a::b::d::e`.
fn use_tree(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    let mut pos = 0;
    loop {
        let t = &s[pos..];
        let trimmed = t.trim_start();
        pos += t.len() - trimmed.len();
        if let Some(inner) = trimmed.strip_prefix('{') {
            pos += 1;
            let mut at = 0;
            loop {
                let i = &inner[at..];
                let it = i.trim_start();
                at += i.len() - it.len();
                if it.starts_with('}') || it.is_empty() {
                    return pos + at + 1;
                }
                at += use_tree(&inner[at..], &path, out);
                let i = &inner[at..];
                let it = i.trim_start();
                at += i.len() - it.len();
                if it.starts_with(',') {
                    at += 1;
                }
            }
        }
        let (id, after) = ident_at(trimmed);
        if id.is_empty() {
            out.push(path);
            return pos;
        }
        path.push(id.to_owned());
        pos += id.len();
        if after.starts_with("::") {
            pos += 2;
        } else {
            out.push(path);
            return pos;
        }
    }
}

/// The module paths `file` (module `me`) names, relative to the crate root.
fn named_paths(src: &str, me: &[String]) -> Vec<Vec<String>> {
    // A file's own unit tests (`#[cfg(test)] mod tests { … }` at its end)
    // take no part either.
    let src = src
        .find("#[cfg(test)]\nmod tests {")
        .map_or(src, |i| &src[..i]);
    let text = strip_comments(src);
    let mut out = Vec::new();
    // A file's `super` is its parent module; for x/mod.rs (module x) too.
    let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
    for (kw, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(i) = text[from..].find(kw) {
            let at = from + i;
            let before = text[..at].chars().next_back();
            from = at + kw.len();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            use_tree(&text[from..], &base, &mut out);
        }
    }
    // Children declared here.
    for line in text.lines() {
        let l = line.trim_start();
        let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
        let l = l.strip_prefix("pub ").unwrap_or(l);
        if let Some(rest) = l.strip_prefix("mod ") {
            let (id, after) = ident_at(rest);
            if after.trim_start().starts_with(';') {
                let mut p = me.to_vec();
                p.push(id.to_owned());
                out.push(p);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.ends_with("tests.rs") || skip.iter().any(|s| p.ends_with(s)) {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, skip, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The import graph of one crate: file → the files it names.
fn import_graph(
    files: &BTreeMap<Vec<String>, String>,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut graph = BTreeMap::new();
    for (me, src) in files {
        if me.is_empty() {
            continue; // the crate root
        }
        let mut to = BTreeSet::new();
        for path in named_paths(src, me) {
            // The longest prefix that is a module file.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| files.contains_key(p));
            if let Some(t) = target
                && t != *me
            {
                to.insert(t);
            }
        }
        graph.insert(me.clone(), to);
    }
    graph
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            if !g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn crate_cycles(root: &Path, label: &str, skip: &[&str]) -> Vec<String> {
    let dir = &root.join(label);
    let mut paths = Vec::new();
    rust_files(dir, skip, &mut paths);
    let files: BTreeMap<Vec<String>, String> = paths
        .iter()
        .map(|p| {
            let src = std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (module_of(dir, p), src)
        })
        .collect();
    let graph = import_graph(&files);
    cycles(&graph)
        .into_iter()
        .map(|comp| {
            let names: BTreeSet<&Vec<String>> = comp.iter().collect();
            let arrows: Vec<String> = comp
                .iter()
                .flat_map(|f| {
                    graph[f]
                        .iter()
                        .filter(|t| names.contains(t))
                        .map(move |t| format!("{} -> {}", f.join("::"), t.join("::")))
                })
                .collect();
            format!("{label}: {}", arrows.join(", "))
        })
        .collect()
}

#[test]
fn no_two_files_of_a_crate_import_each_other_even_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for (dir, skip) in [
        ("src", &[][..]),
        ("proxy/src", &[][..]),
        ("model/src", &[][..]),
        ("sim/src", &["bin"][..]),
        ("sim/src/bin/ringhost-sim", &[][..]),
        ("gossip/src", &[][..]),
        ("storage/src", &[][..]),
    ] {
        found.extend(crate_cycles(root, dir, skip));
    }
    for c in &found {
        eprintln!("import cycle: {c}");
    }
    assert!(found.is_empty(), "import cycles between files: {found:#?}");
}

#[test]
fn the_cycle_check_finds_a_cycle_through_three_files_and_nested_use_trees() {
    let files: BTreeMap<Vec<String>, String> = [
        (vec![], "mod a;\nmod b;\nmod c;\npub use a::X;\n"),
        (
            vec!["a".into()],
            "use crate::{b::Y, other};\npub struct X;\n",
        ),
        (
            vec!["b".into()],
            "// crate::a::X is only named in a comment\npub struct Y(crate::c::Z);\n",
        ),
        (
            vec!["c".into()],
            "pub struct Z;\nfn f() -> crate::X { todo!() }\n",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    let graph = import_graph(&files);
    // `crate::X` is a re-export of the root: the root takes no part.
    assert_eq!(cycles(&graph), Vec::<Vec<Vec<String>>>::new());
    let mut files = files;
    files.insert(
        vec!["c".into()],
        "pub struct Z;\nfn f() -> super::a::X { todo!() }\n".into(),
    );
    let graph = import_graph(&files);
    assert_eq!(
        cycles(&graph),
        vec![vec![
            vec!["a".to_owned()],
            vec!["b".to_owned()],
            vec!["c".to_owned()]
        ]]
    );
    // A child that names its parent closes a cycle with the parent's `mod`.
    let nested: BTreeMap<Vec<String>, String> = [
        (vec!["p".into()], "mod q;\npub struct P;\n"),
        (vec!["p".into(), "q".into()], "use super::P;\n"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    assert_eq!(cycles(&import_graph(&nested)).len(), 1);
}

// ---------------------------------------------------------------------------
// Function length in the model.

/// The functions of `src` (non-test code: up to a file's `#[cfg(test)]`)
/// with their length in lines, from the `fn` line to its closing brace at
/// the same indentation.
fn function_lengths(src: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = src.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let mut out = Vec::new();
    for i in 0..end {
        let l = lines[i];
        let body = l.trim_start();
        let indent = &l[..l.len() - body.len()];
        let body = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| body.strip_prefix(p))
            .unwrap_or(body);
        let body = body.strip_prefix("const ").unwrap_or(body);
        let Some(rest) = body.strip_prefix("fn ") else {
            continue;
        };
        let (name, _) = ident_at(rest);
        let close = format!("{indent}}}");
        if let Some(j) = (i..end).find(|&j| lines[j] == close) {
            out.push((name.to_owned(), j - i + 1));
        }
    }
    out
}

#[test]
fn no_function_of_the_model_is_longer_than_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/src");
    let mut files = Vec::new();
    rust_files(&root, &[], &mut files);
    let mut long = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).expect("readable");
        for (name, n) in function_lengths(&src) {
            if n > 80 {
                long.push(format!("{}: {name} ({n} lines)", f.display()));
            }
        }
    }
    assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
    // The measure itself: a 3-line function and a nested one.
    let sample = "fn a() {\n    x();\n}\nimpl A {\n    pub(super) fn b(&self) {\n        if y {\n        }\n    }\n}\n";
    assert_eq!(
        function_lengths(sample),
        [("a".to_owned(), 3), ("b".to_owned(), 4)]
    );
}

#[test]
fn no_file_holds_more_than_800_lines_of_non_test_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut big = Vec::new();
    for dir in [
        "src",
        "proxy/src",
        "model/src",
        "sim/src",
        "gossip/src",
        "storage/src",
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &[], &mut files);
        for f in files {
            let src = std::fs::read_to_string(&f).expect("readable");
            let lines = src
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            if lines > 800 {
                big.push(format!("{}: {lines} lines", f.display()));
            }
        }
    }
    assert!(
        big.is_empty(),
        "files over 800 lines of non-test code: {big:#?}"
    );
}
