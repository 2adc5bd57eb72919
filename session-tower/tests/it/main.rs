//! session-tower's integration tests: the layer's HTTP behaviour through an axum Router.
//! The same layer on every backend, the outage drills and the end-to-end walks of the
//! example app are in `session-testing`'s tests.

mod http;
