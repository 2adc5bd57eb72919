//! An in-process [`SessionStore`] for `session-core`: the default for development, tests and
//! single-process services.
//!
//! Records live in a sharded hash table (no global lock on the hot path). Each session costs
//! one allocation holding its key and its record's [`body`] (the envelope without framing or
//! checksum, which protect nothing inside one process), plus a 16-byte table slot, so memory
//! per session stays close to the data's own size. `update` merges changes into the stored
//! bytes under the shard's lock, in one pass and in place when the size is unchanged: no
//! lost updates, and a deleted session stays deleted. A load hands the manager a copy of the
//! body ([`load_body`](SessionStore::load_body)), which the session reads in place: a request
//! decodes only the values it reads. The per-user index (`sessions_of`,
//! `delete_sessions_of`) is a scan of the shards reading only each entry's owner; a login
//! under a cap (`max_sessions_per_owner`) writes and ends the owner's oldest sessions in one
//! step under a login lock, so no listing shows the owner over the cap. Expired
//! records are invisible at once and removed by
//! [`delete_expired`](SessionStore::delete_expired); run
//! [`spawn_sweeper`](session_core::spawn_sweeper) to call it periodically.
//!
//! Data is lost when the process exits; use `session-disk` or a server store to keep it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use session_core::{SaveOutcome, SessionManager, CancellationToken, spawn_sweeper};
//! use session_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_core::SessionError> {
//! let manager = SessionManager::new(MemoryStore::default());
//! let cancel = CancellationToken::new();
//! let sweeper = spawn_sweeper(manager.store().clone(), Duration::from_secs(60), cancel.clone());
//!
//! let session = manager.create();
//! session.insert("user", "alice")?;
//! assert_eq!(manager.save(&session).await?, SaveOutcome::Created);
//!
//! // A later request brings the id back from its cookie.
//! let id = session.id();
//! let again = manager.load(&id).await?.expect("saved");
//! assert_eq!(again.get::<String>("user")?.as_deref(), Some("alice"));
//!
//! cancel.cancel();
//! sweeper.await.unwrap();
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! The memory store itself never fails; [`StoreError::Corrupt`] would mean memory
//! corruption and [`StoreError::IdCollision`] a taken key on `create`.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use hashbrown::HashTable;
use session_core::{
    CappedWrite, Changes, Loaded, OwnedWrite, OwnerCap, Record, ScanCursor, ScanPage, SessionInfo,
    SessionStore, StorageKey, StoreError, Timestamp, body,
};

const STORE: &str = "memory";
const KEY_LEN: usize = 32;

/// The in-process session store. `MemoryStore::default()` has 64 shards.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    /// Held for the whole of a login under a cap (`write_capped`): one login at a time.
    logins: Mutex<()>,
}

/// One shard: entries are `key (32 bytes) ++ body`, hashed by the key's first 8 bytes
/// (already uniformly random: the key is a SHA-256).
#[derive(Default)]
struct Shard {
    table: HashTable<Box<[u8]>>,
    /// Where `update` writes the patched body before it replaces the old one (in place when
    /// the size is unchanged), so an update allocates only when the size changes.
    scratch: Vec<u8>,
    /// Forward pointers of cycled sessions (`retire`): the new key and until when. Few and
    /// short-lived, so a plain map beside the table.
    forwards: std::collections::HashMap<StorageKey, (StorageKey, Timestamp)>,
}

/// A larger scratch buffer (left by a huge session) is not kept after its update.
const SCRATCH_KEEP: usize = 64 * 1024;

fn entry_key(entry: &[u8]) -> &[u8] {
    &entry[..KEY_LEN]
}

fn hash_entry(entry: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&entry[..8]);
    u64::from_le_bytes(b)
}

fn make_entry(record: &Record) -> Box<[u8]> {
    // Encoded in place after the key: one allocation of the exact size, no copy.
    let mut entry = Vec::with_capacity(KEY_LEN + body::len(record));
    entry.extend_from_slice(record.key.as_bytes());
    body::encode_into(record, &mut entry);
    entry.into_boxed_slice()
}

fn read_entry(key: StorageKey, entry: &[u8]) -> Result<Record, StoreError> {
    body::decode(key, &entry[KEY_LEN..]).map_err(corrupt)
}

fn corrupt(e: session_core::envelope::FormatError) -> StoreError {
    StoreError::corrupt(STORE, e)
}

fn owned_by(entry: &[u8], owner: &str) -> bool {
    body::peek_owner(&entry[KEY_LEN..]).is_ok_and(|o| o == Some(owner))
}

fn expired(entry: &[u8], now: Timestamp) -> bool {
    // An unreadable entry counts as expired, so a sweep removes it.
    body::peek_expiry(&entry[KEY_LEN..]).map_or(true, |at| at <= now)
}

impl MemoryStore {
    /// A store with 64 shards.
    pub fn new() -> Self {
        Self::with_shards(64)
    }

    /// A store with `shards` shards (at least 1): more shards, less lock contention.
    pub fn with_shards(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            logins: Mutex::new(()),
        }
    }

    /// How many records are held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn create_now(&self, record: &Record) -> Result<(), StoreError> {
        let entry = make_entry(record);
        let now = Timestamp::now();
        let mut shard = self.shard(&record.key);
        if shard
            .forwards
            .get(&record.key)
            .is_some_and(|(_, until)| *until > now)
        {
            return Err(StoreError::IdCollision);
        }
        let hash = record.key.prefix_u64();
        match shard.table.entry(
            hash,
            |e| entry_key(e) == record.key.as_bytes(),
            |e| hash_entry(e),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                if !expired(slot.get(), now) {
                    return Err(StoreError::IdCollision);
                }
                *slot.get_mut() = entry;
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
        Ok(())
    }

    fn update_now(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let mut guard = self.shard(key);
        let Shard { table, scratch, .. } = &mut *guard;
        let Some(entry) = live_mut(table, key, now) else {
            return Ok(false);
        };
        scratch.clear();
        body::patch(&entry[KEY_LEN..], changes, expires_at, scratch).map_err(corrupt)?;
        if scratch.len() == entry.len() - KEY_LEN {
            entry[KEY_LEN..].copy_from_slice(scratch);
        } else {
            let mut resized = Vec::with_capacity(KEY_LEN + scratch.len());
            resized.extend_from_slice(key.as_bytes());
            resized.extend_from_slice(scratch);
            *entry = resized.into_boxed_slice();
        }
        if scratch.capacity() > SCRATCH_KEEP {
            *scratch = Vec::new();
        }
        Ok(true)
    }

    fn delete_now(&self, key: &StorageKey) {
        let mut shard = self.shard(key);
        if let Ok(slot) = shard
            .table
            .find_entry(key.prefix_u64(), |e| entry_key(e) == key.as_bytes())
        {
            slot.remove();
        }
        shard.forwards.remove(key);
    }

    fn sessions_of_now(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = Timestamp::now();
        let mut found = Vec::new();
        for shard in &*self.shards {
            let shard = lock(shard);
            for entry in shard
                .table
                .iter()
                .filter(|e| !expired(e, now) && owned_by(e, owner))
            {
                let mut key = [0u8; KEY_LEN];
                key.copy_from_slice(entry_key(entry));
                found.push(SessionInfo::from(&read_entry(
                    StorageKey::from_bytes(key),
                    entry,
                )?));
            }
        }
        Ok(found)
    }

    fn shard(&self, key: &StorageKey) -> MutexGuard<'_, Shard> {
        // Bytes 8..16 choose the shard; bytes 0..8 hash within it.
        let mut b = [0u8; 8];
        b.copy_from_slice(&key.as_bytes()[8..16]);
        let index = u64::from_le_bytes(b) % self.shards.len() as u64;
        lock(&self.shards[index as usize])
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Nothing panics while a shard is locked; a poisoned lock still guards consistent data.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// The live entry under `key`, for a write.
fn live_mut<'t>(
    table: &'t mut HashTable<Box<[u8]>>,
    key: &StorageKey,
    now: Timestamp,
) -> Option<&'t mut Box<[u8]>> {
    table
        .find_mut(key.prefix_u64(), |e| entry_key(e) == key.as_bytes())
        .filter(|e| !expired(e, now))
}

impl Shard {
    fn find(&self, key: &StorageKey) -> Option<&[u8]> {
        self.table
            .find(key.prefix_u64(), |e| entry_key(e) == key.as_bytes())
            .map(|e| &**e)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    /// Expired records stay until read or swept (`spawn_sweeper`).
    fn expires_natively(&self) -> bool {
        false
    }

    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        let shard = self.shard(key);
        match shard.find(key) {
            Some(entry) if !expired(entry, Timestamp::now()) => read_entry(*key, entry).map(Some),
            _ => Ok(None),
        }
    }

    /// The entry's body copied out as it is stored: values are decoded only when read.
    async fn load_body(&self, key: &StorageKey) -> Result<Option<Loaded>, StoreError> {
        let bytes = match self.shard(key).find(key) {
            Some(entry) if !expired(entry, Timestamp::now()) => entry[KEY_LEN..].to_vec(),
            _ => return Ok(None),
        };
        // Checked outside the shard's lock.
        let body = body::Body::new(bytes).map_err(corrupt)?;
        Ok(Some(Loaded::Body { key: *key, body }))
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        self.create_now(record)
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.update_now(key, changes, expires_at)
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        let mut shard = self.shard(key);
        let Some(entry) = live_mut(&mut shard.table, key, Timestamp::now()) else {
            return Ok(false);
        };
        body::set_expiry(&mut entry[KEY_LEN..], expires_at).map_err(corrupt)?;
        Ok(true)
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.delete_now(key);
        Ok(())
    }

    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let now = Timestamp::now();
        let mut shard = self.shard(key);
        let Ok(slot) = shard
            .table
            .find_entry(key.prefix_u64(), |e| entry_key(e) == key.as_bytes())
        else {
            return Ok(None);
        };
        if expired(slot.get(), now) {
            return Ok(None);
        }
        let record = read_entry(*key, slot.get())?;
        slot.remove();
        shard.forwards.insert(*key, (*to, until));
        Ok(Some(record))
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let now = Timestamp::now();
        Ok(self
            .shard(key)
            .forwards
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(to, _)| *to))
    }

    /// A scan of every shard (the owner is read from each entry's header, not decoded):
    /// O(sessions), fine for a rare "log out everywhere". It waits for a login under a cap
    /// to finish, so it never shows an owner over the cap.
    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let _login = self.logins.lock().unwrap_or_else(PoisonError::into_inner);
        self.sessions_of_now(owner)
    }

    /// One step under the login lock, with no await inside: the write, the listing and the
    /// ending, so logins under a cap are serialized and none is left half done.
    async fn write_capped(
        &self,
        write: OwnedWrite<'_>,
        cap: &OwnerCap<'_>,
    ) -> Result<CappedWrite, StoreError> {
        let _login = self.logins.lock().unwrap_or_else(PoisonError::into_inner);
        let written = match write {
            OwnedWrite::Create(record) => self.create_now(record).map(|()| true)?,
            OwnedWrite::Update {
                key,
                changes,
                expires_at,
            } => self.update_now(key, changes, expires_at)?,
        };
        if !written {
            return Ok(CappedWrite::default());
        }
        let ended = cap.to_end(write.key(), self.sessions_of_now(cap.owner)?);
        for key in &ended {
            self.delete_now(key);
        }
        Ok(CappedWrite { written, ended })
    }

    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        let mut removed = 0u64;
        for shard in &*self.shards {
            lock(shard).table.retain(|e| {
                let gone = owned_by(e, owner);
                removed += u64::from(gone);
                !gone
            });
        }
        Ok(removed)
    }

    /// Shard by shard, each shard's keys in order; the cursor is `<shard>:<last key>`. A page
    /// costs a pass over one or more shards' keys (no copy of their records).
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let limit = limit.max(1);
        let (mut shard, mut after) = ScanCursor::part(cursor, STORE, self.shards.len())?;
        let mut keys = Vec::new();
        while shard < self.shards.len() {
            let mut found: Vec<StorageKey> = lock(&self.shards[shard])
                .table
                .iter()
                .map(|e| {
                    let mut key = [0u8; KEY_LEN];
                    key.copy_from_slice(entry_key(e));
                    StorageKey::from_bytes(key)
                })
                .filter(|k| after.is_none_or(|a| *k > a))
                .collect();
            found.sort_unstable();
            let room = limit - keys.len();
            if found.len() > room {
                found.truncate(room);
                let last = found[room - 1];
                keys.extend(found);
                return Ok(ScanPage {
                    keys,
                    next: Some(ScanCursor::in_part(shard, Some(&last))),
                });
            }
            keys.extend(found);
            shard += 1;
            after = None;
            if keys.len() == limit && shard < self.shards.len() {
                return Ok(ScanPage {
                    keys,
                    next: Some(ScanCursor::in_part(shard, None)),
                });
            }
        }
        Ok(ScanPage { keys, next: None })
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut removed = 0u64;
        for shard in &*self.shards {
            let mut shard = lock(shard);
            shard.table.retain(|e| {
                let gone = expired(e, now);
                removed += u64::from(gone);
                !gone
            });
            shard.forwards.retain(|_, (_, until)| *until > now);
        }
        Ok(removed)
    }
}
