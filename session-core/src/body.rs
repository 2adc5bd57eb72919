//! A record's body: the [envelope](crate::envelope)'s fields without its magic,
//! version and checksum.
//!
//! The compact form for stores whose bytes never leave the process (the memory store keeps
//! one body per session): nothing foreign can be read, nothing can be damaged in transit,
//! so the 9 bytes of framing and the checksum's time buy nothing there. Besides encoding
//! and decoding, a body can be changed without decoding it: [`set_expiry`] rewrites the
//! expiry in place and [`patch`] merges [`Changes`] in one pass over the old bytes, with no
//! map built and no per-key allocation.
//!
//! Layout: created_at (i64 LE ms), expires_at (i64 LE ms), owner (LEB128 length + 1, 0 for
//! none, then UTF-8), entry count (LEB128), entries in strictly increasing key order (key
//! length, key, value length, value; LEB128 lengths).
//!
//! ```
//! use std::collections::BTreeMap;
//! use session_core::{body, Changes, Record, Timestamp, UuidV4Generator, IdGenerator};
//!
//! let record = Record {
//!     key: UuidV4Generator.generate().storage_key(),
//!     data: BTreeMap::from([("a".to_owned(), vec![1]), ("b".to_owned(), vec![2])]),
//!     created_at: Timestamp::from_unix_millis(1),
//!     expires_at: Timestamp::from_unix_millis(2),
//!     owner: None,
//! };
//! let mut bytes = Vec::new();
//! body::encode_into(&record, &mut bytes);
//! assert_eq!(bytes.len(), body::len(&record));
//!
//! let mut changes = Changes::new();
//! changes.remove("a");
//! changes.set("c", vec![3]);
//! let mut patched = Vec::new();
//! body::patch(&bytes, &changes, Timestamp::from_unix_millis(9), &mut patched).unwrap();
//!
//! let record = body::decode(record.key, &patched).unwrap();
//! assert_eq!(record.data, BTreeMap::from([("b".to_owned(), vec![2]), ("c".to_owned(), vec![3])]));
//! assert_eq!(record.expires_at, Timestamp::from_unix_millis(9));
//! ```

use std::collections::BTreeMap;

use crate::envelope::FormatError;
use crate::id::StorageKey;
use crate::record::{Changes, Record};
use crate::time::Timestamp;

/// created_at and expires_at.
const TIMES_LEN: usize = 8 + 8;

/// Exactly how many bytes [`encode_into`] appends for `record`.
pub fn len(record: &Record) -> usize {
    let owner = record
        .owner
        .as_ref()
        .map_or(1, |o| varint_len(o.len() as u64 + 1) + o.len());
    let entries: usize = record
        .data
        .iter()
        .map(|(k, v)| entry_len(k.as_bytes(), v))
        .sum();
    TIMES_LEN + owner + varint_len(record.data.len() as u64) + entries
}

/// Appends the body of `record` (all but its key) to `out`.
pub fn encode_into(record: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(&record.created_at.as_unix_millis().to_le_bytes());
    out.extend_from_slice(&record.expires_at.as_unix_millis().to_le_bytes());
    put_owner(out, record.owner.as_deref().map(str::as_bytes));
    put_varint(out, record.data.len() as u64);
    for (key, value) in &record.data {
        put_entry(out, key.as_bytes(), value);
    }
}

/// Decodes a body written by [`encode_into`] or [`patch`] as the record filed under `key`.
///
/// # Errors
/// [`FormatError::Malformed`] for truncated or malformed bytes, keys out of order
/// included. It never panics and never allocates more than the bytes' size.
pub fn decode(key: StorageKey, bytes: &[u8]) -> Result<Record, FormatError> {
    let (created_at, expires_at) = times(bytes)?;
    let mut reader = Reader {
        rest: &bytes[TIMES_LEN..],
    };
    let owner = reader.owner()?.map(str::to_owned);
    let count = reader.varint()?;
    let mut data = BTreeMap::new();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let (key, value) = reader.entry(&mut previous)?;
        data.insert(key.to_owned(), value.to_vec());
    }
    reader.end()?;
    Ok(Record {
        key,
        data,
        created_at,
        expires_at,
        owner,
    })
}

/// A body read in place: its header decoded and its entries checked once (as [`decode`]
/// checks them), then left encoded, so a value is read where it lies and no map of the
/// record is built. What the memory store hands the manager
/// ([`SessionStore::load_body`](crate::SessionStore::load_body)): a request that reads a key
/// or two and writes one never decodes the others.
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{body, Record, Timestamp, UuidV4Generator, IdGenerator};
///
/// let record = Record {
///     key: UuidV4Generator.generate().storage_key(),
///     data: BTreeMap::from([("a".to_owned(), vec![1]), ("b".to_owned(), vec![2])]),
///     created_at: Timestamp::from_unix_millis(1),
///     expires_at: Timestamp::from_unix_millis(2),
///     owner: Some("ada".to_owned()),
/// };
/// let mut bytes = Vec::new();
/// body::encode_into(&record, &mut bytes);
///
/// let body = body::Body::new(bytes).unwrap();
/// assert_eq!(body.get("b"), Some(&[2u8][..]));
/// assert_eq!(body.get("c"), None);
/// assert_eq!((body.len(), body.owner()), (2, Some("ada")));
/// assert_eq!(body.into_record(record.key), record);
///
/// assert!(body::Body::new(vec![0; 3]).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    bytes: Vec<u8>,
    /// Where the owner's field ends and the entry count starts.
    count_at: usize,
    count: usize,
    /// Whether a key starts with [`RESERVED_PREFIX`](crate::RESERVED_PREFIX): the session's
    /// own keys (expiry, device), looked up several times a request and usually absent.
    reserved: bool,
}

impl Body {
    /// Checks `bytes` as [`decode`] does, without decoding the entries.
    ///
    /// # Errors
    /// As [`decode`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, FormatError> {
        times(&bytes)?;
        let mut reader = Reader {
            rest: &bytes[TIMES_LEN..],
        };
        reader.owner()?;
        let count_at = bytes.len() - reader.rest.len();
        let count = reader.varint()?;
        let mut previous: Option<&[u8]> = None;
        let mut reserved = false;
        for _ in 0..count {
            let (key, _) = reader.checked_entry(&mut previous)?;
            reserved |= key.starts_with(crate::RESERVED_PREFIX.as_bytes());
        }
        reader.end()?;
        // Every entry takes at least two bytes, so a count that passed is far below usize::MAX.
        let count =
            usize::try_from(count).map_err(|_| FormatError::Malformed("length overflow"))?;
        Ok(Self {
            bytes,
            count_at,
            count,
            reserved,
        })
    }

    /// When the session was first saved.
    pub fn created_at(&self) -> Timestamp {
        times(&self.bytes).map_or(Timestamp::from_unix_millis(0), |(created, _)| created)
    }

    /// When the session expires.
    pub fn expires_at(&self) -> Timestamp {
        times(&self.bytes).map_or(Timestamp::from_unix_millis(0), |(_, expires)| expires)
    }

    /// The user the session belongs to.
    pub fn owner(&self) -> Option<&str> {
        peek_owner(&self.bytes).ok().flatten()
    }

    /// How many keys have values.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded value under `key`, found by walking the sorted entries.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        // Byte order is `str` order: no key needs its UTF-8 checked again.
        for (k, value) in self.raw_entries() {
            match k.cmp(key.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(value),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// [`Body::get`] of a reserved key (one starting with
    /// [`RESERVED_PREFIX`](crate::RESERVED_PREFIX)), answered without a walk when the body
    /// has none.
    pub(crate) fn reserved(&self, key: &str) -> Option<&[u8]> {
        debug_assert!(key.starts_with(crate::RESERVED_PREFIX));
        if self.reserved { self.get(key) } else { None }
    }

    /// The entries in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // `new` checked every key's UTF-8.
        self.raw_entries()
            .filter_map(|(k, v)| std::str::from_utf8(k).ok().map(|k| (k, v)))
    }

    fn raw_entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut reader = Reader {
            rest: self.bytes.get(self.count_at..).unwrap_or_default(),
        };
        // `new` checked the count and every entry: nothing here fails.
        let count = reader.varint().unwrap_or(0);
        (0..count).map_while(move |_| reader.raw_entry().ok())
    }

    /// The bytes, as [`encode_into`] or [`patch`] wrote them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The record, its entries decoded, filed under `key`.
    pub fn into_record(self, key: StorageKey) -> Record {
        Record {
            key,
            data: self.data(),
            created_at: self.created_at(),
            expires_at: self.expires_at(),
            owner: self.owner().map(str::to_owned),
        }
    }

    /// The entries decoded into a map.
    pub fn data(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect()
    }
}

/// Reads only the expiry.
///
/// # Errors
/// [`FormatError::Malformed`] for bytes shorter than the timestamps.
pub fn peek_expiry(bytes: &[u8]) -> Result<Timestamp, FormatError> {
    times(bytes).map(|(_, expires_at)| expires_at)
}

/// Reads only the owner.
///
/// # Errors
/// [`FormatError::Malformed`] for a truncated or malformed owner field.
pub fn peek_owner(bytes: &[u8]) -> Result<Option<&str>, FormatError> {
    times(bytes)?;
    let mut reader = Reader {
        rest: &bytes[TIMES_LEN..],
    };
    reader.owner()
}

/// Rewrites the expiry in place (a `touch`): no allocation, no other byte changes.
///
/// # Errors
/// [`FormatError::Malformed`] for bytes shorter than the timestamps.
pub fn set_expiry(bytes: &mut [u8], expires_at: Timestamp) -> Result<(), FormatError> {
    times(bytes)?;
    bytes[8..TIMES_LEN].copy_from_slice(&expires_at.as_unix_millis().to_le_bytes());
    Ok(())
}

/// Appends to `out` the body `old` with `changes` applied and the expiry set to
/// `expires_at`: what [`Changes::apply_to_record`] does to the decoded record, in one pass
/// over the bytes (entries are sorted, so the changes merge in order).
///
/// # Errors
/// [`FormatError::Malformed`] when `old` is not a well-formed body; `out` then holds
/// nothing new that a caller should keep.
pub fn patch(
    old: &[u8],
    changes: &Changes,
    expires_at: Timestamp,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    if !changes.incremented().is_empty() {
        // The counters' values are read from `old` first: the increments become writes.
        let current = counters(old, changes)?;
        let resolved = changes.resolved(|key| current.get(key).copied());
        return patch(old, &resolved, expires_at, out);
    }
    times(old)?;
    let mut reader = Reader {
        rest: &old[TIMES_LEN..],
    };
    let old_owner = reader.owner()?;
    let count = reader.varint()?;
    let owner = changes.owner().apply(old_owner);
    // One pass that checks the old entries and writes the new ones. The entry count comes
    // before the entries: a byte is kept for it, and in the rare body of 128 entries or
    // more the entries move up to make room for a longer count.
    let start = out.len();
    let written: usize = changes
        .written()
        .iter()
        .map(|(k, v)| entry_len(k.as_bytes(), v))
        .sum();
    let owner_len = owner.map_or(1, |o| varint_len(o.len() as u64 + 1) + o.len());
    out.reserve(old.len() + owner_len + written + varint_len(count.saturating_add(1)));
    out.extend_from_slice(&old[..8]);
    out.extend_from_slice(&expires_at.as_unix_millis().to_le_bytes());
    put_owner(out, owner.map(str::as_bytes));
    let count_at = out.len();
    out.push(0);
    match merge(reader, count, changes, |key, value| {
        put_entry(out, key, value)
    }) {
        Ok(new_count) => {
            if new_count < 0x80 {
                out[count_at] = new_count as u8;
            } else {
                let mut encoded = Vec::with_capacity(varint_len(new_count));
                put_varint(&mut encoded, new_count);
                out.splice(count_at..=count_at, encoded);
            }
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The values in `old` of the counters `changes` increments.
fn counters<'a>(
    old: &'a [u8],
    changes: &Changes,
) -> Result<BTreeMap<&'a str, &'a [u8]>, FormatError> {
    times(old)?;
    let mut reader = Reader {
        rest: &old[TIMES_LEN..],
    };
    reader.owner()?;
    let count = reader.varint()?;
    let mut found = BTreeMap::new();
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let (key, value) = reader.entry(&mut previous)?;
        if changes.incremented().contains_key(key) {
            found.insert(key, value);
        }
    }
    Ok(found)
}

/// Walks the old entries and the changes in key order, calling `emit` for every entry of
/// the result; returns how many there are. Every old key is checked (UTF-8, strictly
/// increasing) as [`decode`] checks it.
fn merge<'a>(
    mut reader: Reader<'a>,
    count: u64,
    changes: &'a Changes,
    mut emit: impl FnMut(&[u8], &[u8]),
) -> Result<u64, FormatError> {
    let mut set = changes.written().iter().peekable();
    let mut removed = changes.removed().iter().peekable();
    let mut n = 0u64;
    let mut out = |key: &[u8], value: &[u8]| {
        n += 1;
        emit(key, value);
    };
    let mut previous: Option<&[u8]> = None;
    for _ in 0..count {
        let (key, value) = reader.checked_entry(&mut previous)?;
        if changes.is_cleared() {
            continue;
        }
        while let Some((k, v)) = set.next_if(|(k, _)| k.as_bytes() < key) {
            out(k.as_bytes(), v);
        }
        if let Some((k, v)) = set.next_if(|(k, _)| k.as_bytes() == key) {
            out(k.as_bytes(), v);
            continue;
        }
        while removed.next_if(|k| k.as_bytes() < key).is_some() {}
        if removed.next_if(|k| k.as_bytes() == key).is_some() {
            continue;
        }
        out(key, value);
    }
    reader.end()?;
    for (k, v) in set {
        out(k.as_bytes(), v);
    }
    Ok(n)
}

fn times(bytes: &[u8]) -> Result<(Timestamp, Timestamp), FormatError> {
    if bytes.len() < TIMES_LEN {
        return Err(FormatError::Malformed("shorter than its header"));
    }
    let read = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        Timestamp::from_unix_millis(i64::from_le_bytes(b))
    };
    Ok((read(0), read(8)))
}

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, FormatError> {
    std::str::from_utf8(bytes).map_err(|_| FormatError::Malformed(what))
}

fn entry_len(key: &[u8], value: &[u8]) -> usize {
    varint_len(key.len() as u64) + key.len() + varint_len(value.len() as u64) + value.len()
}

fn put_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn put_owner(out: &mut Vec<u8>, owner: Option<&[u8]>) {
    match owner {
        None => put_varint(out, 0),
        Some(owner) => {
            put_varint(out, owner.len() as u64 + 1);
            out.extend_from_slice(owner);
        }
    }
}

pub(crate) fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[derive(Clone)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .rest
                .split_first()
                .ok_or(FormatError::Malformed("truncated length"))?;
            self.rest = rest;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(FormatError::Malformed("length too long"))
    }

    fn bytes(&mut self, len: u64) -> Result<&'a [u8], FormatError> {
        let len = usize::try_from(len).map_err(|_| FormatError::Malformed("length overflow"))?;
        if len > self.rest.len() {
            return Err(FormatError::Malformed("length past the end"));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    fn owner(&mut self) -> Result<Option<&'a str>, FormatError> {
        match self.varint()? {
            0 => Ok(None),
            n => utf8(self.bytes(n - 1)?, "owner is not UTF-8").map(Some),
        }
    }

    /// One entry as it lies: its key neither checked for UTF-8 nor for order.
    fn raw_entry(&mut self) -> Result<(&'a [u8], &'a [u8]), FormatError> {
        let klen = self.varint()?;
        let key = self.bytes(klen)?;
        let vlen = self.varint()?;
        Ok((key, self.bytes(vlen)?))
    }

    /// One entry, whose key must sort strictly after `previous` (then becomes it).
    /// [`Reader::checked_entry`] with the key as the `str` it was checked to be.
    fn entry(
        &mut self,
        previous: &mut Option<&'a [u8]>,
    ) -> Result<(&'a str, &'a [u8]), FormatError> {
        let (key, value) = self.checked_entry(previous)?;
        Ok((utf8(key, "key is not UTF-8")?, value))
    }

    /// One entry, its key checked as UTF-8 (an ASCII key, the common case, without a call)
    /// and after `previous` (byte order is `str` order), and left as bytes.
    fn checked_entry(
        &mut self,
        previous: &mut Option<&'a [u8]>,
    ) -> Result<(&'a [u8], &'a [u8]), FormatError> {
        let (key, value) = self.raw_entry()?;
        if !key.is_ascii() {
            utf8(key, "key is not UTF-8")?;
        }
        if previous.is_some_and(|p| p >= key) {
            return Err(FormatError::Malformed("keys out of order"));
        }
        *previous = Some(key);
        Ok((key, value))
    }

    fn end(&self) -> Result<(), FormatError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FormatError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{IdGenerator, UuidV4Generator};

    fn record(data: &[(&str, &[u8])], owner: Option<&str>) -> Record {
        Record {
            key: UuidV4Generator.generate().storage_key(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect(),
            created_at: Timestamp::from_unix_millis(1_700_000_000_000),
            expires_at: Timestamp::from_unix_millis(1_700_000_360_000),
            owner: owner.map(str::to_owned),
        }
    }

    fn encode(r: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(r, &mut out);
        assert_eq!(out.len(), len(r));
        out
    }

    /// Every combination of changes (sets, removals, increments) over a few keys: the patched bytes are exactly the
    /// encoding of the decoded record with the changes applied.
    #[test]
    fn patch_equals_decode_apply_encode() {
        let keys = ["", "a", "b", "bb", "c\0", "ü"];
        let bases = [
            record(&[], None),
            record(&[("a", b"1"), ("bb", &[0; 200]), ("ü", b"x")], Some("u")),
            record(&[("", b""), ("b", b"2"), ("c\0", b"3")], None),
        ];
        let mut cases = 0;
        for base in &bases {
            let bytes = encode(base);
            for mask in 0..4u32.pow(keys.len() as u32) {
                for (cleared, owner) in [
                    (false, None),
                    (true, None),
                    (false, Some(Some("v"))),
                    (false, Some(None)),
                ] {
                    let mut changes = Changes::new();
                    if cleared {
                        changes.clear();
                    }
                    if let Some(owner) = owner {
                        changes.set_owner(owner);
                    }
                    let mut m = mask;
                    for key in keys {
                        match m % 3 {
                            1 => changes.set(key, key.as_bytes().repeat(3)),
                            2 => changes.remove(key),
                            3 => changes.increment(key, 2, crate::Codec::Bincode),
                            _ => {}
                        }
                        m /= 4;
                    }
                    let expires_at = Timestamp::from_unix_millis(42);
                    let mut want = base.clone();
                    changes.apply_to_record(&mut want);
                    want.expires_at = expires_at;
                    let mut got = b"kept".to_vec();
                    patch(&bytes, &changes, expires_at, &mut got).unwrap();
                    assert_eq!(&got[..4], b"kept");
                    assert_eq!(got[4..], encode(&want), "{changes:?}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 3 * 4096 * 4);
    }

    /// The entry count comes before the entries and takes a second byte from 128 entries: a
    /// patch that crosses that line either way writes the same bytes as an encode.
    #[test]
    fn patches_across_128_entries_equal_encode() {
        let names: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
        for (have, add, remove) in [
            (127, 1, 0),
            (128, 0, 1),
            (127, 5, 3),
            (130, 0, 10),
            (200, 1, 1),
        ] {
            let data: Vec<(&str, &[u8])> = names[..have]
                .iter()
                .map(|k| (k.as_str(), k.as_bytes()))
                .collect();
            let base = record(&data, Some("u"));
            let mut changes = Changes::new();
            for k in &names[..remove] {
                changes.remove(k);
            }
            for i in 0..add {
                changes.set(format!("new{i}"), vec![i as u8; 3]);
            }
            let at = Timestamp::from_unix_millis(7);
            let mut want = base.clone();
            changes.apply_to_record(&mut want);
            want.expires_at = at;
            let mut got = b"kept".to_vec();
            patch(&encode(&base), &changes, at, &mut got).unwrap();
            assert_eq!(&got[..4], b"kept");
            assert_eq!(got[4..], encode(&want), "{have} + {add} - {remove}");
            assert_eq!(Body::new(got[4..].to_vec()).unwrap().len(), want.data.len());
        }
    }

    /// A body read in place answers every key, header field and count as the decoded record.
    #[test]
    fn a_body_read_in_place_reads_as_the_decoded_record() {
        let keys = ["", "a", "b", "bb", "c\0", "ü", "z"];
        for r in [
            record(&[], None),
            record(&[("a", b"1"), ("bb", &[0; 200]), ("ü", b"x")], Some("u")),
            record(&[("", b""), ("b", b"2"), ("c\0", b"3")], None),
            record(&[("", b""), ("\0session:expiry", b"e"), ("a", b"1")], None),
            record(&[("\0session:z", b"z")], None),
        ] {
            let body = Body::new(encode(&r)).unwrap();
            for key in keys {
                assert_eq!(body.get(key), r.data.get(key).map(Vec::as_slice), "{key:?}");
            }
            for key in ["\0session:expiry", "\0session:z"] {
                assert_eq!(
                    body.reserved(key),
                    r.data.get(key).map(Vec::as_slice),
                    "{key:?}"
                );
            }
            assert_eq!(body.len(), r.data.len());
            assert_eq!(body.is_empty(), r.data.is_empty());
            assert_eq!(body.as_bytes(), encode(&r));
            assert_eq!(body.data(), r.data);
            assert_eq!(body.into_record(r.key), r);
        }
    }

    #[test]
    fn set_expiry_changes_only_the_expiry() {
        let r = record(&[("a", b"1")], Some("u"));
        let mut bytes = encode(&r);
        let at = Timestamp::from_unix_millis(-5);
        set_expiry(&mut bytes, at).unwrap();
        let mut want = r.clone();
        want.expires_at = at;
        assert_eq!(decode(r.key, &bytes), Ok(want));
        assert_eq!(peek_expiry(&bytes), Ok(at));
        assert_eq!(peek_owner(&bytes), Ok(Some("u")));
        assert!(set_expiry(&mut [0; 15], at).is_err());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let r = record(&[("a", b"1"), ("b", &[2; 300])], Some("owner"));
        let bytes = encode(&r);
        for cut in 0..bytes.len() {
            assert!(decode(r.key, &bytes[..cut]).is_err(), "cut at {cut}");
            assert!(Body::new(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
            // A failed patch leaves what `out` held before, and nothing more.
            let mut out = b"kept".to_vec();
            let mut changes = Changes::new();
            changes.set("0", b"new".to_vec());
            assert!(
                patch(&bytes[..cut], &changes, r.expires_at, &mut out).is_err(),
                "cut at {cut}"
            );
            assert_eq!(out, b"kept", "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(r.key, &longer).is_err());
        assert!(Body::new(longer).is_err());
        // Keys out of order (or repeated) are refused: a patch relies on the order.
        let mut unordered = bytes[..TIMES_LEN].to_vec();
        put_owner(&mut unordered, None);
        put_varint(&mut unordered, 2);
        put_entry(&mut unordered, b"b", b"1");
        put_entry(&mut unordered, b"a", b"1");
        assert_eq!(
            decode(r.key, &unordered),
            Err(FormatError::Malformed("keys out of order"))
        );
        assert_eq!(
            Body::new(unordered.clone()),
            Err(FormatError::Malformed("keys out of order"))
        );
        let mut out = Vec::new();
        assert!(patch(&unordered, &Changes::new(), r.expires_at, &mut out).is_err());
        let mut not_utf8 = bytes[..TIMES_LEN].to_vec();
        put_owner(&mut not_utf8, None);
        put_varint(&mut not_utf8, 1);
        put_entry(&mut not_utf8, &[0xff], b"1");
        assert!(decode(r.key, &not_utf8).is_err());
        assert!(Body::new(not_utf8.clone()).is_err());
        assert!(patch(&not_utf8, &Changes::new(), r.expires_at, &mut out).is_err());
    }
}
