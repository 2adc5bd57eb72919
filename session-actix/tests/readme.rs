//! README.md's actix-web example is the crate doc's server example (which is compiled by
//! `cargo test --doc`): the README cannot drift from code that builds.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the first ```` ```rust ```` block after `heading` in README.md.
fn readme_block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("../README.md")).unwrap();
    let after = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
        .1;
    let body = after.split_once("```rust\n").unwrap().1;
    let body = body.split_once("```").unwrap().0;
    body.lines().map(str::to_owned).collect()
}

/// The lines of the crate doc's `no_run` block.
fn doc_block() -> Vec<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc.iter().position(|l| *l == "```no_run").unwrap() + 1;
    let len = doc[start..].iter().position(|l| *l == "```").unwrap();
    doc[start..start + len]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

#[test]
fn the_readme_example_is_the_compiled_crate_doc_example() {
    assert_eq!(readme_block("## In an actix-web app"), doc_block());
}
