//! What README.md says of the store contract matches the trait.

use std::collections::BTreeSet;
use std::path::Path;

/// The methods of `pub trait SessionStore` in store.rs.
fn trait_methods() -> BTreeSet<String> {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store.rs"))
        .unwrap();
    let body = &src[src.find("pub trait SessionStore").expect("the trait")..];
    let body = &body[..body.find("\n}\n").expect("the trait's end")];
    body.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("async fn ")
                .or_else(|| l.strip_prefix("fn "))?;
            Some(l[..l.find(['(', '<'])?].to_owned())
        })
        .collect()
}

#[test]
fn the_readme_lists_every_required_store_method() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("every method is")
        .expect("the Your own store section");
    let list = &readme[start..];
    let list = &list[list.find('—').unwrap() + '—'.len_utf8()..];
    let list = &list[..list.find('—').unwrap()];
    let listed: BTreeSet<String> = list
        .split(',')
        .map(|m| m.trim().trim_matches('`').to_owned())
        .collect();
    let methods = trait_methods();
    assert!(methods.len() >= 11, "parsed {methods:?}");
    assert_eq!(listed, methods, "README.md's list of SessionStore methods");
}
