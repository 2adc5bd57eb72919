//! `sessions migrate` between real stores: every live session arrives with its storage key,
//! expiry, owner and data; expired ones stay behind; a second run copies nothing; a dry run
//! writes nothing.

use super::*;

/// Fills `from`, runs a dry run, the migration and a resumed one, and checks `to`. Of the 3
/// expired sessions written to `from`, a store with a server TTL lists none (Redis drops a
/// key written already expired) and one without lists all: `expired_listed`, or `None`
/// where the server decides (memcached).
async fn migrate_and_check(from: &str, to: &str, expired_listed: Option<u64>) {
    let source = open(from).await;
    let live = fill(&*source, 60, 3).await;
    let dest = open(to).await;

    let dry = sessions(&["migrate", from, to, "--dry-run", "--json"]).json();
    assert_eq!(dry["copied"], 60, "{dry}");
    assert!(
        !session_core::scan::holds_any(&*dest).await.unwrap(),
        "a dry run wrote"
    );

    let run = sessions(&["migrate", from, to, "--json", "--page-size", "16"]).json();
    assert_eq!(run["copied"], 60, "{run}");
    if let Some(expired) = expired_listed {
        assert_eq!(run["expired"], expired, "{run}");
    }
    assert_eq!(run["failed"], 0, "{run}");
    check_copied(&*dest, &live).await;

    // Interrupted or repeated: compared, never copied twice or overwritten.
    let refused = sessions(&["migrate", from, to]);
    refused.one_line_error();
    let again = sessions(&["migrate", from, to, "--resume", "--json"]).json();
    assert_eq!(again["copied"], 0, "{again}");
    assert_eq!(again["identical"], 60, "{again}");

    // Both sides count the same live sessions.
    let (a, b) = (
        sessions(&["stats", from, "--json"]).json(),
        sessions(&["stats", to, "--json"]).json(),
    );
    assert_eq!(a["live"], b["live"], "{a} {b}");
    assert_eq!(a["with_owner"], b["with_owner"], "{a} {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_to_redis() {
    let Some(to) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    migrate_and_check(&format!("file://{}", dir.path().display()), &to, Some(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_postgres() {
    let (Some(from), Some(pg)) = (redis_url(), server_url("SESSION_TEST_POSTGRES_URL")) else {
        return;
    };
    let to = format!("{pg}?table={}", unique("cli"));
    migrate_and_check(&from, &to, Some(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_to_a_redis_cluster() {
    let (Some(from), Some(nodes)) = (redis_url(), server_url("SESSION_TEST_REDIS_CLUSTER_URLS"))
    else {
        return;
    };
    let hosts: Vec<&str> = nodes
        .split(',')
        .map(|u| u.trim_start_matches("redis://"))
        .collect();
    let to = format!(
        "redis+cluster://{}?key_prefix={}:",
        hosts.join(","),
        unique("cli")
    );
    migrate_and_check(&from, &to, Some(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_to_mongodb() {
    let Some(mongo) = server_url("SESSION_TEST_MONGO_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{mongo}/?collection={}", unique("cli"));
    migrate_and_check(&format!("file://{}", dir.path().display()), &to, Some(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_to_mysql() {
    let (Some(servers), Some(my)) = (
        server_url("SESSION_TEST_MEMCACHED_SERVERS"),
        server_url("SESSION_TEST_MYSQL_URL"),
    ) else {
        return;
    };
    let from = format!("memcache://{servers}?key_prefix={}:", unique("cli"));
    let to = format!("{my}?table={}", unique("cli"));
    migrate_and_check(&from, &to, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let from = format!("sqlite://{}/sessions.db", dir.path().display());
    let to = format!("file://{}/files", dir.path().display());
    migrate_and_check(&from, &to, Some(3)).await;
}

/// The memory store lives in the application's process: the library's `Migration` moves
/// it (here into MongoDB), as an application would at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_mongodb_through_the_library() {
    let Some(mongo) = server_url("SESSION_TEST_MONGO_URL") else {
        return;
    };
    let memory = open("memory://").await;
    let live = fill(&*memory, 40, 2).await;
    let to = open(&format!("{mongo}/?collection={}", unique("lib"))).await;
    let summary = session_core::migrate::Migration::new(memory, to.clone())
        .run(|_| {})
        .await
        .unwrap();
    assert_eq!((summary.copied, summary.expired), (40, 2), "{summary:?}");
    check_copied(&*to, &live).await;
}
