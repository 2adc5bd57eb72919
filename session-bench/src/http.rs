//! `serve <bare|sessions|tower-sessions> <addr>`: the example's counter route without
//! sessions, with ours (memory store), or with tower-sessions' layer (its MemoryStore), for a
//! load generator to hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use axum::Router;
use axum::routing::get;
use session_core::SessionManager;
use session_memory::MemoryStore;
use session_tower::{Key, Session, SessionLayer};

async fn counter(session: Session) -> String {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    let _ = session.insert("visits", visits);
    format!("Visits: {visits}")
}

async fn tower_sessions_counter(session: tower_sessions::Session) -> String {
    let visits: u64 = session.get("visits").await.ok().flatten().unwrap_or(0) + 1;
    let _ = session.insert("visits", visits).await;
    format!("Visits: {visits}")
}

pub(crate) fn serve(variant: &str, addr: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = match variant {
            "bare" => {
                // The same route without sessions: one shared counter.
                let visits = Arc::new(AtomicU64::new(0));
                Router::new().route(
                    "/",
                    get(move || {
                        let n = visits.fetch_add(1, Ordering::Relaxed) + 1;
                        async move { format!("Visits: {n}") }
                    }),
                )
            }
            "sessions" => {
                let manager = SessionManager::new(MemoryStore::default());
                let layer = SessionLayer::new(manager, Key::generate()).secure(false);
                Router::new().route("/", get(counter)).layer(layer)
            }
            "tower-sessions" => {
                let layer = tower_sessions::SessionManagerLayer::new(
                    tower_sessions::MemoryStore::default(),
                )
                .with_secure(false);
                Router::new()
                    .route("/", get(tower_sessions_counter))
                    .layer(layer)
            }
            other => anyhow::bail!("unknown variant {other}"),
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}
