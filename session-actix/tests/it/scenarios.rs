//! The middleware's behaviour, request by request, through `actix_web::test`.

use std::sync::Arc;

use actix_web::http::header::{HeaderValue, SET_COOKIE};
use actix_web::test as actix_test;
use actix_web::{App as ActixApp, HttpRequest, web};
use session_actix::{Session, SessionMiddleware, SessionRejection};
use session_testing::scenarios::{self, App, Framework, Hooks, Reply};

/// session-actix's side of the scenarios.
pub(crate) struct Actix;

/// The standard routes, with or without the middleware, answering `path`.
pub(crate) async fn call(
    middleware: Option<SessionMiddleware>,
    hooks: Arc<Hooks>,
    path: &str,
    headers: &[(&str, &[u8])],
) -> Reply {
    async fn explain(session: Result<Session, SessionRejection>) -> String {
        match session {
            Ok(_) => "ok".to_owned(),
            Err(rejection) => scenarios::explain(rejection.status().as_u16(), &rejection),
        }
    }
    let any = move |req: HttpRequest, session: Session| {
        let hooks = hooks.clone();
        async move {
            let (status, body) = scenarios::respond(req.path(), &session, &hooks).await;
            let status = actix_web::http::StatusCode::from_u16(status).unwrap();
            actix_web::HttpResponse::build(status).body(body)
        }
    };
    let app = ActixApp::new()
        .wrap(actix_web::middleware::Condition::new(
            middleware.is_some(),
            middleware.unwrap_or_else(|| {
                // Never used: the condition is off.
                SessionMiddleware::from_config(scenarios::Fixture::new().app.config)
            }),
        ))
        .route("/health", web::get().to(|| async { "ok" }))
        .route("/explain", web::get().to(explain))
        .default_service(web::to(any));
    let service = actix_test::init_service(app).await;
    let mut req = actix_test::TestRequest::get().uri(path);
    for (name, value) in headers {
        req = req.append_header((*name, HeaderValue::from_bytes(value).unwrap()));
    }
    let res = actix_test::call_service(&service, req.to_request()).await;
    let status = res.status().as_u16();
    let set_cookies = res
        .headers()
        .get_all(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let all = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<bytes>").to_owned(),
            )
        })
        .collect();
    let body = actix_test::read_body(res).await;
    Reply {
        status,
        set_cookies,
        body: String::from_utf8(body.to_vec()).unwrap(),
        headers: all,
    }
}

impl Framework for Actix {
    async fn send_headers(&self, app: &App, path: &str, headers: &[(&str, &[u8])]) -> Reply {
        let middleware = SessionMiddleware::from_config(app.config.clone());
        call(Some(middleware), app.hooks.clone(), path, headers).await
    }

    async fn send_unwrapped(&self, path: &str) -> Reply {
        call(None, scenarios::Fixture::new().app.hooks, path, &[]).await
    }
}

session_testing::http_scenarios!(
    #[actix_web::test]
    Actix
);

/// What actix-session's users asked for (#251): the extractor is `Send + Sync + 'static`.
#[test]
fn the_session_is_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Session>();
    send_sync::<SessionMiddleware>();
    send_sync::<SessionRejection>();
}
