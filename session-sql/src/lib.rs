//! PostgreSQL, SQLite and MySQL/MariaDB [`SessionStore`]s for `session-core`, on `sqlx`.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use session_core::{SaveOutcome, SessionManager};
//! use session_sql::SqlStore;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
//! // Or "postgres://app:secret@db/app", "mysql://app:secret@db/app".
//! let store = SqlStore::builder(&url).create_schema(true).open().await?;
//! let manager = SessionManager::new(store);
//!
//! let session = manager.create();
//! session.insert("user", "alice")?;
//! assert_eq!(manager.save(&session).await?, SaveOutcome::Created);
//! let again = manager.load(&session.id()).await?.expect("saved");
//! assert_eq!(again.get::<String>("user")?.as_deref(), Some("alice"));
//! # Ok(()) }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! - **A row per session and a row per key.** `{table}` holds the session (its hashed id,
//!   creation and expiry in Unix milliseconds, owner, and the forward pointer of a cycled
//!   id), `{table}_data` one row per session key (name and value as opaque bytes, filed under
//!   a 16-byte hash of the name so names of any length fit an index).
//! - **Per-key atomic updates, no read-modify-write, no retries.** An `update` is atomic: it
//!   moves the expiry of the session row only if the session is live (which locks that row),
//!   then deletes the removed keys and upserts the written ones (`INSERT … ON CONFLICT DO
//!   UPDATE`, on MySQL `ON DUPLICATE KEY UPDATE`). On PostgreSQL that is one statement
//!   (data-modifying `WITH` steps, one round trip); on SQLite and MySQL one transaction. Two
//!   requests changing different keys of one session both persist, under the database's
//!   default isolation level (and, as tested on MariaDB, at READ COMMITTED).
//! - **Logout is final**: the key rows reference the session row `ON DELETE CASCADE`, and a
//!   `delete` racing an `update` waits for the session row's lock, so neither the session nor
//!   any key row is left behind.
//! - **Expiry**: every read checks the exact `expires_at`. The sweeps find expired rows by
//!   `sweep_at`, an indexed lower bound of it that an update moves only when it falls more
//!   than a minute behind (or would be ahead): most updates then change no indexed column,
//!   which PostgreSQL turns into an in-place (HOT) update and InnoDB and SQLite into a row
//!   write that leaves the indexes alone. [`SessionStore::delete_expired`] (and so
//!   `session_core::spawn_sweeper`) deletes expired sessions in batches of 500 rows, each
//!   its own short transaction.
//! - **Per-user index**: `owner` is indexed for `sessions_of` and `delete_sessions_of`.
//! - **SQLite**: WAL, a busy timeout ([`SqlStoreBuilder::lock_timeout`]) and writes that take
//!   the write lock up front (`BEGIN IMMEDIATE`), so concurrent writers wait their turn
//!   instead of failing with "database is locked", in one process or several on one file. A
//!   file path (`sqlite:///var/lib/app/sessions.db`) or `sqlite::memory:` (one connection:
//!   each SQLite connection to `:memory:` is a database of its own).
//! - **Outages**: every call ends within the command timeout with
//!   [`StoreError::Unavailable`]; the pool reconnects by itself when the server returns.
//!
//! # Schema
//!
//! [`SqlStoreBuilder::create_schema`] creates the tables at open (idempotent) and records the
//! schema version in `{table}_schema`; without it the store checks that the schema is there.
//! A store refuses a schema newer than it knows. For teams that apply migrations by hand,
//! [`SqlStore::ddl`] prints the statements; for the default table `sessions`:
//!
//! PostgreSQL:
//! ```sql
#![doc = include_str!("../ddl/postgres.sql")]
//! ```
//! SQLite:
//! ```sql
#![doc = include_str!("../ddl/sqlite.sql")]
//! ```
//! MySQL and MariaDB:
//! ```sql
#![doc = include_str!("../ddl/mysql.sql")]
//! ```
//! then `INSERT INTO sessions_schema (version) VALUES (1)`.
//!
//! # Sharing the application's pool
//!
//! [`SqlStore::from_pool`] builds the store on a `sqlx::PgPool`, `SqlitePool` or
//! `MySqlPool` the application already has.
//!
//! # Errors
//!
//! A server that cannot be reached, a pool with no free connection in time, or a call over
//! the command timeout is [`StoreError::Unavailable`]; a record over
//! [`SqlStoreBuilder::record_size_limit`] is [`StoreError::TooLarge`]; a row this build
//! cannot read is [`StoreError::Corrupt`]; bad settings are [`StoreError::Config`]; other
//! database errors are [`StoreError::Backend`].
//!
//! # Feature flags
//!
//! - `postgres`, `sqlite` (bundled), `mysql` (MySQL and MariaDB): one per database; none is
//!   on by default.
//! - `tls`: builds sqlx's rustls support, for URLs that ask for TLS (`sslmode=require`,
//!   `ssl-mode=…`); this repository's tests run without TLS.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ops;
mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    CappedWrite, Changes, OwnedWrite, OwnerCap, Record, ScanCursor, ScanPage, SessionInfo,
    SessionStore, StorageKey, StoreError, Timestamp, bounded,
};

use crate::ops::{OpError, Ops};
pub use crate::sql::{Dialect, SCHEMA_VERSION};
use crate::sql::{EXPIRED_BATCH, Statements, Tables};

/// The name errors give before the dialect is known.
const STORE: &str = "sql";

impl Dialect {
    /// The store's name in errors.
    fn store(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::MySql => "mysql",
        }
    }

    /// The dialect of a database URL, by its scheme.
    ///
    /// # Errors
    /// [`StoreError::Config`] for another scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "sqlite" => Ok(Self::Sqlite),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(StoreError::config(
                STORE,
                format!(
                    "unsupported database URL scheme {scheme:?}; expected postgres://, sqlite: or mysql://"
                ),
            )),
        }
    }
}

/// A pool [`SqlStore::from_pool`] can build on: `sqlx::PgPool`, `SqlitePool`, `MySqlPool`.
pub trait SqlPool: sealed::Sealed {}

mod sealed {
    /// Where the builder gets its pool.
    #[derive(Debug)]
    pub enum Source {
        Url(String),
        #[cfg(feature = "postgres")]
        Postgres(sqlx::PgPool),
        #[cfg(feature = "sqlite")]
        Sqlite(sqlx::SqlitePool),
        #[cfg(feature = "mysql")]
        MySql(sqlx::MySqlPool),
    }

    pub trait Sealed {
        fn into_source(self) -> Source;
    }
}

use sealed::Source;

#[cfg(feature = "postgres")]
impl SqlPool for sqlx::PgPool {}
#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::PgPool {
    fn into_source(self) -> Source {
        Source::Postgres(self)
    }
}
#[cfg(feature = "sqlite")]
impl SqlPool for sqlx::SqlitePool {}
#[cfg(feature = "sqlite")]
impl sealed::Sealed for sqlx::SqlitePool {
    fn into_source(self) -> Source {
        Source::Sqlite(self)
    }
}
#[cfg(feature = "mysql")]
impl SqlPool for sqlx::MySqlPool {}
#[cfg(feature = "mysql")]
impl sealed::Sealed for sqlx::MySqlPool {
    fn into_source(self) -> Source {
        Source::MySql(self)
    }
}

/// Settings for a [`SqlStore`].
#[must_use]
pub struct SqlStoreBuilder {
    source: Source,
    table: String,
    schema: Option<String>,
    create_schema: bool,
    pool_size: u32,
    command_timeout: Duration,
    connection_timeout: Duration,
    lock_timeout: Duration,
    record_size_limit: usize,
}

impl fmt::Debug for SqlStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStoreBuilder")
            .field("table", &self.table)
            .field("schema", &self.schema)
            .field("create_schema", &self.create_schema)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl SqlStoreBuilder {
    fn new(source: Source) -> Self {
        Self {
            source,
            table: "sessions".to_owned(),
            schema: None,
            create_schema: false,
            pool_size: 10,
            command_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            lock_timeout: Duration::from_secs(5),
            record_size_limit: 8 << 20,
        }
    }

    /// The sessions table (default `sessions`); the key rows go in `{table}_data` and the
    /// schema version in `{table}_schema`. ASCII letters, digits and `_`.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.table = name.into();
        self
    }

    /// The PostgreSQL schema of the tables (default: the connection's `search_path`).
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = Some(name.into());
        self
    }

    /// Create the tables at open if they are missing (default `false`: check they exist).
    pub fn create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }

    /// Connections in the pool the store opens (default 10; 1 for `sqlite::memory:`). No
    /// effect on a pool from [`SqlStore::from_pool`].
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long one call (a whole transaction, waiting for a connection included) may take
    /// before it fails with [`StoreError::Unavailable`] (default 5 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How long opening a connection may take (default 2 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// SQLite's busy timeout: how long a write waits for another process's write lock
    /// (default 5 s).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The largest record (key names and values) the store writes (default 8 MiB; MySQL's
    /// and MariaDB's default packet is 16 MiB). Larger ones fail with
    /// [`StoreError::TooLarge`] before reaching the database.
    pub fn record_size_limit(mut self, bytes: usize) -> Self {
        self.record_size_limit = bytes;
        self
    }

    /// Connects, creates or checks the schema, and returns the store.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad URL or setting, a missing schema (without
    /// [`SqlStoreBuilder::create_schema`]) or one newer than this build;
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn open(self) -> Result<SqlStore, StoreError> {
        let (dialect, ops) = self.pool().await?;
        let tables = Tables::new(dialect, &self.table, self.schema.as_deref())?;
        let sql = Statements::new(dialect, tables);
        let inner = Inner {
            ops,
            write_turn: (dialect == Dialect::Sqlite).then(|| tokio::sync::Mutex::new(())),
            sql,
            dialect,
            timeout: self.command_timeout,
            size_limit: self.record_size_limit,
        };
        let store = SqlStore {
            inner: Arc::new(inner),
        };
        store.prepare_schema(self.create_schema).await?;
        Ok(store)
    }

    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
        allow(dead_code)
    )]
    fn options<DB: sqlx::Database>(&self) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.pool_size)
            .acquire_timeout(self.connection_timeout)
    }

    async fn pool(&self) -> Result<(Dialect, Arc<dyn Ops>), StoreError> {
        let url = match &self.source {
            Source::Url(url) => url,
            #[cfg(feature = "postgres")]
            Source::Postgres(pool) => return Ok((Dialect::Postgres, Arc::new(pool.clone()))),
            #[cfg(feature = "sqlite")]
            Source::Sqlite(pool) => return Ok((Dialect::Sqlite, Arc::new(pool.clone()))),
            #[cfg(feature = "mysql")]
            Source::MySql(pool) => return Ok((Dialect::MySql, Arc::new(pool.clone()))),
        };
        let dialect = Dialect::of_url(url)?;
        let bad_url = |e: sqlx::Error| StoreError::config(dialect.store(), e);
        let disabled = |feature: &str| {
            StoreError::config(
                dialect.store(),
                format!("{url:?} needs session-sql's `{feature}` feature"),
            )
        };
        // Each is used only by the dialects this build leaves out or puts in.
        let _ = (&bad_url, &disabled);
        let ops: Arc<dyn Ops> = match dialect {
            Dialect::Postgres => {
                #[cfg(feature = "postgres")]
                {
                    let connect: sqlx::postgres::PgConnectOptions = url.parse().map_err(bad_url)?;
                    Arc::new(self.options::<sqlx::Postgres>().connect_lazy_with(connect))
                }
                #[cfg(not(feature = "postgres"))]
                return Err(disabled("postgres"));
            }
            Dialect::Sqlite => {
                #[cfg(feature = "sqlite")]
                {
                    let memory = url.contains(":memory:") || url.contains("mode=memory");
                    let connect: sqlx::sqlite::SqliteConnectOptions =
                        url.parse().map_err(bad_url)?;
                    let connect = connect
                        .create_if_missing(true)
                        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                        .busy_timeout(self.lock_timeout)
                        .foreign_keys(true);
                    let size = if memory { 1 } else { self.pool_size };
                    Arc::new(
                        self.options::<sqlx::Sqlite>()
                            .max_connections(size)
                            .connect_lazy_with(connect),
                    )
                }
                #[cfg(not(feature = "sqlite"))]
                return Err(disabled("sqlite"));
            }
            Dialect::MySql => {
                #[cfg(feature = "mysql")]
                {
                    let url = url.replacen("mariadb://", "mysql://", 1);
                    let connect: sqlx::mysql::MySqlConnectOptions = url.parse().map_err(bad_url)?;
                    Arc::new(self.options::<sqlx::MySql>().connect_lazy_with(connect))
                }
                #[cfg(not(feature = "mysql"))]
                return Err(disabled("mysql"));
            }
        };
        Ok((dialect, ops))
    }
}

/// A session store in a PostgreSQL, SQLite or MySQL/MariaDB database. Cheap to clone (clones
/// share the pool).
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    ops: Arc<dyn Ops>,
    /// SQLite only: one write transaction of this process at a time, in arrival order. Writers
    /// of one process then never contend for SQLite's lock (whose busy handler polls, and
    /// under load can starve a writer past its timeout); other processes on the same file
    /// still wait on the busy timeout.
    write_turn: Option<tokio::sync::Mutex<()>>,
    sql: Statements,
    dialect: Dialect,
    timeout: Duration,
    size_limit: usize,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.inner.dialect)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Settings for a store on the database at `url`: `postgres://…`, `sqlite://path`,
    /// `sqlite::memory:`, `mysql://…` or `mariadb://…`.
    pub fn builder(url: impl Into<String>) -> SqlStoreBuilder {
        SqlStoreBuilder::new(Source::Url(url.into()))
    }

    /// A store with default settings on the database at `url`, creating the schema if it is
    /// missing.
    ///
    /// # Errors
    /// As [`SqlStoreBuilder::open`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).create_schema(true).open().await
    }

    /// Settings for a store on a pool the application already has.
    pub fn from_pool(pool: impl SqlPool) -> SqlStoreBuilder {
        SqlStoreBuilder::new(sealed::Sealed::into_source(pool))
    }

    /// The schema's statements for `dialect`, `table` and (PostgreSQL) `schema`, for a DBA
    /// to apply by hand; then insert the version row (see the crate docs).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a name that is not a plain identifier.
    pub fn ddl(
        dialect: Dialect,
        table: &str,
        schema: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sql::ddl(dialect, &Tables::new(dialect, table, schema)?))
    }

    /// Which database it talks to.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(self.inner.ops.ping()).await
    }

    async fn prepare_schema(&self, create: bool) -> Result<(), StoreError> {
        let ops = &self.inner.ops;
        let dialect = self.inner.dialect;
        if create {
            for stmt in sql::ddl(dialect, &self.inner.sql.tables) {
                self.call(ops.execute(&stmt)).await?;
            }
        }
        let version = match self.call(ops.schema_version(&self.inner.sql)).await {
            Ok(version) => version,
            Err(StoreError::Backend { source, .. }) if !create => {
                return Err(StoreError::config(
                    dialect.store(),
                    format!(
                        "the session tables are missing ({source}): open with create_schema(true), or apply SqlStore::ddl"
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        match version {
            None if create => {
                self.call(ops.set_schema_version(&self.inner.sql, SCHEMA_VERSION))
                    .await
            }
            None => Err(StoreError::config(
                dialect.store(),
                "the session schema has no version row: open with create_schema(true), or insert it",
            )),
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::config(
                dialect.store(),
                format!(
                    "the session schema is version {v}, newer than this build's {SCHEMA_VERSION}"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Runs one read within the command timeout, mapping its errors.
    async fn call<T>(&self, op: impl Future<Output = Result<T, OpError>>) -> Result<T, StoreError> {
        let store = self.inner.dialect.store();
        bounded(
            self.inner.timeout,
            op,
            |e| map_error(store, e),
            |t| StoreError::timed_out(store, t),
        )
        .await
    }

    /// Runs one write transaction within the command timeout (waiting for its turn
    /// included). A transaction the database rolled back as a deadlock victim (InnoDB picks
    /// one when a logout's cascade and an update's key rows meet) did nothing, so it runs
    /// again, up to [`DEADLOCK_RETRIES`] times: a retry of a whole transaction, never a
    /// read-modify-write merge.
    async fn write<T, F>(&self, op: impl Fn() -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, OpError>>,
    {
        self.call(async {
            let _turn = match &self.inner.write_turn {
                Some(turn) => Some(turn.lock().await),
                None => None,
            };
            let mut retries = 0;
            loop {
                match op().await {
                    Err(OpError::Sql(sqlx::Error::Database(e)))
                        if retries < DEADLOCK_RETRIES && is_deadlock(e.code().as_deref()) =>
                    {
                        retries += 1;
                        tracing::debug!(error = %e, retries, "session write was a deadlock victim: running it again");
                    }
                    result => return result,
                }
            }
        })
        .await
    }

    fn check_size(&self, size: usize) -> Result<(), StoreError> {
        if size > self.inner.size_limit {
            return Err(StoreError::too_large(
                self.inner.dialect.store(),
                size,
                self.inner.size_limit,
            ));
        }
        Ok(())
    }
}

fn map_error(store: &'static str, e: OpError) -> StoreError {
    let e = match e {
        OpError::Corrupt(reason) => return StoreError::corrupt(store, reason),
        OpError::Sql(e) => e,
    };
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => StoreError::unavailable(store, e),
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => {
            StoreError::corrupt(store, "a row this build cannot read")
        }
        sqlx::Error::Database(db) if is_busy(db.code().as_deref()) => {
            StoreError::unavailable(store, e)
        }
        _ => StoreError::backend(store, e),
    }
}

/// How many times a write transaction runs again after the database chose it as a deadlock
/// victim.
const DEADLOCK_RETRIES: u32 = 3;

/// SQLSTATE 40001 (serialization failure; MySQL's and MariaDB's deadlock) and 40P01
/// (PostgreSQL's deadlock).
fn is_deadlock(code: Option<&str>) -> bool {
    matches!(code, Some("40001" | "40P01"))
}

/// SQLite's "database is locked" (`SQLITE_BUSY`, and its extended codes): another writer
/// held the lock past the busy timeout.
fn is_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

fn millis(t: Timestamp) -> i64 {
    t.as_unix_millis()
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn load_body(
        &self,
        key: &StorageKey,
    ) -> Result<Option<session_core::Loaded>, StoreError> {
        Ok(self.load(key).await?.map(session_core::Loaded::Record))
    }

    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        let now = millis(Timestamp::now());
        self.call(self.inner.ops.load(&self.inner.sql, key, now))
            .await
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        self.check_size(record.data_size())?;
        if self
            .write(|| self.inner.ops.create(&self.inner.sql, record))
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::IdCollision)
        }
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.check_size(changes.written_size())?;
        let now = millis(Timestamp::now());
        self.write(|| {
            self.inner
                .ops
                .update(&self.inner.sql, key, changes, millis(expires_at), now)
        })
        .await
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        let now = millis(Timestamp::now());
        self.write(|| {
            self.inner
                .ops
                .touch(&self.inner.sql, key, millis(expires_at), now)
        })
        .await
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.write(|| self.inner.ops.delete(&self.inner.sql, key))
            .await
    }

    /// Batch after batch of 500 rows (`EXPIRED_BATCH`), each its own statement with its own
    /// command timeout and (on SQLite) its own turn to write, so other writers get theirs
    /// between batches and a backlog of any size is swept.
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let now = millis(Timestamp::now());
        let mut total = 0;
        loop {
            let deleted = self
                .write(|| self.inner.ops.delete_expired_batch(&self.inner.sql, now))
                .await?;
            total += deleted;
            if deleted < EXPIRED_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let now = millis(Timestamp::now());
        self.write(|| {
            self.inner
                .ops
                .retire(&self.inner.sql, key, to, millis(until), now)
        })
        .await
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let now = millis(Timestamp::now());
        let to = self
            .call(self.inner.ops.forwarded(&self.inner.sql, key, now))
            .await?;
        match to {
            None => Ok(None),
            Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(|b| Some(StorageKey::from_bytes(b)))
                .map_err(|_| {
                    StoreError::corrupt(
                        self.inner.dialect.store(),
                        "a forward pointer is not 32 bytes",
                    )
                }),
        }
    }

    fn expires_natively(&self) -> bool {
        false
    }

    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let now = millis(Timestamp::now());
        self.call(self.inner.ops.sessions_of(&self.inner.sql, owner, now))
            .await
    }

    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        self.write(|| self.inner.ops.delete_sessions_of(&self.inner.sql, owner))
            .await
    }

    /// One transaction: the login's write, the owner's live sessions read and the oldest
    /// beyond the cap deleted. Logins under a cap are serialized first: per owner on
    /// PostgreSQL (an advisory transaction lock), per table on MySQL (the schema table's
    /// row), by SQLite's single writer.
    async fn write_capped(
        &self,
        write: OwnedWrite<'_>,
        cap: &OwnerCap<'_>,
    ) -> Result<CappedWrite, StoreError> {
        self.check_size(match write {
            OwnedWrite::Create(record) => record.data_size(),
            OwnedWrite::Update { changes, .. } => changes.written_size(),
        })?;
        let now = millis(Timestamp::now());
        self.write(|| {
            self.inner
                .ops
                .write_capped(&self.inner.sql, write, cap, now)
        })
        .await?
        .ok_or(StoreError::IdCollision)
    }

    /// Session ids in order after the cursor (the last id listed), forward pointers left
    /// out: one primary-key range read of `limit` rows a page.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let after = cursor
            .map(|c| c.key(self.inner.dialect.store()))
            .transpose()?;
        let limit = limit.clamp(1, i64::MAX as usize);
        let keys = self
            .call(
                self.inner
                    .ops
                    .scan(&self.inner.sql, after.as_ref(), limit as i64),
            )
            .await?;
        let more = keys.len() == limit;
        Ok(ScanPage::in_key_order(keys, more))
    }
}
