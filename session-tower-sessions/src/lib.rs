//! Every `session-core` store as a tower-sessions `SessionStore`: apps written against
//! `tower_sessions::Session` — axum-login, axum-messages, Loco — keep tower-sessions' layer
//! and cookie and switch to our stores (memory, files, Redis and Redis Cluster, memcached,
//! MongoDB, PostgreSQL, MySQL, SQLite) by changing the store line.
//!
//! ```
//! use std::sync::Arc;
//! use session_memory::MemoryStore;
//! use session_tower_sessions::TowerSessionsStore;
//! use tower_sessions::SessionManagerLayer;
//!
//! let store = TowerSessionsStore::new(Arc::new(MemoryStore::default())); // any of our stores
//! let layer = SessionManagerLayer::new(store).with_secure(false);
//! let app: axum::Router = axum::Router::new().layer(layer);
//! ```
//!
//! Any store from a URL (README.md's example, kept equal to this block by a test):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use session_tower_sessions::TowerSessionsStore;
//!
//! let store = TowerSessionsStore::new(session_any::open("redis://127.0.0.1:6379").await?);
//! let layer = tower_sessions::SessionManagerLayer::new(store);
//! # let _: axum::Router = axum::Router::new().layer(layer);
//! # Ok(()) }
//! ```
//!
//! What the adapter does:
//! - **Ids hashed at rest.** tower-sessions' `Id` is the bearer secret (it is the cookie); the
//!   record is stored under our `StorageKey` of it (SHA-256), like every session of ours, so
//!   a read of the store does not give out live session ids.
//! - **`create`** handles collisions as the trait asks: a key that is taken gives a new `Id`
//!   (at most 8 tries, then an error).
//! - **Values** are kept as their JSON values, encoded once (`serde_json`), one stored key per
//!   session key; the expiry is tower-sessions' `expiry_date`, which our stores honour
//!   (native TTLs, expiry checked on read, `delete_expired`: [`ExpiredDeletion`] where the
//!   trait applies).
//! - **Saves are per-key where it can be known.** tower-sessions hands `save` the whole record;
//!   the adapter remembers what each `load` of a session returned in the last
//!   [`TowerSessionsStore::window`] (default 60 s) and writes only the keys that differ from
//!   the load the record came from, so two requests that change different keys of one
//!   session both keep their write. Which load a save came from is not passed to the store:
//!   when the session's recent loads all returned the same data (no save landed between
//!   them) it is exact; when they differ, the save is compared with the load it differs from
//!   least. A whole-record write (every key replaced, atomically) is made when no load of the
//!   session is remembered: a save more than `window` after its load, or of a session this
//!   process did not load. The cases that can still lose a write are in the README ("Already
//!   on tower-sessions?").
//! - **Logout sticks.** A save of a session that was loaded but has since been deleted (a
//!   logout, an `cycle_id` of another request) writes nothing, instead of bringing it back.
//!
//! [`ExpiredDeletion`]: tower_sessions_core::ExpiredDeletion
//!
//! # Feature flags
//!
//! - `tower-sessions-0-14` (default): the trait of tower-sessions 0.14 (axum-login 0.18).
//! - `tower-sessions-0-15` (default): the trait of tower-sessions 0.15.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::{Changes, Record, SessionId, SessionStore, StorageKey, StoreError, Timestamp};

/// One of our stores behind tower-sessions' `SessionStore` trait (and `ExpiredDeletion`).
/// Clones share the store and the remembered loads.
#[derive(Clone)]
pub struct TowerSessionsStore {
    store: Arc<dyn SessionStore>,
    loads: Arc<Mutex<Loads>>,
    window: Duration,
}

impl std::fmt::Debug for TowerSessionsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("store", &self.store)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// A session's encoded data, key by key.
type Data = BTreeMap<String, Vec<u8>>;

/// The data each recent load returned, by stored key, with when it was loaded.
#[derive(Debug, Default)]
struct Loads {
    by_key: HashMap<StorageKey, Vec<(Instant, Data)>>,
    /// Loads remembered in all; past [`MAX_REMEMBERED`] the old ones are dropped first.
    count: usize,
}

/// At most this many loads are remembered (a bound on memory: each holds a copy of the
/// session's encoded data). Past it, saves of the sessions that were forgotten are whole
/// writes.
const MAX_REMEMBERED: usize = 100_000;

/// How many new ids `create` tries when the key is taken.
const CREATE_TRIES: usize = 8;

impl TowerSessionsStore {
    /// tower-sessions' store trait over `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            loads: Arc::default(),
            window: Duration::from_secs(60),
        }
    }

    /// How long what a load returned is remembered for the save that follows it (default
    /// 60 s: longer than a request). A save later than that is a whole-record write.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    fn remember(&self, key: StorageKey, data: BTreeMap<String, Vec<u8>>) {
        let now = Instant::now();
        let mut loads = self
            .loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loads.count >= MAX_REMEMBERED {
            let window = self.window;
            loads.by_key.retain(|_, list| {
                list.retain(|(at, _)| now.duration_since(*at) < window);
                !list.is_empty()
            });
            loads.count = loads.by_key.values().map(Vec::len).sum();
            if loads.count >= MAX_REMEMBERED {
                return;
            }
        }
        let list = loads.by_key.entry(key).or_default();
        let before = list.len();
        list.retain(|(at, _)| now.duration_since(*at) < self.window);
        let dropped = before - list.len();
        list.push((now, data));
        loads.count = loads.count + 1 - dropped;
    }

    /// The remembered load `data` most likely came from (the one it differs from least),
    /// taken out of the list; `None` when none is remembered.
    fn base_of(
        &self,
        key: &StorageKey,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Option<BTreeMap<String, Vec<u8>>> {
        let now = Instant::now();
        let mut loads = self
            .loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = loads.by_key.get_mut(key)?;
        let before = list.len();
        list.retain(|(at, _)| now.duration_since(*at) < self.window);
        let (best, _) = list
            .iter()
            .enumerate()
            .rev()
            .min_by_key(|(_, (_, base))| differing(base, data))?;
        let (_, base) = list.swap_remove(best);
        let removed = before - list.len();
        if list.is_empty() {
            loads.by_key.remove(key);
        }
        loads.count -= removed;
        Some(base)
    }
}

/// How many keys differ between two versions of a session's data.
fn differing(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> usize {
    let changed = b.iter().filter(|(k, v)| a.get(*k) != Some(*v)).count();
    changed + a.keys().filter(|k| !b.contains_key(*k)).count()
}

/// The changes that turn `base` into `data`.
fn diff(base: &BTreeMap<String, Vec<u8>>, data: &BTreeMap<String, Vec<u8>>) -> Changes {
    let mut changes = Changes::new();
    for key in base.keys().filter(|k| !data.contains_key(*k)) {
        changes.remove(key);
    }
    for (key, value) in data.iter().filter(|(k, v)| base.get(*k) != Some(*v)) {
        changes.set(key, value.clone());
    }
    changes
}

/// Every key replaced by `data`'s.
fn whole(data: &BTreeMap<String, Vec<u8>>) -> Changes {
    let mut changes = Changes::new();
    changes.clear();
    for (key, value) in data {
        changes.set(key, value.clone());
    }
    changes
}

/// The stored key of a tower-sessions id: the SHA-256 of its text, as for our own ids.
fn storage_key(id: &impl std::fmt::Display) -> Result<StorageKey, String> {
    SessionId::parse(&id.to_string())
        .map(|id| id.storage_key())
        .map_err(|e| format!("session id: {e}"))
}

fn to_timestamp(at: time::OffsetDateTime) -> Timestamp {
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    Timestamp::from_unix_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

fn to_offset(at: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_unix_millis()) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// What a save or a create does, in our store's terms; the trait impls translate errors.
enum Failure {
    Encode(String),
    Decode(String),
    Backend(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Backend(error.to_string())
    }
}

fn encode(data: &HashMap<String, serde_json::Value>) -> Result<BTreeMap<String, Vec<u8>>, Failure> {
    data.iter()
        .map(|(k, v)| {
            serde_json::to_vec(v)
                .map(|bytes| (k.clone(), bytes))
                .map_err(|e| Failure::Encode(format!("{k}: {e}")))
        })
        .collect()
}

fn decode(data: BTreeMap<String, Vec<u8>>) -> Result<HashMap<String, serde_json::Value>, Failure> {
    data.into_iter()
        .map(|(k, bytes)| {
            serde_json::from_slice(&bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Failure::Decode(format!("{k}: {e}")))
        })
        .collect()
}

impl TowerSessionsStore {
    /// `create`: a free key for the record, trying new ids (`new_id`) on a collision.
    async fn create_record<I: std::fmt::Display>(
        &self,
        id: &mut I,
        new_id: impl Fn() -> I,
        data: &HashMap<String, serde_json::Value>,
        expiry: time::OffsetDateTime,
    ) -> Result<(), Failure> {
        let data = encode(data)?;
        for _ in 0..CREATE_TRIES {
            let record = Record {
                key: storage_key(id).map_err(Failure::Encode)?,
                data: data.clone(),
                created_at: Timestamp::now(),
                expires_at: to_timestamp(expiry),
                owner: None,
            };
            match self.store.create(&record).await {
                Ok(()) => return Ok(()),
                Err(StoreError::IdCollision) => *id = new_id(),
                Err(error) => return Err(error.into()),
            }
        }
        Err(Failure::Backend(format!(
            "{CREATE_TRIES} session ids in a row were taken"
        )))
    }

    async fn save_record(
        &self,
        id: &impl std::fmt::Display,
        data: &HashMap<String, serde_json::Value>,
        expiry: time::OffsetDateTime,
    ) -> Result<(), Failure> {
        let key = storage_key(id).map_err(Failure::Encode)?;
        let data = encode(data)?;
        let expires_at = to_timestamp(expiry);
        let base = self.base_of(&key, &data);
        let loaded = base.is_some();
        let changes = match &base {
            Some(base) => diff(base, &data),
            None => whole(&data),
        };
        let written = if changes.is_empty() {
            // Saved unchanged (tower-sessions' `always_save`): only the expiry moves.
            self.store.touch(&key, expires_at).await?
        } else {
            self.store.update(&key, &changes, expires_at).await?
        };
        if written {
            return Ok(());
        }
        if loaded {
            // It existed when this request loaded it and is gone now: another request
            // logged out or cycled the id. Writing it again would undo that logout.
            return Ok(());
        }
        // Never loaded here (or forgotten): tower-sessions' save is an upsert.
        let record = Record {
            key,
            data,
            created_at: Timestamp::now(),
            expires_at,
            owner: None,
        };
        match self.store.create(&record).await {
            Ok(()) => Ok(()),
            // Created by another request in between: replace its keys, as an upsert would.
            Err(StoreError::IdCollision) => {
                self.store
                    .update(&record.key, &whole(&record.data), expires_at)
                    .await?;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn load_record(
        &self,
        id: &impl std::fmt::Display,
    ) -> Result<Option<(HashMap<String, serde_json::Value>, time::OffsetDateTime)>, Failure> {
        let Ok(key) = storage_key(id) else {
            return Ok(None);
        };
        let Some(record) = self.store.load(&key).await? else {
            return Ok(None);
        };
        self.remember(key, record.data.clone());
        let expiry = to_offset(record.expires_at);
        Ok(Some((decode(record.data)?, expiry)))
    }

    async fn delete_record(&self, id: &impl std::fmt::Display) -> Result<(), Failure> {
        if let Ok(key) = storage_key(id) {
            self.store.delete(&key).await?;
        }
        Ok(())
    }
}

/// The trait impls for one tower-sessions version (the trait is the same in 0.14 and 0.15).
macro_rules! tower_sessions_impl {
    ($core:ident) => {
        fn error(failure: Failure) -> $core::session_store::Error {
            match failure {
                Failure::Encode(e) => $core::session_store::Error::Encode(e),
                Failure::Decode(e) => $core::session_store::Error::Decode(e),
                Failure::Backend(e) => $core::session_store::Error::Backend(e),
            }
        }

        #[async_trait::async_trait]
        impl $core::SessionStore for TowerSessionsStore {
            async fn create(
                &self,
                record: &mut $core::session::Record,
            ) -> $core::session_store::Result<()> {
                let (data, expiry) = (record.data.clone(), record.expiry_date);
                self.create_record(&mut record.id, $core::session::Id::default, &data, expiry)
                    .await
                    .map_err(error)
            }

            async fn save(
                &self,
                record: &$core::session::Record,
            ) -> $core::session_store::Result<()> {
                self.save_record(&record.id, &record.data, record.expiry_date)
                    .await
                    .map_err(error)
            }

            async fn load(
                &self,
                id: &$core::session::Id,
            ) -> $core::session_store::Result<Option<$core::session::Record>> {
                Ok(self
                    .load_record(id)
                    .await
                    .map_err(error)?
                    .map(|(data, expiry_date)| $core::session::Record {
                        id: *id,
                        data,
                        expiry_date,
                    }))
            }

            async fn delete(&self, id: &$core::session::Id) -> $core::session_store::Result<()> {
                self.delete_record(id).await.map_err(error)
            }
        }

        #[async_trait::async_trait]
        impl $core::ExpiredDeletion for TowerSessionsStore {
            async fn delete_expired(&self) -> $core::session_store::Result<()> {
                self.store
                    .delete_expired()
                    .await
                    .map(|_| ())
                    .map_err(|e| error(e.into()))
            }
        }
    };
}

#[cfg(feature = "tower-sessions-0-14")]
mod v0_14 {
    use super::{Failure, TowerSessionsStore};
    use tower_sessions_core_0_14 as core014;
    tower_sessions_impl!(core014);
}

#[cfg(feature = "tower-sessions-0-15")]
mod v0_15 {
    use super::{Failure, TowerSessionsStore};
    use tower_sessions_core as core015;
    tower_sessions_impl!(core015);
}
