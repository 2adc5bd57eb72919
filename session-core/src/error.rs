//! Errors.

use crate::id::InvalidId;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a [`SessionStore`](crate::SessionStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create` found the key taken.
    #[error("a session with this id already exists")]
    IdCollision,
    /// The store's server could not be reached or did not answer in time. Worth retrying later.
    #[error("session store {store} is unavailable: {source}")]
    Unavailable {
        /// Which store.
        store: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The store answered with an error.
    #[error("session store {store} failed: {source}")]
    Backend {
        /// Which store.
        store: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A stored record is damaged or foreign and cannot be read.
    #[error("session store {store} holds a damaged record: {source}")]
    Corrupt {
        /// Which store.
        store: &'static str,
        /// What is wrong with it.
        #[source]
        source: BoxError,
    },
    /// The record is larger than the store accepts.
    #[error("session record of {size} bytes is larger than the {store} limit of {limit} bytes")]
    TooLarge {
        /// Which store.
        store: &'static str,
        /// The record's size in bytes.
        size: usize,
        /// The store's limit in bytes.
        limit: usize,
    },
    /// The store's settings are wrong: a malformed URL, an unknown option, a value out of
    /// range. Fix the configuration; retrying does not help.
    #[error("session store {store} is misconfigured: {source}")]
    Config {
        /// Which store.
        store: &'static str,
        /// What is wrong.
        #[source]
        source: BoxError,
    },
    /// The store cannot do this operation.
    #[error("the {store} session store does not support {operation}")]
    Unsupported {
        /// Which store.
        store: &'static str,
        /// The operation.
        operation: &'static str,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] from a cause.
    pub fn unavailable(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            store,
            source: source.into(),
        }
    }

    /// [`StoreError::Backend`] from a cause.
    pub fn backend(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            store,
            source: source.into(),
        }
    }

    /// [`StoreError::Unavailable`] for a call that got no answer within `timeout`.
    pub fn timed_out(store: &'static str, timeout: std::time::Duration) -> Self {
        Self::unavailable(store, format!("no answer within {timeout:?}"))
    }

    /// [`StoreError::TooLarge`] for a record of `size` bytes over `limit`.
    pub fn too_large(store: &'static str, size: usize, limit: usize) -> Self {
        Self::TooLarge { store, size, limit }
    }

    /// [`StoreError::Config`] from a cause.
    pub fn config(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Config {
            store,
            source: source.into(),
        }
    }

    /// [`StoreError::Corrupt`] from a cause.
    pub fn corrupt(store: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Corrupt {
            store,
            source: source.into(),
        }
    }
}

/// A failure of a [`Session`](crate::Session) or [`SessionManager`](crate::SessionManager).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A string that is not a session id.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value under `key` does not decode as the requested type. Other keys still read.
    #[error("session value {key:?} could not be decoded: {source}")]
    Decode {
        /// The session key.
        key: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// The value for `key` could not be encoded.
    #[error("session value {key:?} could not be encoded: {source}")]
    Encode {
        /// The session key.
        key: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },
    /// The key is reserved for the session's own bookkeeping (flash messages).
    #[error("session key {key:?} is reserved")]
    ReservedKey {
        /// The key.
        key: String,
    },
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn messages_name_the_store_once() {
        let unsupported = StoreError::Unsupported {
            store: "memcache",
            operation: "sessions_of",
        };
        assert_eq!(
            unsupported.to_string(),
            "the memcache session store does not support sessions_of"
        );
        let config = StoreError::config("redis", "unknown option \"pool\"");
        assert_eq!(
            config.to_string(),
            "session store redis is misconfigured: unknown option \"pool\""
        );
    }
}
