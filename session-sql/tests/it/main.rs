//! session-sql's integration tests: the conformance suite and the races on SQLite files (and
//! `sqlite::memory:`), and on the PostgreSQL and MariaDB servers `cargo xtask test-backends`
//! starts (`SESSION_TEST_POSTGRES_URL`, `SESSION_TEST_MYSQL_URL`).

mod races;
mod schema;

use std::sync::Arc;

use session_core::suite::server_url;
use session_core::{IdGenerator, SessionStore, UuidV4Generator};
use session_sql::SqlStore;

/// A table name of its own for each test on a shared server.
pub(crate) fn table() -> String {
    let id = UuidV4Generator.generate();
    let clean: String = id
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("t_{}", clean.to_ascii_lowercase())
}

/// A store on a fresh SQLite file, and the directory that holds it.
pub(crate) async fn sqlite_file() -> (Arc<dyn SessionStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let store = SqlStore::builder(url)
        .create_schema(true)
        .open()
        .await
        .unwrap();
    (Arc::new(store), dir)
}

/// A store on the server `var` names in a table of its own, its URL, and the table.
pub(crate) async fn server_store(var: &str) -> Option<(SqlStore, String, String)> {
    let url = server_url(var)?;
    let table = table();
    let store = SqlStore::builder(&url)
        .table(&table)
        .create_schema(true)
        .open()
        .await
        .unwrap_or_else(|e| panic!("open the store on {var}: {e}"));
    Some((store, url, table))
}

/// A store on the server `var` names, in a table of its own.
async fn on_server(var: &str) -> Option<SqlStore> {
    Some(server_store(var).await?.0)
}

pub(crate) async fn postgres() -> Option<SqlStore> {
    on_server("SESSION_TEST_POSTGRES_URL").await
}

pub(crate) async fn mysql() -> Option<SqlStore> {
    on_server("SESSION_TEST_MYSQL_URL").await
}

/// A store on the MySQL server through a pool whose connections run at READ COMMITTED (a
/// common server setting; MariaDB's and MySQL's default is REPEATABLE READ).
pub(crate) async fn mysql_read_committed(table: &str) -> Option<SqlStore> {
    let url = server_url("SESSION_TEST_MYSQL_URL")?;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor as _;
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    Some(
        SqlStore::from_pool(pool)
            .table(table)
            .create_schema(true)
            .open()
            .await
            .unwrap(),
    )
}

mod sqlite_file {
    session_core::conformance_tests!(
        || async { Some(crate::sqlite_file().await) },
        atomic_cap = true
    );
}

mod sqlite_memory {
    session_core::conformance_tests!(
        || async {
            let store = session_sql::SqlStore::open("sqlite::memory:")
                .await
                .unwrap();
            Some(store)
        },
        atomic_cap = true
    );
}

mod postgres {
    session_core::conformance_tests!(|| crate::postgres(), atomic_cap = true);
}

mod mysql {
    session_core::conformance_tests!(|| crate::mysql(), atomic_cap = true);
}

mod mysql_read_committed {
    session_core::conformance_tests!(
        || async { crate::mysql_read_committed(&crate::table()).await },
        atomic_cap = true
    );
}
