//! HTTP sessions for tower and axum, on `session-core`.
//!
//! [`SessionLayer`] wraps any tower service. The browser's cookie holds only the session id
//! and the cookie's expiry, signed with HMAC-SHA256 ([`CookieSigner`], shared with
//! `session-actix` through `session-http`: the two accept each other's cookies under one key). The session is loaded from the store only when a
//! handler asks for it, saved after the handler when it changed, and the cookie is set,
//! refreshed or cleared to match:
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
//! [`SessionLayer::fail_open`], runs the handler with an empty session that is not saved). A
//! damaged stored record starts a fresh session and is logged ([`CorruptPolicy`]).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use session_core::SessionManager;
//! use session_memory::MemoryStore;
//! use session_tower::{Key, Session, SessionLayer};
//!
//! async fn counter(session: Session) -> String {
//!     // An atomic increment: concurrent visits with one cookie all count.
//!     let n = session.increment("n", 1).expect("n holds a counter");
//!     format!("visit {n}")
//! }
//!
//! let store = MemoryStore::default(); // the one line to swap
//! let layer = SessionLayer::new(SessionManager::new(store), Key::generate());
//! let app: Router = Router::new().route("/", get(counter)).layer(layer);
//! ```
//!
//! Without axum, a tower service finds a [`LazySession`] in the request's extensions and
//! calls [`LazySession::get`].
//!
//! # Errors
//!
//! [`SessionRejection`]: `MissingLayer` (500, the route has no layer) and `Unavailable`
//! (503, the store is down; the store's error is its `source()`, never in the response
//! body). A handler that takes `Result<Session, SessionRejection>` answers the failure its
//! own way.
//!
//! # Feature flags
//!
//! - `axum` (default): [`Session`] is an axum extractor.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
mod extract;
mod layer;

pub use layer::{LazySession, SessionLayer, SessionRejection, SessionService};
pub use session_http::{CookieSigner, CorruptPolicy, Key, SameSite, SessionConfig, Transport};

/// The request's session: a [`session_core::Session`] (it derefs to one), extracted in axum
/// handlers.
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
