//! The module graph of `src/` obeys the layers the README's "Layout" section lists: a module
//! imports (`crate::x`, `super::x` reaching another top-level module) only from its own layer or
//! those below it, and no import cycle joins top-level modules, within a layer or across.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One import that breaks the rules, or a cycle.
type Problems = Vec<String>;

#[test]
fn src_imports_only_downward_and_has_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let layers = layers_from_readme(&readme);
    assert!(layers.len() >= 5, "the README lists the layers: {layers:?}");
    let problems = check(&sources(&root.join("src")), &layers);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_catches_an_upward_import_and_a_cycle() {
    let layers = vec![
        vec!["routes".to_owned()],
        vec!["store".to_owned(), "events".to_owned()],
        vec!["config".to_owned()],
    ];
    let tree = |files: &[(&str, &str)]| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect()
    };
    let clean = tree(&[
        (
            "routes/mod.rs",
            "use crate::store::Store;\nuse crate::config::Config;",
        ),
        (
            "store/mod.rs",
            "use crate::config::Config; // crate::routes in a comment",
        ),
        (
            "config.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::routes::x;\n}\n",
        ),
        ("events.rs", "use super::store::Store;"),
    ]);
    assert_eq!(check(&clean, &layers), Problems::new());

    let upward = tree(&[
        ("routes/mod.rs", ""),
        ("config.rs", "pub fn f() { crate::routes::g() }"),
    ]);
    let problems = check(&upward, &layers);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("config -> routes"), "{problems:?}");

    let cycle = tree(&[
        ("store/mod.rs", "use crate::events::Events;"),
        ("events.rs", "use crate::store::Store;"),
    ]);
    let problems = check(&cycle, &layers);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cycle") && p.contains("events")),
        "{problems:?}"
    );
}

/// The layers, top first, from the README: the fenced block after the line that starts with
/// "Layers, top first". A line is one layer; modules on one line share it.
fn layers_from_readme(readme: &str) -> Vec<Vec<String>> {
    let mut lines = readme
        .lines()
        .skip_while(|line| !line.starts_with("Layers, top first"))
        .skip_while(|line| !line.starts_with("```"))
        .skip(1);
    let mut layers = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with("```") {
            break;
        }
        let names: Vec<String> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|word| !word.is_empty())
            .map(str::to_owned)
            .collect();
        if !names.is_empty() {
            layers.push(names);
        }
    }
    layers
}

/// Every `.rs` file under `src`, as (path relative to `src`, text).
fn sources(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out
}

/// The file's top-level module (`routes/orders/mod.rs` → `routes`), and its own module path.
fn module_of(path: &str) -> (String, Vec<String>) {
    let mut parts: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (parts[0].clone(), parts)
}

/// The text without comments and without `#[cfg(test)]` modules, which may import anything.
fn code_only(text: &str) -> String {
    let without_comments: String = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = without_comments.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level modules each module imports: `crate::x` and `super::...::x` paths.
fn edges(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let tops: BTreeSet<String> = files
        .iter()
        .map(|(path, _)| module_of(path).0)
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let (from, here) = module_of(path);
        if from == "lib" {
            continue;
        }
        let code = code_only(text);
        let mut add = |to: &str| {
            if to != from && tops.contains(to) {
                edges.entry(from.clone()).or_default().insert(to.to_owned());
            }
        };
        for (at, _) in code.match_indices("crate::") {
            add(identifier_at(&code[at + "crate::".len()..]));
        }
        for (at, _) in code.match_indices("super::") {
            // Count the run of `super::` starting here; skip matches inside a longer run.
            if code[..at].ends_with("super::") {
                continue;
            }
            let mut ups = 0;
            let mut rest = &code[at..];
            while let Some(next) = rest.strip_prefix("super::") {
                ups += 1;
                rest = next;
            }
            let base = here.len().saturating_sub(ups);
            let target = if base == 0 {
                identifier_at(rest).to_owned()
            } else {
                here[0].clone()
            };
            add(&target);
        }
    }
    edges
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Upward imports against `layers` (top first), modules missing from the layers, and cycles.
fn check(files: &[(String, String)], layers: &[Vec<String>]) -> Problems {
    let layer_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let graph = edges(files);
    let mut problems = Problems::new();
    let modules: BTreeSet<String> = files
        .iter()
        .map(|(path, _)| module_of(path).0)
        .filter(|m| m != "lib")
        .collect();
    for module in &modules {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!("module {module} is on no layer"));
        }
    }
    for (from, targets) in &graph {
        for to in targets {
            if let (Some(a), Some(b)) = (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
                && a > b
            {
                problems.push(format!("upward import: {from} -> {to}"));
            }
        }
    }
    // A cycle: a module that can reach itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(next) = stack.pop() {
            if next == start {
                problems.push(format!("import cycle through {start}"));
                break;
            }
            if seen.insert(next.clone())
                && let Some(more) = graph.get(next)
            {
                stack.extend(more.iter());
            }
        }
    }
    problems
}
