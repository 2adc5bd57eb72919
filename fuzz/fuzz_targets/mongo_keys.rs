#![no_main]
//! Mongo key escaping: every name escapes to a field with no `.`, `$` or NUL that unescapes
//! back; and unescaping is the exact inverse where it accepts a field.

use libfuzzer_sys::fuzz_target;
use session_mongo::{escape_key, unescape_key};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let field = escape_key(text);
    assert!(!field.is_empty() && !field.contains(['.', '$', '\0']));
    assert_eq!(unescape_key(&field).as_deref(), Some(text));
    if let Some(name) = unescape_key(text) {
        assert_eq!(escape_key(&name), text);
    }
});
