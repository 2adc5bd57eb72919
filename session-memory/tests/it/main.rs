//! session-memory's integration tests: the conformance suite and the sweeper.

use std::sync::Arc;
use std::time::Duration;

use session_core::{CancellationToken, Record, SessionStore, Timestamp, spawn_sweeper};
use session_core::{IdGenerator, UuidV4Generator};
use session_memory::MemoryStore;

session_core::conformance_tests!(
    || async { Some(Arc::new(MemoryStore::default()) as Arc<dyn SessionStore>) },
    atomic_cap = true,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_shard_store_passes_the_races_too() {
    session_core::suite::check_no_lost_updates(Arc::new(MemoryStore::with_shards(1))).await;
    session_core::suite::check_logout_is_final(Arc::new(MemoryStore::with_shards(1))).await;
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_removes_expired_records_and_stops_on_cancel() {
    let store = Arc::new(MemoryStore::default());
    let past = Timestamp::now().saturating_sub(Duration::from_secs(5));
    let future = Timestamp::now().saturating_add(Duration::from_secs(3600));
    for expires_at in [past, past, future] {
        let record = Record {
            key: UuidV4Generator.generate().storage_key(),
            data: Default::default(),
            created_at: past,
            expires_at,
            owner: None,
        };
        store.create(&record).await.unwrap();
    }
    assert_eq!(store.len(), 3);
    let cancel = CancellationToken::new();
    let sweeper = spawn_sweeper(store.clone(), Duration::from_secs(60), cancel.clone());
    // Paused time: sleeping here lets the runtime auto-advance to the sweeper's tick.
    tokio::time::sleep(Duration::from_secs(61)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        store.len(),
        1,
        "the sweeper did not remove the two expired records"
    );
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), sweeper)
        .await
        .expect("the sweeper stops promptly on cancel")
        .expect("the sweeper does not panic");
}

/// The memory store answers `load_body` with the body it keeps, not a decoded record: the
/// manager reads values in place.
#[tokio::test]
async fn load_body_answers_the_stored_body() {
    session_core::suite::check_loads_bodies(Arc::new(MemoryStore::default())).await;
}
