//! What a store keeps ([`Record`]) and what a request changed ([`Changes`]). Their wire
//! formats are [`crate::envelope`] and [`crate::body`].

use std::collections::{BTreeMap, BTreeSet};

use crate::id::StorageKey;
use crate::time::Timestamp;

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
/// The removal of every key ([`Changes::is_cleared`]) applies first, then the
/// [`removed`](Changes::removed) keys, then the [`written`](Changes::written) ones; the
/// methods keep the three consistent (a key is never both written and removed, and nothing
/// is listed as removed after a clear).
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{Changes, OwnerChange};
///
/// let mut data = BTreeMap::from([("a".to_owned(), vec![1]), ("b".to_owned(), vec![2])]);
/// let mut changes = Changes::new();
/// changes.remove("a");
/// changes.set("c", vec![3]);
/// changes.set_owner(Some("alice"));
/// changes.apply_to(&mut data);
/// assert_eq!(data, BTreeMap::from([("b".to_owned(), vec![2]), ("c".to_owned(), vec![3])]));
/// assert_eq!(changes.owner(), &OwnerChange::Set("alice".to_owned()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    cleared: bool,
    written: BTreeMap<String, Vec<u8>>,
    removed: BTreeSet<String>,
    owner: OwnerChange,
}

/// What a [`Changes`] does to the session's owner (the user of the per-user index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerChange {
    /// The owner stays as it is.
    #[default]
    Keep,
    /// The session now belongs to this user.
    Set(String),
    /// The session now belongs to nobody.
    Remove,
}

impl OwnerChange {
    /// The owner after this change, given the owner before it.
    ///
    /// ```
    /// use session_core::OwnerChange;
    ///
    /// assert_eq!(OwnerChange::Keep.apply(Some("alice")), Some("alice"));
    /// assert_eq!(OwnerChange::Set("bob".into()).apply(Some("alice")), Some("bob"));
    /// assert_eq!(OwnerChange::Remove.apply(Some("alice")), None);
    /// ```
    pub fn apply<'a>(&'a self, before: Option<&'a str>) -> Option<&'a str> {
        match self {
            Self::Keep => before,
            Self::Set(owner) => Some(owner),
            Self::Remove => None,
        }
    }

    /// Whether the owner stays as it is.
    pub fn is_keep(&self) -> bool {
        matches!(self, Self::Keep)
    }
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.written.is_empty() && self.removed.is_empty() && self.owner.is_keep()
    }

    /// Whether every key is removed before the other changes apply.
    pub fn is_cleared(&self) -> bool {
        self.cleared
    }

    /// The keys written, with their encoded values, in key order.
    pub fn written(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.written
    }

    /// The keys removed, in key order (none after a clear: the clear removes them).
    pub fn removed(&self) -> &BTreeSet<String> {
        &self.removed
    }

    /// What happens to the owner.
    pub fn owner(&self) -> &OwnerChange {
        &self.owner
    }

    /// Records a write of `key`.
    pub fn set(&mut self, key: impl Into<String>, value: Vec<u8>) {
        let key = key.into();
        self.removed.remove(&key);
        self.written.insert(key, value);
    }

    /// Records a removal of `key`.
    pub fn remove(&mut self, key: &str) {
        self.written.remove(key);
        if !self.cleared {
            self.removed.insert(key.to_owned());
        }
    }

    /// Records the removal of every key.
    pub fn clear(&mut self) {
        self.cleared = true;
        self.written.clear();
        self.removed.clear();
    }

    /// Records a new owner, or with `None` its removal.
    pub fn set_owner(&mut self, owner: Option<&str>) {
        self.owner = match owner {
            Some(owner) => OwnerChange::Set(owner.to_owned()),
            None => OwnerChange::Remove,
        };
    }

    /// Adds `later` on top of these changes, as if both happened in order.
    pub fn extend(&mut self, later: Changes) {
        let Changes {
            cleared,
            written,
            removed,
            owner,
        } = later;
        if !owner.is_keep() {
            self.owner = owner;
        }
        if cleared {
            self.clear();
        }
        for key in removed {
            self.remove(&key);
        }
        for (key, value) in written {
            self.set(key, value);
        }
    }

    /// Applies the changes to a record: its data (see [`Changes::apply_to`]) and its owner.
    pub fn apply_to_record(&self, record: &mut Record) {
        self.apply_to(&mut record.data);
        match &self.owner {
            OwnerChange::Keep => {}
            OwnerChange::Set(owner) => record.owner = Some(owner.clone()),
            OwnerChange::Remove => record.owner = None,
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
        for (key, value) in &self.written {
            data.insert(key.clone(), value.clone());
        }
    }
}
