//! Every backend through the layer: hostile cookies never reach the store, and a damaged
//! stored record starts a fresh session (with a new cookie) instead of an error on every
//! request. Server backends use the `SESSION_TEST_*` addresses `cargo xtask test-backends`
//! sets.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use session_core::suite::{ProbeStore, server_url};
use session_core::{
    IdGenerator, SessionId, SessionManager, SessionStore, StorageKey, UuidV4Generator,
};
use session_tower::{Key, SessionLayer};

use session_testing::http::{counter, send};

type Damage = Box<dyn Fn(StorageKey) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Backend {
    name: &'static str,
    store: Arc<dyn SessionStore>,
    /// Damages the stored record in the backend's own way; `None` where it cannot be.
    damage: Option<Damage>,
    _dir: Option<tempfile::TempDir>,
}

fn prefix() -> String {
    format!("tower{}:", UuidV4Generator.generate().as_str())
}

async fn backends() -> Vec<Backend> {
    let mut all = vec![Backend {
        name: "memory",
        store: Arc::new(session_memory::MemoryStore::default()),
        damage: None,
        _dir: None,
    }];

    let dir = tempfile::tempdir().unwrap();
    let disk = session_disk::DiskStore::open(dir.path().join("s")).unwrap();
    let paths = disk.clone();
    all.push(Backend {
        name: "disk",
        store: Arc::new(disk),
        damage: Some(Box::new(move |key| {
            let path = paths.path_of(&key);
            Box::pin(async move {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            })
        })),
        _dir: Some(dir),
    });

    if let Some(url) = server_url("SESSION_TEST_REDIS_URL") {
        let store = session_redis::RedisStore::builder(&url)
            .key_prefix(prefix())
            .open()
            .await
            .unwrap();
        let raw = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys = store.clone();
        all.push(Backend {
            name: "redis",
            store: Arc::new(store),
            damage: Some(Box::new(move |key| {
                let (mut raw, name) = (raw.clone(), keys.redis_key(&key));
                Box::pin(async move {
                    // One byte of the envelope flipped (its checksum no longer matches).
                    let mut value: Vec<u8> = redis::cmd("GET")
                        .arg(&name)
                        .query_async(&mut raw)
                        .await
                        .unwrap();
                    value[12] ^= 0x20;
                    let _: () = redis::cmd("SET")
                        .arg(&name)
                        .arg(value)
                        .arg("KEEPTTL")
                        .query_async(&mut raw)
                        .await
                        .unwrap();
                })
            })),
            _dir: None,
        });
    }

    if let Some(servers) = server_url("SESSION_TEST_MEMCACHED_SERVERS") {
        let store = session_memcache::MemcacheStore::builder(servers.split(','))
            .key_prefix(prefix())
            .build()
            .unwrap();
        let items = store.clone();
        all.push(Backend {
            name: "memcached",
            store: Arc::new(store),
            damage: Some(Box::new(move |key| {
                let (addr, item) = (items.server_for(&key).to_owned(), items.item_key(&key));
                let store = items.clone();
                Box::pin(async move {
                    // Rewrite the item as an envelope of another format version.
                    let record = store.load(&key).await.unwrap().unwrap();
                    let mut foreign = session_core::envelope::encode(&record);
                    foreign[4] = 9;
                    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let mut protocol = memcache_async::ascii::Protocol::new(&mut conn);
                    let (bytes, cas) = protocol.gets_cas(item.as_bytes()).await.unwrap();
                    assert!(!bytes.is_empty());
                    assert!(protocol.cas(&item, &foreign, cas, 600).await.unwrap());
                })
            })),
            _dir: None,
        });
    }

    if let Some(url) = server_url("SESSION_TEST_MONGO_URL") {
        let collection = format!(
            "tower_{}",
            UuidV4Generator.generate().as_str().replace('-', "_")
        );
        let store = session_mongo::MongoStore::builder(url)
            .database("session_tests")
            .collection(collection)
            .open()
            .await
            .unwrap();
        let coll = store.collection().clone();
        all.push(Backend {
            name: "mongodb",
            store: Arc::new(store),
            damage: Some(Box::new(move |key| {
                let coll = coll.clone();
                Box::pin(async move {
                    let update =
                        mongodb::bson::doc! { "$set": { "created_at": "not a date", "data.n": 5 } };
                    let r = coll
                        .update_one(mongodb::bson::doc! { "_id": key.to_hex().as_str() }, update)
                        .await
                        .unwrap();
                    assert_eq!(r.matched_count, 1);
                })
            })),
            _dir: None,
        });
    }
    all
}

fn app(store: Arc<dyn SessionStore>) -> Router {
    let manager = SessionManager::builder_arc(store).build();
    Router::new()
        .route("/", get(counter))
        .layer(SessionLayer::new(manager, Key::generate()))
}

/// The session id inside a signed `id=<44-char signature><id>` cookie pair.
fn id_of(cookie: &str) -> SessionId {
    // The cookie's value is `<id>.<expires>.<tag>`.
    let value = cookie.split_once('=').unwrap().1;
    SessionId::parse(value.split('.').next().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cookies_never_reach_any_store() {
    let long = format!("id={}", "A".repeat(10 * 1024));
    let hostile = [
        "id=",
        long.as_str(),
        "id=AAAAAAAAAAAAAAAAAAAA%0D%0Aflush_all%0D%0A",
        "id=AAAAAAAAAAAA AAAAAAAAAA",
        "id=../../../../etc/passwd",
        "id=AAAAAAAAAAAAAAAAAAAAAA",
        "id=aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8=AAAAAAAAAAAAAAAAAAAAAA",
    ];
    for backend in backends().await {
        let probe = Arc::new(ProbeStore::new(backend.store.clone()));
        let app = app(probe.clone());
        for cookie in hostile {
            let before = probe.calls();
            let reply = send(&app, "GET", "/", Some(cookie)).await;
            assert_eq!(reply.status, 200, "{}: {cookie}", backend.name);
            assert_eq!(reply.body, "1", "{}: {cookie}", backend.name);
            assert_eq!(
                probe.calls(),
                before + 1,
                "{}: {cookie} reached the store (only the create may)",
                backend.name
            );
        }
        // Non-UTF-8 bytes in the header, too.
        let reply = session_testing::http::call(
            app.clone(),
            "GET",
            "/",
            Some(b"id=\xff\xfe\xfdAAAAAAAAAAAAAAAAAAAAAA"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", backend.name);
        assert_eq!(reply.body, "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_on_any_backend_starts_a_fresh_session() {
    for backend in backends().await {
        let Some(damage) = &backend.damage else {
            continue;
        };
        let app = app(backend.store.clone());
        let first = send(&app, "GET", "/", None).await.cookie();
        assert_eq!(
            send(&app, "GET", "/", Some(&first)).await.body,
            "2",
            "{}",
            backend.name
        );
        damage(id_of(&first).storage_key()).await;
        for _ in 0..2 {
            let reply = send(&app, "GET", "/", Some(&first)).await;
            assert_eq!(
                reply.status, 200,
                "{}: a damaged record is an error page",
                backend.name
            );
            assert_eq!(
                reply.body, "1",
                "{}: the damaged session was served",
                backend.name
            );
            let fresh = reply.cookie();
            assert_ne!(fresh, first, "{}", backend.name);
            assert_eq!(
                send(&app, "GET", "/", Some(&fresh)).await.body,
                "2",
                "{}: the fresh session does not work",
                backend.name
            );
        }
    }
}
