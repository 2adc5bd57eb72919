//! Races a demanding user relies on: logout leaves no key row behind, SQLite never says
//! "database is locked" to concurrent writers, two processes share one SQLite file.

use std::sync::Arc;
use std::time::Duration;

use session_core::suite::{record, server_url};
use session_core::{Changes, SessionStore, StorageKey, Timestamp};
use session_sql::SqlStore;

/// A store on a fresh SQLite file (tables `sessions…`), its URL, and the directory.
async fn sqlite_store() -> (SqlStore, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    (store, url, dir)
}

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
    let (store, url, _dir) = sqlite_store().await;
    logout_races(store, &url, "sessions").await;
}

/// The logout races on the server `var` names, in a table of their own.
async fn logout_races_on(var: &str) {
    let Some((store, url, table)) = crate::server_store(var).await else {
        return;
    };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_leaves_no_key_rows_on_mysql_at_read_committed() {
    let table = crate::table();
    let Some(store) = crate::mysql_read_committed(&table).await else {
        return;
    };
    let url = server_url("SESSION_TEST_MYSQL_URL").unwrap_or_default();
    logout_races(store, &url, &table).await;
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
    let (store, url, _dir) = sqlite_store().await;
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

/// Fills `table` (and its key table) with `n` expired sessions of one key each, in bulk on
/// the server (a recursive `WITH` on SQLite, `generate_series` on PostgreSQL).
async fn expired_rows(url: &str, table: &str, n: i64) {
    use sqlx::AssertSqlSafe;
    let past = Timestamp::now()
        .saturating_sub(Duration::from_secs(60))
        .as_unix_millis();
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for sql in [
            format!(
                "INSERT INTO {table} (id, created_at, expires_at, sweep_at) \
                 SELECT decode(lpad(i::text, 64, '0'), 'hex'), $1, $1, $1 \
                 FROM generate_series(1, $2) AS i"
            ),
            format!(
                "INSERT INTO {table}_data (session_id, name_hash, name, value) \
                 SELECT decode(lpad(i::text, 64, '0'), 'hex'), '\\x00'::bytea, 'a'::bytea, 'x'::bytea \
                 FROM generate_series(1, $2) AS i WHERE $1 = $1"
            ),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .bind(past)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        for sql in [
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
                 INSERT INTO {table} (id, created_at, expires_at, sweep_at) \
                 SELECT CAST(printf('%032d', i) AS BLOB), ?1, ?1, ?1 FROM n"
            ),
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
                 INSERT INTO {table}_data (session_id, name_hash, name, value) \
                 SELECT CAST(printf('%032d', i) AS BLOB), zeroblob(16), X'61', X'78' FROM n \
                 WHERE ?1 = ?1"
            ),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .bind(past)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// A sweep of a million expired sessions (each with a key row) deletes them all, counts them,
/// and never holds a long lock: a request writing to a live session meanwhile is served
/// throughout, each write in a small fraction of the sweep's time.
async fn a_million_row_sweep(store: SqlStore, url: &str, table: &str) {
    const N: i64 = 1_000_000;
    expired_rows(url, table, N).await;
    let store = Arc::new(store);
    let live = record(&[("n", b"0")]);
    store.create(&live).await.unwrap();
    let later = Timestamp::now().saturating_add(Duration::from_secs(600));
    let started = std::time::Instant::now();
    let sweeper = {
        let store = store.clone();
        tokio::spawn(async move { store.delete_expired().await.unwrap() })
    };
    let (mut writes, mut slowest) = (0u32, Duration::ZERO);
    while !sweeper.is_finished() {
        let mut changes = Changes::new();
        changes.set("n", writes.to_be_bytes().to_vec());
        let t = std::time::Instant::now();
        assert!(store.update(&live.key, &changes, later).await.unwrap());
        slowest = slowest.max(t.elapsed());
        writes += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let swept = sweeper.await.unwrap();
    let took = started.elapsed();
    assert_eq!(swept, N as u64, "the sweep's count");
    assert!(store.load(&live.key).await.unwrap().is_some());
    assert_eq!(orphans(url, table).await, 0, "key rows outlived the sweep");
    // Batches of 500: a writer waits for one batch at most, never for the sweep.
    assert!(writes >= 20, "{writes} writes in a {took:?} sweep");
    assert!(
        slowest < Duration::from_secs(1) && slowest * 10 < took,
        "a write waited {slowest:?} during a {took:?} sweep"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_sweep_on_sqlite_never_holds_a_long_lock() {
    let (store, url, _dir) = sqlite_store().await;
    a_million_row_sweep(store, &url, "sessions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_sweep_on_postgres_never_holds_a_long_lock() {
    let Some((store, url, table)) = crate::server_store("SESSION_TEST_POSTGRES_URL").await else {
        return;
    };
    a_million_row_sweep(store, &url, &table).await;
}

/// `session_core::spawn_sweeper` on the SQL store removes expired sessions (and their key rows)
/// by itself, leaves live ones, and stops when cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_task_clears_expired_rows_by_itself() {
    let (store, url, _dir) = sqlite_store().await;
    let store: Arc<dyn SessionStore> = Arc::new(store);
    let past = Timestamp::now().saturating_sub(Duration::from_secs(1));
    for _ in 0..3 {
        let r = session_core::Record {
            expires_at: past,
            ..record(&[("a", b"1")])
        };
        store.create(&r).await.unwrap();
    }
    let live = record(&[("keep", b"1")]);
    store.create(&live).await.unwrap();
    let cancel = session_core::CancellationToken::new();
    let sweeper =
        session_core::spawn_sweeper(store.clone(), Duration::from_millis(50), cancel.clone());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
            n
        }
    };
    let mut left = i64::MAX;
    for _ in 0..100 {
        left = count("SELECT COUNT(*) FROM sessions").await;
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(left, 1, "the sweeper did not clear the expired sessions");
    assert_eq!(count("SELECT COUNT(*) FROM sessions_data").await, 1);
    assert!(store.load(&live.key).await.unwrap().is_some());
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), sweeper)
        .await
        .expect("the sweeper stops when cancelled")
        .unwrap();
}
