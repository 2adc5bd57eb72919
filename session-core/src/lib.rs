//! Server-side sessions for tokio services: the interface every store implements, the
//! [`Session`] handle and the [`SessionManager`].
//!
//! A browser holds only an opaque, signed id; the data lives in a store. Applications
//! depend on `session-core` plus one store crate (`session-memory`, `session-disk`,
//! `session-redis`, `session-memcache`, `session-mongo`) and swap stores by changing one
//! line (or opens the store named by a URL with `session-any`). `session-tower` adds the
//! HTTP layer and cookies.
//!
//! # Guide
//!
//! - [`SessionManager`] holds the store and the settings: [`Expiry`] (idle timeout and
//!   absolute lifetime), the [`IdGenerator`] and the [`Codec`]. It `create`s, `load`s,
//!   `save`s and `destroy`s sessions.
//! - [`Session`] is a cheap, clonable handle with synchronous, dict-like methods. It records
//!   what changed, and `save` writes exactly that: two requests changing different keys of
//!   one session at the same time both persist.
//! - [`SessionId`] is the bearer secret: 22 base64url characters of a uuid v4. Stores only
//!   ever see its [`StorageKey`], a SHA-256 of it, so a leaked database holds no live id.
//! - [`SessionStore`] is the object-safe async trait a backend implements; the
//!   conformance suite (feature `test-suite`, module `suite`) checks its contracts.
//! - Operations: [`scan`] reads every record of a store in bounded memory, [`migrate`]
//!   copies every live session to another store with its storage key, and
//!   [`FallbackStore`] serves from a new store while copying from the old one on read (the
//!   `sessions` command line is built on them).
//!
//! ```
//! use session_core::{SessionId, StorageKey, IdGenerator, UuidV4Generator};
//!
//! let id = UuidV4Generator.generate();
//! let key: StorageKey = id.storage_key(); // what the store sees
//! assert_ne!(key.to_hex().as_str(), id.as_str());
//! assert!(SessionId::parse("not/a valid id").is_err());
//! ```
//!
//! A complete program with the in-memory store is in the `session-memory` crate's docs.
//!
//! # Errors
//!
//! [`SessionError`] for the session API: `Decode`/`Encode` name the key; `Store` wraps a
//! [`StoreError`], whose variants tell a caller what to do: `Unavailable` (retry later or
//! answer 503), `Corrupt` (a damaged record: start a fresh session), `TooLarge`,
//! `IdCollision`, `Backend`, `Unsupported`.
//!
//! # Feature flags
//!
//! - `json`: [`Codec::Json`], the self-describing value codec.
//! - `test-suite`: the conformance suite (`suite`) and [`conformance_tests!`].
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod blob;
pub mod body;
mod codec;
mod data;
pub mod devices;
pub mod envelope;
mod error;
pub mod events;
mod fallback;
mod id;
mod manager;
pub mod metrics;
pub mod migrate;
mod record;
pub mod scan;
mod session;
mod store;
mod sweeper;
mod time;

#[cfg(feature = "test-suite")]
pub mod suite;

pub use codec::Codec;
pub use devices::DeviceSession;
pub use error::{BoxError, SessionError, StoreError};
pub use events::{SessionEvent, SessionListener};
pub use fallback::FallbackStore;
pub use id::{
    HexKey, IdGenerator, InvalidId, MAX_ID_LEN, MIN_ID_LEN, SessionId, StorageKey, UuidV4Generator,
};
pub use manager::{Expiry, SaveOutcome, SessionExpiry, SessionManager, SessionManagerBuilder};
pub use record::{Changes, Increment, OwnerChange, Record};
pub use session::{RESERVED_PREFIX, Session};
pub use store::{
    CappedWrite, Loaded, OwnedWrite, OwnerCap, ScanCursor, ScanPage, SessionInfo, SessionStore,
    bad_cursor, bounded, cas_backoff, write_then_cap,
};
pub use sweeper::spawn_sweeper;
pub use time::{Clock, ManualClock, SystemClock, Timestamp};

pub use async_trait::async_trait;
pub use tokio_util::sync::CancellationToken;
