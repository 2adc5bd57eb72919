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
//! - [`recorder`] (feature `scenarios`): a `metrics` recorder that keeps what it is given.
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
pub mod recorder;
#[cfg(feature = "scenarios")]
pub mod scenarios;
pub mod servers;

#[cfg(feature = "tokio")]
pub use owned::OwnedServer;

mod readme;
pub use readme::{doc_block, readme_block};

/// A response, read whole: what the HTTP tests of every framework compare.
#[derive(Debug)]
pub struct Reply {
    /// Its status code.
    pub status: u16,
    /// Every `Set-Cookie` value.
    pub set_cookies: Vec<String>,
    /// The body as text.
    pub body: String,
    /// Every response header, name (lowercase) and value.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The values of the response header `name` (lowercase).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `name=value` pair of the one Set-Cookie, to send back.
    ///
    /// # Panics
    /// When there is not exactly one `Set-Cookie`.
    pub fn cookie(&self) -> String {
        assert_eq!(
            self.set_cookies.len(),
            1,
            "expected one Set-Cookie: {:?}",
            self.set_cookies
        );
        self.first_cookie().unwrap()
    }

    /// The `name=value` pair of the first Set-Cookie, if any.
    pub fn first_cookie(&self) -> Option<String> {
        self.set_cookies
            .first()
            .map(|set| set.split(';').next().unwrap_or_default().to_owned())
    }
}
pub use servers::{ServerKind, free_port};
