//! Moving a live application from one store to another with nobody logged out: the example
//! app serves 1 000 visitors on files, is restarted on Redis falling back to the files
//! (`SESSION_STORE_FALLBACK`), `sessions migrate` copies the rest while visitors keep
//! coming, and the app is restarted on Redis alone. Every cookie finds its session with its
//! data; sessions logged out before the move stay logged out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use session_core::suite::server_url;
use session_core::{Record, SessionStore, StorageKey};

use crate::e2e::{App, bearer, request, unique, visits};

/// Cookies signed with it stay valid across the app's restarts.
const KEY: &str = "the e2e migration signing key, 32 bytes or more";

/// How many visitors the app serves before the move.
const VISITORS: usize = 1000;

/// `target/<profile>/sessions`, built by `cargo test --workspace` (and so by
/// `cargo xtask test-backends`); a binary older than its source fails the test.
fn sessions_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("sessions");
    let build = "build it with `cargo test --workspace --no-run` or `cargo build -p session-cli`";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", path.display()));
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../session-cli/src/main.rs");
    let written = std::fs::metadata(source)
        .and_then(|m| m.modified())
        .unwrap();
    assert!(
        built >= written,
        "{} is older than its source: {build}",
        path.display()
    );
    path
}

/// `sessions ARGS --json`, which must succeed.
async fn sessions_json(args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(sessions_binary())
        .args(args)
        .arg("--json")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sessions {args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// One browser, and what its next page must show.
#[derive(Debug, Clone)]
struct Visitor {
    n: usize,
    cookie: String,
    visits: u64,
    user: Option<String>,
    /// The welcome flash of its login, not yet shown.
    flash: bool,
    logged_out: bool,
}

impl Visitor {
    fn key(&self) -> StorageKey {
        bearer(&self.cookie).storage_key()
    }

    /// `GET /`: the page must continue the session exactly.
    async fn visit(&mut self, addr: &str) {
        let page = request(addr, "GET", "/", Some(&self.cookie), None).await;
        assert_eq!(page.status, 200, "visitor {}: {}", self.n, page.body);
        assert_eq!(
            visits(&page.body),
            self.visits + 1,
            "visitor {} lost its count",
            self.n
        );
        self.visits += 1;
        if let Some(user) = &self.user {
            assert!(
                page.body.contains(&format!("Signed in as <b>{user}</b>")),
                "visitor {} is no longer signed in: {}",
                self.n,
                page.body
            );
        }
        let welcome = page.body.contains("Welcome, ");
        assert_eq!(
            welcome, self.flash,
            "visitor {}'s flash: {}",
            self.n, page.body
        );
        self.flash = false;
        if !page.set_cookies().is_empty() {
            self.cookie = page.cookie();
        }
    }
}

/// A visitor's first steps on the app: a page, for some a second one, a login (a new id and
/// a flash), or a logout.
async fn arrive(addr: &str, n: usize) -> Visitor {
    let first = request(addr, "GET", "/", None, None).await;
    assert_eq!(visits(&first.body), 1);
    let mut v = Visitor {
        n,
        cookie: first.cookie(),
        visits: 1,
        user: None,
        flash: false,
        logged_out: false,
    };
    if n % 3 == 1 {
        v.visit(addr).await;
    }
    if n.is_multiple_of(4) {
        let user = format!("user{n}");
        let login = request(
            addr,
            "POST",
            "/login",
            Some(&v.cookie),
            Some(&format!("username={user}")),
        )
        .await;
        assert_eq!(login.status, 303);
        v.cookie = login.cookie();
        v.user = Some(user);
        v.flash = true;
    }
    if n % 10 == 5 {
        let out = request(addr, "POST", "/logout", Some(&v.cookie), None).await;
        assert_eq!(out.status, 303);
        v.logged_out = true;
    }
    v
}

/// Runs `step` on every visitor, 16 at a time, and gives them back in order.
async fn each<F, Fut>(visitors: Vec<Visitor>, step: F) -> Vec<Visitor>
where
    F: Fn(Visitor) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Visitor> + Send,
{
    let mut lanes: Vec<Vec<Visitor>> = vec![Vec::new(); 16];
    for (i, v) in visitors.into_iter().enumerate() {
        lanes[i % 16].push(v);
    }
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|lane| {
            let step = step.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(lane.len());
                for v in lane {
                    out.push(step(v).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by_key(|v| v.n);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_move_from_files_to_redis_while_the_app_serves() {
    let Some(server) = server_url("SESSION_TEST_REDIS_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = format!("file://{}?fsync=never", dir.path().display());
    let redis = format!("{server}/0?key_prefix={}:", unique("move"));
    let key = [("SESSION_KEY", KEY)];

    // 1. The app on files, with 1 000 visitors.
    let mut app = App::start_env(&files, &key).await;
    let addr = app.addr.clone();
    let blank: Vec<Visitor> = (0..VISITORS)
        .map(|n| Visitor {
            n,
            cookie: String::new(),
            visits: 0,
            user: None,
            flash: false,
            logged_out: false,
        })
        .collect();
    let visitors = each(blank, move |v| {
        let addr = addr.clone();
        async move { arrive(&addr, v.n).await }
    })
    .await;
    app.child.kill().await.unwrap();
    let old: Arc<dyn SessionStore> = session_any::open(&files).await.unwrap();
    let mut before: HashMap<StorageKey, Record> = HashMap::new();
    for v in visitors.iter().filter(|v| !v.logged_out) {
        let record = old
            .load(&v.key())
            .await
            .unwrap()
            .expect("a visitor's session");
        before.insert(v.key(), record);
    }
    for v in visitors.iter().filter(|v| v.logged_out) {
        assert_eq!(old.load(&v.key()).await.unwrap(), None);
    }
    // Each logout left a fresh session holding its "logged out" flash.
    let logouts = visitors.iter().filter(|v| v.logged_out).count();
    let in_files = sessions_json(&["stats", &files]).await;
    let live_in_files = (before.len() + logouts) as u64;
    assert_eq!(in_files["live"], live_in_files, "{in_files}");

    // 2. Cut over: Redis first, the files behind it; a fifth of the visitors keep coming.
    let app = App::start_env(
        &redis,
        &[("SESSION_KEY", KEY), ("SESSION_STORE_FALLBACK", &files)],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let (busy, idle): (Vec<Visitor>, Vec<Visitor>) = visitors
        .into_iter()
        .partition(|v| v.n % 5 == 2 && !v.logged_out);
    let load = {
        let (addr, stop) = (app.addr.clone(), stop.clone());
        let mut busy = busy;
        tokio::spawn(async move {
            let mut sent = 0;
            // Bounded: at most 3 000 pages, or until the migration is done.
            'rounds: while sent < 3000 {
                for v in &mut busy {
                    if stop.load(Ordering::SeqCst) && sent > 0 {
                        break 'rounds;
                    }
                    v.visit(&addr).await;
                    sent += 1;
                }
            }
            (busy, sent)
        })
    };

    // 3. The copy, while the app serves (the app has already copied what it touched).
    let summary = sessions_json(&["migrate", &files, &redis, "--resume"]).await;
    stop.store(true, Ordering::SeqCst);
    let (busy, sent) = load.await.unwrap();
    assert!(sent > 0);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["damaged"], 0, "{summary}");
    let accounted = ["copied", "identical", "changed_at_destination"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(accounted, live_in_files, "{summary}");

    // Both stores hold the same live sessions.
    let (a, b) = (
        sessions_json(&["stats", &files]).await,
        sessions_json(&["stats", &redis]).await,
    );
    assert_eq!(a["live"], b["live"], "files {a}, redis {b}");
    assert_eq!(a["with_owner"], b["with_owner"], "files {a}, redis {b}");

    // Untouched sessions arrived exactly: data, owner, created and expiry.
    let new: Arc<dyn SessionStore> = session_any::open(&redis).await.unwrap();
    for v in idle.iter().filter(|v| !v.logged_out) {
        let moved = new.load(&v.key()).await.unwrap();
        assert_eq!(moved.as_ref(), before.get(&v.key()), "visitor {}", v.n);
    }
    for v in idle.iter().filter(|v| v.logged_out) {
        assert_eq!(
            new.load(&v.key()).await.unwrap(),
            None,
            "a logout came back"
        );
    }
    drop(app);

    // 4. Redis alone: every cookie goes on where it was.
    let app = App::start_env(&redis, &key).await;
    let mut everyone = idle;
    everyone.extend(busy);
    everyone.sort_by_key(|v| v.n);
    let addr = app.addr.clone();
    let after = each(everyone, move |mut v| {
        let addr = addr.clone();
        async move {
            if v.logged_out {
                let page = request(&addr, "GET", "/", Some(&v.cookie), None).await;
                assert_eq!(visits(&page.body), 1, "visitor {}'s logout was undone", v.n);
            } else {
                v.visit(&addr).await;
            }
            v
        }
    })
    .await;
    assert_eq!(after.len(), VISITORS);
    assert!(after.iter().filter(|v| v.user.is_some()).count() >= VISITORS / 4);
}
