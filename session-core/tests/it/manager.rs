//! The manager's policies: expiry, touch, never writing empty sessions, errors that keep
//! changes, codecs.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_core::suite::ProbeStore;
use session_core::{
    Codec, ManualClock, SaveOutcome, SessionError, SessionManager, SessionStore, StoreError,
};

use crate::stores::{Flaw, MapStore};

const MINUTE: Duration = Duration::from_secs(60);

fn setup(
    idle: Option<Duration>,
    absolute: Option<Duration>,
) -> (SessionManager, Arc<ProbeStore>, Arc<ManualClock>) {
    let probe = Arc::new(ProbeStore::new(MapStore::shared(Flaw::None)));
    let clock = Arc::new(ManualClock::new());
    let manager = SessionManager::builder_arc(probe.clone() as Arc<dyn SessionStore>)
        .idle_timeout(idle)
        .absolute_lifetime(absolute)
        .clock(clock.clone())
        .build();
    (manager, probe, clock)
}

#[tokio::test]
async fn idle_timeout_expires_unused_sessions_and_activity_extends_them() {
    let (manager, _, clock) = setup(Some(30 * MINUTE), None);
    let session = manager.create();
    session.insert("n", 1).unwrap();
    manager.save(&session).await.unwrap();
    let id = session.id();

    clock.advance(20 * MINUTE);
    let active = manager
        .load(&id)
        .await
        .unwrap()
        .expect("within the idle window");
    assert_eq!(manager.save(&active).await.unwrap(), SaveOutcome::Touched);

    clock.advance(20 * MINUTE); // 40 minutes after creation, 20 after the touch
    assert!(
        manager.load(&id).await.unwrap().is_some(),
        "the touch did not extend the session"
    );

    clock.advance(31 * MINUTE);
    assert!(
        manager.load(&id).await.unwrap().is_none(),
        "an idle session outlived its timeout"
    );
}

#[tokio::test]
async fn absolute_lifetime_is_never_extended_by_activity() {
    let (manager, _, clock) = setup(Some(30 * MINUTE), Some(60 * MINUTE));
    let session = manager.create();
    session.insert("n", 0).unwrap();
    manager.save(&session).await.unwrap();
    let id = session.id();
    for step in 1..=3 {
        clock.advance(20 * MINUTE - Duration::from_secs(1));
        let s = manager
            .load(&id)
            .await
            .unwrap()
            .expect("active and within the lifetime");
        s.insert("n", step).unwrap();
        manager.save(&s).await.unwrap();
        assert!(s.expires_at() <= session.created_at().saturating_add(60 * MINUTE));
    }
    clock.advance(4 * MINUTE); // 60m + 1s after creation, active 4 minutes ago
    assert!(
        manager.load(&id).await.unwrap().is_none(),
        "activity extended the absolute lifetime"
    );
}

#[tokio::test]
async fn unchanged_sessions_are_touched_only_after_a_tenth_of_the_idle_window() {
    let (manager, probe, clock) = setup(Some(100 * MINUTE), None);
    let session = manager.create();
    session.insert("n", 1).unwrap();
    manager.save(&session).await.unwrap();
    let id = session.id();

    clock.advance(5 * MINUTE);
    let s = manager.load(&id).await.unwrap().unwrap();
    let calls = probe.calls();
    assert_eq!(manager.save(&s).await.unwrap(), SaveOutcome::Unchanged);
    assert_eq!(
        probe.calls(),
        calls,
        "a read-only request wrote to the store"
    );

    clock.advance(6 * MINUTE);
    let s = manager.load(&id).await.unwrap().unwrap();
    assert_eq!(manager.save(&s).await.unwrap(), SaveOutcome::Touched);
}

#[tokio::test]
async fn new_sessions_without_data_are_never_written() {
    let (manager, probe, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    session.insert("k", "v").unwrap();
    session.remove("k");
    assert_eq!(
        manager.save(&session).await.unwrap(),
        SaveOutcome::Unchanged
    );
    session.cycle_id();
    assert_eq!(
        manager.save(&session).await.unwrap(),
        SaveOutcome::Unchanged
    );
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn a_failed_save_keeps_the_changes_for_a_retry() {
    let (manager, probe, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    session.insert("a", 1).unwrap();
    manager.save(&session).await.unwrap();

    session.insert("b", 2).unwrap();
    probe.set_failing(true);
    let err = manager.save(&session).await.unwrap_err();
    assert!(
        matches!(err, SessionError::Store(StoreError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(session.is_modified());

    session.insert("c", 3).unwrap();
    probe.set_failing(false);
    assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Updated);
    let loaded = manager.load(&session.id()).await.unwrap().unwrap();
    assert_eq!(
        loaded.get_many::<i32>(&["a", "b", "c"]).unwrap(),
        vec![Some(1), Some(2), Some(3)]
    );
}

#[tokio::test]
async fn a_failed_first_save_keeps_the_session_new_and_its_data() {
    let (manager, probe, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    session.insert("a", 1).unwrap();
    probe.set_failing(true);
    assert!(manager.save(&session).await.is_err());
    assert!(session.is_new());
    probe.set_failing(false);
    assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Created);
    assert!(manager.load(&session.id()).await.unwrap().is_some());
}

#[tokio::test]
async fn decode_errors_name_the_key_and_spare_the_others() {
    let (manager, _, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    session.insert("name", "alice").unwrap();
    session.insert("age", 30u8).unwrap();
    match session.get::<u64>("name") {
        Err(SessionError::Decode { key, .. }) => assert_eq!(key, "name"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(session.get::<u8>("age").unwrap(), Some(30));
    // take() leaves a value that fails to decode in place.
    assert!(session.take::<u64>("name").is_err());
    assert!(session.contains("name"));
}

#[tokio::test]
async fn reserved_keys_and_insert_many_are_all_or_nothing() {
    let (manager, _, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    let reserved = format!("{}x", session_core::RESERVED_PREFIX);
    assert!(matches!(
        session.insert(reserved.clone(), 1),
        Err(SessionError::ReservedKey { .. })
    ));
    assert!(
        session
            .insert_many([("ok", 1), (reserved.as_str(), 2)])
            .is_err()
    );
    assert!(
        !session.contains("ok"),
        "insert_many applied part of a failed batch"
    );
    session.insert_many([("a", 1), ("b", 2)]).unwrap();
    assert_eq!(session.keys(), vec!["a".to_owned(), "b".to_owned()]);
    session.flash("msg", "hi").unwrap();
    assert_eq!(session.len(), 2, "flash messages are not counted as keys");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(i64),
    Text(String),
}

#[tokio::test]
async fn json_codec_decodes_self_describing_types() {
    let store = MapStore::shared(Flaw::None);
    let manager = SessionManager::builder_arc(store)
        .codec(Codec::Json)
        .build();
    let session = manager.create();
    session
        .insert("value", serde_json::json!({"a": [1, 2, {"b": null}]}))
        .unwrap();
    session.insert("loose", Loose::Text("x".into())).unwrap();
    manager.save(&session).await.unwrap();
    let loaded = manager.load(&session.id()).await.unwrap().unwrap();
    assert_eq!(
        loaded.get::<serde_json::Value>("value").unwrap(),
        Some(serde_json::json!({"a": [1, 2, {"b": null}]}))
    );
    assert_eq!(
        loaded.get::<Loose>("loose").unwrap(),
        Some(Loose::Text("x".into()))
    );
}

#[tokio::test]
async fn a_concurrent_edit_during_the_first_save_is_not_lost() {
    let (manager, _, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    session.insert("a", 1).unwrap();
    manager.save(&session).await.unwrap();
    // Edits after a whole-record write remain pending, and only they.
    session.insert("b", 2).unwrap();
    session.cycle_id();
    assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Cycled);
    assert!(!session.is_modified());
    let loaded = manager.load(&session.id()).await.unwrap().unwrap();
    assert_eq!(loaded.get::<i32>("b").unwrap(), Some(2));
}

#[tokio::test]
async fn replacing_a_value_keeps_and_writes_only_the_latest() {
    let (manager, _, _) = setup(Some(MINUTE), None);
    let session = manager.create();
    session.insert("a", "short").unwrap();
    session.insert("b", 1).unwrap();
    manager.save(&session).await.unwrap();

    let loaded = manager.load(&session.id()).await.unwrap().unwrap();
    // Longer, then shorter than the stored value: the handle reuses the old value's buffer.
    loaded
        .insert("a", "a much longer value than before")
        .unwrap();
    assert_eq!(
        loaded.get::<String>("a").unwrap().as_deref(),
        Some("a much longer value than before")
    );
    loaded.insert("a", "x").unwrap();
    assert_eq!(loaded.get::<String>("a").unwrap().as_deref(), Some("x"));
    assert_eq!(manager.save(&loaded).await.unwrap(), SaveOutcome::Updated);

    let again = manager.load(&session.id()).await.unwrap().unwrap();
    assert_eq!(again.get::<String>("a").unwrap().as_deref(), Some("x"));
    assert_eq!(again.get::<i32>("b").unwrap(), Some(1));
}

/// Logout, then a flash: the destroyed record is deleted, the flash lands in a fresh session
/// under a new id (created now, with no owner), and the destroyed id stays dead.
#[tokio::test]
async fn writes_after_destroy_go_to_a_fresh_session() {
    let (manager, _, clock) = setup(None, Some(120 * MINUTE));
    let session = manager.create();
    session.insert("user", "alice").unwrap();
    session.set_owner(Some("alice"));
    manager.save(&session).await.unwrap();
    let old = session.id();
    clock.advance(100 * MINUTE);
    let session = manager.load(&old).await.unwrap().unwrap();

    session.destroy();
    session.flash("notice", "You have been logged out").unwrap();
    assert!(!session.is_destroyed());
    assert_eq!(session.owner(), None);
    assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Created);
    assert_ne!(
        session.id(),
        old,
        "the fresh session reuses the destroyed id"
    );
    assert!(
        manager.load(&old).await.unwrap().is_none(),
        "the old id lives"
    );

    let fresh = manager.load(&session.id()).await.unwrap().unwrap();
    assert_eq!(fresh.get::<String>("user").unwrap(), None);
    assert_eq!(
        fresh.take_flash::<String>("notice").unwrap().as_deref(),
        Some("You have been logged out")
    );
    assert_eq!(fresh.owner(), None);
    // Created now: the old session's absolute lifetime (20 minutes left) does not apply.
    clock.advance(25 * MINUTE);
    let still = manager.load(&session.id()).await.unwrap();
    assert!(
        still.is_some(),
        "the fresh session inherited the old lifetime"
    );

    // Destroy without a later write is still a plain logout.
    let plain = still.unwrap();
    assert_eq!(
        manager.destroy(&plain).await.unwrap(),
        SaveOutcome::Destroyed
    );
    assert!(manager.load(&plain.id()).await.unwrap().is_none());
}

/// `cycle_grace` is how long a cycled id forwards: by default the old key points to the new
/// one; with `Duration::ZERO` the old record is simply deleted.
#[tokio::test]
async fn cycle_grace_decides_whether_the_old_id_forwards() {
    for (grace, forwards) in [(None, true), (Some(Duration::ZERO), false)] {
        let store = MapStore::shared(Flaw::None);
        let mut builder = SessionManager::builder_arc(store.clone());
        if let Some(grace) = grace {
            builder = builder.cycle_grace(grace);
        }
        let manager = builder.build();
        let session = manager.create();
        session.insert("n", 1u8).unwrap();
        manager.save(&session).await.unwrap();
        let old = session.id().storage_key();
        session.cycle_id();
        assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Cycled);
        let new = session.id().storage_key();
        assert_eq!(store.load(&old).await.unwrap(), None);
        let expected = forwards.then_some(new);
        assert_eq!(store.forwarded(&old).await.unwrap(), expected, "{grace:?}");
    }
}

/// What README.md says of counters: two handles that read a counter and `insert` the sum
/// leave one addition (last write wins); two that `increment` leave both. Increments also
/// survive a login (`cycle_id`) racing them, and a destroy restarts the count.
#[tokio::test]
async fn insert_of_a_read_counter_loses_an_addition_and_increment_does_not() {
    let (manager, _, _) = setup(Some(30 * MINUTE), None);
    let session = manager.create();
    session.insert("read", 10i64).unwrap();
    session.increment("added", 10).unwrap();
    manager.save(&session).await.unwrap();
    let id = session.id();

    let (left, right) = (
        manager.load(&id).await.unwrap().unwrap(),
        manager.load(&id).await.unwrap().unwrap(),
    );
    for handle in [&left, &right] {
        let read = handle.get::<i64>("read").unwrap().unwrap();
        handle.insert("read", read + 1).unwrap();
        assert_eq!(handle.increment("added", 1).unwrap(), 11);
    }
    manager.save(&left).await.unwrap();
    manager.save(&right).await.unwrap();
    let after = manager.load(&id).await.unwrap().unwrap();
    assert_eq!(
        after.get::<i64>("read").unwrap(),
        Some(11),
        "last write wins"
    );
    assert_eq!(
        after.get::<i64>("added").unwrap(),
        Some(12),
        "both additions count"
    );

    // A login races increments: one saved to the old record while the login was under way
    // (carried over by the login), one saved after it (forwarded to the new record).
    let early = manager.load(&id).await.unwrap().unwrap();
    let login = manager.load(&id).await.unwrap().unwrap();
    let mid = manager.load(&id).await.unwrap().unwrap();
    mid.increment("added", 10).unwrap();
    manager.save(&mid).await.unwrap();
    login.cycle_id();
    login.increment("added", 100).unwrap();
    assert_eq!(manager.save(&login).await.unwrap(), SaveOutcome::Cycled);
    let after = manager.load(&login.id()).await.unwrap().unwrap();
    assert_eq!(after.get::<i64>("added").unwrap(), Some(122));
    early.increment("added", 1).unwrap();
    assert_eq!(manager.save(&early).await.unwrap(), SaveOutcome::Forwarded);
    let after = manager.load(&login.id()).await.unwrap().unwrap();
    assert_eq!(after.get::<i64>("added").unwrap(), Some(123));

    after.destroy();
    assert_eq!(
        after.increment("added", 1).unwrap(),
        1,
        "a destroyed count restarts"
    );

    let text = manager.create();
    text.insert("t", "words").unwrap();
    assert!(matches!(
        text.increment("t", 1),
        Err(SessionError::Decode { .. })
    ));
    text.insert("max", i64::MAX).unwrap();
    assert!(matches!(
        text.increment("max", 1),
        Err(SessionError::Encode { .. })
    ));
    assert!(matches!(
        text.increment("\u{0}session:x", 1),
        Err(SessionError::ReservedKey { .. })
    ));
}

/// A session's own expiry ("remember me"): stored with it, it outlives the manager's idle
/// timeout and absolute lifetime; a shorter one ends the session early; an active session
/// with a short own idle timeout is touched often enough to stay alive; `None` returns to the
/// manager's; `clear` keeps it and `destroy` drops it.
#[tokio::test]
async fn an_own_expiry_is_stored_with_the_session_and_overrides_the_managers() {
    use session_core::SessionExpiry;
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let (manager, probe, clock) = setup(Some(30 * MINUTE), Some(120 * MINUTE));

    let remembered = manager.create();
    remembered.insert("user", "alice").unwrap();
    remembered.set_expiry(Some(SessionExpiry::persistent(
        Some(30 * DAY),
        Some(90 * DAY),
    )));
    manager.save(&remembered).await.unwrap();
    let stored = probe
        .load(&remembered.id().storage_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.expires_at,
        manager.now().saturating_add(30 * DAY),
        "the record's expiry follows the own idle timeout"
    );
    assert_eq!(remembered.keys(), ["user"], "the own expiry is no user key");

    let default = manager.create();
    default.insert("user", "bob").unwrap();
    manager.save(&default).await.unwrap();

    let short = manager.create();
    short.insert("user", "carol").unwrap();
    short.set_expiry(Some(SessionExpiry::browser_session(Some(5 * MINUTE), None)));
    manager.save(&short).await.unwrap();

    clock.advance(6 * MINUTE);
    assert!(
        manager.load(&short.id()).await.unwrap().is_none(),
        "the short session outlived its 5 min"
    );
    assert!(manager.load(&default.id()).await.unwrap().is_some());

    // Three hours on, visiting every 20 minutes: past the manager's 2 h lifetime.
    for _ in 0..9 {
        clock.advance(20 * MINUTE);
        let again = manager.load(&remembered.id()).await.unwrap();
        let again = again.expect("the remembered session ended with the manager's expiry");
        assert_eq!(
            again.own_expiry(),
            Some(SessionExpiry::persistent(Some(30 * DAY), Some(90 * DAY)))
        );
        manager.save(&again).await.unwrap();
    }
    assert!(manager.load(&default.id()).await.unwrap().is_none());

    // A short own idle timeout is touched by its own rule (a tenth of it), so an active
    // session lives on; the manager's touch_after (3 min) alone would let it die.
    let active = manager.create();
    active.insert("user", "dave").unwrap();
    active.set_expiry(Some(SessionExpiry::browser_session(Some(2 * MINUTE), None)));
    manager.save(&active).await.unwrap();
    for _ in 0..10 {
        clock.advance(Duration::from_secs(90));
        let again = manager.load(&active.id()).await.unwrap();
        let again = again.expect("an active session with a short own idle timeout died");
        manager.save(&again).await.unwrap();
    }

    let back = manager.load(&remembered.id()).await.unwrap().unwrap();
    back.clear();
    assert!(back.own_expiry().is_some(), "clear dropped the own expiry");
    back.set_expiry(None);
    back.insert("user", "alice").unwrap();
    manager.save(&back).await.unwrap();
    let stored = probe
        .load(&remembered.id().storage_key())
        .await
        .unwrap()
        .unwrap();
    // Back under the manager's expiry, whose 2 h lifetime this 4 h old session is past.
    assert!(stored.expires_at <= manager.now(), "{stored:?}");
    assert!(manager.load(&remembered.id()).await.unwrap().is_none());
    back.set_expiry(Some(SessionExpiry::persistent(Some(DAY), None)));
    back.destroy();
    assert_eq!(back.own_expiry(), None, "destroy kept the own expiry");
}

/// A recorded device's last-seen time moves with use, but only once `touch_after` has
/// passed: requests in between write nothing.
#[tokio::test]
async fn last_seen_moves_no_more_often_than_the_touch_throttle() {
    let (manager, probe, clock) = setup(Some(30 * MINUTE), None);
    let session = manager.create();
    session.insert("user", "alice").unwrap();
    session.set_client(Some("agent"), None);
    manager.save(&session).await.unwrap();
    let id = session.id();
    let seen = |record: session_core::Record| {
        session_core::DeviceSession::of_record(&record)
            .last_seen
            .unwrap()
    };
    let first = seen(probe.load(&id.storage_key()).await.unwrap().unwrap());
    assert_eq!(first, manager.now());

    let calls = probe.calls();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(30)); // touch_after is 3 min
        let again = manager.load(&id).await.unwrap().unwrap();
        again.set_client(Some("agent"), None); // the same device: no change
        assert_eq!(manager.save(&again).await.unwrap(), SaveOutcome::Unchanged);
    }
    assert_eq!(
        probe.calls() - calls,
        5,
        "only the five loads reached the store"
    );
    assert_eq!(
        seen(probe.load(&id.storage_key()).await.unwrap().unwrap()),
        first
    );

    clock.advance(Duration::from_secs(31));
    let again = manager.load(&id).await.unwrap().unwrap();
    assert_eq!(manager.save(&again).await.unwrap(), SaveOutcome::Updated);
    assert_eq!(
        seen(probe.load(&id.storage_key()).await.unwrap().unwrap()),
        manager.now()
    );
}
