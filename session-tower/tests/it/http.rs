//! The layer's behaviour, request by request, through `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::StatusCode;
use session_core::suite::ProbeStore;
use session_core::{
    Changes, ManualClock, Record, SessionInfo, SessionManager, SessionStore, StorageKey,
    StoreError, Timestamp, async_trait,
};
use session_memory::MemoryStore;
use session_testing::http::{counter, send, send_raw_cookie};
use session_tower::{CorruptPolicy, Key, Session, SessionLayer};

async fn peek(session: Session) -> String {
    session.get::<u64>("n").unwrap().unwrap_or(0).to_string()
}

async fn logout(session: Session) -> &'static str {
    session.destroy();
    "bye"
}

async fn login(session: Session) -> &'static str {
    session.cycle_id();
    session.insert("user", "alice").unwrap();
    "welcome"
}

fn routes() -> Router {
    Router::new()
        .route("/", get(counter))
        .route("/peek", get(peek))
        .route("/logout", get(logout))
        .route("/login", get(login))
        .route("/health", get(|| async { "ok" }))
}

struct Fixture {
    app: Router,
    probe: Arc<ProbeStore>,
    clock: Arc<ManualClock>,
    manager: SessionManager,
    key: Key,
}

fn fixture_with(configure: impl FnOnce(SessionLayer) -> SessionLayer) -> Fixture {
    let probe = Arc::new(ProbeStore::new(Arc::new(MemoryStore::default())));
    let clock = Arc::new(ManualClock::new());
    let manager = SessionManager::builder_arc(probe.clone())
        .idle_timeout(Some(Duration::from_secs(30 * 60)))
        .absolute_lifetime(Some(Duration::from_secs(2 * 3600)))
        .clock(clock.clone())
        .build();
    let key = Key::generate();
    let layer = configure(SessionLayer::new(manager.clone(), key.clone()));
    Fixture {
        app: routes().layer(layer),
        probe,
        clock,
        manager,
        key,
    }
}

fn fixture() -> Fixture {
    fixture_with(|layer| layer)
}

#[tokio::test]
async fn a_new_visitor_gets_a_signed_cookie_with_safe_defaults() {
    let f = fixture();
    let reply = send(&f.app, "GET", "/", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1");
    let set = &reply.set_cookies[0];
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=1800",
    ] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(set.starts_with("id="));
}

#[tokio::test]
async fn the_counter_increments_across_requests() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    for want in 2..=4 {
        let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
        assert_eq!(reply.body, want.to_string());
    }
}

#[tokio::test]
async fn a_request_that_does_not_touch_the_session_costs_nothing() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    let calls = f.probe.calls();
    let reply = send(&f.app, "GET", "/health", Some(&cookie)).await;
    assert_eq!(reply.body, "ok");
    assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
    assert_eq!(
        f.probe.calls(),
        calls,
        "the store was asked for a route that never used it"
    );
}

#[tokio::test]
async fn a_read_only_request_writes_nothing_and_sets_no_cookie() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    let calls = f.probe.calls();
    let reply = send(&f.app, "GET", "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(f.probe.calls(), calls + 1, "only the load");
}

#[tokio::test]
async fn bad_cookies_start_a_fresh_session_without_a_store_lookup() {
    let f = fixture();
    let good = send(&f.app, "GET", "/", None).await.cookie();
    let (name, value) = good.split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let id_only = value.split('.').next().unwrap();
    let unsigned = value.rsplit_once('.').unwrap().0;
    let foreign = {
        let other = fixture();
        send(&other.app, "GET", "/", None).await.cookie()
    };
    let long = format!("id={}", "A".repeat(10 * 1024));
    let cases = [
        format!("{name}={flipped}"),
        format!("{name}={id_only}"),
        format!("{name}={unsigned}"),
        format!("{name}={unsigned}."),
        foreign,
        long,
        "id=".to_owned(),
        "id=../../../etc/passwd".to_owned(),
        "id=AAAAAAAAAAAAAAAAAAAA\r\nflush_all".replace("\r\n", "%0D%0A"),
    ];
    for cookie in cases {
        let before = f.probe.calls();
        let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{cookie}");
        assert_eq!(reply.body, "1", "{cookie} reached an existing session");
        assert_ne!(reply.cookie(), cookie, "the client's id was adopted");
        assert_eq!(
            f.probe.calls(),
            before + 1,
            "{cookie}: a store lookup happened (only the create is expected)"
        );
    }
}

/// A browser sends every cookie of the site in one header: 9 KB of analytics cookies, or a
/// cookie with bytes that are not UTF-8, beside ours must not cost the user their session.
#[tokio::test]
async fn our_cookie_is_found_among_many_kilobytes_of_other_cookies() {
    let f = fixture();
    let ours = send(&f.app, "GET", "/", None).await.cookie();
    let others: Vec<String> = (0..90)
        .map(|i| format!("_ga_{i}={}", "x".repeat(96)))
        .collect();
    let before = others[..45].join("; ");
    let after = others[45..].join("; ");
    let header = format!("{before}; {ours}; {after}");
    assert!(header.len() > 9000, "{}", header.len());
    assert_eq!(send(&f.app, "GET", "/", Some(&header)).await.body, "2");

    let mut raw = b"pref=caf\xe9; ".to_vec();
    raw.extend_from_slice(header.as_bytes());
    assert_eq!(send_raw_cookie(&f.app, &raw).await.body, "3");
}

#[tokio::test]
async fn an_unknown_but_well_signed_id_is_not_adopted() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    // The server forgets the session (e.g. it expired); the browser keeps the cookie.
    send(&f.app, "GET", "/logout", Some(&cookie)).await;
    let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_ne!(reply.cookie(), cookie);
}

#[tokio::test]
async fn key_rotation_keeps_old_cookies_valid_and_signs_with_the_new_key() {
    let f = fixture();
    let old_cookie = send(&f.app, "GET", "/", None).await.cookie();
    let rotated = routes()
        .layer(SessionLayer::new(f.manager.clone(), Key::generate()).accept_key(f.key.clone()));
    let reply = send(&rotated, "GET", "/", Some(&old_cookie)).await;
    assert_eq!(
        reply.body, "2",
        "a cookie signed with the old key was rejected"
    );
    let new_cookie = reply.cookie();
    assert_ne!(
        new_cookie, old_cookie,
        "the refreshed cookie is signed with the new key"
    );
    assert_eq!(
        send(&rotated, "GET", "/", Some(&new_cookie)).await.body,
        "3"
    );
    // The old layer (old key only) does not accept the new key's signature.
    assert_eq!(send(&f.app, "GET", "/", Some(&new_cookie)).await.body, "1");
}

#[tokio::test]
async fn a_persistent_cookie_is_sent_again_only_when_it_falls_behind() {
    // Idle 30 min: `touch_after` is 3 min.
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    f.clock.advance(Duration::from_secs(2 * 60));
    let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.body, "2");
    assert!(
        reply.set_cookies.is_empty(),
        "re-sent after 2 min: {:?}",
        reply.set_cookies
    );
    f.clock.advance(Duration::from_secs(2 * 60));
    let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.body, "3");
    let refreshed = &reply.set_cookies[0];
    assert!(refreshed.contains("Max-Age=1800"), "{refreshed}");
    // The refreshed cookie carries the new expiry: not behind again until 3 more minutes.
    let cookie = reply.cookie();
    f.clock.advance(Duration::from_secs(2 * 60));
    let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.body, "4");
    assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
}

#[tokio::test]
async fn logout_removes_the_cookie_and_the_record() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    let reply = send(&f.app, "GET", "/logout", Some(&cookie)).await;
    let removal = &reply.set_cookies[0];
    assert!(
        removal.starts_with("id=;") && removal.contains("Max-Age=0"),
        "{removal}"
    );
    assert_eq!(f.probe.calls(), 3, "create, load, delete");
    assert_eq!(send(&f.app, "GET", "/peek", Some(&cookie)).await.body, "0");
}

#[tokio::test]
async fn login_cycles_the_id_and_the_old_id_is_dead() {
    let f = fixture();
    let before = send(&f.app, "GET", "/", None).await.cookie();
    let reply = send(&f.app, "GET", "/login", Some(&before)).await;
    let after = reply.cookie();
    assert_ne!(after, before);
    assert_eq!(
        send(&f.app, "GET", "/peek", Some(&after)).await.body,
        "1",
        "data kept across the cycle"
    );
    assert_eq!(
        send(&f.app, "GET", "/peek", Some(&before)).await.body,
        "0",
        "the pre-login id still works"
    );
}

#[tokio::test]
async fn idle_and_absolute_expiry_are_observed() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    f.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(send(&f.app, "GET", "/", Some(&cookie)).await.body, "2");
    f.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        send(&f.app, "GET", "/", Some(&cookie)).await.body,
        "1",
        "idle timeout not honoured"
    );

    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    for _ in 0..4 {
        f.clock.advance(Duration::from_secs(25 * 60));
        assert_ne!(send(&f.app, "GET", "/", Some(&cookie)).await.body, "1");
    }
    f.clock.advance(Duration::from_secs(25 * 60)); // 2h05 after creation, active 25 min ago
    assert_eq!(
        send(&f.app, "GET", "/", Some(&cookie)).await.body,
        "1",
        "absolute lifetime not honoured"
    );
}

#[tokio::test]
async fn a_store_outage_answers_503_by_default() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    f.probe.set_failing(true);
    let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.set_cookies.is_empty());
    let fresh = send(&f.app, "GET", "/", None).await;
    assert_eq!(
        fresh.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the save failed, so 503"
    );
    f.probe.set_failing(false);
    assert_eq!(
        send(&f.app, "GET", "/", Some(&cookie)).await.body,
        "2",
        "nothing was half-written"
    );
}

/// A handler that takes `Result<Session, SessionRejection>` sees the store's error as the
/// rejection's source, while the response body a client would get names no store detail.
#[tokio::test]
async fn a_rejection_carries_the_store_error_and_its_body_hides_it() {
    use session_tower::SessionRejection;
    use std::error::Error as _;

    async fn explain(session: Result<Session, SessionRejection>) -> String {
        match session {
            Ok(_) => "ok".to_owned(),
            Err(rejection) => format!(
                "{} | {} | {}",
                rejection.status().as_u16(),
                rejection,
                rejection
                    .source()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        }
    }
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    let app = Router::new()
        .route("/explain", get(explain))
        .layer(SessionLayer::new(f.manager.clone(), f.key.clone()));
    f.probe.set_failing(true);
    let reply = send(&app, "GET", "/explain", Some(&cookie)).await;
    let parts: Vec<&str> = reply.body.split(" | ").collect();
    assert_eq!(parts[..2], ["503", "the session store is unavailable"]);
    assert!(parts[2].contains("simulated outage"), "{}", reply.body);
    // Through the plain extractor the client gets the status and the Display only.
    let plain = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(plain.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(plain.body, "the session store is unavailable");
}

#[tokio::test]
async fn an_outage_during_save_answers_503_and_keeps_the_old_data() {
    let f = fixture();
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    let probe = f.probe.clone();
    let app = Router::new()
        .route(
            "/",
            get(move |session: Session| async move {
                session.insert("n", 100u64).unwrap();
                probe.set_failing(true); // the store goes down while the handler runs
                "changed"
            }),
        )
        .layer(SessionLayer::new(f.manager.clone(), f.key.clone()));
    let reply = send(&app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    f.probe.set_failing(false);
    assert_eq!(send(&f.app, "GET", "/peek", Some(&cookie)).await.body, "1");
}

#[tokio::test]
async fn fail_open_runs_the_handler_with_an_unsaved_empty_session() {
    let f = fixture_with(|layer| layer.fail_open(true));
    let cookie = send(&f.app, "GET", "/", None).await.cookie();
    f.probe.set_failing(true);
    let reply = send(&f.app, "GET", "/", Some(&cookie)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1");
    assert!(
        reply.set_cookies.is_empty(),
        "a fail-open session must not replace the cookie"
    );
    f.probe.set_failing(false);
    assert_eq!(
        send(&f.app, "GET", "/", Some(&cookie)).await.body,
        "2",
        "the real session survived"
    );
}

#[tokio::test]
async fn a_missing_layer_is_a_clear_500() {
    let app = routes();
    let reply = send(&app, "GET", "/", None).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("SessionLayer"), "{}", reply.body);
}

/// A store whose records all read as damaged, and that records deletes.
#[derive(Debug, Default)]
struct Damaged {
    inner: MemoryStore,
    deleted: std::sync::Mutex<Vec<StorageKey>>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl SessionStore for Damaged {
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        match self.inner.load(key).await? {
            Some(_) => Err(StoreError::corrupt("damaged", "garbage in the record")),
            None => Ok(None),
        }
    }
    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        self.inner.create(record).await
    }
    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.update(key, changes, at).await
    }
    async fn touch(&self, key: &StorageKey, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.touch(key, at).await
    }
    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.deleted.lock().unwrap().push(*key);
        self.inner.delete(key).await
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.inner.delete_expired().await
    }
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        self.inner.retire(key, to, until).await
    }
    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        self.inner.forwarded(key).await
    }
    fn expires_natively(&self) -> bool {
        self.inner.expires_natively()
    }
    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.sessions_of(owner).await
    }
    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        self.inner.delete_sessions_of(owner).await
    }
}

#[tokio::test]
async fn a_damaged_record_starts_a_fresh_session_by_default() {
    let store = Arc::new(Damaged::default());
    let manager = SessionManager::builder_arc(store.clone()).build();
    let app = routes().layer(SessionLayer::new(manager.clone(), Key::generate()));
    let cookie = send(&app, "GET", "/", None).await.cookie();
    for _ in 0..3 {
        let reply = send(&app, "GET", "/", Some(&cookie)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "1");
        assert_ne!(
            reply.cookie(),
            cookie,
            "the client keeps the damaged session's id"
        );
    }
    assert!(
        !store.deleted.lock().unwrap().is_empty(),
        "the damaged record was not deleted"
    );

    let strict = routes()
        .layer(SessionLayer::new(manager, Key::generate()).on_corrupt(CorruptPolicy::Reject));
    let cookie = send(&strict, "GET", "/", None).await.cookie();
    assert_eq!(
        send(&strict, "GET", "/", Some(&cookie)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn browser_session_cookies_have_no_max_age() {
    let f = fixture_with(|layer| {
        layer
            .persistent(false)
            .cookie_name("sid")
            .cookie_domain("example.com")
    });
    let reply = send(&f.app, "GET", "/", None).await;
    let set = &reply.set_cookies[0];
    assert!(
        set.starts_with("sid=") && !set.contains("Max-Age") && set.contains("Domain=example.com"),
        "{set}"
    );
    // Updates need no new cookie when it carries no expiry.
    let reply = send(&f.app, "GET", "/", Some(&reply.cookie())).await;
    assert!(reply.set_cookies.is_empty());
}

/// A page that writes to the session while another request logs the user in: its save finds
/// the old id cycled; its write reaches the session under the new id, and its response
/// carries no cookie (a removal would delete the fresh login cookie in a browser that
/// applies it after the login response).
#[tokio::test]
async fn a_write_racing_a_login_sends_no_removal_cookie() {
    let f = fixture();
    let entered = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let slow = {
        let (entered, gate) = (entered.clone(), gate.clone());
        move |session: Session| async move {
            let n = session.get::<u64>("n").unwrap().unwrap_or(0);
            entered.notify_one();
            gate.notified().await;
            session.insert("cart", n + 100).unwrap();
            "saved"
        }
    };
    let cart = |session: Session| async move {
        session.get::<u64>("cart").unwrap().unwrap_or(0).to_string()
    };
    let app = routes()
        .route("/slow", get(slow))
        .route("/cart", get(cart))
        .layer(SessionLayer::new(f.manager.clone(), f.key.clone()));
    let cookie = send(&app, "GET", "/", None).await.cookie();
    let racing = tokio::spawn({
        let (app, cookie) = (app.clone(), cookie.clone());
        async move { send(&app, "GET", "/slow", Some(&cookie)).await }
    });
    entered.notified().await;
    let login = send(&app, "GET", "/login", Some(&cookie)).await;
    let signed_in = login.cookie();
    assert_ne!(signed_in, cookie);
    gate.notify_one();
    let late = racing.await.unwrap();
    assert_eq!(late.status, StatusCode::OK);
    assert!(
        late.set_cookies.is_empty(),
        "the late response would delete the login cookie: {:?}",
        late.set_cookies
    );
    assert_eq!(send(&app, "GET", "/peek", Some(&signed_in)).await.body, "1");
    // The racing write followed the session to its new id.
    assert_eq!(
        send(&app, "GET", "/cart", Some(&signed_in)).await.body,
        "101",
        "the write racing the login was lost"
    );
}

/// A store that takes `latency` of the manual clock's time to create a record.
#[derive(Debug)]
struct SlowCreate {
    inner: MemoryStore,
    clock: Arc<ManualClock>,
    latency: Duration,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl SessionStore for SlowCreate {
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        self.inner.load(key).await
    }
    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        self.clock.advance(self.latency);
        self.inner.create(record).await
    }
    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.update(key, changes, at).await
    }
    async fn touch(&self, key: &StorageKey, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.touch(key, at).await
    }
    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.inner.delete_expired().await
    }
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        self.inner.retire(key, to, until).await
    }
    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        self.inner.forwarded(key).await
    }
    fn expires_natively(&self) -> bool {
        self.inner.expires_natively()
    }
    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.sessions_of(owner).await
    }
    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        self.inner.delete_sessions_of(owner).await
    }
}

/// Max-Age counts from the instant the expiry was set, rounded up: a store that takes
/// 300 ms does not turn a 1 s idle timeout into `Max-Age=0` (the browser would drop the
/// cookie at once), nor 1800 s into 1799.
#[tokio::test]
async fn max_age_is_never_rounded_down_to_a_dead_cookie() {
    for (idle, want) in [(1, "Max-Age=1;"), (1800, "Max-Age=1800;")] {
        let clock = Arc::new(ManualClock::new());
        let store = SlowCreate {
            inner: MemoryStore::default(),
            clock: clock.clone(),
            latency: Duration::from_millis(300),
        };
        let manager = SessionManager::builder(store)
            .idle_timeout(Some(Duration::from_secs(idle)))
            .clock(clock)
            .build();
        let app = routes().layer(SessionLayer::new(manager, Key::generate()));
        let reply = send(&app, "GET", "/", None).await;
        assert!(
            reply.set_cookies[0].contains(want),
            "idle {idle} s: {:?}",
            reply.set_cookies
        );
    }
}

/// Rotation: a cookie signed by an old key is signed under the new key on the response of a
/// request that only reads the session, or does not look at it — with no store write.
#[tokio::test]
async fn a_read_only_request_re_signs_an_old_key_cookie_without_a_write() {
    let f = fixture();
    let old_cookie = send(&f.app, "GET", "/", None).await.cookie();
    let new_key = Key::generate();
    let rotated = routes()
        .layer(SessionLayer::new(f.manager.clone(), new_key.clone()).accept_key(f.key.clone()));
    let only_new = routes().layer(SessionLayer::new(f.manager.clone(), new_key));
    for path in ["/peek", "/health"] {
        let before = f.probe.calls();
        let reply = send(&rotated, "GET", path, Some(&old_cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let resigned = reply.cookie();
        assert_ne!(resigned, old_cookie, "{path}: not signed again");
        assert!(reply.set_cookies[0].contains("Max-Age="), "{path}");
        let reads = usize::from(path == "/peek");
        assert_eq!(f.probe.calls(), before + reads, "{path}: a store write");
        // The new cookie is the same session, verified by the new key alone.
        assert_eq!(
            send(&only_new, "GET", "/peek", Some(&resigned)).await.body,
            "1"
        );
    }
}

/// Logout, then a flash ("You have been logged out"): the response carries a new session's
/// cookie instead of a removal, the message shows once, and the old cookie stays dead.
#[tokio::test]
async fn a_flash_after_logout_reaches_the_next_page() {
    let f = fixture();
    let bye = |session: Session| async move {
        session.destroy();
        session.flash("notice", "logged out").unwrap();
        "bye"
    };
    let show = |session: Session| async move {
        session
            .take_flash::<String>("notice")
            .unwrap()
            .unwrap_or_default()
    };
    let app = routes()
        .route("/bye", get(bye))
        .route("/show", get(show))
        .layer(SessionLayer::new(f.manager.clone(), f.key.clone()));
    let old = send(&app, "GET", "/", None).await.cookie();
    let reply = send(&app, "GET", "/bye", Some(&old)).await;
    assert!(
        !reply.set_cookies[0].contains("Max-Age=0"),
        "{:?}",
        reply.set_cookies
    );
    let fresh = reply.cookie();
    assert_ne!(fresh, old);
    assert_eq!(
        send(&app, "GET", "/show", Some(&fresh)).await.body,
        "logged out"
    );
    assert_eq!(send(&app, "GET", "/show", Some(&fresh)).await.body, "");
    assert_eq!(send(&app, "GET", "/peek", Some(&old)).await.body, "0");
}
