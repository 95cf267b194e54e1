//! The crate's structure: calls and data flow one way between the
//! top-level modules of `src/` (issue "postie 6": no module imports a
//! module that imports it back, directly or through others).
//!
//! The graph is read from the source, not from the compiler: every
//! `crate::NAME` path in a production file of module `M` (comments, doc
//! comments, string literals and `#[cfg(test)]` items left out) is an edge
//! `M -> NAME`. A folder module (`src/NAME/`) counts as one module; the
//! crate root (`lib.rs`) and the binary (`main.rs`) are no modules of
//! their own. Tests may reach upwards for fixtures; production code may
//! not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges that may close a cycle, each with who removes it: none. The test
/// fails on any cycle not listed, and on an entry here that no longer
/// exists.
const ALLOWED: &[(&str, &str, &str)] = &[];

/// The top-level module a file under `src/` belongs to, or `None` for the
/// crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy());
    let first = parts.next()?.into_owned();
    if parts.next().is_some() {
        return Some(first);
    }
    let stem = first.strip_suffix(".rs")?;
    (stem != "lib" && stem != "main").then(|| stem.to_owned())
}

/// `text` with comments, string and character literals blanked out (their
/// bytes replaced by spaces, line ends kept).
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            // Block comments nest.
            let (mut depth, mut j) = (0usize, 0);
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' || rest.starts_with(b"b\"") || rest.starts_with(b"c\"") {
            let start = if rest[0] == b'"' { 1 } else { 2 };
            let mut j = start;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                // The escaped character, then up to the closing quote.
                let tail = rest.get(3..).unwrap_or_default();
                tail.iter().position(|&c| c == b'\'').map(|p| p + 4)
            } else {
                let ch = (1..=4).find_map(|n| {
                    let s = std::str::from_utf8(rest.get(1..1 + n)?).ok()?;
                    s.chars().next()
                });
                ch.map(char::len_utf8)
                    .filter(|&n| rest.get(1 + n) == Some(&b'\''))
                    .map(|n| n + 2)
            };
            let len = len.unwrap_or(1);
            blank(&mut out, &rest[..len]);
            if len == 1 {
                out.pop();
                out.push(b'\'');
            }
            i += len;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The length of a raw string literal (`r"…"`, `br#"…"#`, …) at the start
/// of `s`, if there is one.
fn raw_string(s: &[u8]) -> Option<usize> {
    let body = s.strip_prefix(b"br").or_else(|| s.strip_prefix(b"r"))?;
    let hashes = body.iter().take_while(|&&c| c == b'#').count();
    if body.get(hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let open = s.len() - body.len() + hashes + 1;
    let end = s[open..].windows(close.len()).position(|w| w == close)?;
    Some(open + end + close.len())
}

/// `code` (already [stripped](strip)) without its `#[cfg(test)]` items,
/// and the names of the test-only modules it declares in other files
/// (`#[cfg(test)] mod NAME;`).
fn without_tests(code: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(code.len());
    let mut files = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let b = item.as_bytes();
        let brace = item.find('{');
        let semi = item.find(';');
        let end = match (brace, semi) {
            (open, Some(s)) if open.is_none_or(|open| s < open) => {
                let decl = item["#[cfg(test)]".len()..s].trim();
                if let Some(name) = decl.strip_prefix("mod ") {
                    files.push(name.trim().to_owned());
                }
                s + 1
            }
            (Some(open), _) => {
                let mut depth = 0usize;
                let mut j = open;
                loop {
                    match b.get(j) {
                        Some(b'{') => depth += 1,
                        Some(b'}') => {
                            depth -= 1;
                            if depth == 0 {
                                break j + 1;
                            }
                        }
                        Some(_) => {}
                        None => break j,
                    }
                    j += 1;
                }
            }
            (None, _) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, files)
}

/// The top-level modules `code` names as `crate::NAME` or inside
/// `crate::{NAME, NAME::Item, …}`.
fn references(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `$crate::`, `foocrate::`
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // Top-level names of the group: at brace depth 0, after `{` or `,`.
            let mut depth = 0usize;
            let mut expect = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect = true,
                    c if c.is_whitespace() => {}
                    _ if expect && depth == 0 => {
                        let name = ident(&group[k..]);
                        if !name.is_empty() {
                            found.insert(name);
                        }
                        expect = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module -> the modules it imports, from the production code of `src/`.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut code = BTreeMap::new();
    let mut test_files = BTreeSet::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (prod, test_mods) = without_tests(&strip(&text));
        // Where `mod NAME;` declared in this file is found.
        let stem = path.file_stem().unwrap().to_string_lossy();
        let dir = if stem == "mod" || stem == "lib" || stem == "main" {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for m in test_mods {
            test_files.insert(dir.join(format!("{m}.rs")));
            test_files.insert(dir.join(&m).join("mod.rs"));
        }
        code.insert(path.clone(), prod);
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, prod) in &code {
        if test_files.contains(path) {
            continue;
        }
        let Some(from) = module_of(path.strip_prefix(src).unwrap()) else {
            continue;
        };
        let to = graph.entry(from.clone()).or_default();
        to.extend(references(prod).into_iter().filter(|m| *m != from));
    }
    graph
}

/// A cycle through `graph`, as the modules on it, first repeated at the
/// end; `None` if the graph is acyclic.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| *n == node).unwrap();
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn show(graph: &BTreeMap<String, BTreeSet<String>>) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            format!("  {m} -> {}\n", to.join(", "))
        })
        .collect()
}

/// No import cycle between the top-level modules of `src/`, except the
/// [allowed](ALLOWED) edges; and each allowed edge still exists.
#[test]
fn no_import_cycle_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = import_graph(&src);
    println!("imports:\n{}", show(&graph));
    for (from, to, who) in ALLOWED {
        let removed = graph.get_mut(*from).is_some_and(|t| t.remove(*to));
        assert!(
            removed,
            "{from} no longer imports {to}: remove it from ALLOWED ({who})"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle: {}\n(every import: crate::NAME in production code)\n{}",
            cycle.join(" -> "),
            show(&graph)
        );
    }
}

/// The reader itself: comments, strings and test items do not count, a
/// group `crate::{a, b::C}` names both, and a cycle is found and shown.
#[test]
fn the_import_reader_sees_what_it_must() {
    let code = r##"
//! See [`crate::doc_only`].
use crate::{alpha, beta::{Item, Other}, gamma::Thing};
use crate::delta::X;
/* crate::in_block /* nested */ crate::still_in_block */
fn f<'a>(s: &'a str) -> char { let _ = "crate::in_string"; let _ = r#"crate::raw"#; '"' }
fn g() { crate::epsilon::call(); let _ = '\''; }
#[cfg(test)]
mod tests { use crate::tested_only; }
#[cfg(test)]
mod fixtures;
"##;
    let (prod, test_mods) = without_tests(&strip(code));
    let found: Vec<String> = references(&prod).into_iter().collect();
    assert_eq!(found, ["alpha", "beta", "delta", "epsilon", "gamma"]);
    assert_eq!(test_mods, ["fixtures"]);

    let edges = |list: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in list {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "b")])),
        Some(vec!["b".to_string(), "c".to_string(), "b".to_string()])
    );
    assert_eq!(
        module_of(Path::new("smtp/session.rs")).as_deref(),
        Some("smtp")
    );
    assert_eq!(module_of(Path::new("users.rs")).as_deref(), Some("users"));
    assert_eq!(module_of(Path::new("lib.rs")), None);
}
