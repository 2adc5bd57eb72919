//! `serve-actix <variant> <addr> [redis-url]`: the example's counter route on actix-web —
//! bare, with ours (memory store or Redis), or with actix-session (its `CookieSessionStore`
//! or its `RedisSessionStore`) — for a load generator to hit. Two workers, as the axum
//! server's two runtime threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpServer, web};
use anyhow::{Context as _, Result, bail};
use session_core::{SessionManager, SessionStore};
use session_memory::MemoryStore;

async fn ours(session: session_actix::Session) -> String {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    let _ = session.insert("visits", visits);
    format!("Visits: {visits}")
}

async fn actix_session_counter(session: actix_session::Session) -> String {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    let _ = session.insert("visits", visits);
    format!("Visits: {visits}")
}

/// Runs `factory`'s app on `addr` with two workers until the process is killed.
macro_rules! run {
    ($addr:expr, $factory:expr) => {{
        let server = HttpServer::new($factory).workers(2).bind($addr)?;
        println!("listening on http://{}", server.addrs()[0]);
        server.run().await?;
    }};
}

pub(crate) fn serve(variant: &str, addr: &str, redis: Option<&str>) -> Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let redis_url = || redis.context("this variant needs a Redis URL");
        let ours_on = |store: Arc<dyn SessionStore>| {
            let manager = SessionManager::builder_arc(store).build();
            session_actix::SessionMiddleware::new(manager, session_actix::Key::generate())
                .secure(false)
        };
        match variant {
            "bare" => {
                let visits = Arc::new(AtomicU64::new(0));
                run!(addr, move || {
                    let visits = visits.clone();
                    App::new().default_service(web::to(move || {
                        let n = visits.fetch_add(1, Ordering::Relaxed) + 1;
                        async move { format!("Visits: {n}") }
                    }))
                })
            }
            "sessions" | "sessions-redis" => {
                let store: Arc<dyn SessionStore> = if variant == "sessions" {
                    Arc::new(MemoryStore::default())
                } else {
                    Arc::new(
                        session_redis::RedisStore::builder(redis_url()?)
                            .open()
                            .await?,
                    )
                };
                let middleware = ours_on(store);
                run!(addr, move || App::new()
                    .wrap(middleware.clone())
                    .default_service(web::to(ours)))
            }
            "actix-session-cookie" => {
                let key = actix_web::cookie::Key::generate();
                run!(addr, move || App::new()
                    .wrap(
                        actix_session::SessionMiddleware::builder(
                            actix_session::storage::CookieSessionStore::default(),
                            key.clone(),
                        )
                        .cookie_secure(false)
                        .build(),
                    )
                    .default_service(web::to(actix_session_counter)))
            }
            "actix-session-redis" => {
                let store = actix_session::storage::RedisSessionStore::new(redis_url()?)
                    .await
                    .map_err(|e| anyhow::anyhow!("actix-session's Redis store: {e}"))?;
                let key = actix_web::cookie::Key::generate();
                run!(addr, move || App::new()
                    .wrap(
                        actix_session::SessionMiddleware::builder(store.clone(), key.clone())
                            .cookie_secure(false)
                            .build(),
                    )
                    .default_service(web::to(actix_session_counter)))
            }
            other => bail!("unknown variant {other}"),
        }
        anyhow::Ok(())
    })
}
