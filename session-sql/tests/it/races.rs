//! Races a demanding user relies on: logout leaves no key row behind, SQLite never says
//! "database is locked" to concurrent writers, two processes share one SQLite file.

use std::sync::Arc;
use std::time::Duration;

use session_core::suite::{record, server_url};
use session_core::{Changes, SessionStore, StorageKey, Timestamp};
use session_sql::SqlStore;

/// Counts key rows whose session row is gone.
async fn orphans(url: &str, table: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM {table}_data d WHERE NOT EXISTS \
         (SELECT 1 FROM {table} s WHERE s.id = d.session_id)"
    );
    let sql = sqlx::AssertSqlSafe(sql);
    let (n,): (i64,) = if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
    } else if url.starts_with("mysql") {
        let pool = sqlx::MySqlPool::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_one(&pool).await.unwrap()
    };
    n
}

/// 1 000 rounds of `delete` racing an `update` that writes new keys and a `touch`; then no
/// session is left, and no key row without its session.
async fn logout_races(store: SqlStore, url: &str, table: &str) {
    let store = Arc::new(store);
    let later = Timestamp::now().saturating_add(Duration::from_secs(600));
    let mut keys: Vec<StorageKey> = Vec::new();
    for round in 0..1000u32 {
        let r = record(&[("a", b"1")]);
        store.create(&r).await.unwrap();
        keys.push(r.key);
        let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
        let key = r.key;
        let update = tokio::spawn(async move {
            let mut changes = Changes::new();
            changes.set(format!("k{round}"), vec![7; 64]);
            changes.set("b", vec![2]);
            s1.update(&key, &changes, later).await.unwrap()
        });
        let touch = tokio::spawn(async move { s2.touch(&key, later).await.unwrap() });
        let delete = tokio::spawn(async move { s3.delete(&key).await.unwrap() });
        let (_, _, ()) = (
            update.await.unwrap(),
            touch.await.unwrap(),
            delete.await.unwrap(),
        );
    }
    for key in &keys {
        assert_eq!(
            store.load(key).await.unwrap(),
            None,
            "a deleted session came back"
        );
    }
    assert_eq!(
        orphans(url, table).await,
        0,
        "key rows outlived their session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_leaves_no_key_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    logout_races(store, &url, "sessions").await;
}

/// The logout races on the server `var` names, in a table of their own.
async fn logout_races_on(var: &str) {
    let Some(url) = server_url(var) else {
        return;
    };
    let table = crate::table();
    let store = SqlStore::builder(&url)
        .table(&table)
        .create_schema(true)
        .open()
        .await
        .unwrap();
    logout_races(store, &url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_leaves_no_key_rows_on_postgres() {
    logout_races_on("SESSION_TEST_POSTGRES_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_leaves_no_key_rows_on_mysql() {
    logout_races_on("SESSION_TEST_MYSQL_URL").await;
}

/// 64 tasks creating and updating sessions at once on one SQLite file: every call succeeds
/// (writers wait for the lock instead of failing with "database is locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_sqlite_writers_never_see_a_locked_database() {
    let (store, _dir) = crate::sqlite_file().await;
    let later = Timestamp::now().saturating_add(Duration::from_secs(600));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..20u32 {
                    let r = record(&[("n", b"0")]);
                    store.create(&r).await.unwrap();
                    let mut changes = Changes::new();
                    changes.set(format!("t{i}-{round}"), vec![1]);
                    assert!(store.update(&r.key, &changes, later).await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a writer failed");
    }
}

/// `target/<profile>/examples/sqlite_hammer`, built by `cargo test` with the tests.
fn hammer() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/sqlite_hammer");
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p session-sql --all-features` builds it",
        path.display()
    );
    path
}

/// Two processes updating the same sessions of one SQLite file lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_sqlite_file_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    let records: Vec<_> = (0..3).map(|_| record(&[("base", b"1")])).collect();
    for r in &records {
        store.create(r).await.unwrap();
    }
    let keys: Vec<String> = records.iter().map(|r| r.key.to_hex().to_string()).collect();
    let rounds = 100;
    let spawn = |name: &str| {
        tokio::process::Command::new(hammer())
            .args([url.as_str(), name, &rounds.to_string()])
            .args(&keys)
            .kill_on_drop(true)
            .status()
    };
    let (a, b) = tokio::join!(spawn("a"), spawn("b"));
    assert!(a.unwrap().success() && b.unwrap().success());
    for r in &records {
        let got = store.load(&r.key).await.unwrap().unwrap();
        assert_eq!(got.data.len(), 2 * rounds + 1, "updates were lost");
    }
}

/// A sweep removes every expired session across several batches (1 234 rows, batches of
/// 500), with their key rows, and counts them; live ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_deletes_every_expired_row_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    let past = Timestamp::now().saturating_sub(Duration::from_secs(60));
    for _ in 0..1234 {
        let r = session_core::Record {
            expires_at: past,
            ..record(&[("a", b"1"), ("b", b"2")])
        };
        store.create(&r).await.unwrap();
    }
    let live = record(&[("keep", b"1")]);
    store.create(&live).await.unwrap();
    assert_eq!(store.delete_expired().await.unwrap(), 1234);
    assert!(store.load(&live.key).await.unwrap().is_some());
    assert_eq!(orphans(&url, "sessions").await, 0);
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (keys,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM sessions_data")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "only the live session's key row is left");
}
