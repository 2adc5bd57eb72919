//! An axum app, driven in process (`tower::ServiceExt::oneshot`).

use axum::Router;
use axum::body::Body;
use http::{Request, header};
use session_tower::Session;
use tower::ServiceExt as _;

use crate::Reply;

/// Sends `method path` with an optional `Cookie` header of raw bytes (not necessarily
/// UTF-8) to `router` and reads the response.
///
/// # Panics
/// When the app fails or answers with a body that is not UTF-8 text.
pub async fn call(router: Router, method: &str, path: &str, cookie: Option<&[u8]>) -> Reply {
    match cookie {
        Some(cookie) => call_with(router, method, path, &[("cookie", cookie)]).await,
        None => call_with(router, method, path, &[]).await,
    }
}

/// Sends `method path` with `headers` (names and raw values) to `router` and reads the
/// response.
///
/// # Panics
/// As [`call`].
pub async fn call_with(
    router: Router,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, http::HeaderValue::from_bytes(value).unwrap());
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
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<bytes>").to_owned(),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        set_cookies,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
        headers,
    }
}

/// Sends `method path` with an optional `Cookie` header and reads the response.
///
/// # Panics
/// As [`call`].
pub async fn send(app: &Router, method: &str, path: &str, cookie: Option<&str>) -> Reply {
    call(app.clone(), method, path, cookie.map(str::as_bytes)).await
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
