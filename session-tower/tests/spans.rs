//! The layer's tracing spans, in a test binary of its own: tracing caches each callsite's
//! interest process-wide, so other tests hitting the same callsites on other threads, with
//! no subscriber, would race the scoped subscriber this test installs.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use session_core::SessionManager;
use session_memory::MemoryStore;
use session_testing::http::{counter, send};
use session_tower::{Key, SessionLayer};

fn app() -> Router {
    let manager = SessionManager::new(MemoryStore::default());
    Router::new()
        .route("/", get(counter))
        .layer(SessionLayer::new(manager, Key::generate()))
}

/// Records the names of the spans created while it is the thread's subscriber.
#[derive(Default)]
struct SpanNames {
    max: Option<tracing::Level>,
    names: std::sync::Mutex<Vec<&'static str>>,
    next: std::sync::atomic::AtomicU64,
}

impl tracing::Subscriber for SpanNames {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        self.max.is_some_and(|max| *metadata.level() <= max)
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(
            self.max
                .map_or(tracing::level_filters::LevelFilter::OFF, Into::into),
        )
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        self.names.lock().unwrap().push(span.metadata().name());
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::span::Id::from_u64(n + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

async fn span_names(max: Option<tracing::Level>) -> Vec<&'static str> {
    let subscriber = Arc::new(SpanNames {
        max,
        ..SpanNames::default()
    });
    let _default = tracing::subscriber::set_default(subscriber.clone());
    let app = app();
    let first = send(&app, "GET", "/", None).await;
    send(&app, "GET", "/", Some(&first.cookie())).await;
    subscriber.names.lock().unwrap().clone()
}

#[tokio::test]
async fn load_and_save_have_debug_spans_when_debug_is_recorded() {
    let names = span_names(Some(tracing::Level::DEBUG)).await;
    let count = |name| names.iter().filter(|n| **n == name).count();
    assert_eq!(count("session.load"), 2, "{names:?}");
    assert_eq!(count("session.save"), 2, "{names:?}");
    // Below debug, no span reaches the subscriber.
    assert_eq!(
        span_names(Some(tracing::Level::INFO)).await,
        Vec::<&str>::new()
    );
}
