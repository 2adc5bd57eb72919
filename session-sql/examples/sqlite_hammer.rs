//! A second process for session-sql's tests: `sqlite_hammer URL NAME ROUNDS KEY_HEX...` adds
//! the keys `NAME-0` … `NAME-{ROUNDS-1}` to each session, one update each, on the SQLite
//! file at URL, while the test's own process (or another hammer) writes the same sessions.

#[cfg(feature = "sqlite")]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    use session_core::{Changes, SessionStore, StorageKey, Timestamp};
    use session_sql::SqlStore;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name, rounds, keys @ ..] = args.as_slice() else {
        panic!("usage: sqlite_hammer URL NAME ROUNDS KEY_HEX...");
    };
    let rounds: u32 = rounds.parse().expect("ROUNDS");
    let store = SqlStore::builder(url.as_str())
        .lock_timeout(std::time::Duration::from_secs(10))
        .command_timeout(std::time::Duration::from_secs(20))
        .open()
        .await
        .expect("open the store");
    let later = Timestamp::now().saturating_add(std::time::Duration::from_secs(600));
    for i in 0..rounds {
        for key in keys {
            let key = StorageKey::parse_hex(key).expect("KEY_HEX");
            let mut changes = Changes::new();
            changes.set(format!("{name}-{i}"), vec![1]);
            assert!(store.update(&key, &changes, later).await.expect("update"));
        }
    }
}

#[cfg(not(feature = "sqlite"))]
fn main() {}
