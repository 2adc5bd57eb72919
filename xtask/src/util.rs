//! Small helpers: running commands, finding the workspace.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of xtask's manifest directory).
pub(crate) fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `cargo` as the one that runs us.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Prints a phase heading.
pub(crate) fn phase(name: &str) {
    eprintln!("\n==> {name}");
}

/// Runs a command to completion, failing on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// A child process that is killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    pub(crate) child: std::process::Child,
    pub(crate) name: String,
}

impl ChildGuard {
    pub(crate) fn new(name: impl Into<String>, child: std::process::Child) -> Self {
        Self {
            child,
            name: name.into(),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("    stopped {}", self.name);
    }
}

/// Spawns `cmd` with stdout piped and waits (up to 30 s) for its first line, which must be
/// `listening on http://ADDR`; returns the guard and ADDR.
pub(crate) fn spawn_listening(name: &str, cmd: &mut Command) -> Result<(ChildGuard, String)> {
    use std::io::BufRead as _;
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("could not start {name}"))?;
    let mut guard = ChildGuard::new(name, child);
    let stdout = guard.child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .with_context(|| format!("{name} did not start listening within 30 s"))?;
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .with_context(|| format!("{name} printed {line:?} instead of its address"))?
        .to_owned();
    Ok((guard, addr))
}

/// Whether a program is on PATH.
pub(crate) fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
