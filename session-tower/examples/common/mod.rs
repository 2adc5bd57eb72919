//! What the axum and the actix-web counter examples share: the store from `SESSION_STORE`,
//! the key and cookie settings from the environment, the page, and the login rules. Each
//! example includes this file; only the routing differs.

use std::sync::Arc;
use std::time::Duration;

use session_core::{
    FallbackStore, Session, SessionEvent, SessionExpiry, SessionManager, SessionStore,
};
use session_http::Key;

/// The store named by `SESSION_STORE` (default `memory://`): the one place that changes to
/// swap backends. With `SESSION_STORE_FALLBACK` too, the app is moving stores: it serves
/// from `SESSION_STORE` and copies each session from the fallback the first time it is used
/// (`session_core::FallbackStore`). The error is one line, with any password in the URL
/// redacted.
pub(crate) async fn store_from_env() -> Result<(Arc<dyn SessionStore>, String), String> {
    let url = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".into());
    let store = session_any::open(&url)
        .await
        .map_err(|e| format!("SESSION_STORE: {e}"))?;
    let shown = session_any::redact(&url);
    let Ok(old) = std::env::var("SESSION_STORE_FALLBACK") else {
        return Ok((store, shown));
    };
    let fallback = session_any::open(&old)
        .await
        .map_err(|e| format!("SESSION_STORE_FALLBACK: {e}"))?;
    let shown = format!("{shown}, falling back to {}", session_any::redact(&old));
    Ok((Arc::new(FallbackStore::new(store, fallback)), shown))
}

/// Sessions idle out after 30 minutes and end 12 hours after login at the latest.
pub(crate) fn manager(store: Arc<dyn SessionStore>) -> SessionManager {
    SessionManager::builder_arc(store)
        .idle_timeout(Some(Duration::from_secs(30 * 60)))
        .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
        // Lifecycle events (created, id cycled, destroyed, expired) to the log; an app
        // would send them to its audit trail through a channel.
        .listener(|event: &SessionEvent| tracing::info!(?event, "session event"))
        // A login beyond 10 sessions of one user ends the oldest.
        .max_sessions_per_owner(Some(10))
        .build()
}

/// `GET /sessions`: the signed-in user's sessions, with the device each was last used from
/// (the layers record the `User-Agent`) and a button to end any one of them.
pub(crate) async fn sessions_page(manager: &SessionManager, session: &Session) -> String {
    let notice = session
        .take_flash::<String>("notice")
        .ok()
        .flatten()
        .map(|m| format!("<p class=\"flash\">{}</p>", escape(&m)))
        .unwrap_or_default();
    let Some(user) = session.get::<String>("user").ok().flatten() else {
        return format!("<!doctype html><title>Sessions</title>{notice}<p>Not signed in.</p>");
    };
    let this = session.id().storage_key();
    let list = match manager.devices_of(&user).await {
        Ok(devices) => devices
            .iter()
            .map(|d| {
                let key = d.key.to_hex();
                let seen = d
                    .last_seen
                    .map(|t| format!("last seen at {} (unix ms)", t.as_unix_millis()))
                    .unwrap_or_default();
                format!(
                    "<li data-key=\"{key}\" data-this=\"{this}\">{agent} {seen}{mark}\
                     <form method=\"post\" action=\"/sessions/end\">\
                     <input type=\"hidden\" name=\"key\" value=\"{key}\"><button>End</button></form></li>",
                    key = key.as_str(),
                    this = u8::from(d.key == this),
                    agent = escape(d.user_agent.as_deref().unwrap_or("unknown device")),
                    mark = if d.key == this { " (this session)" } else { "" },
                )
            })
            .collect::<String>(),
        Err(e) => format!("<li>Not available: {}</li>", escape(&e.to_string())),
    };
    format!(
        "<!doctype html><title>Sessions</title>{notice}<p>Sessions of <b>{}</b>:</p><ul>{list}</ul>",
        escape(&user)
    )
}

/// `POST /sessions/end` with the form's `key` (a handle from `/sessions`): ends that session
/// if it is the signed-in user's; the response redirects to `/sessions`.
pub(crate) async fn end_session(manager: &SessionManager, session: &Session, key: &str) {
    let Some(user) = session.get::<String>("user").ok().flatten() else {
        return;
    };
    let ended = match session_core::StorageKey::parse_hex(key) {
        Some(key) => manager.end_session_of(&user, &key).await.unwrap_or(false),
        None => false,
    };
    let notice = if ended {
        "Session ended."
    } else {
        "No such session."
    };
    let _ = session.flash("notice", notice);
}

/// The signing key from `SESSION_KEY` (at least 32 bytes), or a random one.
pub(crate) fn key_from_env() -> Result<Key, String> {
    match std::env::var("SESSION_KEY") {
        Ok(secret) if secret.len() >= 32 => Ok(Key::derive_from(secret.as_bytes())),
        Ok(_) => Err("SESSION_KEY must be at least 32 bytes".into()),
        Err(_) => Ok(Key::generate()),
    }
}

/// `SESSION_COOKIE_SECURE=1`. Plain HTTP on loopback here, so the cookie is not `Secure`
/// unless asked; the library's default is `Secure`.
pub(crate) fn secure_from_env() -> bool {
    std::env::var("SESSION_COOKIE_SECURE").is_ok_and(|v| v == "1")
}

/// `SESSION_EXAMPLE_ADDR` (default `127.0.0.1:3000`).
pub(crate) fn addr_from_env() -> String {
    std::env::var("SESSION_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into())
}

/// Logs to stderr at `RUST_LOG`'s level (default `info`).
pub(crate) fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
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

/// `GET /`: counts the visit, shows (and consumes) the flash message, and the login or logout
/// form.
pub(crate) fn index_page(session: &Session) -> String {
    // An increment, not a read and a write: concurrent visits with one cookie all count.
    let visits = session.increment("visits", 1).unwrap_or_else(|_| {
        // Not a counter (written by something else): start over.
        let _ = session.insert("visits", 1i64);
        1
    });
    let user = session.get::<String>("user").ok().flatten();
    let flash = session.take_flash::<String>("notice").ok().flatten();
    let notice = flash
        .map(|m| format!("<p class=\"flash\">{}</p>", escape(&m)))
        .unwrap_or_default();
    let account = match user {
        Some(user) => format!(
            "<p>Signed in as <b>{}</b>. <a href=\"/sessions\">Your sessions</a></p>\
             <form method=\"post\" action=\"/logout\"><button>Log out</button></form>",
            escape(&user)
        ),
        None => "<form method=\"post\" action=\"/login\">\
                 <input name=\"username\" placeholder=\"name\" required> \
                 <label><input type=\"checkbox\" name=\"remember\"> Remember me</label> \
                 <button>Log in</button></form>"
            .to_owned(),
    };
    format!(
        "<!doctype html><title>Sessions</title>{notice}<p>Visits: <b id=\"visits\">{visits}</b></p>{account}"
    )
}

/// `POST /login` with the form's `username` (and `remember`, the "Remember me" box); the
/// response redirects to `/`.
pub(crate) fn login(session: &Session, username: &str, remember: bool) {
    let name: String = username.trim().chars().take(64).collect();
    if name.is_empty() {
        let _ = session.flash("notice", "Please enter a name to log in.");
        return;
    }
    // A new id at login: an id planted before login (session fixation) becomes worthless.
    session.cycle_id();
    // The per-user index: "Your sessions", and at most 10 sessions per user.
    session.set_owner(Some(&name));
    if remember {
        // Remember me: 30 days after the last visit (90 at most), with a cookie that
        // outlives the browser; otherwise the app's 30 idle minutes.
        const DAY: Duration = Duration::from_secs(24 * 3600);
        session.set_expiry(Some(SessionExpiry::persistent(
            Some(30 * DAY),
            Some(90 * DAY),
        )));
    }
    let _ = session.insert("user", &name);
    let _ = session.flash("notice", format!("Welcome, {name}!"));
}

/// `POST /logout`; the response redirects to `/`.
pub(crate) fn logout(session: &Session) {
    session.destroy();
    // Written after `destroy`: it lands in a fresh session with a new id, so the message
    // shows on the next page while the logged-out session stays gone.
    let _ = session.flash("notice", "You have been logged out.");
}
