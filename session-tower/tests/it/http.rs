//! The layer's behaviour, request by request: the scenarios every integration runs
//! (`session_testing::scenarios`), through `tower::ServiceExt::oneshot` on an axum Router.

use std::sync::Arc;

use axum::Router;
use axum::http::Uri;
use axum::routing::get;
use session_testing::http::{call, call_with};
use session_testing::scenarios::{self, App, Framework, Hooks, Reply};
use session_tower::{Session, SessionLayer, SessionRejection};

/// session-tower's side of the scenarios.
struct Tower;

fn routes(hooks: Arc<Hooks>) -> Router {
    async fn explain(session: Result<Session, SessionRejection>) -> String {
        match session {
            Ok(_) => "ok".to_owned(),
            Err(rejection) => scenarios::explain(rejection.status().as_u16(), &rejection),
        }
    }
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/explain", get(explain))
        .fallback(move |uri: Uri, session: Session| async move {
            let (status, body) = scenarios::respond(uri.path(), &session, &hooks).await;
            (http::StatusCode::from_u16(status).unwrap(), body)
        })
}

impl Framework for Tower {
    async fn send_headers(&self, app: &App, path: &str, headers: &[(&str, &[u8])]) -> Reply {
        let router = routes(app.hooks.clone()).layer(SessionLayer::from_config(app.config.clone()));
        call_with(router, "GET", path, headers).await
    }

    async fn send_unwrapped(&self, path: &str) -> Reply {
        let fixture = scenarios::Fixture::new();
        call(routes(fixture.app.hooks), "GET", path, None).await
    }
}

session_testing::http_scenarios!(
    #[tokio::test]
    Tower
);
