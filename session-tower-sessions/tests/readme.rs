//! README.md's "Already on tower-sessions?" example is the crate doc's compiled one.

use session_testing::{doc_block, readme_block};

#[test]
fn the_readme_example_is_the_compiled_crate_doc_example() {
    let dir = env!("CARGO_MANIFEST_DIR");
    assert_eq!(
        readme_block(dir, "## Already on tower-sessions?"),
        doc_block(dir)
    );
}
