//! Test servers on 127.0.0.1: provisioned when missing, started on free ports with
//! persistence off, readiness polled with a deadline, logs shown on failure, stopped on drop.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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

/// Every program the tests and the benchmarks start (the tests' own outage drills included),
/// with the Debian package that brings it.
pub(crate) const SERVER_PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("memcached", "memcached"),
];

/// Provisions and starts every server the workspace's backends need.
pub(crate) fn start_all() -> Result<Servers> {
    let mut servers = Servers::default();
    ensure_packages(SERVER_PACKAGES)?;

    let redis = start_redis("redis", &[])?;
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

    let memcached: Vec<ServerGuard> = (0..2).map(start_memcached).collect::<Result<_>>()?;
    let addrs: Vec<String> = memcached
        .iter()
        .map(|g| format!("127.0.0.1:{}", g.port))
        .collect();
    eprintln!("    memcached on {}", addrs.join(", "));
    servers
        .env
        .insert("SESSION_TEST_MEMCACHED_SERVERS".into(), addrs.join(","));
    servers.guards.extend(memcached);

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
    let server = secantus_venv()?;
    let port = free_port()?;
    let dir = scratch_dir("secantus", port)?;
    let log = dir.join("secantus.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(&server)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--storage-path",
            ":memory:",
            "--standalone",
        ])
        .current_dir(&dir)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("could not start secantusd-py")?;
    let mut guard = ServerGuard {
        port,
        log,
        dir,
        child: ChildGuard::new(format!("secantus :{port}"), child),
    };
    wait_until(&mut guard, Duration::from_secs(60), |port| {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok((guard, server))
}

fn start_memcached(index: usize) -> Result<ServerGuard> {
    let port = free_port()?;
    let dir = scratch_dir(&format!("memcached-{index}"), port)?;
    let log = dir.join("memcached.log");
    let mut cmd = Command::new("memcached");
    cmd.args([
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-m",
        "256",
        "-v",
    ]);
    if is_root() {
        cmd.args(["-u", "memcache"]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("could not start memcached")?;
    let mut guard = ServerGuard {
        port,
        log,
        dir,
        child: ChildGuard::new(format!("memcached-{index} :{port}"), child),
    };
    wait_until(&mut guard, Duration::from_secs(20), |port| {
        redis_reply(port, "version").is_ok_and(|r| r.starts_with("VERSION"))
    })?;
    Ok(guard)
}

/// A free TCP port on 127.0.0.1 (the OS picks; the listener is closed before use).
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn scratch_dir(name: &str, port: u16) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "session-xtask-{name}-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn start_redis(name: &str, extra: &[&str]) -> Result<ServerGuard> {
    let port = free_port()?;
    let dir = scratch_dir(name, port)?;
    let log = dir.join("redis.log");
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(&log)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("could not start redis-server")?;
    let mut guard = ServerGuard {
        port,
        log,
        dir,
        child: ChildGuard::new(format!("{name} :{port}"), child),
    };
    wait_until(&mut guard, Duration::from_secs(20), |port| {
        redis_reply(port, "PING").is_ok_and(|r| r.starts_with("+PONG"))
    })?;
    Ok(guard)
}

fn start_redis_cluster(masters: usize) -> Result<Vec<ServerGuard>> {
    let mut nodes = Vec::new();
    for i in 0..masters {
        nodes.push(start_redis(
            &format!("redis-cluster-{i}"),
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ],
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
            redis_reply(port, "CLUSTER INFO").is_ok_and(|r| r.contains("cluster_state:ok"))
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

/// Sends one inline command (Redis, or memcached's text protocol) and returns the raw reply.
fn redis_reply(port: u16, command: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
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
