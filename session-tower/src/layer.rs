//! The tower [`Layer`] and [`Service`], and the lazily loaded session they hand to handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cookie::{Key, SameSite};
use http::{Request, Response, StatusCode, header::SET_COOKIE};
use session_core::{
    SaveOutcome, Session, SessionError, SessionId, SessionManager, StoreError, Timestamp,
};
use tokio::sync::OnceCell;
use tower_layer::Layer;
use tower_service::Service;
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

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) manager: SessionManager,
    pub(crate) signer: CookieSigner,
    pub(crate) cookie: CookieConfig,
    pub(crate) fail_open: bool,
    pub(crate) on_corrupt: CorruptPolicy,
}

/// Adds sessions to a tower service: reads the signed cookie, loads the session lazily when
/// a handler asks for it, saves it after the handler and sets or clears the cookie.
///
/// Defaults: cookie `id`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, persistent
/// (`Max-Age` follows the session's expiry); a store outage answers 503.
///
/// The key signs the cookie with HMAC-SHA256. Use a key dedicated to sessions, from at least
/// 64 random bytes (`Key::try_from`), 32 bytes expanded (`Key::derive_from`), or
/// `Key::generate()` (sessions then end at restart).
#[derive(Debug, Clone)]
pub struct SessionLayer {
    config: Arc<Config>,
}

impl SessionLayer {
    /// A layer over `manager` signing cookies with `key`.
    pub fn new(manager: SessionManager, key: Key) -> Self {
        Self {
            config: Arc::new(Config {
                manager,
                signer: CookieSigner::new(&key),
                cookie: CookieConfig::default(),
                fail_open: false,
                on_corrupt: CorruptPolicy::default(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Also accepts cookies signed with `key` (an old key, during rotation). New cookies are
    /// always signed with the key given to [`SessionLayer::new`], and a cookie signed with
    /// an old key is signed again with it the next time its session is saved.
    #[must_use]
    pub fn accept_key(self, key: Key) -> Self {
        self.with(|c| c.signer.accept(&key))
    }

    /// The cookie's name (default `id`).
    #[must_use]
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|c| c.cookie.name = name)
    }

    /// The cookie's `Path` (default `/`).
    #[must_use]
    pub fn cookie_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with(|c| c.cookie.path = path)
    }

    /// The cookie's `Domain` (default none: this host only).
    #[must_use]
    pub fn cookie_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        self.with(|c| c.cookie.domain = Some(domain))
    }

    /// The `Secure` attribute (default on). Turn it off only for plain HTTP in development.
    #[must_use]
    pub fn secure(self, secure: bool) -> Self {
        self.with(|c| c.cookie.secure = secure)
    }

    /// The `HttpOnly` attribute (default on).
    #[must_use]
    pub fn http_only(self, http_only: bool) -> Self {
        self.with(|c| c.cookie.http_only = http_only)
    }

    /// The `SameSite` attribute (default `Lax`).
    #[must_use]
    pub fn same_site(self, same_site: SameSite) -> Self {
        self.with(|c| c.cookie.same_site = same_site)
    }

    /// Persistent cookie with `Max-Age` following the session's expiry (default), or a
    /// browser-session cookie (`false`) that the browser drops when it closes.
    ///
    /// A persistent cookie is sent again only when the session's expiry has moved past the
    /// cookie's own by the manager's
    /// [`touch_after`](session_core::SessionManagerBuilder::touch_after) (default a tenth of
    /// the idle timeout) — the same rule that spares the store a `touch` — rather than
    /// re-signed on every response. The browser may therefore drop the cookie up to that
    /// long before the idle timeout would end the session.
    #[must_use]
    pub fn persistent(self, persistent: bool) -> Self {
        self.with(|c| c.cookie.persistent = persistent)
    }

    /// On a store outage, run the handler with an empty session that is never saved instead
    /// of answering 503 (default off).
    #[must_use]
    pub fn fail_open(self, fail_open: bool) -> Self {
        self.with(|c| c.fail_open = fail_open)
    }

    /// What to do with a damaged stored record (default [`CorruptPolicy::StartFresh`]).
    #[must_use]
    pub fn on_corrupt(self, policy: CorruptPolicy) -> Self {
        self.with(|c| c.on_corrupt = policy)
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let cookie = self
            .config
            .cookie
            .read_id(req.headers(), &self.config.signer);
        let (id, cookie_expires, old_key_expires) = match cookie {
            Some((id, expires, true)) => (Some(id), Some(expires), None),
            Some((id, expires, false)) => (Some(id), None, Some(expires)),
            None => (None, None, None),
        };
        let lazy = LazySession {
            inner: Arc::new(LazyInner {
                config: self.config.clone(),
                id,
                cookie_expires,
                old_key_expires,
                cell: OnceCell::new(),
            }),
        };
        req.extensions_mut().insert(lazy.clone());
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            lazy.finish(&mut response).await;
            Ok(response)
        })
    }
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

/// Why a handler could not have its session. Its `Display` is what the response's body
/// says, so it never shows the store's error to the client; [`std::error::Error::source`]
/// gives that error to the application (to log it, or to build its own error page).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The route is not wrapped in a [`SessionLayer`] (a programming error: answers 500).
    #[error(
        "session-tower: no SessionLayer on this route; add `.layer(SessionLayer::new(..))` to the router"
    )]
    MissingLayer,
    /// The store could not be reached (answers 503).
    #[error("the session store is unavailable")]
    Unavailable {
        /// The store's error.
        #[source]
        source: Arc<SessionError>,
    },
}

impl SessionRejection {
    /// The HTTP status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The request's session, loaded from the store the first time it is asked for.
///
/// [`SessionLayer`] puts one in every request's extensions; the axum extractor uses it, and
/// other tower services call [`LazySession::get`] themselves.
#[derive(Debug, Clone)]
pub struct LazySession {
    inner: Arc<LazyInner>,
}

#[derive(Debug)]
struct LazyInner {
    config: Arc<Config>,
    /// The verified id from the cookie.
    id: Option<SessionId>,
    /// When the browser was told the cookie expires (signed, in the cookie); `None` when
    /// the cookie must be signed again (no cookie, or one signed by an old key).
    cookie_expires: Option<Timestamp>,
    /// The expiry of a cookie signed by an old key (rotation): the response signs it again
    /// under the current key, even when the session is not written.
    old_key_expires: Option<Timestamp>,
    cell: OnceCell<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    session: Session,
    /// False for the empty stand-in a fail-open layer hands out during an outage.
    persist: bool,
}

impl LazySession {
    /// The session: loaded on the first call, the same handle afterwards.
    ///
    /// # Errors
    /// [`SessionRejection::Unavailable`], with the store's error as its source, when the
    /// store fails (unless the layer fails open).
    pub async fn get(&self) -> Result<Session, SessionRejection> {
        self.inner
            .cell
            .get_or_try_init(|| {
                self.load()
                    .instrument(debug_span(|| tracing::debug_span!("session.load")))
            })
            .await
            .map(|loaded| loaded.session.clone())
    }

    /// Whether a handler asked for the session.
    pub fn is_loaded(&self) -> bool {
        self.inner.cell.initialized()
    }

    async fn load(&self) -> Result<Loaded, SessionRejection> {
        let config = &self.inner.config;
        let manager = &config.manager;
        let Some(id) = &self.inner.id else {
            tracing::debug!(outcome = "new", "no valid session cookie");
            return Ok(Loaded {
                session: manager.create(),
                persist: true,
            });
        };
        match manager.load(id).await {
            Ok(Some(session)) => {
                tracing::debug!(outcome = "loaded");
                Ok(Loaded {
                    session,
                    persist: true,
                })
            }
            Ok(None) => {
                tracing::debug!(
                    outcome = "unknown",
                    "unknown or expired session id: a fresh session"
                );
                Ok(Loaded {
                    session: manager.create(),
                    persist: true,
                })
            }
            Err(SessionError::Store(error @ StoreError::Corrupt { .. }))
                if config.on_corrupt == CorruptPolicy::StartFresh =>
            {
                tracing::warn!(%error, key = %id.storage_key(), "damaged session record: starting a fresh session");
                if let Err(error) = manager.store().delete(&id.storage_key()).await {
                    tracing::warn!(%error, "could not delete the damaged session record");
                }
                Ok(Loaded {
                    session: manager.create(),
                    persist: true,
                })
            }
            Err(error) if config.fail_open => {
                tracing::warn!(%error, "session store failed: failing open with an unsaved empty session");
                Ok(Loaded {
                    session: manager.create(),
                    persist: false,
                })
            }
            Err(error) => {
                tracing::error!(%error, "session store failed: answering 503");
                Err(SessionRejection::Unavailable {
                    source: Arc::new(error),
                })
            }
        }
    }

    /// Saves the session if a handler loaded it, and sets or clears the cookie.
    async fn finish<B: Default>(&self, response: &mut Response<B>) {
        let Some(loaded) = self.inner.cell.get() else {
            // Not asked for: nothing to save, but a cookie signed by an old key is signed
            // again under the current one, with the same id and expiry (no store call).
            if let Some(header) = self.resigned() {
                response.headers_mut().append(SET_COOKIE, header);
            }
            return;
        };
        if !loaded.persist {
            return;
        }
        let config = &self.inner.config;
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
                return;
            }
            Err(error) => {
                tracing::error!(%error, "saving the session failed: answering 503");
                *response = Response::new(B::default());
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return;
            }
        };
        tracing::debug!(?outcome, "session saved");
        let header = match outcome {
            SaveOutcome::Created | SaveOutcome::Cycled => self.cookie_for(&loaded.session),
            SaveOutcome::Updated | SaveOutcome::Touched
                if config.cookie.persistent && self.cookie_behind(&loaded.session) =>
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
            SaveOutcome::Destroyed => config.cookie.removal(),
            // The record vanished under this request: another request cycled its id (login)
            // or destroyed it (logout), and that response carries the cookie the browser must
            // keep — a newer session's, or its own removal. Sending a removal here could
            // delete a cookie set after it, logging the user out right after login.
            SaveOutcome::Gone => None,
            _ => None,
        };
        if let Some(header) = header {
            response.headers_mut().append(SET_COOKIE, header);
        }
    }

    /// Whether the session's expiry has moved far enough past the one the browser's cookie
    /// carries to send the cookie again.
    fn cookie_behind(&self, session: &Session) -> bool {
        self.inner.cookie_expires.is_none_or(|cookie_expires| {
            self.inner
                .config
                .manager
                .refresh_due(cookie_expires, session.expires_at())
        })
    }

    /// The request's old-key cookie signed under the current key, while it has not expired.
    fn resigned(&self) -> Option<http::HeaderValue> {
        let (id, expires) = (self.inner.id.as_ref()?, self.inner.old_key_expires?);
        let config = &self.inner.config;
        let now = config.manager.now();
        if expires <= now {
            return None;
        }
        config.cookie.set_cookie(id, &config.signer, expires, now)
    }

    fn cookie_for(&self, session: &Session) -> Option<http::HeaderValue> {
        let config = &self.inner.config;
        config.cookie.set_cookie(
            &session.id(),
            &config.signer,
            session.expires_at(),
            config.manager.now(),
        )
    }
}
