//! An axum service and an actix-web one with the same key and store: a user moves between
//! them (a migration, or both behind one domain) without being logged out.

use axum::routing::get;
use session_core::SessionManager;
use session_memory::MemoryStore;
use session_testing::scenarios;
use session_tower::SessionLayer;

use crate::scenarios::call;

async fn axum_visit(layer: SessionLayer, cookie: Option<&str>) -> (String, Option<String>) {
    let router = axum::Router::new()
        .route("/", get(session_testing::http::counter))
        .layer(layer);
    let reply = session_testing::http::call(router, "GET", "/", cookie.map(str::as_bytes)).await;
    let cookie = reply.first_cookie();
    (reply.body, cookie)
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
    let reply = call(
        Some(actix()),
        hooks.clone(),
        "/",
        &[("cookie", cookie.as_bytes())],
    )
    .await;
    assert_eq!(reply.body, "2", "actix did not accept axum's cookie");
    let (body, _) = axum_visit(layer, Some(&cookie)).await;
    assert_eq!(body, "3", "axum did not see actix's write");

    // Another key: neither accepts the other's cookie.
    let stranger = session_actix::SessionMiddleware::new(
        SessionManager::new(MemoryStore::default()),
        session_actix::Key::generate(),
    );
    let reply = call(Some(stranger), hooks, "/", &[("cookie", cookie.as_bytes())]).await;
    assert_eq!(reply.body, "1");
}
