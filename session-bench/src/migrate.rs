//! `migrate <from-url> <to-url> <sessions>`: sessions migrated per second, the work of
//! `sessions migrate` (`session_core::migrate::Migration`, default page size and
//! parallelism), between two stores opened by URL.
//!
//! `from` is first filled with `sessions` sessions of 5 keys (200 bytes of names and
//! values), 64 writers at a time; then the migration is timed. Prints
//! `RESULT migrate sessions=… seconds=… per_sec=…`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use session_core::migrate::Migration;
use session_core::{IdGenerator, Record, SessionStore, Timestamp, UuidV4Generator};

/// Fills `store` with `n` sessions, `writers` at a time.
async fn fill(store: &Arc<dyn SessionStore>, n: usize, writers: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            let expires_at = Timestamp::now().saturating_add(std::time::Duration::from_secs(3600));
            for i in (w..n).step_by(writers) {
                let record = Record {
                    key: UuidV4Generator.generate().storage_key(),
                    data: crate::payload(i),
                    created_at: Timestamp::now(),
                    expires_at,
                    owner: (i % 4 == 0).then(|| format!("user{}", i % 1000)),
                };
                store.create(&record).await?;
            }
            Ok::<_, session_core::StoreError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

pub(crate) fn migrate(from: &str, to: &str, sessions: usize) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let source = session_any::open(from).await?;
            let dest = session_any::open(to).await?;
            fill(&source, sessions, 64).await?;
            let started = Instant::now();
            let summary = Migration::new(source, dest).run(|_| {}).await?;
            let secs = started.elapsed().as_secs_f64();
            if summary.copied != sessions as u64 {
                bail!("copied {} of {sessions}: {summary:?}", summary.copied);
            }
            println!(
                "RESULT migrate sessions={sessions} seconds={secs:.2} per_sec={:.0}",
                sessions as f64 / secs
            );
            Ok(())
        })
}

/// `raw-migrate <redis-url> <cluster-nodes> <sessions>`: the bare copy a migration from a
/// standalone Redis into a Redis Cluster cannot beat with the same driver — the source
/// filled as `migrate` fills it, then `SCAN` of its keys (500 a page) and, 32 in flight, a
/// `GET` from the source and a `SET … NX PXAT` into the cluster: no decoding, no comparing,
/// no re-check of the source. Prints `RESULT raw-migrate sessions=… seconds=… per_sec=…`.
pub(crate) fn raw_redis_to_cluster(from: &str, nodes: &str, sessions: usize) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let prefix = format!("rawmig{}:", std::process::id());
            let source = session_any::open(&format!("{from}?key_prefix={prefix}")).await?;
            fill(&source, sessions, 64).await?;
            let conn = redis::aio::ConnectionManager::new(redis::Client::open(from)?).await?;
            let cluster = redis::cluster::ClusterClient::new(
                nodes
                    .split(',')
                    .map(|n| format!("redis://{n}"))
                    .collect::<Vec<_>>(),
            )?
            .get_async_connection()
            .await?;
            let pxat = Timestamp::now()
                .saturating_add(std::time::Duration::from_secs(3600))
                .as_unix_millis();
            let started = Instant::now();
            let mut copied = 0usize;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}{{*"))
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn.clone())
                    .await?;
                let mut tasks = tokio::task::JoinSet::new();
                for key in keys {
                    while tasks.len() >= 32 {
                        copied += tasks
                            .join_next()
                            .await
                            .transpose()?
                            .transpose()?
                            .unwrap_or(0);
                    }
                    let (mut from, mut to) = (conn.clone(), cluster.clone());
                    tasks.spawn(async move {
                        let value: Option<Vec<u8>> =
                            redis::cmd("GET").arg(&key).query_async(&mut from).await?;
                        let Some(value) = value else {
                            return Ok::<_, redis::RedisError>(0);
                        };
                        let _: Option<String> = redis::cmd("SET")
                            .arg(&key)
                            .arg(value)
                            .arg("NX")
                            .arg("PXAT")
                            .arg(pxat)
                            .query_async(&mut to)
                            .await?;
                        Ok(1)
                    });
                }
                while let Some(done) = tasks.join_next().await {
                    copied += done??;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let secs = started.elapsed().as_secs_f64();
            if copied < sessions {
                bail!("copied {copied} of {sessions}");
            }
            println!(
                "RESULT raw-migrate sessions={copied} seconds={secs:.2} per_sec={:.0}",
                copied as f64 / secs
            );
            Ok(())
        })
}
