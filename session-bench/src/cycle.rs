//! `cycle <store> <tasks> <seconds> [sessions]`: the session cycle on the store API.
//!
//! `sessions` sessions (default 10 000) with 5 keys of 40-byte strings are created first;
//! then `tasks` tasks loop for `seconds`: load a random session, change one key, save.
//! Prints `RESULT cycle store=… tasks=… cycles_per_sec=…`.
//!
//! Ours: `memory`, `disk-always:<dir>`, `disk-never:<dir>`, `redis:<url>`,
//! `redis-cluster:<host:port,…>`,
//! `memcache:<host:port,…>`, `mongo:<url>`, `sql:<url>` (`sql:sqlite://<dir>` for a file of
//! the run's own in `dir`).
//! tower-sessions, same workload through its store API: `ts-memory`, `ts-redis:<url>`,
//! `ts-redis-cluster:<host:port,…>`,
//! `ts-mongo:<url>`, `ts-sqlx:<url>` (tower-sessions-sqlx-store).
//! The raw limit, the least a cycle needs: `raw-memory` (a sharded map: get + clone +
//! insert of 250 bytes), `raw-disk-never:<dir>` and `raw-disk-always:<dir>` (read a file,
//! write a temporary one, with `fsync` for `always`, rename it over), and the bare round
//! trips a cycle needs with the same driver: `raw-redis:<url>`
//! (GET + SET of 250 bytes), `raw-redis-cluster:<host:port,…>` (the same on a cluster),
//! `raw-redis-cas:<url>` (GET + session-redis's compare-and-set
//! script), `raw-redis-staged:<url>` (GET + its staged write of large values: SET of a key of
//! its own and the script renaming it, pipelined), `raw-redis-ifeq:<url>` (GET + `SET … IFEQ`), `raw-redis-hash:<url>` (HGETALL + one MULTI/HSET/PEXPIREAT/EXEC), `raw-memcache:<host:port>` (get + a replying store of 250
//! bytes), `raw-mongo:<url>` (find_one + update_one by `_id`), `raw-sql:<url>` (`SELECT` by
//! primary key + one `UPDATE`).
//! The layout not taken, for the decision between the two: `json-sql:<url>` (a JSON object per
//! session, a cycle a `SELECT` and one merging `UPDATE`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use session_core::{SessionId, SessionManager, SessionStore};
use session_disk::{DiskStore, Fsync};
use session_memory::MemoryStore;

use crate::anchors;
use crate::workload::{Cycle, key, keys, value};

/// xorshift64*: a fast per-task generator; quality is irrelevant here.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Our stores: the store a spec names, and a view of it for populating fast.
async fn ours(
    kind: &str,
    arg: &str,
) -> Result<Option<(Arc<dyn SessionStore>, Arc<dyn SessionStore>)>> {
    let prefix = format!("bench{}:", std::process::id());
    Ok(Some(match kind {
        "memory" => {
            let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
            (store.clone(), store)
        }
        "disk-always" | "disk-never" => {
            let fsync = if kind == "disk-always" {
                Fsync::Always
            } else {
                Fsync::Never
            };
            let measured = DiskStore::builder(arg).fsync(fsync).open()?;
            // Populating 10 000 files with fsync would dominate the run; the set-up writes
            // without it, the measured store with the policy under test.
            let setup = DiskStore::builder(arg).fsync(Fsync::Never).open()?;
            (Arc::new(measured), Arc::new(setup))
        }
        "redis" => {
            let store: Arc<dyn SessionStore> = Arc::new(
                session_redis::RedisStore::builder(arg)
                    .key_prefix(prefix)
                    .open()
                    .await?,
            );
            (store.clone(), store)
        }
        "redis-cluster" => {
            let nodes: Vec<String> = arg.split(',').map(|n| format!("redis://{n}")).collect();
            let store: Arc<dyn SessionStore> = Arc::new(
                session_redis::RedisStore::cluster_builder(nodes)
                    .key_prefix(prefix)
                    .open()
                    .await?,
            );
            (store.clone(), store)
        }
        "memcache" => {
            let store: Arc<dyn SessionStore> = Arc::new(
                session_memcache::MemcacheStore::builder(arg.split(','))
                    .key_prefix(prefix)
                    .pool_size(64)
                    .build()?,
            );
            (store.clone(), store)
        }
        "mongo" => {
            let store: Arc<dyn SessionStore> = Arc::new(
                session_mongo::MongoStore::builder(arg)
                    .database("bench")
                    .collection(prefix.replace(':', ""))
                    .open()
                    .await?,
            );
            (store.clone(), store)
        }
        "sql" => {
            let store = crate::sql::ours(arg).await?;
            (store.clone(), store)
        }
        _ => return Ok(None),
    }))
}

/// Sets up the workload a spec names and returns its cycle.
async fn workload(spec: &str, sessions: usize) -> Result<Cycle> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    if let Some((store, setup_store)) = ours(kind, arg).await? {
        let setup = SessionManager::builder_arc(setup_store).build();
        let mut ids: Vec<SessionId> = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let session = setup.create();
            for k in 0..keys() {
                session.insert(key(k), value(i as u64 * keys() + k))?;
            }
            setup.save(&session).await?;
            ids.push(session.id());
        }
        let ids = Arc::new(ids);
        let manager = SessionManager::builder_arc(store).build();
        return Ok(Arc::new(move |r| {
            let (ids, manager) = (ids.clone(), manager.clone());
            Box::pin(async move {
                let id = &ids[(r % ids.len() as u64) as usize];
                let session = manager.load(id).await?.context("a session vanished")?;
                session.insert(key(r % keys()), value(r))?;
                manager.save(&session).await?;
                Ok(())
            })
        }));
    }
    match kind {
        "ts-memory" => anchors::tower_sessions_memory(sessions).await,
        "ts-redis" => anchors::tower_sessions_redis(arg, sessions).await,
        "ts-redis-cluster" => anchors::tower_sessions_redis_cluster(arg, sessions).await,
        "raw-redis-cluster" => anchors::raw_redis_cluster(arg, sessions).await,
        "ts-mongo" => anchors::tower_sessions_mongo(arg, sessions).await,
        "raw-memory" => anchors::raw_memory(sessions).await,
        "raw-disk-never" => anchors::raw_disk(arg, false, sessions).await,
        "raw-disk-always" => anchors::raw_disk(arg, true, sessions).await,
        "raw-redis" => anchors::raw_redis(arg, sessions).await,
        "raw-redis-cas" => anchors::raw_redis_cas(arg, sessions).await,
        "raw-redis-staged" => anchors::raw_redis_staged(arg, sessions).await,
        "raw-redis-ifeq" => anchors::raw_redis_ifeq(arg, sessions).await,
        "raw-redis-hash" => anchors::raw_redis_hash(arg, sessions).await,
        "raw-memcache" => anchors::raw_memcache(arg, sessions).await,
        "raw-mongo" => anchors::raw_mongo(arg, sessions).await,
        "ts-sqlx" => crate::sql::tower_sessions_sqlx(arg, sessions).await,
        "raw-sql" => crate::sql::raw(arg, sessions).await,
        "json-sql" => crate::sql::json_merge(arg, sessions).await,
        other => bail!("unknown store {other:?}"),
    }
}

pub(crate) fn cycle(spec: &str, tasks: usize, secs: u64, sessions: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cycle = workload(spec, sessions).await?;
        let cycles = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let workers: Vec<_> = (0..tasks)
            .map(|t| {
                let (cycle, cycles) = (cycle.clone(), cycles.clone());
                tokio::spawn(async move {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        cycle(next(&mut rng)).await?;
                        done += 1;
                    }
                    cycles.fetch_add(done, Ordering::Relaxed);
                    anyhow::Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.await??;
        }
        let total = cycles.load(Ordering::Relaxed);
        let rate = total as f64 / started.elapsed().as_secs_f64();
        let name = spec.split(':').next().unwrap_or(spec);
        println!("RESULT cycle store={name} tasks={tasks} cycles={total} cycles_per_sec={rate:.0}");
        anyhow::Ok(())
    })
}
