#![no_main]
//! The record envelope decoder never panics on any bytes, and whatever it accepts survives
//! an encode/decode round trip unchanged.

use libfuzzer_sys::fuzz_target;
use session_core::{StorageKey, decode_envelope, encode_envelope, peek_envelope_expiry, peek_envelope_owner};

fuzz_target!(|data: &[u8]| {
    let key = StorageKey::from_bytes([7; 32]);
    let _ = peek_envelope_expiry(data);
    let _ = peek_envelope_owner(data);
    if let Ok(record) = decode_envelope(key, data) {
        let again = decode_envelope(key, &encode_envelope(&record)).expect("our own encoding decodes");
        assert_eq!(again, record);
    }
});
