//! The SQL of each dialect: the schema and every statement, built once per store from its
//! table names.

use std::fmt::Write as _;
use std::sync::Arc;

use session_core::StoreError;

use crate::STORE;

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// A SQL dialect the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite 3.
    Sqlite,
    /// MySQL and MariaDB (the tests run on MariaDB 10.11).
    MySql,
}

impl Dialect {
    /// The `n`th bind parameter (from 1).
    fn param(self, n: usize) -> String {
        match self {
            Self::Postgres => format!("${n}"),
            Self::Sqlite | Self::MySql => "?".to_owned(),
        }
    }

    fn quote(self, ident: &str) -> String {
        match self {
            Self::MySql => format!("`{ident}`"),
            Self::Postgres | Self::Sqlite => format!("\"{ident}\""),
        }
    }
}

/// The tables a store uses: `table` holds a row per session, `{table}_data` a row per key,
/// `{table}_schema` the schema version.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    /// Quoted, schema-qualified names.
    sessions: String,
    data: String,
    meta: String,
    /// Bare names, for index names.
    base: String,
}

/// Whether `ident` is a plain SQL identifier: ASCII letters, digits and `_`, not starting with
/// a digit, at most 48 bytes (room for the suffixes within every database's limit).
fn check_ident(what: &str, ident: &str) -> Result<(), StoreError> {
    let ok = !ident.is_empty()
        && ident.len() <= 48
        && ident
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !ident.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::config(
            STORE,
            format!(
                "{what} {ident:?} is not a plain identifier (ASCII letters, digits and _, at most 48 bytes)"
            ),
        ))
    }
}

impl Tables {
    pub(crate) fn new(
        dialect: Dialect,
        table: &str,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        check_ident("table", table)?;
        if let Some(schema) = schema {
            check_ident("schema", schema)?;
            if dialect != Dialect::Postgres {
                return Err(StoreError::config(
                    STORE,
                    "a schema is a PostgreSQL setting (on MySQL it is the database in the URL)",
                ));
            }
        }
        let name = |suffix: &str| {
            let table = dialect.quote(&format!("{table}{suffix}"));
            match schema {
                Some(schema) => format!("{}.{table}", dialect.quote(schema)),
                None => table,
            }
        };
        Ok(Self {
            sessions: name(""),
            data: name("_data"),
            meta: name("_schema"),
            base: table.to_owned(),
        })
    }
}

/// The schema's DDL, in order; every statement is idempotent.
pub(crate) fn ddl(dialect: Dialect, t: &Tables) -> Vec<String> {
    let (s, d, m, base) = (&t.sessions, &t.data, &t.meta, &t.base);
    match dialect {
        Dialect::Postgres => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\
                 id BYTEA PRIMARY KEY, \
                 created_at BIGINT NOT NULL, \
                 expires_at BIGINT NOT NULL, \
                 sweep_at BIGINT NOT NULL, \
                 owner BYTEA, \
                 forward_to BYTEA)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {base}_owner ON {s} (owner) WHERE owner IS NOT NULL"
            ),
            format!("CREATE INDEX IF NOT EXISTS {base}_sweep ON {s} (sweep_at)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\
                 session_id BYTEA NOT NULL REFERENCES {s} (id) ON DELETE CASCADE, \
                 name_hash BYTEA NOT NULL, \
                 name BYTEA NOT NULL, \
                 value BYTEA NOT NULL, \
                 PRIMARY KEY (session_id, name_hash))"
            ),
            format!("CREATE TABLE IF NOT EXISTS {m} (version BIGINT NOT NULL)"),
        ],
        Dialect::Sqlite => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\
                 id BLOB PRIMARY KEY, \
                 created_at INTEGER NOT NULL, \
                 expires_at INTEGER NOT NULL, \
                 sweep_at INTEGER NOT NULL, \
                 owner BLOB, \
                 forward_to BLOB) WITHOUT ROWID"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {base}_owner ON {} (owner) WHERE owner IS NOT NULL",
                dialect.quote(base)
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {base}_sweep ON {} (sweep_at)",
                dialect.quote(base)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\
                 session_id BLOB NOT NULL REFERENCES {s} (id) ON DELETE CASCADE, \
                 name_hash BLOB NOT NULL, \
                 name BLOB NOT NULL, \
                 value BLOB NOT NULL, \
                 PRIMARY KEY (session_id, name_hash)) WITHOUT ROWID"
            ),
            format!("CREATE TABLE IF NOT EXISTS {m} (version INTEGER NOT NULL)"),
        ],
        Dialect::MySql => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (\
                 id BINARY(32) NOT NULL PRIMARY KEY, \
                 created_at BIGINT NOT NULL, \
                 expires_at BIGINT NOT NULL, \
                 sweep_at BIGINT NOT NULL, \
                 owner VARBINARY(3072) NULL, \
                 forward_to BINARY(32) NULL, \
                 INDEX {base}_owner (owner), \
                 INDEX {base}_sweep (sweep_at)) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {d} (\
                 session_id BINARY(32) NOT NULL, \
                 name_hash BINARY(16) NOT NULL, \
                 name LONGBLOB NOT NULL, \
                 value LONGBLOB NOT NULL, \
                 PRIMARY KEY (session_id, name_hash), \
                 FOREIGN KEY (session_id) REFERENCES {s} (id) ON DELETE CASCADE) ENGINE=InnoDB"
            ),
            format!("CREATE TABLE IF NOT EXISTS {m} (version BIGINT NOT NULL)"),
        ],
    }
}

/// How far (in milliseconds) `sweep_at`, the indexed lower bound of `expires_at` the sweeps
/// search by, may fall behind it before an update moves it. Between moves an update changes
/// no indexed column: PostgreSQL updates the row in place (a HOT update, no index entries),
/// InnoDB and SQLite leave the secondary index alone. A session's `expires_at` stays exact
/// and is what every read checks; a sweep only looks at up to this much more of the index.
pub(crate) const SWEEP_SLACK_MS: i64 = 60_000;

/// How many session rows one `delete_expired` statement removes: each batch is its own
/// short transaction, so a sweep of a million rows never holds a long lock.
pub(crate) const EXPIRED_BATCH: i64 = 500;

/// Every statement a store runs, built once from its tables.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) dialect: Dialect,
    pub(crate) tables: Tables,
    pub(crate) begin_write: &'static str,
    pub(crate) load: Arc<str>,
    pub(crate) lock_session: Arc<str>,
    pub(crate) load_locked: Arc<str>,
    pub(crate) insert_session: Arc<str>,
    pub(crate) bump: Arc<str>,
    pub(crate) bump_owner: Arc<str>,
    pub(crate) clear_data: Arc<str>,
    pub(crate) delete: Arc<str>,
    pub(crate) point: Arc<str>,
    pub(crate) forwarded: Arc<str>,
    pub(crate) sessions_of: Arc<str>,
    /// `sessions_of` as a login under a cap reads it, after `lock_logins`.
    pub(crate) sessions_of_locked: Arc<str>,
    /// Serializes logins under a cap, run first in their transaction: PostgreSQL's
    /// transaction-scoped advisory lock on a number made of the table and the owner
    /// ([`Statements::login_lock_id`]), MySQL's lock on the schema table's row (one login at
    /// a time per table). SQLite needs none: `BEGIN IMMEDIATE` already serializes writers.
    pub(crate) lock_logins: Option<Arc<str>>,
    pub(crate) delete_sessions_of: Arc<str>,
    pub(crate) scan_first: Arc<str>,
    pub(crate) scan_after: Arc<str>,
    pub(crate) delete_expired: Arc<str>,
    pub(crate) version: Arc<str>,
    pub(crate) set_version: Arc<str>,
}

impl Statements {
    pub(crate) fn new(dialect: Dialect, tables: Tables) -> Self {
        let p = |n| dialect.param(n);
        // The new expiry, bound four times from placeholder `n` on: `expires_at` takes it,
        // `sweep_at` only when it is behind by more than the slack or ahead of it.
        let expiry = |n: usize| {
            format!(
                "expires_at = {}, sweep_at = CASE WHEN {} < sweep_at OR {} - sweep_at > {SWEEP_SLACK_MS} \
                 THEN {} ELSE sweep_at END",
                p(n),
                p(n + 1),
                p(n + 2),
                p(n + 3)
            )
        };
        let (s, d) = (&tables.sessions, &tables.data);
        let load = format!(
            "SELECT s.created_at, s.expires_at, s.owner, d.name, d.value FROM {s} s \
             LEFT JOIN {d} d ON d.session_id = s.id \
             WHERE s.id = {} AND s.expires_at > {} AND s.forward_to IS NULL",
            p(1),
            p(2)
        );
        let lock = match dialect {
            Dialect::Postgres | Dialect::MySql => " FOR UPDATE",
            // `BEGIN IMMEDIATE` already holds the database's write lock.
            Dialect::Sqlite => "",
        };
        let delete_expired = match dialect {
            // `sweep_at <= expires_at` always: the index finds every expired row.
            Dialect::MySql => format!(
                "DELETE FROM {s} WHERE sweep_at <= {} AND expires_at <= {} LIMIT {EXPIRED_BATCH}",
                p(1),
                p(2)
            ),
            _ => format!(
                "DELETE FROM {s} WHERE id IN (SELECT id FROM {s} \
                 WHERE sweep_at <= {} AND expires_at <= {} LIMIT {EXPIRED_BATCH})",
                p(1),
                p(2)
            ),
        };
        let m = &tables.meta;
        let sessions_of = format!(
            "SELECT id, created_at, expires_at FROM {s} \
             WHERE owner = {} AND expires_at > {} AND forward_to IS NULL",
            p(1),
            p(2)
        );
        Self {
            dialect,
            begin_write: match dialect {
                Dialect::Sqlite => "BEGIN IMMEDIATE",
                Dialect::Postgres | Dialect::MySql => "BEGIN",
            },
            // Its own statement before the load: under PostgreSQL's READ COMMITTED a locking
            // join would re-check the session row after the wait but join it with key rows
            // from before it, missing the keys the transaction it waited for wrote.
            lock_session: format!("SELECT id FROM {s} WHERE id = {}{lock}", p(1)).into(),
            // MySQL's plain reads see the transaction's snapshot; a locking read sees the
            // latest committed rows.
            load_locked: match dialect {
                Dialect::MySql => format!("{load} FOR UPDATE"),
                Dialect::Postgres | Dialect::Sqlite => load.clone(),
            }
            .into(),
            load: load.into(),
            insert_session: format!(
                "INSERT INTO {s} (id, created_at, expires_at, sweep_at, owner) \
                 VALUES ({}, {}, {}, {}, {})",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5)
            )
            .into(),
            bump: format!(
                "UPDATE {s} SET {} \
                 WHERE id = {} AND expires_at > {} AND forward_to IS NULL",
                expiry(1),
                p(5),
                p(6)
            )
            .into(),
            bump_owner: format!(
                "UPDATE {s} SET {}, owner = {} \
                 WHERE id = {} AND expires_at > {} AND forward_to IS NULL",
                expiry(1),
                p(5),
                p(6),
                p(7)
            )
            .into(),
            clear_data: format!("DELETE FROM {d} WHERE session_id = {}", p(1)).into(),
            delete: format!("DELETE FROM {s} WHERE id = {}", p(1)).into(),
            point: format!(
                "UPDATE {s} SET forward_to = {}, expires_at = {}, sweep_at = {}, owner = NULL \
                 WHERE id = {}",
                p(1),
                p(2),
                p(3),
                p(4)
            )
            .into(),
            forwarded: format!(
                "SELECT forward_to FROM {s} \
                 WHERE id = {} AND expires_at > {} AND forward_to IS NOT NULL",
                p(1),
                p(2)
            )
            .into(),
            sessions_of_locked: match dialect {
                // A locking read: it sees what the login before this one committed.
                Dialect::MySql => format!("{sessions_of} FOR UPDATE"),
                Dialect::Postgres | Dialect::Sqlite => sessions_of.clone(),
            }
            .into(),
            sessions_of: sessions_of.into(),
            lock_logins: match dialect {
                Dialect::Postgres => Some("SELECT pg_advisory_xact_lock($1)".into()),
                Dialect::MySql => Some(format!("SELECT version FROM {m} FOR UPDATE").into()),
                Dialect::Sqlite => None,
            },
            delete_sessions_of: format!("DELETE FROM {s} WHERE owner = {}", p(1)).into(),
            scan_first: format!(
                "SELECT id FROM {s} WHERE forward_to IS NULL ORDER BY id LIMIT {}",
                p(1)
            )
            .into(),
            scan_after: format!(
                "SELECT id FROM {s} WHERE id > {} AND forward_to IS NULL ORDER BY id LIMIT {}",
                p(1),
                p(2)
            )
            .into(),
            delete_expired: delete_expired.into(),
            version: format!("SELECT MAX(version) FROM {m}").into(),
            set_version: format!("INSERT INTO {m} (version) VALUES ({})", p(1)).into(),
            tables,
        }
    }

    /// The number PostgreSQL's advisory lock of a login of `owner` takes: the first 8 bytes
    /// of SHA-256 over the sessions table's name and the owner. Two owners sharing a number
    /// only wait for each other.
    pub(crate) fn login_lock_id(&self, owner: &str) -> i64 {
        use sha2::{Digest as _, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.tables.sessions.as_bytes());
        hash.update([0]);
        hash.update(owner.as_bytes());
        let digest = hash.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest[..8]);
        i64::from_le_bytes(b)
    }

    /// `INSERT` of `rows` key rows (session id, name hash, name, value), replacing the rows
    /// of the same names when `upsert`.
    pub(crate) fn insert_data(&self, rows: usize, upsert: bool) -> String {
        let mut sql = format!(
            "INSERT INTO {} (session_id, name_hash, name, value) VALUES ",
            self.tables.data
        );
        for row in 0..rows {
            let n = row * 4;
            if row > 0 {
                sql.push_str(", ");
            }
            let _ = write!(
                sql,
                "({}, {}, {}, {})",
                self.dialect.param(n + 1),
                self.dialect.param(n + 2),
                self.dialect.param(n + 3),
                self.dialect.param(n + 4)
            );
        }
        if upsert {
            sql.push_str(match self.dialect {
                Dialect::Postgres | Dialect::Sqlite => {
                    " ON CONFLICT (session_id, name_hash) DO UPDATE SET value = excluded.value"
                }
                Dialect::MySql => " ON DUPLICATE KEY UPDATE value = VALUES(value)",
            });
        }
        sql
    }

    /// PostgreSQL only: an `update` in one statement, so one round trip. Its first
    /// data-modifying step moves the expiry (and the owner when `owner`) of the session row
    /// only if the session is live, which locks that row; the removed key rows
    /// (`removed` name hashes) are deleted and the `written` ones (hash, name, value) upserted
    /// only for the row that step returned, so a session that is gone, or that a racing
    /// `delete` removes first, gets no key rows. It answers how many session rows it moved
    /// (0 or 1). Parameters: expiry, id, now, [owner], the removed hashes, then the written
    /// triples. `None` on the other databases, whose `UPDATE`s cannot feed an `INSERT`.
    pub(crate) fn update_in_one(
        &self,
        owner: bool,
        removed: usize,
        written: usize,
    ) -> Option<String> {
        if self.dialect != Dialect::Postgres {
            return None;
        }
        let (s, d) = (&self.tables.sessions, &self.tables.data);
        let mut n = if owner { 4 } else { 3 };
        let set_owner = if owner { ", owner = $4" } else { "" };
        let mut sql = format!(
            "WITH s AS (UPDATE {s} SET expires_at = $1, sweep_at = CASE WHEN $1 < sweep_at \
             OR $1 - sweep_at > {SWEEP_SLACK_MS} THEN $1 ELSE sweep_at END{set_owner} \
             WHERE id = $2 AND expires_at > $3 AND forward_to IS NULL RETURNING id)"
        );
        if removed > 0 {
            let _ = write!(
                sql,
                ", r AS (DELETE FROM {d} WHERE session_id = (SELECT id FROM s) AND name_hash IN ("
            );
            for i in 0..removed {
                n += 1;
                let _ = write!(sql, "{}${n}", if i > 0 { ", " } else { "" });
            }
            sql.push_str("))");
        }
        if written > 0 {
            let _ = write!(
                sql,
                ", w AS (INSERT INTO {d} (session_id, name_hash, name, value) \
                 SELECT s.id, v.h, v.n, v.v FROM s, (VALUES "
            );
            for i in 0..written {
                let _ = write!(
                    sql,
                    "{}(${}, ${}, ${})",
                    if i > 0 { ", " } else { "" },
                    n + 1,
                    n + 2,
                    n + 3
                );
                n += 3;
            }
            sql.push_str(
                ") AS v (h, n, v) WHERE TRUE \
                 ON CONFLICT (session_id, name_hash) DO UPDATE SET value = excluded.value)",
            );
        }
        sql.push_str(" SELECT COUNT(*) FROM s");
        Some(sql)
    }

    /// `DELETE` of `n` keys of one session by name hash.
    pub(crate) fn delete_data(&self, n: usize) -> String {
        let mut sql = format!(
            "DELETE FROM {} WHERE session_id = {} AND name_hash IN (",
            self.tables.data,
            self.dialect.param(1)
        );
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&self.dialect.param(i + 2));
        }
        sql.push(')');
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        for bad in ["", "1abc", "a-b", "a b", "a;drop", "\"x\"", &"x".repeat(49)] {
            assert!(
                Tables::new(Dialect::Postgres, bad, None).is_err(),
                "{bad:?} was accepted"
            );
            assert!(
                Tables::new(Dialect::Postgres, "ok", Some(bad)).is_err(),
                "schema {bad:?} was accepted"
            );
        }
        assert!(Tables::new(Dialect::Postgres, "sessions_2", Some("auth")).is_ok());
        assert!(Tables::new(Dialect::Sqlite, "sessions", Some("auth")).is_err());
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let pg = Statements::new(
            Dialect::Postgres,
            Tables::new(Dialect::Postgres, "s", Some("app")).unwrap(),
        );
        assert_eq!(
            pg.delete_data(2),
            "DELETE FROM \"app\".\"s_data\" WHERE session_id = $1 AND name_hash IN ($2, $3)"
        );
        let my = Statements::new(
            Dialect::MySql,
            Tables::new(Dialect::MySql, "s", None).unwrap(),
        );
        assert_eq!(
            pg.update_in_one(true, 1, 2).as_deref(),
            Some(
                "WITH s AS (UPDATE \"app\".\"s\" SET expires_at = $1, sweep_at = CASE WHEN $1 < sweep_at \
                 OR $1 - sweep_at > 60000 THEN $1 ELSE sweep_at END, owner = $4 \
                 WHERE id = $2 AND expires_at > $3 AND forward_to IS NULL RETURNING id), \
                 r AS (DELETE FROM \"app\".\"s_data\" WHERE session_id = (SELECT id FROM s) \
                 AND name_hash IN ($5)), \
                 w AS (INSERT INTO \"app\".\"s_data\" (session_id, name_hash, name, value) \
                 SELECT s.id, v.h, v.n, v.v FROM s, (VALUES ($6, $7, $8), ($9, $10, $11)) \
                 AS v (h, n, v) WHERE TRUE ON CONFLICT (session_id, name_hash) DO UPDATE SET value = excluded.value) \
                 SELECT COUNT(*) FROM s"
            )
        );
        assert!(my.update_in_one(false, 0, 1).is_none());
        assert!(my.insert_data(2, true).ends_with(
            "VALUES (?, ?, ?, ?), (?, ?, ?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)"
        ));
    }
}
