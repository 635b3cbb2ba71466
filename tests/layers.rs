//! The arrangement of `multinode/src`, read from its paths: no file imports a
//! file that imports it back (directly or around a cycle, folders included),
//! and each layer imports only its own and lower layers (DESIGN.md, "Inside
//! `multinode/src`"). `cargo test --test layers` runs this check alone.
//!
//! An import is any path in the code (a `use` tree or a path in an expression)
//! that names an item of another file: `crate::…`, `super::…`, `self::…`, or a
//! path that starts with a child module's name. A `mod x;` declaration is not
//! an import: a folder's `mod.rs` may declare its files, and must not reach
//! into them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and its layer: 0 data, 1 mechanisms, 2 roles.
const LAYERS: &[(&str, u8)] = &[
    ("lib", 2),
    ("roles", 2),
    ("supervisor", 1),
    ("listener", 1),
    ("balance", 1),
    ("http", 1),
    ("mesh", 1),
    ("cluster", 1),
    ("metrics", 1),
    ("admin", 1),
    ("upgrade", 1),
    ("notify", 1),
    ("init", 1),
    ("activation", 1),
    ("limits", 1),
    ("throttle", 1),
    ("woken", 1),
    ("tls", 1),
    ("nodes", 1),
    ("map", 1),
    ("readiness", 1),
    ("load", 1),
    ("config", 0),
    ("control", 0),
    ("shm", 0),
];

#[test]
fn no_file_of_multinode_src_imports_one_that_imports_it_back() {
    let files = read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("multinode/src"));
    let graph = imports(&files);
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles in multinode/src (each line one cycle, as a path of files):\n{}",
        cycles
            .iter()
            .map(|c| c.join(" -> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_layer_imports_only_its_own_and_lower_layers() {
    let files = read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("multinode/src"));
    let graph = imports(&files);
    let layer_of = |file: &str| -> u8 {
        let top = file.split(['/', '.']).next().unwrap();
        LAYERS
            .iter()
            .find(|(name, _)| *name == top)
            .unwrap_or_else(|| {
                panic!("{file}: its top module {top} has no layer in tests/layers.rs")
            })
            .1
    };
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| layer_of(from) < layer_of(to))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(
        upward.is_empty(),
        "imports pointing up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_finds_a_cycle_through_a_folder_and_an_inline_module() {
    let files = BTreeMap::from([
        (
            "lib.rs".to_string(),
            "mod a; mod b; fn f() { crate::a::x(); }".to_string(),
        ),
        (
            "a/mod.rs".to_string(),
            "mod inner; pub use inner::X;".to_string(),
        ),
        (
            "a/inner.rs".to_string(),
            "// crate::b is only a comment\nuse crate::{b::{self, Y}};\n\
             #[cfg(test)] mod tests { use super::*; }"
                .to_string(),
        ),
        (
            "b.rs".to_string(),
            "const S: &str = \"crate::lib\"; pub(in crate::lib) fn g() { let _ = super::a::X; }"
                .to_string(),
        ),
    ]);
    let graph = imports(&files);
    assert_eq!(graph["lib.rs"], BTreeSet::from(["a/mod.rs".to_string()]));
    assert_eq!(graph["a/inner.rs"], BTreeSet::from(["b.rs".to_string()]));
    let cycles = cycles(&graph);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(cycles[0].len(), 4, "{cycles:?}"); // a/mod.rs, a/inner.rs, b.rs, back
}

/// Every `.rs` file below `root`, by its path relative to it.
fn read_tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A file's module path: `lib.rs` is the crate, `a/mod.rs` and `a.rs` are `a`.
fn module_of(file: &str) -> Vec<String> {
    let stem = file.strip_suffix(".rs").unwrap();
    let mut parts: Vec<String> = stem.split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Which files each file imports (itself left out).
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    files
        .iter()
        .map(|(file, text)| {
            let module = module_of(file);
            let mut to = BTreeSet::new();
            for path in paths(text, &module, &modules) {
                let target = (0..=path.len())
                    .rev()
                    .find_map(|n| modules.get(&path[..n]))
                    .expect("the crate root is a file");
                if target != file {
                    to.insert(target.clone());
                }
            }
            (file.clone(), to)
        })
        .collect()
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// The code's tokens, comments and literals left out.
fn tokens(text: &str) -> Vec<Token> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let at = |j: usize| c.get(j).copied().unwrap_or('\0');
        match c[i] {
            '/' if at(i + 1) == '/' => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                loop {
                    if at(i) == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if at(i) == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else if i >= c.len() {
                        break;
                    } else {
                        i += 1;
                    }
                }
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            'r' if (at(i + 1) == '#' || at(i + 1) == '"')
                && (at(i + 1) == '"' || at(i + 2) == '"' || at(i + 2) == '#') =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body: String = c[j + 1..].iter().collect();
                let end = body.find(&close).expect("a raw string ends");
                i = j + 1 + body[..end].chars().count() + close.chars().count();
            }
            '\'' if at(i + 1) == '\\' => {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '\'' if at(i + 2) == '\'' => i += 3,
            ch if ch.is_whitespace() => i += 1,
            ch if ch.is_alphabetic() || ch == '_' => {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Token::Ident(c[start..i].iter().collect()));
            }
            ':' if at(i + 1) == ':' => {
                out.push(Token::PathSep);
                i += 2;
            }
            ch => {
                out.push(match ch {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    ';' => Token::Semi,
                    _ => Token::Other,
                });
                i += 1;
            }
        }
    }
    out
}

/// The absolute paths (segments below the crate) that a file's code names.
fn paths(
    text: &str,
    module: &[String],
    modules: &BTreeMap<Vec<String>, String>,
) -> Vec<Vec<String>> {
    let t = tokens(text);
    let mut out = Vec::new();
    // The scope: the file's module, then the inline modules open at each depth.
    let mut scope: Vec<(usize, String)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < t.len() {
        let here: Vec<String> = module
            .iter()
            .cloned()
            .chain(scope.iter().map(|(_, m)| m.clone()))
            .collect();
        match &t[i] {
            Token::Open => depth += 1,
            Token::Close => {
                if scope.last().is_some_and(|(d, _)| *d == depth) {
                    scope.pop();
                }
                depth -= 1;
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) = (t.get(i + 1), t.get(i + 2))
                {
                    depth += 1;
                    scope.push((depth, name.clone()));
                    i += 3;
                    continue;
                }
                i += 2; // `mod x;` declares, it does not import
                continue;
            }
            // `pub(in crate::x)` names a module for visibility: not an import.
            Token::Ident(kw) if kw == "in" && i >= 2 && t[i - 2] == Token::Ident("pub".into()) => {
                i += 1;
                while matches!(t.get(i), Some(Token::Ident(_) | Token::PathSep)) {
                    i += 1;
                }
                continue;
            }
            Token::Ident(_)
                if matches!(t.get(i + 1), Some(Token::PathSep))
                    && (i == 0 || t[i - 1] != Token::PathSep) =>
            {
                let mut found = Vec::new();
                i = tree(&t, i, Vec::new(), &mut found);
                for path in found {
                    if let Some(abs) = absolute(&path, &here, modules) {
                        out.push(abs);
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads a path or a use tree from `t[i]` on, adding each leaf path to `found`;
/// returns the index after it.
fn tree(t: &[Token], mut i: usize, mut prefix: Vec<String>, found: &mut Vec<Vec<String>>) -> usize {
    loop {
        match t.get(i) {
            Some(Token::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if t.get(i) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                found.push(prefix);
                return i;
            }
            Some(Token::Open) => {
                i += 1;
                while i < t.len() && t[i] != Token::Close {
                    if t[i] == Token::Comma {
                        i += 1;
                        continue;
                    }
                    let before = i;
                    i = tree(t, i, prefix.clone(), found);
                    if i == before {
                        i += 1; // `*`
                        found.push(prefix.clone());
                    }
                }
                return i + 1;
            }
            _ => {
                found.push(prefix);
                return i;
            }
        }
    }
}

/// A path as segments below the crate, or `None` for another crate's.
fn absolute(
    path: &[String],
    here: &[String],
    modules: &BTreeMap<Vec<String>, String>,
) -> Option<Vec<String>> {
    let mut base = here.to_vec();
    let mut rest = path;
    match path.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        first => {
            let mut child = here.to_vec();
            child.push(first.to_string());
            if !modules.contains_key(&child) {
                return None;
            }
        }
    }
    let rest = rest.iter().filter(|s| *s != "self").cloned();
    Some(base.into_iter().chain(rest).collect())
}

/// Every cycle of the graph, one for each strongly connected set of files.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        // A shortest way back to `start`, by breadth-first search.
        let mut back: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = None;
        while let Some(at) = queue.pop_front() {
            for next in graph.get(at).into_iter().flatten() {
                if next == start {
                    found = Some(at);
                    break;
                }
                if !back.contains_key(next) {
                    back.insert(next, at);
                    queue.push_back(next);
                }
            }
            if found.is_some() {
                break;
            }
        }
        if let Some(mut at) = found {
            let mut way = Vec::new();
            while at != start {
                way.push(at.clone());
                at = back[at];
            }
            way.reverse();
            let cycle: Vec<String> = std::iter::once(start.clone())
                .chain(way)
                .chain(std::iter::once(start.clone()))
                .collect();
            seen.extend(cycle.iter().cloned());
            out.push(cycle);
        }
    }
    out
}
