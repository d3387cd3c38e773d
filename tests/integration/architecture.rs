//! The dependency rule of ARCHITECTURE.md, checked on the source: each
//! module of `src/` imports only modules below it, so no import cycle can
//! form; only the store speaks SQL.

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom to top. A module may import only modules listed before it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "source", "duration", "clock", "metrics", "payload", "event", "diff", "mirror", "hint",
            "adaptive",
        ],
    ),
    ("config", &["config"]),
    ("vendor client", &["tencent", "logging"]),
    ("store", &["store"]),
    ("simulator", &["sim"]),
    ("engines", &["sync", "delivery", "propagate"]),
    ("daemon", &["http", "callback", "daemon"]),
    ("commands", &["demo", "cli"]),
];

fn order() -> Vec<&'static str> {
    LAYERS.iter().flat_map(|(_, m)| m.iter().copied()).collect()
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn files(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        let module = top.map(str::to_string).unwrap_or(name.clone());
        if p.is_dir() {
            files(&p, Some(&module), out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            out.push((module, p.display().to_string(), text));
        }
    }
}

/// The top-level modules a file names as `crate::m` (in paths and in
/// `use crate::{a, b::c}` groups).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn sources() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        None,
        &mut out,
    );
    out.retain(|(m, _, _)| m != "lib" && m != "main");
    out
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let order = order();
    let mut wrong = Vec::new();
    for (module, path, text) in sources() {
        let Some(at) = order.iter().position(|m| *m == module) else {
            wrong.push(format!(
                "{path}: module `{module}` has no layer in tests/integration/architecture.rs"
            ));
            continue;
        };
        for import in imports(&text) {
            if import == module || import == "self" {
                continue;
            }
            match order.iter().position(|m| *m == import) {
                Some(i) if i < at => {}
                Some(_) => wrong.push(format!(
                    "{path}: `{module}` imports `{import}`, which is above it"
                )),
                None => wrong.push(format!("{path}: imports unknown module `{import}`")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the dependency rule is broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn only_the_store_speaks_sql() {
    let outside: Vec<String> = sources()
        .into_iter()
        .filter(|(m, _, text)| m != "store" && text.contains("rusqlite"))
        .map(|(_, path, _)| path)
        .collect();
    assert!(
        outside.is_empty(),
        "rusqlite outside src/store/: {outside:?}"
    );
}

#[test]
fn the_import_scanner_sees_paths_and_groups() {
    let found = imports("use crate::a::B;\nuse crate::{c, d::E};\nlet x = crate::f::g();");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "c", "d", "f"]);
}
