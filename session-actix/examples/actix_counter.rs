//! The example app on actix-web: the same visit counter, login that cycles the session id,
//! flash message and logout as session-tower's `counter` example, with the same settings.
//!
//! ```sh
//! cargo run -p session-actix --example actix_counter      # memory store, 127.0.0.1:3000
//! SESSION_STORE=redis://127.0.0.1:6379  cargo run -p session-actix --example actix_counter
//! SESSION_STORE=postgres://app:secret@127.0.0.1:5432/app  cargo run -p session-actix --example actix_counter
//! ```
//!
//! Environment (as session-tower's example):
//! - `SESSION_STORE`: which store, as a URL `session_any::open` takes, options included
//!   (default `memory://`). A URL that cannot be opened prints one line and exits with 1.
//! - `SESSION_STORE_FALLBACK`: the store being moved from (sessions are copied from it on
//!   first use).
//! - `RUST_LOG`: the log level on stderr (default `info`).
//! - `SESSION_EXAMPLE_ADDR`: where to listen (default `127.0.0.1:3000`; port 0 picks one).
//! - `SESSION_KEY`: a secret of at least 32 bytes to sign cookies with; without it a random
//!   key is made at start. The axum example started with the same key accepts this one's
//!   cookies, and the other way round.
//! - `SESSION_COOKIE_SECURE=1`: mark the cookie `Secure` (only behind HTTPS).

// An app: it prints its address for the user (and the tests).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../../session-tower/examples/common/mod.rs"]
mod common;

use std::time::Duration;

use actix_web::http::header::LOCATION;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;
use session_actix::{Session, SessionMiddleware};
use session_core::{CancellationToken, SessionManager, spawn_sweeper};

async fn index(session: Session) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(common::index_page(&session))
}

#[derive(Deserialize)]
struct Login {
    username: String,
    /// The "Remember me" box: present (`on`) when ticked.
    remember: Option<String>,
}

fn to_home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/"))
        .finish()
}

async fn login(session: Session, form: web::Form<Login>) -> HttpResponse {
    common::login(&session, &form.username, form.remember.is_some());
    to_home()
}

async fn logout(session: Session) -> HttpResponse {
    common::logout(&session);
    to_home()
}

async fn sessions(manager: web::Data<SessionManager>, session: Session) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(common::sessions_page(&manager, &session).await)
}

#[derive(Deserialize)]
struct End {
    key: String,
}

async fn end_session(
    manager: web::Data<SessionManager>,
    session: Session,
    form: web::Form<End>,
) -> HttpResponse {
    common::end_session(&manager, &session, &form.key).await;
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/sessions"))
        .finish()
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    common::init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actix_counter: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (store, shown) = common::store_from_env().await?;
    println!("session store: {shown}");
    let manager = common::manager(store);
    let middleware = SessionMiddleware::new(manager.clone(), common::key_from_env()?)
        .secure(common::secure_from_env())
        // For "Your sessions": each session's browser (personal data; see the README).
        .record_user_agent(true);
    let data = web::Data::new(manager.clone());

    let cancel = CancellationToken::new();
    let sweeper = spawn_sweeper(
        manager.store().clone(),
        Duration::from_secs(60),
        cancel.clone(),
    );

    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware.clone())
            .app_data(data.clone())
            .route("/", web::get().to(index))
            .route("/sessions", web::get().to(sessions))
            .route("/sessions/end", web::post().to(end_session))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
            .route("/health", web::get().to(|| async { "ok" }))
    })
    .workers(2)
    .bind(common::addr_from_env())?;
    for addr in server.addrs() {
        println!("listening on http://{addr}");
    }
    // actix-web stops on ctrl-c (SIGINT) and SIGTERM by itself, gracefully.
    server.run().await?;
    cancel.cancel();
    sweeper.await?;
    Ok(())
}
