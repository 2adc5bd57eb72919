//! The HTTP behaviour every integration must have, as one list of scenarios that each
//! framework runs through its own test client: session-tower through `tower::ServiceExt`,
//! session-actix through `actix_web::test`. A framework provides [`Framework`] (how to send
//! a request to an app with the [standard routes](respond) under a [`SessionConfig`]) and
//! expands [`http_scenarios!`](crate::http_scenarios) in a test file: a test per scenario.
//!
//! The routes every app under test has, all `GET`:
//! - `/health`: answers `ok` without asking for the session.
//! - `/explain`: takes the session as a `Result`, and answers `status | Display | source`
//!   of the rejection ([`explain`]), or `ok`.
//! - any other path: extracts the session and answers [`respond`]'s text for the path.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use session_core::suite::{Hooks as StoreHooks, Intercept, ProbeStore};
use session_core::{
    ManualClock, Record, Session, SessionEvent, SessionManager, StorageKey, StoreError,
};
use session_http::{CorruptPolicy, Key, SessionConfig, Transport};
use session_memory::MemoryStore;
use tokio::sync::Notify;

pub use crate::Reply;

/// What a scenario's handlers share with the test: gates for the racing requests, and the
/// probe to fail from inside a handler.
#[derive(Debug)]
pub struct Hooks {
    /// Notified when `/slow` has loaded the session.
    pub entered: Notify,
    /// `/slow` waits for it before writing.
    pub gate: Notify,
    /// `/fail-mid` makes it fail after writing to the session.
    pub probe: Option<Arc<ProbeStore>>,
}

/// An app under test: the integration's settings and the hooks its handlers use.
#[derive(Debug, Clone)]
pub struct App {
    /// The middleware's or layer's settings.
    pub config: SessionConfig,
    /// The handlers' hooks.
    pub hooks: Arc<Hooks>,
}

/// An HTTP integration, driven through its own test client.
pub trait Framework {
    /// `GET path` with `headers` (names and raw values), to an app with the standard routes
    /// wrapped in the integration configured by `app.config`.
    fn send_headers(
        &self,
        app: &App,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> impl Future<Output = Reply>;

    /// `GET path` with the raw `Cookie` header `cookie`.
    fn send(&self, app: &App, path: &str, cookie: Option<&[u8]>) -> impl Future<Output = Reply> {
        async move {
            match cookie {
                Some(cookie) => self.send_headers(app, path, &[("cookie", cookie)]).await,
                None => self.send_headers(app, path, &[]).await,
            }
        }
    }
    /// `GET path` to the standard routes with no session middleware at all.
    fn send_unwrapped(&self, path: &str) -> impl Future<Output = Reply>;
}

/// The text of `/explain` for a rejection: `status | Display | source`.
pub fn explain(status: u16, rejection: &dyn std::error::Error) -> String {
    format!(
        "{status} | {rejection} | {}",
        rejection
            .source()
            .map(ToString::to_string)
            .unwrap_or_default()
    )
}

/// The body of the session routes, by path:
/// - `/`: adds one to `n`, answers it; `/peek`: answers `n` (0 when unset).
/// - `/login`: `cycle_id`, `user = alice`; `/logout`: `destroy`.
/// - `/bye`: `destroy`, then a flash `notice`; `/show`: takes the flash.
/// - `/slow`: reads `n`, notifies `entered`, waits for `gate`, writes `cart = n + 100`;
///   `/cart`: answers `cart`.
/// - `/fail-mid`: writes `n = 100`, then makes the probe fail.
/// - `/spawned`: adds one to `n` in a spawned task, across awaits, and answers it.
/// - `/fail-500`: writes `n = 100` and answers 500; `/logout-500`: `destroy`, then 500.
/// - `/remember`: gives the session its own persistent expiry (idle 30 days, lifetime 90
///   days); `/short`: a browser-session one (idle 5 minutes).
/// - `/own`: gives the session to the owner `alice`.
/// - `/hit`: increments the counter `hits` ([`Session::increment`]), yields a few times (so
///   that concurrent requests all load before any saves), answers the value it saw;
///   `/hits`: answers `hits` (0 when unset).
///
/// Every other path answers 200.
///
/// # Panics
/// On an unknown path, or a value that does not decode.
pub async fn respond(path: &str, session: &Session, hooks: &Hooks) -> (u16, String) {
    match path {
        "/fail-500" => {
            session.insert("n", 100u64).unwrap();
            (500, "failed".into())
        }
        "/logout-500" => {
            session.destroy();
            (500, "failed".into())
        }
        _ => (200, respond_ok(path, session, hooks).await),
    }
}

async fn respond_ok(path: &str, session: &Session, hooks: &Hooks) -> String {
    let n = || session.get::<u64>("n").unwrap().unwrap_or(0);
    match path {
        "/" => {
            let next = n() + 1;
            session.insert("n", next).unwrap();
            next.to_string()
        }
        "/peek" => n().to_string(),
        "/own" => {
            session.set_owner(Some("alice"));
            "owned".into()
        }
        "/remember" => {
            const DAY: Duration = Duration::from_secs(24 * 3600);
            session.set_expiry(Some(session_core::SessionExpiry::persistent(
                Some(30 * DAY),
                Some(90 * DAY),
            )));
            "remembered".into()
        }
        "/short" => {
            session.set_expiry(Some(session_core::SessionExpiry::browser_session(
                Some(Duration::from_secs(5 * 60)),
                None,
            )));
            "short".into()
        }
        "/hit" => {
            let seen = session.increment("hits", 1).unwrap();
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            seen.to_string()
        }
        "/hits" => session.get::<i64>("hits").unwrap().unwrap_or(0).to_string(),
        "/login" => {
            session.cycle_id();
            session.insert("user", "alice").unwrap();
            "welcome".into()
        }
        "/logout" => {
            session.destroy();
            "bye".into()
        }
        "/bye" => {
            session.destroy();
            session.flash("notice", "logged out").unwrap();
            "bye".into()
        }
        "/show" => session
            .take_flash::<String>("notice")
            .unwrap()
            .unwrap_or_default(),
        "/slow" => {
            let before = n();
            hooks.entered.notify_one();
            hooks.gate.notified().await;
            session.insert("cart", before + 100).unwrap();
            "saved".into()
        }
        "/cart" => session.get::<u64>("cart").unwrap().unwrap_or(0).to_string(),
        "/fail-mid" => {
            session.insert("n", 100u64).unwrap();
            hooks.probe.as_ref().unwrap().set_failing(true);
            "changed".into()
        }
        "/spawned" => {
            let moved = session.clone();
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                let next = moved.get::<u64>("n").unwrap().unwrap_or(0) + 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                moved.insert("n", next).unwrap();
                next
            });
            task.await.unwrap().to_string()
        }
        other => panic!("no scenario route {other}"),
    }
}

/// A memory store behind a probe, a manual clock, a manager over them (idle 30 min, absolute
/// 2 h) and a key.
#[derive(Debug)]
pub struct Fixture {
    /// Counts store calls, and fails on demand.
    pub probe: Arc<ProbeStore>,
    /// The manager's clock.
    pub clock: Arc<ManualClock>,
    /// The manager.
    pub manager: SessionManager,
    /// The key the app signs with.
    pub key: Key,
    /// The app: default settings.
    pub app: App,
    /// What the manager's listener was told, in order.
    pub events: Arc<std::sync::Mutex<Vec<SessionEvent>>>,
}

impl Fixture {
    /// The fixture with default settings.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// The fixture with settings changed by `configure`.
    pub fn with(configure: impl FnOnce(&mut SessionConfig)) -> Self {
        let probe = Arc::new(ProbeStore::new(Arc::new(MemoryStore::default())));
        let clock = Arc::new(ManualClock::new());
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let told = events.clone();
        let manager = SessionManager::builder_arc(probe.clone())
            .idle_timeout(Some(Duration::from_secs(30 * 60)))
            .absolute_lifetime(Some(Duration::from_secs(2 * 3600)))
            .clock(clock.clone())
            .listener(move |event: &SessionEvent| told.lock().unwrap().push(event.clone()))
            .build();
        let key = Key::generate();
        let app = app(&manager, &key, Some(probe.clone()), configure);
        Self {
            probe,
            clock,
            manager,
            key,
            app,
            events,
        }
    }

    /// Another app over the same manager, signing with `key`.
    pub fn app_with(&self, key: &Key, configure: impl FnOnce(&mut SessionConfig)) -> App {
        app(&self.manager, key, Some(self.probe.clone()), configure)
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// An app over `manager` signing with `key`.
pub fn app(
    manager: &SessionManager,
    key: &Key,
    probe: Option<Arc<ProbeStore>>,
    configure: impl FnOnce(&mut SessionConfig),
) -> App {
    let mut config = SessionConfig::new(manager.clone(), key);
    configure(&mut config);
    App {
        config,
        hooks: Arc::new(Hooks {
            entered: Notify::new(),
            gate: Notify::new(),
            probe,
        }),
    }
}

/// Expands to one test per scenario for `framework` (an expression of a type implementing
/// [`Framework`]), each with the given test attribute:
///
/// ```ignore
/// session_testing::http_scenarios!(#[tokio::test] Tower);
/// ```
#[macro_export]
macro_rules! http_scenarios {
    (#[$test:meta] $framework:expr) => {
        $crate::__http_scenarios!(#[$test] $framework;
            a_new_visitor_gets_a_signed_cookie_with_safe_defaults,
            the_counter_increments_across_requests,
            a_request_that_does_not_touch_the_session_costs_nothing,
            a_read_only_request_writes_nothing_and_sets_no_cookie,
            bad_cookies_start_a_fresh_session_without_a_store_lookup,
            our_cookie_is_found_among_many_kilobytes_of_other_cookies,
            an_unknown_but_well_signed_id_is_not_adopted,
            key_rotation_keeps_old_cookies_valid_and_signs_with_the_new_key,
            a_persistent_cookie_is_sent_again_only_when_it_falls_behind,
            logout_removes_the_cookie_and_the_record,
            login_cycles_the_id_and_the_old_id_is_dead,
            idle_and_absolute_expiry_are_observed,
            a_store_outage_answers_503_by_default,
            a_rejection_carries_the_store_error_and_its_body_hides_it,
            an_outage_during_save_answers_503_and_keeps_the_old_data,
            fail_open_runs_the_handler_with_an_unsaved_empty_session,
            a_missing_middleware_is_a_clear_500,
            a_damaged_record_starts_a_fresh_session_by_default,
            browser_session_cookies_have_no_max_age,
            a_write_racing_a_login_sends_no_removal_cookie,
            max_age_is_never_rounded_down_to_a_dead_cookie,
            a_read_only_request_re_signs_an_old_key_cookie_without_a_write,
            a_flash_after_logout_reaches_the_next_page,
            the_session_works_across_awaits_and_in_spawned_tasks,
            a_server_error_leaves_the_stored_session_as_it_was,
            a_partitioned_cookie_and_a_broken_host_prefix,
            api_clients_carry_the_token_in_a_named_header,
            api_clients_carry_a_bearer_token,
            store_calls_errors_and_503s_are_counted_through_metrics,
            concurrent_increments_through_http_all_count,
            a_remembered_session_outlives_the_default_and_a_short_one_dies_early,
            lifecycle_events_reach_the_listener,
            devices_are_recorded_and_one_session_can_be_ended,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __http_scenarios {
    (#[$test:meta] $framework:expr; $($name:ident),* $(,)?) => {
        $(
            #[$test]
            async fn $name() {
                $crate::scenarios::$name(&$framework).await;
            }
        )*
    };
}

/// Sends with a text cookie.
async fn get<F: Framework>(f: &F, app: &App, path: &str, cookie: Option<&str>) -> Reply {
    f.send(app, path, cookie.map(str::as_bytes)).await
}

/// A new visitor gets a signed cookie with safe defaults.
pub async fn a_new_visitor_gets_a_signed_cookie_with_safe_defaults<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let reply = get(f, &fx.app, "/", None).await;
    assert_eq!(reply.status, 200);
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

/// The counter increments across requests.
pub async fn the_counter_increments_across_requests<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    for want in 2..=4 {
        let reply = get(f, &fx.app, "/", Some(&cookie)).await;
        assert_eq!(reply.body, want.to_string());
    }
}

/// A route that never asks for the session makes no store call and sends no cookie.
pub async fn a_request_that_does_not_touch_the_session_costs_nothing<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let calls = fx.probe.calls();
    let reply = get(f, &fx.app, "/health", Some(&cookie)).await;
    assert_eq!(reply.body, "ok");
    assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
    assert_eq!(
        fx.probe.calls(),
        calls,
        "the store was asked for a route that never used it"
    );
}

/// A read-only request loads once, writes nothing and sets no cookie.
pub async fn a_read_only_request_writes_nothing_and_sets_no_cookie<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let calls = fx.probe.calls();
    let reply = get(f, &fx.app, "/peek", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert!(reply.set_cookies.is_empty());
    assert_eq!(fx.probe.calls(), calls + 1, "only the load");
}

/// Tampered, unsigned, foreign, oversized and hostile cookies start a fresh session without
/// a store lookup, and the client's id is never adopted.
pub async fn bad_cookies_start_a_fresh_session_without_a_store_lookup<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let good = get(f, &fx.app, "/", None).await.cookie();
    let (name, value) = good.split_once('=').unwrap();
    let mut flipped = value.as_bytes().to_vec();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let id_only = value.split('.').next().unwrap();
    let unsigned = value.rsplit_once('.').unwrap().0;
    let foreign = {
        let other = Fixture::new();
        get(f, &other.app, "/", None).await.cookie()
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
        "id=AAAAAAAAAAAAAAAAAAAA%0D%0Aflush_all".to_owned(),
    ];
    for cookie in cases {
        let before = fx.probe.calls();
        let reply = get(f, &fx.app, "/", Some(&cookie)).await;
        assert_eq!(reply.status, 200, "{cookie}");
        assert_eq!(reply.body, "1", "{cookie} reached an existing session");
        assert_ne!(reply.cookie(), cookie, "the client's id was adopted");
        assert_eq!(
            fx.probe.calls(),
            before + 1,
            "{cookie}: a store lookup happened (only the create is expected)"
        );
    }
}

/// A browser sends every cookie of the site in one header: 9 KB of analytics cookies, or a
/// cookie with bytes that are not UTF-8, beside ours must not cost the user their session.
pub async fn our_cookie_is_found_among_many_kilobytes_of_other_cookies<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let ours = get(f, &fx.app, "/", None).await.cookie();
    let others: Vec<String> = (0..90)
        .map(|i| format!("_ga_{i}={}", "x".repeat(96)))
        .collect();
    let header = format!(
        "{}; {ours}; {}",
        others[..45].join("; "),
        others[45..].join("; ")
    );
    assert!(header.len() > 9000, "{}", header.len());
    assert_eq!(get(f, &fx.app, "/", Some(&header)).await.body, "2");

    let mut raw = b"pref=caf\xe9; ".to_vec();
    raw.extend_from_slice(header.as_bytes());
    assert_eq!(f.send(&fx.app, "/", Some(&raw)).await.body, "3");
}

/// A well-signed id the store does not know (expired, logged out) starts a new session with
/// a new id.
pub async fn an_unknown_but_well_signed_id_is_not_adopted<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    get(f, &fx.app, "/logout", Some(&cookie)).await;
    let reply = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(reply.body, "1");
    assert_ne!(reply.cookie(), cookie);
}

/// Rotation: an old key's cookie is accepted and re-signed with the new key.
pub async fn key_rotation_keeps_old_cookies_valid_and_signs_with_the_new_key<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let old_cookie = get(f, &fx.app, "/", None).await.cookie();
    let old_key = fx.key.clone();
    let rotated = fx.app_with(&Key::generate(), |c| c.accept_key(&old_key));
    let reply = get(f, &rotated, "/", Some(&old_cookie)).await;
    assert_eq!(
        reply.body, "2",
        "a cookie signed with the old key was rejected"
    );
    let new_cookie = reply.cookie();
    assert_ne!(
        new_cookie, old_cookie,
        "the refreshed cookie is signed with the new key"
    );
    assert_eq!(get(f, &rotated, "/", Some(&new_cookie)).await.body, "3");
    // The old app (old key only) does not accept the new key's signature.
    assert_eq!(get(f, &fx.app, "/", Some(&new_cookie)).await.body, "1");
}

/// A persistent cookie is re-sent only once the session's expiry moved `touch_after` past it.
pub async fn a_persistent_cookie_is_sent_again_only_when_it_falls_behind<F: Framework>(f: &F) {
    // Idle 30 min: `touch_after` is 3 min.
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    fx.clock.advance(Duration::from_secs(2 * 60));
    let reply = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(reply.body, "2");
    assert!(
        reply.set_cookies.is_empty(),
        "re-sent after 2 min: {:?}",
        reply.set_cookies
    );
    fx.clock.advance(Duration::from_secs(2 * 60));
    let reply = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(reply.body, "3");
    assert!(
        reply.set_cookies[0].contains("Max-Age=1800"),
        "{:?}",
        reply.set_cookies
    );
    // The refreshed cookie carries the new expiry: not behind again until 3 more minutes.
    let cookie = reply.cookie();
    fx.clock.advance(Duration::from_secs(2 * 60));
    let reply = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(reply.body, "4");
    assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
}

/// Logout removes the cookie and the record.
pub async fn logout_removes_the_cookie_and_the_record<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let reply = get(f, &fx.app, "/logout", Some(&cookie)).await;
    let removal = &reply.set_cookies[0];
    assert!(
        removal.starts_with("id=;") && removal.contains("Max-Age=0"),
        "{removal}"
    );
    assert_eq!(fx.probe.calls(), 3, "create, load, delete");
    assert_eq!(get(f, &fx.app, "/peek", Some(&cookie)).await.body, "0");
}

/// Login cycles the id; the data stays, the old id is dead.
pub async fn login_cycles_the_id_and_the_old_id_is_dead<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let before = get(f, &fx.app, "/", None).await.cookie();
    let after = get(f, &fx.app, "/login", Some(&before)).await.cookie();
    assert_ne!(after, before);
    assert_eq!(
        get(f, &fx.app, "/peek", Some(&after)).await.body,
        "1",
        "data kept across the cycle"
    );
    assert_eq!(
        get(f, &fx.app, "/peek", Some(&before)).await.body,
        "0",
        "the pre-login id still works"
    );
}

/// The idle timeout and the absolute lifetime both end a session.
pub async fn idle_and_absolute_expiry_are_observed<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    fx.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(get(f, &fx.app, "/", Some(&cookie)).await.body, "2");
    fx.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        get(f, &fx.app, "/", Some(&cookie)).await.body,
        "1",
        "idle timeout not honoured"
    );

    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    for _ in 0..4 {
        fx.clock.advance(Duration::from_secs(25 * 60));
        assert_ne!(get(f, &fx.app, "/", Some(&cookie)).await.body, "1");
    }
    fx.clock.advance(Duration::from_secs(25 * 60)); // 2h05 after creation, active 25 min ago
    assert_eq!(
        get(f, &fx.app, "/", Some(&cookie)).await.body,
        "1",
        "absolute lifetime not honoured"
    );
}

/// A store outage answers 503, and nothing is half-written.
pub async fn a_store_outage_answers_503_by_default<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    fx.probe.set_failing(true);
    let reply = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(reply.status, 503);
    assert!(reply.set_cookies.is_empty());
    let fresh = get(f, &fx.app, "/", None).await;
    assert_eq!(fresh.status, 503, "the save failed, so 503");
    fx.probe.set_failing(false);
    assert_eq!(
        get(f, &fx.app, "/", Some(&cookie)).await.body,
        "2",
        "nothing was half-written"
    );
}

/// A handler that takes `Result<Session, SessionRejection>` sees the store's error as the
/// rejection's source, while the response body a client would get names no store detail.
pub async fn a_rejection_carries_the_store_error_and_its_body_hides_it<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    fx.probe.set_failing(true);
    let reply = get(f, &fx.app, "/explain", Some(&cookie)).await;
    let parts: Vec<&str> = reply.body.split(" | ").collect();
    assert_eq!(
        parts[..2],
        ["503", "the session store is unavailable"],
        "{}",
        reply.body
    );
    assert!(parts[2].contains("simulated outage"), "{}", reply.body);
    // Through the plain extractor the client gets the status and the Display only.
    let plain = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(plain.status, 503);
    assert_eq!(plain.body, "the session store is unavailable");
}

/// The store fails while the handler runs: 503, and the stored session is as it was.
pub async fn an_outage_during_save_answers_503_and_keeps_the_old_data<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let reply = get(f, &fx.app, "/fail-mid", Some(&cookie)).await;
    assert_eq!(reply.status, 503);
    assert!(reply.set_cookies.is_empty(), "{:?}", reply.set_cookies);
    fx.probe.set_failing(false);
    assert_eq!(get(f, &fx.app, "/peek", Some(&cookie)).await.body, "1");
}

/// Fail-open: the handler runs with an empty session that is never saved.
pub async fn fail_open_runs_the_handler_with_an_unsaved_empty_session<F: Framework>(f: &F) {
    let fx = Fixture::with(|c| c.set_fail_open(true));
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    fx.probe.set_failing(true);
    let reply = get(f, &fx.app, "/", Some(&cookie)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "1");
    assert!(
        reply.set_cookies.is_empty(),
        "a fail-open session must not replace the cookie"
    );
    fx.probe.set_failing(false);
    assert_eq!(
        get(f, &fx.app, "/", Some(&cookie)).await.body,
        "2",
        "the real session survived"
    );
}

/// A route without the middleware answers a 500 that says what is missing.
pub async fn a_missing_middleware_is_a_clear_500<F: Framework>(f: &F) {
    let reply = f.send_unwrapped("/").await;
    assert_eq!(reply.status, 500);
    assert!(reply.body.contains("no Session"), "{}", reply.body);
}

/// Two quirks a scenario turns on in a memory store ([`quirky`]): every stored record reads
/// as damaged (and deletes are recorded), or a create takes `latency` of a manual clock's
/// time.
#[derive(Debug, Default)]
pub struct Quirks {
    damaged: bool,
    slow_create: Option<(Arc<ManualClock>, Duration)>,
    /// The keys deleted.
    pub deleted: std::sync::Mutex<Vec<StorageKey>>,
}

impl StoreHooks for Quirks {
    fn loaded(&self, found: Option<Record>) -> Result<Option<Record>, StoreError> {
        match found {
            Some(_) if self.damaged => Err(StoreError::corrupt("damaged", "garbage in the record")),
            found => Ok(found),
        }
    }
    fn creating(&self, _record: &Record) -> Result<(), StoreError> {
        if let Some((clock, latency)) = &self.slow_create {
            clock.advance(*latency);
        }
        Ok(())
    }
    fn deleting(&self, key: &StorageKey) {
        self.deleted.lock().unwrap().push(*key);
    }
}

/// A memory store with `quirks`.
pub fn quirky(quirks: Quirks) -> Intercept<Quirks> {
    Intercept::with_hooks(Arc::new(MemoryStore::default()), quirks)
}

/// A damaged record starts a fresh session (and is deleted); with `Reject`, it is a 503.
pub async fn a_damaged_record_starts_a_fresh_session_by_default<F: Framework>(f: &F) {
    let store = Arc::new(quirky(Quirks {
        damaged: true,
        ..Quirks::default()
    }));
    let manager = SessionManager::builder_arc(store.clone()).build();
    let fresh = app(&manager, &Key::generate(), None, |_| {});
    let cookie = get(f, &fresh, "/", None).await.cookie();
    for _ in 0..3 {
        let reply = get(f, &fresh, "/", Some(&cookie)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "1");
        assert_ne!(
            reply.cookie(),
            cookie,
            "the client keeps the damaged session's id"
        );
    }
    assert!(
        !store.hooks().deleted.lock().unwrap().is_empty(),
        "the damaged record was not deleted"
    );

    let strict = app(&manager, &Key::generate(), None, |c| {
        c.set_on_corrupt(CorruptPolicy::Reject);
    });
    let cookie = get(f, &strict, "/", None).await.cookie();
    assert_eq!(get(f, &strict, "/", Some(&cookie)).await.status, 503);
}

/// A browser-session cookie carries no `Max-Age`, and updates send no new cookie.
pub async fn browser_session_cookies_have_no_max_age<F: Framework>(f: &F) {
    let fx = Fixture::with(|c| {
        c.set_persistent(false);
        c.set_cookie_name("sid".into());
        c.set_cookie_domain("example.com".into());
    });
    let reply = get(f, &fx.app, "/", None).await;
    let set = &reply.set_cookies[0];
    assert!(
        set.starts_with("sid=") && !set.contains("Max-Age") && set.contains("Domain=example.com"),
        "{set}"
    );
    let reply = get(f, &fx.app, "/", Some(&reply.cookie())).await;
    assert!(reply.set_cookies.is_empty());
}

/// A page that writes to the session while another request logs the user in: its save finds
/// the old id cycled; its write reaches the session under the new id, and its response
/// carries no cookie (a removal would delete the fresh login cookie in a browser that
/// applies it after the login response).
pub async fn a_write_racing_a_login_sends_no_removal_cookie<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let hooks = fx.app.hooks.clone();
    let (late, signed_in) = tokio::join!(get(f, &fx.app, "/slow", Some(&cookie)), async {
        hooks.entered.notified().await;
        let signed_in = get(f, &fx.app, "/login", Some(&cookie)).await.cookie();
        hooks.gate.notify_one();
        signed_in
    });
    assert_ne!(signed_in, cookie);
    assert_eq!(late.status, 200);
    assert!(
        late.set_cookies.is_empty(),
        "the late response would delete the login cookie: {:?}",
        late.set_cookies
    );
    assert_eq!(get(f, &fx.app, "/peek", Some(&signed_in)).await.body, "1");
    assert_eq!(
        get(f, &fx.app, "/cart", Some(&signed_in)).await.body,
        "101",
        "the write racing the login was lost"
    );
}

/// Max-Age counts from the instant the expiry was set, rounded up: a store that takes
/// 300 ms does not turn a 1 s idle timeout into `Max-Age=0` (the browser would drop the
/// cookie at once), nor 1800 s into 1799.
pub async fn max_age_is_never_rounded_down_to_a_dead_cookie<F: Framework>(f: &F) {
    for (idle, want) in [(1, "Max-Age=1;"), (1800, "Max-Age=1800;")] {
        let clock = Arc::new(ManualClock::new());
        let store = quirky(Quirks {
            slow_create: Some((clock.clone(), Duration::from_millis(300))),
            ..Quirks::default()
        });
        let manager = SessionManager::builder(store)
            .idle_timeout(Some(Duration::from_secs(idle)))
            .clock(clock)
            .build();
        let slow = app(&manager, &Key::generate(), None, |_| {});
        let reply = get(f, &slow, "/", None).await;
        assert!(
            reply.set_cookies[0].contains(want),
            "idle {idle} s: {:?}",
            reply.set_cookies
        );
    }
}

/// Rotation: a cookie signed by an old key is signed under the new key on the response of a
/// request that only reads the session, or does not look at it — with no store write.
pub async fn a_read_only_request_re_signs_an_old_key_cookie_without_a_write<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let old_cookie = get(f, &fx.app, "/", None).await.cookie();
    let new_key = Key::generate();
    let old_key = fx.key.clone();
    let rotated = fx.app_with(&new_key, |c| c.accept_key(&old_key));
    let only_new = fx.app_with(&new_key, |_| {});
    for path in ["/peek", "/health"] {
        let before = fx.probe.calls();
        let reply = get(f, &rotated, path, Some(&old_cookie)).await;
        assert_eq!(reply.status, 200, "{path}");
        let resigned = reply.cookie();
        assert_ne!(resigned, old_cookie, "{path}: not signed again");
        assert!(reply.set_cookies[0].contains("Max-Age="), "{path}");
        let reads = usize::from(path == "/peek");
        assert_eq!(fx.probe.calls(), before + reads, "{path}: a store write");
        // The new cookie is the same session, verified by the new key alone.
        assert_eq!(get(f, &only_new, "/peek", Some(&resigned)).await.body, "1");
    }
}

/// Logout, then a flash ("You have been logged out"): the response carries a new session's
/// cookie instead of a removal, the message shows once, and the old cookie stays dead.
pub async fn a_flash_after_logout_reaches_the_next_page<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let old = get(f, &fx.app, "/", None).await.cookie();
    let reply = get(f, &fx.app, "/bye", Some(&old)).await;
    assert!(
        !reply.set_cookies[0].contains("Max-Age=0"),
        "{:?}",
        reply.set_cookies
    );
    let fresh = reply.cookie();
    assert_ne!(fresh, old);
    assert_eq!(
        get(f, &fx.app, "/show", Some(&fresh)).await.body,
        "logged out"
    );
    assert_eq!(get(f, &fx.app, "/show", Some(&fresh)).await.body, "");
    assert_eq!(get(f, &fx.app, "/peek", Some(&old)).await.body, "0");
}

/// The session moves into a spawned task and across awaits; what the task writes before the
/// handler returns is saved with the response (actix-session's `Session` cannot do this).
pub async fn the_session_works_across_awaits_and_in_spawned_tasks<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let first = get(f, &fx.app, "/spawned", None).await;
    assert_eq!(first.body, "1");
    let cookie = first.cookie();
    assert_eq!(get(f, &fx.app, "/spawned", Some(&cookie)).await.body, "2");
    assert_eq!(
        get(f, &fx.app, "/peek", Some(&cookie)).await.body,
        "2",
        "the task's write was lost"
    );
}

/// A handler that answers 5xx: its writes and its logout are not saved and no cookie is
/// sent; with `save_on_server_error`, they are.
pub async fn a_server_error_leaves_the_stored_session_as_it_was<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let failed = get(f, &fx.app, "/fail-500", Some(&cookie)).await;
    assert_eq!(failed.status, 500);
    assert!(failed.set_cookies.is_empty(), "{:?}", failed.set_cookies);
    assert_eq!(
        get(f, &fx.app, "/peek", Some(&cookie)).await.body,
        "1",
        "a failed request's write was saved"
    );
    let failed = get(f, &fx.app, "/logout-500", Some(&cookie)).await;
    assert!(failed.set_cookies.is_empty(), "{:?}", failed.set_cookies);
    assert_eq!(
        get(f, &fx.app, "/peek", Some(&cookie)).await.body,
        "1",
        "a failed request's logout was saved"
    );
    // A new visitor whose first request fails gets no session at all.
    let fresh = get(f, &fx.app, "/fail-500", None).await;
    assert!(fresh.set_cookies.is_empty(), "{:?}", fresh.set_cookies);

    let saving = fx.app_with(&fx.key, |c| c.set_save_on_server_error(true));
    let failed = get(f, &saving, "/fail-500", Some(&cookie)).await;
    assert_eq!(failed.status, 500);
    assert_eq!(get(f, &fx.app, "/peek", Some(&cookie)).await.body, "100");
}

/// `Partitioned` reaches the cookie; a `__Host-` cookie with a `Domain` (which browsers drop)
/// is never sent, and the request still succeeds.
pub async fn a_partitioned_cookie_and_a_broken_host_prefix<F: Framework>(f: &F) {
    let fx = Fixture::with(|c| c.set_partitioned(true));
    let reply = get(f, &fx.app, "/", None).await;
    assert!(
        reply.set_cookies[0].contains("; Partitioned"),
        "{:?}",
        reply.set_cookies
    );
    assert!(
        reply.set_cookies[0].contains("; Secure"),
        "{:?}",
        reply.set_cookies
    );

    let host = Fixture::with(|c| c.set_cookie_name("__Host-id".into()));
    let reply = get(f, &host.app, "/", None).await;
    assert!(
        reply.set_cookies[0].starts_with("__Host-id="),
        "{:?}",
        reply.set_cookies
    );
    let broken = Fixture::with(|c| {
        c.set_cookie_name("__Host-id".into());
        c.set_cookie_domain("example.com".into());
    });
    let reply = get(f, &broken.app, "/", None).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.set_cookies.is_empty(),
        "a cookie browsers drop was sent: {:?}",
        reply.set_cookies
    );
}

/// `Transport::Header`: the token travels in `x-session-token` both ways, with the cookie's
/// signing; no cookie is read or sent; login gives a new token, logout an empty one.
pub async fn api_clients_carry_the_token_in_a_named_header<F: Framework>(f: &F) {
    let fx = Fixture::with(|c| c.set_transport(Transport::Header("x-session-token".into())));
    let send = |path: &'static str, token: Option<String>| {
        let app = &fx.app;
        async move {
            match &token {
                Some(token) => {
                    f.send_headers(app, path, &[("x-session-token", token.as_bytes())])
                        .await
                }
                None => f.send_headers(app, path, &[]).await,
            }
        }
    };
    let first = send("/", None).await;
    assert_eq!(first.body, "1");
    assert!(first.set_cookies.is_empty(), "{:?}", first.set_cookies);
    let token = first.header("x-session-token")[0].to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let second = send("/", Some(token.clone())).await;
    assert_eq!(second.body, "2");
    assert!(
        second.header("x-session-token").is_empty(),
        "a token re-sent on every response"
    );
    // The same value as a cookie is not read.
    let cookie = format!("id={token}");
    assert_eq!(
        f.send(&fx.app, "/peek", Some(cookie.as_bytes())).await.body,
        "0"
    );
    // Tampered: a fresh session. One character of the tag's middle changed (never the last,
    // whose low bits are padding, and never to itself: the token's own last character was
    // an `A` once in 64 runs, which left it untampered).
    let at = token.len() - 10;
    let swap = if token.as_bytes()[at] == b'A' {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    assert_ne!(tampered, token);
    assert_eq!(send("/peek", Some(tampered)).await.body, "0");

    let login = send("/login", Some(token.clone())).await;
    let signed_in = login.header("x-session-token")[0].to_owned();
    assert_ne!(signed_in, token);
    assert_eq!(send("/peek", Some(signed_in.clone())).await.body, "2");
    assert_eq!(
        send("/peek", Some(token)).await.body,
        "0",
        "the pre-login token still works"
    );
    let logout = send("/logout", Some(signed_in.clone())).await;
    assert_eq!(
        logout.header("x-session-token"),
        [""],
        "no empty token on logout"
    );
    assert_eq!(send("/peek", Some(signed_in)).await.body, "0");
}

/// `Transport::Bearer`: `Authorization: Bearer <token>` in, `session-token` out.
pub async fn api_clients_carry_a_bearer_token<F: Framework>(f: &F) {
    let fx = Fixture::with(|c| c.set_transport(Transport::Bearer("session-token".into())));
    let first = f.send_headers(&fx.app, "/", &[]).await;
    let token = first.header("session-token")[0].to_owned();
    let bearer = format!("Bearer {token}");
    let reply = f
        .send_headers(&fx.app, "/", &[("authorization", bearer.as_bytes())])
        .await;
    assert_eq!(reply.body, "2");
    let lower = format!("bearer {token}");
    let reply = f
        .send_headers(&fx.app, "/peek", &[("authorization", lower.as_bytes())])
        .await;
    assert_eq!(reply.body, "2", "the scheme is case-insensitive");
    for wrong in [format!("Basic {token}"), token.clone(), "Bearer".to_owned()] {
        let reply = f
            .send_headers(&fx.app, "/peek", &[("authorization", wrong.as_bytes())])
            .await;
        assert_eq!(reply.body, "0", "{wrong}");
    }
    // Rotation: a token signed by the old key is accepted, and a new one is sent back.
    let old_key = fx.key.clone();
    let rotated = fx.app_with(&Key::generate(), |c| {
        c.accept_key(&old_key);
        c.set_transport(Transport::Bearer("session-token".into()));
    });
    let reply = f
        .send_headers(&rotated, "/peek", &[("authorization", bearer.as_bytes())])
        .await;
    assert_eq!(reply.body, "2");
    let resigned = reply.header("session-token");
    assert!(resigned.len() == 1 && resigned[0] != token, "{resigned:?}");
}

/// With the `metrics` feature, the manager counts and times every store call by operation,
/// counts failed calls by kind, and the HTTP layer counts the 503s, the fail-open serves and
/// the damaged records it started afresh from.
pub async fn store_calls_errors_and_503s_are_counted_through_metrics<F: Framework>(f: &F) {
    use session_core::metrics::{
        DAMAGED_RECORDS, FAIL_OPEN, STORE_CALL_SECONDS, STORE_CALLS, STORE_ERRORS,
        UNAVAILABLE_RESPONSES,
    };
    let recorded = crate::recorder::Recorded::default();
    let _installed = metrics::set_default_local_recorder(&recorded);
    let calls = |op| recorded.counter(STORE_CALLS, &[("op", op)]);

    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    assert_eq!((calls("create"), calls("load")), (1, 0));
    assert_eq!(get(f, &fx.app, "/", Some(&cookie)).await.body, "2");
    assert_eq!((calls("load"), calls("update")), (1, 1));
    assert_eq!(
        recorded
            .samples(STORE_CALL_SECONDS, &[("op", "update")])
            .len(),
        1,
        "one latency sample per call"
    );
    get(f, &fx.app, "/logout", Some(&cookie)).await;
    assert_eq!(calls("delete"), 1);

    let cookie = get(f, &fx.app, "/", None).await.cookie();
    fx.probe.set_failing(true);
    assert_eq!(get(f, &fx.app, "/", Some(&cookie)).await.status, 503);
    assert_eq!(
        recorded.counter(STORE_ERRORS, &[("op", "load"), ("kind", "unavailable")]),
        1
    );
    assert_eq!(recorded.counter(UNAVAILABLE_RESPONSES, &[]), 1);
    fx.probe.set_failing(false);

    let open = Fixture::with(|c| c.set_fail_open(true));
    let cookie = get(f, &open.app, "/", None).await.cookie();
    open.probe.set_failing(true);
    assert_eq!(get(f, &open.app, "/", Some(&cookie)).await.status, 200);
    assert_eq!(recorded.counter(FAIL_OPEN, &[]), 1);

    let damaged = SessionManager::builder_arc(Arc::new(quirky(Quirks {
        damaged: true,
        ..Quirks::default()
    })))
    .build();
    let fresh = app(&damaged, &Key::generate(), None, |_| {});
    let cookie = get(f, &fresh, "/", None).await.cookie();
    assert_eq!(get(f, &fresh, "/", Some(&cookie)).await.body, "1");
    assert_eq!(recorded.counter(DAMAGED_RECORDS, &[]), 1);
    assert_eq!(
        recorded.counter(STORE_ERRORS, &[("op", "load"), ("kind", "corrupt")]),
        1
    );
}

/// Every request adds to the counter: 50 requests with one cookie, all loading the session
/// before any saves, leave exactly 50 more (the increment travels to the store as an
/// addition, not as the sum each request saw).
pub async fn concurrent_increments_through_http_all_count<F: Framework>(f: &F) {
    const REQUESTS: usize = 50;
    let fx = Fixture::new();
    let first = get(f, &fx.app, "/hit", None).await;
    assert_eq!(first.body, "1");
    let cookie = first.cookie();
    let replies = all((0..REQUESTS)
        .map(|_| Box::pin(get(f, &fx.app, "/hit", Some(&cookie))) as Pending<'_, Reply>)
        .collect())
    .await;
    assert!(
        replies.iter().all(|r| r.status == 200),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let total = get(f, &fx.app, "/hits", Some(&cookie)).await;
    assert_eq!(
        total.body,
        (REQUESTS + 1).to_string(),
        "increments were lost"
    );
}

type Pending<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs `futures` together on the current task, polling each in turn, and returns their
/// outputs in order (a `join_all` without a dependency; test clients need not be `Send`).
async fn all<T>(futures: Vec<Pending<'_, T>>) -> Vec<T> {
    let mut pending: Vec<Option<Pending<'_, T>>> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *out = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// A session's own expiry through HTTP: "remember me" re-sends the cookie at once with a
/// 30-day `Max-Age` and the session outlives the manager's idle timeout (30 min) and
/// lifetime (2 h); a short one re-sends it without `Max-Age` (a browser-session cookie) and
/// the session ends after its own 5 idle minutes, where the manager's would keep it.
pub async fn a_remembered_session_outlives_the_default_and_a_short_one_dies_early<F: Framework>(
    f: &F,
) {
    let fx = Fixture::new();
    let first = get(f, &fx.app, "/", None).await;
    assert!(first.set_cookies[0].contains("Max-Age=1800"));
    let cookie = first.cookie();
    let remembered = get(f, &fx.app, "/remember", Some(&cookie)).await;
    let set = remembered
        .set_cookies
        .first()
        .expect("remember me did not send the cookie again");
    assert!(set.contains("Max-Age=2592000"), "{set}");
    for _ in 0..9 {
        fx.clock.advance(Duration::from_secs(20 * 60));
        assert_ne!(
            get(f, &fx.app, "/", Some(&cookie)).await.body,
            "1",
            "the remembered session ended by the manager's expiry"
        );
    }

    let fx = Fixture::new();
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let short = get(f, &fx.app, "/short", Some(&cookie)).await;
    let set = short
        .set_cookies
        .first()
        .expect("a browser-session expiry did not send the cookie again");
    assert!(!set.contains("Max-Age"), "{set}");
    fx.clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(get(f, &fx.app, "/", Some(&cookie)).await.body, "2");
    fx.clock.advance(Duration::from_secs(6 * 60));
    assert_eq!(
        get(f, &fx.app, "/", Some(&cookie)).await.body,
        "1",
        "the short session outlived its own 5 idle minutes"
    );
}

/// The manager's listener hears each session's life through HTTP: created on the first
/// write, id cycled at login, destroyed at logout (and a fresh session created for the
/// logout's flash), expired when a request presents a session past its idle timeout.
pub async fn lifecycle_events_reach_the_listener<F: Framework>(f: &F) {
    let fx = Fixture::new();
    let taken = || std::mem::take(&mut *fx.events.lock().unwrap());
    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let created = match &taken()[..] {
        [SessionEvent::Created { key, owner: None }] => *key,
        other => panic!("first visit: {other:?}"),
    };
    assert!(
        get(f, &fx.app, "/peek", Some(&cookie))
            .await
            .set_cookies
            .is_empty()
    );
    assert_eq!(taken(), [], "a read told the listener something");
    let login = get(f, &fx.app, "/login", Some(&cookie)).await.cookie();
    let cycled = match &taken()[..] {
        [SessionEvent::IdCycled { from, to, .. }] if *from == created => *to,
        other => panic!("login: {other:?}"),
    };
    get(f, &fx.app, "/bye", Some(&login)).await;
    match &taken()[..] {
        [
            SessionEvent::Destroyed { key },
            SessionEvent::Created { key: fresh, .. },
        ] if *key == cycled && *fresh != cycled => {}
        other => panic!("logout with a flash: {other:?}"),
    }

    let cookie = get(f, &fx.app, "/", None).await.cookie();
    let key = match &taken()[..] {
        [SessionEvent::Created { key, .. }] => *key,
        other => panic!("{other:?}"),
    };
    fx.clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(get(f, &fx.app, "/", Some(&cookie)).await.body, "1");
    match &taken()[..] {
        [
            SessionEvent::Expired { key: expired },
            SessionEvent::Created { .. },
        ] if *expired == key => {}
        other => panic!("a request after the idle timeout: {other:?}"),
    }
}

/// With `record_user_agent` and `client_ip_header`, each session records its device when it
/// is written and again only when the device changes; the owner's "active sessions" list
/// shows both browsers with their user agent and client IP (the first address of
/// `X-Forwarded-For`); ending one by its handle logs that browser out and leaves the other.
pub async fn devices_are_recorded_and_one_session_can_be_ended<F: Framework>(f: &F) {
    let fx = Fixture::with(|c| {
        c.set_record_user_agent(true);
        c.set_client_ip_header(Some("X-Forwarded-For".into()));
    });
    let send = |path: &'static str, cookie: Option<String>, agent: &'static [u8]| {
        let app = fx.app.clone();
        async move {
            let mut headers: Vec<(&str, &[u8])> = vec![
                ("user-agent", agent),
                ("x-forwarded-for", b"203.0.113.9, 10.0.0.1"),
            ];
            if let Some(cookie) = &cookie {
                headers.push(("cookie", cookie.as_bytes()));
            }
            f.send_headers(&app, path, &headers).await
        }
    };
    let anonymous = send("/peek", None, b"Bot/1.0").await;
    assert!(
        anonymous.set_cookies.is_empty(),
        "an anonymous visitor got a cookie"
    );
    let calls = fx.probe.calls();
    let laptop = send("/", None, b"Laptop/1.0").await.cookie();
    send("/own", Some(laptop.clone()), b"Laptop/1.0").await;
    let phone = send("/", None, b"Phone/2.0").await.cookie();
    send("/own", Some(phone.clone()), b"Phone/2.0").await;
    assert!(fx.probe.calls() > calls);

    let devices = fx.manager.devices_of("alice").await.unwrap();
    let mut agents: Vec<&str> = devices
        .iter()
        .map(|d| d.user_agent.as_deref().unwrap())
        .collect();
    agents.sort_unstable();
    assert_eq!(agents, ["Laptop/1.0", "Phone/2.0"]);
    assert!(
        devices
            .iter()
            .all(|d| d.ip.as_deref() == Some("203.0.113.9") && d.last_seen.is_some()),
        "{devices:?}"
    );

    // The same device again: a read costs the load only, no write.
    let calls = fx.probe.calls();
    let reply = send("/peek", Some(laptop.clone()), b"Laptop/1.0").await;
    assert_eq!(reply.body, "1");
    assert_eq!(
        fx.probe.calls() - calls,
        1,
        "a read with the same device wrote"
    );

    let laptop_key = devices
        .iter()
        .find(|d| d.user_agent.as_deref() == Some("Laptop/1.0"))
        .unwrap()
        .key;
    assert!(
        !fx.manager
            .end_session_of("mallory", &laptop_key)
            .await
            .unwrap()
    );
    assert!(
        fx.manager
            .end_session_of("alice", &laptop_key)
            .await
            .unwrap()
    );
    assert_eq!(
        send("/", Some(laptop), b"Laptop/1.0").await.body,
        "1",
        "the ended session still worked"
    );
    assert_eq!(send("/", Some(phone), b"Phone/2.0").await.body, "2");
}
