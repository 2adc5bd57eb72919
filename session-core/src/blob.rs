//! Helpers for stores that keep a session as one blob and change it by compare-and-set
//! (memcached's `cas`, Redis's versioned blob): the forward pointer a cycled session
//! leaves behind, the reads a store remembers so that the update following a load skips
//! its own read, and the per-session write turns that keep a process's own writers of one
//! hot session from racing each other.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncMutexGuard};

use crate::{StorageKey, Timestamp};

/// The first bytes of a forward pointer (`retire`), then the new key's 32 bytes and the
/// pointer's end in Unix milliseconds (8 bytes, little-endian). Never a session
/// envelope's magic.
pub const FORWARD_MAGIC: &[u8; 4] = b"SFW1";

/// The length of a forward pointer: magic, key, end.
pub const FORWARD_LEN: usize = 44;

/// A forward pointer to `to`, ending at `until`.
///
/// ```
/// use session_core::blob;
/// use session_core::{IdGenerator, Timestamp, UuidV4Generator};
///
/// let to = UuidV4Generator.generate().storage_key();
/// let until = Timestamp::from_unix_millis(1_700_000_000_000);
/// let pointer = blob::forward_pointer(&to, until);
/// assert_eq!(blob::parse_forward(&pointer), Some((to, until)));
/// assert_eq!(blob::parse_forward(b"RSSN\x01"), None);
/// ```
pub fn forward_pointer(to: &StorageKey, until: Timestamp) -> Vec<u8> {
    let mut pointer = Vec::with_capacity(FORWARD_LEN);
    pointer.extend_from_slice(FORWARD_MAGIC);
    pointer.extend_from_slice(to.as_bytes());
    pointer.extend_from_slice(&until.as_unix_millis().to_le_bytes());
    pointer
}

/// A forward pointer's target and end; `None` for any other bytes.
pub fn parse_forward(bytes: &[u8]) -> Option<(StorageKey, Timestamp)> {
    let rest = bytes.strip_prefix(FORWARD_MAGIC)?;
    if rest.len() != FORWARD_LEN - FORWARD_MAGIC.len() {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&rest[..32]);
    let mut until = [0u8; 8];
    until.copy_from_slice(&rest[32..]);
    Some((
        StorageKey::from_bytes(key),
        Timestamp::from_unix_millis(i64::from_le_bytes(until)),
    ))
}

/// What a store last read (or wrote) of recently used sessions, with the version it had
/// (a CAS id, a version tag), so that the update that usually follows a load in a request
/// goes straight to its compare-and-set. Bounded: at most 4096 entries and 16 MiB; blobs
/// over 64 KiB are not kept; cleared when full. A stale entry costs one lost
/// compare-and-set, never a lost write.
#[derive(Default)]
pub struct RecentReads(Mutex<Reads>);

#[derive(Default)]
struct Reads {
    items: HashMap<StorageKey, (Vec<u8>, u64)>,
    bytes: usize,
}

const READS_ENTRIES: usize = 4096;
const READS_BYTES: usize = 16 * 1024 * 1024;
const READS_ITEM: usize = 64 * 1024;

impl RecentReads {
    /// Remembers `bytes` at `version` for `key` (unless the blob is too large to keep).
    pub fn put(&self, key: StorageKey, bytes: Vec<u8>, version: u64) {
        if bytes.len() > READS_ITEM {
            return;
        }
        let mut reads = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if reads.items.len() >= READS_ENTRIES || reads.bytes + bytes.len() > READS_BYTES {
            reads.items.clear();
            reads.bytes = 0;
        }
        reads.bytes += bytes.len();
        if let Some((old, _)) = reads.items.insert(key, (bytes, version)) {
            reads.bytes -= old.len();
        }
    }

    /// Takes what was remembered for `key`.
    pub fn take(&self, key: &StorageKey) -> Option<(Vec<u8>, u64)> {
        let mut reads = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let found = reads.items.remove(key);
        if let Some((bytes, _)) = &found {
            reads.bytes -= bytes.len();
        }
        found
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &StorageKey) {
        drop(self.take(key));
    }
}

impl std::fmt::Debug for RecentReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reads = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("RecentReads")
            .field("entries", &reads.items.len())
            .field("bytes", &reads.bytes)
            .finish()
    }
}

/// Turns at writing a session, one writer of a session at a time in this process: 4096
/// async locks, a session's by its storage key. Writers of one hot session in one process
/// then queue instead of racing each other's compare-and-set (each one's write lands at
/// its first try, from the bytes the previous one wrote); only writers in other processes
/// can still lose a race. Two sessions share a lock with odds of 1 in 4096, which costs
/// them only a wait.
pub struct WriteTurns(Box<[AsyncMutex<()>]>);

const TURNS: usize = 4096;

impl Default for WriteTurns {
    fn default() -> Self {
        WriteTurns((0..TURNS).map(|_| AsyncMutex::new(())).collect())
    }
}

impl WriteTurns {
    /// Waits for `key`'s turn; the turn ends when the guard drops.
    pub async fn turn(&self, key: &StorageKey) -> AsyncMutexGuard<'_, ()> {
        let slot = usize::try_from(key.prefix_u64() % TURNS as u64).unwrap_or(0);
        self.0[slot].lock().await
    }
}

impl std::fmt::Debug for WriteTurns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTurns").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IdGenerator, UuidV4Generator};

    fn key() -> StorageKey {
        UuidV4Generator.generate().storage_key()
    }

    #[test]
    fn a_read_is_taken_once() {
        let reads = RecentReads::default();
        let k = key();
        reads.put(k, b"blob".to_vec(), 7);
        assert_eq!(reads.take(&k), Some((b"blob".to_vec(), 7)));
        assert_eq!(reads.take(&k), None);
    }

    #[test]
    fn large_blobs_are_not_kept_and_a_full_cache_starts_over() {
        let reads = RecentReads::default();
        let big = key();
        reads.put(big, vec![0; READS_ITEM + 1], 1);
        assert_eq!(reads.take(&big), None);
        let keys: Vec<_> = (0..READS_ENTRIES).map(|_| key()).collect();
        for k in &keys {
            reads.put(*k, vec![1], 1);
        }
        assert!(reads.take(&keys[0]).is_some());
        reads.put(keys[0], vec![1], 1);
        let extra = key();
        reads.put(extra, vec![2], 2); // full: cleared, then kept
        assert_eq!(reads.take(&keys[1]), None);
        assert_eq!(reads.take(&extra), Some((vec![2], 2)));
    }

    #[test]
    fn a_pointer_of_another_length_is_not_one() {
        let mut pointer = forward_pointer(&key(), Timestamp::from_unix_millis(5));
        pointer.push(0);
        assert_eq!(parse_forward(&pointer), None);
    }

    #[tokio::test]
    async fn one_writer_of_a_session_at_a_time() {
        let turns = WriteTurns::default();
        let k = key();
        let first = turns.turn(&k).await;
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), turns.turn(&k));
        assert!(
            second.await.is_err(),
            "a second turn while the first holds it"
        );
        drop(first);
        let _again = turns.turn(&k).await;
    }
}
