#![no_main]
//! Cookie parsing and signature verification, through the public layer: any `Cookie`
//! header bytes give a 200 with a fresh session (the store holds no session, so nothing may
//! ever be found), and never a panic.

use std::convert::Infallible;

use http::{Request, Response, header};
use libfuzzer_sys::fuzz_target;
use session_core::SessionManager;
use session_memory::MemoryStore;
use session_tower::{Key, LazySession, SessionLayer};
use tower::{Layer, ServiceExt, service_fn};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let manager = SessionManager::new(MemoryStore::default());
        let layer = SessionLayer::new(manager, Key::from(&[42u8; 64]));
        let service = layer.layer(service_fn(|req: Request<()>| async move {
            let lazy = req
                .extensions()
                .get::<LazySession>()
                .cloned()
                .expect("the layer adds it");
            let session = lazy.get().await.expect("the memory store does not fail");
            assert!(
                session.is_new(),
                "a cookie found a session in an empty store"
            );
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let req = Request::builder()
            .header(header::COOKIE, value)
            .body(())
            .unwrap();
        let res = service.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
    });
});
