#![no_main]
//! `SessionId::parse` accepts only the alphabet within the bounds, and what it accepts
//! round-trips; the storage key's hex form round-trips too.

use libfuzzer_sys::fuzz_target;
use session_core::{MAX_ID_LEN, MIN_ID_LEN, SessionId, StorageKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SessionId::parse(text) {
        assert!((MIN_ID_LEN..=MAX_ID_LEN).contains(&text.len()));
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(id.as_str(), text);
        let key = id.storage_key();
        assert_eq!(StorageKey::parse_hex(&key.to_hex()), Some(key));
    }
    let _ = StorageKey::parse_hex(text);
});
