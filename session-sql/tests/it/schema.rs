//! The schema: created once, checked at open, printed for DBAs, names validated.

use std::path::Path;

use session_core::StoreError;
use session_sql::{Dialect, SqlStore};

#[test]
fn the_ddl_in_the_docs_is_what_the_store_creates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ddl");
    for (dialect, file) in [
        (Dialect::Postgres, "postgres.sql"),
        (Dialect::Sqlite, "sqlite.sql"),
        (Dialect::MySql, "mysql.sql"),
    ] {
        let want: String = SqlStore::ddl(dialect, "sessions", None)
            .unwrap()
            .iter()
            .map(|s| format!("{s};\n"))
            .collect();
        let path = dir.join(file);
        if std::env::var_os("SESSION_SQL_WRITE_DDL").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            want,
            "{file} is stale: run with SESSION_SQL_WRITE_DDL=1"
        );
    }
}

#[tokio::test]
async fn a_missing_schema_is_a_config_error_unless_asked_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let err = SqlStore::builder(&url).open().await.unwrap_err();
    assert!(matches!(err, StoreError::Config { .. }), "{err}");
    assert!(err.to_string().contains("create_schema"), "{err}");
    // Created once; opening again (creating or not) finds it.
    SqlStore::builder(&url)
        .create_schema(true)
        .open()
        .await
        .unwrap();
    SqlStore::builder(&url)
        .create_schema(true)
        .open()
        .await
        .unwrap();
    SqlStore::builder(&url).open().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    SqlStore::open(&url).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO sessions_schema (version) VALUES (99)")
        .execute(&pool)
        .await
        .unwrap();
    let err = SqlStore::builder(&url).open().await.unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}

#[tokio::test]
async fn bad_names_and_urls_are_config_errors() {
    for builder in [
        SqlStore::builder("sqlite::memory:").table("x; DROP TABLE y"),
        SqlStore::builder("sqlite::memory:").schema("auth"),
        SqlStore::builder("oracle://db/app"),
        SqlStore::builder("postgres://[::1"),
    ] {
        let err = builder.create_schema(true).open().await.unwrap_err();
        assert!(matches!(err, StoreError::Config { .. }), "{err}");
    }
}

#[tokio::test]
async fn from_pool_shares_the_applications_pool_and_table_names_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let store = SqlStore::from_pool(pool.clone())
        .table("web_sessions")
        .create_schema(true)
        .open()
        .await
        .unwrap();
    let manager = session_core::SessionManager::new(store);
    let session = manager.create();
    session.insert("n", 1).unwrap();
    manager.save(&session).await.unwrap();
    let (sessions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM web_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (keys,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM web_sessions_data")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((sessions, keys), (1, 1));
}

#[test]
fn owner_and_expiry_are_indexed_in_every_dialect() {
    for dialect in [Dialect::Postgres, Dialect::Sqlite, Dialect::MySql] {
        let ddl = SqlStore::ddl(dialect, "sessions", None).unwrap().join("\n");
        for index in ["sessions_owner", "sessions_expires"] {
            assert!(ddl.contains(index), "{dialect:?} has no {index}: {ddl}");
        }
        assert!(ddl.contains("ON DELETE CASCADE"), "{dialect:?}: {ddl}");
    }
}

#[tokio::test]
async fn sqlite_files_are_opened_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    SqlStore::open(&url).await.unwrap();
    // WAL is a property of the file: a plain connection sees it.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_record_over_the_size_limit_is_too_large_and_not_written() {
    use session_core::{Changes, SessionStore, Timestamp};

    let store = SqlStore::builder("sqlite::memory:")
        .create_schema(true)
        .record_size_limit(100)
        .open()
        .await
        .unwrap();
    let big = session_core::suite::record(&[("k", &[0u8; 200])]);
    let err = store.create(&big).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                size: 201,
                limit: 100,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(store.load(&big.key).await.unwrap(), None);
    let small = session_core::suite::record(&[("k", b"1")]);
    store.create(&small).await.unwrap();
    let mut changes = Changes::new();
    changes.set("big", vec![0; 200]);
    let later = Timestamp::now().saturating_add(std::time::Duration::from_secs(60));
    assert!(matches!(
        store.update(&small.key, &changes, later).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(
        !store
            .load(&small.key)
            .await
            .unwrap()
            .unwrap()
            .data
            .contains_key("big")
    );
}
