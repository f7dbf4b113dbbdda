//! The master's layering, checked by reading the sources (the way
//! rust-analyzer keeps its tidy checks in `cargo test`):
//!
//! - `ops` knows nothing of HTTP;
//! - only `ops` asks the dispatcher to queue or cancel builds and the
//!   publisher to change repositories; no HTTP module sends a task anything;
//! - the leaves (`events`, `caller`, and the stores and config they name)
//!   import nothing of the master, and `shared` imports only leaves;
//! - nothing outside `http` imports `http`, except `lib.rs`, which mounts it;
//! - no crate of the workspace has an import circle between its files, and
//!   no file holds more than 800 lines before its tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file: its module path (`http::web::build`) and its text.
struct Source {
    module: String,
    path: PathBuf,
    text: String,
}

fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(src).expect("under src").with_extension("");
                let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push(Source { module: parts.join("::"), path, text });
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

/// The text before the file's unit tests.
fn before_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// The code before the file's unit tests, without comments (a doc link
/// names a module without depending on it).
fn code(text: &str) -> String {
    before_tests(text).lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn master() -> Vec<Source> {
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Whether `code` names `word` (not as the tail of a longer name:
/// `SseEvent::` is not `Event::`).
fn mentions(code: &str, word: &str) -> bool {
    code.match_indices(word)
        .any(|(i, _)| !code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

fn in_module(s: &Source, prefix: &str) -> bool {
    s.module == prefix || s.module.starts_with(&format!("{prefix}::"))
}

/// The modules of `modules` a path written in `from` names: `crate::a::b::C`
/// names the longest module prefix that is a file; `super::x` is resolved
/// against `from`'s parent.
fn targets(from: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut paths = Vec::new();
    for (i, _) in text.match_indices("crate::").chain(text.match_indices("super::")) {
        // Skip identifiers that merely end in these words (e.g. `kiln_crate::`).
        if text[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i..];
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
        let head = rest[..end].trim_end_matches(':').to_string();
        if rest[end..].starts_with('{') {
            // `crate::a::{b, c::D}`: each branch.
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for branch in rest[end + 1..close].split(',') {
                let b = branch.split_whitespace().next().unwrap_or("").trim_end_matches(':');
                paths.push(format!("{head}::{b}"));
            }
        } else {
            paths.push(head);
        }
    }
    let parent: Vec<&str> = from.split("::").filter(|p| !p.is_empty()).collect();
    for p in paths {
        let mut segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let mut base: Vec<&str> = Vec::new();
        match segs.first() {
            Some(&"crate") => {
                segs.remove(0);
            }
            Some(&"super") => {
                base = parent.clone();
                while segs.first() == Some(&"super") {
                    segs.remove(0);
                    base.pop();
                }
            }
            _ => continue,
        }
        let mut full: Vec<&str> = base;
        full.extend(segs);
        for n in (1..=full.len()).rev() {
            let m = full[..n].join("::");
            if modules.contains(&m) {
                if m != from {
                    out.insert(m);
                }
                break;
            }
        }
    }
    out
}

/// The module graph of a crate (an edge: a file naming another's items).
fn graph(files: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|s| s.module.clone()).collect();
    files.iter().map(|s| (s.module.clone(), targets(&s.module, &code(&s.text), &modules))).collect()
}

/// Every cycle of the graph, as the modules in it (strongly connected
/// components of more than one module).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability is enough for graphs this small.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    for k in g.keys() {
        let comp: Vec<String> =
            g.keys().filter(|m| *m != k && reachable[k].contains(*m) && reachable[m].contains(k)).cloned().collect();
        if !comp.is_empty() {
            let mut c = comp;
            c.push(k.clone());
            c.sort();
            if !found.contains(&c) {
                found.push(c);
            }
        }
    }
    found
}

#[test]
fn ops_knows_nothing_of_http() {
    for s in master().iter().filter(|s| in_module(s, "ops")) {
        for word in ["axum", "maud", "StatusCode", "crate::http", "hyper"] {
            assert!(!mentions(&code(&s.text), word), "{} names {word}: ops must not know HTTP", s.path.display());
        }
    }
}

#[test]
fn only_ops_asks_the_dispatcher_and_the_publisher() {
    // What asking looks like: building the request, not matching on it.
    let asks = ["Event::Queued(", "Event::Cancel {", "PublishRequest::Op("];
    for s in master() {
        let handles = in_module(&s, "dispatch") || in_module(&s, "publish") || s.module == "events";
        if in_module(&s, "ops") || handles {
            continue;
        }
        for a in asks {
            assert!(!mentions(&code(&s.text), a), "{} sends {a}: only ops may", s.path.display());
        }
    }
    for s in master().iter().filter(|s| in_module(s, "http")) {
        for word in ["Event::", "PublishRequest", "publisher.send(", "shared.send(", "s.send("] {
            assert!(!mentions(&code(&s.text), word), "{} sends a task request ({word}); call ops", s.path.display());
        }
    }
}

#[test]
fn leaves_import_nothing_of_the_master_and_shared_only_leaves() {
    let files = master();
    let g = graph(&files);
    let leaves =
        ["events", "caller", "artifacts", "logs", "farm", "clock", "source", "uploads", "metrics", "service_manager"];
    for leaf in leaves {
        let edges = &g[leaf];
        assert!(edges.is_empty(), "{leaf} is a leaf but imports {edges:?}");
    }
    let shared: Vec<&String> = g["shared"].iter().filter(|m| !leaves.contains(&m.as_str())).collect();
    assert!(shared.is_empty(), "shared imports more than leaves: {shared:?}");
}

#[test]
fn nothing_outside_http_imports_http_but_lib() {
    let files = master();
    for (from, to) in graph(&files) {
        if from.is_empty() || from == "http" || from.starts_with("http::") {
            continue;
        }
        let into_http: Vec<&String> = to.iter().filter(|m| *m == "http" || m.starts_with("http::")).collect();
        assert!(into_http.is_empty(), "{from} imports {into_http:?}");
    }
}

#[test]
fn no_crate_has_an_import_circle_or_a_file_over_800_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut problems = Vec::new();
    for e in std::fs::read_dir(&crates).expect("crates") {
        let src = e.expect("crate").path().join("src");
        if !src.is_dir() {
            continue;
        }
        let files = sources(&src);
        for c in cycles(&graph(&files)) {
            problems.push(format!("{}: import circle {}", src.display(), c.join(" <-> ")));
        }
        for s in &files {
            let n = before_tests(&s.text).lines().count();
            if n > 800 {
                problems.push(format!("{}: {n} lines before its tests (at most 800)", s.path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_see_what_they_check() {
    // The graph reader itself: a circle and a leaf edge are found.
    let mk =
        |module: &str, text: &str| Source { module: module.into(), path: PathBuf::from(module), text: text.into() };
    let files = vec![
        mk("", "mod a; mod b;"),
        mk("a", "use crate::b::Thing;"),
        mk("b", "fn f() { super::a::g() }"),
        mk("c::d", "use crate::{a, b::X};"),
    ];
    let g = graph(&files);
    assert_eq!(g["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(g["b"], BTreeSet::from(["a".to_string()]));
    assert_eq!(g["c::d"], BTreeSet::from(["a".to_string(), "b".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
    assert!(mentions("s.send(Event::Queued(rows))", "Event::Queued("));
    assert!(!mentions("SseEvent::default()", "Event::"));
}
