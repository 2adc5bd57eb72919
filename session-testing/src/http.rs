//! An axum app with the session layer, driven in process (`tower::ServiceExt::oneshot`).

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use session_tower::Session;
use tower::ServiceExt as _;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Every `Set-Cookie` value.
    pub set_cookies: Vec<String>,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The `name=value` pair of the one Set-Cookie, to send back.
    pub fn cookie(&self) -> String {
        assert_eq!(
            self.set_cookies.len(),
            1,
            "expected one Set-Cookie: {:?}",
            self.set_cookies
        );
        self.set_cookies[0].split(';').next().unwrap().to_owned()
    }
}

/// Sends `method path` with an optional `Cookie` header and reads the response.
///
/// # Panics
/// When the app fails or answers with a body that is not UTF-8 text.
pub async fn send(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
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

/// The counter handler: adds one to the session's `n` and answers it.
///
/// # Panics
/// When `n` does not decode.
pub async fn counter(session: Session) -> String {
    let n = session.get::<u64>("n").unwrap().unwrap_or(0) + 1;
    session.insert("n", n).unwrap();
    n.to_string()
}

/// `GET /` with a `Cookie` header of raw bytes (not necessarily UTF-8).
///
/// # Panics
/// As [`send`].
pub async fn send_raw_cookie(app: &Router, cookie: &[u8]) -> Reply {
    let req = Request::builder()
        .uri("/")
        .header(
            header::COOKIE,
            http::HeaderValue::from_bytes(cookie).unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        set_cookies: vec![],
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}
