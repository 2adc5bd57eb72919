//! session-any's integration tests: every option the crate docs list opens its store
//! against the real servers `cargo xtask test-backends` starts, a bad value of it is a
//! `Config` error naming it, and the options whose effect can be seen from outside have it.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use session_core::suite::server_url;
use session_core::{SessionManager, StoreError};
use session_testing::free_port;

/// `(scheme, option)` of every row of the crate docs' option table.
fn documented_options() -> Vec<(String, String)> {
    let docs = include_str!("../../src/lib.rs");
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in docs.lines() {
        let line = line.trim_start_matches("//!").trim();
        if line.starts_with("| scheme | option |") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            break;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let option = cells[2].trim_matches('`').to_owned();
        for scheme in cells[1].split(',') {
            rows.push((scheme.trim().trim_matches('`').to_owned(), option.clone()));
        }
    }
    rows
}

/// A good value for each documented option, and a bad one (`None` where any text goes).
fn sample(option: &str) -> (&'static str, Option<&'static str>) {
    match option {
        "shards" => ("8", Some("many")),
        "shard_depth" => ("1", Some("9")),
        "fsync" => ("never", Some("sometimes")),
        "file_mode" => ("640", Some("999")),
        "lock_timeout" | "command_timeout" | "connection_timeout" => ("3s", Some("3")),
        "key_prefix" => ("anytest:", None),
        "pool_size" | "cas_retries" => ("4", Some("-1")),
        "item_size_limit" => ("1m", Some("1g")),
        "database" => ("session_any_tests", None),
        "collection" => ("options", None),
        "create_indexes" => ("false", Some("maybe")),
        "table" => ("options", Some("bad-name")),
        "schema" => ("public", Some("bad-name")),
        "create_schema" => ("true", Some("maybe")),
        "record_size_limit" => ("1m", Some("1g")),
        other => panic!("the docs list option {other} and this test has no sample for it"),
    }
}

/// A URL of `scheme` on the test servers (a fresh directory for `file`); `None` when the
/// server is not configured (skipped, or failed under SESSION_TEST_REQUIRE_SERVERS=1).
fn base(scheme: &str, dir: &std::path::Path) -> Option<String> {
    Some(match scheme {
        "memory" => "memory://".into(),
        "file" => format!("file://{}", dir.join(free_port().to_string()).display()),
        "redis" => server_url("SESSION_TEST_REDIS_URL")?,
        "redis+cluster" => format!(
            "redis+cluster://{}",
            server_url("SESSION_TEST_REDIS_CLUSTER_URLS")?.replace("redis://", "")
        ),
        "memcache" => format!(
            "memcache://{}",
            server_url("SESSION_TEST_MEMCACHED_SERVERS")?
        ),
        "mongodb" => format!("{}/", server_url("SESSION_TEST_MONGO_URL")?),
        "postgres" => server_url("SESSION_TEST_POSTGRES_URL")?,
        "mysql" => server_url("SESSION_TEST_MYSQL_URL")?,
        "sqlite" => format!("sqlite://{}", dir.join("sessions.db").display()),
        other => panic!("no test server for {other}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_option_opens_and_a_bad_value_is_refused() {
    let rows = documented_options();
    assert!(rows.len() >= 17, "{rows:?}");
    let dir = tempfile::tempdir().unwrap();
    for (scheme, option) in rows {
        let Some(base) = base(&scheme, dir.path()) else {
            continue;
        };
        let (good, bad) = sample(&option);
        let url = format!("{base}?{option}={good}");
        let store = session_any::open(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        // It is a working store.
        let manager = SessionManager::builder_arc(store).build();
        let session = manager.create();
        session.insert("k", 1u8).unwrap();
        manager
            .save(&session)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let loaded = manager.load(&session.id()).await.unwrap().unwrap();
        assert_eq!(loaded.get::<u8>("k").unwrap(), Some(1), "{url}");
        manager.destroy(&loaded).await.unwrap();

        if let Some(bad) = bad {
            let url = format!("{base}?{option}={bad}");
            match session_any::open(&url).await {
                Err(e @ StoreError::Config { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(&option), "{url}: {text}");
                }
                Err(e) => panic!("{url}: not a Config error: {e}"),
                Ok(_) => panic!("{url} opened"),
            }
        }
        let unknown = format!("{base}?{option}={good}&{option}x=1");
        let err = session_any::open(&unknown)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains(&format!("unknown option \"{option}x\""))
                    // MongoDB's driver rejects the options it does not know itself.
                    || scheme == "mongodb"),
            "{unknown}: {err:?}"
        );
    }
}

#[tokio::test]
async fn file_options_reach_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let url = format!("file://{}?file_mode=640&shard_depth=0", root.display());
    let manager = SessionManager::builder_arc(session_any::open(&url).await.unwrap()).build();
    let session = manager.create();
    session.insert("k", 1u8).unwrap();
    manager.save(&session).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "session"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "shard_depth=0 keeps files in the root: {files:?}"
    );
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);

    for bad in ["file://relative/path", "file:///", "file://user:pw@host/x"] {
        let err = session_any::open(bad).await.err().unwrap().to_string();
        assert!(err.contains("absolute path"), "{bad}: {err}");
        assert!(!err.contains("pw"), "{bad}: {err}");
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_unavailable_within_the_timeout() {
    let closed = free_port();
    for url in [
        format!(
            "redis://:secret@127.0.0.1:{closed}?command_timeout=500ms&connection_timeout=200ms"
        ),
        format!(
            "redis+cluster://127.0.0.1:{closed}?command_timeout=500ms&connection_timeout=200ms"
        ),
        format!("memcache://127.0.0.1:{closed}?command_timeout=500ms"),
        format!("mongodb://127.0.0.1:{closed}/?command_timeout=500ms"),
    ] {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), session_any::open(&url))
            .await
            .unwrap_or_else(|_| panic!("{url} hung"))
            .err()
            .unwrap_or_else(|| panic!("{url} opened"));
        assert!(
            matches!(err, StoreError::Unavailable { .. }),
            "{url}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{closed}")), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{url}: {:?}",
            started.elapsed()
        );
    }
}

/// A memcached URL with one server down still opens: the other server serves its share.
#[tokio::test]
async fn memcache_opens_when_one_server_answers() {
    let Some(servers) = server_url("SESSION_TEST_MEMCACHED_SERVERS") else {
        return;
    };
    let one = servers.split(',').next().unwrap();
    let url = format!(
        "memcache://{one},127.0.0.1:{}?command_timeout=500ms",
        free_port()
    );
    assert!(session_any::open(&url).await.is_ok());
}

#[tokio::test]
async fn redis_urls_are_checked_before_connecting() {
    for (url, says) in [
        ("redis://a:1,b:2", "redis+cluster://"),
        ("redis://h:1/zero", "not a database number"),
        ("redis+cluster://h:1/3", "no database number"),
        ("memcache://u@h:1", "no user or password"),
        ("memcache://h:1/x", "unexpected path"),
        ("memcache://h:1,,h:2", "expected host:port"),
        ("memory://somewhere", "takes no host"),
    ] {
        let err = session_any::open(url).await.err().unwrap();
        assert!(matches!(err, StoreError::Config { .. }), "{url}: {err:?}");
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
}

/// A `mongodb+srv://` name that does not resolve fails within the timeout, naming the URL
/// with its password hidden (there is no DNS to reach from here, so this is the failure
/// path; the success path is the driver's own).
#[tokio::test]
async fn an_unresolvable_mongodb_srv_name_fails_within_the_timeout() {
    let url = "mongodb+srv://app:secret@sessions.invalid/?command_timeout=1s";
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), session_any::open(url))
        .await
        .expect("mongodb+srv:// hung")
        .expect_err("an unresolvable name opened");
    let text = err.to_string();
    assert!(
        text.contains("mongodb+srv://app:***@sessions.invalid"),
        "{text}"
    );
    assert!(!text.contains("secret"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A SQL URL hands sqlx the options it knows (SQLite's `mode`) and keeps its own (`table`).
#[tokio::test]
async fn sql_urls_pass_the_drivers_options_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("opts.db");
    let url = format!("sqlite://{}?mode=rwc&table=web_sessions", db.display());
    let store = session_any::open(&url).await.unwrap();
    let manager = SessionManager::builder_arc(store).build();
    let session = manager.create();
    session.insert("k", 1u8).unwrap();
    manager.save(&session).await.unwrap();
    assert!(db.exists(), "mode=rwc created the file");
    // sqlx refuses a mode it does not know: the option reached it.
    let err = session_any::open(&format!("sqlite://{}?mode=bogus", db.display()))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("mode"), "{err}");
}
