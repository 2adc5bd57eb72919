//! Moving sessions between stores: `FallbackStore` (serve from the new store, copy from the
//! old one on first use) and `migrate::Migration` (copy the rest), on two in-memory stores.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::migrate::{Migration, Summary};
use session_core::scan::{Scan, Scanned, holds_any};
use session_core::suite::{Hooks, Intercept, record};
use session_core::{
    Changes, FallbackStore, Record, SessionStore, StorageKey, StoreError, Timestamp, async_trait,
};

use crate::stores::{Flaw, MapStore};

mod fallback_passes_the_suite {
    use super::*;
    session_core::conformance_tests!(
        || async {
            Some(FallbackStore::new(
                MapStore::shared(Flaw::None),
                MapStore::shared(Flaw::None),
            ))
        },
        owner_index = false
    );
}

fn two_stores() -> (Arc<dyn SessionStore>, Arc<dyn SessionStore>) {
    (MapStore::shared(Flaw::None), MapStore::shared(Flaw::None))
}

fn in_one_hour() -> Timestamp {
    Timestamp::now().saturating_add(Duration::from_secs(3600))
}

#[tokio::test]
async fn a_session_only_in_the_old_store_is_served_and_copied_on_first_read() {
    let (new, old) = two_stores();
    let r = record(&[("user", b"alice")]);
    old.create(&r).await.unwrap();
    let store = FallbackStore::new(new.clone(), old.clone());
    assert_eq!(store.load(&r.key).await.unwrap(), Some(r.clone()));
    assert_eq!(
        new.load(&r.key).await.unwrap(),
        Some(r.clone()),
        "not copied"
    );
    assert_eq!(
        store.load(&StorageKey::from_bytes([7; 32])).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn writes_to_a_session_only_in_the_old_store_land_in_the_new_one_merged() {
    let (new, old) = two_stores();
    let r = record(&[("a", b"1"), ("b", b"2")]);
    old.create(&r).await.unwrap();
    let store = FallbackStore::new(new.clone(), old.clone());
    let mut changes = Changes::new();
    changes.set("b", b"3".to_vec());
    assert!(store.update(&r.key, &changes, in_one_hour()).await.unwrap());
    let moved = new.load(&r.key).await.unwrap().unwrap();
    assert_eq!(moved.data["a"], b"1");
    assert_eq!(moved.data["b"], b"3");
    assert_eq!(
        old.load(&r.key).await.unwrap(),
        Some(r.clone()),
        "the old store was written to"
    );

    let t = record(&[("a", b"1")]);
    old.create(&t).await.unwrap();
    let later = in_one_hour().saturating_add(Duration::from_secs(60));
    assert!(store.touch(&t.key, later).await.unwrap());
    assert_eq!(new.load(&t.key).await.unwrap().unwrap().expires_at, later);
}

#[tokio::test]
async fn a_logout_during_the_move_is_final_in_both_stores() {
    let (new, old) = two_stores();
    let store = FallbackStore::new(new.clone(), old.clone());
    // Only in the old store, then copied, then in both: a delete ends it everywhere.
    for copied in [false, true] {
        let r = record(&[("user", b"alice")]);
        old.create(&r).await.unwrap();
        if copied {
            store.load(&r.key).await.unwrap();
        }
        store.delete(&r.key).await.unwrap();
        assert_eq!(store.load(&r.key).await.unwrap(), None, "came back");
        assert_eq!(old.load(&r.key).await.unwrap(), None);
        assert_eq!(new.load(&r.key).await.unwrap(), None);
        assert!(
            !store
                .update(&r.key, &Changes::new(), in_one_hour())
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn a_login_during_the_move_retires_the_old_id_in_both_stores() {
    let (new, old) = two_stores();
    let r = record(&[("visits", b"3")]);
    old.create(&r).await.unwrap();
    let store = FallbackStore::new(new.clone(), old.clone());
    // What the manager's `cycle_id` asks of the store: the data under a new key, the old
    // key retired to it.
    let target = record(&[("visits", b"3")]);
    new.create(&target).await.unwrap();
    let until = Timestamp::now().saturating_add(Duration::from_secs(60));
    assert_eq!(
        store.retire(&r.key, &target.key, until).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(old.load(&r.key).await.unwrap(), None, "the old id lives on");
    assert_eq!(store.forwarded(&r.key).await.unwrap(), Some(target.key));
    // Once the pointer has gone, nothing brings the old id back.
    store.delete(&r.key).await.unwrap();
    assert_eq!(store.load(&r.key).await.unwrap(), None);
}

#[tokio::test]
async fn create_refuses_a_key_the_old_store_holds() {
    let (new, old) = two_stores();
    let r = record(&[("a", b"1")]);
    old.create(&r).await.unwrap();
    let store = FallbackStore::new(new, old);
    assert!(matches!(
        store.create(&r).await,
        Err(StoreError::IdCollision)
    ));
}

#[tokio::test]
async fn a_scan_of_the_fallback_store_lists_both_stores() {
    let (new, old) = two_stores();
    let a = record(&[("a", b"1")]);
    let b = record(&[("b", b"1")]);
    new.create(&a).await.unwrap();
    old.create(&b).await.unwrap();
    let mut live = Vec::new();
    let mut scan = Scan::new(Arc::new(FallbackStore::new(new, old))).page_size(1);
    while let Some(page) = scan.next_page().await.unwrap() {
        for found in page {
            if let Scanned::Live(r) = found {
                live.push(r.key);
            }
        }
    }
    live.sort();
    let mut want = vec![a.key, b.key];
    want.sort();
    assert_eq!(live, want);
}

/// Sessions of every kind in `old`: live ones, one expired, and one deleted.
async fn fill(old: &dyn SessionStore, n: u8) -> Vec<Record> {
    let mut live = Vec::new();
    for i in 0..n {
        let mut r = record(&[("n", &[i][..]), ("flash", b"hello")]);
        if i % 3 == 0 {
            r.owner = Some(format!("user{i}"));
        }
        old.create(&r).await.unwrap();
        live.push(r);
    }
    let mut expired = record(&[("old", b"1")]);
    expired.expires_at = Timestamp::now().saturating_sub(Duration::from_secs(1));
    old.create(&expired).await.unwrap();
    live
}

#[tokio::test]
async fn a_migration_copies_every_live_session_intact_and_a_second_run_copies_nothing() {
    let (new, old) = two_stores();
    let live = fill(&*old, 40).await;
    let pages = Arc::new(Mutex::new(Vec::new()));
    let seen = pages.clone();
    let summary = Migration::new(old.clone(), new.clone())
        .page_size(7)
        .parallel(4)
        .run(move |so_far: &Summary| seen.lock().unwrap().push(so_far.listed))
        .await
        .unwrap();
    assert_eq!(summary.copied, 40, "{summary:?}");
    assert_eq!(summary.expired, 1, "{summary:?}");
    assert_eq!(summary.skipped() + summary.failed + summary.damaged, 0);
    for r in &live {
        assert_eq!(new.load(&r.key).await.unwrap().as_ref(), Some(r), "changed");
    }
    let pages = pages.lock().unwrap().clone();
    assert!(pages.len() >= 6, "progress after each page: {pages:?}");
    assert!(pages.windows(2).all(|w| w[0] <= w[1]), "{pages:?}");

    // Resumed or repeated: nothing is copied twice, nothing overwritten.
    let again = Migration::new(old.clone(), new.clone())
        .run(|_| {})
        .await
        .unwrap();
    assert_eq!((again.copied, again.identical), (0, 40), "{again:?}");
}

#[tokio::test]
async fn a_session_that_changed_at_the_destination_is_never_overwritten() {
    let (new, old) = two_stores();
    let live = fill(&*old, 5).await;
    let mut newer = live[2].clone();
    newer.data.insert("n".into(), b"changed since".to_vec());
    new.create(&newer).await.unwrap();
    let summary = Migration::new(old, new.clone()).run(|_| {}).await.unwrap();
    assert_eq!(summary.copied, 4);
    assert_eq!(summary.changed_at_destination, 1);
    assert_eq!(new.load(&newer.key).await.unwrap(), Some(newer));
}

#[tokio::test]
async fn a_dry_run_counts_and_writes_nothing() {
    let (new, old) = two_stores();
    fill(&*old, 9).await;
    let summary = Migration::new(old, new.clone())
        .dry_run(true)
        .run(|_| {})
        .await
        .unwrap();
    assert_eq!(summary.copied, 9);
    assert!(!holds_any(&*new).await.unwrap(), "written");
}

/// A page may be empty while the scan goes on: whether a store holds anything is known only
/// at the first key or at the end of the scan (the CLI's "the destination already holds
/// sessions" check, which once read one page and missed sessions on a Redis Cluster).
#[tokio::test]
async fn holds_any_reads_past_empty_pages() {
    let store = MapStore::with_blank_pages(3);
    store.create(&record(&[("n", b"1")])).await.unwrap();
    assert!(holds_any(&*store).await.unwrap());
    let empty = MapStore::with_blank_pages(3);
    assert!(!holds_any(&*empty).await.unwrap());
}

/// A destination that, once a create of `log_out_after_copy` has landed, deletes it from the
/// source (the application's logout through a FallbackStore racing the copy), and refuses
/// the record `too_large` with [`StoreError::TooLarge`].
#[derive(Debug)]
struct Destination {
    source: Arc<dyn SessionStore>,
    log_out_after_copy: StorageKey,
    too_large: StorageKey,
}

#[async_trait]
impl Hooks for Destination {
    fn creating(&self, record: &Record) -> Result<(), StoreError> {
        if record.key == self.too_large {
            return Err(StoreError::too_large("destination", 1 << 30, 1 << 20));
        }
        Ok(())
    }
    async fn created(&self, record: &Record) -> Result<(), StoreError> {
        if record.key == self.log_out_after_copy {
            self.source.delete(&record.key).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_logout_racing_the_copy_is_not_undone_and_a_refused_record_is_reported() {
    let (new, old) = two_stores();
    let live = fill(&*old, 6).await;
    let dest = Arc::new(Intercept::with_hooks(
        new.clone(),
        Destination {
            source: old.clone(),
            log_out_after_copy: live[1].key,
            too_large: live[4].key,
        },
    ));
    let summary = Migration::new(old, dest).run(|_| {}).await.unwrap();
    assert_eq!(summary.withdrawn, 1, "{summary:?}");
    assert_eq!(summary.failed, 1, "{summary:?}");
    assert_eq!(summary.copied, 4, "{summary:?}");
    assert_eq!(
        new.load(&live[1].key).await.unwrap(),
        None,
        "a logout was undone"
    );
    assert_eq!(new.load(&live[4].key).await.unwrap(), None);
    assert_eq!(summary.failures.len(), 1);
    assert_eq!(summary.failures[0].key, live[4].key);
    assert!(
        summary.failures[0].reason.contains("larger than"),
        "{summary:?}"
    );
}

#[tokio::test]
async fn an_unreachable_destination_stops_the_migration_with_what_was_done() {
    let (new, old) = two_stores();
    fill(&*old, 3).await;
    let probe = Arc::new(session_core::suite::ProbeStore::new(new));
    probe.set_failing(true);
    let err = Migration::new(old, probe).run(|_| {}).await.unwrap_err();
    assert!(
        matches!(err.source, StoreError::Unavailable { .. }),
        "{err}"
    );
    assert_eq!(err.summary.copied, 0);
    assert!(err.to_string().contains("unavailable"), "{err}");
}
