//! A server a test owns.

use std::process::Stdio;
use std::time::Instant;

use crate::ServerKind;

/// A server process a test owns: started on 127.0.0.1, killed by [`OwnedServer::kill`] or
/// when dropped, and restartable on the same port (outage drills).
#[derive(Debug)]
pub struct OwnedServer {
    kind: ServerKind,
    port: u16,
    // Dropped in this order: the process is killed before its directory goes.
    child: Option<tokio::process::Child>,
    dir: tempfile_dir::Dir,
}

impl OwnedServer {
    /// Starts a `kind` server on `port` and waits until it is ready.
    ///
    /// # Panics
    /// When the server cannot be started or is not ready in time: the test fails.
    pub async fn start(kind: ServerKind, port: u16) -> Self {
        let mut server = Self {
            kind,
            port,
            child: None,
            dir: tempfile_dir::Dir::new(kind, port),
        };
        server.restart().await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a client connects with.
    pub fn url(&self) -> String {
        self.kind.url(self.port)
    }

    /// Kills the server (an outage) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(crash) = self.kind.crash_command(&self.dir.0) {
                let _ = tokio::process::Command::from(crash)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
            }
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port (killing it first if it runs) and waits until it is
    /// ready.
    ///
    /// # Panics
    /// As [`OwnedServer::start`].
    pub async fn restart(&mut self) {
        self.kill().await;
        let (kind, port) = (self.kind, self.port);
        let program = kind
            .program()
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        kind.prepare(&self.dir.0)
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        let mut cmd = tokio::process::Command::from(kind.command(&program, port, &self.dir.0));
        let log_path = self.dir.0.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start {} ({e}); cargo xtask test-backends installs it",
                    kind.name()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + kind.start_timeout();
        loop {
            let ready = tokio::task::spawn_blocking(move || kind.is_ready(port))
                .await
                .unwrap_or(false);
            if ready {
                kind.after_start(port)
                    .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
                return;
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "{} was not ready on port {port} within {:?}; its log ends:\n{}",
                    kind.name(),
                    kind.start_timeout(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

mod tempfile_dir {
    use std::path::PathBuf;

    use crate::ServerKind;

    /// The server's scratch directory, removed with it.
    #[derive(Debug)]
    pub(super) struct Dir(pub(super) PathBuf);

    impl Dir {
        pub(super) fn new(kind: ServerKind, port: u16) -> Self {
            let name = format!("{kind:?}");
            Self(
                crate::servers::scratch_dir(&name, port)
                    .unwrap_or_else(|e| panic!("a scratch directory for {}: {e}", kind.name())),
            )
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
