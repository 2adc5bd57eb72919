//! A MongoDB [`SessionStore`] for `session-core`, on the official `mongodb` driver.
//!
//! - **One document per session**: `_id` is the hashed storage key (never the bearer id),
//!   `created_at` and `expires_at` are BSON dates, `owner` the user, `v` the format version,
//!   and `data` a sub-document with one field per session key holding its encoded value as
//!   BSON binary.
//! - **Key names are escaped** reversibly (`%` → `%25`, `.` → `%2E`, `$` → `%24`, NUL →
//!   `%00`, the empty name → `%`), so no session key can become an operator or a path.
//! - **A TTL index** on `expires_at` (`expireAfterSeconds: 0`) is created idempotently at
//!   open, so expired documents do not pile up; `load` (a `find_one` by `_id`) also checks
//!   `expires_at > now` and skips forward pointers, since the TTL monitor runs only every
//!   60 s.
//! - **Per-user index**: an index on `owner` serves `sessions_of` and "log out everywhere"
//!   (`delete_sessions_of`, one `delete_many`).
//! - **Login** (`retire`): the live session document becomes a pointer (`forward_to`,
//!   `forward_until`; its data removed), which `load` and every filter exclude and the TTL
//!   index removes.
//! - **Per-key updates**: `update` is one `update_one` filtered on `_id` and
//!   `expires_at > now` that sets exactly the changed fields of `data`, unsets the removed
//!   ones and sets `expires_at` — a classic `$set`/`$unset` for up to 32 keys, a pipeline
//!   (`$mergeObjects`, values as `$literal`) for more or after a clear — with no upsert:
//!   concurrent changes to different keys all persist, and a deleted or expired session
//!   stays gone. `create` is `insert_one`; a duplicate key (E11000) is a collision.
//! - **Counters** ([`Session::increment`](session_core::Session::increment)) are a
//!   server-side `$inc`: values are the codec's bytes, which `$inc` cannot add to, so an
//!   increment adds to a pending total beside the value (`counters.<key>: { n: <Int64>,
//!   c: <codec> }`, and the document's `v` becomes 2, which older versions of this crate
//!   refuse rather than misread); `load` folds each total into its value, and a write or
//!   removal of the key drops it. Concurrent increments add up in the server. An update of
//!   more than 32 keys that increments is a compare-and-set on the counters' fields instead,
//!   retried up to [`MongoStoreBuilder::cas_retries`] times.
//!
//! Write concern and read preference come from the URI (`?w=majority&readPreference=...`) or
//! from [`MongoStoreBuilder::write_concern`] / [`MongoStoreBuilder::selection_criteria`].
//!
//! # Example
//!
//! ```no_run
//! use session_core::SessionManager;
//! use session_mongo::MongoStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MongoStore::builder("mongodb://127.0.0.1:27017/?w=majority")
//!     .database("myapp")
//!     .collection("sessions")
//!     .open()
//!     .await?;
//! let manager = SessionManager::new(store);
//! # Ok(()) }
//! ```
//!
//! (Not run as a doctest: it needs a server. The crate's tests run the conformance suite
//! against a real server; nothing here depends on one server's quirks.)
//!
//! # Errors
//!
//! [`StoreError::Unavailable`] when no server can be selected or the network fails;
//! [`StoreError::TooLarge`] for a session over the 16 MiB document limit;
//! [`StoreError::Corrupt`] for a document of the wrong shape; [`StoreError::Backend`] for
//! other server errors.
//!
//! # Feature flags
//!
//! - `dns`: `mongodb+srv://` URIs. TLS (rustls) is always built in: the driver requires a
//!   TLS backend; enable it with `?tls=true` in the URI.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::collections::BTreeMap;
use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype};
use mongodb::error::{Error, ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, CollectionOptions, IndexOptions, ReturnDocument, SelectionCriteria,
    UpdateModifications, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use session_core::{
    Changes, Codec, Increment, OwnerChange, Record, ScanCursor, ScanPage, SessionInfo,
    SessionStore, StorageKey, StoreError, Timestamp,
};

pub use mongodb;

const STORE: &str = "mongo";
const FORMAT: i32 = 1;
/// The format of a document that may hold `counters`: older readers refuse it (a damaged
/// record, a fresh session) rather than read counters without their pending totals.
const COUNTERS_FORMAT: i32 = 2;
/// The sub-document of pending `$inc` totals: `counters.<escaped key>` is
/// `{ n: <Int64 total>, c: <codec name> }`.
const COUNTERS: &str = "counters";
const COUNTER_TOTAL: &str = "n";
const COUNTER_CODEC: &str = "c";
/// MongoDB's document size limit.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// Room for the document's own fields and BSON framing.
const DOCUMENT_OVERHEAD: usize = 16 * 1024;
const TTL_INDEX: &str = "session_expires_at_ttl";
/// The field of a forward pointer document (`retire`): the new key's hex. A pointer has no
/// `data`, `created_at` or `owner`; its `expires_at` lets the TTL index remove it.
const FORWARD_FIELD: &str = "forward_to";
/// When a forward pointer ends.
const FORWARD_UNTIL: &str = "forward_until";
const OWNER_INDEX: &str = "session_owner";

/// Updates of at most this many keys are a classic `$set`/`$unset`; larger ones (and clears)
/// a pipeline, which servers such as SecantusDB run in time linear in the number of keys
/// where their `$set` is quadratic.
const SMALL_UPDATE: usize = 32;

/// The path of a session key inside the document's `data`.
fn data_path(name: &str) -> String {
    format!("data.{}", escape_key(name))
}

/// A few keys: a classic `$set`/`$unset` of their paths, atomic on the document like the
/// pipeline and cheaper for the server to run.
///
/// Counters: a written or removed key drops its pending `$inc` total (`counters.<key>`),
/// and an increment is a server-side `$inc` of that total, recorded with its codec, so
/// concurrent increments add up in the server; `load` folds the totals into the values.
fn paths_update(changes: &Changes, expires_at: Timestamp) -> Document {
    let mut set = doc! { "expires_at": date(expires_at) };
    for (name, value) in changes.written() {
        set.insert(data_path(name), binary(value));
    }
    if let Some(owner) = owner_value(changes.owner()) {
        set.insert("owner", owner);
    }
    let mut inc = Document::new();
    for (name, add) in changes.incremented() {
        let path = counter_path(name);
        set.insert(format!("{path}.{COUNTER_CODEC}"), add.codec().name());
        inc.insert(format!("{path}.{COUNTER_TOTAL}"), Bson::Int64(add.by()));
    }
    if !inc.is_empty() {
        set.insert("v", COUNTERS_FORMAT);
    }
    let mut update = doc! { "$set": set };
    let unset: Document = changes
        .removed()
        .iter()
        .flat_map(|name| [data_path(name), counter_path(name)])
        .chain(changes.written().keys().map(|name| counter_path(name)))
        .map(|path| (path, Bson::String(String::new())))
        .collect();
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    if !inc.is_empty() {
        update.insert("$inc", inc);
    }
    update
}

/// The path of a session key's pending `$inc` total.
fn counter_path(name: &str) -> String {
    format!("{COUNTERS}.{}", escape_key(name))
}

/// Many keys, or a clear: one pipeline, the changed keys merged into the stored `data` (or
/// replacing it when cleared), the removed ones unset, all in one atomic document write, so
/// keys other requests changed meanwhile survive. Values sit inside `$literal`: nothing a
/// client stored can be read as an expression.
fn pipeline_update(changes: &Changes, expires_at: Timestamp) -> Vec<Document> {
    let changed: Document = changes
        .written()
        .iter()
        .map(|(name, value)| (escape_key(name), binary(value)))
        .collect();
    let data = if changes.is_cleared() {
        doc! { "$literal": changed }
    } else {
        doc! { "$mergeObjects": ["$data", { "$literal": changed }] }
    };
    let mut set = doc! { "expires_at": date(expires_at), "data": data };
    if let Some(owner) = owner_value(changes.owner()) {
        set.insert("owner", doc! { "$literal": owner });
    }
    let mut pipeline = vec![doc! { "$set": set }];
    let paths: Vec<String> = if changes.is_cleared() {
        vec![COUNTERS.to_owned()]
    } else {
        changes
            .removed()
            .iter()
            .flat_map(|name| [data_path(name), counter_path(name)])
            .chain(changes.written().keys().map(|name| counter_path(name)))
            .collect()
    };
    if !paths.is_empty() {
        pipeline.push(doc! { "$unset": paths });
    }
    pipeline
}

/// The new `owner` field of an owner change (null when removed), or `None` to leave it.
fn owner_value(change: &OwnerChange) -> Option<Bson> {
    match change {
        OwnerChange::Set(owner) => Some(Bson::String(owner.clone())),
        OwnerChange::Remove => Some(Bson::Null),
        _ => None,
    }
}

/// Escapes a session key name into a field name that is never an operator or a path.
pub fn escape_key(name: &str) -> String {
    if name.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '$' => out.push_str("%24"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_key`]; `None` for a field name it cannot have written.
pub fn unescape_key(field: &str) -> Option<String> {
    match field {
        // The empty name is written as `%`; an empty field is never ours (found by fuzzing).
        "" => return None,
        "%" => return Some(String::new()),
        _ => {}
    }
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find(['%', '.', '$', '\0']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (c, len) = match tail.get(..3) {
            Some("%25") => ('%', 3),
            Some("%2E") => ('.', 3),
            Some("%24") => ('$', 3),
            Some("%00") => ('\0', 3),
            _ => return None,
        };
        out.push(c);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Some(out)
}

/// Where the store's collection comes from.
#[derive(Debug, Clone)]
enum Target {
    Uri(String),
    /// The application's own database handle.
    Database(Database),
    /// The application's own collection handle.
    Collection(Collection<Document>),
}

/// Settings for a [`MongoStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MongoStoreBuilder {
    target: Target,
    database: String,
    collection: String,
    create_indexes: bool,
    timeout: Duration,
    cas_retries: u32,
    write_concern: Option<WriteConcern>,
    selection_criteria: Option<SelectionCriteria>,
}

impl MongoStoreBuilder {
    /// The database (default `sessions`).
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    /// The collection (default `sessions`).
    pub fn collection(mut self, name: impl Into<String>) -> Self {
        self.collection = name.into();
        self
    }

    /// Whether `open` creates the TTL index (default yes; idempotent).
    pub fn create_indexes(mut self, create: bool) -> Self {
        self.create_indexes = create;
        self
    }

    /// How long one call may take — selecting a server, connecting and the operation itself —
    /// before failing with [`StoreError::Unavailable`] (default 2 s). The same setting as
    /// the other stores' `command_timeout`.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times an update that increments counters reads and retries after another
    /// writer changed one of them first (default 32), before failing with
    /// [`StoreError::Unavailable`]. The same setting as the Redis and memcached stores'.
    pub fn cas_retries(mut self, retries: u32) -> Self {
        self.cas_retries = retries.max(1);
        self
    }

    /// The write concern, overriding the URI's (for example `w: majority`).
    pub fn write_concern(mut self, concern: WriteConcern) -> Self {
        self.write_concern = Some(concern);
        self
    }

    /// The read preference, overriding the URI's.
    pub fn selection_criteria(mut self, criteria: SelectionCriteria) -> Self {
        self.selection_criteria = Some(criteria);
        self
    }

    /// Connects and (by default) creates the TTL index.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an invalid URI; [`StoreError::Unavailable`] when no
    /// server answers within the timeout (or a `mongodb+srv://` name does not resolve).
    pub async fn open(self) -> Result<MongoStore, StoreError> {
        let collection_options = CollectionOptions::builder()
            .write_concern(self.write_concern)
            .selection_criteria(self.selection_criteria)
            .build();
        let sessions = match self.target {
            Target::Uri(uri) => {
                // A `mongodb+srv://` URI is resolved here (DNS): bounded like any call.
                let parse = ClientOptions::parse(&uri);
                let mut options = bounded(self.timeout, parse).await?;
                options.server_selection_timeout = Some(self.timeout);
                options.connect_timeout = Some(self.timeout);
                options
                    .app_name
                    .get_or_insert_with(|| "session-mongo".to_owned());
                let client = Client::with_options(options).map_err(map_error)?;
                client
                    .database(&self.database)
                    .collection_with_options::<Document>(&self.collection, collection_options)
            }
            Target::Database(database) => {
                database.collection_with_options::<Document>(&self.collection, collection_options)
            }
            Target::Collection(collection) => collection,
        };
        let store = MongoStore {
            sessions,
            timeout: self.timeout,
            cas_retries: self.cas_retries,
        };
        if self.create_indexes {
            store.create_indexes().await?;
        }
        Ok(store)
    }
}

/// The MongoDB session store. Cheap to clone.
#[derive(Clone)]
pub struct MongoStore {
    sessions: Collection<Document>,
    /// Bounds every operation: the driver bounds server selection and connecting, not a
    /// server that stalls mid-answer.
    timeout: Duration,
    /// Reads of an update that increments counters (see [`MongoStoreBuilder::cas_retries`]).
    cas_retries: u32,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("collection", &self.sessions.namespace().to_string())
            .finish()
    }
}

fn code(e: &Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

fn map_error(e: Error) -> StoreError {
    match &*e.kind {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::Shutdown => StoreError::unavailable(STORE, e),
        ErrorKind::InvalidArgument { .. } => StoreError::config(STORE, e),
        _ if matches!(code(&e), Some(10334 | 17419 | 17420)) => {
            StoreError::too_large(STORE, 0, MAX_DOCUMENT)
        }
        _ => StoreError::backend(STORE, e),
    }
}

fn too_slow(timeout: Duration) -> StoreError {
    StoreError::timed_out(STORE, timeout)
}

/// Runs a driver operation, failing with `Unavailable` when it takes longer than `timeout`.
async fn bounded<T, F>(timeout: Duration, operation: F) -> Result<T, StoreError>
where
    F: IntoFuture<Output = Result<T, Error>>,
{
    session_core::bounded(timeout, operation, map_error, too_slow).await
}

fn corrupt(reason: &'static str) -> StoreError {
    StoreError::corrupt(STORE, reason)
}

fn date(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.as_unix_millis())
}

fn binary(bytes: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    })
}

/// Whether `doc` is what [`MongoStore::live_filter`] matches at `now`: a session, not a
/// forward pointer, whose `expires_at` is a date after `now` (a query's `$gt` on a date
/// matches dates only).
fn is_live(doc: &Document, now: Timestamp) -> bool {
    !doc.contains_key(FORWARD_FIELD)
        && doc
            .get_datetime("expires_at")
            .is_ok_and(|at| at.timestamp_millis() > now.as_unix_millis())
}

fn decode(key: StorageKey, doc: &Document) -> Result<Record, StoreError> {
    let created_at = doc
        .get_datetime("created_at")
        .map_err(|_| corrupt("created_at is not a date"))?;
    let expires_at = doc
        .get_datetime("expires_at")
        .map_err(|_| corrupt("expires_at is not a date"))?;
    match doc.get("v") {
        Some(Bson::Int32(FORMAT | COUNTERS_FORMAT)) => {}
        _ => return Err(corrupt("unknown format version")),
    }
    let owner = match doc.get("owner") {
        None | Some(Bson::Null) => None,
        Some(Bson::String(s)) => Some(s.clone()),
        Some(_) => return Err(corrupt("owner is not a string")),
    };
    let fields = doc
        .get_document("data")
        .map_err(|_| corrupt("data is not a document"))?;
    let mut data = BTreeMap::new();
    for (field, value) in fields {
        let name =
            unescape_key(field).ok_or_else(|| corrupt("a data field name is not escaped"))?;
        let Bson::Binary(bin) = value else {
            return Err(corrupt("a value is not binary"));
        };
        data.insert(name, bin.bytes.clone());
    }
    fold_counters(doc, &mut data)?;
    Ok(Record {
        key,
        data,
        created_at: Timestamp::from_unix_millis(created_at.timestamp_millis()),
        expires_at: Timestamp::from_unix_millis(expires_at.timestamp_millis()),
        owner,
    })
}

/// The values of the counters `changes` increments, as `doc` (projected on their `data` and
/// `counters` fields) holds them, pending `$inc` totals folded in.
fn counter_values(
    doc: &Document,
    changes: &Changes,
) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let mut current = BTreeMap::new();
    if let Ok(values) = doc.get_document("data") {
        for name in changes.incremented().keys() {
            if let Some(Bson::Binary(bin)) = values.get(escape_key(name)) {
                current.insert(name.clone(), bin.bytes.clone());
            }
        }
    }
    fold_counters(doc, &mut current)?;
    Ok(current)
}

/// Adds each pending `$inc` total of `doc` to its key's value (see [`paths_update`]).
fn fold_counters(doc: &Document, data: &mut BTreeMap<String, Vec<u8>>) -> Result<(), StoreError> {
    let counters = match doc.get(COUNTERS) {
        None | Some(Bson::Null) => return Ok(()),
        Some(Bson::Document(counters)) => counters,
        Some(_) => return Err(corrupt("counters is not a document")),
    };
    for (field, counter) in counters {
        let name =
            unescape_key(field).ok_or_else(|| corrupt("a counter field name is not escaped"))?;
        let Bson::Document(counter) = counter else {
            return Err(corrupt("a counter is not a document"));
        };
        let total = match counter.get(COUNTER_TOTAL) {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            _ => return Err(corrupt("a counter's total is not an integer")),
        };
        let codec = counter
            .get_str(COUNTER_CODEC)
            .ok()
            .and_then(Codec::from_name)
            .ok_or_else(|| corrupt("a counter's codec is unknown"))?;
        let value = Increment::new(total, codec).apply(data.get(&name).map(Vec::as_slice));
        data.insert(name, value);
    }
    Ok(())
}

fn check_size(size: usize) -> Result<(), StoreError> {
    let limit = MAX_DOCUMENT - DOCUMENT_OVERHEAD;
    if size > limit {
        return Err(StoreError::too_large(STORE, size, limit));
    }
    Ok(())
}

impl MongoStore {
    /// Settings for a store at `uri` (`mongodb://host:port/?options`).
    pub fn builder(uri: impl Into<String>) -> MongoStoreBuilder {
        Self::builder_for(Target::Uri(uri.into()))
    }

    /// Settings for a store in the collection `sessions` (or [`MongoStoreBuilder::collection`])
    /// of a database the application already holds: its client, pool and credentials are
    /// shared. [`MongoStoreBuilder::database`] does not apply.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use session_mongo::{MongoStore, mongodb};
    ///
    /// let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:27017").await?;
    /// let store = MongoStore::with_database(client.database("myapp")).open().await?;
    /// # Ok(()) }
    /// ```
    pub fn with_database(database: Database) -> MongoStoreBuilder {
        Self::builder_for(Target::Database(database))
    }

    /// Settings for a store in a collection the application already holds, with that
    /// collection's own write concern and read preference: [`MongoStoreBuilder::database`],
    /// [`MongoStoreBuilder::collection`], [`MongoStoreBuilder::write_concern`] and
    /// [`MongoStoreBuilder::selection_criteria`] do not apply.
    pub fn with_collection(collection: Collection<Document>) -> MongoStoreBuilder {
        Self::builder_for(Target::Collection(collection))
    }

    fn builder_for(target: Target) -> MongoStoreBuilder {
        MongoStoreBuilder {
            target,
            database: "sessions".into(),
            collection: "sessions".into(),
            create_indexes: true,
            timeout: Duration::from_secs(2),
            cas_retries: 32,
            write_concern: None,
            selection_criteria: None,
        }
    }

    /// Connects with default settings.
    ///
    /// # Errors
    /// As [`MongoStoreBuilder::open`].
    pub async fn open(uri: impl Into<String>) -> Result<Self, StoreError> {
        Self::builder(uri).open().await
    }

    /// The collection, for operations this store does not cover.
    pub fn collection(&self) -> &Collection<Document> {
        &self.sessions
    }

    /// Creates the TTL index on `expires_at` and the index on `owner` (idempotent).
    ///
    /// # Errors
    /// As any call: `Unavailable` or `Backend`.
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        let ttl = IndexModel::builder()
            .keys(doc! { "expires_at": 1 })
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_owned())
                    .expire_after(Duration::ZERO)
                    .build(),
            )
            .build();
        let by_owner = IndexModel::builder()
            .keys(doc! { "owner": 1 })
            .options(IndexOptions::builder().name(OWNER_INDEX.to_owned()).build())
            .build();
        bounded(self.timeout, self.sessions.create_indexes([ttl, by_owner])).await?;
        Ok(())
    }

    /// A live session under `key` (not a forward pointer).
    fn live_filter(key: &StorageKey) -> Document {
        doc! {
            "_id": key.to_hex().as_str(),
            "expires_at": { "$gt": date(Timestamp::now()) },
            FORWARD_FIELD: { "$exists": false },
        }
    }

    /// One `update_one` of the document `filter` matches with `changes` (which increment
    /// nothing); whether it matched.
    async fn write(
        &self,
        filter: Document,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        check_size(changes.written_size())?;
        let small = changes.written().len() + changes.removed().len() <= SMALL_UPDATE;
        if !changes.incremented().is_empty() {
            return self.write_increments(filter, changes, expires_at).await;
        }
        let update: UpdateModifications = if !changes.is_cleared() && small {
            paths_update(changes, expires_at).into()
        } else {
            pipeline_update(changes, expires_at).into()
        };
        let result = bounded(self.timeout, self.sessions.update_one(filter, update)).await?;
        Ok(result.matched_count == 1)
    }

    /// The `$inc` form of [`MongoStore::write`] (a few keys, not cleared): one
    /// `find_one_and_update` that returns the counters' fields as written, so each
    /// [`Increment`] reports the counter's new value ([`Increment::set_written`]).
    async fn write_increments(
        &self,
        filter: Document,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let projection: Document = changes
            .incremented()
            .keys()
            .flat_map(|name| [data_path(name), counter_path(name)])
            .map(|path| (path, Bson::Int32(1)))
            .collect();
        let update = self
            .sessions
            .find_one_and_update(filter, paths_update(changes, expires_at))
            .projection(projection)
            .return_document(ReturnDocument::After);
        let Some(doc) = bounded(self.timeout, update).await? else {
            return Ok(false);
        };
        let current = counter_values(&doc, changes)?;
        for (name, inc) in changes.incremented() {
            if let Some(value) = current
                .get(name)
                .and_then(|b| inc.codec().decode_counter(b))
            {
                inc.set_written(value);
            }
        }
        Ok(true)
    }

    /// An update that increments counters: a compare-and-set. The counters' fields are read,
    /// the increments become writes of their sums, and the write is filtered on each counter
    /// field still holding what was read (or still absent); when another writer changed one
    /// meanwhile, it reads again, up to `cas_retries` times.
    async fn update_counters(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // Each counter's value and pending `$inc` total, as (section, escaped name, path).
        let fields: Vec<(&str, String, String)> = changes
            .incremented()
            .keys()
            .flat_map(|name| {
                let escaped = escape_key(name);
                [
                    ("data", escaped.clone(), data_path(name)),
                    (COUNTERS, escaped, counter_path(name)),
                ]
            })
            .collect();
        let projection: Document = fields
            .iter()
            .map(|(_, _, path)| (path.clone(), Bson::Int32(1)))
            .collect();
        let mut took = std::time::Duration::ZERO;
        for round in 0..self.cas_retries {
            if round > 0 {
                session_core::cas_backoff(round, took).await;
            }
            let started = std::time::Instant::now();
            let read = self
                .sessions
                .find_one(Self::live_filter(key))
                .projection(projection.clone());
            let Some(doc) = bounded(self.timeout, read).await? else {
                return Ok(false);
            };
            let mut filter = Self::live_filter(key);
            for (section, escaped, path) in &fields {
                let held = doc.get_document(section).ok().and_then(|d| d.get(escaped));
                filter.insert(
                    path.clone(),
                    match held {
                        Some(value) => doc! { "$eq": value.clone() },
                        None => doc! { "$exists": false },
                    },
                );
            }
            let current = counter_values(&doc, changes)?;
            let resolved = changes.resolved(|name| current.get(name).map(Vec::as_slice));
            if self.write(filter, &resolved, expires_at).await? {
                return Ok(true);
            }
            took = started.elapsed();
        }
        Err(StoreError::unavailable(
            STORE,
            format!(
                "an increment lost {} compare-and-set races in a row to other writers of the session",
                self.cas_retries
            ),
        ))
    }
}

#[async_trait]
impl SessionStore for MongoStore {
    /// A `find_one` by `_id` alone, the live filter's other conditions checked here: a read
    /// needs no atomicity, and the server evaluates a filter of one indexed equality fastest
    /// (on SecantusDB the live filter cost 1.1 ms of server CPU a read against 0.5 ms,
    /// BENCHMARKS.md, thirteenth session).
    async fn load_body(
        &self,
        key: &StorageKey,
    ) -> Result<Option<session_core::Loaded>, StoreError> {
        Ok(self.load(key).await?.map(session_core::Loaded::Record))
    }

    async fn load(&self, key: &StorageKey) -> Result<Option<Record>, StoreError> {
        let filter = doc! { "_id": key.to_hex().as_str() };
        let found = bounded(self.timeout, self.sessions.find_one(filter)).await?;
        match found {
            Some(doc) if is_live(&doc, Timestamp::now()) => decode(*key, &doc).map(Some),
            _ => Ok(None),
        }
    }

    async fn create(&self, record: &Record) -> Result<(), StoreError> {
        check_size(record.data_size())?;
        let data: Document = record
            .data
            .iter()
            .map(|(name, value)| (escape_key(name), binary(value)))
            .collect();
        let document = doc! {
            "_id": record.key.to_hex().as_str(),
            "v": FORMAT,
            "created_at": date(record.created_at),
            "expires_at": date(record.expires_at),
            "owner": record.owner.clone(),
            "data": data,
        };
        let taken_or_failed = |e: Error| match code(&e) {
            Some(11000) => StoreError::IdCollision,
            _ => map_error(e),
        };
        let insert = self.sessions.insert_one(document);
        session_core::bounded(self.timeout, insert, taken_or_failed, too_slow).await?;
        Ok(())
    }

    async fn update(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let keys = changes.written().len() + changes.removed().len() + changes.incremented().len();
        if !changes.incremented().is_empty() && keys > SMALL_UPDATE {
            return self.update_counters(key, changes, expires_at).await;
        }
        self.write(Self::live_filter(key), changes, expires_at)
            .await
    }

    async fn touch(&self, key: &StorageKey, expires_at: Timestamp) -> Result<bool, StoreError> {
        let update = doc! { "$set": { "expires_at": date(expires_at) } };
        let result = bounded(
            self.timeout,
            self.sessions.update_one(Self::live_filter(key), update),
        )
        .await?;
        Ok(result.matched_count == 1)
    }

    async fn delete(&self, key: &StorageKey) -> Result<(), StoreError> {
        bounded(
            self.timeout,
            self.sessions
                .delete_one(doc! { "_id": key.to_hex().as_str() }),
        )
        .await?;
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Three steps, each safe on its own: one `update_one` marks the live session as a
    /// pointer (`forward_to`, `forward_until`), after which no filter of this store matches
    /// it as a session, so its data is final; a `find_one` reads that data; an `update_one`
    /// strips it and sets `expires_at` to the pointer's end for the TTL index. Only
    /// single-document update atomicity is relied on (as for every update here).
    async fn retire(
        &self,
        key: &StorageKey,
        to: &StorageKey,
        until: Timestamp,
    ) -> Result<Option<Record>, StoreError> {
        let id = key.to_hex();
        let target = to.to_hex();
        let mark = doc! {
            "$set": { FORWARD_FIELD: target.as_str(), FORWARD_UNTIL: date(until) },
        };
        let marked = bounded(
            self.timeout,
            self.sessions.update_one(Self::live_filter(key), mark),
        )
        .await?;
        if marked.matched_count == 0 {
            return Ok(None);
        }
        let filter = doc! { "_id": id.as_str(), FORWARD_FIELD: target.as_str() };
        let Some(last) = bounded(self.timeout, self.sessions.find_one(filter.clone())).await?
        else {
            return Ok(None); // deleted meanwhile (a logout)
        };
        let record = decode(*key, &last)?;
        let strip = doc! {
            "$set": { "expires_at": date(until) },
            "$unset": { "data": "", COUNTERS: "", "owner": "", "created_at": "" },
        };
        bounded(self.timeout, self.sessions.update_one(filter, strip)).await?;
        Ok(Some(record))
    }

    async fn forwarded(&self, key: &StorageKey) -> Result<Option<StorageKey>, StoreError> {
        let filter = doc! {
            "_id": key.to_hex().as_str(),
            FORWARD_UNTIL: { "$gt": date(Timestamp::now()) },
        };
        let found = bounded(
            self.timeout,
            self.sessions
                .find_one(filter)
                .projection(doc! { FORWARD_FIELD: 1 }),
        )
        .await?;
        Ok(found
            .as_ref()
            .and_then(|doc| doc.get_str(FORWARD_FIELD).ok())
            .and_then(StorageKey::parse_hex))
    }

    async fn sessions_of(&self, owner: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let filter = doc! {
            "owner": owner,
            "expires_at": { "$gt": date(Timestamp::now()) },
            FORWARD_FIELD: { "$exists": false },
        };
        let mut cursor = bounded(
            self.timeout,
            self.sessions
                .find(filter)
                .projection(doc! { "created_at": 1, "expires_at": 1 }),
        )
        .await?;
        let mut found = Vec::new();
        while bounded(self.timeout, cursor.advance()).await? {
            let doc = cursor.deserialize_current().map_err(map_error)?;
            let key = doc
                .get_str("_id")
                .ok()
                .and_then(StorageKey::parse_hex)
                .ok_or_else(|| corrupt("_id is not a storage key"))?;
            let at = |field: &str| {
                doc.get_datetime(field)
                    .map(|d| Timestamp::from_unix_millis(d.timestamp_millis()))
                    .map_err(|_| corrupt("a timestamp is not a date"))
            };
            found.push(SessionInfo {
                key,
                created_at: at("created_at")?,
                expires_at: at("expires_at")?,
            });
        }
        Ok(found)
    }

    async fn delete_sessions_of(&self, owner: &str) -> Result<u64, StoreError> {
        let result = bounded(
            self.timeout,
            self.sessions
                .delete_many(doc! { "owner": owner, FORWARD_FIELD: { "$exists": false } }),
        )
        .await?;
        Ok(result.deleted_count)
    }

    fn expires_natively(&self) -> bool {
        true
    }

    /// Writes, then ends ([`session_core::write_then_cap`]): ending other sessions means
    /// changing other documents, which needs a multi-document transaction, and the store
    /// does not require the replica set those need.
    async fn write_capped(
        &self,
        write: session_core::OwnedWrite<'_>,
        cap: &session_core::OwnerCap<'_>,
    ) -> Result<session_core::CappedWrite, StoreError> {
        session_core::write_then_cap(self, write, cap).await
    }

    /// `_id`s in order after the cursor (the last `_id` listed), forward pointers left out:
    /// one indexed range read of `limit` ids a page.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        let mut filter = doc! { FORWARD_FIELD: { "$exists": false } };
        if let Some(c) = cursor {
            let after = c.key(STORE)?;
            filter.insert("_id", doc! { "$gt": after.to_hex().as_str() });
        }
        let limit = limit.clamp(1, i64::MAX as usize);
        let mut found = bounded(
            self.timeout,
            self.sessions
                .find(filter)
                .sort(doc! { "_id": 1 })
                .limit(limit as i64)
                .projection(doc! { "_id": 1 }),
        )
        .await?;
        let mut keys = Vec::with_capacity(limit.min(4096));
        let mut seen = 0;
        while bounded(self.timeout, found.advance()).await? {
            seen += 1;
            let doc = found.deserialize_current().map_err(map_error)?;
            // A document whose `_id` is no storage key is not ours: not listed.
            if let Some(key) = doc.get_str("_id").ok().and_then(StorageKey::parse_hex) {
                keys.push(key);
            }
        }
        Ok(ScanPage::in_key_order(keys, seen == limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_leaves_no_operator_or_path() {
        let names = [
            "",
            "%",
            "%25",
            ".",
            "..",
            "$",
            "$where",
            "a.b.c",
            "nul\0",
            "%2E",
            "%%..$$",
            "plain",
            "ünï 🔑",
        ];
        for name in names {
            let field = escape_key(name);
            assert!(
                !field.contains(['.', '$', '\0']) && !field.is_empty(),
                "{name:?} → {field:?}"
            );
            assert_eq!(unescape_key(&field).as_deref(), Some(name), "{field:?}");
        }
        for foreign in ["", "a.b", "$x", "%zz", "%2", "a\0"] {
            assert_eq!(unescape_key(foreign), None, "{foreign:?}");
        }
    }
}
