#![no_main]
//! The record envelope and body decoders never panic on any bytes, whatever they accept
//! survives an encode/decode round trip unchanged, and patching a body equals decoding it,
//! applying the changes (counter increments included) and encoding it again (for bodies and
//! for whole envelopes).

use libfuzzer_sys::fuzz_target;
use session_core::{Changes, Codec, StorageKey, Timestamp, body, envelope};

fuzz_target!(|data: &[u8]| {
    let key = StorageKey::from_bytes([7; 32]);
    let _ = envelope::peek_expiry(data);
    let _ = envelope::peek_owner(data);
    let patch_changes = {
        let mut c = Changes::new();
        c.set("k", data.iter().take(3).copied().collect());
        c
    };
    let patch_at = Timestamp::from_unix_millis(42);
    let patched = envelope::patch(data, &patch_changes, patch_at);
    if let Ok(mut record) = envelope::decode(key, data) {
        let again =
            envelope::decode(key, &envelope::encode(&record)).expect("our own encoding decodes");
        assert_eq!(again, record);
        patch_changes.apply_to_record(&mut record);
        record.expires_at = patch_at;
        assert_eq!(
            patched.expect("an envelope that decodes patches"),
            envelope::encode(&record)
        );
    } else {
        assert!(
            patched.is_err(),
            "an envelope that does not decode does not patch"
        );
    }

    let _ = body::peek_expiry(data);
    let _ = body::peek_owner(data);
    // Changes drawn from the input's first bytes, applied to the body that follows.
    let (pick, rest) = data.split_at(data.len().min(2));
    let mut changes = Changes::new();
    match pick.first().copied().unwrap_or(0) % 5 {
        0 => changes.set("k", pick.to_vec()),
        1 => changes.remove("k"),
        2 => changes.clear(),
        3 => changes.increment(
            "k",
            i64::from(pick.last().copied().unwrap_or(0)) - 128,
            Codec::Bincode,
        ),
        _ => changes.set_owner(Some("u")),
    }
    let at = Timestamp::from_unix_millis(i64::from(pick.last().copied().unwrap_or(0)));
    let mut patched = Vec::new();
    let result = body::patch(rest, &changes, at, &mut patched);
    match body::decode(key, rest) {
        Ok(mut record) => {
            result.expect("a body that decodes patches");
            changes.apply_to_record(&mut record);
            record.expires_at = at;
            let mut want = Vec::new();
            body::encode_into(&record, &mut want);
            assert_eq!(patched, want);
        }
        Err(_) => assert!(
            result.is_err(),
            "a body that does not decode does not patch"
        ),
    }
});
