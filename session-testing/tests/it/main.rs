//! The cross-backend tests: every backend through the HTTP layer, the outage drills, and
//! the compiled example app walked end to end over 127.0.0.1 on every store. They need the
//! servers `cargo xtask test-backends` starts.

// Drills report their figures on stderr (`--nocapture`), for BENCHMARKS.md.
#![allow(clippy::print_stderr)]

mod backends;
mod e2e;
mod migrate;
mod outage;
