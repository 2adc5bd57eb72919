//! HTTP sessions for actix-web, on `session-core`.
//!
//! ```
//! use actix_web::{App, web};
//! use session_core::SessionManager;
//! use session_memory::MemoryStore;
//! use session_actix::{Key, Session, SessionMiddleware};
//!
//! async fn counter(session: Session) -> String {
//!     // An atomic increment: concurrent visits with one cookie all count.
//!     let n = session.increment("n", 1).expect("n holds a counter");
//!     format!("visit {n}")
//! }
//!
//! # #[actix_web::main] async fn main() {
//! let store = MemoryStore::default(); // the one line to swap
//! let middleware = SessionMiddleware::new(SessionManager::new(store), Key::generate());
//! let app = actix_web::test::init_service(
//!     App::new().wrap(middleware).route("/", web::get().to(counter)),
//! )
//! .await;
//! let first = actix_web::test::call_service(&app, actix_web::test::TestRequest::get().to_request()).await;
//! let set_cookie = first.headers().get("set-cookie").unwrap().to_str().unwrap();
//! assert!(set_cookie.starts_with("id=") && set_cookie.contains("HttpOnly"));
//! let cookie = set_cookie.split(';').next().unwrap().to_owned();
//! let second = actix_web::test::TestRequest::get().insert_header(("cookie", cookie)).to_request();
//! let body = actix_web::test::call_and_read_body(&app, second).await;
//! assert_eq!(body, "visit 2");
//! # }
//! ```
//!
//! In a server (the block README.md shows, kept equal to it by a test):
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use session_actix::{Key, Session, SessionMiddleware};
//! use session_core::SessionManager;
//! use session_memory::MemoryStore;
//!
//! async fn counter(session: Session) -> String {
//!     // An atomic increment: concurrent visits with one cookie all count.
//!     let n = session.increment("n", 1).expect("n holds a counter");
//!     format!("visit {n}")
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let store = MemoryStore::default(); // the one line to swap
//!     let middleware = SessionMiddleware::new(SessionManager::new(store), Key::generate());
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(middleware.clone())
//!             .route("/", web::get().to(counter))
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await
//! }
//! ```
//!
//! [`SessionMiddleware`] wraps an actix-web `App` or `Scope`; the [`Session`] extractor
//! hands the request's session to a handler. It behaves exactly as `session-tower`'s layer
//! does (both are adapters over `session-http`), with the same settings, and a cookie
//! issued by one is accepted by the other under the same key. The browser's cookie holds only
//! the session id and the cookie's expiry, signed with HMAC-SHA256 ([`CookieSigner`]). The
//! session is loaded from the store only when a handler asks for it, saved after the handler
//! when it changed, and the cookie is set, refreshed or cleared to match:
//!
//! | after the handler | store | cookie |
//! |---|---|---|
//! | not asked for | nothing | nothing |
//! | unchanged | nothing, or `touch` when due | refreshed on touch (persistent cookies) |
//! | changed | `update` of the changed keys, or `create` | set (new), or refreshed when its expiry fell behind by `touch_after` (persistent cookies) |
//! | `cycle_id()` | new record, old one deleted | set to the new id |
//! | `destroy()` | `delete` | removed |
//!
//! A missing, malformed, unsigned, wrongly signed, oversized or unknown cookie starts a fresh
//! session with a new id: never an error page, never a store lookup for an invalid id, never
//! a client-chosen id (no fixation). A store outage answers 503 (or, with
//! [`SessionMiddleware::fail_open`], runs the handler with an empty session that is not
//! saved). A damaged stored record starts a fresh session and is logged ([`CorruptPolicy`]).
//!
//! [`Session`] is `Send + Sync` and `'static`: hold it across `.await` points, move it into
//! `tokio::spawn`ed tasks or threads; what those tasks change before the handler returns is
//! saved with the response.
//!
//! # Errors
//!
//! [`SessionRejection`]: `MissingMiddleware` (500, the route is not wrapped) and
//! `Unavailable` (503, the store is down; the store's error is its `source()`, never in the
//! response body). A handler that takes `Result<Session, SessionRejection>` answers the
//! failure its own way.

mod middleware;

pub use middleware::{Session, SessionMiddleware, SessionMiddlewareService, SessionRejection};
pub use session_http::{CookieSigner, CorruptPolicy, Key, SameSite, SessionConfig, Transport};
