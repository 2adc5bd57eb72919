//! The interface every backend implements.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::body::Body;
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

/// The write of a login, for [`SessionStore::write_capped`]: it gives a session to an owner.
#[derive(Debug, Clone, Copy)]
pub enum OwnedWrite<'a> {
    /// A new record whose `owner` is set, written as [`SessionStore::create`] writes it.
    Create(&'a Record),
    /// Changes that set the owner of an existing record, applied as
    /// [`SessionStore::update`] applies them.
    Update {
        /// The record's key.
        key: &'a StorageKey,
        /// The changes; their [`Changes::owner`] is the owner.
        changes: &'a Changes,
        /// The record's new expiry.
        expires_at: Timestamp,
    },
}

impl OwnedWrite<'_> {
    /// The key of the record written.
    pub fn key(&self) -> &StorageKey {
        match self {
            Self::Create(record) => &record.key,
            Self::Update { key, .. } => key,
        }
    }
}

/// How many sessions one owner may keep, for [`SessionStore::write_capped`]
/// (the manager's `max_sessions_per_owner`).
#[derive(Debug, Clone, Copy)]
pub struct OwnerCap<'a> {
    /// The owner the write gives the session to.
    pub owner: &'a str,
    /// At most this many live sessions, the written one included (at least 1).
    pub max: usize,
    /// A session never ended nor counted: the old record of a cycled id, about to become a
    /// forward pointer.
    pub spare: Option<&'a StorageKey>,
    /// The manager's now: sessions expired by then are neither counted nor ended.
    pub now: Timestamp,
}

impl OwnerCap<'_> {
    /// Which of the owner's `sessions` to end after the session under `written` became
    /// theirs: all but the newest `max - 1` of the others (by creation, then key, the same
    /// order in every process), leaving out `written`, the spare and the expired.
    pub fn to_end(&self, written: &StorageKey, mut sessions: Vec<SessionInfo>) -> Vec<StorageKey> {
        sessions
            .retain(|s| s.key != *written && Some(&s.key) != self.spare && s.expires_at > self.now);
        let keep = self.max.max(1) - 1;
        if sessions.len() <= keep {
            return Vec::new();
        }
        // Newest first.
        sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.key.cmp(&a.key)));
        sessions.drain(keep..).map(|s| s.key).collect()
    }
}

/// What [`SessionStore::write_capped`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CappedWrite {
    /// Whether the write was made: `false` when an [`OwnedWrite::Update`] found no live
    /// record (then nothing was ended either).
    pub written: bool,
    /// The owner's sessions ended to keep the cap, oldest last.
    pub ended: Vec<StorageKey>,
}

/// [`SessionStore::write_capped`] for a store that cannot make a login and the ending of
/// the owner's oldest sessions one atomic step: the write (`create` or `update`), then
/// `sessions_of` and a `delete` of each session beyond the cap. The owner may have one
/// session more for the moment between, and keeps it if the process stops there; logins at
/// once may end more than needed (each keeps its own session) but, once all are done, never
/// leave more than the cap. A failure after the write (listing or ending) is logged, not
/// returned: the login stands.
///
/// # Errors
/// The write's errors.
pub async fn write_then_cap<S: SessionStore + ?Sized>(
    store: &S,
    write: OwnedWrite<'_>,
    cap: &OwnerCap<'_>,
) -> Result<CappedWrite, StoreError> {
    let written = match write {
        OwnedWrite::Create(record) => store.create(record).await.map(|()| true)?,
        OwnedWrite::Update {
            key,
            changes,
            expires_at,
        } => store.update(key, changes, expires_at).await?,
    };
    let mut done = CappedWrite {
        written,
        ended: Vec::new(),
    };
    if !written {
        return Ok(done);
    }
    let sessions = match store.sessions_of(cap.owner).await {
        Ok(sessions) => sessions,
        Err(error) => {
            tracing::warn!(%error, "max_sessions_per_owner: the owner's sessions could not be listed");
            return Ok(done);
        }
    };
    for key in cap.to_end(write.key(), sessions) {
        match store.delete(&key).await {
            Ok(()) => done.ended.push(key),
            Err(error) => {
                tracing::warn!(%error, "max_sessions_per_owner: an old session could not be ended");
            }
        }
    }
    Ok(done)
}

/// Where a [`SessionStore::scan`] goes on from: opaque to callers, made and read by the
/// store that returned it. A cursor from one store means nothing to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanCursor(String);

impl ScanCursor {
    /// A cursor holding `state`, for store implementations.
    pub fn new(state: impl Into<String>) -> Self {
        Self(state.into())
    }

    /// The state the store put in.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A cursor that goes on after `key`, for stores that list keys in order.
    pub fn after(key: &StorageKey) -> Self {
        Self(key.to_hex().as_str().to_owned())
    }

    /// A cursor for a store made of parts (shards, servers) each listed in key order: part
    /// `part`, after `key`, or from its first key with `None`.
    pub fn in_part(part: usize, after: Option<&StorageKey>) -> Self {
        match after {
            Some(key) => Self(format!("{part}:{}", key.to_hex().as_str())),
            None => Self(format!("{part}:")),
        }
    }

    /// Where a scan of a store of `parts` parts goes on: the part and key of a cursor made by
    /// [`ScanCursor::in_part`], or the first part's start for no cursor.
    ///
    /// # Errors
    /// [`bad_cursor`] for any other cursor, or one naming a part the store does not have.
    pub fn part(
        cursor: Option<&Self>,
        store: &'static str,
        parts: usize,
    ) -> Result<(usize, Option<StorageKey>), StoreError> {
        let Some(cursor) = cursor else {
            return Ok((0, None));
        };
        cursor
            .0
            .split_once(':')
            .and_then(|(part, key)| {
                let part: usize = part.parse().ok()?;
                let after = match key {
                    "" => None,
                    hex => Some(StorageKey::parse_hex(hex)?),
                };
                (part < parts).then_some((part, after))
            })
            .ok_or_else(|| bad_cursor(store, cursor))
    }

    /// The key a cursor made by [`ScanCursor::after`] goes on after.
    ///
    /// # Errors
    /// [`bad_cursor`] for any other cursor, naming `store`.
    pub fn key(&self, store: &'static str) -> Result<StorageKey, StoreError> {
        StorageKey::parse_hex(&self.0)
            .filter(|k| k.to_hex().as_str() == self.0)
            .ok_or_else(|| bad_cursor(store, self))
    }
}

/// One page of a [`SessionStore::scan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys of session records: live ones, and expired ones not yet removed. A store that
    /// cannot tell a forward pointer (see [`SessionStore::retire`]) from a session without
    /// reading its value may list the pointer's key too; `load` answers `None` for it.
    pub keys: Vec<StorageKey>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<ScanCursor>,
}

impl ScanPage {
    /// A page of `keys` listed in key order, going on after the last of them when `more`
    /// says there are more ([`ScanCursor::after`]).
    pub fn in_key_order(keys: Vec<StorageKey>, more: bool) -> Self {
        let next = match keys.last() {
            Some(last) if more => Some(ScanCursor::after(last)),
            _ => None,
        };
        Self { keys, next }
    }
}

/// A record as [`SessionStore::load_body`] answers it: decoded, or as a [`Body`] whose values
/// stay encoded until a request reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Decoded, as [`SessionStore::load`] returns it.
    Record(Record),
    /// Encoded; filed under `key`.
    Body {
        /// The record's storage key.
        key: StorageKey,
        /// Its header and entries.
        body: Body,
    },
}

impl Loaded {
    /// When the session expires.
    pub fn expires_at(&self) -> Timestamp {
        match self {
            Self::Record(record) => record.expires_at,
            Self::Body { body, .. } => body.expires_at(),
        }
    }

    /// When the session was first saved.
    pub fn created_at(&self) -> Timestamp {
        match self {
            Self::Record(record) => record.created_at,
            Self::Body { body, .. } => body.created_at(),
        }
    }

    /// The encoded value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        match self {
            Self::Record(record) => record.data.get(key).map(Vec::as_slice),
            Self::Body { body, .. } => body.get(key),
        }
    }

    /// The value of a reserved key (one starting with [`RESERVED_PREFIX`](crate::RESERVED_PREFIX)).
    pub(crate) fn reserved(&self, key: &str) -> Option<&[u8]> {
        match self {
            Self::Record(record) => crate::session::reserved(&record.data, key),
            Self::Body { body, .. } => body.reserved(key),
        }
    }

    /// The record, decoded.
    pub fn into_record(self) -> Record {
        match self {
            Self::Record(record) => record,
            Self::Body { key, body } => body.into_record(key),
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

    /// [`load`](SessionStore::load) as the manager calls it: the same live record, which a
    /// store that keeps records as [`Body`]s (the memory store) may answer without decoding
    /// them, so a request decodes only the values it reads. Other stores answer
    /// `Ok(self.load(key).await?.map(Loaded::Record))`.
    ///
    /// # Errors
    /// As [`load`](SessionStore::load).
    async fn load_body(&self, key: &StorageKey) -> Result<Option<Loaded>, StoreError>;

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

    /// Writes a login (`write`, which gives a session to `cap.owner`) and ends the oldest
    /// other live sessions of the owner so that at most `cap.max` remain, the written one
    /// included; `cap.spare` is neither counted nor ended ([`OwnerCap::to_end`] says which).
    ///
    /// A store that can make both one atomic step does: the write and the ending land
    /// together, and concurrent logins of one owner are serialized, so a listing never
    /// shows more than `cap.max` (the suite's `atomic_cap = true` checks it). Stores that
    /// cannot return [`write_then_cap`], which writes and then ends, and say so in their
    /// docs.
    ///
    /// Returns `written: false`, ending nothing, when an [`OwnedWrite::Update`] finds no
    /// live record.
    ///
    /// # Errors
    /// As [`SessionStore::create`] or [`SessionStore::update`] for the write.
    async fn write_capped(
        &self,
        write: OwnedWrite<'_>,
        cap: &OwnerCap<'_>,
    ) -> Result<CappedWrite, StoreError>;

    /// One page of the keys of every session the store holds: start with `None`, then pass
    /// each page's [`ScanPage::next`] until it is `None`. A page holds about `limit` keys (a
    /// hint: Redis's `SCAN` may return a few more, and any page may be empty while `next` is
    /// still `Some`), so a scan of millions of sessions runs in bounded memory.
    ///
    /// A scan is not a snapshot. Every session that is live for the whole scan is listed at
    /// least once (a key may be listed twice where the server's own cursor does so, as
    /// Redis's does); a session created or deleted while the scan runs may or may not be.
    /// Read the records with [`SessionStore::load`], or with [`crate::scan::Scan`], which
    /// does both.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a cursor this store did not make; [`StoreError::Unsupported`]
    /// only for a store that cannot enumerate its records; `Unavailable`/`Backend` when the
    /// store fails.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize)
    -> Result<ScanPage, StoreError>;
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: SessionStore + ?Sized> SessionStore for std::sync::Arc<S> {
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        (**self).load(key).await
    }
    async fn load_body(&self, key: &StorageKey) -> Result<Option<Loaded>, StoreError> {
        (**self).load_body(key).await
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
    async fn write_capped(
        &self,
        write: OwnedWrite<'_>,
        cap: &OwnerCap<'_>,
    ) -> Result<CappedWrite, StoreError> {
        (**self).write_capped(write, cap).await
    }
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        (**self).scan(cursor, limit).await
    }
}

/// The malformed-cursor error of a store's [`SessionStore::scan`].
pub fn bad_cursor(store: &'static str, cursor: &ScanCursor) -> StoreError {
    StoreError::config(
        store,
        format!(
            "scan cursor {:?} was not made by this store",
            cursor.as_str()
        ),
    )
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

/// Waits before retry number `attempt` (from 1) of a compare-and-set another writer won,
/// whose last try took `took`: a random pause of up to `took` × 2^`attempt` (at least
/// 100 µs × 2^`attempt`; at most 200 ms), so writers contending for one hot session spread
/// out instead of colliding again in lockstep, on a fast server and on a slow one alike.
/// Stores that retry a compare-and-set with a fresh read (memcached's `gets`/`cas`,
/// MongoDB's filtered update) call it between attempts.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let started = Instant::now();
/// session_core::cas_backoff(3, Duration::from_micros(500)).await;
/// assert!(started.elapsed() < Duration::from_millis(200));
/// # }
/// ```
pub async fn cas_backoff(attempt: u32, took: std::time::Duration) {
    use std::hash::{BuildHasher, Hasher};
    const FLOOR: std::time::Duration = std::time::Duration::from_micros(100);
    const CEILING: std::time::Duration = std::time::Duration::from_millis(200);
    let ceiling = took
        .max(FLOOR)
        .saturating_mul(1 << attempt.min(8))
        .min(CEILING);
    // A fresh `RandomState` is seeded differently every call: jitter without a dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    let pause = hasher.finish() % micros.saturating_add(1);
    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
}
