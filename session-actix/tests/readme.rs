//! README.md's actix-web example is the crate doc's server example (which is compiled by
//! `cargo test --doc`): the README cannot drift from code that builds.

use session_testing::{doc_block, readme_block};

#[test]
fn the_readme_example_is_the_compiled_crate_doc_example() {
    let dir = env!("CARGO_MANIFEST_DIR");
    assert_eq!(readme_block(dir, "## In an actix-web app"), doc_block(dir));
}
