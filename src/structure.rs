//! Checks on the shape of the code itself, so that it cannot drift back:
//! no file of `src/` reaches itself through what it uses, and no function
//! is longer than [`LONGEST_FN`] lines without a comment above it that says
//! why.
//!
//! "Uses" means every `crate::…` and `super::…` path in a file (in `use`
//! lines or in code) and every child module it names (`fast::respond`),
//! resolved to the file that defines it; doc comments and `#[cfg(test)]`
//! modules do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Longest function allowed without a reason written beside it.
const LONGEST_FN: usize = 100;
/// The words that mark the reason for a long function, in the comment
/// lines right above it.
const REASON: &str = "Over 100 lines";

/// Every `.rs` file under `src/`, by path relative to it (`dns/fast.rs`).
fn sources() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).unwrap();
                let name = relative.to_string_lossy().replace('\\', "/");
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

/// The module path of a file: `dns/fast.rs` → `[dns, fast]`,
/// `dns/mod.rs` → `[dns]`, `lib.rs` → `[]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file that defines the deepest module of `path` that has one.
fn file_of(files: &BTreeMap<String, String>, path: &[String]) -> Option<String> {
    (0..=path.len()).rev().find_map(|n| {
        let prefix = path[..n].join("/");
        let candidates = if n == 0 {
            vec!["lib.rs".to_string()]
        } else {
            vec![format!("{prefix}.rs"), format!("{prefix}/mod.rs")]
        };
        candidates.into_iter().find(|c| files.contains_key(c))
    })
}

/// The code of a file without comments and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.contains("mod ") && next.ends_with('{'))
        {
            break; // test modules come last
        }
        let without_comment = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// The identifiers of a path starting at `at` in `code` (`a::b::C`).
fn path_at(code: &str, at: usize) -> Vec<String> {
    code[at..]
        .split("::")
        .map(|segment| {
            segment
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .take_while(|segment| !segment.is_empty())
        .collect()
}

/// The files each file uses.
fn uses(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        if file == "main.rs" {
            continue; // the binary, not part of the library's graph
        }
        let code = code_of(text);
        let module = module_of(file);
        let parent = &module[..module.len().saturating_sub(1)];
        let mut used = BTreeSet::new();
        let mut add = |path: Vec<String>| {
            if let Some(target) = file_of(files, &path)
                && target != *file
            {
                used.insert(target);
            }
        };
        for (at, _) in code.match_indices("crate::") {
            add(path_at(&code, at + "crate::".len()));
        }
        for (at, _) in code.match_indices("super::") {
            let mut path = parent.to_vec();
            path.extend(path_at(&code, at + "super::".len()));
            add(path);
        }
        // `use super::{a, b::C}` and `use crate::{a, b}`: each item.
        for (start, base) in [("use super::{", parent.to_vec()), ("use crate::{", vec![])] {
            for (at, _) in code.match_indices(start) {
                let list = &code[at + start.len()..];
                let list = &list[..list.find("};").unwrap_or(0)];
                for item in list.split(',') {
                    let mut path = base.clone();
                    path.extend(path_at(item.trim(), 0));
                    add(path);
                }
            }
        }
        // Child modules named bare: `mod fast;` then `fast::respond`.
        for line in code.lines() {
            let line = line.trim();
            let declared = line
                .strip_prefix("pub(crate) mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .or_else(|| line.strip_prefix("mod "))
                .and_then(|rest| rest.strip_suffix(';'));
            if let Some(child) = declared {
                let named = code.match_indices(&format!("{child}::")).any(|(at, _)| {
                    !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if named {
                    let mut path = module.clone();
                    path.push(child.to_string());
                    add(path);
                }
            }
        }
        graph.insert(file.clone(), used);
    }
    graph
}

#[test]
fn no_file_reaches_itself_through_what_it_uses() {
    let graph = uses(&sources());
    let mut in_cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(file) = stack.pop() {
            if file == start {
                in_cycles.push(format!("{start} uses {:?}", graph[start]));
                break;
            }
            if seen.insert(file) {
                stack.extend(graph.get(file).into_iter().flatten());
            }
        }
    }
    assert!(
        in_cycles.is_empty(),
        "import cycles:\n{}",
        in_cycles.join("\n")
    );
}

#[test]
fn no_function_is_over_100_lines_without_a_reason() {
    let mut long = Vec::new();
    for (file, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "async fn ",
                "pub async fn ",
            ]
            .iter()
            .any(|start| trimmed.starts_with(start));
            if !is_fn || trimmed.ends_with(';') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let closing = format!("{}}}", " ".repeat(indent));
            let Some(length) = lines[at..].iter().position(|l| l.starts_with(&closing)) else {
                continue;
            };
            let reason = lines[..at]
                .iter()
                .rev()
                .take_while(|l| {
                    l.trim_start().starts_with("///") || l.trim_start().starts_with("#[")
                })
                .any(|l| l.contains(REASON));
            if length + 1 > LONGEST_FN && !reason {
                long.push(format!("{file}:{} is {} lines", at + 1, length + 1));
            }
        }
    }
    assert!(
        long.is_empty(),
        "long functions without a reason:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_a_cycle_and_a_child_module() {
    let mut files = BTreeMap::new();
    files.insert("lib.rs".to_string(), "mod a;\nmod b;\n".to_string());
    files.insert("a.rs".to_string(), "use crate::b::X;\n".to_string());
    files.insert(
        "b/mod.rs".to_string(),
        "mod c;\npub fn f() { c::g() }\n/// crate::a in a comment\n".to_string(),
    );
    files.insert(
        "b/c.rs".to_string(),
        "use super::{f, super::a};\n".to_string(),
    );
    let graph = uses(&files);
    assert_eq!(graph["a.rs"], BTreeSet::from(["b/mod.rs".to_string()]));
    assert_eq!(graph["b/mod.rs"], BTreeSet::from(["b/c.rs".to_string()]));
    assert!(
        graph["b/c.rs"].contains("b/mod.rs"),
        "{:?}",
        graph["b/c.rs"]
    );
}
