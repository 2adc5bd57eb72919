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
    /// PostgreSQL (Debian's `postgresql`), a cluster `initdb` makes in the server's
    /// directory, trust authentication on 127.0.0.1, user and database `postgres`. It refuses
    /// to run as root, so as root it runs as the `postgres` user.
    Postgres,
    /// MariaDB (Debian's `mariadb-server`), a data directory `mariadb-install-db` makes in
    /// the server's directory, no grant tables (any user, no password), database `sessions`.
    /// As root it runs as the `mysql` user.
    MariaDb,
}

impl ServerKind {
    /// The server's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis-server",
            Self::RedisClusterNode => "redis-server (cluster node)",
            Self::Memcached => "memcached",
            Self::Mongo => "SecantusDB",
            Self::Postgres => "PostgreSQL",
            Self::MariaDb => "MariaDB",
        }
    }

    /// The URL a client connects to the server on `port` with.
    pub fn url(self, port: u16) -> String {
        match self {
            Self::Redis | Self::RedisClusterNode => format!("redis://127.0.0.1:{port}"),
            Self::Memcached => format!("127.0.0.1:{port}"),
            Self::Mongo => format!("mongodb://127.0.0.1:{port}"),
            Self::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            Self::MariaDb => format!("mysql://root@127.0.0.1:{port}/sessions"),
        }
    }

    /// Makes what the server needs in `dir` before its first start (a database cluster),
    /// unless it is there already.
    ///
    /// # Errors
    /// When the tool that makes it fails, with its output.
    pub fn prepare(self, dir: &Path) -> Result<(), String> {
        match self {
            Self::Postgres => {
                let data = dir.join("pgdata");
                if data.join("PG_VERSION").exists() {
                    return Ok(());
                }
                let initdb = postgres_bin("initdb")?;
                let mut cmd = Command::new(initdb);
                cmd.arg("-D").arg(&data).args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]);
                if running_as_root() {
                    chown_tree(dir, "postgres")?;
                    run_as(&mut cmd, "postgres")?;
                }
                output(&mut cmd)
            }
            Self::MariaDb => {
                let data = dir.join("mariadb");
                if data.join("mysql").exists() {
                    return Ok(());
                }
                std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
                // Its own temporary directory: servers started at once never share /tmp's
                // temporary tables (a CI run once lost one there and the install failed).
                std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
                let mut cmd = Command::new("mariadb-install-db");
                cmd.env("TMPDIR", dir.join("tmp"))
                    .arg(format!("--datadir={}", data.display()))
                    .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                    .args(["--skip-name-resolve", "--no-defaults"]);
                if running_as_root() {
                    cmd.arg("--user=mysql");
                    chown_tree(dir, "mysql")?;
                }
                output(&mut cmd)
            }
            _ => Ok(()),
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
            Self::Postgres => postgres_bin("postgres"),
            Self::MariaDb => Ok("/usr/sbin/mariadbd".into()),
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
            Self::Postgres => {
                cmd.arg("-D")
                    .arg(dir.join("pgdata"))
                    .args(["-h", "127.0.0.1", "-p", &port, "-k"])
                    .arg(dir)
                    // A test server: a commit reaches the kernel, not the disk (it survives the
                    // outage drills' crash of the server, not a power loss); room for every
                    // test's pool.
                    .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                    .args(["-c", "max_connections=300"]);
                // `prepare` made the directory the user's; a spawn error reports a bad user.
                if running_as_root() {
                    let _ = run_as(&mut cmd, "postgres");
                }
            }
            Self::MariaDb => {
                cmd.arg("--no-defaults")
                    .arg(format!("--datadir={}", dir.join("mariadb").display()))
                    .arg(format!("--tmpdir={}", dir.join("tmp").display()))
                    .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
                    .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
                    .args(["--bind-address=127.0.0.1", &format!("--port={port}")])
                    .args([
                        "--skip-grant-tables",
                        "--skip-name-resolve",
                        "--skip-log-bin",
                    ])
                    .args(["--max-connections=500", "--innodb-buffer-pool-size=64M"])
                    // A commit reaches the kernel, as for PostgreSQL above.
                    .arg("--innodb-flush-log-at-trx-commit=2");
                if running_as_root() {
                    cmd.arg("--user=mysql");
                }
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
            Self::Postgres => Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success()),
            Self::MariaDb => mariadb_greets(port),
        }
    }

    /// A command that stops the server in `dir` at once, as a crash would, where killing
    /// its first process is not enough (PostgreSQL's backends outlive the postmaster for a
    /// moment and keep its shared memory, so a restart on the same directory could fail).
    pub fn crash_command(self, dir: &Path) -> Option<Command> {
        match self {
            Self::Postgres => {
                let mut cmd = Command::new(postgres_bin("pg_ctl").ok()?);
                cmd.arg("-D")
                    .arg(dir.join("pgdata"))
                    .args(["stop", "-m", "immediate", "-w"]);
                if running_as_root() {
                    run_as(&mut cmd, "postgres").ok()?;
                }
                Some(cmd)
            }
            _ => None,
        }
    }

    /// What the server needs once it is ready (MariaDB: the `sessions` database).
    ///
    /// # Errors
    /// When the client tool fails, with its output.
    pub fn after_start(self, port: u16) -> Result<(), String> {
        match self {
            Self::MariaDb => output(
                Command::new("mariadb")
                    .args(["--no-defaults", "-h", "127.0.0.1", "-u", "root"])
                    .arg(format!("-P{port}"))
                    .args(["-e", "CREATE DATABASE IF NOT EXISTS sessions"]),
            ),
            _ => Ok(()),
        }
    }

    /// How long the server may take to become ready.
    pub fn start_timeout(self) -> Duration {
        match self {
            // A Python server importing WiredTiger, or a database starting, on a busy machine.
            Self::Mongo | Self::Postgres | Self::MariaDb => Duration::from_secs(60),
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
    ("pg_isready", "postgresql"),
    ("mariadb-install-db", "mariadb-server"),
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

/// A fresh, empty scratch directory for the server `name` on `port`, under the temp dir and
/// named by this process, so parallel runs never share one.
///
/// # Errors
/// When it cannot be created.
pub fn scratch_dir(name: &str, port: u16) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "session-testing-{name}-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
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

/// A PostgreSQL server program: Debian keeps them in `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin(name: &str) -> Result<PathBuf, String> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (is the postgresql package installed?)"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| format!("no {name} under /usr/lib/postgresql/*/bin"))
}

/// A user's uid and gid, from /etc/passwd.
fn user_ids(user: &str) -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&user) && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| format!("no user {user} in /etc/passwd"))
}

/// Runs `cmd` as `user` (the caller is root).
fn run_as(cmd: &mut Command, user: &str) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let (uid, gid) = user_ids(user)?;
    cmd.uid(uid).gid(gid);
    Ok(())
}

/// Gives `dir` and everything in it to `user`.
fn chown_tree(dir: &Path, user: &str) -> Result<(), String> {
    let (uid, gid) = user_ids(user)?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        if path.is_dir() && !path.is_symlink() {
            for entry in std::fs::read_dir(&path).map_err(|e| e.to_string())? {
                stack.push(entry.map_err(|e| e.to_string())?.path());
            }
        }
    }
    Ok(())
}

/// Runs `cmd` to completion; its output is the error when it fails.
fn output(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Whether MariaDB on `port` sends its greeting (protocol version 10).
fn mariadb_greets(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if n > 4 && buf[4] == 10)
}
