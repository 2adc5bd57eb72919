//! Session ids, the id generator and the hashed storage key.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The shortest id [`SessionId::parse`] accepts (16 base64url characters carry 96 bits).
pub const MIN_ID_LEN: usize = 16;
/// The longest id [`SessionId::parse`] accepts.
pub const MAX_ID_LEN: usize = 128;

/// A validated session id: the bearer secret a browser holds in its cookie.
///
/// A `SessionId` is built only by an [`IdGenerator`] or by [`SessionId::parse`], which accepts
/// nothing but the base64url alphabet `[A-Za-z0-9_-]` in [`MIN_ID_LEN`]..=[`MAX_ID_LEN`]
/// characters. Stores never see it: they address records by its [`StorageKey`].
///
/// Its `Debug` output is redacted so that logging a session never leaks the id.
///
/// ```
/// use session_core::{IdGenerator, SessionId, UuidV4Generator};
///
/// let id = UuidV4Generator.generate();
/// assert_eq!(id.as_str().len(), 22);
/// assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
/// assert!(SessionId::parse("../../etc/passwd").is_err());
/// assert!(SessionId::parse("abc def\r\nset x 0 0 1").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

impl SessionId {
    /// Validates `raw` as a session id.
    ///
    /// # Errors
    /// [`InvalidId`] when `raw` is empty, shorter than [`MIN_ID_LEN`], longer than
    /// [`MAX_ID_LEN`], or holds a character outside `[A-Za-z0-9_-]`.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let len = raw.len();
        if len == 0 {
            return Err(InvalidId::Empty);
        }
        if len > MAX_ID_LEN {
            return Err(InvalidId::TooLong {
                len,
                max: MAX_ID_LEN,
            });
        }
        if let Some(position) = raw
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(InvalidId::BadCharacter { position });
        }
        if len < MIN_ID_LEN {
            return Err(InvalidId::TooShort {
                len,
                min: MIN_ID_LEN,
            });
        }
        Ok(Self(raw.into()))
    }

    /// The id as it goes into a cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a store files this session under: SHA-256 of the id.
    pub fn storage_key(&self) -> StorageKey {
        StorageKey(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The string is empty.
    #[error("session id is empty")]
    Empty,
    /// The string is shorter than the minimum.
    #[error("session id has {len} characters, fewer than {min}")]
    TooShort {
        /// Its length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The string is longer than the maximum.
    #[error("session id has {len} bytes, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A byte outside `[A-Za-z0-9_-]`.
    #[error("session id has a character outside [A-Za-z0-9_-] at byte {position}")]
    BadCharacter {
        /// The byte offset of the first bad character.
        position: usize,
    },
}

/// Makes new session ids.
///
/// The default, [`UuidV4Generator`], is right for almost everyone. A custom generator must
/// draw at least 96 bits from a CSPRNG and build its ids with [`SessionId::parse`].
pub trait IdGenerator: fmt::Debug + Send + Sync + 'static {
    /// A fresh, unpredictable id.
    fn generate(&self) -> SessionId;
}

/// The default generator: a uuid v4 (122 bits from the OS CSPRNG) as 22 base64url characters.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV4Generator;

impl IdGenerator for UuidV4Generator {
    fn generate(&self) -> SessionId {
        let uuid = uuid::Uuid::new_v4();
        SessionId(URL_SAFE_NO_PAD.encode(uuid.as_bytes()).into())
    }
}

/// The hashed form of a [`SessionId`] under which a store keeps a record.
///
/// A leaked database, backup or `KEYS *` shows only these, and they cannot be turned back into
/// ids. The textual form ([`StorageKey::to_hex`]) is 64 lowercase hex characters: safe as a file
/// name, a memcached key, a Redis key or a MongoDB `_id`.
///
/// ```
/// use session_core::{SessionId, StorageKey};
///
/// let id = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap();
/// let key = id.storage_key();
/// assert_eq!(key.to_hex().len(), 64);
/// assert_eq!(StorageKey::parse_hex(&key.to_hex()), Some(key));
/// assert!(!key.to_hex().contains(id.as_str()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey([u8; 32]);

impl StorageKey {
    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a key from digest bytes a store kept (for example in an index).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> HexKey {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        HexKey(out)
    }

    /// Parses the form [`StorageKey::to_hex`] writes; `None` for anything else.
    pub fn parse_hex(hex: &str) -> Option<Self> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }

    /// The first eight bytes as an integer: uniformly distributed, for hashing and sharding.
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(b)
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageKey({})", self.to_hex().as_str())
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

/// The hex text of a [`StorageKey`], on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexKey([u8; 64]);

impl HexKey {
    /// The 64 hex characters.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into the array.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::ops::Deref for HexKey {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for HexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_22_chars_and_distinct() {
        let a = UuidV4Generator.generate();
        let b = UuidV4Generator.generate();
        assert_eq!(a.as_str().len(), 22);
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn parse_rejects_hostile_input() {
        let long = "a".repeat(10_000);
        let cases: &[(&str, InvalidId)] = &[
            ("", InvalidId::Empty),
            (
                "short",
                InvalidId::TooShort {
                    len: 5,
                    min: MIN_ID_LEN,
                },
            ),
            (
                "../../../../etc/passwd",
                InvalidId::BadCharacter { position: 0 },
            ),
            (
                "AAAAAAAAAAAAAAAA/AAAAA",
                InvalidId::BadCharacter { position: 16 },
            ),
            (
                "AAAAAAAAAAAAAAAA\0AAAAA",
                InvalidId::BadCharacter { position: 16 },
            ),
            (
                "AAAAAAAAAAAA AAAAAAAAA",
                InvalidId::BadCharacter { position: 12 },
            ),
            (
                "AAAAAAAAAAAAAAAAAAAA\r\n",
                InvalidId::BadCharacter { position: 20 },
            ),
            (
                "AAAAAAAAAAAAAAAAAAAA==",
                InvalidId::BadCharacter { position: 20 },
            ),
            (
                "ÄAAAAAAAAAAAAAAAAAAAAA",
                InvalidId::BadCharacter { position: 0 },
            ),
            (
                &long,
                InvalidId::TooLong {
                    len: 10_000,
                    max: MAX_ID_LEN,
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(SessionId::parse(raw).as_ref(), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn storage_key_is_sha256_hex() {
        let id = SessionId::parse("abcdefghijklmnopqrstuv").unwrap();
        // sha256("abcdefghijklmnopqrstuv"), computed independently with coreutils' sha256sum.
        assert_eq!(
            id.storage_key().to_hex().as_str(),
            "f69f9b70d1c9a5442258ca76f8b0a7a45fcb4e31c36141b6357ec591328b0624"
        );
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let key = UuidV4Generator.generate().storage_key();
        assert_eq!(StorageKey::parse_hex(&key.to_hex()), Some(key));
        assert_eq!(StorageKey::parse_hex("zz"), None);
        assert_eq!(StorageKey::parse_hex(&"A".repeat(64)), None);
        assert_eq!(StorageKey::from_bytes(*key.as_bytes()), key);
    }

    #[test]
    fn debug_redacts_the_id() {
        let id = UuidV4Generator.generate();
        assert!(!format!("{id:?}").contains(id.as_str()));
    }
}
