//! The record envelope: one versioned, checksummed blob per record, for stores that keep a
//! session as one value (memcached, files). `MAGIC`, `VERSION`, then the record's
//! [`body`](crate::body), then a CRC-32 of everything before it, so a foreign or damaged
//! blob is recognised as such ([`FormatError`]).

use crate::id::StorageKey;
use crate::record::{Changes, OwnerChange, Record};
use crate::time::Timestamp;

/// The four bytes every envelope starts with.
pub const MAGIC: [u8; 4] = *b"RSSN";
/// The envelope format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Magic and version: what the envelope adds before the body.
const FRAME_HEAD: usize = 4 + 1;
/// The CRC-32 the envelope adds after the body.
const FRAME_TAIL: usize = 4;

/// Why bytes are not a record envelope (or a record [`body`](crate::body)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not a session record (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("session record format version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u8),
    /// The checksum does not match: the bytes were damaged.
    #[error("session record checksum mismatch")]
    Checksum,
    /// The bytes end early or a field is malformed.
    #[error("session record is malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes a record (all but its key) as one blob: magic, version, the record's
/// [`body`](crate::body), CRC-32.
///
/// Layout v1: `RSSN`, `1`, created_at (i64 LE ms), expires_at (i64 LE ms), owner
/// (LEB128 length + 1, 0 for none, then UTF-8), entry count (LEB128), entries sorted by key
/// (key length, key, value length, value; LEB128 lengths), CRC-32 (IEEE, LE) of everything
/// before it.
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{envelope, Record, Timestamp, UuidV4Generator, IdGenerator};
///
/// let record = Record {
///     key: UuidV4Generator.generate().storage_key(),
///     data: BTreeMap::from([("user".to_owned(), b"alice".to_vec())]),
///     created_at: Timestamp::from_unix_millis(1),
///     expires_at: Timestamp::from_unix_millis(2),
///     owner: None,
/// };
/// let blob = envelope::encode(&record);
/// assert_eq!(envelope::decode(record.key, &blob).unwrap(), record);
/// assert!(envelope::decode(record.key, &blob[..blob.len() - 1]).is_err());
/// ```
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(len(record));
    encode_into(record, &mut out);
    out
}

/// Exactly how many bytes [`encode`] writes for `record`, for sizing a buffer (an
/// allocation of the right size is never shrunk or grown).
pub fn len(record: &Record) -> usize {
    FRAME_HEAD + crate::body::len(record) + FRAME_TAIL
}

/// [`encode`], appending to `out` (for stores that frame the envelope). The
/// checksum covers only the appended envelope.
pub fn encode_into(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    crate::body::encode_into(record, out);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes a blob written by [`encode`] as the record filed under `key`.
///
/// # Errors
/// [`FormatError`] for foreign bytes, another format version, a checksum mismatch or a
/// truncated or malformed blob. It never panics and never allocates more than the blob's size.
pub fn decode(key: StorageKey, bytes: &[u8]) -> Result<Record, FormatError> {
    crate::body::decode(key, checked_body(bytes)?)
}

/// The record's [`Body`](crate::body::Body), checked as [`decode`] checks the envelope but
/// with its values left encoded: what a store hands the manager from
/// [`SessionStore::load_body`](crate::SessionStore::load_body), so a request decodes only
/// the values it reads.
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{envelope, Record, Timestamp};
/// # use session_core::{IdGenerator, UuidV4Generator};
///
/// let record = Record {
///     key: UuidV4Generator.generate().storage_key(),
///     data: BTreeMap::from([("user".to_owned(), b"alice".to_vec())]),
///     created_at: Timestamp::from_unix_millis(1),
///     expires_at: Timestamp::from_unix_millis(2),
///     owner: None,
/// };
/// let blob = envelope::encode(&record);
/// let body = envelope::decode_body(&blob).unwrap();
/// assert_eq!(body.get("user"), Some(&b"alice"[..]));
/// assert_eq!(body.into_record(record.key), record);
/// let mut damaged = blob.clone();
/// damaged[12] ^= 1;
/// assert!(envelope::decode_body(&damaged).is_err());
/// ```
///
/// # Errors
/// As [`decode`].
pub fn decode_body(bytes: &[u8]) -> Result<crate::body::Body, FormatError> {
    crate::body::Body::new(checked_body(bytes)?.to_vec())
}

/// The envelope of the record in `old` with `changes` applied and its expiry moved to
/// `expires_at`, written without decoding the record: equal to decoding `old`, applying the
/// changes, setting the expiry and encoding again, at a fraction of the cost (what a store
/// that keeps envelopes does on `update` and `touch`).
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{envelope, Changes, Record, Timestamp};
/// # use session_core::{IdGenerator, UuidV4Generator};
///
/// let record = Record {
///     key: UuidV4Generator.generate().storage_key(),
///     data: BTreeMap::from([("a".to_owned(), vec![1])]),
///     created_at: Timestamp::from_unix_millis(1),
///     expires_at: Timestamp::from_unix_millis(2),
///     owner: None,
/// };
/// let mut changes = Changes::new();
/// changes.set("b", vec![2]);
/// let patched = envelope::patch(&envelope::encode(&record), &changes, Timestamp::from_unix_millis(9)).unwrap();
/// let record = envelope::decode(record.key, &patched).unwrap();
/// assert_eq!(record.data.len(), 2);
/// assert_eq!(record.expires_at, Timestamp::from_unix_millis(9));
/// ```
///
/// # Errors
/// As [`decode`], for the same inputs.
pub fn patch(old: &[u8], changes: &Changes, expires_at: Timestamp) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    patch_into(old, changes, expires_at, &mut out)?;
    Ok(out)
}

/// [`patch`], appending to `out` (for stores that frame the envelope: reserve
/// [`patch_len_bound`] plus the frame first and nothing is reallocated). The checksum covers
/// only the appended envelope.
///
/// # Errors
/// As [`patch`]; `out` is then left as it was.
pub fn patch_into(
    old: &[u8],
    changes: &Changes,
    expires_at: Timestamp,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let body = checked_body(old)?;
    out.reserve(patch_len_bound(old, changes));
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    if let Err(e) = crate::body::patch(body, changes, expires_at, out) {
        out.truncate(start);
        return Err(e);
    }
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// At least the length of the envelope [`patch`] makes of `old` with `changes`: the old
/// envelope plus every value set or counter incremented, with its key and length prefixes,
/// and the new owner.
pub fn patch_len_bound(old: &[u8], changes: &Changes) -> usize {
    let added: usize = changes
        .written()
        .iter()
        .map(|(k, v)| k.len() + v.len() + 20)
        .sum::<usize>()
        + changes
            .incremented()
            .keys()
            .map(|k| k.len() + crate::Increment::MAX_ENCODED_LEN + 20)
            .sum::<usize>();
    let owner = match changes.owner() {
        OwnerChange::Keep => 0,
        OwnerChange::Set(owner) => owner.len() + 10,
        OwnerChange::Remove => 10,
    };
    old.len() + added + owner
}

/// The body inside an envelope whose frame and checksum are right.
fn checked_body(bytes: &[u8]) -> Result<&[u8], FormatError> {
    check_frame(bytes)?;
    if bytes.len() < FRAME_HEAD + FRAME_TAIL {
        return Err(FormatError::Malformed(
            "shorter than its header and checksum",
        ));
    }
    let (framed, crc) = bytes.split_at(bytes.len() - FRAME_TAIL);
    let mut want = [0u8; 4];
    want.copy_from_slice(crc);
    if crc32(framed) != u32::from_le_bytes(want) {
        return Err(FormatError::Checksum);
    }
    Ok(&framed[FRAME_HEAD..])
}

/// Reads only the expiry of an envelope, checking magic and version but not the checksum:
/// what a sweeper needs to decide without decoding the whole record.
///
/// # Errors
/// [`FormatError`] for foreign bytes, another version or a blob shorter than the header.
pub fn peek_expiry(bytes: &[u8]) -> Result<Timestamp, FormatError> {
    check_frame(bytes)?;
    crate::body::peek_expiry(&bytes[FRAME_HEAD..])
}

/// Reads only the owner of an envelope (magic and version checked, not the checksum): what
/// a scan of the per-user index needs without decoding whole records.
///
/// # Errors
/// [`FormatError`] for foreign bytes, another version or a malformed owner field.
pub fn peek_owner(bytes: &[u8]) -> Result<Option<&str>, FormatError> {
    check_frame(bytes)?;
    crate::body::peek_owner(&bytes[FRAME_HEAD..])
}

fn check_frame(bytes: &[u8]) -> Result<(), FormatError> {
    if bytes.len() < FRAME_HEAD || bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(FormatError::UnsupportedVersion(bytes[4]));
    }
    Ok(())
}

/// CRC-32 (IEEE, the polynomial `0xEDB88320` reflected; `crc32fast` picks the fastest
/// implementation for the CPU).
fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::body::{put_varint, varint_len};
    use crate::id::{IdGenerator, UuidV4Generator};

    fn sample() -> Record {
        Record {
            key: UuidV4Generator.generate().storage_key(),
            data: BTreeMap::from([
                (String::new(), vec![]),
                ("a.b$c\0\n ü".to_owned(), vec![0, 1, 2, 255]),
                ("big".to_owned(), vec![7; 70_000]),
            ]),
            created_at: Timestamp::from_unix_millis(1_700_000_000_000),
            expires_at: Timestamp::from_unix_millis(1_700_000_360_000),
            owner: Some("user-42".to_owned()),
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value_and_the_bitwise_definition() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let bitwise = |bytes: &[u8]| {
            let mut c = !0u32;
            for &b in bytes {
                c ^= u32::from(b);
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xEDB8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        };
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..data.len() {
            for start in 0..3.min(len + 1) {
                assert_eq!(
                    crc32(&data[start..len]),
                    bitwise(&data[start..len]),
                    "{start}..{len}"
                );
            }
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let blob = encode(&r);
        assert_eq!(decode(r.key, &blob), Ok(r.clone()));
        let mut framed = b"prefix".to_vec();
        encode_into(&r, &mut framed);
        assert_eq!(&framed[6..], blob.as_slice());
        assert_eq!(len(&r), blob.len());
        for n in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut v = Vec::new();
            put_varint(&mut v, n);
            assert_eq!(varint_len(n), v.len(), "{n}");
        }
        assert_eq!(peek_expiry(&blob), Ok(r.expires_at));
        assert_eq!(peek_owner(&blob), Ok(Some("user-42")));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let mut r = sample();
        r.data.remove("big");
        let blob = encode(&r);
        for len in 0..blob.len() {
            assert!(decode(r.key, &blob[..len]).is_err(), "truncated at {len}");
        }
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut bad = blob.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(r.key, &bad).is_err(), "flip at {i}:{bit}");
            }
        }
    }

    #[test]
    fn foreign_and_future_blobs_are_named() {
        let r = sample();
        let mut blob = encode(&r);
        assert_eq!(decode(r.key, b"{\"json\":1}"), Err(FormatError::BadMagic));
        blob[4] = 2;
        assert_eq!(
            decode(r.key, &blob),
            Err(FormatError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn huge_claimed_lengths_do_not_allocate() {
        // A well-formed header and checksum around a body that claims 2^63 entries.
        let mut body = Vec::new();
        body.extend_from_slice(&MAGIC);
        body.push(VERSION);
        body.extend_from_slice(&[0; 16]);
        put_varint(&mut body, 0);
        put_varint(&mut body, 1 << 63);
        put_varint(&mut body, u64::MAX);
        let crc = crc32(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let key = UuidV4Generator.generate().storage_key();
        assert!(matches!(decode(key, &body), Err(FormatError::Malformed(_))));
    }

    #[test]
    fn changes_compose() {
        let mut c = Changes::new();
        c.set("a", vec![1]);
        c.remove("a");
        assert!(c.written().is_empty() && c.removed().contains("a"));
        let mut later = Changes::new();
        later.set("a", vec![2]);
        c.extend(later);
        assert_eq!(c.written().get("a"), Some(&vec![2]));
        assert!(!c.removed().contains("a"));
        let mut cleared = Changes::new();
        cleared.clear();
        cleared.set("z", vec![9]);
        c.extend(cleared.clone());
        assert_eq!(c, cleared);
        let mut data = BTreeMap::from([("x".to_owned(), vec![0])]);
        c.apply_to(&mut data);
        assert_eq!(data, BTreeMap::from([("z".to_owned(), vec![9])]));
    }

    #[test]
    fn patching_an_envelope_equals_decoding_applying_and_encoding() {
        let record = sample();
        let blob = encode(&record);
        let at = Timestamp::from_unix_millis(1_700_000_999_000);
        let mut cases = Vec::new();
        cases.push(Changes::new()); // a touch
        let mut c = Changes::new();
        c.set("a.b$c\0\n ü", vec![9; 300]); // replaced, longer
        c.set("zz", vec![]); // added last
        c.remove("big");
        cases.push(c);
        let mut c = Changes::new();
        c.clear();
        c.set("only", vec![1]);
        c.set_owner(None);
        cases.push(c);
        let mut c = Changes::new();
        c.set_owner(Some("someone-else"));
        c.set("", vec![5; 200]);
        cases.push(c);
        for changes in cases {
            let patched = patch(&blob, &changes, at).unwrap();
            let mut want = record.clone();
            changes.apply_to_record(&mut want);
            want.expires_at = at;
            assert_eq!(patched, encode(&want), "{changes:?}");
        }
    }

    #[test]
    fn a_damaged_envelope_is_not_patched() {
        let blob = encode(&sample());
        let at = Timestamp::from_unix_millis(1);
        let mut flipped = blob.clone();
        flipped[20] ^= 1;
        assert_eq!(
            patch(&flipped, &Changes::new(), at),
            Err(FormatError::Checksum)
        );
        assert_eq!(
            patch(b"nope", &Changes::new(), at),
            Err(FormatError::BadMagic)
        );
        assert!(patch(&blob[..blob.len() - 1], &Changes::new(), at).is_err());
    }
}
