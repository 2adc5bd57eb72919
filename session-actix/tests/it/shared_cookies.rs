//! An axum service and an actix-web one with the same key and store: a user moves between
//! them (a migration, or both behind one domain) without being logged out.

use axum::body::Body;
use axum::routing::get;
use session_core::SessionManager;
use session_memory::MemoryStore;
use session_testing::scenarios;
use session_tower::SessionLayer;
use tower::ServiceExt as _;

use crate::scenarios::call;

async fn axum_visit(layer: SessionLayer, cookie: Option<&str>) -> (String, Option<String>) {
    let router = axum::Router::new()
        .route(
            "/",
            get(|session: session_tower::Session| async move {
                let n = session.get::<u64>("n").unwrap().unwrap_or(0) + 1;
                session.insert("n", n).unwrap();
                n.to_string()
            }),
        )
        .layer(layer);
    let mut req = http::Request::builder().uri("/");
    if let Some(cookie) = cookie {
        req = req.header(http::header::COOKIE, cookie);
    }
    let res = router
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let set = res
        .headers()
        .get(http::header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (String::from_utf8(body.to_vec()).unwrap(), set)
}

#[actix_web::test]
async fn a_cookie_from_an_axum_service_is_accepted_by_an_actix_one_and_back() {
    let fixture = scenarios::Fixture::new();
    let manager: SessionManager = fixture.manager.clone();
    let layer = SessionLayer::new(manager.clone(), fixture.key.clone());
    let hooks = fixture.app.hooks.clone();
    let actix = || session_actix::SessionMiddleware::new(manager.clone(), fixture.key.clone());

    let (body, cookie) = axum_visit(layer.clone(), None).await;
    assert_eq!(body, "1");
    let cookie = cookie.expect("a new session sets its cookie");
    let reply = call(Some(actix()), hooks.clone(), "/", Some(cookie.as_bytes())).await;
    assert_eq!(reply.body, "2", "actix did not accept axum's cookie");
    let (body, _) = axum_visit(layer, Some(&cookie)).await;
    assert_eq!(body, "3", "axum did not see actix's write");

    // Another key: neither accepts the other's cookie.
    let stranger = session_actix::SessionMiddleware::new(
        SessionManager::new(MemoryStore::default()),
        session_actix::Key::generate(),
    );
    let reply = call(Some(stranger), hooks, "/", Some(cookie.as_bytes())).await;
    assert_eq!(reply.body, "1");
}
