//! session-tower's integration tests: HTTP behaviour through an axum Router, and the
//! example app end to end over 127.0.0.1.

mod backends;
mod e2e;
mod http;
mod outage;
