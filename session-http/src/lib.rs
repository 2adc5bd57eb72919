//! The framework-neutral half of the HTTP integrations: the signed session cookie, its
//! settings, and the lazily loaded session that decides, after the handler, what to save and
//! which cookie to send.
//!
//! `session-tower` (tower and axum) and `session-actix` (actix-web) are thin adapters over
//! this crate, so they behave the same, take the same settings, and accept each other's
//! cookies when they share a key: a user can be moved from an axum service to an actix one
//! (or run both behind one domain) without being logged out. Applications use those crates;
//! this one is for writing an adapter for another framework.
//!
//! ```
//! use std::sync::Arc;
//! use session_core::SessionManager;
//! use session_http::{Finish, Key, LazySession, SessionConfig};
//! use session_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut config = SessionConfig::new(SessionManager::new(MemoryStore::default()), &Key::generate());
//! config.set_secure(false);
//! let config = Arc::new(config);
//!
//! // A first request: no cookie. The handler writes; the response sets the cookie.
//! let lazy = LazySession::from_headers(config.clone(), []);
//! lazy.get().await.unwrap().insert("n", 1u64).unwrap();
//! let Finish::Set(set_cookie) = lazy.finish(200).await else { panic!("a new session sets its cookie") };
//! assert!(set_cookie.starts_with("id=") && set_cookie.contains("HttpOnly"));
//!
//! // The browser sends it back: the same session.
//! let cookie = set_cookie.split(';').next().unwrap();
//! let lazy = LazySession::from_headers(config.clone(), [cookie.as_bytes()]);
//! assert_eq!(lazy.get().await.unwrap().get::<u64>("n").unwrap(), Some(1));
//! assert_eq!(lazy.finish(200).await, Finish::Nothing); // read only: no write, no cookie
//! # }
//! ```
//!
//! The behaviour an adapter inherits:
//!
//! | after the handler | store | cookie |
//! |---|---|---|
//! | not asked for | nothing | nothing (an old key's cookie is signed again) |
//! | unchanged | nothing, or `touch` when due | refreshed on touch (persistent cookies) |
//! | changed | `update` of the changed keys, or `create` | set (new), or refreshed when its expiry fell behind by `touch_after` (persistent cookies) |
//! | `cycle_id()` | new record, old one deleted | set to the new id |
//! | `destroy()` | `delete` | removed |
//!
//! A missing, malformed, unsigned, wrongly signed, oversized or unknown cookie starts a fresh
//! session with a new id: never an error, never a store lookup for an invalid id, never a
//! client-chosen id (no fixation). A store outage is [`Unavailable`] on load and
//! [`Finish::Unavailable`] on save (or, failing open, an empty session that is not saved). A
//! damaged stored record starts a fresh session and is logged ([`CorruptPolicy`]).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cookies;
mod lazy;

pub use cookie::{Key, SameSite};
pub use cookies::CookieSigner;
pub use lazy::{CorruptPolicy, Finish, LazySession, SessionConfig, Transport, Unavailable};

/// What [`settings_methods!`] names, for the crates that expand it.
#[doc(hidden)]
pub mod __private {
    pub use session_core::SessionManager;
}
