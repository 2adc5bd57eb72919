//! What a store keeps ([`Record`]) and what a request changed ([`Changes`]). Their wire
//! formats are [`crate::envelope`] and [`crate::body`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use crate::codec::Codec;
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
/// [`removed`](Changes::removed) keys, then the [`written`](Changes::written) ones, then the
/// [`incremented`](Changes::incremented) counters; the methods keep the four consistent (a
/// key is in at most one of them, and nothing is listed as removed or incremented after a
/// clear: an increment after a clear or a removal is a write of the amount).
///
/// An increment is an operation, not a value: a store applies it to the value it holds at
/// the moment it writes ([`Increment::apply`]), atomically with the rest of the changes, so
/// two requests that both add 1 leave 2 more, never 1.
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
///
/// Counters:
///
/// ```
/// use std::collections::BTreeMap;
/// use session_core::{Changes, Codec};
///
/// let mut data = BTreeMap::from([("visits".to_owned(), Codec::Bincode.encode(&41i64).unwrap())]);
/// let mut changes = Changes::new();
/// changes.increment("visits", 1, Codec::Bincode);
/// changes.increment("likes", 3, Codec::Bincode); // absent: counts from 0
/// changes.apply_to(&mut data);
/// assert_eq!(Codec::Bincode.decode::<i64>(&data["visits"]).unwrap(), 42);
/// assert_eq!(Codec::Bincode.decode::<i64>(&data["likes"]).unwrap(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    cleared: bool,
    written: BTreeMap<String, Vec<u8>>,
    removed: BTreeSet<String>,
    incremented: BTreeMap<String, Increment>,
    owner: OwnerChange,
}

/// An atomic addition to a counter: a session value that is an `i64` in the manager's
/// [`Codec`] (see [`Session::increment`](crate::Session::increment)).
///
/// It also carries back the value the store wrote ([`Increment::written`]): set by
/// [`Increment::apply`] for stores that add on the client, by
/// [`Increment::set_written`] for stores that add on the server. Clones share it; equality
/// ignores it.
#[derive(Debug, Clone)]
pub struct Increment {
    by: i64,
    codec: Codec,
    written: Arc<Mutex<Option<i64>>>,
}

impl PartialEq for Increment {
    fn eq(&self, other: &Self) -> bool {
        self.by == other.by && self.codec == other.codec
    }
}

impl Eq for Increment {}

impl Increment {
    /// An addition of `by` to a counter encoded with `codec`.
    pub fn new(by: i64, codec: Codec) -> Self {
        Self {
            by,
            codec,
            written: Arc::default(),
        }
    }

    /// The counter's value after the store's write, when the store told it: by
    /// [`Increment::apply`] (the last call, for a store that retries a compare-and-set) or
    /// [`Increment::set_written`].
    ///
    /// ```
    /// use session_core::{Codec, Increment};
    ///
    /// let add = Increment::new(5, Codec::Bincode);
    /// assert_eq!(add.written(), None);
    /// add.apply(Some(&Codec::Bincode.encode(&10i64).unwrap()));
    /// assert_eq!(add.written(), Some(15));
    /// ```
    pub fn written(&self) -> Option<i64> {
        *self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the counter's value after the write, for a store that adds on the server
    /// (MongoDB's `$inc`) and reads the result back.
    pub fn set_written(&self, value: i64) {
        *self.written.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }

    /// The amount added.
    pub fn by(&self) -> i64 {
        self.by
    }

    /// The codec the counter is encoded with.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The counter's new encoded value, given the value the store holds now: that value plus
    /// the amount. An absent value, or one that is not an `i64` in the codec, counts as 0
    /// (the counter starts over rather than failing a save); the sum saturates at the ends
    /// of `i64`.
    ///
    /// ```
    /// use session_core::{Codec, Increment};
    ///
    /// let add = Increment::new(5, Codec::Bincode);
    /// let ten = Codec::Bincode.encode(&10i64).unwrap();
    /// assert_eq!(Codec::Bincode.decode::<i64>(&add.apply(Some(&ten))).unwrap(), 15);
    /// assert_eq!(Codec::Bincode.decode::<i64>(&add.apply(None)).unwrap(), 5);
    /// ```
    pub fn apply(&self, current: Option<&[u8]>) -> Vec<u8> {
        let base = current.map_or(0, |bytes| self.codec.decode_counter(bytes).unwrap_or(0));
        let sum = base.saturating_add(self.by);
        self.set_written(sum);
        self.codec.encode_counter(sum)
    }

    /// The longest value [`Increment::apply`] returns.
    pub const MAX_ENCODED_LEN: usize = 20;

    fn add(&mut self, by: i64) {
        self.by = self.by.saturating_add(by);
    }
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
        !self.cleared
            && self.written.is_empty()
            && self.removed.is_empty()
            && self.incremented.is_empty()
            && self.owner.is_keep()
    }

    /// Whether every key is removed before the other changes apply.
    pub fn is_cleared(&self) -> bool {
        self.cleared
    }

    /// The keys written, with their encoded values, in key order.
    pub fn written(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.written
    }

    /// Bytes of the written key names and values (what a store checks against its size
    /// limit before an update).
    pub fn written_size(&self) -> usize {
        self.written.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The keys removed, in key order (none after a clear: the clear removes them).
    pub fn removed(&self) -> &BTreeSet<String> {
        &self.removed
    }

    /// The counters incremented, in key order, with what each adds (none after a clear, and
    /// none written or removed: those fold an increment into the written value).
    pub fn incremented(&self) -> &BTreeMap<String, Increment> {
        &self.incremented
    }

    /// What happens to the owner.
    pub fn owner(&self) -> &OwnerChange {
        &self.owner
    }

    /// Records a write of `key`.
    pub fn set(&mut self, key: impl Into<String>, value: Vec<u8>) {
        let key = key.into();
        self.removed.remove(&key);
        self.incremented.remove(&key);
        self.written.insert(key, value);
    }

    /// Records an addition of `by` to the counter under `key` (see [`Increment`]). After a
    /// write, a removal or a clear of the key in these changes, the value is known here, so
    /// the increment becomes a write of the sum.
    pub fn increment(&mut self, key: impl Into<String>, by: i64, codec: Codec) {
        let key = key.into();
        let add = Increment::new(by, codec);
        if let Some(value) = self.written.get_mut(&key) {
            *value = add.apply(Some(value));
        } else if self.cleared || self.removed.remove(&key) {
            self.written.insert(key, add.apply(None));
        } else {
            self.incremented
                .entry(key)
                .and_modify(|inc| inc.add(by))
                .or_insert(add);
        }
    }

    /// These changes with every increment turned into a write of its result, given the
    /// value each counter holds now (`current`): for stores that read the counters under a
    /// lock or a compare-and-set, then write.
    pub fn resolved<'a>(&self, current: impl Fn(&str) -> Option<&'a [u8]>) -> Changes {
        let mut resolved = Changes {
            incremented: BTreeMap::new(),
            ..self.clone()
        };
        for (key, inc) in &self.incremented {
            resolved
                .written
                .insert(key.clone(), inc.apply(current(key)));
        }
        resolved
    }

    /// Records a removal of `key`.
    pub fn remove(&mut self, key: &str) {
        self.written.remove(key);
        self.incremented.remove(key);
        if !self.cleared {
            self.removed.insert(key.to_owned());
        }
    }

    /// Records the removal of every key.
    pub fn clear(&mut self) {
        self.cleared = true;
        self.written.clear();
        self.removed.clear();
        self.incremented.clear();
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
            incremented,
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
        for (key, inc) in incremented {
            self.increment(key, inc.by, inc.codec);
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
        for (key, inc) in &self.incremented {
            let value = inc.apply(data.get(key).map(Vec::as_slice));
            data.insert(key.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const C: Codec = Codec::Bincode;

    fn n(value: i64) -> Vec<u8> {
        C.encode(&value).unwrap()
    }

    fn counter(data: &BTreeMap<String, Vec<u8>>, key: &str) -> i64 {
        C.decode(&data[key]).unwrap()
    }

    #[test]
    fn increments_of_one_key_add_up_and_apply_to_the_value_held_at_write_time() {
        let mut changes = Changes::new();
        changes.increment("c", 2, C);
        changes.increment("c", 3, C);
        assert_eq!(changes.incremented()["c"].by(), 5);
        assert!(changes.written().is_empty() && !changes.is_empty());
        let mut data = BTreeMap::from([("c".to_owned(), n(100))]);
        changes.apply_to(&mut data);
        assert_eq!(counter(&data, "c"), 105);
    }

    #[test]
    fn a_write_replaces_an_earlier_increment_and_absorbs_a_later_one() {
        let mut changes = Changes::new();
        changes.increment("c", 2, C);
        changes.set("c", n(10));
        assert!(changes.incremented().is_empty());
        changes.increment("c", 1, C);
        assert!(changes.incremented().is_empty());
        assert_eq!(changes.written()["c"], n(11));
    }

    #[test]
    fn after_a_removal_or_a_clear_an_increment_counts_from_zero() {
        let mut removed = Changes::new();
        removed.remove("c");
        removed.increment("c", 4, C);
        assert!(removed.removed().is_empty() && removed.incremented().is_empty());
        assert_eq!(removed.written()["c"], n(4));

        let mut cleared = Changes::new();
        cleared.increment("d", 1, C);
        cleared.clear();
        assert!(cleared.incremented().is_empty());
        cleared.increment("c", 4, C);
        assert_eq!(cleared.written()["c"], n(4));

        let mut gone = Changes::new();
        gone.increment("c", 4, C);
        gone.remove("c");
        assert!(gone.incremented().is_empty() && gone.removed().contains("c"));
    }

    #[test]
    fn extend_adds_increments_as_if_in_order() {
        let mut first = Changes::new();
        first.increment("a", 1, C);
        first.set("b", n(1));
        let mut later = Changes::new();
        later.increment("a", 2, C);
        later.increment("b", 2, C);
        later.increment("c", 5, C);
        first.extend(later);
        assert_eq!(first.incremented()["a"].by(), 3);
        assert_eq!(first.incremented()["c"].by(), 5);
        assert_eq!(first.written()["b"], n(3));
    }

    #[test]
    fn resolved_turns_increments_into_writes_of_their_results() {
        let mut changes = Changes::new();
        changes.increment("a", 1, C);
        changes.increment("b", 1, C);
        changes.remove("x");
        let held = n(41);
        let resolved = changes.resolved(|key| (key == "a").then_some(held.as_slice()));
        assert!(resolved.incremented().is_empty());
        assert_eq!(resolved.written()["a"], n(42));
        assert_eq!(resolved.written()["b"], n(1));
        assert!(resolved.removed().contains("x"));
    }

    #[test]
    fn a_value_that_is_not_a_counter_starts_over_and_sums_saturate() {
        let mut data = BTreeMap::from([
            (
                "text".to_owned(),
                C.encode(&"not a number, long enough").unwrap(),
            ),
            ("big".to_owned(), n(i64::MAX - 1)),
        ]);
        let mut changes = Changes::new();
        changes.increment("text", 7, C);
        changes.increment("big", 5, C);
        changes.apply_to(&mut data);
        assert_eq!(counter(&data, "text"), 7);
        assert_eq!(counter(&data, "big"), i64::MAX);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_counters_are_json_numbers() {
        let mut data = BTreeMap::from([("c".to_owned(), b"41".to_vec())]);
        let mut changes = Changes::new();
        changes.increment("c", 1, Codec::Json);
        changes.apply_to(&mut data);
        assert_eq!(data["c"], b"42");
    }
}
