//! session-mongo's integration tests against the server at `SESSION_TEST_MONGO_URL` (under
//! `cargo xtask test-backends`, SecantusDB; point it at a real mongod to test against one).

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{Bson, doc};
use session_core::suite::{record, server_url};
use session_core::{Changes, IdGenerator, SessionStore, StoreError, Timestamp, UuidV4Generator};
use session_mongo::{MongoStore, escape_key};

/// A store on a collection of its own.
async fn fresh() -> Option<MongoStore> {
    let url = server_url("SESSION_TEST_MONGO_URL")?;
    let name = format!(
        "s_{}",
        UuidV4Generator.generate().as_str().replace('-', "_")
    );
    Some(
        MongoStore::builder(url)
            .database("session_tests")
            .collection(name)
            .open()
            .await
            .expect("connect"),
    )
}

async fn shared() -> Option<Arc<dyn SessionStore>> {
    Some(Arc::new(fresh().await?))
}

mod suite {
    session_core::conformance_tests!(|| crate::shared());
}

/// A store in the application's own database handle.
async fn own_database() -> Option<Arc<dyn SessionStore>> {
    let url = server_url("SESSION_TEST_MONGO_URL")?;
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let name = format!(
        "d_{}",
        UuidV4Generator.generate().as_str().replace('-', "_")
    );
    let store = MongoStore::with_database(client.database("session_tests"))
        .collection(name)
        .open()
        .await
        .expect("a store in the app's database");
    Some(Arc::new(store))
}

mod in_the_apps_database {
    session_core::conformance_tests!(|| crate::own_database());
}

#[tokio::test]
async fn a_store_in_the_apps_own_collection_uses_it_and_indexes_it() {
    let Some(url) = server_url("SESSION_TEST_MONGO_URL") else {
        return;
    };
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let name = format!(
        "c_{}",
        UuidV4Generator.generate().as_str().replace('-', "_")
    );
    let collection = client
        .database("session_tests")
        .collection::<mongodb::bson::Document>(&name);
    let store = MongoStore::with_collection(collection.clone())
        .open()
        .await
        .unwrap();
    let r = record(&[("k", b"v")]);
    store.create(&r).await.unwrap();
    assert_eq!(store.load(&r.key).await.unwrap(), Some(r.clone()));
    assert_eq!(collection.count_documents(doc! {}).await.unwrap(), 1);
    let mut indexes = collection.list_index_names().await.unwrap();
    indexes.sort();
    assert!(
        indexes.iter().any(|n| n == "session_expires_at_ttl"),
        "{indexes:?}"
    );
}

#[tokio::test]
async fn the_ttl_index_exists_once_after_open() {
    let Some(store) = fresh().await else { return };
    let reopened = MongoStore::builder(server_url("SESSION_TEST_MONGO_URL").unwrap())
        .database("session_tests")
        .collection(store.collection().name())
        .open()
        .await
        .unwrap();
    let mut cursor = reopened.collection().list_indexes().await.unwrap();
    let mut ttl = Vec::new();
    while cursor.advance().await.unwrap() {
        let index = cursor.deserialize_current().unwrap();
        if index.keys == doc! { "expires_at": 1 } {
            let seconds = index.options.and_then(|o| o.expire_after);
            ttl.push(seconds);
        }
    }
    assert_eq!(
        ttl,
        vec![Some(Duration::ZERO)],
        "want exactly one TTL index with expireAfterSeconds 0"
    );
}

#[tokio::test]
async fn hostile_key_names_are_stored_escaped_and_touch_nothing_else() {
    let Some(store) = fresh().await else { return };
    let names = [
        "a.b",
        "$where",
        "$",
        "..",
        "",
        "nul\0",
        "data",
        "_id",
        "expires_at",
        "%2E",
    ];
    let r = record(&[("keep", b"me")]);
    store.create(&r).await.unwrap();
    let mut changes = Changes::new();
    for (i, name) in names.iter().enumerate() {
        changes.set(*name, vec![i as u8]);
    }
    let later = Timestamp::now().saturating_add(Duration::from_secs(120));
    assert!(store.update(&r.key, &changes, later).await.unwrap());

    let raw = store
        .collection()
        .find_one(doc! { "_id": r.key.to_hex().as_str() })
        .await
        .unwrap()
        .unwrap();
    let top: Vec<&str> = raw.keys().map(String::as_str).collect();
    assert_eq!(
        top,
        ["_id", "v", "created_at", "expires_at", "owner", "data"],
        "a key name escaped the data field"
    );
    let data = raw.get_document("data").unwrap();
    for name in names {
        assert!(
            data.contains_key(escape_key(name)),
            "{name:?} not stored escaped"
        );
    }
    let got = store.load(&r.key).await.unwrap().unwrap();
    assert_eq!(got.data.len(), names.len() + 1);
    assert_eq!(got.data["keep"], b"me");
    assert_eq!(got.expires_at, later);
}

#[tokio::test]
async fn documents_of_the_wrong_shape_are_corrupt() {
    let Some(store) = fresh().await else { return };
    let later = mongodb::bson::DateTime::from_millis(Timestamp::now().as_unix_millis() + 60_000);
    let now = mongodb::bson::DateTime::now();
    let shapes = [
        doc! { "v": 1, "created_at": "yesterday", "expires_at": later, "data": {} },
        doc! { "v": 1, "created_at": now, "expires_at": later, "data": "not a document" },
        doc! { "v": 1, "created_at": now, "expires_at": later, "data": { "k": 5 } },
        doc! { "v": 1, "created_at": now, "expires_at": later, "data": { "a.b": Bson::Binary(mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![] }) } },
        doc! { "v": 3, "created_at": now, "expires_at": later, "data": {} },
        doc! { "v": 2, "created_at": now, "expires_at": later, "data": {}, "counters": 5 },
        doc! { "v": 2, "created_at": now, "expires_at": later, "data": {}, "counters": { "k": { "n": "many", "c": "bincode" } } },
        doc! { "v": 2, "created_at": now, "expires_at": later, "data": {}, "counters": { "k": { "n": 1_i64, "c": "yaml" } } },
        doc! { "v": 1, "created_at": now, "expires_at": later, "owner": 7, "data": {} },
    ];
    for mut shape in shapes {
        let key = UuidV4Generator.generate().storage_key();
        shape.insert("_id", key.to_hex().as_str());
        store.collection().insert_one(shape.clone()).await.unwrap();
        let loaded = store.load(&key).await;
        assert!(
            matches!(loaded, Err(StoreError::Corrupt { .. })),
            "{shape}: {loaded:?}"
        );
    }
}

/// `load` reads by `_id` alone and applies the rest of the live filter itself: an expired
/// document, a forward pointer and an expiry that is not a date are no session (as the
/// server's filter made them), even when the rest of the document would be corrupt; a live
/// one loads.
#[tokio::test]
async fn load_sees_only_live_sessions_as_the_filter_did() {
    let Some(store) = fresh().await else { return };
    let later = mongodb::bson::DateTime::from_millis(Timestamp::now().as_unix_millis() + 60_000);
    let earlier = mongodb::bson::DateTime::from_millis(Timestamp::now().as_unix_millis() - 1);
    let now = mongodb::bson::DateTime::now();
    let absent = [
        doc! { "v": 1, "created_at": now, "expires_at": earlier, "data": {} },
        doc! { "v": 1, "created_at": "damaged", "expires_at": earlier, "data": 5 },
        doc! { "v": 1, "created_at": now, "expires_at": later, "data": {}, "forward_to": "abc", "forward_until": later },
        doc! { "forward_to": Bson::Null, "expires_at": later },
        doc! { "v": 1, "created_at": now, "expires_at": "tomorrow", "data": {} },
        doc! { "v": 1, "created_at": now, "expires_at": Timestamp::now().as_unix_millis() + 60_000, "data": {} },
    ];
    for mut shape in absent {
        let key = UuidV4Generator.generate().storage_key();
        shape.insert("_id", key.to_hex().as_str());
        store.collection().insert_one(shape.clone()).await.unwrap();
        assert_eq!(store.load(&key).await.unwrap(), None, "{shape}");
    }
    let key = UuidV4Generator.generate().storage_key();
    let live = doc! { "_id": key.to_hex().as_str(), "v": 1, "created_at": now, "expires_at": later, "data": {} };
    store.collection().insert_one(live).await.unwrap();
    let loaded = store
        .load(&key)
        .await
        .unwrap()
        .expect("a live session loads");
    assert_eq!(loaded.expires_at.as_unix_millis(), later.timestamp_millis());
}

#[tokio::test]
async fn a_session_over_the_document_limit_is_too_large() {
    let Some(store) = fresh().await else { return };
    let big = record(&[("big", &vec![1u8; 17 * 1024 * 1024])]);
    assert!(matches!(
        store.create(&big).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.load(&big.key).await.unwrap(), None);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_within_the_timeout() {
    if server_url("SESSION_TEST_MONGO_URL").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let result = MongoStore::builder(format!("mongodb://127.0.0.1:{port}"))
        .command_timeout(Duration::from_millis(300))
        .open()
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// An increment is an `$inc` of a pending total beside the value, which `load` folds in; a
/// write of the key drops the total.
#[tokio::test]
async fn increments_are_a_server_side_inc_folded_in_on_load() {
    let Some(url) = server_url("SESSION_TEST_MONGO_URL") else {
        return;
    };
    let name = format!(
        "inc_{}",
        UuidV4Generator.generate().as_str().replace('-', "_")
    );
    let store = MongoStore::builder(&url)
        .database("session_tests")
        .collection(name.clone())
        .open()
        .await
        .unwrap();
    let raw = mongodb::Client::with_uri_str(&url)
        .await
        .unwrap()
        .database("session_tests")
        .collection::<mongodb::bson::Document>(&name);
    let codec = session_core::Codec::Bincode;
    let r = record(&[("c", &codec.encode(&40i64).unwrap())]);
    store.create(&r).await.unwrap();
    let mut add = Changes::new();
    add.increment("c", 2, codec);
    assert!(store.update(&r.key, &add, r.expires_at).await.unwrap());
    let doc = raw
        .find_one(doc! { "_id": r.key.to_hex().as_str() })
        .await
        .unwrap()
        .unwrap();
    let counter = doc
        .get_document("counters")
        .unwrap()
        .get_document("c")
        .unwrap();
    assert_eq!(counter.get("n"), Some(&Bson::Int64(2)));
    assert_eq!(counter.get_str("c"), Ok("bincode"));
    assert_eq!(doc.get("v"), Some(&Bson::Int32(2)));
    let loaded = store.load(&r.key).await.unwrap().unwrap();
    assert_eq!(codec.decode::<i64>(&loaded.data["c"]).unwrap(), 42);

    let mut set = Changes::new();
    set.set("c", codec.encode(&7i64).unwrap());
    assert!(store.update(&r.key, &set, r.expires_at).await.unwrap());
    let doc = raw
        .find_one(doc! { "_id": r.key.to_hex().as_str() })
        .await
        .unwrap()
        .unwrap();
    assert!(
        doc.get_document("counters")
            .map_or(true, |c| !c.contains_key("c")),
        "a write left the old total: {doc:?}"
    );
    let loaded = store.load(&r.key).await.unwrap().unwrap();
    assert_eq!(codec.decode::<i64>(&loaded.data["c"]).unwrap(), 7);
}

/// An update of more than 32 keys that also increments takes the compare-and-set path: 8
/// tasks saving such updates at once still lose no increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_updates_that_increment_lose_nothing() {
    let Some(store) = fresh().await else { return };
    let store = Arc::new(store);
    let codec = session_core::Codec::Bincode;
    let r = record(&[]);
    store.create(&r).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (store, key, expires_at) = (store.clone(), r.key, r.expires_at);
            tokio::spawn(async move {
                for round in 0..5 {
                    let mut changes = Changes::new();
                    for k in 0..40 {
                        changes.set(format!("t{task}-{k}"), vec![round]);
                    }
                    changes.increment("hits", 1, codec);
                    assert!(store.update(&key, &changes, expires_at).await.unwrap());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let loaded = store.load(&r.key).await.unwrap().unwrap();
    assert_eq!(codec.decode::<i64>(&loaded.data["hits"]).unwrap(), 40);
    assert_eq!(loaded.data.len(), 1 + 8 * 40);
}
