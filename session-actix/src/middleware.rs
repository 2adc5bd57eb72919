//! The actix-web middleware ([`Transform`]) and the [`Session`] extractor.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::StatusCode;
use actix_web::http::header::{COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, HttpResponse, ResponseError};
use session_core::SessionError;
use session_http::{Finish, LazySession, SessionConfig};

/// Adds sessions to an actix-web `App` or `Scope` (`.wrap(..)`): reads the signed cookie,
/// loads the session lazily when a handler asks for it, saves it after the handler and sets
/// or clears the cookie.
///
/// Defaults: cookie `id`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, persistent
/// (`Max-Age` follows the session's expiry); a store outage answers 503.
///
/// The key signs the cookie with HMAC-SHA256. Use a key dedicated to sessions, from at least
/// 64 random bytes (`Key::try_from`), 32 bytes expanded (`Key::derive_from`), or
/// `Key::generate()` (sessions then end at restart). It is `session_http::Key` (the `cookie`
/// crate's 0.18 `Key`), not actix-web's re-export of an older `cookie`: build it from the
/// same bytes (`Key::from(&bytes)`) when migrating from actix-session.
#[derive(Debug, Clone)]
pub struct SessionMiddleware {
    config: Arc<SessionConfig>,
}

impl SessionMiddleware {
    session_http::settings_methods!("SessionMiddleware");
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            config: self.config.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around the app's.
#[derive(Debug)]
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    config: Arc<SessionConfig>,
}

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // The cookie by its constant name (no parse of the name on every request).
        let values = match self.config.response_header() {
            None => req.headers().get_all(COOKIE),
            Some(_) => req.headers().get_all(self.config.request_header()),
        };
        let mut lazy =
            LazySession::from_headers(self.config.clone(), values.map(HeaderValue::as_bytes));
        if self.config.records_devices() {
            let header = |name: &str| req.headers().get(name).map(HeaderValue::as_bytes);
            let ip = self.config.client_ip_header().and_then(header);
            lazy.set_client(header("user-agent"), ip);
        }
        req.extensions_mut().insert(lazy.clone());
        let service = self.service.clone();
        Box::pin(async move {
            let mut response = service.call(req).await?;
            match lazy.finish(response.status().as_u16()).await {
                Finish::Set(value) => {
                    let name = match lazy.config().response_header() {
                        None => Some(SET_COOKIE),
                        Some(name) => HeaderName::try_from(name).ok(),
                    };
                    // The value is checked by session-http to be a valid header value.
                    if let (Some(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
                        response.headers_mut().append(name, value);
                    }
                }
                Finish::Unavailable => {
                    let (request, _) = response.into_parts();
                    let unavailable = HttpResponse::ServiceUnavailable().finish();
                    return Ok(ServiceResponse::new(request, unavailable).map_into_right_body());
                }
                _ => {}
            }
            Ok(response.map_into_left_body())
        })
    }
}

/// The request's session: a [`session_core::Session`] (it derefs to one), extracted in
/// actix-web handlers. `Send + Sync`: it can cross `.await` points and move into spawned
/// tasks.
#[derive(Debug, Clone)]
pub struct Session(session_core::Session);

impl std::ops::Deref for Session {
    type Target = session_core::Session;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Session {
    /// The `session_core` handle.
    pub fn into_inner(self) -> session_core::Session {
        self.0
    }
}

impl From<Session> for session_core::Session {
    fn from(session: Session) -> Self {
        session.0
    }
}

impl FromRequest for Session {
    type Error = SessionRejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let lazy = req.extensions().get::<LazySession>().cloned();
        Box::pin(async move {
            let lazy = lazy.ok_or(SessionRejection::MissingMiddleware)?;
            lazy.get()
                .await
                .map(Session)
                .map_err(
                    |session_http::Unavailable(source)| SessionRejection::Unavailable { source },
                )
        })
    }
}

/// Why a handler could not have its session. Its `Display` is what the response's body
/// says, so it never shows the store's error to the client; [`std::error::Error::source`]
/// gives that error to the application (to log it, or to build its own error page).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The route is not wrapped in a [`SessionMiddleware`] (a programming error: answers
    /// 500).
    #[error(
        "session-actix: no SessionMiddleware on this route; add `.wrap(SessionMiddleware::new(..))` to the App"
    )]
    MissingMiddleware,
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
            Self::MissingMiddleware => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ResponseError for SessionRejection {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status())
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string())
    }
}
