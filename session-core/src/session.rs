//! The [`Session`] handle a request works with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::data::Data;
use crate::devices::{DEVICE_KEY, DeviceRecord};
use crate::error::SessionError;
use crate::id::{IdGenerator, SessionId, StorageKey};
use crate::manager::{EXPIRY_KEY, Expiry, SaveOutcome, SessionExpiry};
use crate::record::{Changes, Increment, Record};
use crate::store::Loaded;
use crate::time::Timestamp;

/// Keys starting with this are the session's own (flash messages); `insert` refuses them.
pub const RESERVED_PREFIX: &str = "\u{0}session:";
const FLASH_PREFIX: &str = "\u{0}session:flash:";

/// One browser's session: a cheap, clonable handle with dict-like, synchronous methods.
///
/// Values are encoded with the manager's [`Codec`] when inserted and decoded when read. The
/// handle records what changed; [`SessionManager::save`](crate::SessionManager::save) writes
/// exactly those keys (or nothing, when nothing changed).
///
/// ```
/// # use session_core::{SessionManager, SessionStore};
/// # fn demo(manager: &SessionManager) -> Result<(), session_core::SessionError> {
/// let session = manager.create();
/// session.insert("user", "alice")?;
/// session.insert_many([("theme", "dark"), ("lang", "en")])?;
/// assert_eq!(session.get::<String>("user")?.as_deref(), Some("alice"));
/// assert!(session.contains("theme"));
/// session.remove("theme");
/// session.flash("notice", "Welcome back")?;
/// assert_eq!(session.take_flash::<String>("notice")?.as_deref(), Some("Welcome back"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    codec: Codec,
    state: Mutex<State>,
}

/// A session's state, and its life cycle: [`State::plan`] decides what a save writes, the
/// `on_*` methods record what the store answered. The manager only does the I/O.
#[derive(Debug)]
pub(crate) struct State {
    id: SessionId,
    /// `id.storage_key()`, computed once (a SHA-256).
    key: StorageKey,
    /// A record exists in the store under `id`.
    stored: bool,
    data: Data,
    changes: Changes,
    created_at: Timestamp,
    expires_at: Timestamp,
    owner: Option<String>,
    destroyed: bool,
    cycle: bool,
    /// A record `cycle_id` replaced but could not delete yet, or the record of a destroyed
    /// session written to again; the next save deletes it first.
    stale: Option<StorageKey>,
    /// The record of a session destroyed and then written to, which `stale` deletes: its
    /// deletion is a [`crate::SessionEvent::Destroyed`].
    destroyed_key: Option<StorageKey>,
    /// Written to after `destroy`: a fresh session (new id, new creation time) that the next
    /// save creates after deleting the destroyed one.
    restarted: bool,
}

impl Session {
    pub(crate) fn new(
        codec: Codec,
        id: SessionId,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Self {
        Self::from_state(
            codec,
            State {
                key: id.storage_key(),
                id,
                stored: false,
                data: Data::default(),
                changes: Changes::new(),
                created_at,
                expires_at,
                owner: None,
                destroyed: false,
                cycle: false,
                stale: None,
                destroyed_key: None,
                restarted: false,
            },
        )
    }

    pub(crate) fn from_record(codec: Codec, id: SessionId, record: Record) -> Self {
        Self::from_state(
            codec,
            State {
                key: record.key,
                id,
                stored: true,
                data: Data::Map(record.data),
                changes: Changes::new(),
                created_at: record.created_at,
                expires_at: record.expires_at,
                owner: record.owner,
                destroyed: false,
                cycle: false,
                stale: None,
                destroyed_key: None,
                restarted: false,
            },
        )
    }

    /// A session read from the store as [`SessionStore::load_body`](crate::SessionStore::load_body)
    /// answered it.
    pub(crate) fn from_loaded(codec: Codec, id: SessionId, loaded: Loaded) -> Self {
        let (key, body) = match loaded {
            Loaded::Record(record) => return Self::from_record(codec, id, record),
            Loaded::Body { key, body } => (key, body),
        };
        Self::from_state(
            codec,
            State {
                key,
                id,
                stored: true,
                created_at: body.created_at(),
                expires_at: body.expires_at(),
                owner: body.owner().map(str::to_owned),
                data: Data::from(body),
                changes: Changes::new(),
                destroyed: false,
                cycle: false,
                stale: None,
                destroyed_key: None,
                restarted: false,
            },
        )
    }

    fn from_state(codec: Codec, state: State) -> Self {
        Self {
            inner: Arc::new(Inner {
                codec,
                state: Mutex::new(state),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state consistent: every
        // mutation below is a single map operation.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's id, as it goes into the cookie. It changes when a save creates the
    /// session under a fresh id after a collision, or after [`Session::cycle_id`].
    pub fn id(&self) -> SessionId {
        self.lock().id.clone()
    }

    /// The value under `key`, decoded as `T`.
    ///
    /// # Errors
    /// [`SessionError::Decode`] when the stored bytes are not a `T`; other keys still read.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let state = self.lock();
        match state.data.get(key) {
            None => Ok(None),
            Some(bytes) => self.decode(key, bytes).map(Some),
        }
    }

    /// The values under `keys`, in order, each decoded as `T`.
    ///
    /// # Errors
    /// [`SessionError::Decode`] for the first value that is not a `T`.
    pub fn get_many<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, SessionError> {
        let state = self.lock();
        keys.iter()
            .map(|key| match state.data.get(key) {
                None => Ok(None),
                Some(bytes) => self.decode(key, bytes).map(Some),
            })
            .collect()
    }

    /// Stores `value` under `key`, replacing what was there.
    ///
    /// # Errors
    /// [`SessionError::Encode`] when the codec cannot encode the value;
    /// [`SessionError::ReservedKey`] for keys starting with [`RESERVED_PREFIX`].
    pub fn insert(
        &self,
        key: impl Into<String>,
        value: impl Serialize,
    ) -> Result<(), SessionError> {
        let key = key.into();
        check_key(&key)?;
        let bytes = self.encode(&key, &value)?;
        self.lock().put(key, bytes);
        Ok(())
    }

    /// Stores every pair, or none of them when one fails to encode.
    ///
    /// # Errors
    /// As [`Session::insert`].
    pub fn insert_many<K, V, I>(&self, pairs: I) -> Result<(), SessionError>
    where
        K: Into<String>,
        V: Serialize,
        I: IntoIterator<Item = (K, V)>,
    {
        let encoded = pairs
            .into_iter()
            .map(|(key, value)| {
                let key = key.into();
                check_key(&key)?;
                let bytes = self.encode(&key, &value)?;
                Ok((key, bytes))
            })
            .collect::<Result<Vec<_>, SessionError>>()?;
        let mut state = self.lock();
        for (key, bytes) in encoded {
            state.put(key, bytes);
        }
        Ok(())
    }

    /// Adds `by` to the counter under `key` (an `i64`; absent counts as 0) and returns the
    /// value this handle now sees. Unlike `insert` of a value read and changed, the save
    /// carries the addition, not the sum: the store applies it to whatever the counter holds
    /// when it writes, atomically, so concurrent requests that each add 1 leave exactly that
    /// many more, on every store. Read a counter with `get::<i64>`.
    ///
    /// The returned value is the counter as this request loaded it plus its own additions.
    /// Once [`SessionManager::save`](crate::SessionManager::save) has written it, the
    /// counter reads as the store wrote it: every addition saved before, other requests'
    /// included. [`SessionManager::increment`](crate::SessionManager::increment) does both
    /// and returns that value.
    ///
    /// A counter is an `i64` in the manager's codec: keep it with `increment` only (or
    /// `insert` an `i64`). Under bincode an integer of another type (a `u64` written by
    /// `insert`) does not read as the same number.
    ///
    /// ```
    /// # use session_core::{SessionManager};
    /// # fn demo(manager: &SessionManager) -> Result<(), session_core::SessionError> {
    /// let session = manager.create();
    /// assert_eq!(session.increment("visits", 1)?, 1);
    /// assert_eq!(session.increment("visits", 2)?, 3);
    /// assert_eq!(session.get::<i64>("visits")?, Some(3));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SessionError::Decode`] when the key holds something other than an `i64`, and
    /// [`SessionError::Encode`] when the sum would overflow; nothing changes then.
    /// [`SessionError::ReservedKey`] as for [`Session::insert`].
    pub fn increment(&self, key: &str, by: i64) -> Result<i64, SessionError> {
        check_key(key)?;
        let codec = self.inner.codec;
        let mut state = self.lock();
        if state.destroyed {
            state.restart();
        }
        let current = match state.data.get(key) {
            None => 0,
            Some(bytes) => self.decode::<i64>(key, bytes)?,
        };
        let sum = current
            .checked_add(by)
            .ok_or_else(|| SessionError::Encode {
                key: key.to_owned(),
                source: format!("{current} + {by} overflows an i64 counter").into(),
            })?;
        let bytes = self.encode(key, &sum)?;
        state.data.put_target().insert(key.to_owned(), bytes);
        state.changes.increment(key, by, codec);
        Ok(sum)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.lock().delete(key)
    }

    /// Removes `key` and returns its value decoded as `T` (Python's `dict.pop`).
    ///
    /// # Errors
    /// [`SessionError::Decode`] when the value is not a `T`; the key is then left in place.
    pub fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut state = self.lock();
        let Some(bytes) = state.data.get(key) else {
            return Ok(None);
        };
        let value = self.decode(key, bytes)?;
        state.delete(key);
        Ok(Some(value))
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().data.contains_key(key)
    }

    /// The keys with values, sorted (flash messages not included).
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .data
            .map_mut()
            .keys()
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .cloned()
            .collect()
    }

    /// How many keys have values (flash messages not included).
    pub fn len(&self) -> usize {
        self.lock()
            .data
            .map_mut()
            .keys()
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .count()
    }

    /// Whether no key has a value (flash messages not included).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every value and flash message (an own expiry set with
    /// [`Session::set_expiry`] stays).
    pub fn clear(&self) {
        let mut state = self.lock();
        // Read, not decoded out of a body: everything else is dropped.
        let own = state.reserved(EXPIRY_KEY).map(<[u8]>::to_vec);
        state.data = Data::default();
        state.changes.clear();
        if let Some(own) = own {
            state.put(EXPIRY_KEY.to_owned(), own);
        }
    }

    /// Gives this session its own expiry ("remember me", or a shorter life than the
    /// manager's), or with `None` returns it to the manager's. It is saved with the session,
    /// and every later request follows it (see [`SessionExpiry`]); the HTTP layers send the
    /// cookie again on this response, persistent or browser-session to match.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use session_core::{SessionExpiry, SessionManager};
    /// # fn demo(manager: &SessionManager) {
    /// const DAY: Duration = Duration::from_secs(24 * 3600);
    /// let session = manager.create();
    /// session.set_expiry(Some(SessionExpiry::persistent(Some(30 * DAY), None)));
    /// assert_eq!(session.own_expiry().unwrap().expiry().idle(), Some(30 * DAY));
    /// session.set_expiry(None);
    /// assert_eq!(session.own_expiry(), None);
    /// # }
    /// ```
    pub fn set_expiry(&self, expiry: Option<SessionExpiry>) {
        let mut state = self.lock();
        match expiry {
            Some(expiry) => state.put(EXPIRY_KEY.to_owned(), expiry.encode()),
            None => {
                state.delete(EXPIRY_KEY);
            }
        }
    }

    /// The session's own expiry (see [`Session::set_expiry`]); `None` when it follows the
    /// manager's.
    pub fn own_expiry(&self) -> Option<SessionExpiry> {
        let state = self.lock();
        SessionExpiry::of(|k| state.reserved(k))
    }

    /// Leaves a read-once message for a later request: it is saved
    /// with the session and removed by the first [`Session::take_flash`].
    ///
    /// # Errors
    /// [`SessionError::Encode`] when the codec cannot encode the value.
    pub fn flash(&self, key: &str, value: impl Serialize) -> Result<(), SessionError> {
        let full = format!("{FLASH_PREFIX}{key}");
        let bytes = self.encode(key, &value)?;
        self.lock().put(full, bytes);
        Ok(())
    }

    /// Takes the flash message under `key`, removing it from the session.
    ///
    /// # Errors
    /// [`SessionError::Decode`] when the message is not a `T`; it is removed all the same.
    pub fn take_flash<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let full = format!("{FLASH_PREFIX}{key}");
        let mut state = self.lock();
        let Some(bytes) = state.data.get(&full).map(<[u8]>::to_vec) else {
            return Ok(None);
        };
        state.delete(&full);
        self.decode(key, &bytes).map(Some)
    }

    /// Records the user this session belongs to (call it at login, with
    /// [`Session::cycle_id`]), or `None` to remove it. The store's per-user index then lists
    /// the session ([`SessionManager::sessions_of`](crate::SessionManager::sessions_of)) and
    /// "log out everywhere" ends it
    /// ([`SessionManager::destroy_all_of`](crate::SessionManager::destroy_all_of)).
    pub fn set_owner(&self, owner: Option<&str>) {
        let mut state = self.lock();
        if state.owner.as_deref() != owner {
            state.owner = owner.map(str::to_owned);
            state.changes.set_owner(owner);
        }
    }

    /// The user this session belongs to.
    pub fn owner(&self) -> Option<String> {
        self.lock().owner.clone()
    }

    /// Marks the session for deletion: the next save deletes its record (logout). Its data
    /// and owner are gone from the handle at once.
    ///
    /// Writing to the handle afterwards (the "You have been logged out" flash) starts a
    /// fresh session: the next save deletes the destroyed record, then creates the new one
    /// under a new id, so the client gets a new cookie and the destroyed id stays dead.
    ///
    /// ```
    /// # async fn demo(manager: &session_core::SessionManager, session: session_core::Session)
    /// # -> Result<(), session_core::SessionError> {
    /// let old = session.id();
    /// session.destroy();
    /// session.flash("notice", "You have been logged out")?;
    /// manager.save(&session).await?; // deletes `old`, creates a fresh session
    /// assert_ne!(session.id(), old);
    /// assert!(manager.load(&old).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn destroy(&self) {
        let mut state = self.lock();
        state.destroyed = true;
        state.restarted = false;
        state.data = Data::default();
        state.changes.clear();
        state.owner = None;
    }

    /// Asks for a new id with the same data at the next save, and the old record deleted.
    /// Call it at login, to defeat session fixation.
    pub fn cycle_id(&self) {
        self.lock().cycle = true;
    }

    /// Whether the next save has anything to write (changes, a new id or a deletion).
    pub fn is_modified(&self) -> bool {
        let state = self.lock();
        state.destroyed || state.cycle || !state.changes.is_empty()
    }

    /// Whether the session has not been saved to the store yet.
    pub fn is_new(&self) -> bool {
        !self.lock().stored
    }

    /// Whether [`Session::destroy`] was called, or the store lost the record.
    pub fn is_destroyed(&self) -> bool {
        self.lock().destroyed
    }

    /// When the session was created.
    pub fn created_at(&self) -> Timestamp {
        self.lock().created_at
    }

    /// When the session expires, as of its last save.
    pub fn expires_at(&self) -> Timestamp {
        self.lock().expires_at
    }

    fn encode(&self, key: &str, value: &impl Serialize) -> Result<Vec<u8>, SessionError> {
        self.inner
            .codec
            .encode(value)
            .map_err(|source| SessionError::Encode {
                key: key.to_owned(),
                source,
            })
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, SessionError> {
        self.inner
            .codec
            .decode(bytes)
            .map_err(|source| SessionError::Decode {
                key: key.to_owned(),
                source,
            })
    }
}

/// What the next save must do, decided by [`State::plan`] from the session's state alone.
#[derive(Debug)]
pub(crate) enum SavePlan {
    /// First delete this leftover record (of a cycled or destroyed session), then plan again.
    DeleteStale(StorageKey),
    /// Nothing to write; the save's outcome.
    Nothing(SaveOutcome),
    /// Delete the record (logout).
    Delete(StorageKey),
    /// Create a record: a new session, or a cycled one under its new id.
    Create(NewRecord),
    /// Write the changed keys (moved out of the state; [`State::restore`] puts them back).
    Update {
        key: StorageKey,
        changes: Changes,
        expires_at: Timestamp,
    },
    /// Move the expiry only.
    Touch {
        key: StorageKey,
        expires_at: Timestamp,
    },
}

/// A record to create, and the id it is filed under.
#[derive(Debug)]
pub(crate) struct NewRecord {
    pub(crate) id: SessionId,
    pub(crate) record: Record,
    /// The old key of a cycled session, and what this handle changed since it loaded it.
    pub(crate) cycled_from: Option<(StorageKey, Changes)>,
}

/// The manager's settings a plan depends on, and the time of the save.
pub(crate) struct SaveRules<'a> {
    pub(crate) now: Timestamp,
    pub(crate) expiry: Expiry,
    pub(crate) touch_after: Duration,
    pub(crate) ids: &'a dyn IdGenerator,
}

/// Whether an expiry last written as `written` has fallen at least `touch_after` behind
/// `deadline`.
pub(crate) fn refresh_due(touch_after: Duration, written: Timestamp, deadline: Timestamp) -> bool {
    deadline > written && deadline.duration_since(written) >= touch_after
}

impl State {
    /// What the next save writes. It changes nothing in the state except that a leftover
    /// record to delete ([`SavePlan::DeleteStale`]) and pending changes
    /// ([`SavePlan::Update`]) move into the plan.
    pub(crate) fn plan(&mut self, rules: &SaveRules<'_>) -> SavePlan {
        if let Some(stale) = self.stale.take() {
            return SavePlan::DeleteStale(stale);
        }
        if self.destroyed {
            return if self.stored {
                SavePlan::Delete(self.key)
            } else {
                SavePlan::Nothing(SaveOutcome::Destroyed)
            };
        }
        if !self.stored && self.data.is_empty() {
            return SavePlan::Nothing(SaveOutcome::Unchanged);
        }
        // A session written to after `destroy` starts its life now.
        let created_at = if self.restarted {
            rules.now
        } else {
            self.created_at
        };
        // The session's own expiry, when it has one, instead of the manager's.
        let own = SessionExpiry::of(|k| self.reserved(k));
        let touch_after = SessionExpiry::touch_after(own, rules.touch_after);
        // A recorded device's last-seen time, kept current to within `touch_after`.
        if let Some(mut device) = DeviceRecord::of(|k| self.reserved(k)) {
            let now = rules.now.as_unix_millis();
            let due = device.last_seen_ms.is_none_or(|seen| {
                u128::try_from(now.saturating_sub(seen)).unwrap_or(0) >= touch_after.as_millis()
            });
            if due {
                device.last_seen_ms = Some(now);
                self.put(DEVICE_KEY.to_owned(), device.encode());
            }
        }
        let expiry = own.map_or(rules.expiry, |own| own.expiry());
        let deadline = expiry.deadline(created_at, rules.now);
        if !self.stored || self.cycle {
            let id = if self.cycle {
                rules.ids.generate()
            } else {
                self.id.clone()
            };
            return SavePlan::Create(NewRecord {
                record: Record {
                    key: if self.cycle {
                        id.storage_key()
                    } else {
                        self.key
                    },
                    data: self.data.to_map(),
                    created_at,
                    expires_at: deadline,
                    owner: self.owner.clone(),
                },
                id,
                cycled_from: self.stored.then(|| (self.key, self.changes.clone())),
            });
        }
        if !self.changes.is_empty() {
            return SavePlan::Update {
                key: self.key,
                changes: std::mem::take(&mut self.changes),
                expires_at: deadline,
            };
        }
        if expiry.idle().is_some() && refresh_due(touch_after, self.expires_at, deadline) {
            return SavePlan::Touch {
                key: self.key,
                expires_at: deadline,
            };
        }
        SavePlan::Nothing(SaveOutcome::Unchanged)
    }

    /// The leftover record of [`SavePlan::DeleteStale`] (or the old record of a cycle) could
    /// not be deleted: the next save tries again.
    pub(crate) fn delete_later(&mut self, key: StorageKey) {
        self.stale = Some(key);
    }

    /// Whether `key`, just deleted as stale, was a destroyed session's record (told once).
    pub(crate) fn take_destroyed(&mut self, key: StorageKey) -> bool {
        if self.destroyed_key == Some(key) {
            self.destroyed_key = None;
            return true;
        }
        false
    }

    /// [`SavePlan::Delete`] deleted the record.
    pub(crate) fn on_deleted(&mut self) {
        self.stored = false;
        self.changes = Changes::new();
    }

    /// [`SavePlan::Create`] created `record` under `id`. Edits made to the handle while the
    /// store call ran stay pending.
    pub(crate) fn on_created(&mut self, id: SessionId, record: &Record) {
        self.id = id;
        self.key = record.key;
        self.stored = true;
        self.cycle = false;
        self.restarted = false;
        self.created_at = record.created_at;
        self.expires_at = record.expires_at;
        self.changes = diff(&record.data, self.data.map_mut());
        if record.owner != self.owner {
            self.changes.set_owner(self.owner.as_deref());
        }
    }

    /// [`SavePlan::Update`] wrote the changes `written`. Its counters now read as the store
    /// wrote them (every addition saved before, other requests' included), plus what this
    /// handle added since.
    pub(crate) fn on_updated(&mut self, expires_at: Timestamp, written: &Changes) {
        self.expires_at = expires_at;
        for (key, inc) in written.incremented() {
            let Some(stored) = inc.written() else {
                continue;
            };
            // A later write, removal or clear of the key decides its value here.
            if self.changes.is_cleared()
                || self.changes.written().contains_key(key)
                || self.changes.removed().contains(key)
            {
                continue;
            }
            let pending = self.changes.incremented().get(key).map_or(0, Increment::by);
            if self.data.contains_key(key) {
                let value = inc.codec().encode_counter(stored.saturating_add(pending));
                self.data.put_target().insert(key.clone(), value);
            }
        }
    }

    /// [`SavePlan::Touch`] moved the expiry.
    pub(crate) fn on_touched(&mut self, expires_at: Timestamp) {
        self.expires_at = expires_at;
    }

    /// The store has no live record (deleted by another request, expired, or forwarded
    /// after another request's login): the session is over for this handle.
    pub(crate) fn on_gone(&mut self) {
        self.stored = false;
        self.destroyed = true;
        self.data = Data::default();
        self.changes = Changes::new();
    }

    /// [`SavePlan::Update`] failed and wrote nothing: its changes are pending again, before
    /// any made since.
    pub(crate) fn restore(&mut self, changes: Changes) {
        let later = std::mem::replace(&mut self.changes, changes);
        self.changes.extend(later);
    }

    /// The first write after `destroy`: from here on the handle is a fresh session.
    fn restart(&mut self) {
        if self.stored {
            // Deleted by the next save before the fresh session is created.
            self.stale = Some(self.key);
            self.destroyed_key = Some(self.key);
        }
        self.destroyed = false;
        self.restarted = true;
        self.stored = false;
        self.cycle = true;
        self.owner = None;
        self.changes = Changes::new();
    }

    pub(crate) fn is_stored(&self) -> bool {
        self.stored
    }

    /// The value of one of the session's reserved keys.
    pub(crate) fn reserved(&self, key: &str) -> Option<&[u8]> {
        match &self.data {
            Data::Map(map) => reserved(map, key),
            Data::Body { body, written } => written
                .get(key)
                .map(Vec::as_slice)
                .or_else(|| body.reserved(key)),
        }
    }

    /// How many keys the application wrote (reserved ones left out).
    pub(crate) fn user_keys(&mut self) -> usize {
        self.data
            .map_mut()
            .keys()
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .count()
    }

    /// Writes one of the session's own reserved keys.
    pub(crate) fn put_reserved(&mut self, key: &str, bytes: Vec<u8>) {
        self.put(key.to_owned(), bytes);
    }

    fn put(&mut self, key: String, bytes: Vec<u8>) {
        if self.destroyed {
            self.restart();
        }
        // Replacing a value (the common case) copies it into the old value's buffer and
        // moves the key into the change set: no allocation beyond the caller's.
        // Over a body read in place the value goes beside it, shadowing the body's.
        let target = self.data.put_target();
        if let Some(old) = target.get_mut(&key) {
            old.clone_from(&bytes);
            self.changes.set(key, bytes);
        } else {
            self.changes.set(key.clone(), bytes.clone());
            target.insert(key, bytes);
        }
    }

    fn delete(&mut self, key: &str) -> bool {
        let existed = self.data.map_mut().remove(key).is_some();
        if existed {
            self.changes.remove(key);
        }
        existed
    }
}

/// The changes still to write after `written` was stored as a whole record while the handle
/// went on to `current`: the difference between the two.
fn diff(written: &BTreeMap<String, Vec<u8>>, current: &BTreeMap<String, Vec<u8>>) -> Changes {
    let mut left = Changes::new();
    for (key, value) in current {
        if written.get(key) != Some(value) {
            left.set(key.clone(), value.clone());
        }
    }
    for key in written.keys() {
        if !current.contains_key(key) {
            left.remove(key);
        }
    }
    left
}

/// The value of the reserved key `key` (one starting with [`RESERVED_PREFIX`]). Reserved
/// keys start with NUL, so only the empty key sorts before them: a map whose first
/// non-empty key is not reserved has none, and the common case costs no search (this runs
/// several times a request).
pub(crate) fn reserved<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &str) -> Option<&'a [u8]> {
    debug_assert!(key.starts_with(RESERVED_PREFIX));
    match data.first_key_value() {
        Some((first, _)) if first.starts_with('\0') => {}
        Some((empty, _)) if empty.is_empty() => {}
        _ => return None,
    }
    data.get(key).map(Vec::as_slice)
}

fn check_key(key: &str) -> Result<(), SessionError> {
    if key.starts_with(RESERVED_PREFIX) {
        return Err(SessionError::ReservedKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Session")
            .field("key", &state.key)
            .field("keys", &state.data.len())
            .field("stored", &state.stored)
            .field("modified", &!state.changes.is_empty())
            .field("destroyed", &state.destroyed)
            .field("expires_at", &state.expires_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod plan_tests {
    //! The save plan as a table: a session's state in, the plan out, without a store.

    use super::*;

    #[test]
    fn reserved_keys_are_found_behind_the_empty_key_and_only_there() {
        let data = |keys: &[&str]| -> BTreeMap<String, Vec<u8>> {
            keys.iter().map(|k| ((*k).to_owned(), vec![1])).collect()
        };
        let key = "\u{0}session:expiry";
        assert_eq!(reserved(&data(&[key, "a"]), key), Some(&[1u8][..]));
        assert_eq!(reserved(&data(&["", key, "a"]), key), Some(&[1u8][..]));
        assert_eq!(reserved(&data(&["", "a"]), key), None);
        assert_eq!(reserved(&data(&["a"]), key), None);
        assert_eq!(reserved(&data(&[]), key), None);
        assert_eq!(reserved(&data(&["\u{0}session:flash:x"]), key), None);
    }
    use crate::id::UuidV4Generator;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000).saturating_add(Duration::from_secs(secs))
    }

    fn rules(now: Timestamp) -> SaveRules<'static> {
        SaveRules {
            now,
            expiry: Expiry::new(Some(HOUR), None),
            touch_after: Duration::from_secs(360),
            ids: &UuidV4Generator,
        }
    }

    fn fresh() -> Session {
        Session::new(Codec::Bincode, UuidV4Generator.generate(), at(0), at(3600))
    }

    /// A session loaded from the store, created and last written at `at(0)`.
    fn loaded() -> Session {
        let id = UuidV4Generator.generate();
        let record = Record {
            key: id.storage_key(),
            data: BTreeMap::from([("a".to_owned(), vec![1])]),
            created_at: at(0),
            expires_at: at(3600),
            owner: Some("alice".to_owned()),
        };
        Session::from_record(Codec::Bincode, id, record)
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        DeleteStale,
        Nothing(SaveOutcome),
        Delete,
        CreateSameId { cycled: bool },
        CreateNewId { cycled: bool },
        Update,
        Touch,
    }

    fn shape(session: &Session, plan: &SavePlan) -> Want {
        let state = session.lock();
        match plan {
            SavePlan::DeleteStale(_) => Want::DeleteStale,
            SavePlan::Nothing(outcome) => Want::Nothing(*outcome),
            SavePlan::Delete(key) => {
                assert_eq!(*key, state.key);
                Want::Delete
            }
            SavePlan::Create(new) => {
                assert_eq!(new.record.key, new.id.storage_key());
                assert_eq!(new.record.data, state.data.to_map());
                assert_eq!(new.record.owner, state.owner);
                let cycled = new.cycled_from.is_some();
                if new.id == state.id {
                    Want::CreateSameId { cycled }
                } else {
                    Want::CreateNewId { cycled }
                }
            }
            SavePlan::Update { key, .. } => {
                assert_eq!(*key, state.key);
                Want::Update
            }
            SavePlan::Touch { key, .. } => {
                assert_eq!(*key, state.key);
                Want::Touch
            }
        }
    }

    #[test]
    fn the_plan_follows_the_state() {
        type Setup = fn() -> Session;
        let cases: &[(&str, Setup, u64, Want)] = &[
            (
                "new and empty",
                fresh,
                1,
                Want::Nothing(SaveOutcome::Unchanged),
            ),
            (
                "new with data",
                || {
                    let s = fresh();
                    s.insert("a", 1).unwrap();
                    s
                },
                1,
                Want::CreateSameId { cycled: false },
            ),
            (
                "new, cycled",
                || {
                    let s = fresh();
                    s.insert("a", 1).unwrap();
                    s.cycle_id();
                    s
                },
                1,
                Want::CreateNewId { cycled: false },
            ),
            (
                "loaded, untouched, touch not due",
                loaded,
                60,
                Want::Nothing(SaveOutcome::Unchanged),
            ),
            ("loaded, untouched, touch due", loaded, 600, Want::Touch),
            (
                "loaded, changed",
                || {
                    let s = loaded();
                    s.insert("b", 2).unwrap();
                    s
                },
                1,
                Want::Update,
            ),
            (
                "loaded, owner changed",
                || {
                    let s = loaded();
                    s.set_owner(Some("bob"));
                    s
                },
                1,
                Want::Update,
            ),
            (
                "loaded, owner set to what it was",
                || {
                    let s = loaded();
                    s.set_owner(Some("alice"));
                    s
                },
                1,
                Want::Nothing(SaveOutcome::Unchanged),
            ),
            (
                "loaded, cycled (login)",
                || {
                    let s = loaded();
                    s.cycle_id();
                    s
                },
                1,
                Want::CreateNewId { cycled: true },
            ),
            (
                "loaded, destroyed",
                || {
                    let s = loaded();
                    s.destroy();
                    s
                },
                1,
                Want::Delete,
            ),
            (
                "new, destroyed",
                || {
                    let s = fresh();
                    s.destroy();
                    s
                },
                1,
                Want::Nothing(SaveOutcome::Destroyed),
            ),
            (
                "loaded, destroyed, written again",
                || {
                    let s = loaded();
                    s.destroy();
                    s.flash("notice", "bye").unwrap();
                    s
                },
                1,
                Want::DeleteStale,
            ),
        ];
        for (name, setup, secs, want) in cases {
            let session = setup();
            let plan = session.lock().plan(&rules(at(*secs)));
            assert_eq!(&shape(&session, &plan), want, "{name}");
        }
    }

    #[test]
    fn a_write_after_destroy_deletes_the_old_record_then_creates_a_fresh_session() {
        let session = loaded();
        let old = session.lock().key;
        session.destroy();
        session.flash("notice", "bye").unwrap();
        let now = at(100);
        let SavePlan::DeleteStale(stale) = session.lock().plan(&rules(now)) else {
            panic!("the destroyed record goes first");
        };
        assert_eq!(stale, old);
        let SavePlan::Create(new) = session.lock().plan(&rules(now)) else {
            panic!("then the fresh session is created");
        };
        assert_ne!(new.record.key, old);
        assert!(
            new.cycled_from.is_none(),
            "nothing to forward from a logout"
        );
        assert_eq!(new.record.created_at, now, "its life starts now");
        assert_eq!(new.record.owner, None);
        assert_eq!(new.record.data.len(), 1);
    }

    #[test]
    fn a_touch_moves_the_deadline_and_needs_an_idle_timeout() {
        let session = loaded();
        let SavePlan::Touch { expires_at, .. } = session.lock().plan(&rules(at(600))) else {
            panic!("a touch is due");
        };
        assert_eq!(expires_at, at(600 + 3600));
        session.lock().on_touched(expires_at);
        assert_eq!(session.expires_at(), expires_at);
        let no_idle = SaveRules {
            expiry: Expiry::new(None, Some(HOUR * 100)),
            ..rules(at(600))
        };
        assert!(matches!(
            session.lock().plan(&no_idle),
            SavePlan::Nothing(SaveOutcome::Unchanged)
        ));
    }

    #[test]
    fn a_failed_update_puts_its_changes_back_before_later_ones() {
        let session = loaded();
        session.insert("b", 1).unwrap();
        session.remove("a");
        let SavePlan::Update { changes, .. } = session.lock().plan(&rules(at(1))) else {
            panic!("an update");
        };
        assert!(!session.is_modified(), "the changes moved into the plan");
        // While the store call runs the handler writes again.
        session.insert("b", 2).unwrap();
        session.lock().restore(changes);
        let state = session.lock();
        assert_eq!(state.changes.written().get("b"), Some(&session_value(2)));
        assert!(state.changes.removed().contains("a"));
    }

    fn session_value(n: i32) -> Vec<u8> {
        Codec::Bincode.encode(&n).unwrap()
    }

    #[test]
    fn edits_made_while_a_create_runs_stay_pending() {
        let session = fresh();
        session.insert("a", 1).unwrap();
        session.set_owner(Some("alice"));
        let SavePlan::Create(new) = session.lock().plan(&rules(at(1))) else {
            panic!("a create");
        };
        session.insert("a", 2).unwrap();
        session.insert("b", 3).unwrap();
        session.set_owner(None);
        session.lock().on_created(new.id.clone(), &new.record);
        assert!(!session.is_new());
        assert_eq!(session.id(), new.id);
        let state = session.lock();
        assert_eq!(state.changes.written().len(), 2);
        assert_eq!(state.changes.owner(), &crate::OwnerChange::Remove);
    }

    #[test]
    fn a_vanished_record_ends_the_handle() {
        let session = loaded();
        session.insert("b", 2).unwrap();
        let plan = session.lock().plan(&rules(at(1)));
        assert!(matches!(plan, SavePlan::Update { .. }));
        session.lock().on_gone();
        assert!(session.is_destroyed() && session.is_new() && session.is_empty());
        assert!(matches!(
            session.lock().plan(&rules(at(2))),
            SavePlan::Nothing(SaveOutcome::Destroyed)
        ));
    }

    #[test]
    fn a_failed_stale_delete_is_tried_again() {
        let session = loaded();
        session.destroy();
        session.insert("x", 1).unwrap();
        let SavePlan::DeleteStale(stale) = session.lock().plan(&rules(at(1))) else {
            panic!("the stale record first");
        };
        session.lock().delete_later(stale);
        assert!(matches!(
            session.lock().plan(&rules(at(1))),
            SavePlan::DeleteStale(again) if again == stale
        ));
    }
}
