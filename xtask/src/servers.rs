//! Test servers on 127.0.0.1: provisioned when missing, started on free ports, stopped on drop.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Result, bail};

use crate::util::{have, run};

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

/// Makes sure each `(program, debian package)` is installed: with apt-get when missing and
/// running as root, otherwise failing with the command to run.
pub(crate) fn ensure_packages(needed: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() || !have("apt-get") {
        bail!("missing {missing:?}: install them with `sudo {command}` and run again");
    }
    eprintln!("    installing {missing:?} with apt-get");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
