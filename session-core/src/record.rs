//! What a store keeps ([`Record`]) and what a request changed ([`Changes`]). Their wire
//! formats are [`crate::envelope`] and [`crate::body`].

use std::collections::{BTreeMap, BTreeSet};

use crate::{StorageKey, Timestamp};

/// One session as a store keeps it. Values are already encoded by the manager's codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The hashed id the record is filed under.
    pub key: StorageKey,
    /// Session key → encoded value.
    pub data: BTreeMap<String, Vec<u8>>,
    /// When the session was first saved.
    pub created_at: Timestamp,
    /// When it expires; a store never returns it from `load` at or after this time.
    pub expires_at: Timestamp,
    /// The user the session belongs to, for the per-user index.
    pub owner: Option<String>,
}

impl Record {
    /// Whether the record has expired at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// Bytes of key names and values.
    pub fn data_size(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// What one request did to a session's data: applied by a store key by key.
///
/// `cleared` is applied first, then `removed`, then `set`; the methods keep the three
/// consistent (a key is never both set and removed).
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::Changes;
///
/// let mut data = BTreeMap::from([("a".to_owned(), vec![1]), ("b".to_owned(), vec![2])]);
/// let mut changes = Changes::new();
/// changes.remove("a");
/// changes.set("c", vec![3]);
/// changes.apply_to(&mut data);
/// assert_eq!(data, BTreeMap::from([("b".to_owned(), vec![2]), ("c".to_owned(), vec![3])]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Changes {
    /// Every key was removed before `removed` and `set` apply.
    pub cleared: bool,
    /// Keys written, with their encoded values.
    pub set: BTreeMap<String, Vec<u8>>,
    /// Keys removed.
    pub removed: BTreeSet<String>,
    /// A new owner (`Some(None)` removes it); `None` leaves the owner as it is.
    pub owner: Option<Option<String>>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.set.is_empty() && self.removed.is_empty() && self.owner.is_none()
    }

    /// Records a write of `key`.
    pub fn set(&mut self, key: impl Into<String>, value: Vec<u8>) {
        let key = key.into();
        self.removed.remove(&key);
        self.set.insert(key, value);
    }

    /// Records a removal of `key`.
    pub fn remove(&mut self, key: &str) {
        self.set.remove(key);
        if !self.cleared {
            self.removed.insert(key.to_owned());
        }
    }

    /// Records the removal of every key.
    pub fn clear(&mut self) {
        self.cleared = true;
        self.set.clear();
        self.removed.clear();
    }

    /// Adds `later` on top of these changes, as if both happened in order.
    pub fn extend(&mut self, later: Changes) {
        let owner = later.owner.clone().or_else(|| self.owner.take());
        if later.cleared {
            *self = later;
            self.owner = owner;
            return;
        }
        self.owner = owner;
        for key in later.removed {
            self.remove(&key);
        }
        for (key, value) in later.set {
            self.set(key, value);
        }
    }

    /// Applies the changes to a record: its data (see [`Changes::apply_to`]) and its owner.
    pub fn apply_to_record(&self, record: &mut Record) {
        self.apply_to(&mut record.data);
        if let Some(owner) = &self.owner {
            record.owner.clone_from(owner);
        }
    }

    /// Applies the changes to a record's data.
    pub fn apply_to(&self, data: &mut BTreeMap<String, Vec<u8>>) {
        if self.cleared {
            data.clear();
        }
        for key in &self.removed {
            data.remove(key);
        }
        for (key, value) in &self.set {
            data.insert(key.clone(), value.clone());
        }
    }
}
