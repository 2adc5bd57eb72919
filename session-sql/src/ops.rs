//! The store's operations, written once and compiled for each database's pool type.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
    allow(unused)
)]

use std::collections::BTreeMap;

use async_trait::async_trait;
use session_core::{
    CappedWrite, Changes, OwnedWrite, OwnerCap, OwnerChange, Record, SessionInfo, StorageKey,
    Timestamp,
};
use sha2::{Digest as _, Sha256};

use crate::sql::Statements;

/// What the operations fail with: the driver's error, or a row this build cannot read.
#[derive(Debug)]
pub(crate) enum OpError {
    Sql(sqlx::Error),
    Corrupt(&'static str),
}

impl From<sqlx::Error> for OpError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

pub(crate) type OpResult<T> = Result<T, OpError>;

/// Key rows per `INSERT` statement, and the bytes after which a statement is sent early (under
/// MySQL's and MariaDB's default 16 MiB packet, with room for one large value).
const ROWS_PER_INSERT: usize = 250;
const BYTES_PER_INSERT: usize = 4 << 20;

/// The 16-byte key of a session key name in the data table's primary key: names may be far
/// longer than an index entry can be, so the name itself is a plain column.
pub(crate) fn name_hash(name: &str) -> [u8; 16] {
    let digest = Sha256::digest(name.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// The rows of a load: the session row's columns repeated on every key row.
pub(crate) struct LoadedRow {
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) owner: Option<Vec<u8>>,
    pub(crate) name: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
}

pub(crate) fn record_from_rows(key: StorageKey, rows: Vec<LoadedRow>) -> OpResult<Option<Record>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let owner = match &first.owner {
        None => None,
        Some(bytes) => Some(
            String::from_utf8(bytes.clone()).map_err(|_| OpError::Corrupt("owner is not UTF-8"))?,
        ),
    };
    let (created_at, expires_at) = (first.created_at, first.expires_at);
    let mut data = BTreeMap::new();
    for row in rows {
        let (Some(name), Some(value)) = (row.name, row.value) else {
            continue;
        };
        let name =
            String::from_utf8(name).map_err(|_| OpError::Corrupt("a key name is not UTF-8"))?;
        data.insert(name, value);
    }
    Ok(Some(Record {
        key,
        data,
        created_at: Timestamp::from_unix_millis(created_at),
        expires_at: Timestamp::from_unix_millis(expires_at),
        owner,
    }))
}

/// The operations of one database, on its pool.
#[async_trait]
pub(crate) trait Ops: Send + Sync + std::fmt::Debug + 'static {
    async fn ping(&self) -> OpResult<()>;
    async fn execute(&self, sql: &str) -> OpResult<()>;
    async fn schema_version(&self, s: &Statements) -> OpResult<Option<i64>>;
    async fn set_schema_version(&self, s: &Statements, version: i64) -> OpResult<()>;
    async fn load(&self, s: &Statements, key: &StorageKey, now: i64) -> OpResult<Option<Record>>;
    /// `false` when the id is taken.
    async fn create(&self, s: &Statements, record: &Record) -> OpResult<bool>;
    async fn update(
        &self,
        s: &Statements,
        key: &StorageKey,
        changes: &Changes,
        expires_at: i64,
        now: i64,
    ) -> OpResult<bool>;
    async fn touch(
        &self,
        s: &Statements,
        key: &StorageKey,
        expires_at: i64,
        now: i64,
    ) -> OpResult<bool>;
    async fn delete(&self, s: &Statements, key: &StorageKey) -> OpResult<()>;
    /// Deletes up to `EXPIRED_BATCH` expired sessions (their key rows by cascade); how many.
    async fn delete_expired_batch(&self, s: &Statements, now: i64) -> OpResult<u64>;
    async fn retire(
        &self,
        s: &Statements,
        key: &StorageKey,
        to: &StorageKey,
        until: i64,
        now: i64,
    ) -> OpResult<Option<Record>>;
    async fn forwarded(
        &self,
        s: &Statements,
        key: &StorageKey,
        now: i64,
    ) -> OpResult<Option<Vec<u8>>>;
    async fn sessions_of(
        &self,
        s: &Statements,
        owner: &str,
        now: i64,
    ) -> OpResult<Vec<SessionInfo>>;
    async fn delete_sessions_of(&self, s: &Statements, owner: &str) -> OpResult<u64>;
    /// A login and the ending of the owner's oldest sessions, one transaction; `None` when
    /// a create's id is taken.
    async fn write_capped(
        &self,
        s: &Statements,
        write: OwnedWrite<'_>,
        cap: &OwnerCap<'_>,
        now: i64,
    ) -> OpResult<Option<CappedWrite>>;
    /// Up to `limit` session ids after `after`, in order (forward pointers left out).
    async fn scan(
        &self,
        s: &Statements,
        after: Option<&StorageKey>,
        limit: i64,
    ) -> OpResult<Vec<StorageKey>>;
}

/// Splits key rows into `INSERT` statements of at most [`ROWS_PER_INSERT`] rows and about
/// [`BYTES_PER_INSERT`] bytes.
pub(crate) fn chunks<'a>(
    rows: &'a BTreeMap<String, Vec<u8>>,
) -> impl Iterator<Item = Vec<(&'a String, &'a Vec<u8>)>> + 'a {
    let mut iter = rows.iter().peekable();
    std::iter::from_fn(move || {
        iter.peek()?;
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while let Some((k, v)) = iter.peek() {
            if !chunk.is_empty()
                && (chunk.len() == ROWS_PER_INSERT || bytes + k.len() + v.len() > BYTES_PER_INSERT)
            {
                break;
            }
            bytes += k.len() + v.len();
            chunk.push(iter.next().expect("peeked"));
        }
        Some(chunk)
    })
}

/// The `owner` column an update writes: `Some(value)` (NULL for a removal) when the
/// changes move the owner, `None` to leave it.
fn owner_column(changes: &Changes) -> Option<Option<&[u8]>> {
    match changes.owner() {
        OwnerChange::Set(owner) => Some(Some(owner.as_bytes())),
        OwnerChange::Remove => Some(None),
        _ => None,
    }
}

macro_rules! ops_for {
    ($db:ty) => {
        use sqlx::{AssertSqlSafe, Row as _};

        use super::*;

        type Pool = sqlx::Pool<$db>;

        fn sql(s: &std::sync::Arc<str>) -> AssertSqlSafe<std::sync::Arc<str>> {
            AssertSqlSafe(s.clone())
        }

        async fn load_rows<'e, E>(
            exec: E,
            stmt: &std::sync::Arc<str>,
            key: &StorageKey,
            now: i64,
        ) -> OpResult<Option<Record>>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            let rows = sqlx::query(sql(stmt))
                .bind(key.as_bytes().as_slice())
                .bind(now)
                .fetch_all(exec)
                .await?;
            let rows = rows
                .iter()
                .map(|row| {
                    Ok(LoadedRow {
                        created_at: row.try_get(0)?,
                        expires_at: row.try_get(1)?,
                        owner: row.try_get(2)?,
                        name: row.try_get(3)?,
                        value: row.try_get(4)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            record_from_rows(*key, rows)
        }

        /// A bump statement with its new expiry bound (four times: `expires_at` and the
        /// `sweep_at` rule).
        fn bump(
            stmt: &std::sync::Arc<str>,
            expires_at: i64,
        ) -> sqlx::query::Query<'_, $db, <$db as sqlx::Database>::Arguments> {
            sqlx::query(sql(stmt))
                .bind(expires_at)
                .bind(expires_at)
                .bind(expires_at)
                .bind(expires_at)
        }

        async fn insert_rows(
            conn: &mut <$db as sqlx::Database>::Connection,
            s: &Statements,
            key: &StorageKey,
            data: &BTreeMap<String, Vec<u8>>,
            upsert: bool,
        ) -> OpResult<()> {
            for chunk in chunks(data) {
                let stmt = s.insert_data(chunk.len(), upsert);
                let mut query = sqlx::query(AssertSqlSafe(stmt));
                for (name, value) in chunk {
                    query = query
                        .bind(key.as_bytes().as_slice())
                        .bind(name_hash(name).to_vec())
                        .bind(name.as_bytes())
                        .bind(value.as_slice());
                }
                query.execute(&mut *conn).await?;
            }
            Ok(())
        }

        /// Inserts the session row and its key rows; `false` when the id is taken.
        async fn create_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            s: &Statements,
            record: &Record,
        ) -> OpResult<bool> {
            let inserted = sqlx::query(sql(&s.insert_session))
                .bind(record.key.as_bytes().as_slice())
                .bind(record.created_at.as_unix_millis())
                .bind(record.expires_at.as_unix_millis())
                .bind(record.expires_at.as_unix_millis())
                .bind(record.owner.as_deref().map(str::as_bytes))
                .execute(&mut *conn)
                .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            insert_rows(conn, s, &record.key, &record.data, false).await?;
            Ok(true)
        }

        /// An update the long way, inside the caller's transaction; `false`, having written
        /// nothing, when the session is not live.
        async fn update_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            s: &Statements,
            key: &StorageKey,
            changes: &Changes,
            expires_at: i64,
            now: i64,
        ) -> OpResult<bool> {
            let owner = owner_column(changes);
            let removed = changes.removed();
            // The session row first: it is live, and it stays locked (a racing delete
            // waits for this transaction, then takes every key row with it).
            let bumped = match owner {
                None => bump(&s.bump, expires_at),
                Some(owner) => bump(&s.bump_owner, expires_at).bind(owner),
            }
            .bind(key.as_bytes().as_slice())
            .bind(now)
            .execute(&mut *conn)
            .await?;
            if bumped.rows_affected() == 0 {
                return Ok(false);
            }
            // Counters: their values now, read under the session row's lock (every other
            // increment of this session waits for it), become writes of their sums.
            let resolved;
            let changes = if changes.incremented().is_empty() {
                changes
            } else {
                let current = load_rows(&mut *conn, &s.load_locked, key, now).await?;
                let data = current.map(|r| r.data).unwrap_or_default();
                resolved = changes.resolved(|k| data.get(k).map(Vec::as_slice));
                &resolved
            };
            if changes.is_cleared() {
                sqlx::query(sql(&s.clear_data))
                    .bind(key.as_bytes().as_slice())
                    .execute(&mut *conn)
                    .await?;
            }
            let removed: Vec<&String> = removed.iter().collect();
            for chunk in removed.chunks(ROWS_PER_INSERT) {
                let mut query = sqlx::query(AssertSqlSafe(s.delete_data(chunk.len())))
                    .bind(key.as_bytes().as_slice());
                for name in chunk {
                    query = query.bind(name_hash(name).to_vec());
                }
                query.execute(&mut *conn).await?;
            }
            insert_rows(conn, s, key, changes.written(), true).await?;
            Ok(true)
        }

        async fn sessions_in<'e, E>(
            exec: E,
            stmt: &std::sync::Arc<str>,
            owner: &str,
            now: i64,
        ) -> OpResult<Vec<SessionInfo>>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            let rows = sqlx::query(sql(stmt))
                .bind(owner.as_bytes())
                .bind(now)
                .fetch_all(exec)
                .await?;
            rows.iter()
                .map(|row| {
                    let id: Vec<u8> = row.try_get(0)?;
                    let key = <[u8; 32]>::try_from(id.as_slice())
                        .map_err(|_| OpError::Corrupt("a session id is not 32 bytes"))?;
                    Ok(SessionInfo {
                        key: StorageKey::from_bytes(key),
                        created_at: Timestamp::from_unix_millis(row.try_get(1)?),
                        expires_at: Timestamp::from_unix_millis(row.try_get(2)?),
                    })
                })
                .collect()
        }

        #[async_trait]
        impl Ops for Pool {
            async fn ping(&self) -> OpResult<()> {
                sqlx::query("SELECT 1").execute(self).await?;
                Ok(())
            }

            async fn execute(&self, stmt: &str) -> OpResult<()> {
                sqlx::query(AssertSqlSafe(stmt.to_owned()))
                    .execute(self)
                    .await?;
                Ok(())
            }

            async fn schema_version(&self, s: &Statements) -> OpResult<Option<i64>> {
                let row = sqlx::query(sql(&s.version)).fetch_one(self).await?;
                Ok(row.try_get::<Option<i64>, _>(0)?)
            }

            async fn set_schema_version(&self, s: &Statements, version: i64) -> OpResult<()> {
                sqlx::query(sql(&s.set_version))
                    .bind(version)
                    .execute(self)
                    .await?;
                Ok(())
            }

            async fn load(
                &self,
                s: &Statements,
                key: &StorageKey,
                now: i64,
            ) -> OpResult<Option<Record>> {
                load_rows(self, &s.load, key, now).await
            }

            async fn create(&self, s: &Statements, record: &Record) -> OpResult<bool> {
                let mut tx = self.begin_with(s.begin_write).await?;
                if !create_in(&mut tx, s, record).await? {
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn update(
                &self,
                s: &Statements,
                key: &StorageKey,
                changes: &Changes,
                expires_at: i64,
                now: i64,
            ) -> OpResult<bool> {
                let owner = owner_column(changes);
                let (removed, written) = (changes.removed(), changes.written());
                let small = removed.len() <= ROWS_PER_INSERT
                    && written.len() <= ROWS_PER_INSERT
                    && changes.written_size() <= BYTES_PER_INSERT;
                // Increments read the counters under the session row's lock: the long way.
                let one = if small && !changes.is_cleared() && changes.incremented().is_empty() {
                    s.update_in_one(owner.is_some(), removed.len(), written.len())
                } else {
                    None
                };
                if let Some(stmt) = one {
                    let mut query = sqlx::query(AssertSqlSafe(stmt))
                        .bind(expires_at)
                        .bind(key.as_bytes().as_slice())
                        .bind(now);
                    if let Some(owner) = owner {
                        query = query.bind(owner);
                    }
                    for name in removed {
                        query = query.bind(name_hash(name).to_vec());
                    }
                    for (name, value) in written {
                        query = query
                            .bind(name_hash(name).to_vec())
                            .bind(name.as_bytes())
                            .bind(value.as_slice());
                    }
                    let moved: i64 = query.fetch_one(self).await?.try_get(0)?;
                    return Ok(moved > 0);
                }
                let mut tx = self.begin_with(s.begin_write).await?;
                if !update_in(&mut tx, s, key, changes, expires_at, now).await? {
                    tx.rollback().await?;
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn touch(
                &self,
                s: &Statements,
                key: &StorageKey,
                expires_at: i64,
                now: i64,
            ) -> OpResult<bool> {
                let done = bump(&s.bump, expires_at)
                    .bind(key.as_bytes().as_slice())
                    .bind(now)
                    .execute(self)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete(&self, s: &Statements, key: &StorageKey) -> OpResult<()> {
                sqlx::query(sql(&s.delete))
                    .bind(key.as_bytes().as_slice())
                    .execute(self)
                    .await?;
                Ok(())
            }

            async fn delete_expired_batch(&self, s: &Statements, now: i64) -> OpResult<u64> {
                let done = sqlx::query(sql(&s.delete_expired))
                    .bind(now)
                    .bind(now)
                    .execute(self)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn retire(
                &self,
                s: &Statements,
                key: &StorageKey,
                to: &StorageKey,
                until: i64,
                now: i64,
            ) -> OpResult<Option<Record>> {
                let mut tx = self.begin_with(s.begin_write).await?;
                sqlx::query(sql(&s.lock_session))
                    .bind(key.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                let Some(last) = load_rows(&mut *tx, &s.load_locked, key, now).await? else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                sqlx::query(sql(&s.point))
                    .bind(to.as_bytes().as_slice())
                    .bind(until)
                    .bind(until)
                    .bind(key.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(sql(&s.clear_data))
                    .bind(key.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(last))
            }

            async fn forwarded(
                &self,
                s: &Statements,
                key: &StorageKey,
                now: i64,
            ) -> OpResult<Option<Vec<u8>>> {
                let row = sqlx::query(sql(&s.forwarded))
                    .bind(key.as_bytes().as_slice())
                    .bind(now)
                    .fetch_optional(self)
                    .await?;
                Ok(match row {
                    Some(row) => row.try_get::<Option<Vec<u8>>, _>(0)?,
                    None => None,
                })
            }

            async fn sessions_of(
                &self,
                s: &Statements,
                owner: &str,
                now: i64,
            ) -> OpResult<Vec<SessionInfo>> {
                sessions_in(self, &s.sessions_of, owner, now).await
            }

            async fn scan(
                &self,
                s: &Statements,
                after: Option<&StorageKey>,
                limit: i64,
            ) -> OpResult<Vec<StorageKey>> {
                let query = match after {
                    None => sqlx::query(sql(&s.scan_first)),
                    Some(after) => {
                        sqlx::query(sql(&s.scan_after)).bind(after.as_bytes().as_slice())
                    }
                };
                let rows = query.bind(limit).fetch_all(self).await?;
                rows.iter()
                    .map(|row| {
                        let id: Vec<u8> = row.try_get(0)?;
                        <[u8; 32]>::try_from(id.as_slice())
                            .map(StorageKey::from_bytes)
                            .map_err(|_| OpError::Corrupt("a session id is not 32 bytes"))
                    })
                    .collect()
            }

            async fn write_capped(
                &self,
                s: &Statements,
                write: OwnedWrite<'_>,
                cap: &OwnerCap<'_>,
                now: i64,
            ) -> OpResult<Option<CappedWrite>> {
                let mut tx = self.begin_with(s.begin_write).await?;
                if let Some(lock) = &s.lock_logins {
                    let mut query = sqlx::query(sql(lock));
                    if s.dialect == crate::Dialect::Postgres {
                        query = query.bind(s.login_lock_id(cap.owner));
                    }
                    query.execute(&mut *tx).await?;
                }
                let written = match write {
                    OwnedWrite::Create(record) => {
                        if !create_in(&mut tx, s, record).await? {
                            return Ok(None);
                        }
                        true
                    }
                    OwnedWrite::Update {
                        key,
                        changes,
                        expires_at,
                    } => {
                        update_in(&mut tx, s, key, changes, expires_at.as_unix_millis(), now)
                            .await?
                    }
                };
                if !written {
                    tx.rollback().await?;
                    return Ok(Some(CappedWrite::default()));
                }
                let sessions = sessions_in(&mut *tx, &s.sessions_of_locked, cap.owner, now).await?;
                let ended = cap.to_end(write.key(), sessions);
                for key in &ended {
                    sqlx::query(sql(&s.delete))
                        .bind(key.as_bytes().as_slice())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Some(CappedWrite { written, ended }))
            }

            async fn delete_sessions_of(&self, s: &Statements, owner: &str) -> OpResult<u64> {
                let done = sqlx::query(sql(&s.delete_sessions_of))
                    .bind(owner.as_bytes())
                    .execute(self)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

#[cfg(feature = "postgres")]
mod postgres {
    ops_for!(sqlx::Postgres);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    ops_for!(sqlx::Sqlite);
}

#[cfg(feature = "mysql")]
mod mysql {
    ops_for!(sqlx::MySql);
}
