//! [`FallbackStore`]: moving an application from one store to another while it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::id::StorageKey;
use crate::record::{Changes, Record};
use crate::store::{
    CappedWrite, Loaded, OwnedWrite, OwnerCap, ScanCursor, ScanPage, SessionInfo, SessionStore,
    write_then_cap,
};
use crate::time::Timestamp;

/// A store that serves from `primary` (the new store) and falls back to `fallback` (the
/// old one), copying a session into `primary` the first time it is read or written: the
/// zero-downtime half of a migration (the other half is `sessions migrate`, which copies
/// the sessions nobody touched).
///
/// - `load`, `update`, `touch` and `retire` look in `primary`; a session found only in
///   `fallback` is copied (with its key, expiry, owner and data) and served from `primary`.
/// - `create` writes to `primary` only, after checking neither store holds the key.
/// - `delete`, `retire` and `delete_sessions_of` remove the session from `fallback` first and
///   then from `primary`, and a copy checks after writing that its source still exists (and
///   takes the copy back when it does not): a session logged out during the move never comes
///   back, whichever of the copy and the logout runs first.
/// - `sessions_of` and `scan` list both stores (a key may appear twice in a scan).
///
/// Writes go to `primary` only, so once every instance of the application runs on a
/// `FallbackStore`, `fallback` only shrinks; copy the rest with `sessions migrate`, then
/// run on `primary` alone.
///
/// ```
/// use std::sync::Arc;
/// use session_core::{FallbackStore, SessionManager, SessionStore};
///
/// fn cut_over(new: Arc<dyn SessionStore>, old: Arc<dyn SessionStore>) -> SessionManager {
///     SessionManager::new(FallbackStore::new(new, old))
/// }
/// ```
#[derive(Debug, Clone)]
pub struct FallbackStore {
    primary: Arc<dyn SessionStore>,
    fallback: Arc<dyn SessionStore>,
}

const PRIMARY: &str = "p:";
const FALLBACK: &str = "f:";

impl FallbackStore {
    /// Serves from `primary`, falling back to (and copying from) `fallback`.
    pub fn new(primary: Arc<dyn SessionStore>, fallback: Arc<dyn SessionStore>) -> Self {
        Self { primary, fallback }
    }

    /// The store sessions are served from and written to.
    pub fn primary(&self) -> &Arc<dyn SessionStore> {
        &self.primary
    }

    /// The store sessions are copied from.
    pub fn fallback(&self) -> &Arc<dyn SessionStore> {
        &self.fallback
    }

    /// The live session under `key` in `primary`, copied there from `fallback` first when
    /// only `fallback` has it.
    async fn copy_in(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.primary.load(key).await? {
            return Ok(Some(record));
        }
        let Some(record) = self.fallback.load(key).await? else {
            return Ok(None);
        };
        copy_record(&*self.fallback, &*self.primary, &record).await?;
        self.primary.load(key).await
    }
}

/// What [`copy_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// Written to the destination.
    Written,
    /// The destination already had the key (a session or a forward pointer).
    Taken,
    /// Written, but the source no longer had the session afterwards (a logout raced the
    /// copy), so the copy was deleted again.
    Withdrawn,
}

/// Creates `record` in `to` unless the key is taken there, then checks that `from` still
/// holds it, deleting the copy when it does not. With deletes that remove from `from` before
/// `to` (as [`FallbackStore`] does), a session deleted while it is being copied stays
/// deleted: either the delete of `to` comes after the copy, or the check comes after the
/// delete of `from`.
pub(crate) async fn copy_record(
    from: &dyn SessionStore,
    to: &dyn SessionStore,
    record: &Record,
) -> Result<Copied, StoreError> {
    match to.create(record).await {
        Ok(()) => {}
        Err(StoreError::IdCollision) => return Ok(Copied::Taken),
        Err(e) => return Err(e),
    }
    if from.load(&record.key).await?.is_none() {
        to.delete(&record.key).await?;
        return Ok(Copied::Withdrawn);
    }
    Ok(Copied::Written)
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl SessionStore for FallbackStore {
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        self.copy_in(key).await
    }

    async fn load_body(&self, key: &StorageKey) -> Result<Option<Loaded>, StoreError> {
        Ok(self.copy_in(key).await?.map(Loaded::Record))
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        if self.fallback.load(&record.key).await?.is_some()
            || self.fallback.forwarded(&record.key).await?.is_some()
        {
            return Err(StoreError::IdCollision);
        }
        self.primary.create(record).await
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        if self.primary.update(key, changes, expires_at).await? {
            return Ok(true);
        }
        if self.copy_in(key).await?.is_none() {
            return Ok(false);
        }
        self.primary.update(key, changes, expires_at).await
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        if self.primary.touch(key, expires_at).await? {
            return Ok(true);
        }
        if self.copy_in(key).await?.is_none() {
            return Ok(false);
        }
        self.primary.touch(key, expires_at).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.fallback.delete(key).await?;
        self.primary.delete(key).await
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Ok(self.fallback.delete_expired().await? + self.primary.delete_expired().await?)
    }

    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        if self.copy_in(key).await?.is_none() {
            return Ok(None);
        }
        let record = self.primary.retire(key, to, until).await?;
        // The old id must not come back from `fallback` once the pointer has expired.
        self.fallback.delete(key).await?;
        Ok(record)
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        match self.primary.forwarded(key).await? {
            Some(to) => Ok(Some(to)),
            None => self.fallback.forwarded(key).await,
        }
    }

    fn expires_natively(&self) -> bool {
        self.primary.expires_natively() && self.fallback.expires_natively()
    }

    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let mut found: BTreeMap<StorageKey, SessionInfo> = BTreeMap::new();
        for info in self.fallback.sessions_of(owner).await? {
            found.insert(info.key, info);
        }
        for info in self.primary.sessions_of(owner).await? {
            found.insert(info.key, info);
        }
        Ok(found.into_values().collect())
    }

    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        let listed = self.sessions_of(owner).await?.len() as u64;
        let from_fallback = self.fallback.delete_sessions_of(owner).await?;
        let from_primary = self.primary.delete_sessions_of(owner).await?;
        // A session in both stores is one session; one created meanwhile is counted too.
        Ok(listed.max(from_fallback).max(from_primary))
    }

    /// Writes, then ends ([`write_then_cap`]): the owner's sessions are in two stores.
    async fn write_capped(
        &self,
        write: OwnedWrite<'_>,
        cap: &OwnerCap<'_>,
    ) -> Result<CappedWrite, StoreError> {
        write_then_cap(self, write, cap).await
    }

    /// `primary`'s pages, then `fallback`'s: a session copied during the scan may be listed
    /// twice.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let (in_primary, inner) = match cursor {
            None => (true, None),
            Some(c) => {
                let s = c.as_str();
                // An empty inner cursor is the start of that store's scan.
                let inner = |rest: &str| (!rest.is_empty()).then(|| ScanCursor::new(rest));
                if let Some(rest) = s.strip_prefix(PRIMARY) {
                    (true, inner(rest))
                } else if let Some(rest) = s.strip_prefix(FALLBACK) {
                    (false, inner(rest))
                } else {
                    return Err(crate::store::bad_cursor("fallback", c));
                }
            }
        };
        let (store, tag) = if in_primary {
            (&self.primary, PRIMARY)
        } else {
            (&self.fallback, FALLBACK)
        };
        let page = store.scan(inner.as_ref(), limit).await?;
        let next = match (page.next, in_primary) {
            (Some(next), _) => Some(ScanCursor::new(format!("{tag}{}", next.as_str()))),
            (None, true) => Some(ScanCursor::new(FALLBACK)),
            (None, false) => None,
        };
        Ok(ScanPage {
            keys: page.keys,
            next,
        })
    }
}
