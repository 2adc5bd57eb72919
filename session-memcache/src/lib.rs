//! A memcached [`SessionStore`] for `session-core`, over one or many servers.
//!
//! - **Many servers.** A session lives on the server chosen by rendezvous hashing of its
//!   storage key (every application instance agrees; adding a server moves only about 1/N of
//!   the sessions). A server that is down makes only its share of sessions
//!   [`StoreError::Unavailable`]; the others keep working.
//! - **One item per session**, holding `session-core`'s versioned, checksummed envelope,
//!   keyed `{prefix}{storage key hex}`. Expiry follows memcached's rule (up to 30 days a
//!   relative number of seconds, beyond it an absolute Unix time), and `load` also checks the
//!   envelope's `expires_at`.
//! - **No lost updates.** `create` is `add` (a taken key is a collision); `update` and `touch`
//!   are `gets` + `cas` in a bounded retry loop, so two requests changing different keys both
//!   persist and an update racing a `delete` never recreates the session. `load` reads with
//!   `gets` and keeps the CAS id briefly, so the update that follows it in a request usually
//!   goes straight to `cas`: two round trips a request, like a blind get + set.
//! - **Login** (`retire`): `gets` + `cas` replaces the session's item by a 44-byte forward
//!   pointer item (`SFW1`, the new key, until when) that expires by itself.
//! - **No per-user index**: memcached cannot enumerate items, and a separate index item
//!   could not be kept consistent with the sessions, so `sessions_of` and
//!   `delete_sessions_of` ("log out everywhere") answer [`StoreError::Unsupported`]. Use
//!   Redis, MongoDB, disk or memory where that is needed.
//! - **Sizes** above the item size limit (1 MiB by default, [`MemcacheStoreBuilder::item_size_limit`])
//!   are [`StoreError::TooLarge`] before anything is sent.
//!
//! # The client's sharp edges, and how this store handles them
//!
//! `memcache-async` 0.10 was read and probed against memcached 1.6:
//! - `set`, `append` and `delete` send `noreply`: a too-large `set` returns `Ok(())` and stores
//!   nothing. This store never uses `set`; its `delete` is followed by a `version` round trip
//!   on the same connection, which memcached answers only after the delete, so a returned
//!   `delete` is applied.
//! - It does not validate keys (a space desynchronises the connection): keys here are the
//!   hex storage key plus a prefix checked at build time (≤ 250 bytes, no whitespace or
//!   control characters).
//! - Its `cas` looks for `NOT FOUND` while memcached answers `NOT_FOUND`, so a missing item
//!   surfaces as an `Other("NOT_FOUND")` error: this store maps it to "gone".
//! - It is one stream with no pool, reconnect or timeout: this store keeps a small pool per
//!   server, drops any connection that errored or timed out mid-command, reconnects on
//!   demand, and bounds every call by the command timeout.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use session_core::SessionManager;
//! use session_memcache::MemcacheStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemcacheStore::builder(["10.0.0.1:11211", "10.0.0.2:11211"])
//!     .key_prefix("myapp:")
//!     .command_timeout(Duration::from_millis(500))
//!     .build()?;
//! let manager = SessionManager::new(store);
//! # Ok(()) }
//! ```
//!
//! (Not run as a doctest: it needs servers. The crate's tests run the conformance suite
//! against two real memcached servers.)
//!
//! # Errors
//!
//! [`StoreError::Config`] (with a [`BuildError`] source) for bad settings. At run time: `Unavailable` (server down, timeout, or CAS
//! contention beyond the retry limit), `TooLarge`, `Corrupt` (an item that is not a session
//! envelope of this version), `Backend` (other server errors).
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use memcache_async::ascii::Protocol;
use session_core::blob::{FORWARD_MAGIC, RecentReads};
use session_core::{
    Changes, Record, ScanCursor, ScanPage, SessionInfo, SessionStore, StorageKey, StoreError,
    Timestamp, blob, envelope,
};

mod dump;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use memcache_async;

const STORE: &str = "memcache";
/// memcached's key length limit.
const MAX_KEY_LEN: usize = 250;
/// What memcached 1.6 counts against its item size limit beside the key and the value: the
/// item header with its CAS id, the key's terminator and the value's `\r\n` (measured: with
/// `-I 1m` and flags 0, the largest value stored under a key of k bytes is
/// 1 048 576 − 59 − k bytes, at every key length and at `-I 512k` and `2m` too).
const ITEM_HEADER: usize = 59;
/// The length of an item key beside its prefix: the storage key's 64 hex digits.
const KEY_HEX_LEN: usize = 64;

/// memcached's boundary between relative and absolute expiration times.
const RELATIVE_LIMIT_SECS: i64 = 30 * 24 * 3600;
/// The least time one page of a scan (a server's whole metadump) may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why [`MemcacheStoreBuilder::build`] failed: the source of its [`StoreError::Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// No server was given.
    NoServers,
    /// The key prefix is too long or holds whitespace or control characters.
    BadPrefix(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoServers => f.write_str("no memcached server given"),
            Self::BadPrefix(p) => write!(
                f,
                "key prefix {p:?} is longer than {} bytes or holds whitespace or control characters",
                MAX_KEY_LEN - 64
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Settings for a [`MemcacheStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemcacheStoreBuilder {
    servers: Vec<String>,
    prefix: String,
    pool_size: usize,
    command_timeout: Duration,
    cas_retries: u32,
    item_size_limit: usize,
}

impl MemcacheStoreBuilder {
    /// The prefix of every key (default `session:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connections per server at most (default 16).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long one call may take, connecting included, before it fails with
    /// [`StoreError::Unavailable`] (default 1 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How many times `update`/`touch` retry after losing a CAS race (default 32).
    pub fn cas_retries(mut self, retries: u32) -> Self {
        self.cas_retries = retries.max(1);
        self
    }

    /// The servers' item size limit, memcached's `-I` (default 1 MiB).
    pub fn item_size_limit(mut self, bytes: usize) -> Self {
        self.item_size_limit = bytes;
        self
    }

    /// The store. No connection is made until the first call.
    ///
    /// # Errors
    /// [`StoreError::Config`], with a [`BuildError`] as its source, for no servers or a bad
    /// prefix.
    pub fn build(self) -> Result<MemcacheStore, StoreError> {
        if self.servers.is_empty() {
            return Err(StoreError::config(STORE, BuildError::NoServers));
        }
        let prefix_ok = self.prefix.len() <= MAX_KEY_LEN - 64
            && self.prefix.bytes().all(|b| b.is_ascii_graphic());
        if !prefix_ok {
            return Err(StoreError::config(
                STORE,
                BuildError::BadPrefix(self.prefix),
            ));
        }
        let servers = self
            .servers
            .iter()
            .map(|addr| Server {
                addr: addr.clone(),
                seed: u64::from_le_bytes(
                    Sha256::digest(addr.as_bytes())[..8]
                        .try_into()
                        .unwrap_or_default(),
                ),
                idle: Mutex::new(Vec::new()),
                slots: Arc::new(Semaphore::new(self.pool_size)),
            })
            .collect();
        Ok(MemcacheStore {
            inner: Arc::new(Inner {
                servers,
                prefix: self.prefix,
                timeout: self.command_timeout,
                cas_retries: self.cas_retries,
                item_size_limit: self.item_size_limit,
                seen: RecentReads::default(),
            }),
        })
    }
}

/// The memcached session store. Cheap to clone.
#[derive(Clone)]
pub struct MemcacheStore {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    prefix: String,
    timeout: Duration,
    cas_retries: u32,
    item_size_limit: usize,
    seen: RecentReads,
}

/// A connection as the protocol sees it ([`protocol`]).
type Stream = BufWriter<TcpStream>;

/// The protocol on `stream`, its writes gathered in a buffer until the protocol flushes at
/// the end of a command: a `cas` or `add` (its line, the value and `\r\n`, three writes in
/// memcache-async) leaves in one `sendto`, not three (values past the buffer's 8 KB go
/// straight through).
fn protocol<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> Protocol<BufWriter<S>> {
    Protocol::new(BufWriter::new(stream))
}

struct Server {
    addr: String,
    /// Mixed into the rendezvous score: derived from the address, so every process agrees.
    seed: u64,
    idle: Mutex<Vec<Protocol<Stream>>>,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for MemcacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<&str> = self.inner.servers.iter().map(|s| s.addr.as_str()).collect();
        f.debug_struct("MemcacheStore")
            .field("servers", &servers)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// A pooled connection: back to the pool when the command completed, dropped otherwise.
struct Conn<'a> {
    server: &'a Server,
    protocol: Option<Protocol<Stream>>,
    _permit: OwnedSemaphorePermit,
}

impl Conn<'_> {
    fn get(&mut self) -> &mut Protocol<Stream> {
        self.protocol.as_mut().expect("taken only by release")
    }

    /// `gets` of `item`: its bytes and CAS token, `None` when there is no such item.
    async fn gets(&mut self, item: &[u8]) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match self.get().gets_cas(item).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_io(&self.server.addr, e)),
        }
    }

    /// Returns the connection to the pool: only after a command finished cleanly.
    fn release(mut self) {
        if let Some(protocol) = self.protocol.take() {
            self.server
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(protocol);
        }
    }
}

/// splitmix64's finaliser: a good 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// memcached's exptime for an absolute expiry.
fn exptime(expires_at: Timestamp, now: Timestamp) -> u32 {
    if expires_at <= now {
        // An absolute time in the past: memcached expires the item at once.
        return (RELATIVE_LIMIT_SECS + 1) as u32;
    }
    let relative = expires_at.duration_since(now).as_millis().div_ceil(1000) as i64;
    if relative <= RELATIVE_LIMIT_SECS {
        relative as u32
    } else {
        u32::try_from(expires_at.as_unix_secs_ceil()).unwrap_or(u32::MAX)
    }
}

fn unavailable(server: &str, e: impl fmt::Display) -> StoreError {
    StoreError::unavailable(STORE, format!("{server}: {e}"))
}

/// Maps a client error: network trouble is `Unavailable`, a server error reply `Backend`.
fn map_io(server: &str, e: io::Error) -> StoreError {
    match e.kind() {
        io::ErrorKind::Other => StoreError::backend(STORE, format!("{server}: {e}")),
        _ => unavailable(server, e),
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || (e.kind() == io::ErrorKind::Other && e.to_string().starts_with("NOT_FOUND"))
}

impl MemcacheStore {
    /// The live session under `key`, its values left encoded; the bytes read and their CAS
    /// token are kept for the next update.
    async fn read(&self, key: &StorageKey) -> Result<Option<session_core::body::Body>, StoreError> {
        let item = self.item_key(key);
        let found = self
            .with_conn(key, async |conn| conn.gets(item.as_bytes()).await)
            .await?;
        let Some((bytes, cas)) = found else {
            return Ok(None);
        };
        if bytes.starts_with(FORWARD_MAGIC) {
            return Ok(None);
        }
        let body = envelope::decode_body(&bytes).map_err(|e| StoreError::corrupt(STORE, e))?;
        if body.expires_at() <= Timestamp::now() {
            return Ok(None);
        }
        self.inner.seen.put(*key, bytes, cas);
        Ok(Some(body))
    }

    /// Settings for a store over `servers` (`host:port` each).
    pub fn builder<I, S>(servers: I) -> MemcacheStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MemcacheStoreBuilder {
            servers: servers.into_iter().map(Into::into).collect(),
            prefix: "session:".into(),
            pool_size: 16,
            command_timeout: Duration::from_secs(1),
            cas_retries: 32,
            item_size_limit: 1024 * 1024,
        }
    }

    /// A store over `servers` (`host:port` each) with default settings.
    ///
    /// # Errors
    /// As [`MemcacheStoreBuilder::build`].
    pub fn open<I, S>(servers: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder(servers).build()
    }

    /// The server (`host:port`) a session lives on.
    pub fn server_for(&self, key: &StorageKey) -> &str {
        &self.inner.server(key).addr
    }

    /// The memcached key of a session.
    pub fn item_key(&self, key: &StorageKey) -> String {
        format!("{}{}", self.inner.prefix, key.to_hex().as_str())
    }

    /// The servers, in the order given to the builder.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.inner.servers.iter().map(|s| s.addr.as_str())
    }

    /// Asks every server for its version, each bounded by the command timeout, and returns
    /// one result per server in [`MemcacheStore::servers`] order. The store itself connects
    /// lazily; this is for a start-up check or a health endpoint.
    pub async fn ping(&self) -> Vec<Result<(), StoreError>> {
        let mut results = Vec::with_capacity(self.inner.servers.len());
        for server in &self.inner.servers {
            let call = async {
                let mut conn = server.checkout().await?;
                conn.get()
                    .version()
                    .await
                    .map_err(|e| map_io(&server.addr, e))?;
                conn.release();
                Ok(())
            };
            results.push(bounded(self.inner.timeout, &server.addr, call).await);
        }
        results
    }

    /// Runs `f` on a connection to the key's server, bounded by the command timeout.
    async fn with_conn<T>(
        &self,
        key: &StorageKey,
        f: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let server = self.inner.server(key);
        let call = async {
            let mut conn = server.checkout().await?;
            let result = f(&mut conn).await;
            // A command that returned (even with a protocol-level "no") left the stream in
            // sync; one that failed on the network did not.
            if !matches!(result, Err(StoreError::Unavailable { .. })) {
                conn.release();
            }
            result
        };
        bounded(self.inner.timeout, &server.addr, call).await
    }

    /// The largest envelope one item holds: the item size limit less memcached's own
    /// header and the key.
    fn max_envelope(&self) -> usize {
        self.inner
            .item_size_limit
            .saturating_sub(ITEM_HEADER + self.inner.prefix.len() + KEY_HEX_LEN)
    }

    fn check_size(&self, envelope: &[u8]) -> Result<(), StoreError> {
        let limit = self.max_envelope();
        if envelope.len() > limit {
            return Err(StoreError::too_large(STORE, envelope.len(), limit));
        }
        Ok(())
    }

    /// change + `cas` from the item `load` last saw, else `gets` + change + `cas`, retried
    /// on a lost race. CAS makes both exactly as safe: a write succeeds only if the item is
    /// unchanged since the read it was computed from.
    async fn read_modify_write(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let seen = self.inner.seen.take(key);
        self.cas_loop(
            key,
            seen,
            "update",
            || false,
            |bytes, now| {
                if bytes.starts_with(FORWARD_MAGIC) {
                    return Ok(Step::Done(false)); // a cycled session's pointer: not a session
                }
                // The changes merged into the stored bytes without decoding the record. Patched
                // before the expiry check because patching verifies the checksum: a damaged item
                // is `Corrupt` whether or not its expiry has passed.
                let envelope = envelope::patch(bytes, changes, expires_at)
                    .map_err(|e| StoreError::corrupt(STORE, e))?;
                let old_expiry =
                    envelope::peek_expiry(bytes).map_err(|e| StoreError::corrupt(STORE, e))?;
                if old_expiry <= now {
                    return Ok(Step::Done(false));
                }
                self.check_size(&envelope)?;
                Ok(Step::Write {
                    bytes: envelope,
                    exptime: exptime(expires_at, now),
                    then: true,
                })
            },
        )
        .await
    }

    /// The item as `known` (what `load` just saw) or `gets` reads it, turned by `next` into
    /// an answer or a `cas` write, retried while another writer wins the race. A missing
    /// item (or one that vanished before the `cas`) answers `absent()`; `what` names the
    /// operation when the retries run out.
    async fn cas_loop<T>(
        &self,
        key: &StorageKey,
        mut known: Option<(Vec<u8>, u64)>,
        what: &str,
        absent: impl Fn() -> T,
        next: impl Fn(&[u8], Timestamp) -> Result<Step<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let item = self.item_key(key);
        let mut took = std::time::Duration::ZERO;
        for round in 0..self.inner.cas_retries {
            if round > 0 {
                session_core::cas_backoff(round, took).await;
            }
            let started = std::time::Instant::now();
            let known = known.take();
            let attempt = self
                .with_conn(key, async |conn| {
                    let (bytes, cas) = match known {
                        Some(found) => found,
                        None => match conn.gets(item.as_bytes()).await? {
                            Some(found) => found,
                            None => return Ok(Some(absent())),
                        },
                    };
                    let addr = &conn.server.addr;
                    match next(&bytes, Timestamp::now())? {
                        Step::Done(answer) => Ok(Some(answer)),
                        Step::Write {
                            bytes,
                            exptime,
                            then,
                        } => match conn.get().cas(&item, &bytes, cas, exptime).await {
                            Ok(true) => Ok(Some(then)),
                            Ok(false) => Ok(None), // lost the race (or a stale read): read again
                            Err(e) if is_not_found(&e) => Ok(Some(absent())),
                            Err(e) => Err(map_io(addr, e)),
                        },
                    }
                })
                .await?;
            if let Some(done) = attempt {
                return Ok(done);
            }
            took = started.elapsed();
        }
        Err(StoreError::unavailable(
            STORE,
            format!("{what} lost {} CAS races in a row", self.inner.cas_retries),
        ))
    }
}

/// What [`MemcacheStore::cas_loop`]'s step makes of the stored bytes.
enum Step<T> {
    /// The answer, with nothing to write.
    Done(T),
    /// Write `bytes` with `exptime` by `cas`; `then` is the answer when it lands.
    Write {
        bytes: Vec<u8>,
        exptime: u32,
        then: T,
    },
}

async fn bounded<T>(
    timeout: Duration,
    server: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let timed_out = |t| unavailable(server, format!("no answer within {t:?}"));
    session_core::bounded(timeout, call, |e| e, timed_out).await
}

impl Inner {
    /// Rendezvous hashing: the server with the highest score for this key.
    fn server(&self, key: &StorageKey) -> &Server {
        let k = key.prefix_u64();
        self.servers
            .iter()
            .max_by_key(|s| mix(k ^ s.seed))
            .expect("build refuses an empty server list")
    }
}

impl Server {
    async fn checkout(&self) -> Result<Conn<'_>, StoreError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| unavailable(&self.addr, e))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let protocol = match idle {
            Some(protocol) => protocol,
            None => {
                let stream = TcpStream::connect(&self.addr)
                    .await
                    .map_err(|e| unavailable(&self.addr, e))?;
                let _ = stream.set_nodelay(true);
                protocol(stream)
            }
        };
        Ok(Conn {
            server: self,
            protocol: Some(protocol),
            _permit: permit,
        })
    }
}

#[async_trait]
impl SessionStore for MemcacheStore {
    async fn load_body(
        &self,
        key: &StorageKey,
    ) -> Result<Option<session_core::Loaded>, StoreError> {
        Ok(self
            .read(key)
            .await?
            .map(|body| session_core::Loaded::Body { key: *key, body }))
    }

    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        Ok(self.read(key).await?.map(|body| body.into_record(*key)))
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        let envelope = envelope::encode(record);
        self.check_size(&envelope)?;
        let item = self.item_key(&record.key);
        let exp = exptime(record.expires_at, Timestamp::now());
        self.with_conn(&record.key, async |conn| {
            match conn.get().add(&item, &envelope, exp).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::IdCollision),
                Err(e) => Err(map_io(&conn.server.addr, e)),
            }
        })
        .await
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.read_modify_write(key, changes, expires_at).await
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.read_modify_write(key, &Changes::new(), expires_at)
            .await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        let item = self.item_key(key);
        self.with_conn(key, async |conn| {
            let addr = &conn.server.addr;
            // `delete` is sent with noreply; `version` is answered only after it was applied.
            conn.get()
                .delete(&item)
                .await
                .map_err(|e| map_io(addr, e))?;
            conn.get().version().await.map_err(|e| map_io(addr, e))?;
            Ok(())
        })
        .await
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// `gets` + `cas` of the pointer in place of the session, retried on a lost race.
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        self.inner.seen.forget(key);
        let pointer = blob::forward_pointer(to, until);
        self.cas_loop(
            key,
            None,
            "retire",
            || None,
            |bytes, now| {
                if bytes.starts_with(FORWARD_MAGIC) {
                    return Ok(Step::Done(None));
                }
                let record =
                    envelope::decode(*key, bytes).map_err(|e| StoreError::corrupt(STORE, e))?;
                if record.is_expired_at(now) {
                    return Ok(Step::Done(None));
                }
                Ok(Step::Write {
                    bytes: pointer.clone(),
                    exptime: exptime(until, now),
                    then: Some(record),
                })
            },
        )
        .await
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let item = self.item_key(key);
        let found = self
            .with_conn(key, async |conn| {
                match conn.get().get(item.as_bytes()).await {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(map_io(&conn.server.addr, e)),
                }
            })
            .await?;
        let now = Timestamp::now();
        Ok(found
            .as_deref()
            .and_then(blob::parse_forward)
            .filter(|(_, until)| *until > now)
            .map(|(to, _)| to))
    }

    fn expires_natively(&self) -> bool {
        true
    }

    /// Writes, then ends ([`session_core::write_then_cap`]): memcached keeps no per-user index:
    /// the listing fails, the login stands and a warning is logged.
    async fn write_capped(
        &self,
        write: session_core::OwnedWrite<'_>,
        cap: &session_core::OwnerCap<'_>,
    ) -> Result<session_core::CappedWrite, StoreError> {
        session_core::write_then_cap(self, write, cap).await
    }

    /// memcached cannot enumerate items, and an index item could not be kept consistent.
    /// Each server in turn (in the order given), its session keys listed with
    /// `lru_crawler metadump hash` (memcached 1.6; `metadump all` on 1.4.31 and later, which
    /// can miss an item the server moves between LRU segments meanwhile; the LRU crawler must
    /// be on, as it is by default) and taken in key order after the cursor
    /// (`<server index>:<last key>`). Every
    /// page dumps the server's whole key list once (keeping only `limit` keys in memory), so
    /// a scan of N sessions reads about N²/`limit` dump lines: fine for a migration of
    /// millions with a page of thousands. A session created during the scan with a key below
    /// the cursor is not listed; forward pointers are listed too. While another metadump is
    /// running on a server, the call waits for it (up to 5 s).
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let servers = &self.inner.servers;
        let (mut server, mut after) = ScanCursor::part(cursor, STORE, servers.len())?;
        let limit = limit.max(1);
        loop {
            let addr = &servers[server].addr;
            let dump = dump::keys_after(addr, &self.inner.prefix, after, limit);
            let (keys, more) = bounded(self.inner.timeout.max(SCAN_TIMEOUT), addr, dump).await?;
            let next = if more {
                keys.last().map(|k| ScanCursor::in_part(server, Some(k)))
            } else if server + 1 < servers.len() {
                Some(ScanCursor::in_part(server + 1, None))
            } else {
                None
            };
            if keys.is_empty() && next.is_some() && !more {
                // An empty server: go straight on to the next one.
                server += 1;
                after = None;
                continue;
            }
            return Ok(ScanPage { keys, next });
        }
    }

    async fn sessions_of(&self, _owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        Err(StoreError::Unsupported {
            store: STORE,
            operation: "sessions_of",
        })
    }

    /// No per-user index, as for `sessions_of`.
    async fn delete_sessions_of(&self, _owner: &str) -> Result<u64, StoreError> {
        Err(StoreError::Unsupported {
            store: STORE,
            operation: "delete_sessions_of",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A stream that answers `reply` and counts the writes it is given.
    struct Counting {
        reply: io::Cursor<Vec<u8>>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.reply).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Each command reaches the connection as one write: `cas` and `add`, whose line, value
    /// and `\r\n` memcache-async writes separately, included.
    #[tokio::test]
    async fn a_command_is_one_write() {
        let value = vec![b'v'; 300];
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stream = |reply: &str| {
            writes.store(0, std::sync::atomic::Ordering::Relaxed);
            Counting {
                reply: io::Cursor::new(reply.as_bytes().to_vec()),
                writes: writes.clone(),
            }
        };
        let written = || writes.load(std::sync::atomic::Ordering::Relaxed);
        let mut p = protocol(stream("STORED\r\n"));
        assert!(p.cas("k", &value, 7, 60).await.unwrap());
        assert_eq!(written(), 1, "cas");
        let mut p = protocol(stream("STORED\r\n"));
        p.add("k", &value, 60).await.unwrap();
        assert_eq!(written(), 1, "add");
        let mut p = protocol(stream("VALUE k 0 1 9\r\nv\r\nEND\r\n"));
        p.gets_cas("k").await.unwrap();
        assert_eq!(written(), 1, "gets");
    }

    #[test]
    fn exptime_follows_memcached_rules() {
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let at = |ms: i64| Timestamp::from_unix_millis(now.as_unix_millis() + ms);
        assert_eq!(exptime(at(1), now), 1);
        assert_eq!(exptime(at(1000), now), 1);
        assert_eq!(exptime(at(1001), now), 2);
        assert_eq!(
            exptime(at(RELATIVE_LIMIT_SECS * 1000), now),
            RELATIVE_LIMIT_SECS as u32
        );
        let far = at(RELATIVE_LIMIT_SECS * 1000 + 1000);
        assert_eq!(exptime(far, now), far.as_unix_secs_ceil() as u32);
        assert!(
            exptime(at(-5), now) as i64 > RELATIVE_LIMIT_SECS,
            "past expiries are absolute"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let build_error = |e: StoreError| match e {
            StoreError::Config {
                store: "memcache",
                source,
            } => *source.downcast::<BuildError>().unwrap(),
            other => panic!("not a Config error: {other:?}"),
        };
        assert_eq!(
            build_error(
                MemcacheStore::builder(Vec::<String>::new())
                    .build()
                    .unwrap_err()
            ),
            BuildError::NoServers
        );
        for prefix in ["a b", "a\nb", "\0", &"p".repeat(200)] {
            let err = MemcacheStore::builder(["127.0.0.1:1"])
                .key_prefix(prefix)
                .build()
                .unwrap_err();
            assert!(matches!(build_error(err), BuildError::BadPrefix(_)));
        }
        assert!(MemcacheStore::open(["127.0.0.1:1"]).is_ok());
    }
}
