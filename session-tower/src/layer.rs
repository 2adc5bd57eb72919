//! The tower [`Layer`] and [`Service`], and the lazily loaded session they hand to handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{
    HeaderName, HeaderValue, Request, Response, StatusCode, header::COOKIE, header::SET_COOKIE,
};
use session_core::{Session, SessionError};
use session_http::{Finish, SessionConfig};
use tower_layer::Layer;
use tower_service::Service;

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
    config: Arc<SessionConfig>,
}

impl SessionLayer {
    session_http::settings_methods!("SessionLayer");
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
    config: Arc<SessionConfig>,
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
        // The cookie by its constant name (no parse of the name on every request).
        let values = match self.config.response_header() {
            None => req.headers().get_all(COOKIE),
            Some(_) => req.headers().get_all(self.config.request_header()),
        };
        let mut lazy = session_http::LazySession::from_headers(
            self.config.clone(),
            values.iter().map(HeaderValue::as_bytes),
        );
        if self.config.records_devices() {
            let header = |name: &str| req.headers().get(name).map(HeaderValue::as_bytes);
            let ip = self.config.client_ip_header().and_then(header);
            lazy.set_client(header("user-agent"), ip);
        }
        let lazy = LazySession(lazy);
        req.extensions_mut().insert(lazy.clone());
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            match lazy.0.finish(response.status().as_u16()).await {
                Finish::Nothing => {}
                Finish::Set(value) => {
                    let name = match lazy.0.config().response_header() {
                        None => Some(SET_COOKIE),
                        Some(name) => HeaderName::try_from(name).ok(),
                    };
                    // The value is checked by session-http to be a valid header value.
                    if let (Some(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
                        response.headers_mut().append(name, value);
                    }
                }
                Finish::Unavailable => {
                    response = Response::new(ResBody::default());
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                _ => {}
            }
            Ok(response)
        })
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
pub struct LazySession(session_http::LazySession);

impl LazySession {
    /// The session: loaded on the first call, the same handle afterwards.
    ///
    /// # Errors
    /// [`SessionRejection::Unavailable`], with the store's error as its source, when the
    /// store fails (unless the layer fails open).
    pub async fn get(&self) -> Result<Session, SessionRejection> {
        self.0
            .get()
            .await
            .map_err(|session_http::Unavailable(source)| SessionRejection::Unavailable { source })
    }

    /// Whether a handler asked for the session.
    pub fn is_loaded(&self) -> bool {
        self.0.is_loaded()
    }
}
