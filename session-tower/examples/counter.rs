//! The example app: a visit counter, a login that cycles the session id, a flash message,
//! and a logout that destroys the session.
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
//! - `RUST_LOG`: the log level on stderr (default `info`: store failures and damaged
//!   records are logged as warnings and errors).
//! - `SESSION_EXAMPLE_ADDR`: where to listen (default `127.0.0.1:3000`; port 0 picks one).
//! - `SESSION_KEY`: a secret of at least 32 bytes to sign cookies with; without it a random
//!   key is made at start, so cookies do not survive a restart.
//! - `SESSION_COOKIE_SECURE=1`: mark the cookie `Secure` (only behind HTTPS).

// An app: it prints its address for the user (and the tests).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Form;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;
use session_core::{CancellationToken, SessionManager, SessionStore, spawn_sweeper};
use session_tower::{Key, Session, SessionLayer};

/// The store named by `SESSION_STORE`: the one place that changes to swap backends.
async fn store_from_env() -> Result<(Arc<dyn SessionStore>, String), String> {
    let url = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".into());
    match session_any::open(&url).await {
        Ok(store) => Ok((store, session_any::redact(&url))),
        Err(e) => Err(format!("SESSION_STORE: {e}")),
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

async fn index(session: Session) -> Html<String> {
    let visits = session.get::<u64>("visits").ok().flatten().unwrap_or(0) + 1;
    let _ = session.insert("visits", visits);
    let user = session.get::<String>("user").ok().flatten();
    let flash = session.take_flash::<String>("notice").ok().flatten();
    let notice = flash
        .map(|m| format!("<p class=\"flash\">{}</p>", escape(&m)))
        .unwrap_or_default();
    let account = match user {
        Some(user) => format!(
            "<p>Signed in as <b>{}</b>.</p>\
             <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
            escape(&user)
        ),
        None => "<form method=\"post\" action=\"/login\">\
                 <input name=\"username\" placeholder=\"name\" required> <button>Log in</button></form>"
            .to_owned(),
    };
    Html(format!(
        "<!doctype html><title>Sessions</title>{notice}<p>Visits: <b id=\"visits\">{visits}</b></p>{account}"
    ))
}

#[derive(Deserialize)]
struct Login {
    username: String,
}

async fn login(session: Session, Form(form): Form<Login>) -> Redirect {
    let name: String = form.username.trim().chars().take(64).collect();
    if name.is_empty() {
        let _ = session.flash("notice", "Please enter a name to log in.");
        return Redirect::to("/");
    }
    // A new id at login: an id planted before login (session fixation) becomes worthless.
    session.cycle_id();
    let _ = session.insert("user", &name);
    let _ = session.flash("notice", format!("Welcome, {name}!"));
    Redirect::to("/")
}

async fn logout(session: Session) -> Redirect {
    session.destroy();
    // Written after `destroy`: it lands in a fresh session with a new id, so the message
    // shows on the next page while the logged-out session stays gone.
    let _ = session.flash("notice", "You have been logged out.");
    Redirect::to("/")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (store, shown) = store_from_env().await?;
    println!("session store: {shown}");
    let manager = SessionManager::builder_arc(store)
        .idle_timeout(Some(Duration::from_secs(30 * 60)))
        .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
        .build();
    let key = match std::env::var("SESSION_KEY") {
        Ok(secret) if secret.len() >= 32 => Key::derive_from(secret.as_bytes()),
        Ok(_) => return Err("SESSION_KEY must be at least 32 bytes".into()),
        Err(_) => Key::generate(),
    };
    let secure = std::env::var("SESSION_COOKIE_SECURE").is_ok_and(|v| v == "1");
    // Plain HTTP on loopback here, so the cookie is not `Secure` unless asked; the library's
    // default is `Secure`.
    let layer = SessionLayer::new(manager.clone(), key).secure(secure);

    let app = Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/health", get(|| async { "ok" }))
        .layer(layer);

    let cancel = CancellationToken::new();
    let sweeper = spawn_sweeper(
        manager.store().clone(),
        Duration::from_secs(60),
        cancel.clone(),
    );

    let addr = std::env::var("SESSION_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
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
