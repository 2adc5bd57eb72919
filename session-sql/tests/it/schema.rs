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
        let statements = SqlStore::ddl(dialect, "sessions", None).unwrap();
        let ddl = statements.join("\n");
        for (index, column) in [
            ("sessions_owner", "(owner)"),
            ("sessions_sweep", "(sweep_at)"),
        ] {
            // In MySQL's DDL the indexes are clauses of CREATE TABLE: look from the name on.
            let at = ddl
                .find(index)
                .unwrap_or_else(|| panic!("{dialect:?} has no {index}: {ddl}"));
            let rest = ddl[at..].split(['\n', ',']).next().unwrap_or_default();
            assert!(
                rest.contains(column),
                "{dialect:?}: {index} is not on {column}: {rest}"
            );
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

/// The sweep finds expired sessions by `sweep_at`, an indexed lower bound of `expires_at` that
/// an update moves only when it falls more than a minute behind (or would be ahead): most
/// updates then change no indexed column. Every read still checks the exact `expires_at`, and
/// a session whose bound lags is swept all the same once it expires.
#[tokio::test]
async fn the_sweep_bound_lags_the_expiry_by_at_most_a_minute_and_never_leads_it() {
    use session_core::{Changes, SessionStore as _, Timestamp};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let columns = || async {
        let row: (i64, i64) = sqlx::query_as("SELECT expires_at, sweep_at FROM sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
        row
    };
    let now = Timestamp::now();
    let at = |ms: u64| now.saturating_add(Duration::from_millis(ms));
    let record = session_core::Record {
        expires_at: at(1_000),
        ..session_core::suite::record(&[("a", b"1")])
    };
    store.create(&record).await.unwrap();
    let first = at(1_000).as_unix_millis();
    assert_eq!(columns().await, (first, first));

    // Within the minute: the expiry moves, the bound stays.
    let mut changes = Changes::new();
    changes.set("a", b"2".to_vec());
    assert!(
        store
            .update(&record.key, &changes, at(30_000))
            .await
            .unwrap()
    );
    assert!(store.touch(&record.key, at(59_000)).await.unwrap());
    assert_eq!(columns().await, (at(59_000).as_unix_millis(), first));

    // More than a minute behind: the bound catches up.
    assert!(store.touch(&record.key, at(90_000)).await.unwrap());
    let caught_up = at(90_000).as_unix_millis();
    assert_eq!(columns().await, (caught_up, caught_up));

    // An earlier expiry takes the bound down with it, so the sweep cannot miss the session.
    assert!(store.update(&record.key, &changes, at(500)).await.unwrap());
    let earlier = at(500).as_unix_millis();
    assert_eq!(columns().await, (earlier, earlier));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load(&record.key).await.unwrap(), None);
    assert_eq!(store.delete_expired().await.unwrap(), 1);
}

/// A session whose bound lags a live expiry is found by the sweep's index range but not
/// deleted: the sweep checks the exact expiry.
#[tokio::test]
async fn a_live_session_whose_sweep_bound_has_passed_is_not_swept() {
    use session_core::{SessionStore as _, Timestamp};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    let now = Timestamp::now();
    let record = session_core::Record {
        expires_at: now.saturating_add(Duration::from_millis(300)),
        ..session_core::suite::record(&[("a", b"1")])
    };
    store.create(&record).await.unwrap();
    // 30 s more: within the slack, so the bound stays at +300 ms.
    assert!(
        store
            .touch(&record.key, now.saturating_add(Duration::from_secs(30)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.delete_expired().await.unwrap(), 0);
    assert!(store.load(&record.key).await.unwrap().is_some());
}

/// On PostgreSQL an update within the slack changes no indexed column, so the server updates
/// the session row in place (a HOT update: no new index entries, no index bloat).
#[tokio::test]
async fn postgres_updates_within_the_slack_are_hot() {
    use session_core::{Changes, SessionStore as _};
    use std::time::Duration;
    let Some(url) = session_core::suite::server_url("SESSION_TEST_POSTGRES_URL") else {
        return;
    };
    let table = crate::table();
    let app_pool = sqlx::PgPool::connect(&url).await.unwrap();
    let store = SqlStore::from_pool(app_pool.clone())
        .table(&table)
        .create_schema(true)
        .open()
        .await
        .unwrap();
    let record = session_core::suite::record(&[("a", b"1")]);
    store.create(&record).await.unwrap();
    let base = record.expires_at;
    for i in 0..20u64 {
        let mut changes = Changes::new();
        changes.set("a", i.to_be_bytes().to_vec());
        let expiry = base.saturating_add(Duration::from_millis(i * 100));
        assert!(store.update(&record.key, &changes, expiry).await.unwrap());
    }
    // A server process reports its statistics when it ends (or after ten idle seconds).
    app_pool.close().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut counts = (0, 0);
    for _ in 0..50 {
        counts = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1",
        )
        .bind(&table)
        .fetch_one(&pool)
        .await
        .unwrap();
        if counts.0 >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (updates, hot): (i64, i64) = counts;
    assert_eq!(updates, 20, "the statistics never showed the updates");
    // Nearly all in place (one may not be, when the page has no room left).
    assert!(hot >= 18, "{hot} of {updates} updates were HOT");
}
