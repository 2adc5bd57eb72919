//! Outages and slow servers, through the layer over real HTTP on 127.0.0.1, for Redis,
//! memcached and MongoDB (SecantusDB). Each test owns its server so it can kill, restart or
//! stall it. Bounded: 32 clients, a few seconds a phase, every request with a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use session_core::suite::server_url;
use session_core::{IdGenerator, SessionManager, SessionStore, StoreError, UuidV4Generator};
use session_testing::{OwnedServer, ServerKind, free_port};
use session_tower::{Key, SessionLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::e2e::request;
use session_testing::http::counter;

const TIMEOUT: Duration = Duration::from_millis(500);
const CLIENTS: usize = 32;

/// A server this test can kill and start again on the same port.
#[derive(Clone, Copy)]
enum Kind {
    Redis,
    Memcached,
    Mongo,
    Postgres,
    MariaDb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Memcached => "memcached",
            Self::Mongo => "mongodb",
            Self::Postgres => "postgres",
            Self::MariaDb => "mariadb",
        }
    }

    /// Whether `cargo xtask test-backends` provides this kind (else the test is skipped, or
    /// fails under SESSION_TEST_REQUIRE_SERVERS=1).
    fn available(self) -> bool {
        match self {
            Self::Redis => server_url("SESSION_TEST_REDIS_URL").is_some(),
            Self::Memcached => server_url("SESSION_TEST_MEMCACHED_SERVERS").is_some(),
            Self::Mongo => server_url("SESSION_TEST_SECANTUS_BIN").is_some(),
            Self::Postgres => server_url("SESSION_TEST_POSTGRES_URL").is_some(),
            Self::MariaDb => server_url("SESSION_TEST_MYSQL_URL").is_some(),
        }
    }

    async fn start(self, port: u16) -> OwnedServer {
        let kind = match self {
            Self::Redis => ServerKind::Redis,
            Self::Memcached => ServerKind::Memcached,
            Self::Mongo => ServerKind::Mongo,
            Self::Postgres => ServerKind::Postgres,
            Self::MariaDb => ServerKind::MariaDb,
        };
        OwnedServer::start(kind, port).await
    }

    async fn store(self, port: u16) -> Arc<dyn SessionStore> {
        match self {
            Self::Redis => Arc::new(
                session_redis::RedisStore::builder(format!("redis://127.0.0.1:{port}"))
                    .command_timeout(TIMEOUT)
                    .connection_timeout(Duration::from_millis(300))
                    .open()
                    .await
                    .unwrap(),
            ),
            Self::Memcached => Arc::new(
                session_memcache::MemcacheStore::builder([format!("127.0.0.1:{port}")])
                    .command_timeout(TIMEOUT)
                    .build()
                    .unwrap(),
            ),
            Self::Mongo => Arc::new(
                session_mongo::MongoStore::builder(format!("mongodb://127.0.0.1:{port}"))
                    .collection(format!(
                        "o{}",
                        UuidV4Generator.generate().as_str().replace('-', "_")
                    ))
                    .command_timeout(TIMEOUT)
                    .open()
                    .await
                    .unwrap(),
            ),
            Self::Postgres | Self::MariaDb => {
                let kind = match self {
                    Self::Postgres => ServerKind::Postgres,
                    _ => ServerKind::MariaDb,
                };
                Arc::new(
                    session_sql::SqlStore::builder(kind.url(port))
                        .create_schema(true)
                        .command_timeout(TIMEOUT)
                        .connection_timeout(Duration::from_millis(300))
                        .open()
                        .await
                        .unwrap(),
                )
            }
        }
    }
}

/// Which integration serves the drill's counter.
#[derive(Clone, Copy, Debug)]
enum Framework {
    Axum,
    Actix,
}

/// The counter on 127.0.0.1 through `framework`, and what stops its server (actix-web runs
/// its own system on a thread of its own; axum's task ends with the test's runtime).
async fn serve_with(
    framework: Framework,
    store: Arc<dyn SessionStore>,
) -> (String, Option<actix_web::dev::ServerHandle>) {
    match framework {
        Framework::Axum => (serve(store).await, None),
        Framework::Actix => {
            let (addr, handle) = serve_actix(store);
            (addr, Some(handle))
        }
    }
}

fn serve_actix(store: Arc<dyn SessionStore>) -> (String, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpServer, web};
    async fn counter(session: session_actix::Session) -> String {
        let n = session.get::<u64>("n").unwrap().unwrap_or(0) + 1;
        session.insert("n", n).unwrap();
        n.to_string()
    }
    let manager = SessionManager::builder_arc(store).build();
    let middleware = session_actix::SessionMiddleware::new(manager, Key::generate()).secure(false);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .wrap(middleware.clone())
                    .route("/", web::get().to(counter))
            })
            .workers(2)
            .disable_signals()
            .bind("127.0.0.1:0")
            .unwrap();
            let addr = server.addrs()[0].to_string();
            let server = server.run();
            tx.send((addr, server.handle())).unwrap();
            server.await.unwrap();
        });
    });
    rx.recv().unwrap()
}

async fn serve(store: Arc<dyn SessionStore>) -> String {
    let manager = SessionManager::builder_arc(store).build();
    let app = Router::new()
        .route("/", get(counter))
        .layer(SessionLayer::new(manager, Key::generate()).secure(false));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[derive(Default)]
struct Counts {
    served: AtomicU64,
    unavailable: AtomicU64,
    errors: AtomicU64,
    /// Responses whose counter went backwards (other than a fresh session) or skipped.
    inconsistent: AtomicU64,
    slowest_ms: AtomicU64,
}

/// 32 clients, each with its own session, requesting until `stop`.
fn clients(
    addr: &str,
    counts: &Arc<Counts>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (addr, counts, stop) = (addr.to_owned(), counts.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut cookie, mut last, mut failed_since) = (None::<String>, 0u64, 0u64);
                // Bounded: at most 100 000 requests a client; the drill stops them sooner.
                for _ in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    let reply = tokio::time::timeout(
                        Duration::from_secs(5),
                        request(&addr, "GET", "/", cookie.as_deref(), None),
                    )
                    .await;
                    counts
                        .slowest_ms
                        .fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
                    match reply {
                        Ok(reply) if reply.status == 200 => {
                            counts.served.fetch_add(1, Ordering::SeqCst);
                            let n: u64 = reply.body.trim().parse().unwrap_or(0);
                            // A request that failed may still have been applied by the server
                            // (the answer was lost), so a skip of up to that many is allowed.
                            if n != 1 && (n <= last || n > last + 1 + failed_since) {
                                counts.inconsistent.fetch_add(1, Ordering::SeqCst);
                            }
                            last = n;
                            failed_since = 0;
                            if let Some(set) = reply.set_cookies().first() {
                                cookie = set.split(';').next().map(str::to_owned);
                            }
                        }
                        Ok(reply) if reply.status == 503 => {
                            counts.unavailable.fetch_add(1, Ordering::SeqCst);
                            failed_since += 1;
                        }
                        _ => {
                            counts.errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

async fn wait_for(counter: &AtomicU64, above: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::SeqCst) <= above {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kill the server mid-run, restart it on the same port, and check the app rides it out.
async fn drill(kind: Kind) {
    drill_through(kind, Framework::Axum).await;
}

async fn drill_through(kind: Kind, framework: Framework) {
    let port = free_port();
    let mut server = kind.start(port).await;
    let (addr, handle) = serve_with(framework, kind.store(port).await).await;
    let (counts, stop) = (
        Arc::new(Counts::default()),
        Arc::new(AtomicBool::new(false)),
    );
    let workers = clients(&addr, &counts, &stop);

    wait_for(&counts.served, 200, "service before the outage").await;
    server.kill().await;
    let served_at_kill = counts.served.load(Ordering::SeqCst);
    wait_for(&counts.unavailable, 100, "503s during the outage").await;
    server.restart().await;
    wait_for(
        &counts.served,
        served_at_kill + 100,
        "service after the restart",
    )
    .await;
    // Now fully back: a further stretch with no 503 at all.
    let unavailable_after = counts.unavailable.load(Ordering::SeqCst);
    let served_after = counts.served.load(Ordering::SeqCst);
    wait_for(
        &counts.served,
        served_after + 300,
        "steady service after the restart",
    )
    .await;
    let late_503 = counts.unavailable.load(Ordering::SeqCst) - unavailable_after;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("a client panicked");
    }
    if let Some(handle) = handle {
        handle.stop(true).await;
    }

    let c = |a: &AtomicU64| a.load(Ordering::SeqCst);
    eprintln!(
        "{} outage drill through {framework:?}: {} served, {} answered 503, {} errors, {} inconsistent, slowest {} ms",
        kind.name(),
        c(&counts.served),
        c(&counts.unavailable),
        c(&counts.errors),
        c(&counts.inconsistent),
        c(&counts.slowest_ms)
    );
    assert_eq!(
        c(&counts.errors),
        0,
        "{}: requests failed other than with 503",
        kind.name()
    );
    assert_eq!(
        c(&counts.inconsistent),
        0,
        "{}: a counter went wrong (a partial write)",
        kind.name()
    );
    assert!(
        late_503 <= CLIENTS as u64,
        "{}: {late_503} 503s once service was back",
        kind.name()
    );
    // Load and save each end within the timeout; allow for the reconnect and scheduling.
    assert!(
        c(&counts.slowest_ms) < 3 * TIMEOUT.as_millis() as u64 + 1500,
        "{}: a request hung",
        kind.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_through_the_actix_middleware() {
    if Kind::Redis.available() {
        drill_through(Kind::Redis, Framework::Actix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_through_the_actix_middleware() {
    if Kind::Postgres.available() {
        drill_through(Kind::Postgres, Framework::Actix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_outage_through_the_actix_middleware() {
    if Kind::Memcached.available() {
        drill_through(Kind::Memcached, Framework::Actix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_through_the_actix_middleware() {
    if Kind::MariaDb.available() {
        drill_through(Kind::MariaDb, Framework::Actix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_through_the_actix_middleware() {
    if Kind::Mongo.available() {
        drill_through(Kind::Mongo, Framework::Actix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_through_the_layer() {
    if Kind::Redis.available() {
        drill(Kind::Redis).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_outage_through_the_layer() {
    if Kind::Memcached.available() {
        drill(Kind::Memcached).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_through_the_layer() {
    if Kind::Postgres.available() {
        drill(Kind::Postgres).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_through_the_layer() {
    if Kind::MariaDb.available() {
        drill(Kind::MariaDb).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_outage_through_the_layer() {
    if Kind::Mongo.available() {
        drill(Kind::Mongo).await;
    }
}

/// A TCP proxy to `target` that can be told to stall: it then stops forwarding answers.
async fn stalling_proxy(target: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stall = Arc::new(AtomicBool::new(false));
    let flag = stall.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let flag = flag.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    // Stalled: hold the answer back (bounded: at most 30 s).
                    let held = Instant::now();
                    while flag.load(Ordering::SeqCst) && held.elapsed() < Duration::from_secs(30) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, stall)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_gives_unavailable_at_the_timeout() {
    for kind in [
        Kind::Redis,
        Kind::Memcached,
        Kind::Mongo,
        Kind::Postgres,
        Kind::MariaDb,
    ] {
        if !kind.available() {
            continue;
        }
        let port = free_port();
        let _server = kind.start(port).await;
        let (proxy, stall) = stalling_proxy(port).await;
        let store = kind.store(proxy).await;
        let manager = SessionManager::builder_arc(store).build();
        let session = manager.create();
        session.insert("n", 1u32).unwrap();
        manager.save(&session).await.unwrap();

        stall.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let result = manager.load(&session.id()).await;
        let took = started.elapsed();
        assert!(
            matches!(
                result,
                Err(session_core::SessionError::Store(
                    StoreError::Unavailable { .. }
                ))
            ),
            "{}: {result:?}",
            kind.name()
        );
        assert!(
            took >= TIMEOUT / 2 && took < TIMEOUT + Duration::from_secs(1),
            "{}: took {took:?}",
            kind.name()
        );
        stall.store(false, Ordering::SeqCst);

        // Service resumes once the server answers again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match manager.load(&session.id()).await {
                Ok(Some(s)) => {
                    assert_eq!(s.get::<u32>("n").unwrap(), Some(1));
                    break;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "{}: no recovery: {other:?}",
                    kind.name()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
