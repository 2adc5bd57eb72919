//! `cargo xtask bench [--quick] [--only <list>]`: builds the bench crate in release, starts
//! the servers the store workloads need (as `test-backends` does), runs every workload in
//! fresh processes with rounds alternating between the contenders, and prints and writes
//! `target/bench-results.md`, with `target/bench-chart.svg` beside it (ours, the anchor and the
//! raw limit of each workload as bars).
//!
//! `--only` takes a comma-separated list of workloads (`cycle`, `large` (the cycle with
//! 20 KB sessions), `http`, `actix`, `memory`, `micro`, `migrate`)
//! and cycle backends (`memory`, `disk`, `redis`, `memcached`, `mongodb`, `postgres`,
//! `mariadb`, `sqlite`), e.g.
//! `--only redis,http`, for measuring one thing while working on it (`memory` picks both the
//! memory store's cycle and the memory-per-session workload).

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, phase, root, run, spawn_listening};

/// A row of the cycle table: name, our store's spec, the anchor (label, spec), the raw
/// limit's spec, and the concurrencies to run.
struct Row(
    &'static str,
    String,
    Option<(&'static str, String)>,
    Option<String>,
    &'static [&'static str],
);

/// Durations and sizes of one bench run.
struct Plan {
    rounds: usize,
    secs: &'static str,
    sessions: &'static str,
    concurrency: &'static [&'static str],
    http_secs: u32,
    /// HTTP shares the machine with its load generator and varies more between rounds.
    http_rounds: usize,
    memory_sizes: &'static [&'static str],
    /// Sessions copied by the migration workload.
    migrate_sessions: &'static str,
}

const FULL: Plan = Plan {
    rounds: 3,
    secs: "5",
    sessions: "10000",
    concurrency: &["1", "16", "64"],
    http_secs: 10,
    http_rounds: 5,
    memory_sizes: &["100000", "1000000"],
    migrate_sessions: "100000",
};

const QUICK: Plan = Plan {
    rounds: 1,
    secs: "1",
    sessions: "1000",
    concurrency: &["16"],
    http_secs: 2,
    http_rounds: 1,
    memory_sizes: &["10000"],
    migrate_sessions: "2000",
};

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick { &QUICK } else { &FULL };
    let only: Option<Vec<String>> = match args.iter().position(|a| a == "--only") {
        Some(i) => Some(
            args.get(i + 1)
                .context("--only cycle,http,actix,memory,micro,migrate,<backend>")?
                .split(',')
                .map(str::to_owned)
                .collect(),
        ),
        None => None,
    };
    const KNOWN: [&str; 14] = [
        "cycle",
        "large",
        "http",
        "actix",
        "memory",
        "micro",
        "migrate",
        "disk",
        "redis",
        "memcached",
        "mongodb",
        "postgres",
        "mariadb",
        "sqlite",
    ];
    if let Some(bad) = only.iter().flatten().find(|w| !KNOWN.contains(&w.as_str())) {
        bail!(
            "--only: unknown workload {bad:?} (known: {})",
            KNOWN.join(", ")
        );
    }
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == name));
    let backend_wanted = |row: &str| {
        let first = row.split([' ', ',']).next().unwrap_or(row);
        wanted("cycle") || wanted(first)
    };
    phase("build: cargo build --release -p session-bench");
    run(cargo().args(["build", "--release", "-p", "session-bench"]))?;
    let exe = root().join("target/release/session-bench");

    phase("servers: provision and start on 127.0.0.1");
    let servers = crate::servers::start_all()?;
    let env = |k: &str| servers.env.get(k).cloned().context("server missing");
    let redis = env("SESSION_TEST_REDIS_URL")?;
    let cluster = env("SESSION_TEST_REDIS_CLUSTER_URLS")?.replace("redis://", "");
    let memcached = env("SESSION_TEST_MEMCACHED_SERVERS")?;
    let memcached_one = memcached.split(',').next().unwrap_or_default().to_owned();
    let mongo = env("SESSION_TEST_MONGO_URL")?;
    let postgres = env("SESSION_TEST_POSTGRES_URL")?;
    let mysql = env("SESSION_TEST_MYSQL_URL")?;
    let disk = std::env::temp_dir().join(format!("session-bench-disk-{}", std::process::id()));

    let mut report = String::new();
    writeln!(report, "## Session cycle on the store API\n")?;
    writeln!(
        report,
        "{} sessions of 5 keys × 40-byte strings; N tasks loop for {} s: load a random session, \
         change one key, save. Rounds alternate between the contenders of a row.\n",
        plan.sessions, plan.secs
    )?;
    writeln!(
        report,
        "| backend | N | ours cycles/s | anchor | anchor cycles/s | ours ÷ anchor | raw limit cycles/s | ours ÷ raw | ours min–max |"
    )?;
    writeln!(report, "|---|---:|---:|---|---:|---:|---:|---:|---|")?;
    let mut groups: Vec<Row> = vec![
        Row(
            "memory",
            "memory".into(),
            Some(("tower-sessions MemoryStore", "ts-memory".into())),
            Some("raw-memory".into()),
            plan.concurrency,
        ),
        Row(
            "disk, fsync never",
            format!("disk-never:{}", disk.join("n").display()),
            None,
            Some(format!("raw-disk-never:{}", disk.join("rn").display())),
            &["16"],
        ),
        Row(
            "disk, fsync always",
            format!("disk-always:{}", disk.join("a").display()),
            None,
            Some(format!("raw-disk-always:{}", disk.join("ra").display())),
            &["16"],
        ),
        Row(
            "redis",
            format!("redis:{redis}"),
            Some(("tower-sessions-redis-store", format!("ts-redis:{redis}"))),
            Some(format!("raw-redis:{redis}")),
            plan.concurrency,
        ),
        Row(
            "redis cluster, 3 masters",
            format!("redis-cluster:{cluster}"),
            Some((
                "tower-sessions-redis-store",
                format!("ts-redis-cluster:{cluster}"),
            )),
            Some(format!("raw-redis-cluster:{cluster}")),
            if quick { &["16"] } else { &["64"] },
        ),
        // What a layout could reach with no session code at all, against the same raw
        // limit: the compare-and-set layout the store uses (a `GET` and the store's own
        // script) and the hash layout it left (`HGETALL`, one `MULTI`/`HSET`/`EXEC`).
        Row(
            "redis, layout limit: GET + compare-and-set script (no session code)",
            format!("raw-redis-cas:{redis}"),
            None,
            Some(format!("raw-redis:{redis}")),
            &["64"],
        ),
        Row(
            "redis, layout limit: HGETALL + MULTI/HSET/PEXPIREAT (no session code)",
            format!("raw-redis-hash:{redis}"),
            None,
            Some(format!("raw-redis:{redis}")),
            &["64"],
        ),
        Row(
            "memcached",
            format!("memcache:{memcached_one}"),
            None,
            Some(format!("raw-memcache:{memcached_one}")),
            plan.concurrency,
        ),
        Row(
            "mongodb (SecantusDB)",
            format!("mongo:{mongo}"),
            Some(("tower-sessions-mongodb-store", format!("ts-mongo:{mongo}"))),
            Some(format!("raw-mongo:{mongo}")),
            if quick { &["16"] } else { &["1", "16"] },
        ),
    ];
    for (name, url) in [
        ("postgres", postgres),
        ("mariadb", mysql),
        (
            "sqlite",
            format!("sqlite://{}", disk.join("sqlite").display()),
        ),
    ] {
        groups.push(Row(
            name,
            format!("sql:{url}"),
            Some(("tower-sessions-sqlx-store", format!("ts-sqlx:{url}"))),
            Some(format!("raw-sql:{url}")),
            plan.concurrency,
        ));
    }
    // The SQL rows also run the layout the SQL store did not take (a JSON object per session,
    // merged in one UPDATE), for the table that records why.
    let mut layout = String::new();
    let rows: Vec<&Row> = groups.iter().filter(|r| backend_wanted(r.0)).collect();
    let mut cycles = Cycles {
        exe: &exe,
        plan,
        disk: &disk,
        shape: None,
        sessions: plan.sessions,
        report: &mut report,
        layout: &mut layout,
    };
    cycles.table(&rows)?;
    if wanted("large") {
        large(&mut cycles, &redis, &memcached_one)?;
    }
    if wanted("actix") {
        actix(&exe, plan, &redis, &mut report)?;
    }
    if wanted("migrate") {
        migrate(&exe, plan, &redis, &cluster, &disk, &mut report)?;
    }
    drop(servers);
    if !layout.is_empty() {
        writeln!(
            report,
            "\n## SQL layout: a row per key or a JSON object per session\n"
        )?;
        writeln!(
            report,
            "The same cycle on the layout the SQL store did not take: one row per session whose keys are a JSON \
             object of base64 values, loaded with one SELECT and changed with one UPDATE merging the key in \
             (`jsonb ||`, `JSON_MERGE_PATCH`, `json_patch`), same run, rounds alternating.\n"
        )?;
        writeln!(
            report,
            "| database | N | rows (ours) cycles/s | JSON merge cycles/s | rows ÷ JSON |"
        )?;
        writeln!(report, "|---|---:|---:|---:|---:|")?;
        report.push_str(&layout);
    }

    if wanted("http") {
        http(&exe, plan, &mut report)?;
    }
    if wanted("memory") {
        memory(&exe, plan, &mut report)?;
    }
    if wanted("micro") {
        micro(quick, &mut report)?;
    }

    println!("\n{report}");
    let out = root().join("target/bench-results.md");
    std::fs::write(&out, &report)?;
    eprintln!("written to {}", out.display());
    let svg = root().join("target/bench-chart.svg");
    std::fs::write(
        &svg,
        crate::chart::svg(crate::chart::TITLE, &crate::chart::from_report(&report)),
    )?;
    eprintln!("chart written to {}", svg.display());
    Ok(())
}

/// Runs cycle tables, collecting their report and the SQL layout rows.
struct Cycles<'a> {
    exe: &'a Path,
    plan: &'a Plan,
    disk: &'a Path,
    /// `SESSION_BENCH_SHAPE` for the bench processes; `None` for the default (5 × 40 bytes).
    shape: Option<&'a str>,
    sessions: &'a str,
    report: &'a mut String,
    layout: &'a mut String,
}

impl Cycles<'_> {
    /// The rows of one cycle table, each at its concurrencies, rounds alternating.
    fn table(&mut self, rows: &[&Row]) -> Result<()> {
        for Row(name, ours, anchor, raw, concurrency) in rows.iter().copied() {
            for n in *concurrency {
                let mut contenders = vec![ours.clone()];
                contenders.extend(anchor.iter().map(|(_, s)| s.clone()));
                contenders.extend(raw.iter().cloned());
                let json = ours
                    .strip_prefix("sql:")
                    .map(|url| format!("json-sql:{url}"));
                contenders.extend(json.iter().cloned());
                let raw_at = 1 + usize::from(anchor.is_some());
                let mut samples = vec![Vec::new(); contenders.len()];
                for round in 1..=self.plan.rounds {
                    for (spec, out) in contenders.iter().zip(&mut samples) {
                        phase(&format!(
                            "cycle: {name} · {} · N={n} · round {round}/{}",
                            spec.split(':').next().unwrap_or(spec),
                            self.plan.rounds
                        ));
                        reset_redis(spec)?;
                        let mut cmd = Command::new(self.exe);
                        cmd.args(["cycle", spec, n, self.plan.secs, self.sessions]);
                        if let Some(shape) = self.shape {
                            cmd.env("SESSION_BENCH_SHAPE", shape);
                        }
                        let line = result_line(&mut cmd)?;
                        out.push(field(&line, "cycles_per_sec").parse::<f64>()?);
                        let _ = std::fs::remove_dir_all(self.disk);
                    }
                }
                let ours_rate = median(&samples[0]);
                let (anchor_name, anchor_rate, anchor_ratio) = match anchor {
                    Some((label, _)) => {
                        let rate = median(&samples[1]);
                        (
                            label.to_string(),
                            format!("{rate:.0}"),
                            format!("{:.2}×", ours_rate / rate),
                        )
                    }
                    None => ("—".into(), "—".into(), "—".into()),
                };
                let (raw_rate, raw_ratio) = match raw {
                    Some(_) => {
                        let rate = median(&samples[raw_at]);
                        (
                            format!("{rate:.0}"),
                            format!("{:.0} %", 100.0 * ours_rate / rate),
                        )
                    }
                    None => ("—".into(), "—".into()),
                };
                writeln!(
                    self.report,
                    "| {name} | {n} | {ours_rate:.0} | {anchor_name} | {anchor_rate} | {anchor_ratio} | {raw_rate} | {raw_ratio} | {} |",
                    spread(&samples[0])
                )?;
                if json.is_some() {
                    let json_rate = median(&samples[raw_at + usize::from(raw.is_some())]);
                    writeln!(
                        self.layout,
                        "| {name} | {n} | {ours_rate:.0} | {json_rate:.0} | {:.2}× |",
                        ours_rate / json_rate
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The cycle with large sessions (50 keys of 400 bytes, about 20 KB), so a layout is not
/// tuned to small sessions only: memory, Redis and memcached at N = 64 against their anchors
/// and raw limits (whose value grows to the session's size).
fn large(cycles: &mut Cycles<'_>, redis: &str, memcached: &str) -> Result<()> {
    let concurrency: &'static [&'static str] = if cycles.plan.rounds == 1 {
        &["16"]
    } else {
        &["64"]
    };
    writeln!(cycles.report, "\n## Session cycle, large sessions\n")?;
    writeln!(
        cycles.report,
        "{} sessions of 50 keys × 400-byte strings (about 20 KB; `SESSION_BENCH_SHAPE=50x400`); the \
         raw limits move a 20 500-byte value. Otherwise as above.\n",
        LARGE_SESSIONS
    )?;
    writeln!(
        cycles.report,
        "| backend | N | ours cycles/s | anchor | anchor cycles/s | ours ÷ anchor | raw limit cycles/s | ours ÷ raw | ours min–max |"
    )?;
    writeln!(cycles.report, "|---|---:|---:|---|---:|---:|---:|---:|---|")?;
    let rows = [
        Row(
            "memory, 20 KB",
            "memory".into(),
            Some(("tower-sessions MemoryStore", "ts-memory".into())),
            Some("raw-memory".into()),
            concurrency,
        ),
        Row(
            "redis, 20 KB",
            format!("redis:{redis}"),
            Some(("tower-sessions-redis-store", format!("ts-redis:{redis}"))),
            Some(format!("raw-redis:{redis}")),
            concurrency,
        ),
        // The layout's own limits at this size, against the same raw limit: the value
        // through the script's argument (what the store did before the thirteenth session)
        // and staged (what it does from 2 KB on).
        Row(
            "redis, 20 KB, layout limit: GET + compare-and-set script (no session code)",
            format!("raw-redis-cas:{redis}"),
            None,
            Some(format!("raw-redis:{redis}")),
            concurrency,
        ),
        Row(
            "redis, 20 KB, layout limit: GET + staged SET + rename script (no session code)",
            format!("raw-redis-staged:{redis}"),
            None,
            Some(format!("raw-redis:{redis}")),
            concurrency,
        ),
        Row(
            "memcached, 20 KB",
            format!("memcache:{memcached}"),
            None,
            Some(format!("raw-memcache:{memcached}")),
            concurrency,
        ),
    ];
    let (shape, sessions) = (cycles.shape, cycles.sessions);
    cycles.shape = Some("50x400");
    cycles.sessions = LARGE_SESSIONS;
    let done = cycles.table(&rows.iter().collect::<Vec<_>>());
    (cycles.shape, cycles.sessions) = (shape, sessions);
    done
}

/// Sessions of the large workload: 2 000 × 20 KB = 40 MB a contender, well within the 256 MB
/// the bench gives memcached.
const LARGE_SESSIONS: &str = "2000";

/// Empties the bench's Redis before a Redis run, so every contender and round starts from
/// the same empty server (left alone, each run's 10 000 sessions pile up and slow the later
/// runs down).
fn reset_redis(spec: &str) -> Result<()> {
    let Some((kind, url)) = spec.split_once(':') else {
        return Ok(());
    };
    if !kind.contains("redis") {
        return Ok(());
    }
    if kind.contains("cluster") {
        // Every master of the cluster, named `host:port`.
        for node in url.split(',') {
            let (host, port) = node
                .rsplit_once(':')
                .context("a cluster node without port")?;
            run(Command::new("redis-cli")
                .args(["-h", host, "-p", port, "FLUSHALL"])
                .stdout(std::process::Stdio::null()))?;
        }
        return Ok(());
    }
    run(Command::new("redis-cli")
        .args(["-u", url, "FLUSHALL"])
        .stdout(std::process::Stdio::null()))
}

/// Sessions moved per second by `sessions migrate`'s engine: files → Redis, and Redis →
/// Redis Cluster against the bare copy with the same driver, rounds alternating.
fn migrate(
    exe: &Path,
    plan: &Plan,
    redis: &str,
    cluster_nodes: &str,
    disk: &Path,
    report: &mut String,
) -> Result<()> {
    writeln!(report, "\n## Migration between stores\n")?;
    writeln!(
        report,
        "`sessions migrate`'s engine (`session_core::migrate::Migration`, 500 keys a page, 32 sessions in \
         flight: load, create, re-check the source) copying {} sessions of 5 keys (200 bytes) from a \
         filled store into an empty one; the raw limit is the bare copy with the same driver (`SCAN`, \
         then `GET` + `SET NX PXAT`, 32 in flight). Median of {} rounds, alternating.\n",
        plan.migrate_sessions, plan.rounds
    )?;
    writeln!(
        report,
        "| from → to | sessions | ours sessions/s | raw limit sessions/s | ours ÷ raw | ours min–max |"
    )?;
    writeln!(report, "|---|---:|---:|---:|---:|---|")?;
    let files = format!("file://{}?fsync=never", disk.join("migrate").display());
    let id = std::process::id();
    let rows: [(&str, Vec<Vec<String>>); 2] = [
        (
            "files → redis",
            vec![vec![
                "migrate".into(),
                files.clone(),
                format!("{redis}?key_prefix=mig{id}a:"),
            ]],
        ),
        (
            "redis → redis cluster",
            vec![
                vec![
                    "migrate".into(),
                    format!("{redis}?key_prefix=mig{id}b:"),
                    format!("redis+cluster://{cluster_nodes}?key_prefix=mig{id}c:"),
                ],
                vec!["raw-migrate".into(), redis.into(), cluster_nodes.into()],
            ],
        ),
    ];
    for (name, contenders) in rows {
        let mut samples = vec![Vec::new(); contenders.len()];
        for round in 1..=plan.rounds {
            for (args, out) in contenders.iter().zip(&mut samples) {
                phase(&format!(
                    "migrate: {name} · {} · {} sessions · round {round}/{}",
                    args[0], plan.migrate_sessions, plan.rounds
                ));
                // Every round from an empty standalone Redis (the cluster's keys carry the
                // run's own prefixes and expire within the hour).
                reset_redis(&format!("redis:{redis}"))?;
                let line = result_line(Command::new(exe).args(args).arg(plan.migrate_sessions))?;
                out.push(field(&line, "per_sec").parse::<f64>()?);
                let _ = std::fs::remove_dir_all(disk);
            }
        }
        let ours = median(&samples[0]);
        let (raw, ratio) = match samples.get(1) {
            Some(raw) => {
                let raw = median(raw);
                (format!("{raw:.0}"), format!("{:.0} %", 100.0 * ours / raw))
            }
            None => ("—".into(), "—".into()),
        };
        writeln!(
            report,
            "| {name} | {} | {ours:.0} | {raw} | {ratio} | {} |",
            plan.migrate_sessions,
            spread(&samples[0])
        )?;
    }
    Ok(())
}

fn memory(exe: &Path, plan: &Plan, report: &mut String) -> Result<()> {
    writeln!(report, "\n## Memory per session\n")?;
    writeln!(
        report,
        "Resident-set growth while inserting N sessions of 5 keys (200 bytes of names and values), divided by N.\n"
    )?;
    writeln!(
        report,
        "| store | sessions | payload B | bytes/session | ratio to payload |"
    )?;
    writeln!(report, "|---|---:|---:|---:|---:|")?;
    for n in plan.memory_sizes {
        for store in ["ours", "tower-sessions"] {
            phase(&format!("memory: {store}, {n} sessions"));
            let row = result_line(Command::new(exe).args(["memory", n, store]))?;
            writeln!(
                report,
                "| {} | {} | {} | {} | {} |",
                field(&row, "store"),
                field(&row, "sessions"),
                field(&row, "payload_bytes"),
                field(&row, "bytes_per_session"),
                field(&row, "ratio")
            )?;
        }
    }
    Ok(())
}

/// The counter route: bare axum, with our layer (memory store), with tower-sessions' layer
/// (its MemoryStore), under wrk, alternating rounds in one run.
fn http(exe: &Path, plan: &Plan, report: &mut String) -> Result<()> {
    http_table(
        exe,
        plan,
        report,
        &HttpTable {
            title: "HTTP: the counter route",
            serve: &["serve"],
            bare: "bare axum",
            variants: &[
                ("bare", "bare axum (no sessions)"),
                ("sessions", "session-tower + memory store"),
                ("tower-sessions", "tower-sessions + its MemoryStore"),
            ],
            redis: None,
        },
    )
}

/// The counter route on actix-web: bare, ours (memory store), actix-session's
/// `CookieSessionStore`, then ours and actix-session's `RedisSessionStore` on the same Redis.
fn actix(exe: &Path, plan: &Plan, redis: &str, report: &mut String) -> Result<()> {
    http_table(
        exe,
        plan,
        report,
        &HttpTable {
            title: "HTTP on actix-web: the counter route",
            serve: &["serve-actix"],
            bare: "bare actix-web",
            variants: &[
                ("bare", "bare actix-web (no sessions)"),
                ("sessions", "session-actix + memory store"),
                (
                    "actix-session-cookie",
                    "actix-session + CookieSessionStore (state in the cookie)",
                ),
                ("sessions-redis", "session-actix + RedisStore"),
                ("actix-session-redis", "actix-session + RedisSessionStore"),
            ],
            redis: Some(redis),
        },
    )
}

/// One wrk table: the variants of one server, alternating in rounds.
struct HttpTable<'a> {
    title: &'a str,
    /// The bench binary's subcommand.
    serve: &'a [&'a str],
    /// What the first variant is called in the ratio column.
    bare: &'a str,
    /// (variant, label); the first is the bare app.
    variants: &'a [(&'a str, &'a str)],
    /// Passed to every server; variants named `*redis*` start from an empty Redis.
    redis: Option<&'a str>,
}

fn http_table(exe: &Path, plan: &Plan, report: &mut String, table: &HttpTable<'_>) -> Result<()> {
    crate::servers::ensure_packages(&[("wrk", "wrk")])?;
    let connections = 64;
    let variants = table.variants;
    // Per variant: requests/s and server CPU µs per request, one sample a round.
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 1..=plan.http_rounds {
        for (i, (variant, _)) in variants.iter().enumerate() {
            phase(&format!(
                "{}: {variant}, round {round}/{}, wrk -c{connections} -d{}s",
                table.serve[0], plan.http_rounds, plan.http_secs
            ));
            if let Some(redis) = table.redis.filter(|_| variant.contains("redis")) {
                reset_redis(&format!("redis:{redis}"))?;
            }
            let mut cmd = Command::new(exe);
            cmd.args(table.serve).args([variant, "127.0.0.1:0"]);
            cmd.args(table.redis);
            let (server, addr) = spawn_listening(
                &format!("session-bench {} {variant}", table.serve[0]),
                &mut cmd,
            )?;
            let cookies = prime_cookies(&addr, variant, 1000)?;
            let pid = server.child.id();
            let cpu_before = cpu_seconds(pid)?;
            let run = wrk(&addr, &cookies, plan.http_secs, connections)?;
            let cpu_us = (cpu_seconds(pid)? - cpu_before) * 1e6 / run.requests;
            drop(server);
            eprintln!(
                "    {:.0} requests/s, server CPU {cpu_us:.2} µs a request",
                run.rps
            );
            rps[i].push(run.rps);
            cpu[i].push(cpu_us);
        }
    }
    let (bare_rps, bare_cpu) = (median(&rps[0]), median(&cpu[0]));
    writeln!(report, "\n## {}\n", table.title)?;
    writeln!(
        report,
        "wrk, 1 thread, {connections} connections, {} s a round, {} rounds alternating; 1000 visitors' cookies picked at random per request (the bare app gets same-length stand-ins). \
         Server CPU is the server process's user + system time over the round (`/proc/<pid>/stat`) divided by the requests wrk completed: \
         what a request costs the application, free of the CPU the load generator takes from it on a shared machine (a Redis server's own CPU is not in it).\n",
        plan.http_secs, plan.http_rounds
    )?;
    writeln!(
        report,
        "| app | requests/s (median) | rounds min–max | ratio to {} | server CPU µs/request (median) | bare's CPU ÷ this |",
        table.bare
    )?;
    writeln!(report, "|---|---:|---|---:|---:|---:|")?;
    for (i, (_, label)) in variants.iter().enumerate() {
        let (r, c) = (median(&rps[i]), median(&cpu[i]));
        writeln!(
            report,
            "| {label} | {r:.0} | {} | {:.2} | {c:.2} | {:.2} |",
            spread(&rps[i]),
            r / bare_rps,
            bare_cpu / c
        )?;
    }
    Ok(())
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("no CPU times in /proc/{pid}/stat: {stat}"))
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The kernel counts them in
/// USER_HZ, which is 100 on Linux.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may itself hold spaces and parentheses: the
    // fields start after the last ')'. utime and stime are the line's 14th and 15th fields,
    // the 12th and 13th after the name (indices 11 and 12).
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn micro(quick: bool, report: &mut String) -> Result<()> {
    phase("micro: cargo bench -p session-bench --bench micro");
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "session-bench", "--bench", "micro", "--"]);
    if quick {
        cmd.args(["--warm-up-time", "0.1", "--measurement-time", "0.2"]);
    }
    let out = cmd.output().context("could not run cargo bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprint!("{text}");
    if !out.status.success() {
        bail!(
            "cargo bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    writeln!(report, "\n## Micro (criterion)\n")?;
    writeln!(
        report,
        "| benchmark | time (criterion's estimate, low / mid / high) |"
    )?;
    writeln!(report, "|---|---|")?;
    let mut name = String::new();
    for line in text.lines() {
        if let Some((left, times)) = line.split_once("time:") {
            let left = left.trim();
            if !left.is_empty() {
                name = left.to_owned();
            }
            writeln!(
                report,
                "| {name} | {} |",
                times.trim().trim_matches(['[', ']'])
            )?;
        } else if !line.starts_with(' ') && !line.trim().is_empty() && !line.contains(':') {
            name = line.trim().to_owned();
        }
    }
    Ok(())
}

/// One session cookie per simulated visitor, from real responses. The bare app has no
/// sessions, so it gets stand-ins of the same length (the requests stay byte-identical).
fn prime_cookies(addr: &str, variant: &str, n: usize) -> Result<Vec<String>> {
    let mut cookies = Vec::with_capacity(n);
    for i in 0..n {
        if variant == "bare" {
            cookies.push(format!("id={:0>66}", i));
            continue;
        }
        let mut stream = TcpStream::connect(addr)?;
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let cookie = reply
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|v| v.split(';').next())
            .context("the server set no cookie")?;
        cookies.push(cookie.to_owned());
    }
    Ok(cookies)
}

/// What one wrk run measured.
struct WrkRun {
    rps: f64,
    requests: f64,
}

fn wrk(addr: &str, cookies: &[String], secs: u32, connections: u32) -> Result<WrkRun> {
    let script = std::env::temp_dir().join(format!("session-bench-{}.lua", std::process::id()));
    let list: Vec<String> = cookies.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        &script,
        format!(
            "local cookies = {{{}}}\nrequest = function()\n  return wrk.format(nil, nil, {{Cookie = cookies[math.random(#cookies)]}})\nend\n",
            list.join(",")
        ),
    )?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .output()
        .context("could not run wrk")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(errors) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("wrk saw errors: {errors}");
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    // "  123456 requests in 10.00s, 15.06MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| *n > 0.0)
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    Ok(WrkRun { rps, requests })
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spread(samples: &[f64]) -> String {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}–{max:.0}")
}

/// Runs a workload and returns its `RESULT` line.
fn result_line(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .map(str::to_owned)
        .context("the workload printed no RESULT line")
}

/// The value of `key=value` in a result line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("?")
}

#[cfg(test)]
mod cpu_tests {
    use super::{cpu_seconds, parse_cpu_seconds};

    #[test]
    fn cpu_times_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (session (bench) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 269 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_seconds(line), Some(10.0));
        assert_eq!(parse_cpu_seconds("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_cpu_seconds("no parenthesis at all"), None);
    }

    #[test]
    fn this_process_cpu_time_grows_while_it_works() {
        let before = cpu_seconds(std::process::id()).unwrap();
        // Busy work until the kernel has counted at least one more 10 ms tick, bounded by 5 s
        // of wall time (a loaded machine may give this thread little of it).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after <= before && start.elapsed() < std::time::Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
            after = cpu_seconds(std::process::id()).unwrap();
        }
        assert!(after > before, "{before} -> {after}");
    }
}
