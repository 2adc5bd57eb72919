//! Test servers on 127.0.0.1: provisioned when missing, started on free ports with
//! persistence off, readiness polled with a deadline, logs shown on failure, stopped on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use session_testing::servers::{self, PACKAGES, ServerKind, running_as_root};

use crate::util::{ChildGuard, have, run};

/// The running servers and the environment that points the tests at them.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    /// `SESSION_TEST_*` variables for the test processes.
    pub(crate) env: BTreeMap<String, String>,
    guards: Vec<ServerGuard>,
}

/// One server process with its scratch directory.
#[derive(Debug)]
pub(crate) struct ServerGuard {
    pub(crate) port: u16,
    log: PathBuf,
    dir: PathBuf,
    child: ChildGuard,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // The child is killed by its own guard; the scratch directory goes after it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServerGuard {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.child.try_wait(), Ok(None))
    }
}

/// Provisions and starts every server the workspace's backends need.
pub(crate) fn start_all() -> Result<Servers> {
    let mut servers = Servers::default();
    ensure_packages(PACKAGES)?;

    let redis = start(ServerKind::Redis, "redis", Path::new("redis-server"))?;
    servers.env.insert(
        "SESSION_TEST_REDIS_URL".into(),
        format!("redis://127.0.0.1:{}", redis.port),
    );
    eprintln!("    redis-server on 127.0.0.1:{}", redis.port);
    servers.guards.push(redis);

    let cluster = start_redis_cluster(3)?;
    let urls: Vec<String> = cluster
        .iter()
        .map(|g| format!("redis://127.0.0.1:{}", g.port))
        .collect();
    eprintln!(
        "    redis cluster of {} masters on {}",
        cluster.len(),
        urls.join(", ")
    );
    servers
        .env
        .insert("SESSION_TEST_REDIS_CLUSTER_URLS".into(), urls.join(","));
    servers.guards.extend(cluster);

    let memcached: Vec<ServerGuard> = (0..2)
        .map(|i| {
            let name = format!("memcached-{i}");
            start(ServerKind::Memcached, &name, Path::new("memcached"))
        })
        .collect::<Result<_>>()?;
    let addrs: Vec<String> = memcached
        .iter()
        .map(|g| format!("127.0.0.1:{}", g.port))
        .collect();
    eprintln!("    memcached on {}", addrs.join(", "));
    servers
        .env
        .insert("SESSION_TEST_MEMCACHED_SERVERS".into(), addrs.join(","));
    servers.guards.extend(memcached);

    for (kind, name, var) in [
        (
            ServerKind::Postgres,
            "postgres",
            "SESSION_TEST_POSTGRES_URL",
        ),
        (ServerKind::MariaDb, "mariadb", "SESSION_TEST_MYSQL_URL"),
    ] {
        let program = kind.program().map_err(anyhow::Error::msg)?;
        let server = start(kind, name, &program)?;
        eprintln!("    {} on 127.0.0.1:{}", kind.name(), server.port);
        servers.env.insert(var.into(), kind.url(server.port));
        servers.guards.push(server);
    }

    let (mongo, secantus_bin) = start_secantus()?;
    // Tests that kill and restart their own MongoDB-compatible server start it from here.
    servers.env.insert(
        "SESSION_TEST_SECANTUS_BIN".into(),
        secantus_bin.display().to_string(),
    );
    eprintln!(
        "    SecantusDB (MongoDB wire protocol) on 127.0.0.1:{}",
        mongo.port
    );
    servers.env.insert(
        "SESSION_TEST_MONGO_URL".into(),
        format!("mongodb://127.0.0.1:{}", mongo.port),
    );
    servers.guards.push(mongo);

    Ok(servers)
}

/// The MongoDB-compatible test server: no genuine mongod installs from the registries this
/// project can reach, so SecantusDB (PyPI, WiredTiger-based) runs from a venv cached under
/// `target/xtask/`. Nothing in session-mongo depends on its quirks.
const SECANTUS: &str = "SecantusDB==0.7.0b3";

fn secantus_venv() -> Result<PathBuf> {
    let venv = crate::util::root().join("target/xtask/secantus-venv");
    let server = venv.join("bin/secantusd-py");
    let marker = venv.join(".installed");
    if server.exists() && std::fs::read_to_string(&marker).is_ok_and(|m| m == SECANTUS) {
        return Ok(server);
    }
    eprintln!("    installing {SECANTUS} into {}", venv.display());
    let _ = std::fs::remove_dir_all(&venv);
    if Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map_or(true, |s| !s.success())
    {
        // Debian's python3 needs python3-venv for ensurepip.
        ensure_packages(&[
            ("python3", "python3"),
            ("/usr/share/doc/python3-venv", "python3-venv"),
        ])?;
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SECANTUS,
    ]))?;
    std::fs::write(&marker, SECANTUS)?;
    Ok(server)
}

fn start_secantus() -> Result<(ServerGuard, PathBuf)> {
    let program = secantus_venv()?;
    Ok((start(ServerKind::Mongo, "secantus", &program)?, program))
}

/// Starts a `kind` server named `name` with `program` on a free port, its output in a log
/// file of its scratch directory, and waits until it is ready.
fn start(kind: ServerKind, name: &str, program: &Path) -> Result<ServerGuard> {
    let port = servers::free_port();
    let dir = servers::scratch_dir(name, port)?;
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)?;
    kind.prepare(&dir).map_err(anyhow::Error::msg)?;
    let mut cmd = kind.command(program, port, &dir);
    if kind == ServerKind::Memcached {
        cmd.arg("-v");
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("could not start {}", kind.name()))?;
    let mut guard = ServerGuard {
        port,
        log,
        dir,
        child: ChildGuard::new(format!("{name} :{port}"), child),
    };
    wait_until(&mut guard, kind.start_timeout(), |port| kind.is_ready(port))?;
    kind.after_start(port).map_err(anyhow::Error::msg)?;
    Ok(guard)
}

fn start_redis_cluster(masters: usize) -> Result<Vec<ServerGuard>> {
    let mut nodes = Vec::new();
    for i in 0..masters {
        nodes.push(start(
            ServerKind::RedisClusterNode,
            &format!("redis-cluster-{i}"),
            Path::new("redis-server"),
        )?);
    }
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for node in &nodes {
        create.arg(format!("127.0.0.1:{}", node.port));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .context("could not run redis-cli --cluster create")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for node in &mut nodes {
        wait_until(node, Duration::from_secs(30), |port| {
            servers::reply(port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
        })?;
    }
    Ok(nodes)
}

/// Polls `ready` until it holds, failing with the server's log after `deadline`.
fn wait_until(
    guard: &mut ServerGuard,
    deadline: Duration,
    ready: impl Fn(u16) -> bool,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if ready(guard.port) {
            return Ok(());
        }
        if !guard.alive() {
            bail!(
                "{} exited during start-up; its log:\n{}",
                guard.child.name,
                guard.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} was not ready within {deadline:?}; its log:\n{}",
        guard.child.name,
        guard.log_tail()
    )
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
    if !running_as_root() || !have("apt-get") {
        bail!("missing {missing:?}: install them with `sudo {command}` and run again");
    }
    eprintln!("    installing {missing:?} with apt-get");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
