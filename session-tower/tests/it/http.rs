//! The layer's behaviour, request by request: the scenarios every integration runs
//! (`session_testing::scenarios`), through `tower::ServiceExt::oneshot` on an axum Router.

use axum::Router;
use axum::body::Body;
use axum::http::Uri;
use axum::routing::get;
use http::{Request, header};
use session_testing::scenarios::{self, App, Framework, Hooks, Reply};
use session_tower::{Session, SessionLayer, SessionRejection};
use std::sync::Arc;
use tower::ServiceExt as _;

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
            scenarios::respond(uri.path(), &session, &hooks).await
        })
}

async fn call(router: Router, path: &str, cookie: Option<&[u8]>) -> Reply {
    let mut req = Request::builder().uri(path);
    if let Some(cookie) = cookie {
        req = req.header(
            header::COOKIE,
            http::HeaderValue::from_bytes(cookie).unwrap(),
        );
    }
    let res = router
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let set_cookies = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        set_cookies,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

impl Framework for Tower {
    async fn send(&self, app: &App, path: &str, cookie: Option<&[u8]>) -> Reply {
        let router = routes(app.hooks.clone()).layer(SessionLayer::from_config(app.config.clone()));
        call(router, path, cookie).await
    }

    async fn send_unwrapped(&self, path: &str) -> Reply {
        let fixture = scenarios::Fixture::new();
        call(routes(fixture.app.hooks), path, None).await
    }
}

session_testing::http_scenarios!(
    #[tokio::test]
    Tower
);
