//! How each test server starts: its command line, its readiness probe, its package.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The variable that names the SecantusDB server program (`cargo xtask test-backends` sets
/// it to the one in its venv).
pub const SECANTUS_BIN_VAR: &str = "SESSION_TEST_SECANTUS_BIN";

/// A kind of test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerKind {
    /// `redis-server`, no persistence.
    Redis,
    /// `redis-server` as a node of a Redis Cluster (joined by `redis-cli --cluster create`).
    RedisClusterNode,
    /// `memcached`, UDP off (run as the `memcache` user when the tests run as root).
    Memcached,
    /// SecantusDB, a MongoDB-compatible server (Python, from PyPI), in memory.
    Mongo,
}

impl ServerKind {
    /// The server's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis-server",
            Self::RedisClusterNode => "redis-server (cluster node)",
            Self::Memcached => "memcached",
            Self::Mongo => "SecantusDB",
        }
    }

    /// The program to run: on PATH, or for SecantusDB the one [`SECANTUS_BIN_VAR`] names.
    ///
    /// # Errors
    /// When [`SECANTUS_BIN_VAR`] is unset for [`ServerKind::Mongo`].
    pub fn program(self) -> Result<PathBuf, String> {
        match self {
            Self::Redis | Self::RedisClusterNode => Ok("redis-server".into()),
            Self::Memcached => Ok("memcached".into()),
            Self::Mongo => std::env::var_os(SECANTUS_BIN_VAR)
                .map(PathBuf::from)
                .ok_or_else(|| {
                    format!("{SECANTUS_BIN_VAR} is unset (cargo xtask test-backends sets it)")
                }),
        }
    }

    /// The command that starts the server with `program` on 127.0.0.1:`port`, keeping
    /// whatever it writes in `dir`. Its output is left to the caller.
    pub fn command(self, program: &Path, port: u16, dir: &Path) -> Command {
        let port = port.to_string();
        let mut cmd = Command::new(program);
        match self {
            Self::Redis | Self::RedisClusterNode => {
                cmd.args(["--bind", "127.0.0.1", "--port", &port])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir);
                if self == Self::RedisClusterNode {
                    cmd.args(["--cluster-enabled", "yes"])
                        .args(["--cluster-config-file", "nodes.conf"])
                        .args(["--cluster-node-timeout", "2000"]);
                }
            }
            Self::Memcached => {
                cmd.args(["-l", "127.0.0.1", "-p", &port, "-U", "0", "-m", "256"]);
                if running_as_root() {
                    cmd.args(["-u", "memcache"]);
                }
            }
            Self::Mongo => {
                cmd.args(["--host", "127.0.0.1", "--port", &port])
                    .args(["--storage-path", ":memory:", "--standalone"])
                    .current_dir(dir);
            }
        }
        cmd
    }

    /// Whether the server on `port` answers: `PING` for Redis, `version` for memcached, a
    /// TCP connection for SecantusDB (whose wire protocol needs a driver).
    pub fn is_ready(self, port: u16) -> bool {
        match self {
            Self::Redis | Self::RedisClusterNode => {
                reply(port, "PING").is_some_and(|r| r.starts_with("+PONG"))
            }
            Self::Memcached => reply(port, "version").is_some_and(|r| r.starts_with("VERSION")),
            Self::Mongo => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        }
    }

    /// How long the server may take to become ready.
    pub fn start_timeout(self) -> Duration {
        match self {
            // A Python server importing WiredTiger on a busy machine.
            Self::Mongo => Duration::from_secs(60),
            _ => Duration::from_secs(20),
        }
    }
}

/// Every program the tests and the benchmarks start, with the Debian package that brings
/// it (SecantusDB comes from PyPI instead).
pub const PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("memcached", "memcached"),
];

/// Sends one inline command (Redis, or memcached's text protocol) to 127.0.0.1:`port` and
/// returns the raw reply, or `None` when the server does not answer within a second.
pub fn reply(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A port on 127.0.0.1 that was free a moment ago, for a server a test starts itself.
///
/// # Panics
/// When no port can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Whether this process runs as root (memcached then needs `-u`), from /proc.
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}
