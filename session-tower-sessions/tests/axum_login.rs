//! axum-login (on tower-sessions 0.14) through the adapter over our memory store: log in,
//! reach a protected page, log out, and the old cookie is logged out for good.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
use session_core::{SessionId, SessionStore};
use session_memory::MemoryStore;
use session_tower_sessions::TowerSessionsStore;
use tower_sessions::SessionManagerLayer;

#[derive(Debug, Clone)]
struct User {
    id: i64,
    name: String,
    password_hash: Vec<u8>,
}

impl AuthUser for User {
    type Id = i64;
    fn id(&self) -> i64 {
        self.id
    }
    fn session_auth_hash(&self) -> &[u8] {
        &self.password_hash
    }
}

#[derive(Debug, Clone)]
struct Users;

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

fn alice() -> User {
    User {
        id: 7,
        name: "alice".into(),
        password_hash: b"hash-of-secret".to_vec(),
    }
}

impl AuthnBackend for Users {
    type User = User;
    type Credentials = (String, String);
    type Error = Never;

    async fn authenticate(
        &self,
        (name, password): Self::Credentials,
    ) -> Result<Option<User>, Never> {
        Ok((name == "alice" && password == "secret").then(alice))
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Never> {
        Ok((*id == 7).then(alice))
    }
}

async fn send(app: &Router, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let reply = session_testing::http::send(app, "GET", path, cookie).await;
    let cookie = reply.first_cookie();
    (reply.status, cookie, reply.body)
}

#[tokio::test]
async fn an_axum_login_round_trip_through_our_store() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    let sessions =
        SessionManagerLayer::new(TowerSessionsStore::new(store.clone())).with_secure(false);
    let auth = AuthManagerLayerBuilder::new(Users, sessions).build();
    let app = Router::new()
        .route(
            "/login",
            get(|mut auth: AuthSession<Users>| async move {
                let user = auth
                    .authenticate(("alice".into(), "secret".into()))
                    .await
                    .unwrap()
                    .expect("the credentials are right");
                auth.login(&user).await.unwrap();
                "welcome"
            }),
        )
        .route(
            "/me",
            get(|auth: AuthSession<Users>| async move {
                auth.user.map_or_else(|| "nobody".to_owned(), |u| u.name)
            }),
        )
        .route(
            "/logout",
            get(|mut auth: AuthSession<Users>| async move {
                auth.logout().await.unwrap();
                "bye"
            }),
        )
        .layer(auth);

    assert_eq!(send(&app, "/me", None).await.2, "nobody");
    let (status, cookie, _) = send(&app, "/login", None).await;
    assert_eq!(status, 200);
    let cookie = cookie.expect("login sets the session cookie");
    assert_eq!(send(&app, "/me", Some(&cookie)).await.2, "alice");
    // The login is in our store, under the hashed id.
    let key = SessionId::parse(cookie.split_once('=').unwrap().1)
        .unwrap()
        .storage_key();
    let record = store.load(&key).await.unwrap().expect("the login's record");
    assert!(
        record.data.keys().any(|k| k.contains("axum-login")),
        "{:?}",
        record.data.keys()
    );

    let (_, _, body) = send(&app, "/logout", Some(&cookie)).await;
    assert_eq!(body, "bye");
    assert_eq!(
        send(&app, "/me", Some(&cookie)).await.2,
        "nobody",
        "logged in after logout"
    );
    assert!(
        store.load(&key).await.unwrap().is_none(),
        "the record outlived logout"
    );
}
