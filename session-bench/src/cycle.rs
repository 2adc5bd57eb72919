//! `cycle <store> <tasks> <seconds> [sessions]`: the session cycle on the store API.
//!
//! `sessions` sessions (default 10 000) with 5 keys of 40-byte strings are created first;
//! then `tasks` tasks loop for `seconds`: load a random session through the manager, change
//! one key, save. Prints `RESULT cycle store=… tasks=… cycles_per_sec=…`.
//!
//! Stores: `memory`, `disk-always:<dir>`, `disk-never:<dir>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use session_core::{SessionId, SessionManager, SessionStore};
use session_disk::{DiskStore, Fsync};
use session_memory::MemoryStore;

/// The store a spec names, and (for populating fast) a second view of it for the set-up.
fn open(spec: &str) -> Result<(Arc<dyn SessionStore>, Arc<dyn SessionStore>)> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    Ok(match kind {
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
        other => bail!("unknown store {other:?}"),
    })
}

fn value(n: u64) -> String {
    format!("{n:040}")
}

/// xorshift64*: a fast per-task generator; quality is irrelevant here.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

pub(crate) fn cycle(spec: &str, tasks: usize, secs: u64, sessions: usize) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (store, setup_store) = open(spec)?;
        let setup = SessionManager::builder_arc(setup_store).build();
        let mut ids: Vec<SessionId> = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let session = setup.create();
            for k in 0..5 {
                session.insert(format!("k{k}"), value(i as u64 * 5 + k))?;
            }
            setup.save(&session).await?;
            ids.push(session.id());
        }
        let ids = Arc::new(ids);
        let manager = SessionManager::builder_arc(store).build();
        let cycles = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let workers: Vec<_> = (0..tasks)
            .map(|t| {
                let (ids, manager, cycles) = (ids.clone(), manager.clone(), cycles.clone());
                tokio::spawn(async move {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        let r = next(&mut rng);
                        let id = &ids[(r % ids.len() as u64) as usize];
                        let session = manager.load(id).await?.context("a session vanished")?;
                        session.insert(format!("k{}", r % 5), value(r))?;
                        manager.save(&session).await?;
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
        let elapsed = started.elapsed().as_secs_f64();
        let rate = cycles.load(Ordering::Relaxed) as f64 / elapsed;
        println!("RESULT cycle store={spec} tasks={tasks} cycles_per_sec={rate:.0}");
        anyhow::Ok(())
    })
}
