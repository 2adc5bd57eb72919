//! This workspace's test support. Not published, and not for users of the library.
//!
//! - [`servers`]: the one place that knows how to start each test server this workspace
//!   uses (redis-server, a Redis Cluster node, memcached, the MongoDB-compatible
//!   SecantusDB), how to tell it is ready, and which Debian package brings it. `cargo xtask
//!   test-backends` starts the shared servers with it; tests that kill and restart a server
//!   of their own use [`OwnedServer`] (feature `tokio`).
//! - `http` (feature `http`): drives an axum app with the session layer in process.
//! - `scenarios` (feature `scenarios`): the HTTP behaviour both integrations must have, one
//!   list that session-tower and session-actix each run through their own test client.
//! - Its own tests are the cross-backend ones: every backend through the HTTP layer, the
//!   outage drills, and the end-to-end walks of the compiled example app.
//!
//! A third-party store author needs none of this: `session_core::suite` holds the
//! conformance checks, the macro and the fixtures.

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "tokio")]
mod owned;
#[cfg(feature = "scenarios")]
pub mod scenarios;
pub mod servers;

#[cfg(feature = "tokio")]
pub use owned::OwnedServer;
pub use servers::{ServerKind, free_port};
