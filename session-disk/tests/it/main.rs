//! session-disk's integration tests: the conformance suite, crash safety, several processes,
//! hostile paths.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use session_core::suite::record;
use session_core::{IdGenerator, Record, SessionStore, StoreError, Timestamp, UuidV4Generator};
use session_disk::{DiskStore, Fsync, OpenError};
use tempfile::TempDir;

/// A store in its own temporary directory, removed when this is dropped.
#[derive(Debug)]
struct TempStore {
    store: DiskStore,
    _dir: TempDir,
}

impl TempStore {
    fn new(fsync: Fsync) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::builder(dir.path().join("sessions"))
            .fsync(fsync)
            .open()
            .unwrap();
        Self { store, _dir: dir }
    }
}

impl TempStore {
    /// The store and the directory to keep alive, for the conformance suite.
    fn fixture(fsync: Fsync) -> Option<(DiskStore, TempDir)> {
        let t = Self::new(fsync);
        Some((t.store, t._dir))
    }
}

mod fsync_always {
    use super::*;
    session_core::conformance_tests!(|| async { TempStore::fixture(Fsync::Always) });
}

mod fsync_never {
    use super::*;
    session_core::conformance_tests!(|| async { TempStore::fixture(Fsync::Never) });
}

/// `target/<profile>/examples/disk_hammer`, built by `cargo test` with the tests.
fn hammer() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/disk_hammer");
    assert!(
        path.exists(),
        "{} is missing: `cargo test -p session-disk` builds it",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_write_leaves_the_old_or_the_new_version() {
    let t = TempStore::new(Fsync::Never);
    let rec = record(&[("v", &[0u8; 256 * 1024]), ("round", &0u64.to_le_bytes())]);
    t.store.create(&rec).await.unwrap();
    let hex = rec.key.to_hex().to_string();
    let round_of = |r: &Record| u64::from_le_bytes(r.data["round"].as_slice().try_into().unwrap());
    for i in 0..200u64 {
        // Each writer numbers its rounds from its own start, so its first write is visible.
        let first = (i + 1) * 1_000_000;
        let mut child = tokio::process::Command::new(hammer())
            .args([
                "write-forever",
                t.store.root().to_str().unwrap(),
                &hex,
                &first.to_string(),
            ])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Wait (bounded) until it is writing, then kill it (SIGKILL) a varying moment later,
        // in the middle of its write loop.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = t
                .store
                .load(&rec.key)
                .await
                .expect("a torn or damaged file")
                .expect("gone");
            if round_of(&got) >= first {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "iteration {i}: the writer never wrote"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_micros(200 + (i * 397) % 4000)).await;
        child.kill().await.unwrap();
        let got = t
            .store
            .load(&rec.key)
            .await
            .expect("a torn or damaged file")
            .expect("the session vanished");
        let round = round_of(&got);
        let v = &got.data["v"];
        assert_eq!(v.len(), 256 * 1024, "iteration {i}: a short value");
        let want = (round % 251) as u8;
        assert!(
            v.iter().all(|b| *b == want),
            "iteration {i}: value mixes two versions"
        );
    }
    // Leftover temporary files are not sessions; a sweep counts none of them.
    assert_eq!(t.store.delete_expired().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_updating_the_same_sessions_lose_nothing() {
    let t = TempStore::new(Fsync::Never);
    let records: Vec<Record> = (0..3).map(|_| record(&[("base", b"1")])).collect();
    for r in &records {
        t.store.create(r).await.unwrap();
    }
    let keys: Vec<String> = records.iter().map(|r| r.key.to_hex().to_string()).collect();
    let rounds = 150;
    let spawn = |name: &str| {
        tokio::process::Command::new(hammer())
            .args([
                "add-keys",
                t.store.root().to_str().unwrap(),
                name,
                &rounds.to_string(),
            ])
            .args(&keys)
            .kill_on_drop(true)
            .status()
    };
    let (a, b) = tokio::join!(spawn("a"), spawn("b"));
    assert!(a.unwrap().success() && b.unwrap().success());
    for r in &records {
        let got = t.store.load(&r.key).await.unwrap().unwrap();
        let lost: Vec<String> = (0..rounds)
            .flat_map(|i| [format!("a-{i}"), format!("b-{i}")])
            .filter(|k| !got.data.contains_key(k))
            .collect();
        assert!(
            lost.is_empty(),
            "lost {} updates, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        assert_eq!(got.data.len(), 2 * rounds + 1);
    }
}

#[tokio::test]
async fn paths_stay_below_the_root_and_hold_no_id() {
    let t = TempStore::new(Fsync::Never);
    for _ in 0..100 {
        let id = UuidV4Generator.generate();
        let path = t.store.path_of(&id.storage_key());
        assert!(path.starts_with(t.store.root()));
        let rest = path.strip_prefix(t.store.root()).unwrap();
        assert_eq!(
            rest.components().count(),
            3,
            "two shard levels and the file"
        );
        assert!(
            rest.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        );
        assert!(!path.to_string_lossy().contains(id.as_str()));
    }
}

#[tokio::test]
async fn damaged_files_are_corrupt_errors_and_are_swept() {
    let t = TempStore::new(Fsync::Never);
    let cases: [&[u8]; 4] = [b"", b"garbage", b"RSSN\x01short", &[0xff; 100]];
    let mut keys = Vec::new();
    for bytes in cases {
        let r = record(&[("a", b"1")]);
        t.store.create(&r).await.unwrap();
        std::fs::write(t.store.path_of(&r.key), bytes).unwrap();
        assert!(
            matches!(t.store.load(&r.key).await, Err(StoreError::Corrupt { .. })),
            "{bytes:?}"
        );
        keys.push(r.key);
    }
    // A truncated real record too.
    let r = record(&[("a", &[7; 1000])]);
    t.store.create(&r).await.unwrap();
    let path = t.store.path_of(&r.key);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        t.store.load(&r.key).await,
        Err(StoreError::Corrupt { .. })
    ));
    keys.push(r.key);

    assert_eq!(t.store.delete_expired().await.unwrap(), keys.len() as u64);
    for key in &keys {
        assert_eq!(t.store.load(key).await.unwrap(), None);
    }
}

#[tokio::test]
async fn open_refuses_a_file_and_creates_a_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let open_error = |e: StoreError| match e {
        StoreError::Config {
            store: "disk",
            source,
        } => *source.downcast::<OpenError>().unwrap(),
        other => panic!("not a Config error: {other:?}"),
    };
    assert!(matches!(
        open_error(DiskStore::open(&file).unwrap_err()),
        OpenError::NotADirectory(_)
    ));
    let nested = dir.path().join("a/b/c");
    DiskStore::open(&nested).unwrap();
    assert!(nested.join(".locks").is_dir());
    assert!(matches!(
        open_error(
            DiskStore::builder(&nested)
                .shard_depth(9)
                .open()
                .unwrap_err()
        ),
        OpenError::ShardDepth(9)
    ));
    let flat = DiskStore::builder(dir.path().join("flat"))
        .shard_depth(0)
        .open()
        .unwrap();
    let r = record(&[("k", b"v")]);
    flat.create(&r).await.unwrap();
    assert_eq!(flat.path_of(&r.key).parent().unwrap(), flat.root());
    assert_eq!(
        flat.load(&r.key).await.unwrap().unwrap().data,
        BTreeMap::from([("k".to_owned(), b"v".to_vec())])
    );
}

#[cfg(unix)]
#[tokio::test]
async fn session_files_are_private_by_default() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = TempStore::new(Fsync::Never);
    let r = record(&[("k", b"v")]);
    t.store.create(&r).await.unwrap();
    let mode = std::fs::metadata(t.store.path_of(&r.key))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_held_lock_times_out_as_unavailable() {
    let t = TempStore::new(Fsync::Never);
    let store = DiskStore::builder(t.store.root())
        .lock_timeout(Duration::from_millis(100))
        .open()
        .unwrap();
    let r = record(&[("k", b"v")]);
    store.create(&r).await.unwrap();
    let stripe = format!("{:02x}.lock", r.key.as_bytes()[31]);
    let held = std::fs::File::open(t.store.root().join(".locks").join(stripe)).unwrap();
    held.lock().unwrap();
    let started = std::time::Instant::now();
    let result = store
        .touch(
            &r.key,
            Timestamp::now().saturating_add(Duration::from_secs(60)),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    held.unlock().unwrap();
    assert!(
        store
            .touch(
                &r.key,
                Timestamp::now().saturating_add(Duration::from_secs(60))
            )
            .await
            .unwrap()
    );
}

/// The child half of the test below: run by it in another process, on its directory.
#[tokio::test]
async fn owner_index_child() {
    let (Some(dir), Ok(owner), Ok(role)) = (
        std::env::var_os("SESSION_DISK_CHILD_DIR"),
        std::env::var("SESSION_DISK_CHILD_OWNER"),
        std::env::var("SESSION_DISK_CHILD_ROLE"),
    ) else {
        return;
    };
    let store = DiskStore::builder(dir).fsync(Fsync::Never).open().unwrap();
    match role.as_str() {
        "create" => {
            for _ in 0..2 {
                let mut r = record(&[("from", b"child")]);
                r.owner = Some(owner.clone());
                store.create(&r).await.unwrap();
            }
        }
        "delete" => assert_eq!(store.delete_sessions_of(&owner).await.unwrap(), 5),
        other => panic!("unknown role {other}"),
    }
}

/// Two processes sharing one directory share its per-user index: sessions one creates are
/// listed by the other, and "log out everywhere" from one ends the other's sessions too.
#[tokio::test]
async fn the_owner_index_is_shared_by_two_processes() {
    let t = TempStore::new(Fsync::Never);
    let owner = format!("u-{}", UuidV4Generator.generate().as_str());
    let mut mine = Vec::new();
    for _ in 0..3 {
        let mut r = record(&[("from", b"parent")]);
        r.owner = Some(owner.clone());
        t.store.create(&r).await.unwrap();
        mine.push(r.key);
    }
    let child = |role: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["owner_index_child", "--exact", "--test-threads=1"])
            .env("SESSION_DISK_CHILD_DIR", t.store.root())
            .env("SESSION_DISK_CHILD_OWNER", &owner)
            .env("SESSION_DISK_CHILD_ROLE", role)
            .output()
            .unwrap();
        assert!(out.status.success(), "child {role}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "child {role} did not run: {out:?}"
        );
    };
    child("create");
    let listed = t.store.sessions_of(&owner).await.unwrap();
    assert_eq!(
        listed.len(),
        5,
        "the other process's sessions are not listed"
    );
    child("delete");
    assert!(t.store.sessions_of(&owner).await.unwrap().is_empty());
    for key in &mine {
        assert_eq!(t.store.load(key).await.unwrap(), None);
    }
}
