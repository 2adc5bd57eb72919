//! The example app: a visit counter (an atomic increment), a login that cycles the session
//! id (with "Remember me"), a flash message, "Your sessions" (each browser signed in, and a
//! button to end any one), and a logout that destroys the session.
//!
//! ```sh
//! cargo run -p session-tower --example counter            # memory store, 127.0.0.1:3000
//! SESSION_STORE=memory://  cargo run -p session-tower --example counter
//! SESSION_STORE=file:///tmp/sessions  cargo run -p session-tower --example counter
//! SESSION_STORE=redis://127.0.0.1:6379  cargo run -p session-tower --example counter
//! SESSION_STORE=redis+cluster://127.0.0.1:7000,127.0.0.1:7001  cargo run -p session-tower --example counter
//! SESSION_STORE=memcache://127.0.0.1:11211,127.0.0.1:11212  cargo run -p session-tower --example counter
//! SESSION_STORE=mongodb://127.0.0.1:27017  cargo run -p session-tower --example counter
//! SESSION_STORE=postgres://app:secret@127.0.0.1:5432/app  cargo run -p session-tower --example counter
//! SESSION_STORE=sqlite:///tmp/sessions.db  cargo run -p session-tower --example counter
//! SESSION_STORE=mysql://app:secret@127.0.0.1:3306/app  cargo run -p session-tower --example counter
//! ```
//!
//! Environment:
//! - `SESSION_STORE`: which store, as a URL `session_any::open` takes, options included
//!   (default `memory://`). A URL that cannot be opened prints one line and exits with 1.
//! - `SESSION_STORE_FALLBACK`: while moving to `SESSION_STORE` from another store, that
//!   store's URL: sessions are served from `SESSION_STORE` and copied from this one on first
//!   use (see `sessions migrate` in the README).
//! - `RUST_LOG`: the log level on stderr (default `info`: store failures and damaged
//!   records are logged as warnings and errors).
//! - `SESSION_EXAMPLE_ADDR`: where to listen (default `127.0.0.1:3000`; port 0 picks one).
//! - `SESSION_KEY`: a secret of at least 32 bytes to sign cookies with; without it a random
//!   key is made at start, so cookies do not survive a restart.
//! - `SESSION_COOKIE_SECURE=1`: mark the cookie `Secure` (only behind HTTPS).

// An app: it prints its address for the user (and the tests).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;
use session_core::{CancellationToken, spawn_sweeper};
use session_tower::{Session, SessionLayer};

async fn index(session: Session) -> Html<String> {
    Html(common::index_page(&session))
}

#[derive(Deserialize)]
struct Login {
    username: String,
    /// The "Remember me" box: present (`on`) when ticked.
    remember: Option<String>,
}

async fn login(session: Session, Form(form): Form<Login>) -> Redirect {
    common::login(&session, &form.username, form.remember.is_some());
    Redirect::to("/")
}

async fn logout(session: Session) -> Redirect {
    common::logout(&session);
    Redirect::to("/")
}

#[derive(Deserialize)]
struct End {
    key: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (store, shown) = common::store_from_env().await?;
    println!("session store: {shown}");
    let manager = common::manager(store);
    let layer = SessionLayer::new(manager.clone(), common::key_from_env()?)
        .secure(common::secure_from_env())
        // For "Your sessions": each session's browser (personal data; see the README).
        .record_user_agent(true);

    let (list, end) = (manager.clone(), manager.clone());
    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route(
            "/sessions",
            get(move |session: Session| async move {
                Html(common::sessions_page(&list, &session).await)
            }),
        )
        .route(
            "/sessions/end",
            post(move |session: Session, Form(form): Form<End>| async move {
                common::end_session(&end, &session, &form.key).await;
                Redirect::to("/sessions")
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(layer);

    let cancel = CancellationToken::new();
    let sweeper = spawn_sweeper(
        manager.store().clone(),
        Duration::from_secs(60),
        cancel.clone(),
    );

    let listener = tokio::net::TcpListener::bind(common::addr_from_env()).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    cancel.cancel();
    sweeper.await?;
    Ok(())
}
