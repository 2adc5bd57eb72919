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

/// A store on the standalone server at `url` under `prefix`.
async fn open_at(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .key_prefix(prefix)
        .open()
        .await
        .expect("connect to redis")
}

async fn standalone() -> Option<Arc<dyn SessionStore>> {
    let url = server_url("SESSION_TEST_REDIS_URL")?;
    Some(Arc::new(open_at(&url, &prefix()).await))
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
    let store = open_at(&url, &prefix()).await;
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

/// What earlier builds stored: one hash per session.
async fn write_old_layout(raw: &mut redis::aio::MultiplexedConnection, key: &str) {
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("v")
        .arg("1")
        .arg("c")
        .arg(Timestamp::now().as_unix_millis())
        .arg("e")
        .arg(later.as_unix_millis())
        .arg("d:user")
        .arg("alice")
        .query_async(raw)
        .await
        .unwrap();
}

/// A session loads as the checked body of its envelope, its values left encoded for the
/// manager to read in place.
#[tokio::test]
async fn load_body_answers_the_envelopes_body() {
    if let Some(store) = standalone().await {
        session_core::suite::check_loads_bodies(store).await;
    }
}

#[tokio::test]
async fn old_layout_foreign_types_and_damaged_values_are_corrupt_not_errors() {
    let Some((store, mut raw)) = store_and_raw().await else {
        return;
    };
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    let mut changes = Changes::new();
    changes.set("b", b"2".to_vec());

    // A hash (the earlier layout) and keys of other types: every call is Corrupt or harmless.
    let foreign: [(&str, &[&[u8]]); 3] = [
        ("RPUSH", &[b"x"]),
        ("SADD", &[b"x"]),
        ("ZADD", &[b"1", b"x"]),
    ];
    let r = record(&[("a", b"1")]);
    let key = store.redis_key(&r.key);
    write_old_layout(&mut raw, &key).await;
    let mut layouts = vec![("old hash layout", key, r.key)];
    for (command, args) in foreign {
        let r = record(&[("a", b"1")]);
        let key = store.redis_key(&r.key);
        let _: () = redis::cmd(command)
            .arg(&key)
            .arg(args)
            .query_async(&mut raw)
            .await
            .unwrap();
        layouts.push((command, key, r.key));
    }
    for (what, key, storage_key) in &layouts {
        let loaded = store.load(storage_key).await;
        assert!(
            matches!(loaded, Err(StoreError::Corrupt { .. })),
            "load of {what}: {loaded:?}"
        );
        let loaded = store.load_body(storage_key).await;
        assert!(
            matches!(loaded, Err(StoreError::Corrupt { .. })),
            "load_body of {what}: {loaded:?}"
        );
        let updated = store.update(storage_key, &changes, later).await;
        assert!(
            matches!(updated, Err(StoreError::Corrupt { .. })),
            "update of {what}: {updated:?}"
        );
        let touched = store.touch(storage_key, later).await;
        assert!(
            matches!(touched, Err(StoreError::Corrupt { .. })),
            "touch of {what}: {touched:?}"
        );
        let to = UuidV4Generator.generate().storage_key();
        let retired = store.retire(storage_key, &to, later).await;
        assert!(
            matches!(retired, Err(StoreError::Corrupt { .. })),
            "retire of {what}: {retired:?}"
        );
        let forwarded = store.forwarded(storage_key).await;
        assert!(
            matches!(forwarded, Err(StoreError::Corrupt { .. })),
            "forwarded of {what}: {forwarded:?}"
        );
        // Deleting it is what a fresh session's logout does: it works.
        store.delete(storage_key).await.unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(exists, 0, "{what}");
    }

    // Damaged strings: one flipped byte, a cut value, a foreign string, a value shorter
    // than its tag. Neither a load nor an update succeeds, and the update writes nothing.
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("a flipped byte", |v| v[10] ^= 0x40),
        ("cut short", |v| v.truncate(v.len() - 12)),
        ("a foreign string", |v| {
            *v = b"hello, this is not a session".to_vec()
        }),
        ("shorter than its tag", |v| v.truncate(3)),
    ];
    for (what, damage) in damages {
        let r = record(&[("a", b"1")]);
        store.create(&r).await.unwrap();
        let key = store.redis_key(&r.key);
        let mut value: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        damage(&mut value);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query_async(&mut raw)
            .await
            .unwrap();
        let loaded = store.load(&r.key).await;
        assert!(
            matches!(loaded, Err(StoreError::Corrupt { .. })),
            "{what}: {loaded:?}"
        );
        let updated = store.update(&r.key, &changes, later).await;
        assert!(
            matches!(updated, Err(StoreError::Corrupt { .. })),
            "{what}: {updated:?}"
        );
        let after: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(
            after, value,
            "{what}: the update wrote over a damaged value"
        );
    }
}

/// Percentile `p` (0–100) of `samples`, sorted in place.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

/// Writer `i`'s round `round` as a request makes it: load the session, then set the
/// writer's own key `w{i}` to the round's number.
async fn write_round(store: &RedisStore, key: &session_core::StorageKey, i: usize, round: usize) {
    store.load(key).await.unwrap().expect("the session is live");
    let mut changes = Changes::new();
    changes.set(format!("w{i}"), round.to_string().into_bytes());
    let later = Timestamp::now().saturating_add(Duration::from_secs(3600));
    assert!(store.update(key, &changes, later).await.unwrap());
}

/// `n` stores on the server at `url` under one `prefix`, as `n` application instances
/// would open them, each allowed `cas_retries` lost races.
async fn instances(url: &str, prefix: &str, n: usize, cas_retries: u32) -> Vec<Arc<RedisStore>> {
    let mut stores = Vec::new();
    for _ in 0..n {
        let store = RedisStore::builder(url)
            .key_prefix(prefix)
            .cas_retries(cas_retries)
            .open()
            .await
            .unwrap();
        stores.push(Arc::new(store));
    }
    stores
}

/// `writers` tasks spread over `stores` (one store per application instance), released
/// together, each making `rounds` rounds of [`write_round`] on the session `key`.
async fn race(
    stores: &[Arc<RedisStore>],
    key: session_core::StorageKey,
    writers: usize,
    rounds: usize,
) {
    let barrier = Arc::new(Barrier::new(writers));
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let (store, barrier) = (stores[i % stores.len()].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for round in 0..rounds {
                    write_round(&store, &key, i, round).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Every writer's key holds its last round: no write of [`race`] was lost.
fn assert_every_write(got: &Record, writers: usize, rounds: usize, what: &str) {
    for i in 0..writers {
        assert_eq!(
            got.data.get(&format!("w{i}")).map(Vec::as_slice),
            Some((rounds - 1).to_string().as_bytes()),
            "{what}: writer {i}'s key"
        );
    }
}

/// 64 writers of one hot session, spread over 4 stores (four application instances, each
/// its own connection), each writing its own key 20 times as a request does (load, then
/// update): every write is kept, with a small session and with a 16 KB one (whose writes
/// are staged). The same 64 writers on 64 sessions give the uncontended latency beside it
/// (printed for BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_of_one_hot_session_keep_every_write() {
    const WRITERS: usize = 64;
    const ROUNDS: usize = 20;
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let p = prefix();
    let mut stores = Vec::new();
    for _ in 0..4 {
        let store = open_at(&url, &p).await;
        stores.push(Arc::new(store));
    }
    for (base, hot) in [(1, true), (1, false), (16_384, true), (16_384, false)] {
        let base = vec![b'0'; base];
        let sessions: Vec<Record> = (0..if hot { 1 } else { WRITERS })
            .map(|_| record(&[("base", base.as_slice())]))
            .collect();
        for r in &sessions {
            stores[0].create(r).await.unwrap();
        }
        let barrier = Arc::new(Barrier::new(WRITERS));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                let key = sessions[i % sessions.len()].key;
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let mut latencies = Vec::with_capacity(ROUNDS);
                    for round in 0..ROUNDS {
                        let started = Instant::now();
                        write_round(&store, &key, i, round).await;
                        latencies.push(started.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let mut kept = 0;
        for r in &sessions {
            let got = stores[1].load(&r.key).await.unwrap().unwrap();
            assert_eq!(got.data["base"], base);
            for (name, value) in &got.data {
                if name != "base" {
                    assert_eq!(value, (ROUNDS - 1).to_string().as_bytes(), "{name}");
                    kept += 1;
                }
            }
        }
        assert_eq!(kept, WRITERS, "writers whose key is missing");
        let (p50, p99) = (
            percentile(&mut latencies, 50),
            percentile(&mut latencies, 99),
        );
        let label = if hot {
            "one hot session"
        } else {
            "64 sessions"
        };
        eprintln!(
            "redis cas, 64 writers on {label} of {} bytes: load + update p50 {p50:?}, p99 {p99:?}",
            base.len()
        );
        assert_eq!(staged_keys(&url, &p).await, 0, "staged keys left behind");
    }
}

/// The keys under `prefix` named as staged values (`…:staged:<id>`) on the standalone server.
async fn staged_keys(url: &str, prefix: &str) -> usize {
    let mut raw = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*:staged:*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    keys.len()
}

/// How many `RENAME`s the standalone server has run (`INFO commandstats`; a script's
/// commands count too): only a staged write renames.
async fn renames(url: &str) -> u64 {
    let mut raw = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut raw)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_rename:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// The 2 KB line, to the byte: a session whose stored value is 2 047 bytes is written by
/// the compare-and-set script's own `SET`, one of 2 048 bytes is staged and renamed over the
/// session. Seen in the session key's keyspace notifications (`set` against `rename_to`),
/// which only this test's keys send, so other tests on the server cannot disturb it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_2048_bytes_on_are_staged_and_smaller_ones_are_not() {
    use std::pin::Pin;

    use futures_core::Stream;

    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let p = prefix();
    let store = open_at(&url, &p).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let events: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut raw)
        .await
        .unwrap();
    let before = events.get(1).cloned().unwrap_or_default();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(format!("{before}Kg$"))
        .query_async(&mut raw)
        .await
        .unwrap();

    let r = record(&[("pad", &[b'x'; 1500][..])]);
    store.create(&r).await.unwrap();
    let key = store.redis_key(&r.key);
    let strlen = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        let key = key.clone();
        async move {
            let n: usize = redis::cmd("STRLEN")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .unwrap();
            n
        }
    };
    // The stored length is a constant plus the pad's (its length takes two bytes from 128
    // to 16 383).
    let overhead = strlen(&mut raw).await - 1500;
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .psubscribe(format!("__keyspace@*__:{key}"))
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();
    let expires = Timestamp::from_unix_millis(Timestamp::now().as_unix_millis() + 3_600_000);
    for (stored, staged) in [(2047, false), (2048, true), (2047, false)] {
        let mut pad = Changes::new();
        pad.set("pad", vec![b'y'; stored - overhead]);
        assert!(store.update(&r.key, &pad, expires).await.unwrap());
        assert_eq!(strlen(&mut raw).await, stored);
        // The write's events, up to the one that put the value in place.
        let mut seen = Vec::new();
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut messages).poll_next(cx));
            let msg = tokio::time::timeout(Duration::from_secs(5), next)
                .await
                .unwrap_or_else(|_| panic!("no `set` or `rename_to` for {stored} bytes: {seen:?}"))
                .unwrap();
            let event: String = msg.get_payload().unwrap();
            seen.push(event.clone());
            if event == "set" || event == "rename_to" {
                break;
            }
        }
        let want = if staged { "rename_to" } else { "set" };
        assert_eq!(
            seen.last().map(String::as_str),
            Some(want),
            "{stored} bytes: {seen:?}"
        );
    }
    assert_eq!(staged_keys(&url, &p).await, 0, "staged keys left behind");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(before)
        .query_async(&mut raw)
        .await
        .unwrap();
}

/// Values of 2 KB and more reach the server staged: a `SET` of a key of their own, which a
/// script renames over the session if no other writer came first. On a standalone server
/// and on a cluster (where the staged key must share the session's slot), writers in four
/// processes racing on one 8 KB session keep every write, the session keeps the expiry
/// last written, the store lists only the session (no staged key), and on the standalone
/// server every write was a rename and no staged key is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_sessions_are_written_staged_and_lose_nothing() {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 10;
    let mut setups: Vec<(Vec<Arc<RedisStore>>, Option<String>, String)> = Vec::new();
    if let Some(url) = server_url("SESSION_TEST_REDIS_URL") {
        let p = prefix();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(Arc::new(open_at(&url, &p).await));
        }
        setups.push((stores, Some(url), p));
    }
    if let Some(urls) = server_url("SESSION_TEST_REDIS_CLUSTER_URLS") {
        let p = prefix();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(Arc::new(
                RedisStore::cluster_builder(urls.split(','))
                    .key_prefix(p.clone())
                    .open()
                    .await
                    .unwrap(),
            ));
        }
        setups.push((stores, None, p));
    }
    for (stores, url, p) in setups {
        let base = vec![b'b'; 8192];
        let r = record(&[("base", base.as_slice())]);
        stores[0].create(&r).await.unwrap();
        let renamed_before = match &url {
            Some(url) => renames(url).await,
            None => 0,
        };
        race(&stores, r.key, WRITERS, ROUNDS).await;
        let expiry = Timestamp::from_unix_millis(Timestamp::now().as_unix_millis() + 7_200_000);
        let mut last = Changes::new();
        last.set("last", vec![1]);
        assert!(stores[3].update(&r.key, &last, expiry).await.unwrap());
        let got = stores[1].load(&r.key).await.unwrap().unwrap();
        assert_eq!(got.data["base"], base);
        assert_eq!(got.data["last"], [1]);
        assert_every_write(&got, WRITERS, ROUNDS, "staged");
        assert_eq!(got.expires_at, expiry);
        let page = stores[2].scan(None, 1000).await.unwrap();
        assert!(page.keys.iter().all(|k| *k == r.key), "{:?}", page.keys);
        if let Some(url) = url {
            let mut raw = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(stores[0].redis_key(&r.key))
                .query_async(&mut raw)
                .await
                .unwrap();
            assert_eq!(at, expiry.as_unix_millis(), "the session key's expiry");
            assert_eq!(staged_keys(&url, &p).await, 0, "staged keys left behind");
            // Each of the writes that answered `true` landed by a rename (other tests on the
            // server may add more, never fewer): the large value really was staged.
            let renamed = renames(&url).await - renamed_before;
            let writes = (WRITERS * ROUNDS + 1) as u64;
            assert!(
                renamed >= writes,
                "{renamed} renames for {writes} large writes"
            );
        }
    }
}

/// The stored value's tag: its last 8 bytes, little-endian.
async fn stored_tag(raw: &mut redis::aio::MultiplexedConnection, redis_key: &str) -> u64 {
    let value: Vec<u8> = redis::cmd("GET")
        .arg(redis_key)
        .query_async(raw)
        .await
        .unwrap();
    let tag: [u8; 8] = value[value.len() - 8..].try_into().unwrap();
    u64::from_le_bytes(tag)
}

/// A writer that keeps losing races claims the session and then wins: 16 writers in four
/// processes, allowed only 6 lost races each (without claims each write loses about
/// three races in four, so one in eight would fail), keep every write of a small and of a
/// staged 8 KB session, and no claim is left on the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_keeps_losing_claims_the_session() {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 10;
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let stores = instances(&url, &prefix(), 4, 6).await;
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for size in [1, 8192] {
        let base = vec![b'b'; size];
        let r = record(&[("base", base.as_slice())]);
        stores[0].create(&r).await.unwrap();
        race(&stores, r.key, WRITERS, ROUNDS).await;
        let got = stores[1].load(&r.key).await.unwrap().unwrap();
        assert_eq!(got.data["base"], base);
        assert_every_write(&got, WRITERS, ROUNDS, &format!("{size} bytes"));
        let tag = stored_tag(&mut raw, &stores[0].redis_key(&r.key)).await;
        assert_eq!(
            tag >> 63,
            0,
            "{size} bytes: a claim left on the value: {tag:#x}"
        );
    }
}

/// A claim on the session makes a write wait for it, and one that is never ended (its
/// writer died) is taken over once the write has waited the command timeout: the write
/// lands either way, with the session's other keys and its expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_waited_for_and_taken_over_when_left_behind() {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let store = Arc::new(
        RedisStore::builder(&url)
            .key_prefix(prefix())
            .command_timeout(TIMEOUT)
            .open()
            .await
            .unwrap(),
    );
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let claim = 0x8000_0000_0000_5a5a_u64;
    for ended in [true, false] {
        let r = record(&[("base", b"0")]);
        store.create(&r).await.unwrap();
        let key = store.redis_key(&r.key);
        let len: usize = redis::cmd("STRLEN")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let ttl_before: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let ordinary = stored_tag(&mut raw, &key).await;
        // Another process's claim, as its RETAG leaves it.
        let _: i64 = redis::cmd("SETRANGE")
            .arg(&key)
            .arg(len - 8)
            .arg(&claim.to_le_bytes()[..])
            .query_async(&mut raw)
            .await
            .unwrap();
        let started = Instant::now();
        let writer = {
            let store = store.clone();
            let key = r.key;
            tokio::spawn(async move {
                let mut changes = Changes::new();
                changes.set("mine", b"1".to_vec());
                let answer = store.update(&key, &changes, r.expires_at).await;
                (answer, started.elapsed())
            })
        };
        let ended_after = Duration::from_millis(100);
        if ended {
            // The claimant writes: an ordinary tag again, with its own key.
            tokio::time::sleep(ended_after).await;
            let mut theirs = Changes::new();
            theirs.set("theirs", b"1".to_vec());
            let _: i64 = redis::cmd("SETRANGE")
                .arg(&key)
                .arg(len - 8)
                .arg(&(ordinary + 7).to_le_bytes()[..])
                .query_async(&mut raw)
                .await
                .unwrap();
        }
        let (answer, took) = writer.await.unwrap();
        assert!(answer.unwrap(), "ended {ended}: the write landed");
        if ended {
            assert!(
                took >= ended_after && took < TIMEOUT,
                "the write waited for the claim to end: {took:?}"
            );
        } else {
            assert!(took >= TIMEOUT, "the claim was taken over early: {took:?}");
        }
        let got = store.load(&r.key).await.unwrap().unwrap();
        assert_eq!(got.data["mine"], b"1");
        assert_eq!(got.data["base"], b"0");
        let tag = stored_tag(&mut raw, &key).await;
        assert_eq!(tag >> 63, 0, "a claim left on the value: {tag:#x}");
        let ttl_after: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(ttl_after, ttl_before, "the session's expiry");
    }
}

/// When the retries run out the write fails with `Unavailable`, which says why, and is
/// not applied; no write that answered `true` is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_clearly_and_lose_nothing_that_succeeded() {
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let stores = instances(&url, &prefix(), 32, 1).await;
    let r = record(&[("base", b"0")]);
    stores[0].create(&r).await.unwrap();
    let mut failures = 0;
    let mut succeeded = std::collections::BTreeSet::new();
    // Bounded: at most 20 rounds of 32 racing writers, until some have failed.
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(stores.len()));
        let tasks: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (store, barrier, key) = (store.clone(), barrier.clone(), r.key);
                tokio::spawn(async move {
                    store.load(&key).await.unwrap();
                    let name = format!("r{round}w{i}");
                    let mut changes = Changes::new();
                    changes.set(name.clone(), vec![1]);
                    barrier.wait().await;
                    let later = Timestamp::now().saturating_add(Duration::from_secs(3600));
                    (name, store.update(&key, &changes, later).await)
                })
            })
            .collect();
        for task in tasks {
            match task.await.unwrap() {
                (name, Ok(true)) => {
                    succeeded.insert(name);
                }
                (_, Err(StoreError::Unavailable { source, .. })) => {
                    assert!(
                        source.to_string().contains("compare-and-set races"),
                        "{source}"
                    );
                    failures += 1;
                }
                (name, other) => panic!("{name}: {other:?}"),
            }
        }
        if failures > 0 && round > 0 {
            break;
        }
    }
    assert!(
        failures > 0,
        "32 racing writers with one try each never lost a race"
    );
    let got = stores[0].load(&r.key).await.unwrap().unwrap();
    let stored: std::collections::BTreeSet<String> =
        got.data.keys().filter(|k| *k != "base").cloned().collect();
    assert_eq!(
        stored, succeeded,
        "stored keys differ from the writes that succeeded"
    );
}

#[tokio::test]
async fn keys_are_hashed_and_hash_tagged() {
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let p = prefix();
    let store = open_at(&url, &p).await;
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
    // A large value, sent staged with its own script.
    let mut large = Changes::new();
    large.set("big", vec![b'x'; 4096]);
    flush(&mut raw).await;
    assert!(store.update(&r.key, &large, later).await.unwrap());
    large.remove("big");
    flush(&mut raw).await;
    assert!(store.update(&r.key, &large, later).await.unwrap());
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
