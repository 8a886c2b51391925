//! The library's module graph, read from the source: every `crate::module` path in each
//! file of src/ (the binary in src/bin/ excluded) is an edge from the file's top-level
//! module. The graph must have no cycle, and the layers must run one way:
//! format <- model <- forward <- session <- faces (generate, chat, ffi). `cargo tree` sees
//! only crates, so this test reads the `use` lines itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every .rs file under `dir`, except the binary's.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != "bin" {
                sources(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without line comments (doc links are not dependencies).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules named after each `crate::` in `code`, including every name in a
/// `crate::{a, b::c}` group.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // One level of braces: `a, b::{c, d}, e` gives a, b, e.
            let mut depth = 0;
            let mut start = 0;
            for (j, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Module -> the modules it uses, for the library's top-level modules.
fn module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    // The top-level modules: src/NAME.rs and src/NAME/.
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            first.trim_end_matches(".rs").to_string()
        })
        .filter(|m| m != "lib")
        .collect();
    let mut g = Graph::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let m = first.trim_end_matches(".rs").to_string();
        if m == "lib" {
            continue;
        }
        let refs = crate_refs(&code(&std::fs::read_to_string(f).unwrap()));
        let e = g.entry(m.clone()).or_default();
        e.extend(refs.into_iter().filter(|r| r != &m && modules.contains(r)));
    }
    g
}

/// A cycle of `g`, if it has one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        n: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|p| p == n).unwrap();
                let mut c = path[at..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut state, &mut Vec::new()))
}

/// Every module `from` reaches.
fn reach(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(n) = todo.pop() {
        for m in g.get(&n).into_iter().flatten() {
            if seen.insert(m.clone()) {
                todo.push(m.clone());
            }
        }
    }
    seen
}

#[test]
fn the_reader_sees_use_lines_groups_and_inline_paths() {
    let src = "use crate::{Error, Result};\nuse crate::forward::{self, Exec};\n\
               use crate::{model::Model, sampler::{Sampler, SamplerParams}, session};\n\
               // crate::ffi is only mentioned\nlet x = crate::tokenizer::Utf8Stream::new();";
    let refs = crate_refs(&code(src));
    let want: BTreeSet<String> = [
        "Error",
        "Result",
        "forward",
        "model",
        "sampler",
        "session",
        "tokenizer",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(refs, want);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&g), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert!(find_cycle(&g).is_some());
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = module_graph();
    for m in [
        "model",
        "forward",
        "session",
        "generate",
        "ffi",
        "chat",
        "tokenizer",
    ] {
        assert!(g.contains_key(m), "module {m} not found in {g:?}");
    }
    assert_eq!(find_cycle(&g), None, "module graph: {g:#?}");
}

#[test]
fn layers_depend_only_on_lower_layers() {
    let g = module_graph();
    let above = |m: &str, others: &[&str]| {
        let r = reach(&g, m);
        for o in others {
            assert!(!r.contains(*o), "{m} reaches {o}: {r:?}");
        }
    };
    let faces = ["generate", "ffi", "chat"];
    above(
        "model",
        &["forward", "session", "sampler", "generate", "ffi", "chat"],
    );
    above(
        "tokenizer",
        &["model", "forward", "session", "generate", "ffi", "chat"],
    );
    above(
        "forward",
        &["session", "sampler", "generate", "ffi", "chat"],
    );
    above("session", &faces);
    above(
        "sampler",
        &["model", "forward", "session", "generate", "ffi", "chat"],
    );
    above("generate", &["ffi", "chat"]);
    above("chat", &["ffi", "generate", "session", "forward"]);
}

#[test]
fn clap_stays_in_the_binary() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for f in files {
        let text = code(&std::fs::read_to_string(&f).unwrap());
        assert!(!text.contains("clap"), "{} uses clap", f.display());
    }
}
