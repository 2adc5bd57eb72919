//! Benchmark workloads, run through `cargo xtask bench` (release build). Each prints one
//! machine-readable line per result: `RESULT <workload> <key>=<value> ...`.
//!
//! - `cycle <store> <tasks> <seconds> [sessions]`: the session cycle on the store API.
//! - `serve <bare|sessions> <addr>`: the counter route with or without sessions, for wrk.
//! - `migrate <from-url> <to-url> <sessions>`: sessions migrated per second between stores;
//!   `raw-migrate <redis-url> <cluster-nodes> <sessions>`, the bare Redis → Cluster copy.
//! - `memory <sessions> [ours|tower-sessions]`: resident memory per session in the memory
//!   store (or tower-sessions' MemoryStore), for sessions of 5 keys with 200 bytes of key names
//!   and values in all.

// The benchmarks report their results on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use session_core::{IdGenerator, Record, SessionStore, Timestamp, UuidV4Generator};
use session_memory::MemoryStore;

mod actix;
mod anchors;
mod cycle;
mod http;
mod migrate;
mod sql;
mod workload;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("memory") => {
            let n: usize = args
                .get(1)
                .context("memory <sessions> [ours|tower-sessions]")?
                .parse()?;
            match args.get(2).map_or("ours", String::as_str) {
                "ours" => memory(n),
                "tower-sessions" => memory_tower_sessions(n),
                other => bail!("unknown memory store {other}"),
            }
        }
        Some("cycle") => {
            let usage = "cycle <store> <tasks> <seconds> [sessions]";
            let spec = args.get(1).context(usage)?;
            let tasks = args.get(2).context(usage)?.parse()?;
            let secs = args.get(3).context(usage)?.parse()?;
            let sessions = args.get(4).map_or(Ok(10_000), |s| s.parse())?;
            cycle::cycle(spec, tasks, secs, sessions)
        }
        Some("migrate") => {
            let usage = "migrate <from-url> <to-url> <sessions>";
            let from = args.get(1).context(usage)?;
            let to = args.get(2).context(usage)?;
            let sessions = args.get(3).context(usage)?.parse()?;
            migrate::migrate(from, to, sessions)
        }
        Some("raw-migrate") => {
            let usage = "raw-migrate <redis-url> <cluster-nodes> <sessions>";
            let from = args.get(1).context(usage)?;
            let nodes = args.get(2).context(usage)?;
            let sessions = args.get(3).context(usage)?.parse()?;
            migrate::raw_redis_to_cluster(from, nodes, sessions)
        }
        Some("serve") => {
            let variant = args.get(1).context("serve <bare|sessions> <addr>")?;
            let addr = args.get(2).map_or("127.0.0.1:0", String::as_str);
            http::serve(variant, addr)
        }
        Some("serve-actix") => {
            let variant = args
                .get(1)
                .context("serve-actix <variant> <addr> [redis-url]")?;
            let addr = args.get(2).map_or("127.0.0.1:0", String::as_str);
            actix::serve(variant, addr, args.get(3).map(String::as_str))
        }
        _ => bail!("usage: session-bench cycle … | memory … | migrate … | serve … | serve-actix …"),
    }
}

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096)
}

/// Five keys `k0`..`k4` of 38-byte values: 200 payload bytes.
fn payload(i: usize) -> BTreeMap<String, Vec<u8>> {
    (0..5)
        .map(|k| {
            let mut value = format!("value-{i:032}");
            value.truncate(38);
            (format!("k{k}"), value.into_bytes())
        })
        .collect()
}

/// The same sessions in tower-sessions' MemoryStore (values as JSON strings, as its
/// `Session::insert` keeps them).
fn memory_tower_sessions(n: usize) -> Result<()> {
    use tower_sessions::SessionStore as _;
    use tower_sessions::session::{Id, Record};
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let store = tower_sessions::MemoryStore::default();
    let ids: Vec<Id> = (0..n).map(|_| Id::default()).collect();
    let payload_bytes: usize = payload(0).iter().map(|(k, v)| k.len() + v.len()).sum();
    let expiry = tower_sessions::cookie::time::OffsetDateTime::now_utc()
        + tower_sessions::cookie::time::Duration::hours(1);
    let before = rss_bytes()?;
    runtime.block_on(async {
        for (i, id) in ids.into_iter().enumerate() {
            let data = payload(i)
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        serde_json::Value::String(String::from_utf8(v).unwrap_or_default()),
                    )
                })
                .collect();
            let record = Record {
                id,
                data,
                expiry_date: expiry,
            };
            store
                .save(&record)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::Ok(())
    })?;
    let after = rss_bytes()?;
    let per_session = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "RESULT memory store=tower-sessions sessions={n} payload_bytes={payload_bytes} bytes_per_session={per_session:.1} ratio={:.2}",
        per_session / payload_bytes as f64
    );
    Ok(())
}

fn memory(n: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let store = MemoryStore::default();
    // Ids and keys are made before measuring, as a server would receive them.
    let keys: Vec<_> = (0..n)
        .map(|_| UuidV4Generator.generate().storage_key())
        .collect();
    let payload_bytes: usize = payload(0).iter().map(|(k, v)| k.len() + v.len()).sum();
    let expires_at = Timestamp::now().saturating_add(Duration::from_secs(3600));
    let before = rss_bytes()?;
    runtime.block_on(async {
        for (i, key) in keys.iter().enumerate() {
            let record = Record {
                key: *key,
                data: payload(i),
                created_at: Timestamp::now(),
                expires_at,
                owner: None,
            };
            store.create(&record).await?;
        }
        anyhow::Ok(())
    })?;
    let after = rss_bytes()?;
    assert_eq!(store.len(), n);
    let per_session = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "RESULT memory store=session-memory sessions={n} payload_bytes={payload_bytes} bytes_per_session={per_session:.1} ratio={:.2}",
        per_session / payload_bytes as f64
    );
    Ok(())
}
