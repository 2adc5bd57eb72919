//! Reading every record of a store, a page at a time: [`Scan`] over
//! [`SessionStore::scan`] and `load`.
//!
//! ```
//! use std::sync::Arc;
//! use session_core::scan::{Scan, Scanned};
//! use session_core::{SessionStore, StoreError};
//!
//! /// How many live sessions `store` holds, read 1 000 keys at a time.
//! async fn count_live(store: Arc<dyn SessionStore>) -> Result<usize, StoreError> {
//!     let mut scan = Scan::new(store).page_size(1000);
//!     let mut live = 0;
//!     while let Some(page) = scan.next_page().await? {
//!         live += page.iter().filter(|s| matches!(s, Scanned::Live(_))).count();
//!     }
//!     Ok(live)
//! }
//! ```

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::error::StoreError;
use crate::id::StorageKey;
use crate::record::Record;
use crate::store::{ScanCursor, SessionStore};

/// What a [`Scan`] found under one listed key.
#[derive(Debug)]
#[non_exhaustive]
pub enum Scanned {
    /// A live session.
    Live(Record),
    /// Listed, but not live when read: expired and not yet removed, deleted since it was
    /// listed, or a forward pointer.
    NotLive(StorageKey),
    /// A record the store cannot read ([`StoreError::Corrupt`]).
    Damaged(StorageKey, StoreError),
}

/// Every record of a store, read a page at a time in bounded memory: the keys of one
/// [`SessionStore::scan`] page, then their records loaded a few at a time in parallel.
#[derive(Debug)]
pub struct Scan {
    store: Arc<dyn SessionStore>,
    cursor: Option<ScanCursor>,
    done: bool,
    page_size: usize,
    parallel: usize,
}

impl Scan {
    /// A scan of `store` from its first page: 500 keys a page, 32 loads in flight.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            cursor: None,
            done: false,
            page_size: 500,
            parallel: 32,
        }
    }

    /// About how many keys a page lists (at least 1).
    #[must_use]
    pub fn page_size(mut self, keys: usize) -> Self {
        self.page_size = keys.max(1);
        self
    }

    /// How many `load`s run at once (at least 1).
    #[must_use]
    pub fn parallel(mut self, loads: usize) -> Self {
        self.parallel = loads.max(1);
        self
    }

    /// The next page's records; `None` when the scan is over. A page may be empty while the
    /// scan goes on.
    ///
    /// # Errors
    /// The store's error when listing or a `load` fails (other than
    /// [`StoreError::Corrupt`], which is [`Scanned::Damaged`]); the same page is listed again
    /// by the next call.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Scanned>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .scan(self.cursor.as_ref(), self.page_size)
            .await?;
        let found = load_all(&self.store, page.keys, self.parallel).await?;
        match page.next {
            Some(next) => self.cursor = Some(next),
            None => self.done = true,
        }
        Ok(Some(found))
    }
}

/// Whether `store` lists any key at all: pages are read until one lists a key or the scan
/// ends. A single page cannot tell, since a page may be empty while the scan goes on (Redis
/// `SCAN` with a `MATCH`, a cluster node holding none of the keys).
///
/// # Errors
/// The store's error when listing fails.
pub async fn holds_any(store: &dyn SessionStore) -> Result<bool, StoreError> {
    let mut cursor = None;
    loop {
        let page = store.scan(cursor.as_ref(), 100).await?;
        if !page.keys.is_empty() {
            return Ok(true);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(false),
        }
    }
}

/// Loads `keys` with at most `parallel` loads in flight, in the order of `keys`.
async fn load_all(
    store: &Arc<dyn SessionStore>,
    keys: Vec<StorageKey>,
    parallel: usize,
) -> Result<Vec<Scanned>, StoreError> {
    let mut found: Vec<Option<Scanned>> = (0..keys.len()).map(|_| None).collect();
    let mut tasks = JoinSet::new();
    let mut pending = keys.into_iter().enumerate();
    loop {
        while tasks.len() < parallel {
            let Some((at, key)) = pending.next() else {
                break;
            };
            let store = store.clone();
            tasks.spawn(async move { (at, key, store.load(&key).await) });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (at, key, loaded) = joined.map_err(|e| StoreError::backend("scan", e))?;
        found[at] = Some(match loaded {
            Ok(Some(record)) => Scanned::Live(record),
            Ok(None) => Scanned::NotLive(key),
            Err(e @ StoreError::Corrupt { .. }) => Scanned::Damaged(key, e),
            Err(e) => return Err(e),
        });
    }
    Ok(found.into_iter().flatten().collect())
}
