//! The `sessions` binary as an operator runs it, against files and the real servers
//! `cargo xtask test-backends` starts, with the stores looked into afterwards through
//! `session_any::open`.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use session_core::suite::{record, server_url};
use session_core::{IdGenerator, Record, SessionStore, StorageKey, Timestamp, UuidV4Generator};

mod migrate;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// A failure: exit status 1 and one line on stderr, naming the binary.
    fn one_line_error(&self) -> &str {
        assert_eq!(self.code, 1, "{self:?}");
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "not one line: {self:?}");
        assert!(line.starts_with("sessions: "), "{self:?}");
        line
    }
}

fn sessions(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_sessions"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A name no other test uses: for key prefixes, tables, collections.
fn unique(tag: &str) -> String {
    let id = UuidV4Generator.generate();
    let tail: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(10)
        .collect();
    format!("{tag}_{}", tail.to_ascii_lowercase())
}

/// `n` live sessions in `store` (every third owned by `user<i % 2>`, a flash value and a
/// counter each) and `expired` expired ones.
async fn fill(store: &dyn SessionStore, n: usize, expired: usize) -> Vec<Record> {
    let mut live = Vec::new();
    for i in 0..n {
        let visits = (i as u64).to_le_bytes();
        let mut r = record(&[("visits", &visits[..]), ("_flash.notice", b"Welcome!")]);
        if i % 3 == 0 {
            r.owner = Some(format!("user{}", i % 2));
        }
        store.create(&r).await.unwrap();
        live.push(r);
    }
    for _ in 0..expired {
        let mut r = record(&[("old", b"1")]);
        r.expires_at = Timestamp::now().saturating_sub(Duration::from_secs(5));
        store.create(&r).await.unwrap();
    }
    live
}

async fn open(url: &str) -> Arc<dyn SessionStore> {
    session_any::open(url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_revoke_and_purge_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = open(&url).await;
    let live = fill(&*store, 30, 4).await;

    let stats = sessions(&["stats", &url, "--json"]).json();
    assert_eq!(stats["live"], 30, "{stats}");
    assert_eq!(stats["expired_not_swept"], 4, "{stats}");
    assert_eq!(stats["damaged"], 0, "{stats}");
    let size = live[0].data_size() as u64;
    assert_eq!(stats["size_bytes"]["p50"], size, "{stats}");
    assert_eq!(stats["size_bytes"]["max"], size, "{stats}");
    assert_eq!(stats["with_owner"], 10, "{stats}");
    assert_eq!(stats["top_owners"][0]["owner"], "user0", "{stats}");
    assert_eq!(stats["top_owners"][0]["sessions"], 5, "{stats}");
    let text = sessions(&["stats", &url]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("live sessions: 30"), "{text:?}");
    assert!(
        text.stdout.contains("expired, not yet swept: 4"),
        "{text:?}"
    );

    let owned: BTreeSet<String> = live
        .iter()
        .filter(|r| r.owner.as_deref() == Some("user1"))
        .map(|r| r.key.to_hex().to_string())
        .collect();
    let listed = sessions(&["list", &url, "--owner", "user1", "--json"]).json();
    let keys: BTreeSet<String> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, owned);
    for listed in listed["sessions"].as_array().unwrap() {
        let r = live
            .iter()
            .find(|r| r.key.to_hex().as_str() == listed["key"])
            .unwrap();
        assert_eq!(listed["created_at_ms"], r.created_at.as_unix_millis());
        assert_eq!(listed["expires_at_ms"], r.expires_at.as_unix_millis());
    }
    let top = sessions(&["stats", &url, "--json", "--top", "1"]).json();
    assert_eq!(top["top_owners"].as_array().unwrap().len(), 1, "{top}");
    let text = sessions(&["list", &url, "--owner", "user1"]);
    assert!(
        text.stdout.starts_with("5 live sessions of \"user1\""),
        "{text:?}"
    );

    let one = live[1].key;
    let ended = sessions(&["revoke", &url, "--key", one.to_hex().as_str(), "--json"]).json();
    assert_eq!(ended["ended"], 1);
    assert_eq!(store.load(&one).await.unwrap(), None);
    let again = sessions(&["revoke", &url, "--key", one.to_hex().as_str()]);
    assert!(again.stdout.contains("ended 0 session(s)"), "{again:?}");
    let everywhere = sessions(&["revoke", &url, "--owner", "user1"]);
    assert!(
        everywhere.stdout.contains("ended 5 session(s)"),
        "{everywhere:?}"
    );
    for r in live.iter().filter(|r| r.owner.as_deref() == Some("user1")) {
        assert_eq!(store.load(&r.key).await.unwrap(), None);
    }

    let purged = sessions(&["purge", &url, "--json"]).json();
    assert_eq!(purged["removed"], 4, "{purged}");
    assert_eq!(purged["expires_natively"], false);
    let after = sessions(&["stats", &url, "--json"]).json();
    assert_eq!(after["live"], 24, "{after}");
    assert_eq!(after["expired_not_swept"], 0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_line_a_non_zero_exit_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("file://{}/from", dir.path().display());
    let to = format!("file://{}/to", dir.path().display());
    let source = open(&from).await;
    fill(&*source, 3, 0).await;

    let line = sessions(&["stats", "ftp://example"])
        .one_line_error()
        .to_owned();
    assert!(line.contains("unknown scheme"), "{line}");
    let line = sessions(&["stats", "redis://:secret@127.0.0.1:1"])
        .one_line_error()
        .to_owned();
    assert!(line.contains("unavailable"), "{line}");
    assert!(!line.contains("secret"), "the password was printed: {line}");
    let line = sessions(&["migrate", "memory://", &to])
        .one_line_error()
        .to_owned();
    assert!(line.contains("inside the application's process"), "{line}");
    let same = format!("{from}/");
    let line = sessions(&["migrate", &from, &same])
        .one_line_error()
        .to_owned();
    assert!(line.contains("the same store"), "{line}");
    let line = sessions(&["revoke", &from, "--key", "zz"])
        .one_line_error()
        .to_owned();
    assert!(line.contains("not a storage key"), "{line}");

    // A destination holding sessions of its own is refused without --resume.
    let dest = open(&to).await;
    let theirs = fill(&*dest, 1, 0).await;
    let line = sessions(&["migrate", &from, &to])
        .one_line_error()
        .to_owned();
    assert!(
        line.contains("already holds sessions") && line.contains("--resume"),
        "{line}"
    );
    let held = sessions(&["stats", &to, "--json"]).json();
    assert_eq!(held["live"], 1, "something was written: {held}");
    assert!(dest.load(&theirs[0].key).await.unwrap().is_some());

    // Arguments that make no sense are a usage error (2), not a failure.
    let usage = sessions(&["revoke", &from]);
    assert_eq!(usage.code, 2, "{usage:?}");
    let usage = sessions(&["frobnicate"]);
    assert_eq!(usage.code, 2, "{usage:?}");
}

/// The storage keys and records a store holds for `keys`.
async fn check_copied(to: &dyn SessionStore, live: &[Record]) {
    for r in live {
        let there = to.load(&r.key).await.unwrap();
        assert_eq!(there.as_ref(), Some(r), "not copied intact");
    }
}

/// A store URL on the Redis server with a key prefix of its own.
fn redis_url() -> Option<String> {
    let base = server_url("SESSION_TEST_REDIS_URL")?;
    Some(format!("{base}?key_prefix={}:", unique("cli")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_and_stats_on_redis_use_the_per_user_index_and_the_scan() {
    let Some(url) = redis_url() else { return };
    let store = open(&url).await;
    let live = fill(&*store, 12, 0).await;
    let stats = sessions(&["stats", &url, "--json"]).json();
    assert_eq!(stats["live"], 12, "{stats}");
    let purged = sessions(&["purge", &url, "--json"]).json();
    assert_eq!(purged["expires_natively"], true, "{purged}");
    let ended = sessions(&["revoke", &url, "--owner", "user0", "--json"]).json();
    assert_eq!(ended["ended"], 2, "{ended}");
    let gone: Vec<&StorageKey> = live
        .iter()
        .filter(|r| r.owner.as_deref() == Some("user0"))
        .map(|r| &r.key)
        .collect();
    for key in gone {
        assert_eq!(store.load(key).await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_shows_a_progress_bar_on_a_terminal_and_plain_lines_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("file://{}/from", dir.path().display());
    fill(&*open(&from).await, 40, 0).await;

    let plain_to = format!("file://{}/plain", dir.path().display());
    let plain = sessions(&["migrate", &from, &plain_to, "--page-size", "8"]);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(plain.stderr.contains("8/40 sessions read"), "{plain:?}");
    assert!(
        plain.stdout.contains("  copied           40\n"),
        "{plain:?}"
    );

    // On a terminal (a pseudo-terminal `script` makes): the bar, with its rate and ETA.
    let bar_to = format!("file://{}/bar", dir.path().display());
    let command = format!(
        "{} migrate {from} {bar_to} --page-size 8",
        env!("CARGO_BIN_EXE_sessions")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("`script` (util-linux) runs a command on a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("sessions/s") || screen.contains("/40 sessions"),
        "no bar: {screen:?}"
    );
    assert!(screen.contains("ETA"), "no ETA: {screen:?}");
    assert!(
        !screen.contains("8/40 sessions read"),
        "plain lines on a terminal: {screen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_counted_and_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("file://{}/from", dir.path().display());
    let live = fill(&*open(&from).await, 5, 0).await;
    let files = session_disk::DiskStore::open(dir.path().join("from")).unwrap();
    std::fs::write(files.path_of(&live[0].key), b"not a session").unwrap();

    let stats = sessions(&["stats", &from, "--json"]).json();
    assert_eq!(
        (stats["live"].as_u64(), stats["damaged"].as_u64()),
        (Some(4), Some(1)),
        "{stats}"
    );
    let to = format!("file://{}/to", dir.path().display());
    let run = sessions(&["migrate", &from, &to, "--json"]).json();
    assert_eq!(run["copied"], 4, "{run}");
    assert_eq!(run["damaged"], 1, "{run}");
    assert_eq!(
        run["failures"][0]["key"],
        live[0].key.to_hex().as_str(),
        "{run}"
    );
    assert!(open(&to).await.load(&live[0].key).await.unwrap().is_none());
}

/// memcached with a 2 KiB item limit refuses a 5 KB session: the migration copies the
/// rest, names the refused one with its reason, and exits with 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_destination_refuses_fails_the_migration_with_its_reason() {
    let Some(servers) = server_url("SESSION_TEST_MEMCACHED_SERVERS") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let from = format!("file://{}", dir.path().display());
    let source = open(&from).await;
    let live = fill(&*source, 6, 0).await;
    let big = record(&[("blob", &[7u8; 5000][..])]);
    source.create(&big).await.unwrap();
    let to = format!(
        "memcache://{servers}?key_prefix={}:&item_size_limit=2048",
        unique("cli")
    );
    let run = sessions(&["migrate", &from, &to]);
    assert_eq!(run.code, 1, "{run:?}");
    // After the progress line, the error.
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("sessions: ") && last.contains("1 session(s) could not be copied"),
        "{run:?}"
    );
    assert!(run.stdout.contains("  failed            1\n"), "{run:?}");
    assert!(run.stdout.contains(big.key.to_hex().as_str()), "{run:?}");
    assert!(run.stdout.contains("larger than"), "{run:?}");
    check_copied(&*open(&to).await, &live).await;
}
