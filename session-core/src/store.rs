//! The interface every backend implements.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::id::StorageKey;
use crate::record::{Changes, Record};
use crate::time::Timestamp;

/// One live session of a user, as [`SessionStore::sessions_of`] lists it: never the bearer
/// id, only its hashed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's storage key.
    pub key: StorageKey,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
}

impl From<&Record> for SessionInfo {
    fn from(record: &Record) -> Self {
        Self {
            key: record.key,
            created_at: record.created_at,
            expires_at: record.expires_at,
        }
    }
}

/// Where sessions live. Object safe: the manager holds an `Arc<dyn SessionStore>`.
///
/// Stores address records by [`StorageKey`], the hashed id; they never see the bearer id.
/// Every implementation must pass the conformance suite (`session_core::suite`, feature
/// `test-suite`), which checks the contracts written on each method below. Every method is
/// required, so a store (or a wrapper around one) that forgets one does not compile, rather
/// than answering `Unsupported` without anyone noticing.
#[async_trait]
pub trait SessionStore: Debug + Send + Sync + 'static {
    /// The live record under `key`.
    ///
    /// Returns `None` when the record is absent **or expired**: a store checks `expires_at`
    /// on read, because native TTLs lag.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a record that cannot be read; `Unavailable`/`Backend` when
    /// the store fails.
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError>;

    /// Inserts `record` only if its key is free.
    ///
    /// # Errors
    /// [`StoreError::IdCollision`] when a live record already has the key (nothing is
    /// written); [`StoreError::TooLarge`] when the record exceeds the store's limit.
    async fn create(&self, record: &Record) -> Result<(), StoreError>;

    /// Applies `changes` to the *existing* live record under `key`, atomically and key by key
    /// (keys the changes do not name keep whatever a concurrent writer put there), and sets
    /// its expiry to `expires_at`.
    ///
    /// Returns `Ok(false)`, writing nothing, when the record no longer exists or has expired:
    /// an update never brings back a deleted session.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] when the result exceeds the store's limit (nothing is
    /// written); `Unavailable`/`Backend`/`Corrupt` when the store fails.
    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Moves the expiry of the existing live record to `expires_at` without rewriting data.
    ///
    /// Returns `Ok(false)`, writing nothing, when the record no longer exists or has expired.
    ///
    /// # Errors
    /// `Unavailable`/`Backend`/`Corrupt` when the store fails.
    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError>;

    /// Removes the record. Deleting a missing key is not an error. After it returns, no
    /// concurrent `update` or `touch` brings the record back.
    ///
    /// # Errors
    /// `Unavailable`/`Backend` when the store fails.
    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError>;

    /// Removes expired records and returns how many. Stores that expire records natively
    /// return `Ok(0)` (and say so through [`SessionStore::expires_natively`]).
    ///
    /// # Errors
    /// `Unavailable`/`Backend` when the store fails.
    async fn delete_expired(&self) -> Result<u64, StoreError>;

    /// Replaces the live record under `key` with a *forward pointer* to `to`, atomically,
    /// and returns the record as it was just before; `None`, writing nothing, when there is
    /// no live record.
    ///
    /// The manager calls it when a session's id is cycled (login): the data already lives
    /// under `to`, and a request that loaded the session before the cycle and saves after it
    /// finds the pointer ([`SessionStore::forwarded`]) and sends its changes there instead of
    /// losing them. A pointer is not a session: `load` does not return it, `update` and
    /// `touch` answer `Ok(false)` on it, `create` on its key is an [`StoreError::IdCollision`]
    /// while it lasts, `delete` removes it, `delete_expired` sweeps it after `until`, and the
    /// per-user index never lists it.
    ///
    /// # Errors
    /// `Unavailable`/`Backend`/`Corrupt` when the store fails (nothing is written).
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError>;

    /// Where the live forward pointer under `key` leads (see [`SessionStore::retire`]);
    /// `None` when there is none, or it has expired, or `key` holds a session.
    ///
    /// # Errors
    /// `Unavailable`/`Backend` when the store fails.
    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError>;

    /// Whether the store removes expired records by itself (a server TTL), so that a
    /// sweeper is not needed.
    fn expires_natively(&self) -> bool;

    /// The live sessions whose owner is `owner` (the per-user index).
    ///
    /// # Errors
    /// [`StoreError::Unsupported`] only for stores that cannot keep the index correctly
    /// (memcached), naming the store; `Unavailable`/`Backend` when the store fails.
    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError>;

    /// Deletes every session whose owner is `owner` ("log out everywhere") and returns how
    /// many records were removed. As with `delete`, no concurrent `update` or `touch` brings
    /// one back.
    ///
    /// # Errors
    /// As [`SessionStore::sessions_of`].
    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError>;
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: SessionStore + ?Sized> SessionStore for std::sync::Arc<S> {
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        (**self).load(key).await
    }
    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        (**self).create(record).await
    }
    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        (**self).update(key, changes, expires_at).await
    }
    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        (**self).touch(key, expires_at).await
    }
    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        (**self).delete_expired().await
    }
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        (**self).retire(key, to, until).await
    }
    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        (**self).forwarded(key).await
    }
    fn expires_natively(&self) -> bool {
        (**self).expires_natively()
    }
    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        (**self).sessions_of(owner).await
    }
    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        (**self).delete_sessions_of(owner).await
    }
}

/// Awaits one round trip of a store for at most `timeout`: `call`'s result with its errors
/// mapped by `map` (the store's mapping of its driver's errors), or the error `timed_out`
/// makes when it has not finished by then (usually [`StoreError::timed_out`], which is
/// [`StoreError::Unavailable`]). Every remote store bounds its calls with it.
///
/// ```
/// use std::time::Duration;
/// use session_core::{StoreError, bounded};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let stalled = std::future::pending::<Result<(), std::io::Error>>();
/// let err = bounded(
///     Duration::from_millis(10),
///     stalled,
///     |e| StoreError::unavailable("my-store", e),
///     |t| StoreError::timed_out("my-store", t),
/// )
/// .await
/// .unwrap_err();
/// assert!(matches!(err, StoreError::Unavailable { .. }));
/// # }
/// ```
///
/// # Errors
/// `map`'s error when `call` fails; `timed_out`'s when it takes longer than `timeout`.
pub async fn bounded<T, E>(
    timeout: std::time::Duration,
    call: impl IntoFuture<Output = Result<T, E>>,
    map: impl FnOnce(E) -> StoreError,
    timed_out: impl FnOnce(std::time::Duration) -> StoreError,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call.into_future()).await {
        Ok(result) => result.map_err(map),
        Err(_) => Err(timed_out(timeout)),
    }
}
