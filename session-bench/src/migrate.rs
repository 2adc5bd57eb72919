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
