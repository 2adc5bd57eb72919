//! The example app, started as a process on every store `cargo xtask test-backends`
//! provides, driven over 127.0.0.1 with plain HTTP/1.1 as a browser would, and then looked
//! into: the store itself holds the record while the user is logged in, never the bearer
//! id, and nothing after logout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use session_core::suite::server_url;
use session_core::{IdGenerator, SessionId, StorageKey, UuidV4Generator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The example apps users run: session-tower's `counter` (axum) and session-actix's
/// `actix_counter` (actix-web), the same app on two frameworks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Example {
    Axum,
    Actix,
}

impl Example {
    const ALL: [Example; 2] = [Example::Axum, Example::Actix];

    fn crate_and_name(self) -> (&'static str, &'static str) {
        match self {
            Self::Axum => ("session-tower", "counter"),
            Self::Actix => ("session-actix", "actix_counter"),
        }
    }

    /// The example's source, the file users run.
    fn source(self) -> PathBuf {
        let (krate, name) = self.crate_and_name();
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../{krate}/examples/{name}.rs"))
    }

    /// `target/<profile>/examples/<name>`, built by `cargo test --workspace` (and so by
    /// `cargo xtask test-backends`) with these tests. A binary older than the example's
    /// source fails the test rather than walking stale code.
    fn binary(self) -> PathBuf {
        let (krate, name) = self.crate_and_name();
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
        let path = profile_dir.join("examples").join(name);
        let build = format!(
            "build it with `cargo test --workspace --no-run` or `cargo build -p {krate} --example {name}`"
        );
        let built = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| panic!("{} is missing: {build}", path.display()));
        let source = std::fs::metadata(self.source())
            .and_then(|m| m.modified())
            .expect("the example's source");
        assert!(
            built >= source,
            "{} is older than its source: {build}",
            path.display()
        );
        path
    }
}

/// session-tower's `counter` example: the one whose header lists every store URL.
fn example_source() -> PathBuf {
    Example::Axum.source()
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub(crate) fn cookie(&self) -> String {
        let all = self.set_cookies();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].split(';').next().unwrap().to_owned()
    }
}

/// The `User-Agent` of every request the tests send.
const USER_AGENT: &str = "e2e-walk/1.0";

pub(crate) async fn request(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n"
    );
    if let Some(cookie) = cookie {
        req.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub(crate) fn visits(body: &str) -> u64 {
    let start = body.find("id=\"visits\">").unwrap() + "id=\"visits\">".len();
    body[start..].split('<').next().unwrap().parse().unwrap()
}

/// The bearer id in a `name=<id>.<expires>.<tag>` cookie pair.
pub(crate) fn bearer(cookie: &str) -> SessionId {
    let value = cookie.split_once('=').unwrap().1;
    SessionId::parse(value.split('.').next().unwrap()).unwrap()
}

/// The example app as a child process, with what it printed.
pub(crate) struct App {
    pub(crate) child: Child,
    pub(crate) addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
    example: Example,
    store: Option<String>,
}

impl App {
    /// The axum example on `store`.
    async fn start(store: Option<&str>) -> App {
        Self::start_example(Example::Axum, store).await
    }

    async fn start_example(example: Example, store: Option<&str>) -> App {
        Self::start_with(example, store, &[]).await
    }

    /// The axum example on `store` with more environment (`SESSION_KEY`,
    /// `SESSION_STORE_FALLBACK`).
    pub(crate) async fn start_env(store: &str, env: &[(&str, &str)]) -> App {
        Self::start_with(Example::Axum, Some(store), env).await
    }

    async fn start_with(example: Example, store: Option<&str>, env: &[(&str, &str)]) -> App {
        let mut cmd = Command::new(example.binary());
        cmd.envs(env.iter().copied());
        cmd.env("SESSION_EXAMPLE_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match store {
            Some(url) => cmd.env("SESSION_STORE", url),
            None => cmd.env_remove("SESSION_STORE"),
        };
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
                .await
                .expect("the example did not start within 30 s")
                .unwrap()
                .unwrap_or_else(|| panic!("the example exited: {:?}", stderr.lock().unwrap()))
        };
        let store_line = next().await;
        let listening = next().await;
        let addr = listening
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected line {listening:?}"))
            .to_owned();
        let mut shown = session_any::redact(store.unwrap_or("memory://"));
        if let Some((_, old)) = env.iter().find(|(k, _)| *k == "SESSION_STORE_FALLBACK") {
            shown = format!("{shown}, falling back to {}", session_any::redact(old));
        }
        assert_eq!(store_line, format!("session store: {shown}"));
        App {
            child,
            addr,
            stderr,
            example,
            store: store.map(str::to_owned),
        }
    }

    fn logged(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Waits up to 5 s for `text` on the app's stderr; fails the test if it never comes.
    async fn wait_logged(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.logged(text) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            self.logged(text),
            "{text:?} not logged: {:?}",
            self.stderr.lock().unwrap()
        );
    }
}

/// What a walk checks in the store itself, seen from outside the app.
struct Peek {
    /// Whether the store holds a record for `key`, and the time it has left (when the store
    /// keeps one).
    record: Box<dyn Fn(StorageKey) -> BoxFut<Option<Stored>> + Send + Sync>,
    /// Every byte the store holds for the walk's sessions (keys, names and values).
    everything: Box<dyn Fn() -> BoxFut<Vec<u8>> + Send + Sync>,
}

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

#[derive(Debug)]
struct Stored {
    bytes: Vec<u8>,
    /// Seconds to live as the store counts them; `None` for stores without a native TTL.
    ttl_secs: Option<i64>,
}

/// The browser's walk through the example app: count, login with flash, logout. With a
/// `peek`, the store is looked into at each step. Every walk of the axum example is followed
/// by the same walk of the actix-web example on the same store.
async fn walk(app: &App, peek: Option<&Peek>) {
    walk_one(app, peek).await;
    if app.example == Example::Axum {
        let mut actix = App::start_example(Example::Actix, app.store.as_deref()).await;
        walk_one(&actix, peek).await;
        actix.child.kill().await.unwrap();
    }
}

async fn walk_one(app: &App, peek: Option<&Peek>) {
    let addr = app.addr.as_str();
    let first = request(addr, "GET", "/", None, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(visits(&first.body), 1);
    let set = first.set_cookies()[0];
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let anonymous = first.cookie();
    let reload = request(addr, "GET", "/", Some(&anonymous), None).await;
    assert_eq!(
        visits(&reload.body),
        2,
        "the reload did not find the session"
    );

    let empty = request(
        addr,
        "POST",
        "/login",
        Some(&anonymous),
        Some("username=++"),
    )
    .await;
    assert_eq!(empty.status, 303);
    let page = request(addr, "GET", "/", Some(&anonymous), None).await;
    assert!(page.body.contains("Please enter a name"), "{}", page.body);
    assert!(!page.body.contains("Signed in"), "an empty name logged in");
    assert_eq!(visits(&page.body), 3);

    let login = request(
        addr,
        "POST",
        "/login",
        Some(&anonymous),
        Some("username=alice"),
    )
    .await;
    assert_eq!(login.status, 303);
    let signed_in = login.cookie();
    assert_ne!(
        bearer(&signed_in).as_str(),
        bearer(&anonymous).as_str(),
        "login must change the session id"
    );

    // The example logs the manager's lifecycle events.
    app.wait_logged(&format!(
        "IdCycled {{ from: StorageKey({})",
        bearer(&anonymous).storage_key().to_hex().as_str()
    ))
    .await;
    let page = request(addr, "GET", "/", Some(&signed_in), None).await;
    assert!(
        page.body.contains("Welcome, alice!"),
        "no flash after login: {}",
        page.body
    );
    assert!(page.body.contains("Signed in as <b>alice</b>"));
    assert_eq!(visits(&page.body), 4, "the count did not continue");
    let page = request(addr, "GET", "/", Some(&signed_in), None).await;
    assert!(!page.body.contains("Welcome"), "the flash was shown twice");
    assert_eq!(visits(&page.body), 5);

    if let Some(peek) = peek {
        let live = bearer(&signed_in);
        let stored = (peek.record)(live.storage_key())
            .await
            .expect("no record in the store while logged in");
        assert!(!stored.bytes.is_empty());
        if let Some(ttl) = stored.ttl_secs {
            assert!(
                (1..=30 * 60).contains(&ttl),
                "TTL {ttl} s does not follow the 30 min idle timeout"
            );
        }
        // The pre-login key holds nothing, or only a short-lived forward pointer to the new
        // session (for requests that loaded it before the login): no session data.
        if let Some(left) = (peek.record)(bearer(&anonymous).storage_key()).await {
            assert!(
                !contains(&left.bytes, b"visits"),
                "the pre-login record outlived the id cycle"
            );
            if let Some(ttl) = left.ttl_secs {
                assert!(ttl <= 30, "the forward pointer lives {ttl} s");
            }
        }
        let all = (peek.everything)().await;
        for id in [&live, &bearer(&anonymous)] {
            assert!(
                !contains(&all, id.as_str().as_bytes()),
                "the store holds the bearer id {}",
                id.as_str()
            );
        }
        assert!(
            contains(&all, live.storage_key().to_hex().as_str().as_bytes())
                || contains(&all, b"alice"),
            "the walk's session is not in what the store holds"
        );
    }

    let stale = request(addr, "GET", "/", Some(&anonymous), None).await;
    assert_eq!(visits(&stale.body), 1, "the pre-login id still worked");

    let health = request(addr, "GET", "/health", Some(&signed_in), None).await;
    assert!(health.set_cookies().is_empty());

    // A thousand visits at once with the one cookie: the counter is an increment the store
    // applies atomically, so every visit counts.
    concurrent_visits(addr, &signed_in, CONCURRENT_VISITS).await;
    let page = request(addr, "GET", "/", Some(&signed_in), None).await;
    assert_eq!(
        visits(&page.body),
        5 + CONCURRENT_VISITS + 1,
        "concurrent visits were lost"
    );

    // "Your sessions": a second browser signs in as alice; the first lists both, with the
    // browser each was used from, and ends the second by its handle.
    let other = request(addr, "GET", "/", None, None).await.cookie();
    let other = request(addr, "POST", "/login", Some(&other), Some("username=alice"))
        .await
        .cookie();
    let theirs = bearer(&other).storage_key().to_hex();
    let mine = bearer(&signed_in).storage_key().to_hex();
    let page = request(addr, "GET", "/sessions", Some(&signed_in), None).await;
    if app
        .store
        .as_deref()
        .is_some_and(|s| s.starts_with("memcache"))
    {
        // memcached keeps no per-user index.
        assert!(page.body.contains("Not available"), "{}", page.body);
    } else {
        let listed = listed_sessions(&page.body);
        assert!(
            listed.contains(&(mine.as_str().to_owned(), true))
                && listed.contains(&(theirs.as_str().to_owned(), false)),
            "{}",
            page.body
        );
        assert!(
            page.body.contains(USER_AGENT),
            "no device shown: {}",
            page.body
        );
        let end = request(
            addr,
            "POST",
            "/sessions/end",
            Some(&signed_in),
            Some(&format!("key={}", theirs.as_str())),
        )
        .await;
        assert_eq!(end.status, 303);
        let page = request(addr, "GET", "/sessions", Some(&signed_in), None).await;
        assert!(page.body.contains("Session ended."), "{}", page.body);
        let listed = listed_sessions(&page.body);
        assert!(!listed.iter().any(|(key, _)| key == theirs.as_str()));
        let ended = request(addr, "GET", "/", Some(&other), None).await;
        assert!(
            !ended.body.contains("Signed in"),
            "the ended session still signs in: {}",
            ended.body
        );
    }

    let logout = request(addr, "POST", "/logout", Some(&signed_in), None).await;
    assert_eq!(logout.status, 303);
    // The logged-out session is gone; its flash lives in a fresh one, under a new cookie.
    let logged_out = logout.cookie();
    app.wait_logged(&format!(
        "Destroyed {{ key: StorageKey({}) }}",
        bearer(&signed_in).storage_key().to_hex().as_str()
    ))
    .await;
    assert_ne!(
        bearer(&logged_out).as_str(),
        bearer(&signed_in).as_str(),
        "logout kept the id"
    );
    let page = request(addr, "GET", "/", Some(&logged_out), None).await;
    assert!(
        page.body.contains("You have been logged out."),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Signed in"));
    assert_eq!(visits(&page.body), 1);
    let page = request(addr, "GET", "/", Some(&logged_out), None).await;
    assert!(
        !page.body.contains("logged out"),
        "the logout flash showed twice"
    );
    if let Some(peek) = peek {
        assert!(
            (peek.record)(bearer(&signed_in).storage_key())
                .await
                .is_none(),
            "the record outlived logout"
        );
    }
    let after = request(addr, "GET", "/", Some(&signed_in), None).await;
    assert_eq!(visits(&after.body), 1, "the session survived logout");
    assert!(!after.body.contains("Signed in"));

    // Remember me: a login with the box ticked gets a 30-day persistent cookie, and the
    // store keeps the record 30 days instead of the app's 30 idle minutes.
    let visitor = request(addr, "GET", "/", None, None).await.cookie();
    let login = request(
        addr,
        "POST",
        "/login",
        Some(&visitor),
        Some("username=bob&remember=on"),
    )
    .await;
    assert_eq!(login.status, 303);
    let max_age = max_age(login.set_cookies()[0]);
    assert!(
        (30 * DAY - 60..=30 * DAY).contains(&max_age),
        "remember me set Max-Age={max_age}"
    );
    let remembered = login.cookie();
    let page = request(addr, "GET", "/", Some(&remembered), None).await;
    assert!(
        page.body.contains("Signed in as <b>bob</b>"),
        "{}",
        page.body
    );
    if let Some(peek) = peek {
        let stored = (peek.record)(bearer(&remembered).storage_key())
            .await
            .expect("no record for the remembered login");
        if let Some(ttl) = stored.ttl_secs {
            assert!(
                (30 * DAY - 60..=30 * DAY).contains(&ttl),
                "the remembered session's TTL is {ttl} s"
            );
        }
    }
}

const DAY: i64 = 24 * 3600;

/// The sessions `/sessions` lists: each handle, and whether it is the requesting one.
fn listed_sessions(body: &str) -> Vec<(String, bool)> {
    body.split("<li data-key=\"")
        .skip(1)
        .map(|item| {
            let (key, rest) = item.split_once('"').unwrap();
            (key.to_owned(), rest.starts_with(" data-this=\"1\""))
        })
        .collect()
}

/// The `Max-Age` of a `Set-Cookie` value.
fn max_age(set_cookie: &str) -> i64 {
    set_cookie
        .split(';')
        .find_map(|attr| attr.trim().strip_prefix("Max-Age="))
        .unwrap_or_else(|| panic!("no Max-Age in {set_cookie}"))
        .parse()
        .unwrap()
}

const CONCURRENT_VISITS: u64 = 1000;

/// `count` visits of `/` with `cookie`, 32 at a time; every one must answer 200.
async fn concurrent_visits(addr: &str, cookie: &str, count: u64) {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut visits = tokio::task::JoinSet::new();
    for _ in 0..count {
        let (addr, cookie, gate) = (addr.to_owned(), cookie.to_owned(), gate.clone());
        visits.spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            request(&addr, "GET", "/", Some(&cookie), None).await.status
        });
    }
    let mut failed = Vec::new();
    while let Some(status) = visits.join_next().await {
        let status = status.unwrap();
        if status != 200 {
            failed.push(status);
        }
    }
    assert!(failed.is_empty(), "visits answered {failed:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn unique(tag: &str) -> String {
    format!(
        "{tag}{}",
        UuidV4Generator.generate().as_str().replace('-', "_")
    )
}

/// The schemes the walks below cover; `documented_store_urls_are_all_walked` holds README.md
/// and the example's header to it.
const WALKED: &[&str] = &[
    "memory",
    "file",
    "redis",
    "redis+cluster",
    "memcache",
    "mongodb",
    "postgres",
    "sqlite",
    "mysql",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_the_memory_store_by_default() {
    let mut app = App::start(None).await;
    walk(&app, None).await;
    app.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_files_and_logs_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sessions");
    let url = format!("file://{}?fsync=never&shard_depth=1", root.display());
    let mut app = App::start(Some(&url)).await;
    let files = session_disk::DiskStore::builder(&root)
        .shard_depth(1)
        .open()
        .unwrap();
    let paths = files.clone();
    let everything_root = root.clone();
    let peek = Peek {
        record: Box::new(move |key| {
            let path = paths.path_of(&key);
            Box::pin(async move {
                std::fs::read(&path).ok().map(|bytes| Stored {
                    bytes,
                    ttl_secs: None,
                })
            })
        }),
        everything: Box::new(move || {
            let root = everything_root.clone();
            Box::pin(async move { read_tree(&root) })
        }),
    };
    walk(&app, Some(&peek)).await;

    // A damaged file: a fresh session, and a warning on the app's stderr.
    let cookie = request(&app.addr, "GET", "/", None, None).await.cookie();
    let path = files.path_of(&bearer(&cookie).storage_key());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let page = request(&app.addr, "GET", "/", Some(&cookie), None).await;
    assert_eq!(visits(&page.body), 1);
    app.wait_logged("damaged session record").await;
    app.child.kill().await.unwrap();
}

/// Every file name and byte under `root`.
fn read_tree(root: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            out.extend_from_slice(path.to_string_lossy().as_bytes());
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_redis() {
    let Some(server) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let prefix = unique("e2e");
    let url = format!("{server}/0?key_prefix={prefix}:&command_timeout=2s");
    let mut app = App::start(Some(&url)).await;
    let raw = redis::Client::open(server.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    walk(&app, Some(&redis_peek(raw.clone(), prefix.clone()))).await;

    // A session left in the earlier one-hash-per-session layout: a fresh session, a warning
    // logged, never a 500.
    let cookie = request(&app.addr, "GET", "/", None, None).await.cookie();
    let name = format!(
        "{prefix}:{{{}}}",
        bearer(&cookie).storage_key().to_hex().as_str()
    );
    let later = session_core::Timestamp::now().saturating_add(Duration::from_secs(600));
    let mut conn = raw;
    let _: () = redis::pipe()
        .del(&name)
        .hset_multiple(
            &name,
            &[
                ("v", "1"),
                ("c", "1"),
                ("e", &later.as_unix_millis().to_string()),
            ],
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = request(&app.addr, "GET", "/", Some(&cookie), None).await;
    assert_eq!(page.status, 200);
    assert_eq!(visits(&page.body), 1);
    assert_ne!(
        page.cookie(),
        cookie,
        "no fresh session for a session in the old layout"
    );
    app.wait_logged("damaged session record").await;
    app.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_a_redis_cluster() {
    let Some(nodes) = server_url("SESSION_TEST_REDIS_CLUSTER_URLS") else {
        return;
    };
    let hosts: Vec<&str> = nodes
        .split(',')
        .map(|n| n.trim_start_matches("redis://"))
        .collect();
    let prefix = unique("e2e");
    let url = format!("redis+cluster://{}?key_prefix={prefix}:", hosts.join(","));
    let mut app = App::start(Some(&url)).await;
    let raw = redis::cluster::ClusterClient::new(nodes.split(',').collect::<Vec<_>>())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    walk(&app, Some(&redis_peek(raw, prefix))).await;
    app.child.kill().await.unwrap();
}

/// Looks into Redis (a node or a cluster) under the walk's key prefix.
fn redis_peek<C>(conn: C, prefix: String) -> Peek
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let key_of = {
        let prefix = prefix.clone();
        move |key: StorageKey| format!("{prefix}:{{{}}}", key.to_hex().as_str())
    };
    let one = conn.clone();
    let record = Box::new(move |key: StorageKey| -> BoxFut<Option<Stored>> {
        let mut conn = one.clone();
        let name = key_of(key);
        Box::pin(async move {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap();
            let bytes = value?;
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap();
            Some(Stored {
                bytes,
                ttl_secs: Some(pttl / 1000),
            })
        })
    });
    let everything = Box::new(move || -> BoxFut<Vec<u8>> {
        let mut conn = conn.clone();
        let pattern = format!("{prefix}:*");
        Box::pin(async move {
            // On a cluster connection the client sends KEYS to every master and joins the
            // answers.
            let names: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let mut out = Vec::new();
            for name in names {
                out.extend_from_slice(name.as_bytes());
                let kind: String = redis::cmd("TYPE")
                    .arg(&name)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if kind == "string" {
                    let value: Vec<u8> = redis::cmd("GET")
                        .arg(&name)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    out.extend(value);
                }
            }
            out
        })
    });
    Peek { record, everything }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_two_memcached_servers() {
    let Some(servers) = server_url("SESSION_TEST_MEMCACHED_SERVERS") else {
        return;
    };
    let prefix = unique("e2e");
    let url = format!("memcache://{servers}?key_prefix={prefix}:&pool_size=4");
    let mut app = App::start(Some(&url)).await;
    let servers: Vec<String> = servers.split(',').map(str::to_owned).collect();
    let all = servers.clone();
    let peek = Peek {
        record: Box::new(move |key| {
            let (servers, item) = (
                servers.clone(),
                format!("{prefix}:{}", key.to_hex().as_str()),
            );
            Box::pin(async move {
                let mut found = Vec::new();
                for server in &servers {
                    if let Some(stored) = memcached_meta_get(server, &item).await {
                        found.push(stored);
                    }
                }
                assert!(found.len() <= 1, "{item} is on more than one server");
                found.pop()
            })
        }),
        // memcached cannot list items to the store; the item itself was checked by name.
        everything: Box::new(move || {
            let servers = all.clone();
            Box::pin(async move {
                let mut out = Vec::new();
                for server in &servers {
                    out.extend(memcached_dump(server).await);
                }
                out
            })
        }),
    };
    walk(&app, Some(&peek)).await;
    app.child.kill().await.unwrap();
}

/// `mg <key> t v` on memcached's meta protocol: the value and its remaining TTL.
async fn memcached_meta_get(server: &str, item: &str) -> Option<Stored> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(format!("mg {item} t v\r\n").as_bytes())
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).await.unwrap();
    if head.starts_with("EN") {
        return None;
    }
    let mut words = head.split_whitespace();
    assert_eq!(words.next(), Some("VA"), "{head}");
    let len: usize = words.next().unwrap().parse().unwrap();
    let ttl = words
        .find_map(|w| w.strip_prefix('t'))
        .and_then(|t| t.parse().ok());
    let mut bytes = vec![0; len + 2];
    reader.read_exact(&mut bytes).await.unwrap();
    bytes.truncate(len);
    Some(Stored {
        bytes,
        ttl_secs: ttl,
    })
}

/// Every key memcached holds (`lru_crawler metadump all`) and every value.
async fn memcached_dump(server: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(b"lru_crawler metadump all\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut keys = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap() == 0 || line.starts_with("END") {
            break;
        }
        if let Some(key) = line.strip_prefix("key=") {
            keys.push(key.split_whitespace().next().unwrap().to_owned());
        }
    }
    let mut out = Vec::new();
    for key in keys {
        out.extend_from_slice(key.as_bytes());
        if let Some(stored) = memcached_meta_get(server, &key).await {
            out.extend(stored.bytes);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_mongodb() {
    use mongodb::bson::{Document, doc};
    let Some(server) = server_url("SESSION_TEST_MONGO_URL") else {
        return;
    };
    let collection = unique("e2e");
    let url = format!("{server}/?database=session_e2e&collection={collection}&appName=e2e");
    let mut app = App::start(Some(&url)).await;
    let sessions = mongodb::Client::with_uri_str(&server)
        .await
        .unwrap()
        .database("session_e2e")
        .collection::<Document>(&collection);
    let one = sessions.clone();
    let peek = Peek {
        record: Box::new(move |key| {
            let sessions = one.clone();
            Box::pin(async move {
                let found = sessions
                    .find_one(doc! { "_id": key.to_hex().as_str() })
                    .await
                    .unwrap()?;
                let expires = found.get_datetime("expires_at").unwrap().timestamp_millis();
                let now = mongodb::bson::DateTime::now().timestamp_millis();
                Some(Stored {
                    bytes: mongodb::bson::to_vec(&found).unwrap(),
                    ttl_secs: Some((expires - now) / 1000),
                })
            })
        }),
        everything: Box::new(move || {
            let sessions = sessions.clone();
            Box::pin(async move {
                let mut cursor = sessions.find(doc! {}).await.unwrap();
                let mut out = Vec::new();
                while cursor.advance().await.unwrap() {
                    let document: Document = cursor.deserialize_current().unwrap();
                    out.extend(mongodb::bson::to_vec(&document).unwrap());
                }
                out
            })
        }),
    };
    walk(&app, Some(&peek)).await;
    app.child.kill().await.unwrap();
}

/// A peek into the SQL store's two tables on `url` (table `table`), through sqlx.
fn sql_peek(url: String, table: String) -> Peek {
    use sqlx::AssertSqlSafe;

    async fn rows(url: &str, query: String, key: Option<Vec<u8>>) -> Vec<(Vec<u8>, i64)> {
        macro_rules! run {
            ($pool:ty) => {{
                let pool = <$pool>::connect(url).await.unwrap();
                let mut q = sqlx::query_as::<_, (Vec<u8>, i64)>(AssertSqlSafe(query));
                if let Some(key) = key {
                    q = q.bind(key);
                }
                let rows = q.fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }};
        }
        if url.starts_with("postgres") {
            run!(sqlx::PgPool)
        } else if url.starts_with("mysql") {
            run!(sqlx::MySqlPool)
        } else {
            run!(sqlx::SqlitePool)
        }
    }
    let param = if url.starts_with("postgres") {
        "$1"
    } else {
        "?"
    };
    let one = format!("SELECT id, expires_at FROM {table} WHERE id = {param}");
    let all_sessions = format!("SELECT id, expires_at FROM {table}");
    let all_keys = format!(
        "SELECT d.value, s.expires_at FROM {table}_data d JOIN {table} s ON s.id = d.session_id"
    );
    let all_names = format!(
        "SELECT d.name, s.expires_at FROM {table}_data d JOIN {table} s ON s.id = d.session_id"
    );
    let url2 = url.clone();
    Peek {
        record: Box::new(move |key| {
            let (url, one) = (url.clone(), one.clone());
            Box::pin(async move {
                let found = rows(&url, one, Some(key.as_bytes().to_vec())).await;
                let (id, expires) = found.into_iter().next()?;
                let now = session_core::Timestamp::now().as_unix_millis();
                Some(Stored {
                    bytes: id,
                    ttl_secs: Some((expires - now) / 1000),
                })
            })
        }),
        everything: Box::new(move || {
            let url = url2.clone();
            let queries = [all_sessions.clone(), all_keys.clone(), all_names.clone()];
            Box::pin(async move {
                let mut out = Vec::new();
                for query in queries {
                    for (bytes, n) in rows(&url, query, None).await {
                        out.extend(bytes);
                        out.extend(n.to_le_bytes());
                    }
                }
                out
            })
        }),
    }
}

/// The walk on the SQL server `var` names, in a table of its own.
async fn walk_on_sql_server(var: &str) {
    let Some(server) = server_url(var) else {
        return;
    };
    let table = unique("e2e").to_ascii_lowercase();
    let mut app = App::start(Some(&format!("{server}?table={table}"))).await;
    walk(&app, Some(&sql_peek(server, table))).await;
    app.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_postgres() {
    walk_on_sql_server("SESSION_TEST_POSTGRES_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_mysql() {
    walk_on_sql_server("SESSION_TEST_MYSQL_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let mut app = App::start(Some(&url)).await;
    walk(&app, Some(&sql_peek(url, "sessions".to_owned()))).await;
    app.child.kill().await.unwrap();
}

/// A URL that cannot work: one line on stderr naming it (password hidden), exit status 1,
/// within the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_store_url_prints_one_line_and_exits_non_zero() {
    let closed = session_testing::free_port();
    let urls = [
        ("bogus://somewhere", "unknown scheme \"bogus\""),
        ("redis://:hunter2@127.0.0.1:1/x", "not a database number"),
        ("memory://?shards=lots", "option shards=\"lots\""),
        ("file://relative/dir", "absolute path"),
        (
            &*format!("redis://:hunter2@127.0.0.1:{closed}?connection_timeout=300ms"),
            "unavailable",
        ),
        (&*format!("memcache://127.0.0.1:{closed}"), "unavailable"),
    ];
    for (example, (url, says)) in Example::ALL
        .into_iter()
        .flat_map(|example| urls.iter().map(move |case| (example, *case)))
    {
        let started = std::time::Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            Command::new(example.binary())
                .env("SESSION_STORE", url)
                .env("SESSION_EXAMPLE_ADDR", "127.0.0.1:0")
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{url}: the example hung"))
        .unwrap();
        let url = format!("{example:?}: {url}");
        assert_eq!(out.status.code(), Some(1), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{url}: {stderr}");
        assert!(lines[0].contains(says), "{url}: {stderr}");
        assert!(lines[0].contains("SESSION_STORE"), "{url}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "{url}: the password shows: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{url}: it started anyway");
        assert!(started.elapsed() < Duration::from_secs(10), "{url}: slow");
    }
}

/// Every `SESSION_STORE=<url>` in README.md and the example's header names a scheme the
/// walks above cover and this build of session-any opens: a documented store URL cannot
/// silently stop working again.
#[test]
fn documented_store_urls_are_all_walked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documented = Vec::new();
    for file in [root.join("../README.md"), example_source()] {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("SESSION_STORE=") {
            let url: String = text[at + "SESSION_STORE=".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '`')
                .collect();
            if let Some((scheme, _)) = url.split_once("://") {
                documented.push((file.display().to_string(), scheme.to_owned()));
            }
        }
    }
    assert!(documented.len() >= 6, "{documented:?}");
    documented.dedup();
    let opened = session_any::schemes();
    for (file, scheme) in &documented {
        assert!(
            WALKED.contains(&scheme.as_str()),
            "{file} documents SESSION_STORE={scheme}://… but no end-to-end walk covers it"
        );
        assert!(
            opened.contains(&format!("{scheme}://").as_str()),
            "{file}: session-any does not open {scheme}://"
        );
    }
    for scheme in WALKED {
        assert!(
            documented.iter().any(|(_, s)| s == scheme),
            "{scheme}:// is walked but documented nowhere"
        );
    }
}

/// Every documented `SESSION_STORE=<url>` is a URL session-any accepts, options included: it
/// opens, or fails only because no server listens there (never `Config`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_store_urls_are_valid_urls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for file in [root.join("../README.md"), example_source()] {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("SESSION_STORE=") {
            let url: String = text[at + "SESSION_STORE=".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '`')
                .collect();
            if !url.contains("://") {
                continue;
            }
            // Files go to a scratch directory, not to the documented path.
            let url = if let Some(path) = url.strip_prefix("file://") {
                format!("file://{}{path}", dir.path().display())
            } else if let Some(path) = url.strip_prefix("sqlite://") {
                std::fs::create_dir_all(
                    dir.path()
                        .join(path.trim_start_matches('/'))
                        .parent()
                        .unwrap(),
                )
                .unwrap();
                format!("sqlite://{}{path}", dir.path().display())
            } else {
                url
            };
            let opened = tokio::time::timeout(Duration::from_secs(15), session_any::open(&url))
                .await
                .unwrap_or_else(|_| panic!("{url} hung"));
            // Valid means it opens, or reaches a server that is not there (or, on a machine
            // that runs a database on its default port, one that refuses the example's
            // made-up password): never a URL the opener rejects.
            if let Err(e @ session_core::StoreError::Config { .. }) = opened {
                panic!("{}: SESSION_STORE={url} is rejected: {e}", file.display());
            }
        }
    }
}
