//! README.md's code blocks held to the crate docs that compile them.

use std::path::Path;

/// The lines of the first ```` ```rust ```` block after `heading` in the workspace's
/// README.md (`manifest_dir` is a member crate's directory).
///
/// # Panics
/// When README.md has no such heading or block.
pub fn readme_block(manifest_dir: &str, heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(manifest_dir).join("../README.md")).unwrap();
    let after = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
        .1;
    let body = after.split_once("```rust\n").unwrap().1;
    let body = body.split_once("```").unwrap().0;
    body.lines().map(str::to_owned).collect()
}

/// The visible lines (those `rustdoc` shows: hidden `# ` lines left out) of the first
/// `no_run` block of the crate doc in `manifest_dir/src/lib.rs`.
///
/// # Panics
/// When the crate doc has no `no_run` block.
pub fn doc_block(manifest_dir: &str) -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(manifest_dir).join("src/lib.rs")).unwrap();
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc.iter().position(|l| *l == "```no_run").unwrap() + 1;
    let len = doc[start..].iter().position(|l| *l == "```").unwrap();
    doc[start..start + len]
        .iter()
        .filter(|l| !l.starts_with("# ") && **l != "#")
        .map(|l| (*l).to_owned())
        .collect()
}
