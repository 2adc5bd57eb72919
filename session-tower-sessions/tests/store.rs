//! The adapter through tower-sessions' store trait itself: which saves are per-key, which are
//! whole-record writes, and that a save never brings back a deleted session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use session_core::{SessionId, SessionStore as _};
use session_memory::MemoryStore;
use session_tower_sessions::TowerSessionsStore;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};

fn record(id: Id, pairs: &[(&str, i64)]) -> Record {
    Record {
        id,
        data: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect::<HashMap<_, _>>(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(30),
    }
}

fn with(base: &Record, key: &str, value: i64) -> Record {
    let mut changed = base.clone();
    changed
        .data
        .insert(key.to_owned(), serde_json::json!(value));
    changed
}

async fn data(store: &TowerSessionsStore, id: &Id) -> Vec<(String, i64)> {
    let record = store.load(id).await.unwrap().expect("the session");
    let mut pairs: Vec<(String, i64)> = record
        .data
        .into_iter()
        .map(|(k, v)| (k, v.as_i64().unwrap()))
        .collect();
    pairs.sort();
    pairs
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

async fn created(store: &TowerSessionsStore, pairs: &[(&str, i64)]) -> Record {
    let mut fresh = record(Id::default(), pairs);
    store.create(&mut fresh).await.unwrap();
    fresh
}

#[tokio::test]
async fn two_saves_from_one_version_keep_both_keys() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default()));
    let base = created(&store, &[("n", 0)]).await;
    let a = store.load(&base.id).await.unwrap().unwrap();
    let b = store.load(&base.id).await.unwrap().unwrap();
    store.save(&with(&a, "a", 1)).await.unwrap();
    store.save(&with(&b, "b", 2)).await.unwrap();
    assert_eq!(
        data(&store, &base.id).await,
        pairs(&[("a", 1), ("b", 2), ("n", 0)])
    );
}

/// A loads, B loads, A saves, C loads the new version, B saves: B's save is compared with the
/// load it differs from least (its own), so A's write survives.
#[tokio::test]
async fn a_load_between_another_load_and_its_save_does_not_undo_a_write() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default()));
    let base = created(&store, &[("n", 0), ("m", 0)]).await;
    let a = store.load(&base.id).await.unwrap().unwrap();
    let b = store.load(&base.id).await.unwrap().unwrap();
    store.save(&with(&a, "n", 1)).await.unwrap();
    let _c = store.load(&base.id).await.unwrap().unwrap();
    store.save(&with(&b, "m", 2)).await.unwrap();
    assert_eq!(data(&store, &base.id).await, pairs(&[("m", 2), ("n", 1)]));
}

/// Past the window, nothing is remembered of the load: the save replaces every key (the
/// documented case where a concurrent write to another key is lost).
#[tokio::test]
async fn a_save_after_the_window_is_a_whole_record_write() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default())).window(Duration::ZERO);
    let base = created(&store, &[("n", 0)]).await;
    let a = store.load(&base.id).await.unwrap().unwrap();
    let b = store.load(&base.id).await.unwrap().unwrap();
    store.save(&with(&a, "a", 1)).await.unwrap();
    store.save(&with(&b, "b", 2)).await.unwrap();
    assert_eq!(data(&store, &base.id).await, pairs(&[("b", 2), ("n", 0)]));
}

#[tokio::test]
async fn a_save_of_a_loaded_session_deleted_since_writes_nothing() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default()));
    let base = created(&store, &[("n", 0)]).await;
    let loaded = store.load(&base.id).await.unwrap().unwrap();
    store.delete(&base.id).await.unwrap(); // another request logs out
    store.save(&with(&loaded, "n", 1)).await.unwrap();
    assert!(
        store.load(&base.id).await.unwrap().is_none(),
        "the logout was undone"
    );
}

#[tokio::test]
async fn a_save_of_a_session_never_loaded_here_creates_it() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default()));
    let fresh = record(Id::default(), &[("n", 5)]);
    store.save(&fresh).await.unwrap();
    assert_eq!(data(&store, &fresh.id).await, pairs(&[("n", 5)]));
    // And again, over what is there: an upsert.
    store.save(&record(fresh.id, &[("m", 6)])).await.unwrap();
    assert_eq!(data(&store, &fresh.id).await, pairs(&[("m", 6)]));
}

#[tokio::test]
async fn create_picks_a_new_id_when_the_key_is_taken() {
    let inner = Arc::new(MemoryStore::default());
    let store = TowerSessionsStore::new(inner.clone());
    let first = created(&store, &[("n", 1)]).await;
    let mut second = record(first.id, &[("n", 2)]);
    store.create(&mut second).await.unwrap();
    assert_ne!(second.id, first.id, "the colliding id was kept");
    assert_eq!(data(&store, &first.id).await, pairs(&[("n", 1)]));
    assert_eq!(data(&store, &second.id).await, pairs(&[("n", 2)]));
    // Both under our hashed key of their id.
    for id in [first.id, second.id] {
        let key = SessionId::parse(&id.to_string()).unwrap().storage_key();
        assert!(inner.load(&key).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn the_expiry_date_round_trips_to_the_second() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default()));
    let fresh = created(&store, &[("n", 1)]).await;
    let loaded = store.load(&fresh.id).await.unwrap().unwrap();
    let drift = (loaded.expiry_date - fresh.expiry_date).abs();
    assert!(drift < time::Duration::milliseconds(1), "{drift}");
}

/// An unchanged save (tower-sessions' `always_save`) moves the expiry and keeps the data.
#[tokio::test]
async fn an_unchanged_save_moves_only_the_expiry() {
    let store = TowerSessionsStore::new(Arc::new(MemoryStore::default()));
    let base = created(&store, &[("n", 1)]).await;
    let mut loaded = store.load(&base.id).await.unwrap().unwrap();
    loaded.expiry_date += time::Duration::minutes(10);
    store.save(&loaded).await.unwrap();
    let after = store.load(&base.id).await.unwrap().unwrap();
    assert_eq!(after.data, base.data);
    assert!((after.expiry_date - loaded.expiry_date).abs() < time::Duration::milliseconds(1));
}
