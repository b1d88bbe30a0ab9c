//! Keeps the tree's layering: a module may use only the modules before it in the data path
//! (`ORDER`, as lib.rs lists it), never one after it or beside it. Reads every `crate::` path
//! in every source file, so a backward import fails here, naming the file and the line.

use std::path::{Path, PathBuf};

/// Top-level modules by rank, in the order data flows. Modules of one rank may not use each
/// other.
const ORDER: &[&[&str]] = &[
    &["label", "memory", "proto"],
    &["protocol", "listen", "map"],
    &["values"],
    &["flushed"],
    &["counters"],
    &["aggregate"],
    &["merge"],
    &["telemetry"],
    &["sink"],
    &["config"],
    &["shard"],
    &["operator"],
    &["run"],
];

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|r| r.contains(&module))
}

/// The top-level module a source file belongs to (`src/aggregate/ingest.rs` is `aggregate`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module named right after `crate::` (or `$crate::`) in code, with its line number:
/// `crate::a::b` names `a`, and `crate::{a::{x, y}, b}` (over several lines, too) names `a` and
/// `b`. Comments are skipped.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let line_at = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let start = at + "crate::".len();
        if !code[start..].starts_with('{') {
            let name = ident(start);
            if !name.is_empty() {
                found.push((line_at(start), name));
            }
            continue;
        }
        // A group: the items at its own depth.
        let (mut depth, mut item_start) = (0usize, true);
        for (i, c) in code[start + 1..].char_indices() {
            let pos = start + 1 + i;
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                    item_start = false;
                    found.push((line_at(pos), ident(pos)));
                }
                _ => {}
            }
        }
    }
    found
}

/// Each import that points at a module after (or beside) its own, as `file:line: a -> b`.
fn backward_imports(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        if module == "lib" || module == "main" || module == "layout_tests" {
            continue;
        }
        let Some(own) = rank(&module) else {
            bad.push(format!(
                "{}: module `{module}` has no place in ORDER",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, target) in crate_paths(&text) {
            if target == module {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own => {}
                _ => bad.push(format!(
                    "{}:{line}: `{module}` uses `{target}`, which does not stand before it",
                    file.display()
                )),
            }
        }
    }
    bad
}

#[test]
fn imports_run_one_way_in_the_order_data_flows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = backward_imports(&src);
    assert!(bad.is_empty(), "backward imports:\n{}", bad.join("\n"));
}

#[test]
fn a_backward_import_is_caught_with_its_file_and_line() {
    let dir = std::env::temp_dir().join(format!("corestatsd-layout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("protocol")).unwrap();
    std::fs::write(
        dir.join("protocol/mod.rs"),
        "//! uses crate::sink only in a comment\nuse crate::label::Label;\nuse crate::{values::{a, b},\n    sink::Sink};\n",
    )
    .unwrap();
    std::fs::write(dir.join("values.rs"), "use crate::protocol::Metric;\n").unwrap();
    std::fs::write(dir.join("extra.rs"), "").unwrap();
    let bad = backward_imports(&dir);
    let want = [
        format!(
            "{}: module `extra` has no place in ORDER",
            dir.join("extra.rs").display()
        ),
        format!(
            "{}:3: `protocol` uses `values`, which does not stand before it",
            dir.join("protocol/mod.rs").display()
        ),
        format!(
            "{}:4: `protocol` uses `sink`, which does not stand before it",
            dir.join("protocol/mod.rs").display()
        ),
    ];
    assert_eq!(bad, want);
}
