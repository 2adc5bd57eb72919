//! README.md's "Already on tower-sessions?" example is the crate doc's compiled one.

use std::path::Path;

#[test]
fn the_readme_example_is_the_compiled_crate_doc_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let section = readme
        .split_once("## Already on tower-sessions?")
        .unwrap()
        .1;
    let block = section
        .split_once("```rust\n")
        .unwrap()
        .1
        .split_once("```")
        .unwrap()
        .0;
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc.iter().position(|l| *l == "```no_run").unwrap() + 1;
    let len = doc[start..].iter().position(|l| *l == "```").unwrap();
    let visible: Vec<&str> = doc[start..start + len]
        .iter()
        .copied()
        .filter(|l| !l.starts_with("# ") && *l != "#")
        .collect();
    assert_eq!(block.lines().collect::<Vec<_>>(), visible);
}
