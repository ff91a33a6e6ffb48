//! The top-level modules of src/ depend on each other without a cycle.
//!
//! A cycle between modules (the outbox calling into the actors that call the outbox; metrics
//! reading the store that writes metrics) is how a shared context grows back: each side can
//! reach everything the other can. This test reads every file of the library, collects the
//! top-level modules each one names through `crate::` paths (in `use` lines and inline paths
//! alike, grouped `crate::{a, b}` included, and `super::` paths that climb to the crate root),
//! and fails on any cycle, naming the files behind each edge of it.
//!
//! Left out, on purpose:
//! - comments and string literals (a doc link to `crate::supervisor` is not a dependency);
//! - code under `#[cfg(test)]` (a `mod … { }` block or a `mod …;` file): tests may drive the
//!   whole broker from inside a module (`actors::tests` starts one), which is not the library's
//!   shape;
//! - `crate::name!` macros (`#[macro_export]` puts them at the root, not in a module);
//! - src/main.rs, a separate crate that uses the library by name.
//!
//! An edge may be exempted only in [`EXEMPT`], with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges (from, to) left out of the check, with why. Empty: no cycle is tolerated today.
const EXEMPT: &[(&str, &str, &str)] = &[];

#[test]
fn top_level_modules_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    let cycles = cycles(&graph);
    let shown: Vec<String> = cycles
        .iter()
        .map(|scc| {
            let mut lines = vec![format!("cycle among {scc:?}:")];
            for from in scc {
                for (to, files) in &graph[from] {
                    if scc.contains(to) {
                        lines.push(format!("  {from} -> {to} (in {files:?})"));
                    }
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "the top-level modules of src/ depend on each other in a cycle:\n{}",
        shown.join("\n")
    );
}

/// The checker itself finds what it should and nothing else.
#[test]
fn the_checker_reads_paths_not_comments_or_strings() {
    let text = r##"
        //! See `crate::outbox` for the sends.
        use crate::{actors::{Ctx, ConversationMsg}, metrics as m};
        use crate::store::Store;
        /* crate::http is not used */
        fn f() { let s = "crate::supervisor"; let r = r#"crate::app"#; let c = '{'; crate::log_limit::x(); crate::jemalloc_conf!(); super::clock::now(); }
        #[cfg(test)]
        mod tests { use crate::app::Broker; }
    "##;
    let (names, test_mods) = referenced(text, 1);
    assert_eq!(
        names,
        BTreeSet::from(["actors", "clock", "log_limit", "metrics", "store"].map(String::from))
    );
    assert!(test_mods.is_empty());
    let (_, test_mods) = referenced("#[cfg(test)]\nmod tests;\npub mod real;", 1);
    assert_eq!(test_mods, vec!["tests".to_string()]);

    let g: Graph = BTreeMap::from([
        ("a".into(), BTreeMap::from([("b".into(), BTreeSet::new())])),
        ("b".into(), BTreeMap::from([("c".into(), BTreeSet::new())])),
        ("c".into(), BTreeMap::from([("a".into(), BTreeSet::new())])),
        ("d".into(), BTreeMap::from([("a".into(), BTreeSet::new())])),
    ]);
    assert_eq!(
        cycles(&g),
        vec![BTreeSet::from(["a", "b", "c"].map(String::from))]
    );
}

/// Module → the modules it names → the files that name them.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn module_graph(src: &Path) -> Graph {
    let lib = read(&src.join("lib.rs"));
    let (modules, reexports) = root_items(&lib);
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    files.sort();
    // Files of modules compiled only for tests, and everything under them.
    let mut test_only: Vec<PathBuf> = Vec::new();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    for file in &files {
        let rel = file.strip_prefix(src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["lib.rs"] || parts == ["main.rs"] {
            continue;
        }
        if test_only.iter().any(|t| file.starts_with(t)) {
            continue;
        }
        let top = parts[0].trim_end_matches(".rs").to_string();
        assert!(
            modules.contains(&top),
            "{} is not under a module declared in src/lib.rs",
            rel.display()
        );
        // The file's module path length: src/a.rs and src/a/mod.rs are 1, src/a/b.rs is 2.
        let depth = parts.len() - usize::from(parts.last().is_some_and(|l| l == "mod.rs"));
        let (names, test_mods) = referenced(&read(file), depth);
        let dir = if parts.last().is_some_and(|l| l == "mod.rs") {
            file.parent().expect("parent").to_path_buf()
        } else {
            file.with_extension("")
        };
        for m in test_mods {
            test_only.push(dir.join(format!("{m}.rs")));
            test_only.push(dir.join(m));
        }
        for name in names {
            let target = if modules.contains(&name) {
                name
            } else if let Some(m) = reexports.get(&name) {
                m.clone()
            } else {
                panic!(
                    "{} names crate::{name}, neither a module nor a re-export of src/lib.rs",
                    rel.display()
                );
            };
            if target == top || EXEMPT.iter().any(|(f, t, _)| *f == top && *t == target) {
                continue;
            }
            graph
                .entry(top.clone())
                .or_default()
                .entry(target)
                .or_default()
                .insert(rel.display().to_string());
        }
    }
    graph
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The modules src/lib.rs declares, and the names it re-exports from them (`pub use m::Name;`).
fn root_items(lib: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let code = strip(lib);
    let mut modules = BTreeSet::new();
    let mut reexports = BTreeMap::new();
    for stmt in code.split(';').map(str::trim) {
        let words: Vec<&str> = stmt.split_whitespace().collect();
        match words.as_slice() {
            [.., "mod", name] => {
                modules.insert(name.to_string());
            }
            ["pub", "use", path] => {
                let segs: Vec<&str> = path.split("::").collect();
                if let (Some(first), Some(last)) = (segs.first(), segs.last()) {
                    reexports.insert(last.to_string(), first.to_string());
                }
            }
            _ => {}
        }
    }
    (modules, reexports)
}

/// The crate-root names a file's code refers to (file at module depth `depth`), and the modules
/// it declares as `#[cfg(test)] mod name;` (files of their own, left out by the caller).
fn referenced(text: &str, depth: usize) -> (BTreeSet<String>, Vec<String>) {
    let code: Vec<char> = strip(text).chars().collect();
    let (code, test_mods) = without_test_modules(&code);
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < code.len() {
        let at_path_start = i == 0 || !(is_ident(code[i - 1]) || matches!(code[i - 1], '$' | ':'));
        if !at_path_start {
            i += 1;
            continue;
        }
        let root = if starts(&code, i, "crate::") {
            Some(i + "crate::".len())
        } else {
            // `super::` repeated as often as the file is deep names the root.
            let mut j = i;
            let mut ups = 0;
            while starts(&code, j, "super::") {
                j += "super::".len();
                ups += 1;
            }
            (ups > 0 && ups >= depth).then_some(j)
        };
        let Some(mut j) = root else {
            i += 1;
            continue;
        };
        if code.get(j) == Some(&'{') {
            // `crate::{a::b, c}`: the first identifier of each item at the group's top level.
            let mut level = 0;
            let mut expect_item = true;
            while j < code.len() {
                match code[j] {
                    '{' => {
                        level += 1;
                        if level == 1 {
                            expect_item = true;
                        }
                    }
                    '}' => {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                    }
                    ',' if level == 1 => expect_item = true,
                    c if level == 1 && expect_item && is_ident(c) => {
                        let (name, end) = ident(&code, j);
                        if name != "self" {
                            names.insert(name);
                        }
                        expect_item = false;
                        j = end;
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let (name, end) = ident(&code, j);
            let is_macro = code.get(end) == Some(&'!');
            if !name.is_empty() && !is_macro {
                names.insert(name);
            }
            j = end;
        }
        i = j.max(i + 1);
    }
    (names, test_mods)
}

/// Drops `#[cfg(test)] mod name { … }` blocks; returns what is left and the names of
/// `#[cfg(test)] mod name;` declarations.
fn without_test_modules(code: &[char]) -> (Vec<char>, Vec<String>) {
    let mut out = Vec::with_capacity(code.len());
    let mut files = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if starts(code, i, "#[cfg(test)]") {
            let mut j = skip_ws(code, i + "#[cfg(test)]".len());
            if starts(code, j, "pub ") {
                j = skip_ws(code, j + 4);
            }
            if starts(code, j, "mod ") {
                let (name, end) = ident(code, skip_ws(code, j + 4));
                let k = skip_ws(code, end);
                if code.get(k) == Some(&';') {
                    files.push(name);
                    i = k + 1;
                    continue;
                }
                if code.get(k) == Some(&'{') {
                    let mut level = 0;
                    let mut m = k;
                    while m < code.len() {
                        match code[m] {
                            '{' => level += 1,
                            '}' => {
                                level -= 1;
                                if level == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        m += 1;
                    }
                    i = m + 1;
                    continue;
                }
            }
        }
        out.push(code[i]);
        i += 1;
    }
    (out, files)
}

/// The code without comments, with every string and char literal emptied (so braces and paths
/// inside them are not read as code).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if starts(&c, i, "//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if starts(&c, i, "/*") {
            let mut level = 0;
            while i < c.len() {
                if starts(&c, i, "/*") {
                    level += 1;
                    i += 2;
                } else if starts(&c, i, "*/") {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        let after_ident = i > 0 && is_ident(c[i - 1]);
        // Raw strings: r"…", r#"…"#, br"…".
        if !after_ident && (c[i] == 'r' || starts(&c, i, "br")) {
            let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut k = j + 1;
                while k < c.len() && !starts(&c, k, &close) {
                    k += 1;
                }
                out.push_str("\"\"");
                i = k + close.chars().count();
                continue;
            }
        }
        if c[i] == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = k + 1;
            continue;
        }
        if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'); otherwise a lifetime, kept as is.
            if c.get(i + 1) == Some(&'\\') {
                let mut k = i + 2;
                while k < c.len() && c[k] != '\'' {
                    k += 1;
                }
                out.push_str("' '");
                i = k + 1;
                continue;
            }
            if c.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn starts(code: &[char], at: usize, s: &str) -> bool {
    (at..)
        .zip(s.chars())
        .all(|(k, ch)| code.get(k) == Some(&ch))
}

fn skip_ws(code: &[char], mut at: usize) -> usize {
    while code.get(at).is_some_and(|c| c.is_whitespace()) {
        at += 1;
    }
    at
}

fn ident(code: &[char], at: usize) -> (String, usize) {
    let mut end = at;
    while end < code.len() && is_ident(code[end]) {
        end += 1;
    }
    (code[at..end].iter().collect(), end)
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.found.push(scc);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}
