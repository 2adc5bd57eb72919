//! A file-system [`SessionStore`] for `session-core`: one file per session under a root
//! directory, for single-server deployments that want sessions to survive a restart with no
//! server to run.
//!
//! - Files are named by the session's hashed storage key (64 hex characters; never the
//!   bearer id, never anything with a path separator) and sharded into subdirectories
//!   (`ab/cd/abcd….session` at the default depth of 2), so no directory holds millions of
//!   entries.
//! - The content is `session-core`'s versioned, checksummed envelope. Writes are atomic: a
//!   temporary file in the same directory, fsync (per [`Fsync`]), rename over the old file,
//!   fsync of the directory. A reader never sees a torn file, and a crash leaves the old or
//!   the new version.
//! - `create`, `update`, `touch` and `delete` hold an advisory lock (`flock`, one of 256
//!   lock files under `.locks/`) around read-merge-write, so several processes sharing the
//!   root lose no update, and a deleted session stays deleted.
//! - At login (`retire`), under the key's lock, the session file is replaced by a small
//!   `<key>.forward` file naming the new key until when; the sweep removes expired ones.
//! - File I/O runs on tokio's blocking pool, never on the async workers.
//! - The per-user index (`sessions_of`, `delete_sessions_of`: "log out everywhere") is a
//!   scan of the session files, O(sessions); deletion re-checks each file under its lock.
//! - Expired files are invisible to `load`; [`SessionStore::delete_expired`] (run it with
//!   [`spawn_sweeper`](session_core::spawn_sweeper)) removes them, damaged files, and
//!   temporary files left by a crash more than a minute ago.
//!
//! # Example
//!
//! ```
//! use session_core::SessionManager;
//! use session_disk::{DiskStore, Fsync};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let root = dir.path().join("sessions");
//! let store = DiskStore::builder(&root).fsync(Fsync::Always).open()?;
//! let manager = SessionManager::new(store);
//! let session = manager.create();
//! session.insert("user", "alice")?;
//! manager.save(&session).await?;
//! assert!(manager.load(&session.id()).await?.is_some());
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! [`OpenError`] when the root cannot be used. At run time, I/O failures are
//! [`StoreError::Backend`], a lock not obtained within the lock timeout is
//! [`StoreError::Unavailable`], and a damaged or foreign file is [`StoreError::Corrupt`].
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use session_core::{
    Changes, Record, ScanCursor, ScanPage, SessionInfo, SessionStore, StorageKey, StoreError,
    Timestamp, envelope,
};

const STORE: &str = "disk";
const SUFFIX: &str = ".session";
/// A forward pointer of a cycled session (`retire`), beside where its file was.
const FORWARD_SUFFIX: &str = ".forward";
/// The first word of a forward pointer file.
const FORWARD_MAGIC: &str = "session-forward-1";
const TMP_PREFIX: &str = ".tmp-";
const LOCK_DIR: &str = ".locks";
const LOCK_STRIPES: usize = 256;
/// Temporary files older than this are leftovers of a crash.
const STALE_TMP: Duration = Duration::from_secs(60);

/// When writes are flushed to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fsync {
    /// fsync each file before the rename and its directory after (default): a write that
    /// returned survives a power loss.
    #[default]
    Always,
    /// Leave flushing to the OS: faster; a crash of the process still leaves whole files,
    /// a power loss may lose the last writes.
    Never,
}

/// Why [`DiskStoreBuilder::open`] failed: the source of its [`StoreError::Config`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The root exists and is not a directory.
    #[error("session root {0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// The root could not be created or written to.
    #[error("session root {path} is not usable: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A shard depth above 4.
    #[error("shard depth {0} is above the maximum of 4")]
    ShardDepth(u8),
}

/// Settings for a [`DiskStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DiskStoreBuilder {
    root: PathBuf,
    depth: u8,
    mode: u32,
    fsync: Fsync,
    lock_timeout: Duration,
}

impl DiskStoreBuilder {
    /// Levels of two-hex-digit subdirectories (default 2: 65 536 directories; 0 to 4).
    pub fn shard_depth(mut self, depth: u8) -> Self {
        self.depth = depth;
        self
    }

    /// Permission bits of session files (default `0o600`: only the server's user reads them).
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The flush policy (default [`Fsync::Always`]).
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }

    /// How long a write waits for another process's lock before failing with
    /// [`StoreError::Unavailable`] (default 5 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Creates the root when missing, checks that it is a writable directory, and prepares
    /// the lock files.
    ///
    /// # Errors
    /// [`StoreError::Config`] with an [`OpenError`] as its source when the root is a file,
    /// cannot be created or is not writable, or the shard depth is above 4.
    pub fn open(self) -> Result<DiskStore, StoreError> {
        self.open_root().map_err(|e| StoreError::config(STORE, e))
    }

    fn open_root(self) -> Result<DiskStore, OpenError> {
        if self.depth > 4 {
            return Err(OpenError::ShardDepth(self.depth));
        }
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| OpenError::Io { path, source }
        };
        if self.root.exists() && !self.root.is_dir() {
            return Err(OpenError::NotADirectory(self.root));
        }
        let locks = self.root.join(LOCK_DIR);
        fs::create_dir_all(&locks).map_err(io_err(&self.root))?;
        let probe = self
            .root
            .join(format!("{TMP_PREFIX}probe-{}", std::process::id()));
        File::create(&probe).map_err(io_err(&self.root))?;
        fs::remove_file(&probe).map_err(io_err(&self.root))?;
        for stripe in 0..LOCK_STRIPES {
            let path = locks.join(format!("{stripe:02x}.lock"));
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
        }
        Ok(DiskStore {
            inner: Arc::new(Inner {
                root: self.root,
                depth: usize::from(self.depth),
                mode: self.mode,
                fsync: self.fsync,
                lock_timeout: self.lock_timeout,
                tmp_counter: AtomicU64::new(0),
            }),
        })
    }
}

/// The file-system session store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    depth: usize,
    mode: u32,
    fsync: Fsync,
    lock_timeout: Duration,
    tmp_counter: AtomicU64,
}

impl DiskStore {
    /// Opens `root` with default settings.
    ///
    /// # Errors
    /// As [`DiskStoreBuilder::open`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::builder(root).open()
    }

    /// Settings for a store under `root`.
    pub fn builder(root: impl Into<PathBuf>) -> DiskStoreBuilder {
        DiskStoreBuilder {
            root: root.into(),
            depth: 2,
            mode: 0o600,
            fsync: Fsync::Always,
            lock_timeout: Duration::from_secs(5),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file a session's record lives in: always below the root, built only from the
    /// key's hex digits.
    pub fn path_of(&self, key: &StorageKey) -> PathBuf {
        self.inner.path(key)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::backend(STORE, e))?
    }
}

fn io_error(e: io::Error) -> StoreError {
    StoreError::backend(STORE, e)
}

impl Inner {
    fn path(&self, key: &StorageKey) -> PathBuf {
        self.path_with(key, SUFFIX)
    }

    fn forward_path(&self, key: &StorageKey) -> PathBuf {
        self.path_with(key, FORWARD_SUFFIX)
    }

    fn path_with(&self, key: &StorageKey, suffix: &str) -> PathBuf {
        let hex = key.to_hex();
        let mut path = self.root.clone();
        for level in 0..self.depth {
            path.push(&hex[2 * level..2 * level + 2]);
        }
        path.push(format!("{}{suffix}", hex.as_str()));
        path
    }

    /// The live forward pointer under `key`: its target and until when. A damaged or
    /// expired pointer leads nowhere (the sweep removes it).
    fn forward(&self, key: &StorageKey, now: Timestamp) -> Result<Option<StorageKey>, StoreError> {
        let Some(bytes) = self.read(&self.forward_path(key))? else {
            return Ok(None);
        };
        Ok(parse_forward(&bytes)
            .filter(|(_, until)| *until > now)
            .map(|(to, _)| to))
    }

    /// Takes the key's lock stripe; released when the returned file is dropped.
    fn lock(&self, key: &StorageKey) -> Result<File, StoreError> {
        let stripe = usize::from(key.as_bytes()[31]) % LOCK_STRIPES;
        let path = self.root.join(LOCK_DIR).join(format!("{stripe:02x}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_error)?;
        let deadline = Instant::now() + self.lock_timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::unavailable(
                        STORE,
                        format!("lock not obtained within {:?}", self.lock_timeout),
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_error(e)),
            }
        }
    }

    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    /// The live record under `key`; `None` when absent or expired.
    fn live(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        let Some(bytes) = self.read(&self.path(key))? else {
            return Ok(None);
        };
        let record = envelope::decode(*key, &bytes).map_err(|e| StoreError::corrupt(STORE, e))?;
        Ok((!record.is_expired_at(Timestamp::now())).then_some(record))
    }

    fn write(&self, record: &Record) -> Result<(), StoreError> {
        self.write_file(
            &record.key,
            &self.path(&record.key),
            &envelope::encode(record),
        )
    }

    /// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the
    /// directory.
    fn write_file(&self, key: &StorageKey, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_error)?;
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            key.to_hex().as_str(),
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, self.mode);
            let mut file = options.open(&tmp)?;
            file.write_all(bytes)?;
            if self.fsync == Fsync::Always {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&tmp, path)?;
            if self.fsync == Fsync::Always {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_error)
    }

    fn remove(&self, path: &Path) -> Result<bool, StoreError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Visits every session file and temporary file in the shard directories below `dir`.
    fn walk(
        &self,
        dir: &Path,
        level: usize,
        visit: &mut dyn FnMut(Found) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(e)),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if level < self.depth {
                let is_shard = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
                if is_shard {
                    self.walk(&path, level + 1, visit)?;
                }
            } else if name.starts_with(TMP_PREFIX) {
                visit(Found::Temporary(entry))?;
            } else if let Some(key) = name.strip_suffix(SUFFIX).and_then(StorageKey::parse_hex) {
                visit(Found::Session(key, path))?;
            } else if let Some(key) = name
                .strip_suffix(FORWARD_SUFFIX)
                .and_then(StorageKey::parse_hex)
            {
                visit(Found::Forward(key, path))?;
            }
        }
        Ok(())
    }

    /// Removes expired, damaged and leftover temporary files; counts the session files.
    fn sweep(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut removed = 0;
        self.walk(&self.root, 0, &mut |found| {
            match found {
                Found::Temporary(entry) => {
                    let stale = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
                        SystemTime::now().duration_since(t).unwrap_or_default() > STALE_TMP
                    });
                    if stale {
                        self.remove(&entry.path())?;
                    }
                }
                Found::Forward(key, path) => {
                    if self.forward(&key, now)?.is_none() {
                        let _lock = self.lock(&key)?;
                        if self.forward(&key, now)?.is_none() {
                            self.remove(&path)?;
                        }
                    }
                }
                Found::Session(key, path) => {
                    if self.is_dead(&key, &path, now)? {
                        // Re-check under the lock: a writer may have renewed it meanwhile.
                        let _lock = self.lock(&key)?;
                        if self.is_dead(&key, &path, now)? && self.remove(&path)? {
                            removed += 1;
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(removed)
    }

    /// Up to `limit` session keys after `after` in key order, walking the shard directories in
    /// order and skipping those wholly before `after`; whether the walk stopped at `limit`.
    fn keys_after(
        &self,
        dir: &Path,
        level: usize,
        after: Option<&str>,
        limit: usize,
        out: &mut Vec<StorageKey>,
    ) -> Result<bool, StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort_unstable();
        if level < self.depth {
            for name in names {
                let is_shard = name.len() == 2
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !is_shard {
                    continue;
                }
                let below = match after {
                    Some(a) => match name.as_str().cmp(&a[2 * level..2 * level + 2]) {
                        std::cmp::Ordering::Less => continue,
                        std::cmp::Ordering::Equal => Some(a),
                        std::cmp::Ordering::Greater => None,
                    },
                    None => None,
                };
                if self.keys_after(&dir.join(&name), level + 1, below, limit, out)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        for key in names
            .iter()
            .filter_map(|n| n.strip_suffix(SUFFIX))
            .filter(|hex| after.is_none_or(|a| *hex > a))
            .filter_map(StorageKey::parse_hex)
        {
            if out.len() == limit {
                return Ok(true);
            }
            out.push(key);
        }
        Ok(false)
    }

    /// The live records owned by `owner`, by a scan of every session file.
    fn owned(&self, owner: &str) -> Result<Vec<Record>, StoreError> {
        let mut found = Vec::new();
        self.walk(&self.root, 0, &mut |file| {
            if let Found::Session(key, _) = file {
                match self.live(&key) {
                    Ok(Some(record)) if record.owner.as_deref() == Some(owner) => {
                        found.push(record)
                    }
                    // Damaged files belong to nobody; the sweep removes them.
                    Ok(_) | Err(StoreError::Corrupt { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Expired, damaged or truncated; a vanished file is not dead (nothing to do).
    fn is_dead(&self, key: &StorageKey, path: &Path, now: Timestamp) -> Result<bool, StoreError> {
        Ok(match self.read(path)? {
            None => false,
            Some(bytes) => envelope::decode(*key, &bytes).map_or(true, |r| r.is_expired_at(now)),
        })
    }
}

/// `session-forward-1 <target hex> <until, Unix ms>`, as `retire` writes it.
fn parse_forward(bytes: &[u8]) -> Option<(StorageKey, Timestamp)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words = text.split_whitespace();
    if words.next()? != FORWARD_MAGIC {
        return None;
    }
    let to = StorageKey::parse_hex(words.next()?)?;
    let until = Timestamp::from_unix_millis(words.next()?.parse().ok()?);
    Some((to, until))
}

/// What [`Inner::walk`] finds.
enum Found {
    Session(StorageKey, PathBuf),
    Forward(StorageKey, PathBuf),
    Temporary(fs::DirEntry),
}

#[async_trait]
impl SessionStore for DiskStore {
    /// Expired records stay until read or swept (`spawn_sweeper`).
    fn expires_natively(&self) -> bool {
        false
    }

    async fn load_body(
        &self,
        key: &StorageKey,
    ) -> Result<Option<session_core::Loaded>, StoreError> {
        Ok(self.load(key).await?.map(session_core::Loaded::Record))
    }

    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        let key = *key;
        self.blocking(move |inner| inner.live(&key)).await
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        let record = record.clone();
        self.blocking(move |inner| {
            let _lock = inner.lock(&record.key)?;
            if inner.forward(&record.key, Timestamp::now())?.is_some() {
                return Err(StoreError::IdCollision);
            }
            match inner.live(&record.key) {
                Ok(Some(_)) => return Err(StoreError::IdCollision),
                // Absent, expired or damaged: the name is free.
                Ok(None) | Err(StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
            inner.write(&record)
        })
        .await
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let (key, changes) = (*key, changes.clone());
        self.blocking(move |inner| {
            let _lock = inner.lock(&key)?;
            let Some(mut record) = inner.live(&key)? else {
                return Ok(false);
            };
            changes.apply_to_record(&mut record);
            record.expires_at = expires_at;
            inner.write(&record)?;
            Ok(true)
        })
        .await
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        let key = *key;
        self.blocking(move |inner| {
            let _lock = inner.lock(&key)?;
            let Some(mut record) = inner.live(&key)? else {
                return Ok(false);
            };
            record.expires_at = expires_at;
            inner.write(&record)?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        let key = *key;
        self.blocking(move |inner| {
            let _lock = inner.lock(&key)?;
            inner.remove(&inner.forward_path(&key))?;
            inner.remove(&inner.path(&key)).map(drop)
        })
        .await
    }

    /// Under the key's lock: the session file is removed, then the pointer written (a crash
    /// in between leaves neither, as a plain delete would).
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let (key, to) = (*key, *to);
        self.blocking(move |inner| {
            let _lock = inner.lock(&key)?;
            let Some(record) = inner.live(&key)? else {
                return Ok(None);
            };
            inner.remove(&inner.path(&key))?;
            let pointer = format!(
                "{FORWARD_MAGIC} {} {}\n",
                to.to_hex().as_str(),
                until.as_unix_millis()
            );
            inner.write_file(&key, &inner.forward_path(&key), pointer.as_bytes())?;
            Ok(Some(record))
        })
        .await
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let key = *key;
        self.blocking(move |inner| inner.forward(&key, Timestamp::now()))
            .await
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| inner.sweep(Timestamp::now())).await
    }

    /// Writes, then ends ([`session_core::write_then_cap`]): files have no transaction across
    /// them.
    async fn write_capped(
        &self,
        write: session_core::OwnedWrite<'_>,
        cap: &session_core::OwnerCap<'_>,
    ) -> Result<session_core::CappedWrite, StoreError> {
        session_core::write_then_cap(self, write, cap).await
    }

    /// A scan of every session file: O(sessions), fine for a rare "log out everywhere" on the
    /// single-server deployments this store is for.
    /// Session files in key order (forward pointers and temporary files are not listed); the
    /// cursor is the last key listed, and a page reads only the shard directories at or after
    /// it.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let after = cursor.map(|c| c.key(STORE)).transpose()?;
        let limit = limit.max(1);
        self.blocking(move |inner| {
            let hex = after.map(|k| k.to_hex());
            let mut keys = Vec::new();
            let more = inner.keys_after(
                &inner.root,
                0,
                hex.as_ref().map(|h| h.as_str()),
                limit,
                &mut keys,
            )?;
            Ok(ScanPage::in_key_order(keys, more))
        })
        .await
    }

    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let owner = owner.to_owned();
        self.blocking(move |inner| Ok(inner.owned(&owner)?.iter().map(SessionInfo::from).collect()))
            .await
    }

    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.blocking(move |inner| {
            let mut removed = 0;
            for record in inner.owned(&owner)? {
                // Under the lock, and only if it is still this user's.
                let _lock = inner.lock(&record.key)?;
                let still_owned = matches!(inner.live(&record.key), Ok(Some(r)) if r.owner.as_deref() == Some(owner.as_str()));
                if still_owned && inner.remove(&inner.path(&record.key))? {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }
}
