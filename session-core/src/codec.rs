//! How session values become bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

/// The first allocation for an encoded value (`serde_json::to_vec` starts at 128).
const ENCODE_CAPACITY: usize = 64;

/// The value codec a [`SessionManager`](crate::SessionManager) encodes values with.
///
/// - [`Codec::Bincode`] (default): compact and fast, through bincode 2's serde layer. It is
///   not self-describing: it cannot decode `serde_json::Value`, untagged enums or anything
///   else that needs `deserialize_any`.
/// - `Codec::Json` (feature `json`): self-describing, for those types and for stores that a
///   person or another language reads.
///
/// A value is decoded as the type asked for; bytes that do not decode as exactly that type
/// (including trailing bytes) are an error, not a guess.
///
/// ```
/// use session_core::Codec;
///
/// let bytes = Codec::Bincode.encode(&("alice", 42u32)).unwrap();
/// let back: (String, u32) = Codec::Bincode.decode(&bytes).unwrap();
/// assert_eq!(back, ("alice".to_owned(), 42));
/// assert!(Codec::Bincode.decode::<u64>(b"not a u64 at all").is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// bincode 2, standard configuration.
    #[default]
    Bincode,
    /// JSON through `serde_json`.
    #[cfg(feature = "json")]
    Json,
}

/// The largest value bincode will allocate for while decoding (a guard against damaged data).
const BINCODE_LIMIT: usize = 64 * 1024 * 1024;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}

#[derive(Debug, thiserror::Error)]
#[error("{unread} trailing bytes after the value: stored as another type")]
struct TrailingBytes {
    unread: usize,
}

impl Codec {
    /// Encodes a value.
    ///
    /// # Errors
    /// The codec's error when the value cannot be serialised (for example a map with
    /// non-string keys under JSON).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, BoxError> {
        match self {
            Self::Bincode => {
                // `encode_to_vec` starts from an empty vector and grows it as it writes (two
                // allocations for a 40-byte string); most session values fit in this.
                let mut out = Vec::with_capacity(ENCODE_CAPACITY);
                bincode::serde::encode_into_std_write(value, &mut out, bincode_config())?;
                Ok(out)
            }
            #[cfg(feature = "json")]
            Self::Json => Ok(serde_json::to_vec(value)?),
        }
    }

    /// Decodes a value as `T`.
    ///
    /// # Errors
    /// The codec's error when the bytes are not a `T`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, BoxError> {
        match self {
            Self::Bincode => {
                let (value, read) = bincode::serde::decode_from_slice(bytes, bincode_config())?;
                if read != bytes.len() {
                    return Err(Box::new(TrailingBytes {
                        unread: bytes.len() - read,
                    }));
                }
                Ok(value)
            }
            #[cfg(feature = "json")]
            Self::Json => Ok(serde_json::from_slice(bytes)?),
        }
    }

    /// The codec's name, `bincode` or `json`: how a store that keeps counters apart from
    /// values (MongoDB's `$inc`) records which codec to fold them back with.
    ///
    /// ```
    /// use session_core::Codec;
    ///
    /// assert_eq!(Codec::from_name(Codec::Bincode.name()), Some(Codec::Bincode));
    /// assert_eq!(Codec::from_name("yaml"), None);
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Bincode => "bincode",
            #[cfg(feature = "json")]
            Self::Json => "json",
        }
    }

    /// The codec named `name` (see [`Codec::name`]); `None` for an unknown name, or `json`
    /// without the feature `json`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "bincode" => Some(Self::Bincode),
            #[cfg(feature = "json")]
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// A counter's value (an `i64`, see [`crate::Increment`]); `None` when the bytes are not
    /// one.
    pub fn decode_counter(self, bytes: &[u8]) -> Option<i64> {
        self.decode(bytes).ok()
    }

    /// A counter's encoding. Encoding an `i64` cannot fail in either codec; were it to, the
    /// empty value would read back as 0.
    pub fn encode_counter(self, value: i64) -> Vec<u8> {
        self.encode(&value).unwrap_or_default()
    }
}
