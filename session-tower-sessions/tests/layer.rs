//! tower-sessions' own layer on an axum router over our stores through the adapter: the
//! scenarios its users rely on (insert, read back, cycle id, flush, expiry), two concurrent
//! requests changing different keys, ids hashed at rest, and an axum-login round trip. On the
//! memory store always; on Redis and MongoDB (SecantusDB) when `cargo xtask test-backends`
//! provides them.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use session_core::suite::server_url;
use session_core::{IdGenerator, SessionId, SessionStore, UuidV4Generator};
use session_memory::MemoryStore;
use session_testing::Reply;
use session_tower_sessions::TowerSessionsStore;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

async fn send(app: &Router, path: &str, cookie: Option<&str>) -> Reply {
    session_testing::http::send(app, "GET", path, cookie).await
}

/// The routes: `/` adds one to `n`; `/n` reads it; `/cycle` cycles the id; `/flush` ends
/// the session; `/slow/{key}` loads, waits for `gate`, then sets `key`; `/keys` lists `a`, `b`.
fn app(store: Arc<dyn SessionStore>, expiry: Expiry, gate: Arc<tokio::sync::Barrier>) -> Router {
    async fn count(session: Session) -> String {
        let n: u64 = session.get("n").await.unwrap().unwrap_or(0) + 1;
        session.insert("n", n).await.unwrap();
        n.to_string()
    }
    async fn read(session: Session) -> String {
        let n: u64 = session.get("n").await.unwrap().unwrap_or(0);
        n.to_string()
    }
    let layer = SessionManagerLayer::new(TowerSessionsStore::new(store))
        .with_secure(false)
        .with_expiry(expiry);
    Router::new()
        .route("/", get(count))
        .route("/n", get(read))
        .route(
            "/cycle",
            get(|session: Session| async move {
                session.cycle_id().await.unwrap();
                "cycled"
            }),
        )
        .route(
            "/flush",
            get(|session: Session| async move {
                session.flush().await.unwrap();
                "flushed"
            }),
        )
        .route(
            "/slow/{key}",
            get(
                move |session: Session, axum::extract::Path(key): axum::extract::Path<String>| {
                    let gate = gate.clone();
                    async move {
                        // Load first, so both requests hold the same version.
                        let _: Option<u64> = session.get("n").await.unwrap();
                        gate.wait().await;
                        session.insert(&key, key.clone()).await.unwrap();
                        "set"
                    }
                },
            ),
        )
        .route(
            "/keys",
            get(|session: Session| async move {
                let a: Option<String> = session.get("a").await.unwrap();
                let b: Option<String> = session.get("b").await.unwrap();
                format!("{}|{}", a.unwrap_or_default(), b.unwrap_or_default())
            }),
        )
        .layer(layer)
}

/// The tower-sessions id in a `id=<value>` cookie, as our stores key it.
fn stored_key(cookie: &str) -> session_core::StorageKey {
    SessionId::parse(cookie.split_once('=').unwrap().1)
        .unwrap()
        .storage_key()
}

async fn scenarios(store: Arc<dyn SessionStore>) {
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let app = app(
        store.clone(),
        Expiry::OnInactivity(time::Duration::minutes(30)),
        gate,
    );

    // Insert, read back.
    let first = send(&app, "/", None).await;
    assert_eq!(first.body, "1");
    let cookie = first.first_cookie().expect("a new session sets its cookie");
    assert_eq!(send(&app, "/", Some(&cookie)).await.body, "2");
    assert_eq!(send(&app, "/n", Some(&cookie)).await.body, "2");
    // Ids hashed at rest: the record is under our storage key of tower-sessions' id.
    let record = store.load(&stored_key(&cookie)).await.unwrap();
    assert_eq!(
        record.expect("no record under the hashed id").data["n"],
        b"2"
    );

    // Cycle id: a new cookie, the data kept, the old id dead.
    let cycled = send(&app, "/cycle", Some(&cookie)).await;
    let new_cookie = cycled.first_cookie().expect("cycle_id sets a new cookie");
    assert_ne!(new_cookie, cookie);
    assert_eq!(send(&app, "/n", Some(&new_cookie)).await.body, "2");
    assert_eq!(send(&app, "/n", Some(&cookie)).await.body, "0");
    assert!(store.load(&stored_key(&cookie)).await.unwrap().is_none());

    // Flush: the record is gone and the cookie too.
    let flushed = send(&app, "/flush", Some(&new_cookie)).await;
    assert_eq!(flushed.status, 200);
    assert!(
        flushed.first_cookie().is_some_and(|c| c.ends_with('=')),
        "the cookie was not removed"
    );
    assert_eq!(send(&app, "/n", Some(&new_cookie)).await.body, "0");
    assert!(
        store
            .load(&stored_key(&new_cookie))
            .await
            .unwrap()
            .is_none()
    );

    // Two concurrent requests change different keys of one session: both writes are kept.
    let cookie = send(&app, "/", None).await.cookie();
    let (a, b) = tokio::join!(
        send(&app, "/slow/a", Some(&cookie)),
        send(&app, "/slow/b", Some(&cookie))
    );
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(
        send(&app, "/keys", Some(&cookie)).await.body,
        "a|b",
        "a concurrent write to another key was lost"
    );
    assert_eq!(send(&app, "/n", Some(&cookie)).await.body, "1");

    // Expiry: an idle session ends after tower-sessions' inactivity period.
    let short = self::app(
        store.clone(),
        Expiry::OnInactivity(time::Duration::seconds(1)),
        Arc::new(tokio::sync::Barrier::new(2)),
    );
    let cookie = send(&short, "/", None).await.cookie();
    assert_eq!(send(&short, "/n", Some(&cookie)).await.body, "1");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        send(&short, "/n", Some(&cookie)).await.body,
        "0",
        "the session outlived its expiry"
    );
}

#[tokio::test]
async fn tower_sessions_layer_on_the_memory_store() {
    scenarios(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn tower_sessions_layer_on_redis() {
    let Some(url) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("ts{}:", UuidV4Generator.generate().as_str());
    let store = session_redis::RedisStore::builder(url.as_str())
        .key_prefix(prefix.clone())
        .open()
        .await
        .unwrap();
    scenarios(Arc::new(store)).await;
    // No key under the prefix holds a tower-sessions id in plain text: they are all hashes.
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the scenarios left no session");
    for key in keys {
        let rest = key.strip_prefix(&prefix).unwrap();
        assert!(
            rest.rsplit(':').next().unwrap().len() >= 64,
            "{key} is not a hashed key"
        );
    }
}

#[tokio::test]
async fn tower_sessions_layer_on_mongodb() {
    let Some(url) = server_url("SESSION_TEST_MONGO_URL") else {
        return;
    };
    let collection = format!(
        "ts{}",
        UuidV4Generator.generate().as_str().replace('-', "_")
    );
    let store = session_mongo::MongoStore::builder(url.as_str())
        .collection(collection)
        .open()
        .await
        .unwrap();
    scenarios(Arc::new(store)).await;
}
