//! The session a request carries: read from the cookie, loaded on first use, and after the
//! handler saved with the cookie to send decided.

use std::sync::Arc;

use cookie::Key;
use session_core::{
    SaveOutcome, Session, SessionError, SessionExpiry, SessionId, SessionManager, StoreError,
    Timestamp,
};
use tokio::sync::OnceCell;
use tracing::Instrument as _;

use crate::cookies::{CookieConfig, CookieSigner};

/// What to do when a session's stored record is damaged or foreign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CorruptPolicy {
    /// Log a warning, delete the damaged record, and start a fresh session (default): the
    /// client gets a new cookie, so a bad record never causes an error on every request.
    #[default]
    StartFresh,
    /// Treat it like an outage (503, or fail-open).
    Reject,
}

/// Where the session's signed token travels (the same value a cookie would hold, under the
/// same signing and rotation).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// The cookie (default).
    #[default]
    Cookie,
    /// A header of this name, both ways: requests send the token in it, and responses carry
    /// a new token in it on create, on `cycle_id` and when it is refreshed, and an empty value
    /// on `destroy`. No cookie is read or sent.
    Header(String),
    /// Requests send `Authorization: Bearer <token>`; responses carry new tokens (and an
    /// empty value on `destroy`) in the header named here. No cookie is read or sent.
    Bearer(String),
}

/// Everything an HTTP integration needs to run sessions: the manager, the cookie's signer and
/// attributes, and the failure policies. `session-tower`'s `SessionLayer` and
/// `session-actix`'s `SessionMiddleware` each hold one and set it with the same builder
/// methods (see [`settings_methods!`](crate::settings_methods)).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) manager: SessionManager,
    pub(crate) signer: CookieSigner,
    pub(crate) cookie: CookieConfig,
    pub(crate) fail_open: bool,
    pub(crate) on_corrupt: CorruptPolicy,
    pub(crate) save_on_server_error: bool,
    pub(crate) transport: Transport,
    pub(crate) record_user_agent: bool,
    pub(crate) client_ip_header: Option<String>,
}

impl SessionConfig {
    /// Sessions of `manager`, their cookie signed with `key`, with the defaults: cookie `id`,
    /// `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, persistent; an outage answers 503; a
    /// damaged record starts a fresh session.
    pub fn new(manager: SessionManager, key: &Key) -> Self {
        Self {
            manager,
            signer: CookieSigner::new(key),
            cookie: CookieConfig::default(),
            fail_open: false,
            on_corrupt: CorruptPolicy::default(),
            save_on_server_error: false,
            transport: Transport::Cookie,
            record_user_agent: false,
            client_ip_header: None,
        }
    }

    /// The request header the token is read from: `cookie`, the transport's header, or
    /// `authorization`. An adapter hands its values to [`LazySession::from_headers`].
    pub fn request_header(&self) -> &str {
        match &self.transport {
            Transport::Cookie => "cookie",
            Transport::Header(name) => name,
            Transport::Bearer(_) => "authorization",
        }
    }

    /// The response header [`Finish::Set`] is for: `None` for `Set-Cookie`, else the
    /// transport's header name.
    pub fn response_header(&self) -> Option<&str> {
        match &self.transport {
            Transport::Cookie => None,
            Transport::Header(name) | Transport::Bearer(name) => Some(name),
        }
    }

    /// The session manager.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// Also accepts cookies signed with `key` (rotation).
    pub fn accept_key(&mut self, key: &Key) {
        self.signer.accept(key);
    }

    /// The cookie's name.
    pub fn set_cookie_name(&mut self, name: String) {
        self.cookie.name = name;
    }

    /// The cookie's `Path`.
    pub fn set_cookie_path(&mut self, path: String) {
        self.cookie.path = path;
    }

    /// The cookie's `Domain`.
    pub fn set_cookie_domain(&mut self, domain: String) {
        self.cookie.domain = Some(domain);
    }

    /// The `Secure` attribute.
    pub fn set_secure(&mut self, secure: bool) {
        self.cookie.secure = secure;
    }

    /// The `HttpOnly` attribute.
    pub fn set_http_only(&mut self, http_only: bool) {
        self.cookie.http_only = http_only;
    }

    /// The `SameSite` attribute.
    pub fn set_same_site(&mut self, same_site: cookie::SameSite) {
        self.cookie.same_site = same_site;
    }

    /// Persistent (`Max-Age`) or browser-session cookie.
    pub fn set_persistent(&mut self, persistent: bool) {
        self.cookie.persistent = persistent;
    }

    /// Serve an unsaved empty session during an outage instead of failing the request.
    pub fn set_fail_open(&mut self, fail_open: bool) {
        self.fail_open = fail_open;
    }

    /// What to do with a damaged stored record.
    pub fn set_on_corrupt(&mut self, policy: CorruptPolicy) {
        self.on_corrupt = policy;
    }

    /// The `Partitioned` attribute (CHIPS).
    pub fn set_partitioned(&mut self, partitioned: bool) {
        self.cookie.partitioned = partitioned;
    }

    /// Save the session after a handler that answered 5xx.
    pub fn set_save_on_server_error(&mut self, save: bool) {
        self.save_on_server_error = save;
    }

    /// Where the token travels (default the cookie).
    pub fn set_transport(&mut self, transport: Transport) {
        self.transport = transport;
    }

    /// Record each session's `User-Agent` for [`SessionManager::devices_of`].
    pub fn set_record_user_agent(&mut self, record: bool) {
        self.record_user_agent = record;
    }

    /// Record each session's client IP, read from this request header (lowercase).
    pub fn set_client_ip_header(&mut self, name: Option<String>) {
        self.client_ip_header = name.map(|n| n.to_ascii_lowercase());
    }

    /// Whether sessions record their `User-Agent`.
    pub fn records_user_agent(&self) -> bool {
        self.record_user_agent
    }

    /// The request header sessions record their client IP from, if any.
    pub fn client_ip_header(&self) -> Option<&str> {
        self.client_ip_header.as_deref()
    }

    /// Whether an integration must hand each request's device headers to
    /// [`LazySession::set_client`].
    pub fn records_devices(&self) -> bool {
        self.record_user_agent || self.client_ip_header.is_some()
    }
}

/// The longest `User-Agent` recorded; longer ones are cut (a header is not a place to store
/// kilobytes in every session).
const MAX_USER_AGENT: usize = 256;
/// The longest client IP recorded.
const MAX_IP: usize = 64;

/// The constructors and builder methods every HTTP integration offers, with the same names
/// and docs: expanded inside the `impl` block of a type whose one field is
/// `config: Arc<SessionConfig>`. The type's name goes in the docs (`"SessionLayer"`,
/// `"SessionMiddleware"`).
#[doc(hidden)]
#[macro_export]
macro_rules! settings_methods {
    ($name:literal) => {
        #[doc = concat!("A ", $name, " over `manager` signing cookies with `key`.")]
        pub fn new(manager: $crate::__private::SessionManager, key: $crate::Key) -> Self {
            Self::from_config($crate::SessionConfig::new(manager, &key))
        }

        #[doc = concat!("A ", $name, " with the settings of `config`: one `SessionConfig` serves session-tower and session-actix alike.")]
        pub fn from_config(config: $crate::SessionConfig) -> Self {
            Self {
                config: ::std::sync::Arc::new(config),
            }
        }

        fn with(mut self, f: impl FnOnce(&mut $crate::SessionConfig)) -> Self {
            f(::std::sync::Arc::make_mut(&mut self.config));
            self
        }

        #[doc = concat!("Also accepts cookies signed with `key` (an old key, during rotation). New cookies are always signed with the key given to `", $name, "::new`, and a cookie signed with an old key is signed again with it on the next response that sends the session's cookie, or on the first response when the handler does not write.")]
        #[must_use]
        pub fn accept_key(self, key: $crate::Key) -> Self {
            self.with(|c| c.accept_key(&key))
        }

        /// The cookie's name (default `id`).
        #[must_use]
        pub fn cookie_name(self, name: impl Into<String>) -> Self {
            let name = name.into();
            self.with(|c| c.set_cookie_name(name))
        }

        /// The cookie's `Path` (default `/`).
        #[must_use]
        pub fn cookie_path(self, path: impl Into<String>) -> Self {
            let path = path.into();
            self.with(|c| c.set_cookie_path(path))
        }

        /// The cookie's `Domain` (default none: this host only).
        #[must_use]
        pub fn cookie_domain(self, domain: impl Into<String>) -> Self {
            let domain = domain.into();
            self.with(|c| c.set_cookie_domain(domain))
        }

        /// The `Secure` attribute (default on). Turn it off only for plain HTTP in development.
        #[must_use]
        pub fn secure(self, secure: bool) -> Self {
            self.with(|c| c.set_secure(secure))
        }

        /// The `HttpOnly` attribute (default on).
        #[must_use]
        pub fn http_only(self, http_only: bool) -> Self {
            self.with(|c| c.set_http_only(http_only))
        }

        /// The `SameSite` attribute (default `Lax`).
        #[must_use]
        pub fn same_site(self, same_site: $crate::SameSite) -> Self {
            self.with(|c| c.set_same_site(same_site))
        }

        /// Persistent cookie with `Max-Age` following the session's expiry (default), or a
        /// browser-session cookie (`false`) that the browser drops when it closes.
        ///
        /// A persistent cookie is sent again only when the session's expiry has moved past the
        /// cookie's own by the manager's `touch_after` (default a tenth of the idle timeout) —
        /// the same rule that spares the store a `touch` — rather than re-signed on every
        /// response. The browser may therefore drop the cookie up to that long before the idle
        /// timeout would end the session.
        #[must_use]
        pub fn persistent(self, persistent: bool) -> Self {
            self.with(|c| c.set_persistent(persistent))
        }

        /// On a store outage, run the handler with an empty session that is never saved
        /// instead of answering 503 (default off).
        #[must_use]
        pub fn fail_open(self, fail_open: bool) -> Self {
            self.with(|c| c.set_fail_open(fail_open))
        }

        /// What to do with a damaged stored record (default `CorruptPolicy::StartFresh`).
        #[must_use]
        pub fn on_corrupt(self, policy: $crate::CorruptPolicy) -> Self {
            self.with(|c| c.set_on_corrupt(policy))
        }

        /// The `Partitioned` attribute (CHIPS: a cookie kept per top-level site, for an app
        /// embedded in other sites' pages), default off. It needs `Secure`; so does a cookie
        /// named `__Secure-…`, and one named `__Host-…` also needs `Path=/` and no `Domain`.
        /// A cookie that breaks these rules, which browsers would drop, is never sent: each
        /// response logs an error instead.
        #[must_use]
        pub fn partitioned(self, partitioned: bool) -> Self {
            self.with(|c| c.set_partitioned(partitioned))
        }

        /// Sessions for API clients: the signed token travels in the header `name` both
        /// ways instead of a cookie (`Transport::Header`); same signing, rotation and
        /// refresh rules. The name is lowercase (`x-session-token`).
        #[must_use]
        pub fn token_header(self, name: impl Into<String>) -> Self {
            let name = name.into().to_ascii_lowercase();
            self.with(|c| c.set_transport($crate::Transport::Header(name)))
        }

        /// Sessions for API clients: requests send `Authorization: Bearer <token>`, and new
        /// tokens come back in the response header `response_header` (`Transport::Bearer`).
        #[must_use]
        pub fn bearer_token(self, response_header: impl Into<String>) -> Self {
            let name = response_header.into().to_ascii_lowercase();
            self.with(|c| c.set_transport($crate::Transport::Bearer(name)))
        }

        /// Save the session after a handler that answered with a 5xx status (default off,
        /// as tower-sessions does): by default a failed request leaves the stored session as
        /// it was — its writes, `cycle_id` and `destroy` are dropped, and no cookie is sent.
        #[must_use]
        pub fn save_on_server_error(self, save: bool) -> Self {
            self.with(|c| c.set_save_on_server_error(save))
        }

        /// Record each session's `User-Agent` for an "active sessions" page
        /// (`SessionManager::devices_of`; default off). Written only when it changes, and
        /// never for a visitor whose session holds no data. Personal data: see the privacy
        /// note in `session_core::devices`.
        #[must_use]
        pub fn record_user_agent(self, record: bool) -> Self {
            self.with(|c| c.set_record_user_agent(record))
        }

        /// Record each session's client IP, read from the request header `name` (default
        /// none): the first address of `X-Forwarded-For`, or `X-Real-IP`, as the app's own
        /// reverse proxy sets it — only a header that proxy overwrites can be trusted.
        /// Personal data: see the privacy note in `session_core::devices`.
        #[must_use]
        pub fn client_ip_header(self, name: impl Into<String>) -> Self {
            let name = name.into();
            self.with(|c| c.set_client_ip_header(Some(name)))
        }
    };
}

/// `make()`'s span when a subscriber records debug spans, else none. A disabled span is not
/// free: when any crate in the build turns on tracing's `log` feature and no subscriber is
/// set, each one still goes through the `log` fallback on creation, enter and exit (about 400
/// instructions a request, measured).
fn debug_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::enabled!(tracing::Level::DEBUG) {
        make()
    } else {
        tracing::Span::none()
    }
}

/// The store could not be reached: the request answers 503. The store's error is kept for
/// the application (to log it, or to build its own error page), never shown to the client.
#[derive(Debug, Clone)]
pub struct Unavailable(pub Arc<SessionError>);

/// What the response needs once the handler is done ([`LazySession::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finish {
    /// Nothing to add.
    Nothing,
    /// Append this value (already checked to be a valid header value) to the response header
    /// [`SessionConfig::response_header`] names: `Set-Cookie` by default.
    Set(String),
    /// Saving failed: replace the response with an empty 503.
    Unavailable,
}

/// The request's session, loaded from the store the first time it is asked for.
#[derive(Debug, Clone)]
pub struct LazySession {
    inner: Arc<LazyInner>,
}

#[derive(Debug)]
struct LazyInner {
    config: Arc<SessionConfig>,
    /// The verified id from the cookie.
    id: Option<SessionId>,
    /// When the browser was told the cookie expires (signed, in the cookie); `None` when
    /// the cookie must be signed again (no cookie, or one signed by an old key).
    cookie_expires: Option<Timestamp>,
    /// The expiry of a cookie signed by an old key (rotation): the response signs it again
    /// under the current key, even when the session is not written.
    old_key_expires: Option<Timestamp>,
    /// The request's `User-Agent` and client IP, when the configuration records them.
    client: Option<(Option<String>, Option<String>)>,
    cell: OnceCell<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    session: Session,
    /// False for the empty stand-in a fail-open layer hands out during an outage.
    persist: bool,
    /// The session's own expiry when it was loaded: when the handler changes it, the
    /// response carries the cookie again (persistent or not, with its new `Max-Age`).
    own_expiry: Option<SessionExpiry>,
}

impl LazySession {
    /// The session of a request whose [`SessionConfig::request_header`] headers (`Cookie` by
    /// default) hold `values` (their bytes): the token is verified here, and nothing is
    /// loaded until [`LazySession::get`].
    pub fn from_headers<'a>(
        config: Arc<SessionConfig>,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Self {
        let cookie = match &config.transport {
            Transport::Cookie => config.cookie.read_id(values, &config.signer),
            Transport::Header(_) => values
                .into_iter()
                .next()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|token| config.signer.verify_with(&config.cookie.name, token.trim())),
            Transport::Bearer(_) => values
                .into_iter()
                .filter_map(|v| std::str::from_utf8(v).ok())
                .find_map(|value| {
                    let (scheme, token) = value.trim().split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| config.signer.verify_with(&config.cookie.name, token.trim()))?
                }),
        };
        let (id, cookie_expires, old_key_expires) = match cookie {
            Some((id, expires, true)) => (Some(id), Some(expires), None),
            Some((id, expires, false)) => (Some(id), None, Some(expires)),
            None => (None, None, None),
        };
        Self {
            inner: Arc::new(LazyInner {
                config,
                id,
                cookie_expires,
                old_key_expires,
                client: None,
                cell: OnceCell::new(),
            }),
        }
    }

    /// Hands over the request's `User-Agent` and client-IP header values (the one
    /// [`SessionConfig::client_ip_header`] names), for a configuration that
    /// [records devices](SessionConfig::records_devices); the response's save records them
    /// with the session. Call it right after [`LazySession::from_headers`], before cloning.
    pub fn set_client(&mut self, user_agent: Option<&[u8]>, ip: Option<&[u8]>) {
        let config = &self.inner.config;
        let text = |bytes: &[u8], max: usize| {
            let text = std::str::from_utf8(bytes).ok()?.trim();
            (!text.is_empty()).then(|| text.chars().take(max).collect::<String>())
        };
        let user_agent = user_agent
            .filter(|_| config.record_user_agent)
            .and_then(|ua| text(ua, MAX_USER_AGENT));
        // `X-Forwarded-For: client, proxy1, proxy2`: the first is the client.
        let ip = ip
            .filter(|_| config.client_ip_header.is_some())
            .and_then(|ip| text(ip, 1024))
            .and_then(|ip| {
                ip.split(',')
                    .next()
                    .map(|first| first.trim().chars().take(MAX_IP).collect())
            });
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.client = Some((user_agent, ip));
        }
    }

    /// The session: loaded on the first call, the same handle afterwards.
    ///
    /// # Errors
    /// [`Unavailable`], with the store's error, when the store fails (unless the
    /// configuration fails open).
    pub async fn get(&self) -> Result<Session, Unavailable> {
        self.inner
            .cell
            .get_or_try_init(|| {
                self.load()
                    .instrument(debug_span(|| tracing::debug_span!("session.load")))
            })
            .await
            .map(|loaded| loaded.session.clone())
    }

    /// The configuration this session runs under.
    pub fn config(&self) -> &SessionConfig {
        &self.inner.config
    }

    /// Whether a handler asked for the session.
    pub fn is_loaded(&self) -> bool {
        self.inner.cell.initialized()
    }

    async fn load(&self) -> Result<Loaded, Unavailable> {
        let config = &self.inner.config;
        let manager = &config.manager;
        let fresh = |persist| Loaded {
            session: manager.create(),
            persist,
            own_expiry: None,
        };
        let Some(id) = &self.inner.id else {
            tracing::debug!(outcome = "new", "no valid session cookie");
            return Ok(fresh(true));
        };
        // The token's signed expiry (under the current key or an old one): a session whose
        // record is gone after it passed is reported expired to the manager's listener.
        let presented = self
            .inner
            .cookie_expires
            .or(self.inner.old_key_expires)
            .unwrap_or(Timestamp::from_unix_millis(i64::MAX));
        match manager.load_presented(id, presented).await {
            Ok(Some(session)) => {
                tracing::debug!(outcome = "loaded");
                Ok(Loaded {
                    own_expiry: session.own_expiry(),
                    session,
                    persist: true,
                })
            }
            Ok(None) => {
                tracing::debug!(
                    outcome = "unknown",
                    "unknown or expired session id: a fresh session"
                );
                Ok(fresh(true))
            }
            Err(SessionError::Store(error @ StoreError::Corrupt { .. }))
                if config.on_corrupt == CorruptPolicy::StartFresh =>
            {
                tracing::warn!(%error, key = %id.storage_key(), "damaged session record: starting a fresh session");
                session_core::metrics::damaged_record();
                if let Err(error) = manager.store().delete(&id.storage_key()).await {
                    tracing::warn!(%error, "could not delete the damaged session record");
                }
                Ok(fresh(true))
            }
            Err(error) if config.fail_open => {
                tracing::warn!(%error, "session store failed: failing open with an unsaved empty session");
                session_core::metrics::fail_open();
                Ok(fresh(false))
            }
            Err(error) => {
                tracing::error!(%error, "session store failed: answering 503");
                session_core::metrics::unavailable_response();
                Err(Unavailable(Arc::new(error)))
            }
        }
    }

    /// After the handler answered with `status`: saves the session if it was loaded, and
    /// says which cookie to send (or that the response must become a 503). A 5xx status
    /// saves nothing and sends no cookie, unless the configuration saves on server errors.
    pub async fn finish(&self, status: u16) -> Finish {
        let config = &self.inner.config;
        if status >= 500 && !config.save_on_server_error {
            if self.is_loaded() {
                tracing::debug!(status, "the handler failed: the session is not saved");
            }
            return Finish::Nothing;
        }
        let Some(loaded) = self.inner.cell.get() else {
            // Not asked for: nothing to save, but a cookie signed by an old key is signed
            // again under the current one, with the same id and expiry (no store call).
            return self.resigned().map_or(Finish::Nothing, Finish::Set);
        };
        if !loaded.persist {
            return Finish::Nothing;
        }
        if let Some((user_agent, ip)) = &self.inner.client {
            loaded
                .session
                .set_client(user_agent.as_deref(), ip.as_deref());
        }
        let span = debug_span(|| tracing::debug_span!("session.save"));
        let saved = config
            .manager
            .save(&loaded.session)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        let outcome = match saved {
            Ok(outcome) => outcome,
            Err(error) if config.fail_open => {
                tracing::warn!(%error, "saving the session failed: failing open");
                session_core::metrics::fail_open();
                return Finish::Nothing;
            }
            Err(error) => {
                tracing::error!(%error, "saving the session failed: answering 503");
                session_core::metrics::unavailable_response();
                return Finish::Unavailable;
            }
        };
        tracing::debug!(?outcome, "session saved");
        let header = match outcome {
            SaveOutcome::Created | SaveOutcome::Cycled => self.cookie_for(&loaded.session),
            SaveOutcome::Updated if loaded.session.own_expiry() != loaded.own_expiry => {
                self.cookie_for(&loaded.session)
            }
            SaveOutcome::Updated | SaveOutcome::Touched
                if (self.persistent(&loaded.session) || config.transport != Transport::Cookie)
                    && self.cookie_behind(&loaded.session) =>
            {
                self.cookie_for(&loaded.session)
            }
            // Read, not written: a cookie signed by an old key is signed again.
            SaveOutcome::Unchanged
                if self.inner.old_key_expires.is_some()
                    && self.inner.id.as_ref() == Some(&loaded.session.id()) =>
            {
                self.cookie_for(&loaded.session)
            }
            SaveOutcome::Destroyed => match config.transport {
                Transport::Cookie => config.cookie.removal(),
                // An empty token: the client drops the one it holds.
                _ => Some(String::new()),
            },
            // The record vanished under this request: another request cycled its id (login)
            // or destroyed it (logout), and that response carries the cookie the browser must
            // keep — a newer session's, or its own removal. Sending a removal here could
            // delete a cookie set after it, logging the user out right after login.
            SaveOutcome::Gone => None,
            _ => None,
        };
        header.map_or(Finish::Nothing, Finish::Set)
    }

    /// Whether the session's expiry has moved far enough past the one the browser's cookie
    /// carries to send the cookie again.
    fn cookie_behind(&self, session: &Session) -> bool {
        self.inner.cookie_expires.is_none_or(|cookie_expires| {
            self.inner
                .config
                .manager
                .refresh_due_for(session, cookie_expires, session.expires_at())
        })
    }

    /// Whether `session`'s cookie is persistent: its own expiry says, or the configuration.
    fn persistent(&self, session: &Session) -> bool {
        session
            .own_expiry()
            .map_or(self.inner.config.cookie.persistent, |own| {
                own.is_persistent()
            })
    }

    /// The request's old-key cookie signed under the current key, while it has not expired.
    fn resigned(&self) -> Option<String> {
        let (id, expires) = (self.inner.id.as_ref()?, self.inner.old_key_expires?);
        let config = &self.inner.config;
        let now = config.manager.now();
        if expires <= now {
            return None;
        }
        // Not loaded: the session's own expiry is unknown here, so the configuration says.
        self.header_value(id, expires, now, config.cookie.persistent)
    }

    fn cookie_for(&self, session: &Session) -> Option<String> {
        let now = self.inner.config.manager.now();
        let persistent = self.persistent(session);
        self.header_value(&session.id(), session.expires_at(), now, persistent)
    }

    /// The response header's value carrying `id`: a `Set-Cookie` (with `Max-Age` when
    /// `persistent`), or the bare token.
    fn header_value(
        &self,
        id: &SessionId,
        expires: Timestamp,
        now: Timestamp,
        persistent: bool,
    ) -> Option<String> {
        let config = &self.inner.config;
        match config.transport {
            Transport::Cookie => {
                config
                    .cookie
                    .set_cookie(id, &config.signer, expires, now, persistent)
            }
            // base64url, digits and dots: always a valid header value.
            _ => Some(config.signer.sign(&config.cookie.name, id, expires)),
        }
    }
}
