//! session-redis's integration tests, against real servers: `SESSION_TEST_REDIS_URL` (a
//! standalone server), `SESSION_TEST_REDIS_CLUSTER_URLS` (comma-separated cluster nodes),
//! and a `redis-server` on PATH for the restart test. `cargo xtask test-backends` provides
//! all three.

// Drills report their figures on stderr (`--nocapture`), for BENCHMARKS.md.
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use session_core::suite::server_url;
use session_core::{
    Changes, IdGenerator, Record, SessionStore, StoreError, Timestamp, UuidV4Generator,
};
use session_redis::RedisStore;
use session_testing::{OwnedServer, ServerKind, free_port};

fn record(data: &[(&str, &[u8])]) -> Record {
    Record {
        owner: Some("user-1".into()),
        ..session_core::suite::record(data)
    }
}
use tokio::sync::Barrier;

/// Each test gets its own key prefix on the shared server.
fn prefix() -> String {
    format!("test:{}:", UuidV4Generator.generate().as_str())
}

async fn standalone() -> Option<Arc<dyn SessionStore>> {
    let url = server_url("SESSION_TEST_REDIS_URL")?;
    let store = RedisStore::builder(url)
        .key_prefix(prefix())
        .open()
        .await
        .expect("connect to redis");
    Some(Arc::new(store))
}

async fn cluster() -> Option<Arc<dyn SessionStore>> {
    let urls = server_url("SESSION_TEST_REDIS_CLUSTER_URLS")?;
    let store = RedisStore::cluster_builder(urls.split(','))
        .key_prefix(prefix())
        .open()
        .await
        .expect("connect to the redis cluster");
    Some(Arc::new(store))
}

/// A store on the application's own `ConnectionManager`.
async fn own_connection() -> Option<Arc<dyn SessionStore>> {
    let url = server_url("SESSION_TEST_REDIS_URL")?;
    let client = redis::Client::open(url.as_str()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let store = RedisStore::with_connection_manager(conn)
        .key_prefix(prefix())
        .open()
        .await
        .expect("a store on the app's connection");
    Some(Arc::new(store))
}

/// A store on the application's own cluster connection.
async fn own_cluster_connection() -> Option<Arc<dyn SessionStore>> {
    let urls = server_url("SESSION_TEST_REDIS_CLUSTER_URLS")?;
    let client = redis::cluster::ClusterClient::new(urls.split(',').collect::<Vec<_>>()).unwrap();
    let conn = client.get_async_connection().await.unwrap();
    let store = RedisStore::with_cluster_connection(conn)
        .key_prefix(prefix())
        .open()
        .await
        .expect("a store on the app's cluster connection");
    Some(Arc::new(store))
}

mod on_the_apps_connection {
    session_core::conformance_tests!(|| crate::own_connection());
}

mod on_the_apps_cluster_connection {
    session_core::conformance_tests!(|| crate::own_cluster_connection());
}

/// A store on the standalone server and a plain connection beside it, for tests that reach
/// behind the store.
async fn store_and_raw() -> Option<(RedisStore, redis::aio::MultiplexedConnection)> {
    let url = server_url("SESSION_TEST_REDIS_URL")?;
    let store = RedisStore::builder(&url)
        .key_prefix(prefix())
        .open()
        .await
        .expect("connect to redis");
    let raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    Some((store, raw))
}

mod standalone {
    session_core::conformance_tests!(|| crate::standalone());
}

mod cluster {
    session_core::conformance_tests!(|| crate::cluster());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_two_key_races_lose_nothing() {
    for store in [standalone().await, cluster().await].into_iter().flatten() {
        let r = record(&[("base", b"0")]);
        store.create(&r).await.unwrap();
        let barrier = Arc::new(Barrier::new(2000));
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let (store, barrier, key) = (store.clone(), barrier.clone(), r.key);
                tokio::spawn(async move {
                    let mut changes = Changes::new();
                    changes.set(format!("k{i}"), vec![1]);
                    barrier.wait().await;
                    store
                        .update(
                            &key,
                            &changes,
                            Timestamp::now().saturating_add(Duration::from_secs(3600)),
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().unwrap());
        }
        let got = store.load(&r.key).await.unwrap().unwrap();
        assert_eq!(
            got.data.len(),
            2001,
            "lost {} updates",
            2001 - got.data.len()
        );
        assert_eq!(got.owner.as_deref(), Some("user-1"));
    }
}

#[tokio::test]
async fn a_tampered_hash_is_corrupt_not_a_panic() {
    let Some((store, mut raw)) = store_and_raw().await else {
        return;
    };
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));

    let tamper: [(&str, &[&[u8]]); 7] = [
        ("HSET", &[b"e", b"garbage"]),
        ("HSET", &[b"c", b"-"]),
        ("HSET", &[b"v", b"2"]),
        ("HSET", &[b"x-foreign", b"1"]),
        ("HSET", &[b"d:\xff\xfe", b"1"]),
        ("HDEL", &[b"v"]),
        ("HDEL", &[b"c"]),
    ];
    for (command, args) in tamper {
        let r = record(&[("a", b"1")]);
        store.create(&r).await.unwrap();
        let key = store.redis_key(&r.key);
        let _: () = redis::cmd(command)
            .arg(&key)
            .arg(args)
            .query_async(&mut raw)
            .await
            .unwrap();
        let loaded = store.load(&r.key).await;
        assert!(
            matches!(loaded, Err(StoreError::Corrupt { .. })),
            "{command} {args:?}: {loaded:?}"
        );
    }
    // A malformed expiry also stops an update, which must not touch the hash.
    let r = record(&[("a", b"1")]);
    store.create(&r).await.unwrap();
    let key = store.redis_key(&r.key);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("e")
        .arg("garbage")
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut changes = Changes::new();
    changes.set("b", b"2".to_vec());
    let updated = store.update(&r.key, &changes, later).await;
    assert!(
        matches!(updated, Err(StoreError::Corrupt { .. })),
        "{updated:?}"
    );
    let b: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&key)
        .arg("d:b")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(b, None);
}

#[tokio::test]
async fn keys_are_hashed_and_hash_tagged() {
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let p = prefix();
    let store = RedisStore::builder(&url)
        .key_prefix(p.clone())
        .open()
        .await
        .unwrap();
    let id = UuidV4Generator.generate();
    let key = store.redis_key(&id.storage_key());
    assert_eq!(
        key,
        format!("{p}{{{}}}", id.storage_key().to_hex().as_str())
    );
    assert!(!key.contains(id.as_str()));
}

#[tokio::test]
async fn scripts_are_loaded_again_after_a_script_flush() {
    let Some((store, mut raw)) = store_and_raw().await else {
        return;
    };
    let flush = async |raw: &mut redis::aio::MultiplexedConnection| {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(raw)
            .await
            .unwrap();
    };
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    let r = record(&[("a", b"1")]);
    flush(&mut raw).await;
    store.create(&r).await.unwrap();
    // Both update scripts: keys set only, and a removal.
    let mut set = Changes::new();
    set.set("b", b"2".to_vec());
    flush(&mut raw).await;
    assert!(store.update(&r.key, &set, later).await.unwrap());
    let mut removal = Changes::new();
    removal.remove("a");
    flush(&mut raw).await;
    assert!(store.update(&r.key, &removal, later).await.unwrap());
    let loaded = store.load(&r.key).await.unwrap().unwrap();
    assert_eq!(
        loaded.data.into_iter().collect::<Vec<_>>(),
        [("b".to_owned(), b"2".to_vec())]
    );
    flush(&mut raw).await;
    assert_eq!(store.delete_sessions_of("user-1").await.unwrap(), 1);
    assert_eq!(store.load(&r.key).await.unwrap(), None);
}

/// Another client flushing the script cache over and over (a deploy, an operator, another
/// test on the same server) never fails a write: after NOSCRIPT the call is sent as `EVAL`,
/// which loads and runs in one step, so no flush can land between a load and a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_succeed_while_another_client_flushes_scripts() {
    let Some((store, mut raw)) = store_and_raw().await else {
        return;
    };
    let r = record(&[("n", b"0")]);
    store.create(&r).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut flushes = 0u32;
            while !stop.load(Ordering::Relaxed) && flushes < 20_000 {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                flushes += 1;
            }
            flushes
        }
    });
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    for i in 0..300u32 {
        let mut set = Changes::new();
        set.set("n", i.to_string().into_bytes());
        if i % 2 == 1 {
            set.remove("gone");
        }
        assert!(
            store.update(&r.key, &set, later).await.unwrap(),
            "update {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let flushes = flusher.await.unwrap();
    assert!(flushes > 10, "the flusher ran only {flushes} times");
    let loaded = store.load(&r.key).await.unwrap().unwrap();
    assert_eq!(loaded.data["n"], b"299");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_server_restart_without_being_rebuilt() {
    // Same gate as the other server tests: under `cargo xtask test-backends` this runs.
    if server_url("SESSION_TEST_REDIS_URL").is_none() {
        return;
    }
    let port = free_port();
    let mut server = OwnedServer::start(ServerKind::Redis, port).await;
    let timeout = Duration::from_millis(500);
    let store = Arc::new(
        RedisStore::builder(format!("redis://127.0.0.1:{port}"))
            .command_timeout(timeout)
            .connection_timeout(Duration::from_millis(300))
            .open()
            .await
            .unwrap(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, unavailable, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let slowest = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (store, stop, ok, unavailable, other, slowest) = (
                store.clone(),
                stop.clone(),
                ok.clone(),
                unavailable.clone(),
                other.clone(),
                slowest.clone(),
            );
            tokio::spawn(async move {
                // Bounded: at most 20 000 calls per worker, and the test stops them sooner.
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    let r = record(&[("a", b"1")]);
                    let result = async {
                        store.create(&r).await?;
                        store.load(&r.key).await
                    }
                    .await;
                    slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                    match result {
                        Ok(Some(_)) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(StoreError::Unavailable { .. }) => {
                            unavailable.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => other.fetch_add(1, Ordering::SeqCst),
                    };
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    let wait_for = |counter: Arc<AtomicU64>, above: u64, what: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        while counter.load(Ordering::SeqCst) <= above {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(ok.clone(), 50, "successes before the outage").await;
    server.kill().await;
    wait_for(
        unavailable.clone(),
        20,
        "Unavailable errors during the outage",
    )
    .await;
    let served_before = ok.load(Ordering::SeqCst);
    server.restart().await;
    wait_for(
        ok.clone(),
        served_before + 50,
        "successes after the restart",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("a worker panicked");
    }
    let (ok, unavailable, other) = (
        ok.load(Ordering::SeqCst),
        unavailable.load(Ordering::SeqCst),
        other.load(Ordering::SeqCst),
    );
    eprintln!("restart test: {ok} served, {unavailable} unavailable, {other} other errors");
    assert_eq!(other, 0, "errors other than Unavailable during the outage");
    let slowest = Duration::from_millis(slowest.load(Ordering::SeqCst));
    // Two calls per iteration, each bounded by the command timeout.
    assert!(
        slowest <= 2 * timeout + Duration::from_millis(500),
        "a call hung for {slowest:?}"
    );
}
