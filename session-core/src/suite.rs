//! The conformance suite every [`SessionStore`] must pass (feature `test-suite`).
//!
//! Each `check_*` function takes a fresh store and panics with a message on a broken
//! contract. A store crate runs them all, one `#[tokio::test]` each, with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! session_core::conformance_tests!(|| async { Some(MyStore::new()) });
//! ```
//!
//! This module is for store authors' tests and is outside the crate's semver promises: checks
//! are added as contracts are found, and a store that passes today may fail a new check.
//!
//! Stores that need a server read its address with [`server_url`] and return `None` to
//! skip, which [`server_url`] turns into a failure under `SESSION_TEST_REQUIRE_SERVERS=1`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

use crate::error::StoreError;
use crate::id::{IdGenerator, SessionId, StorageKey, UuidV4Generator};
use crate::manager::{SaveOutcome, SessionManager};
use crate::record::{Changes, Record};
use crate::scan::{Scan, Scanned};
use crate::store::{Loaded, ScanCursor, ScanPage, SessionStore};
use crate::time::Timestamp;

/// The address of a test server from the environment variable `var`.
///
/// When it is unset: with `SESSION_TEST_REQUIRE_SERVERS=1` (what `cargo xtask test-backends`
/// sets) this panics, failing the test; otherwise it prints that the test was skipped and
/// how to run it, and returns `None`.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var("SESSION_TEST_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{var} is not set but SESSION_TEST_REQUIRE_SERVERS=1: the server was not started"
            );
            // Straight to the process's stderr, not through `eprintln!`, which the test
            // harness captures and shows only for failing tests: a skip must be seen in the
            // normal output of `cargo test`.
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("a test");
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test}: {var} is not set; run `cargo xtask test-backends` to test against a real server"
            );
            None
        }
    }
}

/// What a test does around the calls an [`Intercept`] passes on to the store it wraps.
/// Every method has a default that changes nothing.
#[async_trait]
pub trait Hooks: std::fmt::Debug + Send + Sync + 'static {
    /// Runs before every call, `method` naming it; an error is the call's answer and the
    /// call does not reach the wrapped store.
    fn before(&self, method: &'static str) -> Result<(), StoreError> {
        let _ = method;
        Ok(())
    }

    /// Turns what the wrapped store's `load` answered into the answer.
    fn loaded(&self, found: Option<Record>) -> Result<Option<Record>, StoreError> {
        Ok(found)
    }

    /// Runs before a `create` reaches the wrapped store; an error is its answer.
    fn creating(&self, record: &Record) -> Result<(), StoreError> {
        let _ = record;
        Ok(())
    }

    /// Runs after a `create` landed in the wrapped store; an error is its answer.
    async fn created(&self, record: &Record) -> Result<(), StoreError> {
        let _ = record;
        Ok(())
    }

    /// Runs before a `delete` reaches the wrapped store.
    fn deleting(&self, key: &StorageKey) {
        let _ = key;
    }
}

/// A store wrapper for tests: every call goes to the wrapped store, through [`Hooks`].
#[derive(Debug)]
pub struct Intercept<H> {
    inner: Arc<dyn SessionStore>,
    hooks: H,
}

impl<H: Hooks> Intercept<H> {
    /// Wraps `inner`, calling `hooks` around its calls.
    pub fn with_hooks(inner: Arc<dyn SessionStore>, hooks: H) -> Self {
        Self { inner, hooks }
    }

    /// The hooks, to read what they recorded.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }
}

/// [`ProbeStore`]'s hooks: a call counter and an outage switch.
#[derive(Debug, Default)]
pub struct Probe {
    calls: AtomicUsize,
    failing: AtomicBool,
}

impl Hooks for Probe {
    fn before(&self, _method: &'static str) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::unavailable("probe", "simulated outage"));
        }
        Ok(())
    }
}

/// A store wrapper for tests: counts calls and fails every call with
/// [`StoreError::Unavailable`] while [`ProbeStore::set_failing`] is on.
pub type ProbeStore = Intercept<Probe>;

impl ProbeStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        Self::with_hooks(inner, Probe::default())
    }

    /// How many calls reached the wrapper.
    pub fn calls(&self) -> usize {
        self.hooks.calls.load(Ordering::SeqCst)
    }

    /// Makes every call fail (an outage) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.hooks.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<H: Hooks> SessionStore for Intercept<H> {
    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        self.hooks.before("load")?;
        self.hooks.loaded(self.inner.load(key).await?)
    }
    async fn load_body(&self, key: &StorageKey) -> Result<Option<Loaded>, StoreError> {
        Ok(self.load(key).await?.map(Loaded::Record))
    }
    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        self.hooks.before("create")?;
        self.hooks.creating(record)?;
        self.inner.create(record).await?;
        self.hooks.created(record).await
    }
    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.hooks.before("update")?;
        self.inner.update(key, changes, expires_at).await
    }
    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.hooks.before("touch")?;
        self.inner.touch(key, expires_at).await
    }
    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        self.hooks.before("delete")?;
        self.hooks.deleting(key);
        self.inner.delete(key).await
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        self.hooks.before("delete_expired")?;
        self.inner.delete_expired().await
    }
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        self.hooks.before("retire")?;
        self.inner.retire(key, to, until).await
    }
    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        self.hooks.before("forwarded")?;
        self.inner.forwarded(key).await
    }
    fn expires_natively(&self) -> bool {
        self.inner.expires_natively()
    }
    async fn sessions_of(&self, owner: &str) -> Result<Vec<crate::SessionInfo>, StoreError> {
        self.hooks.before("sessions_of")?;
        self.inner.sessions_of(owner).await
    }
    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        self.hooks.before("delete_sessions_of")?;
        self.inner.delete_sessions_of(owner).await
    }
    async fn write_capped(
        &self,
        write: crate::OwnedWrite<'_>,
        cap: &crate::OwnerCap<'_>,
    ) -> Result<crate::CappedWrite, StoreError> {
        self.hooks.before("write_capped")?;
        let crate::OwnedWrite::Create(record) = write else {
            return self.inner.write_capped(write, cap).await;
        };
        self.hooks.creating(record)?;
        let done = self.inner.write_capped(write, cap).await?;
        self.hooks.created(record).await?;
        Ok(done)
    }
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        self.hooks.before("scan")?;
        self.inner.scan(cursor, limit).await
    }
}

/// What the conformance macro's factory may return: a store, or a store with a guard that
/// must live as long as the test (a temporary directory, a server process).
pub trait IntoFixture {
    /// The store to test and what to keep alive meanwhile.
    fn into_fixture(self) -> (Arc<dyn SessionStore>, Box<dyn std::any::Any + Send>);
}

impl<S: SessionStore> IntoFixture for S {
    fn into_fixture(self) -> (Arc<dyn SessionStore>, Box<dyn std::any::Any + Send>) {
        (Arc::new(self), Box::new(()))
    }
}

impl<S: SessionStore, G: Send + 'static> IntoFixture for (S, G) {
    fn into_fixture(self) -> (Arc<dyn SessionStore>, Box<dyn std::any::Any + Send>) {
        (Arc::new(self.0), Box::new(self.1))
    }
}

fn fresh_key() -> StorageKey {
    UuidV4Generator.generate().storage_key()
}

/// A record under a fresh key with `data`, created now, live for an hour, no owner: the
/// fixture store tests start from.
pub fn record(data: &[(&str, &[u8])]) -> Record {
    record_with(data, in_one_hour())
}

/// A record under a fresh key with `data` that expires at `expires_at`.
fn record_with(data: &[(&str, &[u8])], expires_at: Timestamp) -> Record {
    Record {
        key: fresh_key(),
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
        created_at: Timestamp::now(),
        expires_at,
        owner: None,
    }
}

fn in_one_hour() -> Timestamp {
    Timestamp::now().saturating_add(Duration::from_secs(3600))
}

fn a_second_ago() -> Timestamp {
    Timestamp::now().saturating_sub(Duration::from_secs(1))
}

async fn must_load(store: &dyn SessionStore, key: &StorageKey) -> Record {
    store
        .load(key)
        .await
        .expect("load failed")
        .expect("the record should be live")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    age: u16,
    tags: Vec<String>,
    scores: HashMap<String, f64>,
    manager: Option<Box<Profile>>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Admin,
    Member { since: i64 },
}

/// Values of many shapes survive a save and a load through a [`SessionManager`].
pub async fn check_round_trip_values(store: Arc<dyn SessionStore>) {
    let manager = SessionManager::builder_arc(store.clone()).build();
    let session = manager.create();
    let profile = Profile {
        name: "Zoë \u{1F511}".to_owned(),
        age: 42,
        tags: vec!["a".into(), String::new(), "c\nd".into()],
        scores: HashMap::from([("x".to_owned(), 1.5), ("y".to_owned(), -0.0)]),
        manager: Some(Box::new(Profile {
            name: "boss".into(),
            age: 60,
            tags: vec![],
            scores: HashMap::new(),
            manager: None,
            kind: Kind::Admin,
        })),
        kind: Kind::Member { since: -5 },
    };
    let map = BTreeMap::from([("k1".to_owned(), vec![1u32, 2]), ("k2".to_owned(), vec![])]);
    session.insert("string", "hello").unwrap();
    session.insert("empty string", "").unwrap();
    session.insert("i64", i64::MIN).unwrap();
    session.insert("u128", u128::MAX).unwrap();
    session.insert("f64", std::f64::consts::PI).unwrap();
    session.insert("bool", true).unwrap();
    session.insert("bytes", vec![0u8, 255, 10, 13]).unwrap();
    session.insert("none", Option::<String>::None).unwrap();
    session.insert("unit", ()).unwrap();
    session.insert("tuple", (1u8, "two", 3.0f32)).unwrap();
    session.insert("map", &map).unwrap();
    session.insert("profile", &profile).unwrap();
    session.insert("ünïcødé 🔑", "key").unwrap();
    session.insert("", "empty key").unwrap();
    assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Created);

    let loaded = manager
        .load(&session.id())
        .await
        .unwrap()
        .expect("saved session loads");
    assert_eq!(
        loaded.get::<String>("string").unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(
        loaded.get::<String>("empty string").unwrap().as_deref(),
        Some("")
    );
    assert_eq!(loaded.get::<i64>("i64").unwrap(), Some(i64::MIN));
    assert_eq!(loaded.get::<u128>("u128").unwrap(), Some(u128::MAX));
    assert_eq!(
        loaded.get::<f64>("f64").unwrap(),
        Some(std::f64::consts::PI)
    );
    assert_eq!(loaded.get::<bool>("bool").unwrap(), Some(true));
    assert_eq!(
        loaded.get::<Vec<u8>>("bytes").unwrap(),
        Some(vec![0, 255, 10, 13])
    );
    assert_eq!(loaded.get::<Option<String>>("none").unwrap(), Some(None));
    assert_eq!(loaded.get::<()>("unit").unwrap(), Some(()));
    assert_eq!(
        loaded.get::<(u8, String, f32)>("tuple").unwrap(),
        Some((1, "two".into(), 3.0))
    );
    assert_eq!(
        loaded.get::<BTreeMap<String, Vec<u32>>>("map").unwrap(),
        Some(map)
    );
    assert_eq!(loaded.get::<Profile>("profile").unwrap(), Some(profile));
    assert_eq!(
        loaded.get::<String>("ünïcødé 🔑").unwrap().as_deref(),
        Some("key")
    );
    assert_eq!(
        loaded.get::<String>("").unwrap().as_deref(),
        Some("empty key")
    );
    assert_eq!(loaded.get::<String>("missing").unwrap(), None);
    assert_eq!(loaded.len(), 14);
    // A value read as the wrong type is an error for that key only.
    assert!(loaded.get::<Profile>("string").is_err());
    assert_eq!(loaded.get::<bool>("bool").unwrap(), Some(true));
}

/// Key names that are operators, paths or control characters elsewhere round-trip and
/// never disturb their neighbours, through `create` and key-by-key `update`.
pub async fn check_hostile_key_names(store: Arc<dyn SessionStore>) {
    let long = "k".repeat(10_000);
    let names: Vec<&str> = vec![
        "",
        ".",
        "..",
        "a.b",
        "$",
        "$where",
        "$set",
        "a$b",
        "data",
        "data.x",
        "_id",
        "with space",
        "line\nbreak",
        "cr\r\nlf",
        "nul\0byte",
        "\0",
        "tab\t",
        "ünïcødé 🔑",
        "/",
        "../../etc/passwd",
        "key:with:colons",
        "{braces}",
        "%s%n",
        &long,
    ];
    let data: Vec<(&str, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, format!("value {i}").into_bytes()))
        .collect();
    let pairs: Vec<(&str, &[u8])> = data.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let record = record_with(&pairs, in_one_hour());
    store.create(&record).await.unwrap();
    assert_eq!(must_load(&*store, &record.key).await, record);

    let mut changes = Changes::new();
    changes.set("a.b", b"changed".to_vec());
    changes.set("$new", b"added".to_vec());
    changes.remove("$where");
    changes.remove("nul\0byte");
    changes.remove(&long);
    let expires_at = in_one_hour();
    assert!(
        store
            .update(&record.key, &changes, expires_at)
            .await
            .unwrap()
    );
    let mut want = record.data.clone();
    changes.apply_to(&mut want);
    let got = must_load(&*store, &record.key).await;
    assert_eq!(got.data, want);
    assert_eq!(got.expires_at, expires_at);
}

/// Expired records are invisible to `load`, and `update`/`touch` do not revive them.
pub async fn check_expired_is_invisible(store: Arc<dyn SessionStore>) {
    let expired = record_with(&[("a", b"1")], a_second_ago());
    store.create(&expired).await.unwrap();
    assert_eq!(
        store.load(&expired.key).await.unwrap(),
        None,
        "an expired record loaded"
    );
    let mut changes = Changes::new();
    changes.set("b", b"2".to_vec());
    assert!(
        !store
            .update(&expired.key, &changes, in_one_hour())
            .await
            .unwrap()
    );
    assert!(!store.touch(&expired.key, in_one_hour()).await.unwrap());
    assert_eq!(
        store.load(&expired.key).await.unwrap(),
        None,
        "update or touch revived it"
    );

    // A record that expires while it sits in the store.
    let soon = record_with(
        &[("a", b"1")],
        Timestamp::now().saturating_add(Duration::from_millis(1200)),
    );
    store.create(&soon).await.unwrap();
    assert!(
        store.load(&soon.key).await.unwrap().is_some(),
        "a live record did not load"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        store.load(&soon.key).await.unwrap(),
        None,
        "a record outlived its expiry"
    );
}

/// `load_body` answers what `load` does — the same record, decoded or in a body, `None` for
/// an absent or expired one — and the manager reads the values of either form.
pub async fn check_load_body_is_load(store: Arc<dyn SessionStore>) {
    let mut record = record_with(&[("", b""), ("a", b"1"), ("b", &[7; 300])], in_one_hour());
    record.owner = Some("ada".to_owned());
    store.create(&record).await.unwrap();
    let loaded = store
        .load_body(&record.key)
        .await
        .unwrap()
        .expect("a live record");
    assert_eq!(
        (loaded.created_at(), loaded.expires_at()),
        (record.created_at, record.expires_at)
    );
    for key in ["", "a", "b", "c"] {
        assert_eq!(
            loaded.get(key),
            record.data.get(key).map(Vec::as_slice),
            "{key:?}"
        );
    }
    assert_eq!(
        Some(loaded.into_record()),
        store.load(&record.key).await.unwrap()
    );
    assert_eq!(
        store.load_body(&fresh_key()).await.unwrap(),
        None,
        "an absent record"
    );
    let expired = record_with(&[("a", b"1")], a_second_ago());
    store.create(&expired).await.unwrap();
    assert_eq!(
        store.load_body(&expired.key).await.unwrap(),
        None,
        "an expired record"
    );

    // Through the manager: read, write over, remove from and add to what was loaded.
    let manager = SessionManager::builder_arc(store.clone()).build();
    let session = manager.create();
    session.insert_many([("a", 1), ("b", 2), ("c", 3)]).unwrap();
    manager.save(&session).await.unwrap();
    let loaded = manager.load(&session.id()).await.unwrap().expect("saved");
    assert_eq!(loaded.get::<i32>("b").unwrap(), Some(2));
    loaded.insert("b", 20).unwrap();
    loaded.insert("d", 4).unwrap();
    assert_eq!(
        (
            loaded.get::<i32>("b").unwrap(),
            loaded.get::<i32>("d").unwrap()
        ),
        (Some(20), Some(4))
    );
    assert!(loaded.remove("a"));
    assert_eq!(loaded.keys(), ["b", "c", "d"]);
    manager.save(&loaded).await.unwrap();
    let again = manager.load(&session.id()).await.unwrap().expect("saved");
    assert_eq!(
        again.get_many::<i32>(&["a", "b", "c", "d"]).unwrap(),
        [None, Some(20), Some(3), Some(4)]
    );
    assert_eq!(again.len(), 3);
}

/// For a store that keeps encoded records: `load_body` answers a [`Loaded::Body`], whose
/// entries are the record's (a value of 3 000 bytes among them). Not part of
/// [`conformance_tests!`](crate::conformance_tests), whose `load_body` may answer either form.
pub async fn check_loads_bodies(store: Arc<dyn SessionStore>) {
    let r = record_with(&[("a", b"1"), ("b", &[2; 3000])], in_one_hour());
    store.create(&r).await.unwrap();
    match store.load_body(&r.key).await.unwrap() {
        Some(Loaded::Body { key, body }) => {
            assert_eq!(key, r.key);
            assert_eq!(body.into_record(key), r);
        }
        other => panic!("not a body: {other:?}"),
    }
}

/// `create` refuses a taken key and leaves the first record as it was.
pub async fn check_create_collision(store: Arc<dyn SessionStore>) {
    let first = record_with(&[("who", b"first")], in_one_hour());
    store.create(&first).await.unwrap();
    let mut second = record_with(&[("who", b"second")], in_one_hour());
    second.key = first.key;
    match store.create(&second).await {
        Err(StoreError::IdCollision) => {}
        other => panic!("create on a taken key gave {other:?}, not IdCollision"),
    }
    assert_eq!(must_load(&*store, &first.key).await, first);
}

/// `update` and `touch` of a key that never existed return `false` and create nothing.
pub async fn check_update_of_missing(store: Arc<dyn SessionStore>) {
    let key = fresh_key();
    let mut changes = Changes::new();
    changes.set("a", b"1".to_vec());
    assert!(!store.update(&key, &changes, in_one_hour()).await.unwrap());
    assert!(!store.touch(&key, in_one_hour()).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), None);
}

/// `update` applies sets, removals and clears key by key and moves the expiry; `touch`
/// moves only the expiry.
pub async fn check_update_semantics(store: Arc<dyn SessionStore>) {
    let record = record_with(&[("a", b"1"), ("b", b"2"), ("c", b"3")], in_one_hour());
    store.create(&record).await.unwrap();

    let mut changes = Changes::new();
    changes.set("a", b"10".to_vec());
    changes.set("d", b"4".to_vec());
    changes.remove("b");
    let later = in_one_hour().saturating_add(Duration::from_secs(60));
    assert!(store.update(&record.key, &changes, later).await.unwrap());
    let got = must_load(&*store, &record.key).await;
    let want: BTreeMap<String, Vec<u8>> = [("a", b"10".as_slice()), ("c", b"3"), ("d", b"4")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect();
    assert_eq!(got.data, want);
    assert_eq!(got.expires_at, later);
    assert_eq!(got.created_at, record.created_at);

    let mut clear = Changes::new();
    clear.clear();
    clear.set("z", b"26".to_vec());
    assert!(store.update(&record.key, &clear, later).await.unwrap());
    let got = must_load(&*store, &record.key).await;
    assert_eq!(got.data, BTreeMap::from([("z".to_owned(), b"26".to_vec())]));

    let even_later = later.saturating_add(Duration::from_secs(60));
    assert!(store.touch(&record.key, even_later).await.unwrap());
    let got = must_load(&*store, &record.key).await;
    assert_eq!(got.expires_at, even_later);
    assert_eq!(got.data, BTreeMap::from([("z".to_owned(), b"26".to_vec())]));

    // An empty change set still moves the expiry.
    assert!(
        store
            .update(&record.key, &Changes::new(), later)
            .await
            .unwrap()
    );
    assert_eq!(must_load(&*store, &record.key).await.expires_at, later);
}

/// No lost updates: in each of 50 rounds two tasks change different keys of one session at
/// the same moment, and afterwards every key is there.
pub async fn check_no_lost_updates(store: Arc<dyn SessionStore>) {
    const ROUNDS: usize = 50;
    let record = record_with(&[("base", b"0")], in_one_hour());
    store.create(&record).await.unwrap();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|side| {
                let (store, barrier, key) = (store.clone(), barrier.clone(), record.key);
                tokio::spawn(async move {
                    let mut changes = Changes::new();
                    changes.set(format!("{side}-{round}"), side.as_bytes().to_vec());
                    barrier.wait().await;
                    store.update(&key, &changes, in_one_hour()).await
                })
            })
            .collect();
        for task in tasks {
            assert!(
                task.await.unwrap().unwrap(),
                "update of a live record returned false"
            );
        }
    }
    let got = must_load(&*store, &record.key).await;
    let lost: Vec<String> = (0..ROUNDS)
        .flat_map(|r| [format!("left-{r}"), format!("right-{r}")])
        .filter(|k| !got.data.contains_key(k))
        .collect();
    assert!(lost.is_empty(), "lost updates: {lost:?}");
    assert!(got.data.contains_key("base"));
}

/// Counters ([`Changes::increment`]) lose nothing: 16 tasks each save 25 updates at once,
/// every one adding 1 to a shared counter and to the task's own, and the store holds exactly
/// the sums; an increment counts from 0 on an absent key or one that holds no counter, and
/// applies together with the writes and removals of the same update. Through the manager,
/// two handles that loaded the same session and each add 1 leave 2 more.
pub async fn check_increments_are_atomic(store: Arc<dyn SessionStore>) {
    const TASKS: i64 = 16;
    const ROUNDS: i64 = 25;
    let codec = crate::Codec::Bincode;
    let counter = |value: i64| codec.encode(&value).unwrap();
    let read = |record: &Record, key: &str| -> i64 {
        let bytes = record
            .data
            .get(key)
            .unwrap_or_else(|| panic!("{key} is gone"));
        codec
            .decode(bytes)
            .unwrap_or_else(|e| panic!("{key} is no counter: {e}"))
    };
    let ten = counter(10);
    let text = codec.encode(&"no number here").unwrap();
    let record = record_with(
        &[("hits", &ten), ("text", &text), ("gone", b"x")],
        in_one_hour(),
    );
    store.create(&record).await.unwrap();
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, barrier, key) = (store.clone(), barrier.clone(), record.key);
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..ROUNDS {
                    let mut changes = Changes::new();
                    changes.increment("hits", 1, codec);
                    changes.increment(format!("task-{task}"), 1, codec);
                    let written = store.update(&key, &changes, in_one_hour()).await;
                    assert!(
                        written.unwrap_or_else(|e| panic!("an increment failed: {e}")),
                        "an increment of a live record returned false"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let got = must_load(&*store, &record.key).await;
    assert_eq!(
        read(&got, "hits"),
        10 + TASKS * ROUNDS,
        "increments were lost"
    );
    for task in 0..TASKS {
        assert_eq!(read(&got, &format!("task-{task}")), ROUNDS, "task {task}");
    }

    let mut mixed = Changes::new();
    mixed.increment("text", 3, codec);
    mixed.increment("new", -2, codec);
    mixed.remove("gone");
    mixed.set("plain", b"v".to_vec());
    assert!(
        store
            .update(&record.key, &mixed, in_one_hour())
            .await
            .unwrap()
    );
    let got = must_load(&*store, &record.key).await;
    assert_eq!(
        read(&got, "text"),
        3,
        "a value that is no counter starts over"
    );
    assert_eq!(read(&got, "new"), -2, "an absent counter starts at 0");
    assert!(!got.data.contains_key("gone"));
    assert_eq!(got.data.get("plain").map(Vec::as_slice), Some(&b"v"[..]));

    let missing = self::record(&[]);
    let mut add = Changes::new();
    add.increment("hits", 1, codec);
    assert!(
        !store
            .update(&missing.key, &add, in_one_hour())
            .await
            .unwrap(),
        "an increment brought a missing session to life"
    );
    assert_eq!(store.load(&missing.key).await.unwrap(), None);

    let manager = SessionManager::builder_arc(store.clone()).build();
    let session = manager.create();
    assert_eq!(session.increment("visits", 1).unwrap(), 1);
    manager.save(&session).await.unwrap();
    let id = session.id();
    let left = manager.load(&id).await.unwrap().unwrap();
    let right = manager.load(&id).await.unwrap().unwrap();
    assert_eq!(left.increment("visits", 1).unwrap(), 2);
    assert_eq!(right.increment("visits", 1).unwrap(), 2);
    manager.save(&left).await.unwrap();
    manager.save(&right).await.unwrap();
    let after = manager.load(&id).await.unwrap().unwrap();
    assert_eq!(
        after.get::<i64>("visits").unwrap(),
        Some(3),
        "a handle's increment was lost"
    );
    // After its save a handle reads the counter as the store wrote it.
    assert_eq!(left.get::<i64>("visits").unwrap(), Some(2));
    assert_eq!(
        right.get::<i64>("visits").unwrap(),
        Some(3),
        "the saved counter does not include the other handle's addition"
    );
    assert_eq!(manager.increment(&after, "visits", 10).await.unwrap(), 13);
    // Eight requests at once each get the value their own addition made: all different.
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(manager.load(&id).await.unwrap().unwrap());
    }
    let barrier = Arc::new(Barrier::new(handles.len()));
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|handle| {
            let (manager, barrier) = (manager.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                manager.increment(&handle, "visits", 1).await.unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (14..=21).collect::<Vec<i64>>(),
        "concurrent increments did not each return the value the store wrote"
    );
}

/// A session's own expiry ([`crate::SessionExpiry`]) is kept by the store: a remembered
/// session's record expires 30 days out and loads with its expiry intact, and a session
/// with a 1 s own idle timeout is gone 1.5 s later while a default one lives on.
pub async fn check_own_expiry_is_kept(store: Arc<dyn SessionStore>) {
    use crate::SessionExpiry;
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let manager = SessionManager::builder_arc(store.clone()).build();
    let remember = SessionExpiry::persistent(Some(30 * DAY), Some(90 * DAY));

    let remembered = manager.create();
    remembered.insert("user", "alice").unwrap();
    remembered.set_expiry(Some(remember));
    manager.save(&remembered).await.unwrap();
    let record = must_load(&*store, &remembered.id().storage_key()).await;
    let expected = Timestamp::now().saturating_add(30 * DAY);
    let off = expected.as_unix_millis() - record.expires_at.as_unix_millis();
    assert!(
        (0..60_000).contains(&off),
        "a remembered session's record expires {off} ms from 30 days out"
    );
    let again = manager.load(&remembered.id()).await.unwrap().unwrap();
    assert_eq!(
        again.own_expiry(),
        Some(remember),
        "the own expiry did not round-trip"
    );
    assert_eq!(again.keys(), ["user"]);

    let short = manager.create();
    short.insert("user", "bob").unwrap();
    short.set_expiry(Some(SessionExpiry::browser_session(
        Some(Duration::from_secs(1)),
        None,
    )));
    manager.save(&short).await.unwrap();
    let default = manager.create();
    default.insert("user", "carol").unwrap();
    manager.save(&default).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        manager.load(&short.id()).await.unwrap().is_none(),
        "a session with a 1 s own idle timeout outlived it"
    );
    assert!(manager.load(&default.id()).await.unwrap().is_some());
    assert!(manager.load(&remembered.id()).await.unwrap().is_some());
}

/// Lifecycle events ([`crate::events`]) on this store: created, id cycled, destroyed, an
/// owner logged out everywhere (where the store keeps the per-user index), and expiry found
/// on read — a session with a 1 s own idle timeout, presented 1.5 s later with its signed
/// expiry, is reported expired, without any notification from the store, while a destroyed
/// one presented before its expiry is not. A listener that panics changes nothing.
pub async fn check_lifecycle_events(store: Arc<dyn SessionStore>) {
    use crate::{SessionEvent, SessionExpiry};
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let told = events.clone();
    let manager = SessionManager::builder_arc(store.clone())
        .listener(move |event: &SessionEvent| told.lock().unwrap().push(event.clone()))
        .build();
    let taken = || std::mem::take(&mut *events.lock().unwrap());

    let session = manager.create();
    session.insert("user", "alice").unwrap();
    manager.save(&session).await.unwrap();
    let first = session.id().storage_key();
    assert_eq!(
        taken(),
        [SessionEvent::Created {
            key: first,
            owner: None
        }]
    );
    let owner = format!("events-{}", UuidV4Generator.generate().as_str());
    session.set_owner(Some(&owner));
    session.cycle_id();
    manager.save(&session).await.unwrap();
    let second = session.id().storage_key();
    assert_eq!(
        taken(),
        [SessionEvent::IdCycled {
            from: first,
            to: second,
            owner: Some(owner.clone())
        }]
    );
    let presented = session.expires_at();
    manager.destroy(&session).await.unwrap();
    assert_eq!(taken(), [SessionEvent::Destroyed { key: second }]);
    assert!(
        manager
            .load_presented(&session.id(), presented)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(taken(), [], "a destroyed session was reported expired");

    let owned = manager.create();
    owned.set_owner(Some(&owner));
    owned.insert("n", 1u8).unwrap();
    manager.save(&owned).await.unwrap();
    taken();
    match manager.destroy_all_of(&owner).await {
        Ok(ended) => assert_eq!(
            taken(),
            [SessionEvent::OwnerLoggedOut {
                owner: owner.clone(),
                sessions: ended
            }]
        ),
        Err(crate::SessionError::Store(StoreError::Unsupported { .. })) => {
            assert_eq!(taken(), [], "a failed logout everywhere was told");
        }
        Err(e) => panic!("destroy_all_of: {e}"),
    }

    let short = manager.create();
    short.insert("n", 1u8).unwrap();
    short.set_expiry(Some(SessionExpiry::browser_session(
        Some(Duration::from_secs(1)),
        None,
    )));
    manager.save(&short).await.unwrap();
    taken();
    let presented = short.expires_at();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        manager
            .load_presented(&short.id(), presented)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        taken(),
        [SessionEvent::Expired {
            key: short.id().storage_key()
        }],
        "expiry was not found on read"
    );

    let panicking = SessionManager::builder_arc(store.clone())
        .listener(|_: &SessionEvent| panic!("a listener that panics"))
        .build();
    let session = panicking.create();
    session.insert("n", 1u8).unwrap();
    assert_eq!(
        panicking.save(&session).await.unwrap(),
        SaveOutcome::Created,
        "a panicking listener failed the save"
    );
}

/// Devices ([`crate::devices`]) and the per-owner cap on this store: three logins of one
/// user with `max_sessions_per_owner(2)` end the oldest; [`SessionManager::devices_of`]
/// lists the other two, newest first, with the user agent, IP and last-seen time each
/// recorded; [`SessionManager::end_session_of`] ends one by its handle for its owner and
/// nothing for another user; an anonymous session records no device and writes nothing. On
/// a store without the per-user index (`supported` false) the listing is `Unsupported` and
/// a capped login still succeeds.
pub async fn check_devices(store: Arc<dyn SessionStore>, supported: bool) {
    use crate::SessionEvent;
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let told = events.clone();
    let manager = SessionManager::builder_arc(store.clone())
        .max_sessions_per_owner(Some(2))
        .listener(move |event: &SessionEvent| told.lock().unwrap().push(event.clone()))
        .build();
    let owner = format!("devices-{}", UuidV4Generator.generate().as_str());
    let mut keys = Vec::new();
    for i in 0..3 {
        let session = manager.create();
        session.insert("user", &owner).unwrap();
        session.set_client(Some(&format!("agent-{i}")), Some(&format!("203.0.113.{i}")));
        session.set_owner(Some(&owner));
        assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Created);
        keys.push(session.id().storage_key());
        // Creation times a few milliseconds apart: "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if !supported {
        assert!(matches!(
            manager.devices_of(&owner).await,
            Err(crate::SessionError::Store(StoreError::Unsupported { .. }))
        ));
        return;
    }
    assert!(
        store.load(&keys[0]).await.unwrap().is_none(),
        "the oldest session outlived the cap"
    );
    assert!(
        events
            .lock()
            .unwrap()
            .contains(&SessionEvent::Destroyed { key: keys[0] })
    );
    let devices = manager.devices_of(&owner).await.unwrap();
    let listed: Vec<StorageKey> = devices.iter().map(|d| d.key).collect();
    assert_eq!(listed, [keys[2], keys[1]], "newest first");
    let now = Timestamp::now().as_unix_millis();
    for (device, i) in devices.iter().zip([2, 1]) {
        assert_eq!(
            device.user_agent.as_deref(),
            Some(format!("agent-{i}").as_str())
        );
        assert_eq!(
            device.ip.as_deref(),
            Some(format!("203.0.113.{i}").as_str())
        );
        let seen = device
            .last_seen
            .expect("no last-seen time")
            .as_unix_millis();
        assert!(
            (0..60_000).contains(&(now - seen)),
            "last seen {seen}, now {now}"
        );
    }

    assert!(
        !manager
            .end_session_of("someone-else", &keys[1])
            .await
            .unwrap(),
        "another user's handle ended a session"
    );
    assert!(store.load(&keys[1]).await.unwrap().is_some());
    assert!(manager.end_session_of(&owner, &keys[1]).await.unwrap());
    assert!(store.load(&keys[1]).await.unwrap().is_none());
    assert!(!manager.end_session_of(&owner, &keys[1]).await.unwrap());
    let left: Vec<StorageKey> = manager
        .devices_of(&owner)
        .await
        .unwrap()
        .iter()
        .map(|d| d.key)
        .collect();
    assert_eq!(left, [keys[2]]);

    let anonymous = manager.create();
    anonymous.set_client(Some("agent"), Some("198.51.100.1"));
    assert_eq!(
        manager.save(&anonymous).await.unwrap(),
        SaveOutcome::Unchanged,
        "an anonymous visitor's device was written"
    );
}

/// Logout is final: in each of 50 rounds `delete` races an `update` and a `touch` of the same
/// session, and afterwards the session is gone and stays gone.
pub async fn check_logout_is_final(store: Arc<dyn SessionStore>) {
    for round in 0..50 {
        let record = record_with(&[("user", b"alice")], in_one_hour());
        store.create(&record).await.unwrap();
        let barrier = Arc::new(Barrier::new(3));
        let key = record.key;
        let delete = {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.delete(&key).await
            })
        };
        let update = {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut changes = Changes::new();
                changes.set(format!("late-{round}"), b"x".to_vec());
                barrier.wait().await;
                store.update(&key, &changes, in_one_hour()).await
            })
        };
        let touch = {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.touch(&key, in_one_hour()).await
            })
        };
        delete.await.unwrap().unwrap();
        update.await.unwrap().unwrap();
        touch.await.unwrap().unwrap();
        assert_eq!(
            store.load(&key).await.unwrap(),
            None,
            "round {round}: a deleted session came back"
        );
        let mut changes = Changes::new();
        changes.set("after", b"x".to_vec());
        assert!(!store.update(&key, &changes, in_one_hour()).await.unwrap());
        assert!(!store.touch(&key, in_one_hour()).await.unwrap());
        assert_eq!(
            store.load(&key).await.unwrap(),
            None,
            "round {round}: revived after delete"
        );
    }
}

/// A 512 KiB value round-trips through `create` and `update`.
pub async fn check_large_value(store: Arc<dyn SessionStore>) {
    let big: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let record = record_with(&[("big", &big), ("small", b"s")], in_one_hour());
    store.create(&record).await.unwrap();
    assert_eq!(must_load(&*store, &record.key).await, record);
    let mut changes = Changes::new();
    let other: Vec<u8> = big.iter().rev().copied().collect();
    changes.set("big", other.clone());
    assert!(
        store
            .update(&record.key, &changes, in_one_hour())
            .await
            .unwrap()
    );
    let got = must_load(&*store, &record.key).await;
    assert_eq!(got.data.get("big"), Some(&other));
    assert_eq!(
        got.data.get("small").map(Vec::as_slice),
        Some(b"s".as_slice())
    );
}

/// A session with 1000 keys round-trips, and removing half of them leaves the other half.
pub async fn check_many_keys(store: Arc<dyn SessionStore>) {
    let data: Vec<(String, Vec<u8>)> = (0..1000)
        .map(|i| (format!("key-{i:04}"), format!("value-{i}").into_bytes()))
        .collect();
    let pairs: Vec<(&str, &[u8])> = data
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let record = record_with(&pairs, in_one_hour());
    store.create(&record).await.unwrap();
    assert_eq!(must_load(&*store, &record.key).await, record);
    let mut changes = Changes::new();
    for (key, _) in data.iter().step_by(2) {
        changes.remove(key);
    }
    assert!(
        store
            .update(&record.key, &changes, in_one_hour())
            .await
            .unwrap()
    );
    let got = must_load(&*store, &record.key).await;
    assert_eq!(got.data.len(), 500);
    assert!(
        got.data
            .keys()
            .all(|k| k.ends_with(['1', '3', '5', '7', '9']))
    );
}

/// Deleting a missing key, or the same key twice, is not an error.
pub async fn check_delete_is_idempotent(store: Arc<dyn SessionStore>) {
    store.delete(&fresh_key()).await.unwrap();
    let record = record_with(&[("a", b"1")], in_one_hour());
    store.create(&record).await.unwrap();
    store.delete(&record.key).await.unwrap();
    store.delete(&record.key).await.unwrap();
    assert_eq!(store.load(&record.key).await.unwrap(), None);
}

/// `delete_expired` removes expired records (counting them, unless the store expires
/// natively) and keeps live ones.
pub async fn check_delete_expired(store: Arc<dyn SessionStore>) {
    let expired: Vec<Record> = (0..3)
        .map(|_| record_with(&[("a", b"1")], a_second_ago()))
        .collect();
    for record in &expired {
        store.create(record).await.unwrap();
    }
    let live = record_with(&[("a", b"1")], in_one_hour());
    store.create(&live).await.unwrap();
    let swept = store.delete_expired().await.unwrap();
    if store.expires_natively() {
        assert_eq!(swept, 0, "a store with native expiry reports 0");
    } else {
        assert!(
            swept >= 3,
            "swept {swept} records, expected at least the 3 expired ones"
        );
    }
    for record in &expired {
        assert_eq!(store.load(&record.key).await.unwrap(), None);
    }
    assert_eq!(must_load(&*store, &live.key).await, live);
    // A second sweep finds none of ours.
    let _ = store.delete_expired().await.unwrap();
    assert_eq!(must_load(&*store, &live.key).await, live);
}

/// Hostile or unknown ids never reach the store, and an unknown id is never adopted.
pub async fn check_hostile_ids(store: Arc<dyn SessionStore>) {
    let probe = Arc::new(ProbeStore::new(store));
    let manager = SessionManager::builder_arc(probe.clone()).build();
    let long = "A".repeat(10 * 1024);
    let hostile = [
        "",
        "short",
        "../../../../etc/passwd",
        "AAAAAAAAAAAAAAAAAAAAA/",
        "AAAAAAAAAAAAAAAAAAAA\r\nset x 0 0 1\r\n",
        "AAAAAAAAAAAAAAAAAAAA AA",
        "AAAAAAAAAAAAAAAAAAAA\0AA",
        "AAAAAAAAAAAAAAAAAAAA*",
        "{AAAAAAAAAAAAAAAAAAAAAA}",
        "AAAAAAAAAAAAAAAAAAAAÄ",
        &long,
    ];
    for raw in hostile {
        assert!(SessionId::parse(raw).is_err(), "{raw:?} parsed as an id");
        let session = manager.load_or_create(Some(raw)).await.unwrap();
        assert!(session.is_new());
        assert_ne!(session.id().as_str(), raw);
    }
    assert_eq!(probe.calls(), 0, "an invalid id reached the store");

    let unknown = UuidV4Generator.generate();
    let session = manager
        .load_or_create(Some(unknown.as_str()))
        .await
        .unwrap();
    assert_eq!(probe.calls(), 1);
    assert!(session.is_new());
    assert_ne!(
        session.id(),
        unknown,
        "an unknown client-chosen id was adopted"
    );
}

/// The manager's whole lifecycle on this store: create, load, update, flash, cycle the id,
/// destroy, and nothing comes back after destroy.
pub async fn check_manager_lifecycle(store: Arc<dyn SessionStore>) {
    let manager = SessionManager::builder_arc(store.clone()).build();
    let empty = manager.create();
    assert_eq!(manager.save(&empty).await.unwrap(), SaveOutcome::Unchanged);
    assert_eq!(
        store.load(&empty.id().storage_key()).await.unwrap(),
        None,
        "an empty session was written"
    );

    let session = manager.create();
    session.insert("user", "alice").unwrap();
    assert_eq!(manager.save(&session).await.unwrap(), SaveOutcome::Created);
    assert_eq!(
        manager.save(&session).await.unwrap(),
        SaveOutcome::Unchanged
    );
    let first_id = session.id();

    let loaded = manager.load(&first_id).await.unwrap().unwrap();
    loaded.insert("visits", 1u32).unwrap();
    loaded.flash("notice", "logged in").unwrap();
    assert_eq!(manager.save(&loaded).await.unwrap(), SaveOutcome::Updated);

    let loaded = manager.load(&first_id).await.unwrap().unwrap();
    assert_eq!(
        loaded.take_flash::<String>("notice").unwrap().as_deref(),
        Some("logged in")
    );
    assert_eq!(loaded.keys(), vec!["user".to_owned(), "visits".to_owned()]);
    loaded.cycle_id();
    assert_eq!(manager.save(&loaded).await.unwrap(), SaveOutcome::Cycled);
    let second_id = loaded.id();
    assert_ne!(second_id, first_id);
    assert!(
        manager.load(&first_id).await.unwrap().is_none(),
        "the old id survived cycle_id"
    );

    let cycled = manager.load(&second_id).await.unwrap().unwrap();
    assert_eq!(cycled.get::<u32>("visits").unwrap(), Some(1));
    assert_eq!(
        cycled.take_flash::<String>("notice").unwrap(),
        None,
        "a flash was read twice"
    );

    assert_eq!(
        manager.destroy(&cycled).await.unwrap(),
        SaveOutcome::Destroyed
    );
    assert!(manager.load(&second_id).await.unwrap().is_none());
    // Another handle of the destroyed session cannot bring it back.
    loaded.insert("after logout", true).unwrap();
    assert_eq!(manager.save(&loaded).await.unwrap(), SaveOutcome::Gone);
    assert!(
        manager.load(&second_id).await.unwrap().is_none(),
        "a stale handle revived the session"
    );
    assert_eq!(manager.save(&loaded).await.unwrap(), SaveOutcome::Destroyed);
    assert!(manager.load(&second_id).await.unwrap().is_none());
}

/// Hostile sizes: 10 KB key names, a 0-byte and a 900 KiB value, 10 000 keys. Each
/// round-trips or is refused as [`StoreError::TooLarge`] with nothing written, and a
/// neighbouring session is never disturbed.
pub async fn check_hostile_sizes(store: Arc<dyn SessionStore>) {
    let neighbour = record_with(&[("mine", b"untouched")], in_one_hour());
    store.create(&neighbour).await.unwrap();

    let long_a = "a".repeat(10 * 1024);
    let long_b = format!("{}.$\0", "b".repeat(10 * 1024));
    let big: Vec<u8> = (0..900 * 1024u32).map(|i| (i % 251) as u8).collect();
    let many: Vec<(String, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("k{i}"), vec![(i % 256) as u8; 8]))
        .collect();
    let cases: Vec<Vec<(&str, &[u8])>> = vec![
        vec![(long_a.as_str(), b"x"), (long_b.as_str(), b"")],
        vec![("empty", b""), ("big", &big)],
        many.iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect(),
    ];
    for (i, data) in cases.iter().enumerate() {
        let record = record_with(data, in_one_hour());
        match store.create(&record).await {
            Ok(()) => assert_eq!(
                must_load(&*store, &record.key).await,
                record,
                "case {i} did not round-trip"
            ),
            Err(StoreError::TooLarge { .. }) => {
                assert_eq!(
                    store.load(&record.key).await.unwrap(),
                    None,
                    "case {i}: a refused record was written"
                );
            }
            Err(e) => panic!("case {i}: {e}"),
        }
        // The same sizes through update, onto a small session.
        let small = record_with(&[("base", b"1")], in_one_hour());
        store.create(&small).await.unwrap();
        let mut changes = Changes::new();
        for (k, v) in data {
            changes.set(*k, v.to_vec());
        }
        match store.update(&small.key, &changes, in_one_hour()).await {
            Ok(true) => {
                let mut want = small.data.clone();
                changes.apply_to(&mut want);
                assert_eq!(
                    must_load(&*store, &small.key).await.data,
                    want,
                    "case {i}: update did not round-trip"
                );
            }
            Err(StoreError::TooLarge { .. }) => {
                assert_eq!(
                    must_load(&*store, &small.key).await,
                    small,
                    "case {i}: a refused update changed the session"
                );
            }
            other => panic!("case {i}: update gave {other:?}"),
        }
    }
    assert_eq!(
        must_load(&*store, &neighbour.key).await,
        neighbour,
        "a neighbouring session changed"
    );
}

/// Forward pointers ([`SessionStore::retire`]): retiring a live record returns it and leaves
/// a pointer that is no session (not loaded, not updated or touched, its key taken for
/// `create`, never in the per-user index) but leads to the new key until it expires or is
/// deleted; retiring a missing or expired record writes nothing.
pub async fn check_forward_pointers(store: Arc<dyn SessionStore>) {
    let mut old = record_with(&[("a", b"1")], in_one_hour());
    let owner = format!("fwd-{}", UuidV4Generator.generate().as_str());
    old.owner = Some(owner.clone());
    store.create(&old).await.unwrap();
    let new = record(&[("a", b"1")]);
    store.create(&new).await.unwrap();
    let until = Timestamp::now().saturating_add(Duration::from_secs(60));
    let retired = store.retire(&old.key, &new.key, until).await.unwrap();
    assert_eq!(
        retired.as_ref(),
        Some(&old),
        "retire did not return the record"
    );
    assert_eq!(store.load(&old.key).await.unwrap(), None, "a pointer loads");
    let mut changes = Changes::new();
    changes.set("b", b"2".to_vec());
    assert!(
        !store
            .update(&old.key, &changes, in_one_hour())
            .await
            .unwrap(),
        "an update applied to a pointer"
    );
    assert!(!store.touch(&old.key, in_one_hour()).await.unwrap());
    assert_eq!(store.forwarded(&old.key).await.unwrap(), Some(new.key));
    assert_eq!(
        store.forwarded(&new.key).await.unwrap(),
        None,
        "a session forwards"
    );
    let mut squatter = record(&[("x", b"y")]);
    squatter.key = old.key;
    assert!(
        matches!(store.create(&squatter).await, Err(StoreError::IdCollision)),
        "a pointer's key was taken over"
    );
    if let Ok(listed) = store.sessions_of(&owner).await {
        assert!(listed.is_empty(), "a pointer is listed: {listed:?}");
    }
    assert_eq!(
        store.retire(&old.key, &new.key, until).await.unwrap(),
        None,
        "a pointer was retired again"
    );
    store.delete(&old.key).await.unwrap();
    assert_eq!(
        store.forwarded(&old.key).await.unwrap(),
        None,
        "delete kept the pointer"
    );

    // Missing and expired records: nothing to retire, nothing written.
    let missing = fresh_key();
    assert_eq!(store.retire(&missing, &new.key, until).await.unwrap(), None);
    assert_eq!(store.forwarded(&missing).await.unwrap(), None);
    let expired = record_with(&[("a", b"1")], a_second_ago());
    store.create(&expired).await.unwrap();
    assert_eq!(
        store.retire(&expired.key, &new.key, until).await.unwrap(),
        None
    );
    assert_eq!(store.forwarded(&expired.key).await.unwrap(), None);

    // A pointer past its time leads nowhere.
    let short = record(&[("a", b"1")]);
    store.create(&short).await.unwrap();
    assert!(
        store
            .retire(&short.key, &new.key, a_second_ago())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.forwarded(&short.key).await.unwrap(), None);
    assert_eq!(store.load(&short.key).await.unwrap(), None);
    store.delete_expired().await.unwrap();
    assert_eq!(
        must_load(&*store, &new.key).await,
        new,
        "the target changed"
    );
}

/// `scan` lists every live session (its own and whatever else the store holds) in pages of
/// about the size asked for, a deleted one never, and refuses a cursor it did not make;
/// [`Scan`] reads the listed records back as they were written.
pub async fn check_scan(store: Arc<dyn SessionStore>) {
    const LIMIT: usize = 7;
    let live: Vec<Record> = (0..20u8)
        .map(|n| record(&[("n", &[n][..]), ("name", b"scan")]))
        .collect();
    for r in &live {
        store.create(r).await.unwrap();
    }
    let deleted = record(&[("gone", b"1")]);
    store.create(&deleted).await.unwrap();
    store.delete(&deleted.key).await.unwrap();
    let expired = record_with(&[("old", b"1")], a_second_ago());
    store.create(&expired).await.unwrap();

    // Other tests share the store: bounded by pages, not by what this test wrote.
    let mut listed = std::collections::HashSet::new();
    let mut cursor = None;
    for page_no in 0.. {
        assert!(page_no < 50_000, "the scan never ended");
        let page = store.scan(cursor.as_ref(), LIMIT).await.unwrap();
        assert!(
            page.keys.len() <= 4 * LIMIT + 16,
            "a page of {} keys for a limit of {LIMIT}",
            page.keys.len()
        );
        listed.extend(page.keys);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for r in &live {
        assert!(listed.contains(&r.key), "a live session was not listed");
    }
    assert!(
        !listed.contains(&deleted.key),
        "a deleted session was listed"
    );

    let mut scan = Scan::new(store.clone()).page_size(LIMIT).parallel(3);
    let mut read = HashMap::new();
    let mut pages = 0;
    while let Some(page) = scan.next_page().await.unwrap() {
        pages += 1;
        assert!(pages < 50_000, "the scan never ended");
        for found in page {
            match found {
                Scanned::Live(r) => {
                    read.insert(r.key, r);
                }
                Scanned::NotLive(key) => assert!(
                    !live.iter().any(|r| r.key == key),
                    "a live session read as not live"
                ),
                Scanned::Damaged(..) => {}
            }
        }
    }
    for r in &live {
        assert_eq!(read.get(&r.key), Some(r), "a session read back changed");
    }
    assert!(
        !read.contains_key(&expired.key),
        "an expired session read as live"
    );

    let foreign = ScanCursor::new("\u{1}not a cursor of this store");
    assert!(
        matches!(
            store.scan(Some(&foreign), LIMIT).await,
            Err(StoreError::Config { .. })
        ),
        "a foreign cursor was accepted"
    );
}

/// A login racing the session's other requests: requests that loaded the session before its
/// id was cycled and save after (or during) the cycle keep their writes, which reach the
/// session under its new id; and a logout of the new id stays final against them.
pub async fn check_cycle_keeps_racing_writes(store: Arc<dyn SessionStore>) {
    let manager = SessionManager::builder_arc(store.clone()).build();
    for round in 0..24u32 {
        let session = manager.create();
        session.insert("user", "anonymous").unwrap();
        manager.save(&session).await.unwrap();
        let id = session.id();
        let login = manager.load(&id).await.unwrap().unwrap();
        let page = manager.load(&id).await.unwrap().unwrap();
        login.cycle_id();
        login.insert("user", "alice").unwrap();
        page.insert("cart", round).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (m1, m2, b1, b2) = (
            manager.clone(),
            manager.clone(),
            barrier.clone(),
            barrier.clone(),
        );
        let (l, p) = (login.clone(), page.clone());
        let logged_in = tokio::spawn(async move {
            b1.wait().await;
            m1.save(&l).await.unwrap()
        });
        let wrote = tokio::spawn(async move {
            b2.wait().await;
            m2.save(&p).await.unwrap()
        });
        assert_eq!(logged_in.await.unwrap(), SaveOutcome::Cycled);
        let wrote = wrote.await.unwrap();
        assert!(
            matches!(wrote, SaveOutcome::Updated | SaveOutcome::Forwarded),
            "round {round}: the racing write was {wrote:?}"
        );
        let new_id = login.id();
        assert!(
            manager.load(&id).await.unwrap().is_none(),
            "the old id lives"
        );
        let now = manager.load(&new_id).await.unwrap().unwrap();
        assert_eq!(now.get::<String>("user").unwrap().as_deref(), Some("alice"));
        assert_eq!(
            now.get::<u32>("cart").unwrap(),
            Some(round),
            "round {round}: the write racing the login was lost ({wrote:?})"
        );

        // A write after the login that lands once the new session is logged out stays out.
        let late = manager.load(&new_id).await.unwrap().unwrap();
        manager.destroy(&now).await.unwrap();
        late.insert("cart", 99u32).unwrap();
        assert_eq!(manager.save(&late).await.unwrap(), SaveOutcome::Gone);
        assert!(
            manager.load(&new_id).await.unwrap().is_none(),
            "logout undone"
        );
    }

    // A write through the old id after the new session was logged out goes nowhere.
    let session = manager.create();
    session.insert("n", 1u8).unwrap();
    manager.save(&session).await.unwrap();
    let login = manager.load(&session.id()).await.unwrap().unwrap();
    let page = manager.load(&session.id()).await.unwrap().unwrap();
    login.cycle_id();
    manager.save(&login).await.unwrap();
    manager.destroy(&login).await.unwrap();
    page.insert("n", 2u8).unwrap();
    assert_eq!(manager.save(&page).await.unwrap(), SaveOutcome::Gone);
    assert!(
        manager.load(&login.id()).await.unwrap().is_none(),
        "logout undone"
    );
}

/// The per-user index: two users with three sessions each (one gaining its owner by
/// `update`), `sessions_of` lists exactly a user's live sessions, `delete_sessions_of` ends
/// exactly one user's sessions and nothing brings them back.
///
/// `supported` says whether the store must keep the index: a store that should and answers
/// `Unsupported` fails, and one that cannot must say `Unsupported` for both calls.
pub async fn check_owner_index(store: Arc<dyn SessionStore>, supported: bool) {
    let user = |name: &str| format!("{name}-{}", UuidV4Generator.generate().as_str());
    let (alice, bob) = (user("alice"), user("bob"));
    if !supported {
        for answer in [
            store.sessions_of(&alice).await.map(|_| ()),
            store.delete_sessions_of(&alice).await.map(|_| ()),
        ] {
            assert!(
                matches!(answer, Err(StoreError::Unsupported { .. })),
                "a store declared without a per-user index answered {answer:?}, not Unsupported"
            );
        }
        return;
    }
    match store.sessions_of(&alice).await {
        Err(e @ StoreError::Unsupported { .. }) => {
            panic!("the store must keep a per-user index (owner_index = true) but answers: {e}")
        }
        other => assert_eq!(other.unwrap(), vec![], "a fresh user has sessions"),
    }
    let mut keys: BTreeMap<&str, Vec<StorageKey>> = BTreeMap::new();
    for owner in [&alice, &bob] {
        for i in 0..3 {
            let mut record = record_with(&[("n", b"1")], in_one_hour());
            if i < 2 {
                record.owner = Some(owner.clone());
                store.create(&record).await.unwrap();
            } else {
                store.create(&record).await.unwrap();
                let mut changes = Changes::new();
                changes.set_owner(Some(owner));
                assert!(
                    store
                        .update(&record.key, &changes, in_one_hour())
                        .await
                        .unwrap()
                );
                assert_eq!(
                    must_load(&*store, &record.key).await.owner.as_deref(),
                    Some(owner.as_str())
                );
            }
            keys.entry(owner.as_str()).or_default().push(record.key);
        }
    }
    // An expired session of alice's is not listed.
    let mut expired = record_with(&[("n", b"1")], a_second_ago());
    expired.owner = Some(alice.clone());
    store.create(&expired).await.unwrap();
    // A session that stopped being alice's is not listed either.
    let mut moved = record_with(&[("n", b"1")], in_one_hour());
    moved.owner = Some(alice.clone());
    store.create(&moved).await.unwrap();
    let mut changes = Changes::new();
    changes.set_owner(None);
    assert!(
        store
            .update(&moved.key, &changes, in_one_hour())
            .await
            .unwrap()
    );

    let listed = |infos: Vec<crate::SessionInfo>| {
        let mut k: Vec<StorageKey> = infos.into_iter().map(|i| i.key).collect();
        k.sort();
        k
    };
    for owner in [&alice, &bob] {
        let mut want = keys[owner.as_str()].clone();
        want.sort();
        assert_eq!(
            listed(store.sessions_of(owner).await.unwrap()),
            want,
            "sessions of {owner}"
        );
    }

    let ended = store.delete_sessions_of(&alice).await.unwrap();
    assert!(ended >= 3, "ended {ended} sessions, expected alice's 3");
    for key in &keys[alice.as_str()] {
        assert_eq!(
            store.load(key).await.unwrap(),
            None,
            "alice's session survived"
        );
        let mut changes = Changes::new();
        changes.set("late", b"x".to_vec());
        assert!(
            !store.update(key, &changes, in_one_hour()).await.unwrap(),
            "an update revived it"
        );
    }
    assert!(store.sessions_of(&alice).await.unwrap().is_empty());
    for key in &keys[bob.as_str()] {
        assert!(
            store.load(key).await.unwrap().is_some(),
            "bob lost a session"
        );
    }
    assert!(
        store.load(&moved.key).await.unwrap().is_some(),
        "a session no longer alice's was ended"
    );
    assert_eq!(store.sessions_of(&bob).await.unwrap().len(), 3);
}

/// [`SessionStore::write_capped`] on this store: a login's create and update each end the
/// owner's oldest other sessions beyond the cap (reported oldest last), never the spare nor
/// another owner's; an update of a missing session writes and ends nothing; a taken id is
/// an `IdCollision` that ends nothing. Eight logins of one owner at once leave at most the
/// cap. When `atomic` (the store makes the write and the ending one step), they leave
/// exactly the cap, each ended session is reported once, and a listing taken meanwhile never
/// shows more than the cap. On a store without the per-user index (`supported` false) a
/// capped login is written and ends nothing.
pub async fn check_capped_writes(store: Arc<dyn SessionStore>, supported: bool, atomic: bool) {
    use crate::store::{OwnedWrite, OwnerCap};
    let owner = format!("cap-{}", UuidV4Generator.generate().as_str());
    let now = Timestamp::now();
    let owned = |owner: &str, age_ms: u64| {
        let mut record = record(&[("k", b"v")]);
        record.owner = Some(owner.to_owned());
        record.created_at = now.saturating_sub(Duration::from_millis(age_ms));
        record
    };
    let cap = |owner, max, spare| OwnerCap {
        owner,
        max,
        spare,
        now,
    };
    let old: Vec<Record> = [4000, 3000, 2000].map(|age| owned(&owner, age)).into();
    for record in &old {
        store.create(record).await.unwrap();
    }
    let someone_else = owned(&format!("{owner}-other"), 9000);
    store.create(&someone_else).await.unwrap();

    let fresh = owned(&owner, 0);
    let done = store
        .write_capped(OwnedWrite::Create(&fresh), &cap(&owner, 2, None))
        .await
        .unwrap();
    assert!(done.written);
    assert!(store.load(&fresh.key).await.unwrap().is_some());
    if !supported {
        assert!(done.ended.is_empty());
        for record in &old {
            assert!(store.load(&record.key).await.unwrap().is_some());
        }
        return;
    }
    assert_eq!(
        done.ended,
        [old[1].key, old[0].key],
        "the oldest, oldest last"
    );
    for gone in &done.ended {
        assert!(
            store.load(gone).await.unwrap().is_none(),
            "an ended session loads"
        );
    }
    let mut listed: Vec<StorageKey> = store
        .sessions_of(&owner)
        .await
        .unwrap()
        .iter()
        .map(|s| s.key)
        .collect();
    listed.sort();
    let mut expected = vec![fresh.key, old[2].key];
    expected.sort();
    assert_eq!(listed, expected);
    assert!(
        store.load(&someone_else.key).await.unwrap().is_some(),
        "another owner's session was ended"
    );

    // The spare (a cycled session's old record) is neither counted nor ended.
    let spare = owned(&owner, 10_000);
    store.create(&spare).await.unwrap();
    let newcomer = owned(&owner, 0);
    let done = store
        .write_capped(
            OwnedWrite::Create(&newcomer),
            &cap(&owner, 2, Some(&spare.key)),
        )
        .await
        .unwrap();
    assert_eq!(done.ended, [old[2].key]);
    assert!(
        store.load(&spare.key).await.unwrap().is_some(),
        "the spare was ended"
    );

    // An update that gives an anonymous session to the owner, under a cap of one.
    let anonymous = record(&[("k", b"v")]);
    store.create(&anonymous).await.unwrap();
    let mut login = Changes::new();
    login.set_owner(Some(&owner));
    login.set("signed-in", b"yes".to_vec());
    let expires_at = in_one_hour();
    let done = store
        .write_capped(
            OwnedWrite::Update {
                key: &anonymous.key,
                changes: &login,
                expires_at,
            },
            &cap(&owner, 1, None),
        )
        .await
        .unwrap();
    assert!(done.written);
    let mut ended = done.ended.clone();
    ended.sort();
    let mut expected = vec![fresh.key, newcomer.key, spare.key];
    expected.sort();
    assert_eq!(ended, expected);
    let loaded = store.load(&anonymous.key).await.unwrap().unwrap();
    assert_eq!(loaded.owner.as_deref(), Some(owner.as_str()));
    assert_eq!(
        loaded.data.get("signed-in").map(Vec::as_slice),
        Some(&b"yes"[..])
    );

    // No live record: nothing written, nothing ended.
    let missing = fresh_key();
    let done = store
        .write_capped(
            OwnedWrite::Update {
                key: &missing,
                changes: &login,
                expires_at,
            },
            &cap(&owner, 1, None),
        )
        .await
        .unwrap();
    assert_eq!(done, crate::CappedWrite::default());
    assert!(store.load(&anonymous.key).await.unwrap().is_some());

    // A taken id: a collision, and nothing ended.
    let mut taken = owned(&owner, 0);
    taken.key = anonymous.key;
    let extra = owned(&owner, 500);
    store.create(&extra).await.unwrap();
    assert!(matches!(
        store
            .write_capped(OwnedWrite::Create(&taken), &cap(&owner, 1, None))
            .await,
        Err(StoreError::IdCollision)
    ));
    assert!(
        store.load(&extra.key).await.unwrap().is_some(),
        "a failed login ended a session"
    );

    // Eight logins of one owner at once, under a cap of three.
    let crowd = format!("{owner}-crowd");
    let records: Vec<Record> = (0..8u64).map(|i| owned(&crowd, 8000 - i * 1000)).collect();
    let running = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (store, crowd, running) = (store.clone(), crowd.clone(), running.clone());
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..10_000 {
                if !running.load(Ordering::SeqCst) {
                    break;
                }
                most = most.max(store.sessions_of(&crowd).await.unwrap().len());
                tokio::task::yield_now().await;
            }
            most
        })
    };
    let barrier = Arc::new(Barrier::new(records.len()));
    let logins: Vec<_> = records
        .iter()
        .cloned()
        .map(|record| {
            let (store, crowd, barrier) = (store.clone(), crowd.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let cap = OwnerCap {
                    owner: &crowd,
                    max: 3,
                    spare: None,
                    now,
                };
                store
                    .write_capped(OwnedWrite::Create(&record), &cap)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ended = Vec::new();
    for login in logins {
        let done = login.await.unwrap();
        assert!(done.written);
        ended.extend(done.ended);
    }
    running.store(false, Ordering::SeqCst);
    let most = watcher.await.unwrap();
    let left = store.sessions_of(&crowd).await.unwrap();
    assert!(
        (1..=3).contains(&left.len()),
        "{} sessions left under a cap of 3",
        left.len()
    );
    if atomic {
        assert_eq!(left.len(), 3, "concurrent logins ended too many");
        assert!(
            most <= 3,
            "a listing showed {most} sessions under a cap of 3"
        );
        ended.sort();
        let reported = ended.len();
        ended.dedup();
        assert_eq!(ended.len(), reported, "a session was reported ended twice");
        let mut all: Vec<StorageKey> = ended
            .into_iter()
            .chain(left.iter().map(|s| s.key))
            .collect();
        all.sort();
        let mut expected: Vec<StorageKey> = records.iter().map(|r| r.key).collect();
        expected.sort();
        assert_eq!(
            all, expected,
            "every session is either left or reported ended"
        );
    }
}

/// Expands to one `#[tokio::test]` per conformance check.
///
/// The first argument is a closure returning a future of `Option<F>`, a fresh store per
/// test, where `F` is any [`SessionStore`](crate::SessionStore) or a `(store, guard)` pair
/// whose guard (a temporary directory, …) lives as long as the test
/// ([`suite::IntoFixture`](crate::suite::IntoFixture)); `None` skips, see
/// [`suite::server_url`](crate::suite::server_url). Then the store's capabilities:
/// `owner_index = false` for a store that cannot keep a per-user index (the default,
/// `true`, requires one), and `atomic_cap = true` for a store whose
/// [`write_capped`](crate::SessionStore::write_capped) makes the login and the ending one
/// atomic step (checked: concurrent logins leave exactly the cap, and no listing shows
/// more). The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features as a dev-dependency.
///
/// ```text
/// session_core::conformance_tests!(|| async { Some(MyStore::new()) });
/// session_core::conformance_tests!(|| async { Some(MyCache::new()) }, owner_index = false);
/// session_core::conformance_tests!(|| async { Some(MyDatabase::new()) }, atomic_cap = true);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!($factory, owner_index = true, atomic_cap = false);
    };
    ($factory:expr, owner_index = $owner_index:expr $(,)?) => {
        $crate::conformance_tests!($factory, owner_index = $owner_index, atomic_cap = false);
    };
    ($factory:expr, atomic_cap = $atomic:expr $(,)?) => {
        $crate::conformance_tests!($factory, owner_index = true, atomic_cap = $atomic);
    };
    ($factory:expr, owner_index = $owner_index:expr, atomic_cap = $atomic:expr $(,)?) => {
        $crate::conformance_tests!(@cases $factory;
            check_round_trip_values,
            check_hostile_key_names,
            check_expired_is_invisible,
            check_load_body_is_load,
            check_create_collision,
            check_update_of_missing,
            check_update_semantics,
            check_no_lost_updates,
            check_increments_are_atomic,
            check_own_expiry_is_kept,
            check_lifecycle_events,
            check_logout_is_final,
            check_large_value,
            check_many_keys,
            check_delete_is_idempotent,
            check_delete_expired,
            check_hostile_ids,
            check_manager_lifecycle,
            check_hostile_sizes,
            check_forward_pointers,
            check_cycle_keeps_racing_writes,
            check_scan,
        );
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn check_owner_index() {
            let factory = $factory;
            if let ::std::option::Option::Some(fixture) = factory().await {
                let (store, _guard) = $crate::suite::IntoFixture::into_fixture(fixture);
                $crate::suite::check_owner_index(store, $owner_index).await;
            }
        }
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn check_devices() {
            let factory = $factory;
            if let ::std::option::Option::Some(fixture) = factory().await {
                let (store, _guard) = $crate::suite::IntoFixture::into_fixture(fixture);
                $crate::suite::check_devices(store, $owner_index).await;
            }
        }
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn check_capped_writes() {
            let factory = $factory;
            if let ::std::option::Option::Some(fixture) = factory().await {
                let (store, _guard) = $crate::suite::IntoFixture::into_fixture(fixture);
                $crate::suite::check_capped_writes(store, $owner_index, $atomic).await;
            }
        }
    };
    (@cases $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let factory = $factory;
                if let ::std::option::Option::Some(fixture) = factory().await {
                    let (store, _guard) = $crate::suite::IntoFixture::into_fixture(fixture);
                    $crate::suite::$check(store).await;
                }
            }
        )*
    };
}
