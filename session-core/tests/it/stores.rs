//! Tiny stores written only against the public trait: one correct (the suite passes on it),
//! two broken in the ways the suite exists to catch (it must fail on them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use session_core::{
    Changes, Record, ScanCursor, ScanPage, SessionInfo, SessionStore, StorageKey, StoreError,
    Timestamp, async_trait,
};

/// Whether a broken store loses concurrent updates or revives deleted sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Flaw {
    None,
    /// `update` reads the whole record, waits a round trip, writes it all back.
    LastWriterWins,
    /// `update` and `touch` upsert: a racing delete is undone.
    Upsert,
    /// `scan` ends after its first page.
    ShortScan,
    /// `update` merges key by key, but turns increments into writes of sums it computed
    /// from a read a round trip earlier.
    StaleIncrements,
}

/// The cursor of a blank first page: the scan starts over from the first key.
const BLANK: &str = "blank";

#[derive(Debug)]
pub(crate) struct MapStore {
    records: Mutex<HashMap<StorageKey, Record>>,
    /// Forward pointers; locked after `records` when both are.
    forwards: Mutex<HashMap<StorageKey, (StorageKey, Timestamp)>>,
    flaw: Flaw,
    /// `load_body` answers `Loaded::Body` (as the stores that keep encoded records do).
    bodies: bool,
    /// Calls of `load` itself.
    plain_loads: AtomicUsize,
    /// How many `scan` calls answer an empty page that goes on (as Redis `SCAN` may).
    blank_pages: AtomicUsize,
}

impl MapStore {
    pub(crate) fn shared(flaw: Flaw) -> Arc<dyn SessionStore> {
        Arc::new(Self::new(flaw, false))
    }

    fn new(flaw: Flaw, bodies: bool) -> Self {
        Self {
            records: Mutex::default(),
            forwards: Mutex::default(),
            flaw,
            bodies,
            plain_loads: AtomicUsize::new(0),
            blank_pages: AtomicUsize::new(0),
        }
    }

    /// A correct store whose first `pages` scans list nothing and go on.
    pub(crate) fn with_blank_pages(pages: usize) -> Arc<dyn SessionStore> {
        let store = Self::new(Flaw::None, false);
        store.blank_pages.store(pages, Ordering::Relaxed);
        Arc::new(store)
    }

    fn live(&self, key: &StorageKey) -> Option<Record> {
        let records = self.records.lock().unwrap();
        records
            .get(key)
            .filter(|r| !r.is_expired_at(Timestamp::now()))
            .cloned()
    }
}

#[async_trait]
impl SessionStore for MapStore {
    async fn load_body(
        &self,
        key: &StorageKey,
    ) -> Result<Option<session_core::Loaded>, StoreError> {
        let Some(record) = self.live(key) else {
            return Ok(None);
        };
        if !self.bodies {
            return Ok(Some(session_core::Loaded::Record(record)));
        }
        let mut bytes = Vec::new();
        session_core::body::encode_into(&record, &mut bytes);
        let body = session_core::body::Body::new(bytes).expect("a body just encoded");
        Ok(Some(session_core::Loaded::Body { key: *key, body }))
    }

    fn expires_natively(&self) -> bool {
        false
    }

    async fn sessions_of(&self, _owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        Err(StoreError::Unsupported {
            store: "map",
            operation: "sessions_of",
        })
    }

    async fn delete_sessions_of(&self, _owner: &str) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported {
            store: "map",
            operation: "delete_sessions_of",
        })
    }

    async fn write_capped(
        &self,
        write: session_core::OwnedWrite<'_>,
        cap: &session_core::OwnerCap<'_>,
    ) -> Result<session_core::CappedWrite, StoreError> {
        session_core::write_then_cap(self, write, cap).await
    }

    /// Keys in order; the cursor is the last key listed, in hex.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let blank = self
            .blank_pages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if blank {
            return Ok(ScanPage {
                keys: Vec::new(),
                next: Some(cursor.cloned().unwrap_or_else(|| ScanCursor::new(BLANK))),
            });
        }
        let after = cursor
            .filter(|c| c.as_str() != BLANK)
            .map(|c| c.key("map"))
            .transpose()?;
        let mut keys: Vec<StorageKey> = self
            .records
            .lock()
            .unwrap()
            .keys()
            .filter(|k| after.is_none_or(|a| **k > a))
            .copied()
            .collect();
        keys.sort();
        let more = keys.len() > limit && self.flaw != Flaw::ShortScan;
        keys.truncate(limit);
        Ok(ScanPage::in_key_order(keys, more))
    }

    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        self.plain_loads.fetch_add(1, Ordering::Relaxed);
        Ok(self.live(key))
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap();
        let now = Timestamp::now();
        let pointer = self
            .forwards
            .lock()
            .unwrap()
            .get(&record.key)
            .is_some_and(|(_, until)| *until > now);
        if pointer
            || records
                .get(&record.key)
                .is_some_and(|r| !r.is_expired_at(now))
        {
            return Err(StoreError::IdCollision);
        }
        records.insert(record.key, record.clone());
        Ok(())
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        match self.flaw {
            Flaw::None | Flaw::ShortScan => {
                let mut records = self.records.lock().unwrap();
                let Some(record) = records
                    .get_mut(key)
                    .filter(|r| !r.is_expired_at(Timestamp::now()))
                else {
                    return Ok(false);
                };
                changes.apply_to(&mut record.data);
                record.expires_at = expires_at;
                Ok(true)
            }
            Flaw::StaleIncrements => {
                let Some(before) = self.live(key) else {
                    return Ok(false);
                };
                tokio::task::yield_now().await;
                let changes = changes.resolved(|k| before.data.get(k).map(Vec::as_slice));
                let mut records = self.records.lock().unwrap();
                let Some(record) = records.get_mut(key) else {
                    return Ok(false);
                };
                changes.apply_to(&mut record.data);
                record.expires_at = expires_at;
                Ok(true)
            }
            Flaw::LastWriterWins => {
                let Some(mut record) = self.live(key) else {
                    return Ok(false);
                };
                tokio::task::yield_now().await; // the network round trip between GET and SET
                changes.apply_to(&mut record.data);
                record.expires_at = expires_at;
                self.records.lock().unwrap().insert(*key, record);
                Ok(true)
            }
            Flaw::Upsert => {
                let snapshot = self.live(key);
                tokio::task::yield_now().await;
                let mut record = snapshot.unwrap_or(Record {
                    key: *key,
                    data: Default::default(),
                    created_at: Timestamp::now(),
                    expires_at,
                    owner: None,
                });
                changes.apply_to(&mut record.data);
                record.expires_at = expires_at;
                self.records.lock().unwrap().insert(*key, record);
                Ok(true)
            }
        }
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.update(key, &Changes::new(), expires_at).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.records.lock().unwrap().remove(key);
        self.forwards.lock().unwrap().remove(key);
        Ok(())
    }

    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let mut records = self.records.lock().unwrap();
        if records
            .get(key)
            .is_none_or(|r| r.is_expired_at(Timestamp::now()))
        {
            return Ok(None);
        }
        let record = records.remove(key);
        self.forwards.lock().unwrap().insert(*key, (*to, until));
        Ok(record)
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let now = Timestamp::now();
        Ok(self
            .forwards
            .lock()
            .unwrap()
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(to, _)| *to))
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut records = self.records.lock().unwrap();
        let before = records.len();
        records.retain(|_, r| !r.is_expired_at(now));
        self.forwards
            .lock()
            .unwrap()
            .retain(|_, (_, until)| *until > now);
        Ok((before - records.len()) as u64)
    }
}

mod correct_store_passes {
    use super::*;
    session_core::conformance_tests!(
        || async { Some(MapStore::shared(Flaw::None)) },
        owner_index = false
    );
}

mod correct_store_answering_bodies_passes {
    use super::*;
    session_core::conformance_tests!(
        || async { Some(Arc::new(MapStore::new(Flaw::None, true)) as Arc<dyn SessionStore>) },
        owner_index = false
    );
}

/// The manager loads through `load_body` — never `load` — and a session loaded as a body
/// reads, writes and keeps its own expiry (a reserved key) as a decoded one does.
#[tokio::test]
async fn the_manager_loads_through_load_body_and_reads_the_body_in_place() {
    use session_core::{SessionExpiry, SessionManager};
    let store = Arc::new(MapStore::new(Flaw::None, true));
    session_core::suite::check_loads_bodies(store.clone()).await;
    let manager = SessionManager::builder_arc(store.clone() as Arc<dyn SessionStore>).build();
    let session = manager.create();
    session.insert_many([("a", 1), ("b", 2)]).unwrap();
    let own = SessionExpiry::persistent(Some(std::time::Duration::from_secs(600)), None);
    session.set_expiry(Some(own));
    manager.save(&session).await.unwrap();

    let loaded = manager.load(&session.id()).await.unwrap().expect("saved");
    assert_eq!(loaded.get::<i32>("a").unwrap(), Some(1));
    assert_eq!(loaded.own_expiry(), Some(own));
    loaded.insert("b", 20).unwrap();
    assert_eq!(loaded.get::<i32>("b").unwrap(), Some(20));
    manager.save(&loaded).await.unwrap();

    let again = manager.load(&session.id()).await.unwrap().expect("saved");
    assert_eq!(
        again.get_many::<i32>(&["a", "b"]).unwrap(),
        [Some(1), Some(20)]
    );
    assert_eq!(again.own_expiry(), Some(own));

    // A clear over a session read in place drops every value and keeps the own expiry.
    again.clear();
    assert_eq!(
        again.own_expiry(),
        Some(own),
        "clear dropped the own expiry"
    );
    assert_eq!(again.get::<i32>("a").unwrap(), None);
    manager.save(&again).await.unwrap();
    let cleared = manager.load(&session.id()).await.unwrap().expect("saved");
    assert_eq!(cleared.keys(), Vec::<String>::new());
    assert_eq!(cleared.own_expiry(), Some(own));
    assert_eq!(
        store.plain_loads.load(Ordering::Relaxed),
        0,
        "the manager called `load`"
    );
}

/// Runs a check in its own task and reports whether it failed (panicked).
async fn fails(check: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
    tokio::spawn(check).await.is_err_and(|e| e.is_panic())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_last_writer_wins_store() {
    let store = MapStore::shared(Flaw::LastWriterWins);
    assert!(
        fails(session_core::suite::check_no_lost_updates(store)).await,
        "check_no_lost_updates passed on a store that loses updates"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_store_that_writes_increments_as_stale_sums() {
    assert!(
        !fails(session_core::suite::check_no_lost_updates(
            MapStore::shared(Flaw::StaleIncrements)
        ))
        .await,
        "the flawed store should merge plain writes correctly"
    );
    assert!(
        fails(session_core::suite::check_increments_are_atomic(
            MapStore::shared(Flaw::StaleIncrements)
        ))
        .await,
        "check_increments_are_atomic passed on a store that loses increments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_scan_that_stops_early() {
    let store = MapStore::shared(Flaw::ShortScan);
    assert!(
        fails(session_core::suite::check_scan(store)).await,
        "check_scan passed on a store whose scan ends after one page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_a_store_that_revives_deleted_sessions() {
    let store = MapStore::shared(Flaw::Upsert);
    assert!(
        fails(session_core::suite::check_logout_is_final(store)).await,
        "check_logout_is_final passed on a store whose update upserts"
    );
    assert!(
        fails(session_core::suite::check_update_of_missing(
            MapStore::shared(Flaw::Upsert)
        ))
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_fails_a_store_that_should_keep_an_owner_index_and_does_not() {
    assert!(
        fails(session_core::suite::check_owner_index(
            MapStore::shared(Flaw::None),
            true
        ))
        .await,
        "an Unsupported index passed where one is required"
    );
}
