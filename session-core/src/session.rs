//! The [`Session`] handle a request works with.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Changes, Codec, Record, SessionError, SessionId, StorageKey, Timestamp};

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

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) id: SessionId,
    /// `id.storage_key()`, computed once (a SHA-256).
    pub(crate) key: StorageKey,
    /// A record exists in the store under `id`.
    pub(crate) stored: bool,
    pub(crate) data: BTreeMap<String, Vec<u8>>,
    pub(crate) changes: Changes,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) owner: Option<String>,
    pub(crate) destroyed: bool,
    pub(crate) cycle: bool,
    /// A record `cycle_id` replaced but could not delete yet, or the record of a destroyed
    /// session written to again; the next save deletes it first.
    pub(crate) stale: Option<StorageKey>,
    /// Written to after `destroy`: a fresh session (new id, new creation time) that the next
    /// save creates after deleting the destroyed one.
    pub(crate) restarted: bool,
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
                data: BTreeMap::new(),
                changes: Changes::new(),
                created_at,
                expires_at,
                owner: None,
                destroyed: false,
                cycle: false,
                stale: None,
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
                data: record.data,
                changes: Changes::new(),
                created_at: record.created_at,
                expires_at: record.expires_at,
                owner: record.owner,
                destroyed: false,
                cycle: false,
                stale: None,
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
            .map(|key| match state.data.get(*key) {
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
            .keys()
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .cloned()
            .collect()
    }

    /// How many keys have values (flash messages not included).
    pub fn len(&self) -> usize {
        self.lock()
            .data
            .keys()
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .count()
    }

    /// Whether no key has a value (flash messages not included).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every value and flash message.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.data.clear();
        state.changes.clear();
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
        let Some(bytes) = state.data.get(&full).cloned() else {
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
        let owner = owner.map(str::to_owned);
        if state.owner != owner {
            state.owner.clone_from(&owner);
            state.changes.owner = Some(owner);
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
        state.data.clear();
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

impl State {
    /// The first write after `destroy`: from here on the handle is a fresh session.
    fn restart(&mut self) {
        if self.stored {
            // Deleted by the next save before the fresh session is created.
            self.stale = Some(self.key);
        }
        self.destroyed = false;
        self.restarted = true;
        self.stored = false;
        self.cycle = true;
        self.owner = None;
        self.changes = Changes::new();
    }

    fn put(&mut self, key: String, bytes: Vec<u8>) {
        if self.destroyed {
            self.restart();
        }
        // Replacing a value (the common case) copies it into the old value's buffer and
        // moves the key into the change set: no allocation beyond the caller's.
        if let Some(old) = self.data.get_mut(&key) {
            old.clone_from(&bytes);
            self.changes.set(key, bytes);
        } else {
            self.changes.set(key.clone(), bytes.clone());
            self.data.insert(key, bytes);
        }
    }

    fn delete(&mut self, key: &str) -> bool {
        let existed = self.data.remove(key).is_some();
        if existed {
            self.changes.remove(key);
        }
        existed
    }
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
