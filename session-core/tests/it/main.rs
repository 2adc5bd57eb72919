//! session-core's integration tests: the suite can fail, and the manager's policies.

mod manager;
mod operations;
mod readme;
mod skips;
mod stores;
