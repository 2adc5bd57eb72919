//! A Redis and Redis Cluster [`SessionStore`] for `session-core`.
//!
//! - **One string per session**, keyed `{prefix}{<storage key>}` (the braces are a cluster
//!   hash tag, so a session's key has a slot of its own), holding `session-core`'s versioned,
//!   checksummed envelope followed by an 8-byte version tag. Its `PEXPIREAT` is the
//!   session's expiry, so Redis removes expired sessions itself; `load` also checks the
//!   envelope's expiry.
//! - **No lost updates, by compare-and-set.** `load` is one `GET`, and the store keeps what
//!   it read for a moment. `update` and `touch` patch those bytes and send them with one Lua
//!   script (EVALSHA; sent as EVAL with the source on NOSCRIPT) that writes them only if the
//!   stored tag is still the one read, and otherwise answers the stored value, which the
//!   store patches again and resends: two requests changing different keys both persist,
//!   and a deleted session is never brought back. A value of 2 KB or more is staged
//!   instead of passed to the script (whose argument Lua's collector makes costly): a `SET`
//!   of a key of its own in the session's slot, which a second script renames over the
//!   session under the same check, pipelined in one round trip. Writers of one session in
//!   one process take turns, so only writers in different processes can race. A write that
//!   keeps losing claims the session before its retries run out: it marks the stored value's
//!   tag (nothing else changes), every other writer then waits for its write instead of
//!   racing, and its next compare-and-set wins; a claim left by a writer that died is taken over once a
//!   waiter has waited the command timeout. A write that still loses
//!   [`RedisStoreBuilder::cas_retries`] races in a row fails with
//!   [`StoreError::Unavailable`] (the HTTP layers answer 503), never silently. `create` is
//!   `SET … NX` and refuses a taken key.
//! - **Per-user index**: a set per user, `{prefix}user:{sha256(user)}`, lists the user's
//!   sessions for `sessions_of` and "log out everywhere" (`delete_sessions_of`, which deletes
//!   each session by compare-and-set after checking it is still the user's). In a cluster
//!   the set and the sessions live in different slots, so the set is kept beside the session
//!   writes, not in the same script; readers verify every member and prune stale ones.
//! - **Login** (`retire`): one script replaces the session by a forward pointer (the new
//!   key) with its own `PEXPIREAT`, which every other call reads as no session.
//! - **Foreign data**: a key in the earlier one-hash-per-session layout, of another type,
//!   or a string that is not an envelope is [`StoreError::Corrupt`]: the HTTP layers start
//!   a fresh session and log it, never a `WRONGTYPE` error.
//! - **Connections**: a `ConnectionManager` (one multiplexed connection that reconnects by
//!   itself) for a single node, the cluster-async client for a cluster; never one connection
//!   behind a lock. Every call ends within the command timeout: a server that is down or
//!   stalled gives [`StoreError::Unavailable`] quickly, and the store serves again when the
//!   server is back, without being rebuilt.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use session_core::SessionManager;
//! use session_redis::RedisStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .key_prefix("myapp:session:")
//!     .command_timeout(Duration::from_millis(500))
//!     .open()
//!     .await?;
//! let manager = SessionManager::new(store);
//!
//! // Or a cluster, by any of its nodes:
//! let cluster = RedisStore::cluster_builder(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
//!     .open()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! (Not run as a doctest: it needs a server. The crate's tests run the whole conformance
//! suite against a real standalone server and a real 3-master cluster.)
//!
//! # Errors
//!
//! [`StoreError::Unavailable`] when the server cannot be reached or does not answer within
//! the command timeout, or a write lost more compare-and-set races in a row than
//! `cas_retries`; [`StoreError::Corrupt`] for a value that is not a session of this layout
//! (damaged, foreign, a hash or another type); [`StoreError::Backend`] for other server
//! errors.
//!
//! # Feature flags
//!
//! - `tls`: `rediss://` URLs, through the driver's rustls support.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ErrorKind, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Script,
    ServerErrorKind, Value,
};
use session_core::blob::{self, RecentReads, WriteTurns};
use session_core::{
    Changes, IdGenerator, OwnerChange, Record, ScanCursor, ScanPage, SessionInfo, SessionStore,
    StorageKey, StoreError, Timestamp, UuidV4Generator, bad_cursor, envelope,
};
use sha2::{Digest, Sha256};

pub use redis;

const STORE: &str = "redis";
const CORRUPT_CODE: &str = "SESSIONCORRUPT";
const WRONG_TYPE_CODE: &str = "WRONGTYPE";
/// The version tag after every stored value: 8 bytes, little-endian.
const TAG_LEN: usize = 8;
/// A forward pointer's tag, which no session's tag ever takes.
const POINTER_TAG: u64 = u64::MAX;

/// Compare-and-set of a session's value, one round trip whether it wins or loses. Public
/// only for the benchmark's raw limit of this layout (`raw-redis-cas`).
#[doc(hidden)]
pub const CAS: &str = r"
-- KEYS[1]: the session. ARGV[1]: the tag read (8 bytes); ARGV[2]: the new value, or '' to
-- delete; ARGV[3]: the new value's expiry (Unix ms). Returns 1 when written, 0 when the
-- key is gone, else the stored value (the tag differs: another writer won).
local tag = redis.call('GETRANGE', KEYS[1], -8, -1)
if tag ~= ARGV[1] then
  if tag == '' then return 0 end
  return redis.call('GET', KEYS[1])
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
";

/// Values from this size on are not sent through [`CAS`] but staged: a plain `SET` of a key
/// of their own in the session's slot, then [`STAGED_CAS`], which renames it over the
/// session, pipelined in one round trip. A script's argument is copied into Lua's heap, and
/// Lua's collector then works in proportion to it: on Redis 7.0, `EVAL` of the store's
/// script costs the server 4.4 µs a call with a 250-byte value, 7 µs at 1 KB and 37 µs at
/// 20 KB, where a `SET` costs 0.8 µs at every size (BENCHMARKS.md, thirteenth session).
const STAGE_FROM: usize = 2048;

/// Compare-and-set of a staged value: like [`CAS`], with the new value already written to
/// its own key. Public only for the benchmark's raw limit of this layout.
#[doc(hidden)]
pub const STAGED_CAS: &str = r"
-- KEYS[1]: the session; KEYS[2]: the new value, staged (same slot; its expiry is the
-- session's). ARGV[1]: the tag read. Returns 1 when the staged value replaced the session,
-- 0 when the session is gone, else the stored value (another writer won); the staged key
-- is gone afterwards either way.
local tag = redis.call('GETRANGE', KEYS[1], -8, -1)
if tag ~= ARGV[1] then
  redis.call('DEL', KEYS[2])
  if tag == '' then return 0 end
  return redis.call('GET', KEYS[1])
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('SESSIONSTAGED the staged value is missing')
end
redis.call('RENAME', KEYS[2], KEYS[1])
return 1
";

/// A write that has lost this many compare-and-set races in a row claims the session: it
/// sets the stored value's tag to a claim of its own ([`RETAG`], which changes nothing
/// else), so every other writer's next compare-and-set loses and, seeing a claim, waits for
/// it ([`CLAIM_POLL`]) instead of racing; the claimant's next write then wins, and its tag
/// ends the claim. Without it, `n` processes writing one session each lose a race with
/// odds `(n - 1) / n`, and one of them, now and then, loses dozens in a row.
const CLAIM_AFTER: u32 = 4;

/// The top bit of a tag marks a claim ([`CLAIM_AFTER`]); ordinary tags never set it.
const CLAIM_BIT: u64 = 1 << 63;

/// How often a writer that found a claim reads the session again.
const CLAIM_POLL: Duration = Duration::from_millis(1);

/// Sets a session's tag alone, in place (`SETRANGE`; the value and its expiry stay).
const RETAG: &str = r"
-- KEYS[1]: the session. ARGV[1]: the new tag (8 bytes); ARGV[2]: the tag it may replace,
-- or '' for any tag whose top bit is clear (no claim, no forward pointer). Only a session
-- envelope is retagged. Returns 0 when the key is gone, else the stored value afterwards.
local len = redis.call('STRLEN', KEYS[1])
if len == 0 then return 0 end
if len >= 12 and redis.call('GETRANGE', KEYS[1], 0, 3) == 'RSSN' then
  local tag = redis.call('GETRANGE', KEYS[1], -8, -1)
  if tag == ARGV[2] or (ARGV[2] == '' and string.byte(tag, 8) < 128) then
    redis.call('SETRANGE', KEYS[1], len - 8, ARGV[1])
  end
end
return redis.call('GET', KEYS[1])
";

const RETIRE: &str = r"
-- KEYS[1]: the session. ARGV[1]: the forward pointer (with its tag); ARGV[2]: until (Unix
-- ms). Replaces a session by the pointer; returns the session's value, or nil.
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, 4) == 'SFW1' then return false end
if string.sub(value, 1, 4) ~= 'RSSN' then
  return redis.error_reply('SESSIONCORRUPT not a session envelope')
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return value
";

/// A single-node or a cluster connection; both multiplex and reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the store connects.
#[derive(Clone)]
enum Target {
    Single(String),
    Cluster(Vec<String>),
    /// The application's own connection.
    Given(Conn),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(url) => f.debug_tuple("Single").field(url).finish(),
            Self::Cluster(nodes) => f.debug_tuple("Cluster").field(nodes).finish(),
            Self::Given(Conn::Single(_)) => f.write_str("Given(ConnectionManager)"),
            Self::Given(Conn::Cluster(_)) => f.write_str("Given(ClusterConnection)"),
        }
    }
}

/// Settings for a [`RedisStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    command_timeout: Duration,
    connection_timeout: Duration,
    cas_retries: u32,
}

impl RedisStoreBuilder {
    /// How many compare-and-set races one write may lose in a row to writers in other
    /// processes before it fails with [`StoreError::Unavailable`] (default 32, at least 1).
    /// Writers in one process take turns and never race each other; when more than one is
    /// allowed, a write that keeps losing claims the session before they run out and wins
    /// next.
    pub fn cas_retries(mut self, retries: u32) -> Self {
        self.cas_retries = retries.max(1);
        self
    }

    /// The prefix of every key (default `session:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one call may take, reconnecting included, before it fails with
    /// [`StoreError::Unavailable`] (default 2 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 1 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Connects (on the application's own connection: checks that it answers a `PING`).
    ///
    /// # Errors
    /// [`StoreError::Config`] for an invalid URL; [`StoreError::Unavailable`] when the
    /// server cannot be reached within the timeouts.
    pub async fn open(self) -> Result<RedisStore, StoreError> {
        let conn = match &self.target {
            Target::Given(conn) => {
                let mut conn = conn.clone();
                let ping = redis::cmd("PING");
                let reply = timed(self.command_timeout, conn.req_packed_command(&ping)).await?;
                if !matches!(&reply, Value::SimpleString(s) if s == "PONG") {
                    return Err(StoreError::backend(
                        STORE,
                        format!("PING answered {reply:?}"),
                    ));
                }
                conn
            }
            Target::Single(url) => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| StoreError::config(STORE, e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connection_timeout))
                    .set_response_timeout(Some(self.command_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let open = ConnectionManager::new_with_config(client, config);
                Conn::Single(timed(self.command_timeout + self.connection_timeout, open).await?)
            }
            Target::Cluster(nodes) => {
                let infos = nodes
                    .iter()
                    .map(|n| n.as_str().into_connection_info())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| StoreError::config(STORE, e))?;
                let client = redis::cluster::ClusterClientBuilder::new(infos)
                    .connection_timeout(self.connection_timeout)
                    .response_timeout(self.command_timeout)
                    .retries(2)
                    .build()
                    .map_err(|e| StoreError::backend(STORE, e))?;
                let open = client.get_async_connection();
                Conn::Cluster(timed(self.command_timeout + self.connection_timeout, open).await?)
            }
        };
        Ok(RedisStore {
            conn,
            prefix: self.prefix,
            timeout: self.command_timeout,
            cas_retries: self.cas_retries,
            cas: Lua::new(CAS),
            staged_cas: Lua::new(STAGED_CAS),
            retire: Lua::new(RETIRE),
            retag: Lua::new(RETAG),
            recent: Arc::default(),
            turns: Arc::default(),
        })
    }
}

/// The Redis session store. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    timeout: Duration,
    cas_retries: u32,
    cas: Lua,
    staged_cas: Lua,
    retire: Lua,
    retag: Lua,
    /// What `load` read and the last writes, for the compare-and-set that follows.
    recent: Arc<RecentReads>,
    turns: Arc<WriteTurns>,
}

/// A Lua script: its source and the SHA1 that `EVALSHA` names it by. Clones share both.
#[derive(Clone)]
struct Lua {
    sha: Arc<str>,
    source: Arc<str>,
}

impl Lua {
    fn new(source: &str) -> Lua {
        Lua {
            sha: Script::new(source).get_hash().into(),
            source: source.into(),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.conn {
            Conn::Single(_) => "single",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("mode", &kind)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("cas_retries", &self.cas_retries)
            .finish_non_exhaustive()
    }
}

fn map_error(e: RedisError) -> StoreError {
    // WRONGTYPE: the key holds a hash (the earlier layout) or another type.
    if matches!(e.code(), Some(CORRUPT_CODE | WRONG_TYPE_CODE)) {
        return StoreError::corrupt(STORE, e);
    }
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.is_unrecoverable_error()
    {
        return StoreError::unavailable(STORE, e);
    }
    StoreError::backend(STORE, e)
}

/// Runs `call`, failing with `Unavailable` when it takes longer than `timeout`.
async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    session_core::bounded(timeout, call, map_error, |t| {
        StoreError::timed_out(STORE, t)
    })
    .await
}

fn corrupt(reason: &'static str) -> StoreError {
    StoreError::corrupt(STORE, reason)
}

impl RedisStore {
    /// Settings for a store on a single node (`redis://host:port/db`, or `rediss://` with the
    /// `tls` feature).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::builder_for(Target::Single(url.into()))
    }

    /// Settings for a store on a Redis Cluster, reached through any of `nodes`.
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder_for(Target::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    /// Settings for a store on a connection the application already holds (it keeps
    /// reconnecting by itself; clones share it). The builder's `connection_timeout` does not
    /// apply, the `command_timeout` still bounds every call.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_redis::{RedisStore, redis};
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let conn = redis::aio::ConnectionManager::new(client).await?; // the app's own
    /// let store = RedisStore::with_connection_manager(conn.clone())
    ///     .key_prefix("myapp:session:")
    ///     .open()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_connection_manager(conn: ConnectionManager) -> RedisStoreBuilder {
        Self::builder_for(Target::Given(Conn::Single(conn)))
    }

    /// Settings for a store on the application's own Redis Cluster connection, as
    /// [`RedisStore::with_connection_manager`].
    pub fn with_cluster_connection(conn: ClusterConnection) -> RedisStoreBuilder {
        Self::builder_for(Target::Given(Conn::Cluster(conn)))
    }

    fn builder_for(target: Target) -> RedisStoreBuilder {
        RedisStoreBuilder {
            target,
            prefix: "session:".into(),
            command_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(1),
            cas_retries: 32,
        }
    }

    /// Connects to a single node with default settings.
    ///
    /// # Errors
    /// As [`RedisStoreBuilder::open`].
    pub async fn open(url: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(url).open().await
    }

    /// The Redis key of a session: `{prefix}{<hex>}`.
    pub fn redis_key(&self, key: &StorageKey) -> String {
        let hex = key.to_hex();
        let mut out = String::with_capacity(self.prefix.len() + hex.as_str().len() + 2);
        out.push_str(&self.prefix);
        out.push('{');
        out.push_str(hex.as_str());
        out.push('}');
        out
    }

    /// `EVALSHA` of `script` on `key` with the arguments `args` adds. When the server does
    /// not know the script (after a restart or a `SCRIPT FLUSH`) the same call is sent once
    /// more as `EVAL` with the source, which loads and runs it in one step: a flush between
    /// a `SCRIPT LOAD` and a second `EVALSHA` cannot fail it. The command is built directly,
    /// not through redis-rs's `ScriptInvocation`, which copies every argument twice.
    /// `arg_bytes` is the size of what `args` adds, so the command is built without growing.
    async fn eval<T: FromRedisValue>(
        &self,
        script: &Lua,
        key: &StorageKey,
        arg_bytes: usize,
        args: impl Fn(&mut Cmd),
    ) -> Result<T, StoreError> {
        let redis_key = self.redis_key(key);
        let build = |verb: &str, body: &str| {
            let mut cmd = command(
                verb,
                8,
                verb.len() + body.len() + 1 + redis_key.len() + arg_bytes,
            );
            cmd.arg(body).arg(1).arg(&redis_key);
            args(&mut cmd);
            cmd
        };
        let cmd = build("EVALSHA", &script.sha);
        let (cmd, build) = (&cmd, &build);
        self.call(async |conn| match cmd.query_async(&mut *conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                build("EVAL", &script.source).query_async(conn).await
            }
            result => result,
        })
        .await
    }

    async fn call<T>(
        &self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, RedisError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        timed(self.timeout, f(&mut conn)).await
    }

    /// The key of a user's set of sessions: `{prefix}user:{sha256(owner)}`, its own hash tag.
    pub fn owner_key(&self, owner: &str) -> String {
        let digest = Sha256::digest(owner.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}user:{{{hex}}}", self.prefix)
    }

    /// Adds a session to its owner's set, which lives as long as the longest session in it.
    /// Not atomic with the session's own write (in a cluster they are in different slots):
    /// readers of the set check each member's owner and drop stale ones.
    async fn index(
        &self,
        owner: &str,
        key: &StorageKey,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let set = self.owner_key(owner);
        let member = key.to_hex().to_string();
        let at = expires_at.as_unix_millis();
        self.call(async |conn| {
            redis::pipe()
                .cmd("SADD")
                .arg(&set)
                .arg(&member)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&set)
                .arg(at)
                .arg("NX")
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&set)
                .arg(at)
                .arg("GT")
                .ignore()
                .query_async::<()>(conn)
                .await
        })
        .await
    }

    /// The members of a user's set, as storage keys (foreign members are dropped).
    async fn members(&self, owner: &str) -> Result<Vec<StorageKey>, StoreError> {
        let set = self.owner_key(owner);
        let members: Vec<String> = self
            .call(async |conn| redis::cmd("SMEMBERS").arg(&set).query_async(conn).await)
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| StorageKey::parse_hex(m))
            .collect())
    }

    async fn forget(&self, owner: &str, key: &StorageKey) -> Result<(), StoreError> {
        let set = self.owner_key(owner);
        let member = key.to_hex().to_string();
        self.call(async |conn| {
            redis::cmd("SREM")
                .arg(&set)
                .arg(&member)
                .query_async::<i64>(conn)
                .await
        })
        .await
        .map(drop)
    }

    /// The `SCAN` pattern of session keys: the prefix (its glob characters escaped) and `{`.
    fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("{*");
        pattern
    }

    /// The storage key in a session's Redis key; `None` for any other key.
    fn key_of(&self, redis_key: &str) -> Option<StorageKey> {
        let hex = redis_key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('{')?
            .strip_suffix('}')?;
        StorageKey::parse_hex(hex)
    }

    /// The cluster's masters as `(host, port)`, in address order.
    async fn masters(&self) -> Result<Vec<(String, u16)>, StoreError> {
        let nodes: String = self
            .call(async |conn| redis::cmd("CLUSTER").arg("NODES").query_async(conn).await)
            .await?;
        let mut masters: Vec<(String, u16)> = nodes
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let addr = words.nth(1)?;
                let flags = words.next()?;
                let is_master = flags.split(',').any(|f| f == "master")
                    && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
                let addr = addr.split(['@', ',']).next()?;
                let (host, port) = addr.rsplit_once(':')?;
                is_master.then(|| Some((host.to_owned(), port.parse().ok()?)))?
            })
            .collect();
        masters.sort();
        Ok(masters)
    }
}

/// A command `verb` with room for `args` arguments (the verb included) of `bytes` bytes in
/// all: `redis::cmd` starts empty and grows its buffers once or twice per argument.
fn command(verb: &str, args: usize, bytes: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg(verb);
    cmd
}

/// A stored value split into its body (an envelope or a forward pointer) and its tag.
fn split_tag(value: &[u8]) -> Result<(&[u8], u64), StoreError> {
    if value.len() < TAG_LEN {
        return Err(corrupt("a value shorter than its version tag"));
    }
    let (body, tag) = value.split_at(value.len() - TAG_LEN);
    let mut bytes = [0u8; TAG_LEN];
    bytes.copy_from_slice(tag);
    Ok((body, u64::from_le_bytes(bytes)))
}

/// The tag of the value that replaces one tagged `tag`: never [`POINTER_TAG`] or a claim.
fn next_tag(tag: u64) -> u64 {
    tag.wrapping_add(1) & !CLAIM_BIT
}

/// Whether `tag` is a writer's claim ([`CLAIM_AFTER`]).
fn is_claim(tag: u64) -> bool {
    tag & CLAIM_BIT != 0 && tag != POINTER_TAG
}

/// A fresh claim: the top bit set, the rest random (never [`POINTER_TAG`]).
fn new_claim() -> u64 {
    let digest = Sha256::digest(UuidV4Generator.generate().as_str().as_bytes());
    let mut bytes = [0u8; TAG_LEN];
    bytes.copy_from_slice(&digest[..TAG_LEN]);
    (u64::from_le_bytes(bytes) | CLAIM_BIT) & !1
}

/// The session in a stored body, its values left encoded: `None` for a forward pointer or an
/// expired session.
fn live_body(body: &[u8]) -> Result<Option<session_core::body::Body>, StoreError> {
    if body.starts_with(blob::FORWARD_MAGIC) {
        return Ok(None);
    }
    let body = envelope::decode_body(body).map_err(|e| StoreError::corrupt(STORE, e))?;
    Ok((body.expires_at() > Timestamp::now()).then_some(body))
}

/// What [`RedisStore::cas_loop`]'s step makes of a session's stored body.
enum Step<T> {
    /// The answer, with nothing to write.
    Done(T),
    /// Replace the value by `value` (body and tag room: the loop appends the tag) expiring at
    /// `expires_at`, or delete the session when `value` is `None`; `then` is the answer when
    /// it lands.
    Write {
        value: Option<Vec<u8>>,
        expires_at: Timestamp,
        then: T,
    },
}

/// How one compare-and-set ended.
enum Attempt<T> {
    /// Nothing to write: the operation's answer.
    Done(T),
    /// Written: the operation's answer.
    Written(T),
    /// The session is gone.
    Absent,
    /// Another writer won; its value, as stored.
    Lost(Vec<u8>),
}

impl RedisStore {
    /// The session's value as [`RecentReads`] holds it (what `load` just saw, or this
    /// process's last write) or a `GET` reads it, turned by
    /// `next` into an answer or a write, which the [`CAS`] script makes only if the value is
    /// still the one read; when another writer won, its value is the next try's. A missing
    /// session answers `absent()`; `what` names the operation when the retries run out.
    async fn cas_loop<T>(
        &self,
        key: &StorageKey,
        what: &str,
        absent: impl Fn() -> T,
        next: impl Fn(&[u8]) -> Result<Step<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let _turn = self.turns.turn(key).await;
        let mut current = match self.recent.take(key) {
            Some((value, _)) => value,
            None => match self.get(key).await? {
                Some(value) => value,
                None => return Ok(absent()),
            },
        };
        let mut lost = 0;
        // From this many lost races on, the write claims the session (`CLAIM_AFTER`).
        let claim_after = CLAIM_AFTER.min(self.cas_retries.saturating_sub(1));
        // The claim this write holds, and since when it has waited for other writers' claims.
        let mut claim: Option<u64> = None;
        let mut waiting_since: Option<std::time::Instant> = None;
        loop {
            let (body, tag) = split_tag(&current)?;
            if is_claim(tag) && claim != Some(tag) {
                // Another writer claimed the session: wait for its write, or take its claim
                // over once this write has waited as long as a command may take.
                let since = *waiting_since.get_or_insert_with(std::time::Instant::now);
                let value = if since.elapsed() < self.timeout {
                    tokio::time::sleep(CLAIM_POLL).await;
                    self.get(key).await?
                } else {
                    let (value, ours) = self.claim(key, Some(tag)).await?;
                    claim = ours;
                    if ours.is_none() {
                        lost += 1;
                    }
                    value
                };
                current = match value {
                    Some(value) => value,
                    None => return Ok(absent()),
                };
            } else {
                match self.attempt(key, what, body, tag, &next).await {
                    Ok(Attempt::Done(answer)) => {
                        if claim == Some(tag) {
                            self.release(key, tag).await;
                        } else {
                            self.recent.put(*key, current, tag);
                        }
                        return Ok(answer);
                    }
                    Ok(Attempt::Written(answer)) => return Ok(answer),
                    Ok(Attempt::Absent) => return Ok(absent()),
                    Ok(Attempt::Lost(stored)) => {
                        lost += 1;
                        current = stored;
                        claim = None;
                    }
                    Err(e) => {
                        if claim == Some(tag) {
                            self.release(key, tag).await;
                        }
                        return Err(e);
                    }
                }
            }
            if lost >= self.cas_retries {
                return Err(StoreError::unavailable(
                    STORE,
                    format!(
                        "{what} lost {lost} compare-and-set races in a row to other writers of \
                         the session"
                    ),
                ));
            }
            // A write that keeps losing claims the value it now holds, unless another
            // writer's claim is on it (then it waits first, above).
            if claim.is_none() && lost >= claim_after && split_tag(&current)?.1 & CLAIM_BIT == 0 {
                let (value, ours) = self.claim(key, None).await?;
                claim = ours;
                current = match value {
                    Some(value) => value,
                    None => return Ok(absent()),
                };
            }
        }
    }

    /// One compare-and-set of what `next` makes of `body`, the value read tagged `tag`.
    async fn attempt<T>(
        &self,
        key: &StorageKey,
        what: &str,
        body: &[u8],
        tag: u64,
        next: impl Fn(&[u8]) -> Result<Step<T>, StoreError>,
    ) -> Result<Attempt<T>, StoreError> {
        let (value, expires_at, then) = match next(body)? {
            Step::Done(answer) => return Ok(Attempt::Done(answer)),
            Step::Write {
                value,
                expires_at,
                then,
            } => (value, expires_at, then),
        };
        let new_tag = next_tag(tag);
        let value = value.map(|mut v| {
            v.extend_from_slice(&new_tag.to_le_bytes());
            v
        });
        let value_len = value.as_ref().map_or(0, Vec::len);
        let reply: Value = match &value {
            Some(staged) if value_len >= STAGE_FROM && expires_at > Timestamp::now() => {
                self.staged_cas(key, tag, staged, expires_at).await?
            }
            _ => {
                self.eval(&self.cas, key, TAG_LEN + value_len + 20, |cmd| {
                    cmd.arg(&tag.to_le_bytes()[..])
                        .arg(value.as_deref().unwrap_or_default())
                        .arg(expires_at.as_unix_millis());
                })
                .await?
            }
        };
        match reply {
            Value::Int(1) => {
                if let Some(value) = value {
                    self.recent.put(*key, value, new_tag);
                }
                Ok(Attempt::Written(then))
            }
            Value::Int(0) | Value::Nil => Ok(Attempt::Absent),
            Value::BulkString(stored) => Ok(Attempt::Lost(stored)),
            other => Err(StoreError::backend(
                STORE,
                format!("the {what} script answered {other:?}"),
            )),
        }
    }

    /// Claims the session for this write ([`CLAIM_AFTER`]): retags its value with a fresh
    /// claim when its tag is no claim, or is `stale` (a claim this write waited out). Answers
    /// the value afterwards (`None`: the session is gone) and the claim, when it is this
    /// write's.
    async fn claim(
        &self,
        key: &StorageKey,
        stale: Option<u64>,
    ) -> Result<(Option<Vec<u8>>, Option<u64>), StoreError> {
        let token = new_claim();
        let value = self.retag(key, token, stale).await?;
        let ours = match &value {
            Some(value) => (split_tag(value)?.1 == token).then_some(token),
            None => None,
        };
        Ok((value, ours))
    }

    /// Gives up this write's claim `claim` without writing (the write found nothing to do,
    /// or failed): the value keeps its bytes under an ordinary tag. Best effort: a claim
    /// left behind is taken over once its waiters have waited a command timeout.
    async fn release(&self, key: &StorageKey, claim: u64) {
        let _ = self.retag(key, next_tag(claim), Some(claim)).await;
    }

    /// [`RETAG`]: the session's tag set to `tag` if it is `replaces` (or, for `None`, no
    /// claim); the value afterwards, `None` when the session is gone.
    async fn retag(
        &self,
        key: &StorageKey,
        tag: u64,
        replaces: Option<u64>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let replaces = replaces.map(u64::to_le_bytes);
        let value: Value = self
            .eval(&self.retag, key, 2 * TAG_LEN + 8, |cmd| {
                cmd.arg(&tag.to_le_bytes()[..])
                    .arg(replaces.as_ref().map_or(&[][..], |t| &t[..]));
            })
            .await?;
        match value {
            Value::BulkString(value) => Ok(Some(value)),
            Value::Int(0) | Value::Nil => Ok(None),
            other => Err(StoreError::backend(
                STORE,
                format!("the claim script answered {other:?}"),
            )),
        }
    }

    /// A large value's compare-and-set ([`STAGE_FROM`]): `SET` of `value` to a key of its
    /// own (the session's key, `:staged:` and a random id, so writers in other processes
    /// never share one) expiring with the session, and [`STAGED_CAS`], pipelined; on
    /// `NOSCRIPT` the pair is sent again with `EVAL`. Answers like [`CAS`].
    async fn staged_cas(
        &self,
        key: &StorageKey,
        tag: u64,
        value: &[u8],
        expires_at: Timestamp,
    ) -> Result<Value, StoreError> {
        const SUFFIX: &str = ":staged:";
        let redis_key = self.redis_key(key);
        let nonce = UuidV4Generator.generate();
        let mut staged = String::with_capacity(redis_key.len() + SUFFIX.len() + 36);
        staged.push_str(&redis_key);
        staged.push_str(SUFFIX);
        staged.push_str(nonce.as_str());
        let expiry = expires_at.as_unix_millis();
        let pipeline = |verb: &str, body: &str| {
            let mut set = command("SET", 5, 3 + staged.len() + value.len() + 24);
            set.arg(&staged).arg(value).arg("PXAT").arg(expiry);
            let mut cas = command(verb, 6, verb.len() + body.len() + 2 * staged.len() + 16);
            cas.arg(body)
                .arg(2)
                .arg(&redis_key)
                .arg(&staged)
                .arg(&tag.to_le_bytes()[..]);
            let mut pipe = Pipeline::with_capacity(2);
            pipe.add_command(set).add_command(cas).ignore_errors();
            pipe
        };
        let first = pipeline("EVALSHA", &self.staged_cas.sha);
        let (first, pipeline) = (&first, &pipeline);
        let replies: Vec<Value> = self
            .call(async |conn| {
                let replies: Vec<Value> = first.query_async(&mut *conn).await?;
                match replies.get(1) {
                    Some(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::NoScript) => {
                        pipeline("EVAL", &self.staged_cas.source)
                            .query_async(conn)
                            .await
                    }
                    _ => Ok(replies),
                }
            })
            .await?;
        let mut replies = replies.into_iter();
        match (replies.next(), replies.next()) {
            (Some(Value::ServerError(e)), _) | (_, Some(Value::ServerError(e))) => {
                Err(map_error(e.into()))
            }
            (Some(_), Some(reply)) => Ok(reply),
            _ => Err(StoreError::backend(
                STORE,
                "the staged write's pipeline answered fewer than two replies",
            )),
        }
    }

    /// The live session under `key`, its values left encoded; the value read is kept for the
    /// next update's compare-and-set.
    async fn read(&self, key: &StorageKey) -> Result<Option<session_core::body::Body>, StoreError> {
        let Some(value) = self.get(key).await? else {
            return Ok(None);
        };
        let (stored, tag) = split_tag(&value)?;
        let body = live_body(stored)?;
        if body.is_some() {
            self.recent.put(*key, value, tag);
        }
        Ok(body)
    }

    async fn get(&self, key: &StorageKey) -> Result<Option<Vec<u8>>, StoreError> {
        let redis_key = self.redis_key(key);
        let mut cmd = command("GET", 2, 3 + redis_key.len());
        cmd.arg(&redis_key);
        self.call(async |conn| cmd.query_async(conn).await).await
    }

    /// `update` and `touch`: the changes patched into the stored envelope.
    async fn patch(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = self
            .cas_loop(
                key,
                "update",
                || false,
                |body| {
                    if body.starts_with(blob::FORWARD_MAGIC) {
                        return Ok(Step::Done(false)); // a cycled session's pointer
                    }
                    // Patched before the expiry check because patching verifies the checksum:
                    // a damaged value is `Corrupt` whether or not its expiry has passed.
                    let mut value =
                        Vec::with_capacity(envelope::patch_len_bound(body, changes) + TAG_LEN);
                    envelope::patch_into(body, changes, expires_at, &mut value)
                        .map_err(|e| StoreError::corrupt(STORE, e))?;
                    let old_expiry =
                        envelope::peek_expiry(body).map_err(|e| StoreError::corrupt(STORE, e))?;
                    if old_expiry <= Timestamp::now() {
                        return Ok(Step::Done(false));
                    }
                    Ok(Step::Write {
                        value: Some(value),
                        expires_at,
                        then: true,
                    })
                },
            )
            .await?;
        if done && let OwnerChange::Set(owner) = changes.owner() {
            self.index(owner, key, expires_at).await?;
        }
        Ok(done)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
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

    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let _turn = self.turns.turn(key).await;
        self.recent.forget(key);
        let mut pointer = blob::forward_pointer(to, until);
        pointer.extend_from_slice(&POINTER_TAG.to_le_bytes());
        let value: Option<Vec<u8>> = self
            .eval(&self.retire, key, pointer.len() + 20, |cmd| {
                cmd.arg(pointer.as_slice()).arg(until.as_unix_millis());
            })
            .await?;
        match value {
            Some(value) => Ok(live_body(split_tag(&value)?.0)?.map(|b| b.into_record(*key))),
            None => Ok(None),
        }
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let Some(value) = self.get(key).await? else {
            return Ok(None);
        };
        let now = Timestamp::now();
        Ok(blob::parse_forward(split_tag(&value)?.0)
            .filter(|(_, until)| *until > now)
            .map(|(to, _)| to))
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(envelope::len(record) + TAG_LEN);
        envelope::encode_into(record, &mut value);
        value.extend_from_slice(&0u64.to_le_bytes());
        let redis_key = self.redis_key(&record.key);
        let created: Option<String> = self
            .call(async |conn| {
                command("SET", 6, 3 + redis_key.len() + value.len() + 20)
                    .arg(&redis_key)
                    .arg(value.as_slice())
                    .arg("NX")
                    .arg("PXAT")
                    .arg(record.expires_at.as_unix_millis())
                    .query_async(conn)
                    .await
            })
            .await?;
        if created.is_none() {
            return Err(StoreError::IdCollision);
        }
        if let Some(owner) = &record.owner {
            self.index(owner, &record.key, record.expires_at).await?;
        }
        Ok(())
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.patch(key, changes, expires_at).await
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.patch(key, &Changes::new(), expires_at).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.recent.forget(key);
        let redis_key = self.redis_key(key);
        self.call(async |conn| {
            redis::cmd("DEL")
                .arg(&redis_key)
                .query_async::<i64>(conn)
                .await
        })
        .await?;
        self.recent.forget(key);
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// The user's set, each member read and checked (owner and expiry); stale members are
    /// removed from the set on the way.
    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = Timestamp::now();
        let mut live = Vec::new();
        for key in self.members(owner).await? {
            let value = self.get(&key).await?;
            let body = match value.as_deref().map(split_tag) {
                Some(Ok((body, _))) => live_body(body).ok().flatten(),
                _ => None,
            };
            match body {
                Some(b) if b.owner() == Some(owner) && b.expires_at() > now => {
                    live.push(SessionInfo {
                        key,
                        created_at: b.created_at(),
                        expires_at: b.expires_at(),
                    });
                }
                _ => self.forget(owner, &key).await?,
            }
        }
        Ok(live)
    }

    /// Deletes each session in the user's set that is still theirs (by compare-and-set, so
    /// an update racing it cannot bring it back), then empties the set.
    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        let mut removed = 0;
        for key in self.members(owner).await? {
            let deleted = self
                .cas_loop(
                    &key,
                    "delete_sessions_of",
                    || 0,
                    |body| {
                        if body.starts_with(blob::FORWARD_MAGIC) {
                            return Ok(Step::Done(0));
                        }
                        let theirs = envelope::peek_owner(body)
                            .map_err(|e| StoreError::corrupt(STORE, e))?
                            == Some(owner);
                        Ok(if theirs {
                            Step::Write {
                                value: None,
                                expires_at: Timestamp::now(),
                                then: 1,
                            }
                        } else {
                            Step::Done(0)
                        })
                    },
                )
                .await;
            match deleted {
                Ok(n) => removed += n,
                // A damaged value in the set is no session of the user's.
                Err(StoreError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
            self.recent.forget(&key);
            self.forget(owner, &key).await?;
        }
        Ok(removed)
    }

    fn expires_natively(&self) -> bool {
        true
    }

    /// Writes, then ends ([`session_core::write_then_cap`]): the per-user index lives in its
    /// own key, in another Cluster slot than the session, so the two cannot change in one
    /// script.
    async fn write_capped(
        &self,
        write: session_core::OwnedWrite<'_>,
        cap: &session_core::OwnerCap<'_>,
    ) -> Result<session_core::CappedWrite, StoreError> {
        session_core::write_then_cap(self, write, cap).await
    }

    /// `SCAN … MATCH {prefix}{* COUNT limit`: the server's cursor, so a key may be listed
    /// twice and a page may hold a few more keys than `limit`, or none. In a cluster each
    /// master is scanned in turn (masters in address order; the cursor is
    /// `<master index>:<cursor>`), so the masters must stay the same while a scan runs.
    /// Forward pointers are listed too (their value tells them apart, not their key).
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let cluster = matches!(self.conn, Conn::Cluster(_));
        let (node, at): (usize, u64) = match cursor {
            None => (0, 0),
            Some(c) => {
                let parsed = if cluster {
                    c.as_str()
                        .split_once(':')
                        .and_then(|(n, at)| Some((n.parse().ok()?, at.parse().ok()?)))
                } else {
                    c.as_str().parse().ok().map(|at| (0, at))
                };
                parsed.ok_or_else(|| bad_cursor(STORE, c))?
            }
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(at)
            .arg("MATCH")
            .arg(self.scan_pattern())
            .arg("COUNT")
            .arg(limit.max(1));
        let (next, found) = match &self.conn {
            Conn::Single(_) => {
                let (at, found): (u64, Vec<String>) =
                    self.call(async |conn| cmd.query_async(conn).await).await?;
                ((at != 0).then(|| at.to_string()), found)
            }
            Conn::Cluster(conn) => {
                let masters = self.masters().await?;
                let Some((host, port)) = masters.get(node).cloned() else {
                    return Err(match cursor {
                        Some(c) => bad_cursor(STORE, c),
                        None => StoreError::unavailable(STORE, "CLUSTER NODES lists no master"),
                    });
                };
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                let mut conn = conn.clone();
                let value = timed(self.timeout, conn.route_command(cmd, routing)).await?;
                let (at, found): (u64, Vec<String>) =
                    redis::from_redis_value(value).map_err(|e| StoreError::backend(STORE, e))?;
                let next = match at {
                    0 if node + 1 < masters.len() => Some(format!("{}:0", node + 1)),
                    0 => None,
                    at => Some(format!("{node}:{at}")),
                };
                (next, found)
            }
        };
        Ok(ScanPage {
            keys: found.iter().filter_map(|k| self.key_of(k)).collect(),
            next: next.map(ScanCursor::new),
        })
    }
}
