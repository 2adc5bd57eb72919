//! What a store keeps ([`Record`]), what a request changed ([`Changes`]), and the versioned
//! binary envelope for stores that keep a record as one blob.

use std::collections::{BTreeMap, BTreeSet};

use crate::{StorageKey, Timestamp};

/// One session as a store keeps it. Values are already encoded by the manager's codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The hashed id the record is filed under.
    pub key: StorageKey,
    /// Session key → encoded value.
    pub data: BTreeMap<String, Vec<u8>>,
    /// When the session was first saved.
    pub created_at: Timestamp,
    /// When it expires; a store never returns it from `load` at or after this time.
    pub expires_at: Timestamp,
    /// The user the session belongs to, for the per-user index.
    pub owner: Option<String>,
}

impl Record {
    /// Whether the record has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// Bytes of key names and values.
    pub fn data_size(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// What one request did to a session's data: applied by a store key by key.
///
/// `cleared` is applied first, then `removed`, then `set`; the methods keep the three
/// consistent (a key is never both set and removed).
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::Changes;
///
/// let mut data = BTreeMap::from([("a".to_owned(), vec![1]), ("b".to_owned(), vec![2])]);
/// let mut changes = Changes::new();
/// changes.remove("a");
/// changes.set("c", vec![3]);
/// changes.apply_to(&mut data);
/// assert_eq!(data, BTreeMap::from([("b".to_owned(), vec![2]), ("c".to_owned(), vec![3])]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Changes {
    /// Every key was removed before `removed` and `set` apply.
    pub cleared: bool,
    /// Keys written, with their encoded values.
    pub set: BTreeMap<String, Vec<u8>>,
    /// Keys removed.
    pub removed: BTreeSet<String>,
    /// A new owner (`Some(None)` removes it); `None` leaves the owner as it is.
    pub owner: Option<Option<String>>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.set.is_empty() && self.removed.is_empty() && self.owner.is_none()
    }

    /// Records a write of `key`.
    pub fn set(&mut self, key: impl Into<String>, value: Vec<u8>) {
        let key = key.into();
        self.removed.remove(&key);
        self.set.insert(key, value);
    }

    /// Records a removal of `key`.
    pub fn remove(&mut self, key: &str) {
        self.set.remove(key);
        if !self.cleared {
            self.removed.insert(key.to_owned());
        }
    }

    /// Records the removal of every key.
    pub fn clear(&mut self) {
        self.cleared = true;
        self.set.clear();
        self.removed.clear();
    }

    /// Adds `later` on top of these changes, as if both happened in order.
    pub fn extend(&mut self, later: Changes) {
        let owner = later.owner.clone().or_else(|| self.owner.take());
        if later.cleared {
            *self = later;
            self.owner = owner;
            return;
        }
        self.owner = owner;
        for key in later.removed {
            self.remove(&key);
        }
        for (key, value) in later.set {
            self.set(key, value);
        }
    }

    /// Applies the changes to a record: its data (see [`Changes::apply_to`]) and its owner.
    pub fn apply_to_record(&self, record: &mut Record) {
        self.apply_to(&mut record.data);
        if let Some(owner) = &self.owner {
            record.owner.clone_from(owner);
        }
    }

    /// Applies the changes to a record's data.
    pub fn apply_to(&self, data: &mut BTreeMap<String, Vec<u8>>) {
        if self.cleared {
            data.clear();
        }
        for key in &self.removed {
            data.remove(key);
        }
        for (key, value) in &self.set {
            data.insert(key.clone(), value.clone());
        }
    }
}

/// The four bytes every envelope starts with.
pub const ENVELOPE_MAGIC: [u8; 4] = *b"RSSN";
/// The envelope format version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Magic and version: what the envelope adds before the body.
const FRAME_HEAD: usize = 4 + 1;
/// The CRC-32 the envelope adds after the body.
const FRAME_TAIL: usize = 4;

/// Why bytes are not a record envelope (or a record [`body`](crate::body)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes do not start with [`ENVELOPE_MAGIC`].
    #[error("not a session record (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error(
        "session record format version {0} is not supported (this build reads {ENVELOPE_VERSION})"
    )]
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
/// use session_core::{decode_envelope, encode_envelope, Record, Timestamp, UuidV4Generator, IdGenerator};
///
/// let record = Record {
///     key: UuidV4Generator.generate().storage_key(),
///     data: BTreeMap::from([("user".to_owned(), b"alice".to_vec())]),
///     created_at: Timestamp::from_unix_millis(1),
///     expires_at: Timestamp::from_unix_millis(2),
///     owner: None,
/// };
/// let blob = encode_envelope(&record);
/// assert_eq!(decode_envelope(record.key, &blob).unwrap(), record);
/// assert!(decode_envelope(record.key, &blob[..blob.len() - 1]).is_err());
/// ```
pub fn encode_envelope(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(envelope_len(record));
    encode_envelope_into(record, &mut out);
    out
}

/// Exactly how many bytes [`encode_envelope`] writes for `record`, for sizing a buffer (an
/// allocation of the right size is never shrunk or grown).
pub fn envelope_len(record: &Record) -> usize {
    FRAME_HEAD + crate::body::len(record) + FRAME_TAIL
}

/// [`encode_envelope`], appending to `out` (for stores that frame the envelope). The
/// checksum covers only the appended envelope.
pub fn encode_envelope_into(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&ENVELOPE_MAGIC);
    out.push(ENVELOPE_VERSION);
    crate::body::encode_into(record, out);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes a blob written by [`encode_envelope`] as the record filed under `key`.
///
/// # Errors
/// [`EnvelopeError`] for foreign bytes, another format version, a checksum mismatch or a
/// truncated or malformed blob. It never panics and never allocates more than the blob's size.
pub fn decode_envelope(key: StorageKey, bytes: &[u8]) -> Result<Record, EnvelopeError> {
    crate::body::decode(key, checked_body(bytes)?)
}

/// The envelope of the record in `old` with `changes` applied and its expiry moved to
/// `expires_at`, written without decoding the record: equal to decoding `old`, applying the
/// changes, setting the expiry and encoding again, at a fraction of the cost (what a store
/// that keeps envelopes does on `update` and `touch`).
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{decode_envelope, encode_envelope, patch_envelope, Changes, Record, Timestamp};
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
/// let patched = patch_envelope(&encode_envelope(&record), &changes, Timestamp::from_unix_millis(9)).unwrap();
/// let record = decode_envelope(record.key, &patched).unwrap();
/// assert_eq!(record.data.len(), 2);
/// assert_eq!(record.expires_at, Timestamp::from_unix_millis(9));
/// ```
///
/// # Errors
/// As [`decode_envelope`], for the same inputs.
pub fn patch_envelope(
    old: &[u8],
    changes: &Changes,
    expires_at: Timestamp,
) -> Result<Vec<u8>, EnvelopeError> {
    let body = checked_body(old)?;
    // Room for the old envelope plus every value set (with its key and length prefixes):
    // never less than the result, so `patch` and the checksum never grow the buffer.
    let added: usize = changes
        .set
        .iter()
        .map(|(k, v)| k.len() + v.len() + 20)
        .sum();
    let owner = changes
        .owner
        .as_ref()
        .map_or(0, |o| o.as_ref().map_or(0, String::len) + 10);
    let mut out = Vec::with_capacity(old.len() + added + owner);
    out.extend_from_slice(&ENVELOPE_MAGIC);
    out.push(ENVELOPE_VERSION);
    crate::body::patch(body, changes, expires_at, &mut out)?;
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The body inside an envelope whose frame and checksum are right.
fn checked_body(bytes: &[u8]) -> Result<&[u8], EnvelopeError> {
    check_frame(bytes)?;
    if bytes.len() < FRAME_HEAD + FRAME_TAIL {
        return Err(EnvelopeError::Malformed(
            "shorter than its header and checksum",
        ));
    }
    let (framed, crc) = bytes.split_at(bytes.len() - FRAME_TAIL);
    let mut want = [0u8; 4];
    want.copy_from_slice(crc);
    if crc32(framed) != u32::from_le_bytes(want) {
        return Err(EnvelopeError::Checksum);
    }
    Ok(&framed[FRAME_HEAD..])
}

/// Reads only the expiry of an envelope, checking magic and version but not the checksum:
/// what a sweeper needs to decide without decoding the whole record.
///
/// # Errors
/// [`EnvelopeError`] for foreign bytes, another version or a blob shorter than the header.
pub fn peek_envelope_expiry(bytes: &[u8]) -> Result<Timestamp, EnvelopeError> {
    check_frame(bytes)?;
    crate::body::peek_expiry(&bytes[FRAME_HEAD..])
}

/// Reads only the owner of an envelope (magic and version checked, not the checksum): what
/// a scan of the per-user index needs without decoding whole records.
///
/// # Errors
/// [`EnvelopeError`] for foreign bytes, another version or a malformed owner field.
pub fn peek_envelope_owner(bytes: &[u8]) -> Result<Option<&str>, EnvelopeError> {
    check_frame(bytes)?;
    crate::body::peek_owner(&bytes[FRAME_HEAD..])
}

fn check_frame(bytes: &[u8]) -> Result<(), EnvelopeError> {
    if bytes.len() < FRAME_HEAD || bytes[..4] != ENVELOPE_MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if bytes[4] != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(bytes[4]));
    }
    Ok(())
}

/// CRC-32 (IEEE) tables for slicing by 8: table 0 is the classic byte table, table `k`
/// advances a byte through `k` more zero bytes.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        tables[0][i] = c;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

fn crc32(bytes: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut lo = [0u8; 4];
        lo.copy_from_slice(&chunk[..4]);
        let lo = u32::from_le_bytes(lo) ^ c;
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(chunk[4])]
            ^ t[2][usize::from(chunk[5])]
            ^ t[1][usize::from(chunk[6])]
            ^ t[0][usize::from(chunk[7])];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{put_varint, varint_len};
    use crate::{IdGenerator, UuidV4Generator};

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
        let blob = encode_envelope(&r);
        assert_eq!(decode_envelope(r.key, &blob), Ok(r.clone()));
        let mut framed = b"prefix".to_vec();
        encode_envelope_into(&r, &mut framed);
        assert_eq!(&framed[6..], blob.as_slice());
        assert_eq!(envelope_len(&r), blob.len());
        for n in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut v = Vec::new();
            put_varint(&mut v, n);
            assert_eq!(varint_len(n), v.len(), "{n}");
        }
        assert_eq!(peek_envelope_expiry(&blob), Ok(r.expires_at));
        assert_eq!(peek_envelope_owner(&blob), Ok(Some("user-42")));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
        let mut r = sample();
        r.data.remove("big");
        let blob = encode_envelope(&r);
        for len in 0..blob.len() {
            assert!(
                decode_envelope(r.key, &blob[..len]).is_err(),
                "truncated at {len}"
            );
        }
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut bad = blob.clone();
                bad[i] ^= 1 << bit;
                assert!(decode_envelope(r.key, &bad).is_err(), "flip at {i}:{bit}");
            }
        }
    }

    #[test]
    fn foreign_and_future_blobs_are_named() {
        let r = sample();
        let mut blob = encode_envelope(&r);
        assert_eq!(
            decode_envelope(r.key, b"{\"json\":1}"),
            Err(EnvelopeError::BadMagic)
        );
        blob[4] = 2;
        assert_eq!(
            decode_envelope(r.key, &blob),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn huge_claimed_lengths_do_not_allocate() {
        // A well-formed header and checksum around a body that claims 2^63 entries.
        let mut body = Vec::new();
        body.extend_from_slice(&ENVELOPE_MAGIC);
        body.push(ENVELOPE_VERSION);
        body.extend_from_slice(&[0; 16]);
        put_varint(&mut body, 0);
        put_varint(&mut body, 1 << 63);
        put_varint(&mut body, u64::MAX);
        let crc = crc32(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let key = UuidV4Generator.generate().storage_key();
        assert!(matches!(
            decode_envelope(key, &body),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn changes_compose() {
        let mut c = Changes::new();
        c.set("a", vec![1]);
        c.remove("a");
        assert!(c.set.is_empty() && c.removed.contains("a"));
        let mut later = Changes::new();
        later.set("a", vec![2]);
        c.extend(later);
        assert_eq!(c.set.get("a"), Some(&vec![2]));
        assert!(!c.removed.contains("a"));
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
        let blob = encode_envelope(&record);
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
        c.owner = Some(None);
        cases.push(c);
        let mut c = Changes::new();
        c.owner = Some(Some("someone-else".to_owned()));
        c.set("", vec![5; 200]);
        cases.push(c);
        for changes in cases {
            let patched = patch_envelope(&blob, &changes, at).unwrap();
            let mut want = record.clone();
            changes.apply_to_record(&mut want);
            want.expires_at = at;
            assert_eq!(patched, encode_envelope(&want), "{changes:?}");
        }
    }

    #[test]
    fn a_damaged_envelope_is_not_patched() {
        let blob = encode_envelope(&sample());
        let at = Timestamp::from_unix_millis(1);
        let mut flipped = blob.clone();
        flipped[20] ^= 1;
        assert_eq!(
            patch_envelope(&flipped, &Changes::new(), at),
            Err(EnvelopeError::Checksum)
        );
        assert_eq!(
            patch_envelope(b"nope", &Changes::new(), at),
            Err(EnvelopeError::BadMagic)
        );
        assert!(patch_envelope(&blob[..blob.len() - 1], &Changes::new(), at).is_err());
    }
}
