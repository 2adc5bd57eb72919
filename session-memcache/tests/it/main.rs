//! session-memcache's integration tests, against real servers: the conformance suite on a
//! store spanning `SESSION_TEST_MEMCACHED_SERVERS` (comma-separated), and, with `memcached`
//! on PATH, tests that stop and restart servers they own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::suite::{record, server_url};
use session_core::{
    Changes, IdGenerator, Record, SessionStore, StoreError, Timestamp, UuidV4Generator, envelope,
};
use session_memcache::MemcacheStore;
use session_testing::{OwnedServer, ServerKind, free_port};

fn prefix() -> String {
    format!("t{}:", UuidV4Generator.generate().as_str())
}

/// A store over the test servers, with a key prefix of its own.
fn two_server_store() -> Option<MemcacheStore> {
    let servers = server_url("SESSION_TEST_MEMCACHED_SERVERS")?;
    Some(
        MemcacheStore::builder(servers.split(','))
            .key_prefix(prefix())
            .build()
            .unwrap(),
    )
}

async fn shared() -> Option<Arc<dyn SessionStore>> {
    Some(Arc::new(two_server_store()?))
}

mod two_servers {
    session_core::conformance_tests!(|| crate::shared(), owner_index = false);
}

#[tokio::test]
async fn an_oversized_session_is_too_large_and_nothing_is_stored() {
    let Some(store) = two_server_store() else {
        return;
    };
    let big = record(&[("big", &vec![7u8; 2 * 1024 * 1024])]);
    assert!(matches!(
        store.create(&big).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.load(&big.key).await.unwrap(), None);

    let small = record(&[("a", b"1")]);
    store.create(&small).await.unwrap();
    let mut changes = Changes::new();
    changes.set("big", vec![1u8; 1024 * 1024]);
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    assert!(matches!(
        store.update(&small.key, &changes, later).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(
        store.load(&small.key).await.unwrap().unwrap(),
        small,
        "a failed update changed the session"
    );
}

/// The limit is memcached's own (1 MiB at the default `-I`) less only what memcached counts
/// beside the value: a session of exactly the limit is stored, one byte more is refused.
#[tokio::test]
async fn the_size_limit_is_the_servers_item_limit() {
    let Some(store) = two_server_store() else {
        return;
    };
    let limit = match store.create(&record(&[("big", &vec![0u8; 2 << 20])])).await {
        Err(StoreError::TooLarge { limit, .. }) => limit,
        other => panic!("expected TooLarge, got {other:?}"),
    };
    let overhead = 1024 * 1024 - limit;
    assert!(
        overhead < 59 + 250,
        "{overhead} bytes of a 1 MiB item are not usable"
    );
    // A record whose envelope is exactly `size` bytes.
    let sized = |size: usize| {
        let mut r = record(&[("big", &[])]);
        let mut value = size - envelope::len(&r);
        for _ in 0..4 {
            r.data.insert("big".into(), vec![5u8; value]);
            if envelope::len(&r) == size {
                break;
            }
            value = (value + size).saturating_sub(envelope::len(&r));
        }
        assert_eq!(envelope::len(&r), size);
        r
    };
    let fits = sized(limit);
    store.create(&fits).await.unwrap();
    assert_eq!(store.load(&fits.key).await.unwrap(), Some(fits));
    let over = sized(limit + 1);
    assert!(matches!(
        store.create(&over).await,
        Err(StoreError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn the_per_user_index_is_unsupported_and_says_by_whom() {
    let Some(store) = two_server_store() else {
        return;
    };
    let err = store.sessions_of("alice").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the memcache session store does not support sessions_of"
    );
    assert!(matches!(
        store.delete_sessions_of("alice").await,
        Err(StoreError::Unsupported {
            store: "memcache",
            ..
        })
    ));
}

/// A session loads as the checked body of its envelope, its values left encoded for the
/// manager to read in place.
#[tokio::test]
async fn load_body_answers_the_envelopes_body() {
    if let Some(store) = shared().await {
        session_core::suite::check_loads_bodies(store).await;
    }
}

#[tokio::test]
async fn an_item_of_another_format_is_corrupt() {
    let Some(store) = two_server_store() else {
        return;
    };
    let r = record(&[("a", b"1")]);
    let mut foreign = session_core::envelope::encode(&r);
    foreign[4] = 9; // another envelope version
    let mut conn = tokio::net::TcpStream::connect(store.server_for(&r.key))
        .await
        .unwrap();
    let mut protocol = memcache_async::ascii::Protocol::new(&mut conn);
    protocol
        .add(store.item_key(&r.key), &foreign, 60)
        .await
        .unwrap();
    assert!(matches!(
        store.load(&r.key).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.load_body(&r.key).await,
        Err(StoreError::Corrupt { .. })
    ));
    let mut changes = Changes::new();
    changes.set("b", b"2".to_vec());
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    assert!(matches!(
        store.update(&r.key, &changes, later).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_evenly_and_one_server_down_affects_only_its_share() {
    if server_url("SESSION_TEST_MEMCACHED_SERVERS").is_none() {
        return;
    }
    let (pa, pb) = (free_port(), free_port());
    let mut a = OwnedServer::start(ServerKind::Memcached, pa).await;
    let _b = OwnedServer::start(ServerKind::Memcached, pb).await;
    let addr_a = format!("127.0.0.1:{pa}");
    let timeout = Duration::from_millis(300);
    let store = MemcacheStore::builder([addr_a.clone(), format!("127.0.0.1:{pb}")])
        .command_timeout(timeout)
        .build()
        .unwrap();

    // Distribution: 10 000 sessions within ±15 % of even.
    let records: Vec<Record> = (0..10_000).map(|_| record(&[("a", b"1")])).collect();
    let on_a = records
        .iter()
        .filter(|r| store.server_for(&r.key) == addr_a)
        .count();
    assert!(
        (4250..=5750).contains(&on_a),
        "{on_a} of 10 000 sessions on one of two servers"
    );
    for r in records.iter().take(400) {
        store.create(r).await.unwrap();
    }

    a.kill().await;
    let later = Timestamp::now().saturating_add(Duration::from_secs(60));
    let mut changes = Changes::new();
    changes.set("b", b"2".to_vec());
    let (mut served, mut refused) = (0, 0);
    for r in records.iter().take(400) {
        let started = Instant::now();
        let on_down = store.server_for(&r.key) == addr_a;
        let result = store.update(&r.key, &changes, later).await;
        assert!(
            started.elapsed() < timeout + Duration::from_millis(500),
            "a call hung"
        );
        if on_down {
            assert!(
                matches!(result, Err(StoreError::Unavailable { .. })),
                "{result:?}"
            );
            refused += 1;
        } else {
            assert!(result.unwrap(), "a session on the live server failed");
            assert!(store.load(&r.key).await.unwrap().is_some());
            served += 1;
        }
    }
    assert!(
        served > 100 && refused > 100,
        "served {served}, refused {refused}"
    );

    // Back on the same port: the same store object serves it again (its data is gone).
    a.restart().await;
    let fresh: Vec<Record> = std::iter::repeat_with(|| record(&[("a", b"1")]))
        .filter(|r| store.server_for(&r.key) == addr_a)
        .take(20)
        .collect();
    for r in &fresh {
        store
            .create(r)
            .await
            .expect("the restarted server serves again");
        assert_eq!(store.load(&r.key).await.unwrap().as_ref(), Some(r));
    }
}

#[tokio::test]
async fn adding_a_server_moves_about_a_third_of_the_sessions() {
    let build = |n: usize| {
        MemcacheStore::builder((0..n).map(|i| format!("10.0.0.{i}:11211")))
            .build()
            .unwrap()
    };
    let (two, three) = (build(2), build(3));
    let keys: Vec<_> = (0..10_000)
        .map(|_| UuidV4Generator.generate().storage_key())
        .collect();
    let moved = keys
        .iter()
        .filter(|k| two.server_for(k) != three.server_for(k))
        .count();
    // Rendezvous hashing moves only the new server's share: ~1/3.
    assert!(
        (2800..=3900).contains(&moved),
        "{moved} of 10 000 sessions moved"
    );
    assert!(keys.iter().all(
        |k| two.server_for(k) == three.server_for(k) || three.server_for(k) == "10.0.0.2:11211"
    ));
}

/// A scan walks the servers' hash tables (`metadump hash`), so sessions the servers move
/// between LRU segments while it runs (because they were just read) are still listed,
/// every one of them, scan after scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_lists_every_session_while_they_are_being_read() {
    let Some(store) = two_server_store() else {
        return;
    };
    let mut keys = Vec::new();
    for n in 0..300u32 {
        let r = record(&[("n", &n.to_le_bytes()[..])]);
        store.create(&r).await.unwrap();
        keys.push(r.key);
    }
    keys.sort();
    for round in 0..4 {
        // Reads mark items active; the server's LRU maintainer moves them meanwhile.
        for key in keys.iter().step_by(round + 1) {
            assert!(store.load(key).await.unwrap().is_some());
        }
        let mut listed = Vec::new();
        let mut cursor = None;
        for _ in 0..1000 {
            let page = store.scan(cursor.as_ref(), 64).await.unwrap();
            listed.extend(page.keys);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        listed.sort();
        assert_eq!(
            listed, keys,
            "round {round}: the scan missed or repeated sessions"
        );
    }
}

/// A `tracing` writer that keeps what is logged, for the test that reads the warning.
#[derive(Clone, Default)]
struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// memcached keeps no per-user index, so `max_sessions_per_owner` cannot be enforced: as
/// the README says, every login still succeeds (all three sessions stay live) and a warning
/// is logged.
#[tokio::test]
async fn the_owner_cap_cannot_be_enforced_logins_succeed_and_a_warning_is_logged() {
    let Some(store) = two_server_store() else {
        return;
    };
    let logged = Logged::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logged = logged.clone();
            move || logged.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let manager = session_core::SessionManager::builder(store)
        .max_sessions_per_owner(Some(1))
        .build();
    let mut ids = Vec::new();
    for device in 0..3u8 {
        let session = manager.create();
        session.insert("device", device).unwrap();
        session.set_owner(Some("alice"));
        manager.save(&session).await.expect("the login succeeds");
        ids.push(session.id());
    }
    for id in &ids {
        assert!(
            manager.load(id).await.unwrap().is_some(),
            "a login's session was ended"
        );
    }
    let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("WARN")
            && text.contains("max_sessions_per_owner: the owner's sessions could not be listed"),
        "no warning was logged: {text:?}"
    );
}
