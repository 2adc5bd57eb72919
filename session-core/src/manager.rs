//! [`SessionManager`]: loads, creates, saves and destroys sessions in a store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Codec;
use crate::devices::DeviceSession;
use crate::error::{SessionError, StoreError};
use crate::events::{Listener, SessionEvent, SessionListener};
use crate::id::{IdGenerator, SessionId, StorageKey, UuidV4Generator};
use crate::record::{Changes, OwnerChange, Record};
use crate::session::{NewRecord, SavePlan, SaveRules, Session, refresh_due};
use crate::store::{Loaded, OwnedWrite, OwnerCap, SessionStore};
use crate::time::{Clock, SystemClock, Timestamp};

/// How long sessions live: an idle timeout (sliding) and an absolute lifetime (fixed at
/// creation), each optional, both honoured together.
///
/// With neither, sessions still end [`Expiry::CEILING`] after their last write, so nothing
/// lives in a store forever. The default is a 24-hour idle timeout.
///
/// ```
/// use std::time::Duration;
/// use session_core::{Expiry, Timestamp};
///
/// let expiry = Expiry::new(Some(Duration::from_secs(1800)), Some(Duration::from_secs(8 * 3600)));
/// let created = Timestamp::from_unix_millis(0);
/// // Active just now: the idle window decides.
/// assert_eq!(expiry.deadline(created, created), created.saturating_add(Duration::from_secs(1800)));
/// // Active near the end of the lifetime: activity never extends past it.
/// let late = created.saturating_add(Duration::from_secs(8 * 3600 - 60));
/// assert_eq!(expiry.deadline(created, late), created.saturating_add(Duration::from_secs(8 * 3600)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    idle: Option<Duration>,
    absolute: Option<Duration>,
}

impl Expiry {
    /// The longest any session lives after its last write (400 days, the cookie limit of
    /// RFC 6265bis).
    pub const CEILING: Duration = Duration::from_secs(400 * 24 * 3600);

    /// An idle timeout and an absolute lifetime, either optional.
    pub const fn new(idle: Option<Duration>, absolute: Option<Duration>) -> Self {
        Self { idle, absolute }
    }

    /// The idle timeout.
    pub const fn idle(&self) -> Option<Duration> {
        self.idle
    }

    /// The absolute lifetime.
    pub const fn absolute(&self) -> Option<Duration> {
        self.absolute
    }

    /// When a session created at `created_at` and active at `now` expires.
    pub fn deadline(&self, created_at: Timestamp, now: Timestamp) -> Timestamp {
        let mut deadline =
            now.saturating_add(self.idle.unwrap_or(Self::CEILING).min(Self::CEILING));
        if let Some(absolute) = self.absolute {
            deadline = deadline.min(created_at.saturating_add(absolute));
        }
        deadline
    }
}

impl Default for Expiry {
    fn default() -> Self {
        Self::new(Some(Duration::from_secs(24 * 3600)), None)
    }
}

/// A session's own expiry, set with [`Session::set_expiry`]: "remember me" (a long idle
/// timeout and lifetime, with a persistent cookie) or a shorter life than the manager's
/// (a shared computer's sign-in, with a cookie the browser forgets when it closes).
///
/// It is stored with the session (a reserved key of its data, so every store keeps it), and
/// every later load and save of the session follows it instead of the manager's
/// [`Expiry`]: the record's `expires_at`, the absolute lifetime checked on load, how often
/// an unchanged session is touched (a tenth of its own idle timeout at most), and in the
/// HTTP layers whether the cookie has a `Max-Age`.
///
/// ```
/// use std::time::Duration;
/// use session_core::SessionExpiry;
///
/// const DAY: Duration = Duration::from_secs(24 * 3600);
/// let remember = SessionExpiry::persistent(Some(30 * DAY), Some(90 * DAY));
/// assert!(remember.is_persistent());
/// assert_eq!(remember.expiry().idle(), Some(30 * DAY));
/// let shared_computer = SessionExpiry::browser_session(Some(Duration::from_secs(600)), None);
/// assert!(!shared_computer.is_persistent());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpiry {
    expiry: Expiry,
    persistent: bool,
}

/// The reserved data key a session's own expiry is stored under.
pub(crate) const EXPIRY_KEY: &str = "\u{0}session:expiry";

impl SessionExpiry {
    const VERSION: u8 = 1;
    const LEN: usize = 18;

    /// An idle timeout and an absolute lifetime (either optional), with a persistent cookie
    /// (`Max-Age` following the session's expiry): the cookie outlives the browser.
    pub const fn persistent(idle: Option<Duration>, absolute: Option<Duration>) -> Self {
        Self {
            expiry: Expiry::new(idle, absolute),
            persistent: true,
        }
    }

    /// An idle timeout and an absolute lifetime (either optional), with a browser-session
    /// cookie (no `Max-Age`): the browser forgets it when it closes, and the server still
    /// ends the session by these timeouts.
    pub const fn browser_session(idle: Option<Duration>, absolute: Option<Duration>) -> Self {
        Self {
            expiry: Expiry::new(idle, absolute),
            persistent: false,
        }
    }

    /// The timeouts.
    pub const fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// Whether the cookie is persistent.
    pub const fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// How often an unchanged session with this expiry is touched: the manager's
    /// `touch_after`, or a tenth of this idle timeout when that is shorter.
    pub(crate) fn touch_after(own: Option<Self>, manager: Duration) -> Duration {
        own.and_then(|own| own.expiry.idle())
            .map_or(manager, |idle| manager.min(idle / 10))
    }

    /// Version, flags (persistent, idle set, absolute set), idle and absolute milliseconds.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let millis =
            |d: Option<Duration>| u64::try_from(d.map_or(0, |d| d.as_millis())).unwrap_or(u64::MAX);
        let flags = u8::from(self.persistent)
            | u8::from(self.expiry.idle.is_some()) << 1
            | u8::from(self.expiry.absolute.is_some()) << 2;
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(Self::VERSION);
        out.push(flags);
        out.extend_from_slice(&millis(self.expiry.idle).to_le_bytes());
        out.extend_from_slice(&millis(self.expiry.absolute).to_le_bytes());
        out
    }

    /// The expiry [`SessionExpiry::encode`] wrote; `None` for anything else (a damaged or
    /// foreign value: the manager's expiry applies).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::LEN || bytes[0] != Self::VERSION || bytes[1] > 0b111 {
            return None;
        }
        let read = |at: usize, present: bool| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            present.then(|| Duration::from_millis(u64::from_le_bytes(b)))
        };
        Some(Self {
            expiry: Expiry::new(read(2, bytes[1] & 2 != 0), read(10, bytes[1] & 4 != 0)),
            persistent: bytes[1] & 1 != 0,
        })
    }

    /// The own expiry stored in a record's data, given how to read the data's reserved key.
    pub(crate) fn of<'a>(reserved: impl FnOnce(&str) -> Option<&'a [u8]>) -> Option<Self> {
        reserved(EXPIRY_KEY).and_then(Self::decode)
    }
}

/// What [`SessionManager::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaveOutcome {
    /// Nothing to write: no changes, no touch due, or a new session with no data.
    Unchanged,
    /// The session was written for the first time: the client needs its cookie.
    Created,
    /// Changed keys were written.
    Updated,
    /// Only the expiry was moved.
    Touched,
    /// The data now lives under a new id and the old record is gone: the client needs the
    /// new cookie.
    Cycled,
    /// The record was deleted: the client's cookie should be removed.
    Destroyed,
    /// The record had vanished (deleted by another request, or expired), so nothing was
    /// written and the session is over for this handle.
    Gone,
    /// Another request had cycled the session's id (a login) after this one loaded it: the
    /// changes were written to the session under its new id, which that other request's
    /// response gave the client. This handle's id is dead; send no cookie.
    Forwarded,
}

impl SaveOutcome {
    /// Whether the client must be sent the session's (new) id.
    pub fn needs_cookie(self) -> bool {
        matches!(self, Self::Created | Self::Cycled)
    }

    /// Whether the session ended and the client's cookie should be removed.
    pub fn ended(self) -> bool {
        matches!(self, Self::Destroyed | Self::Gone)
    }
}

/// How many fresh ids `save` tries when `create` reports a collision.
const CREATE_ATTEMPTS: usize = 4;
/// How many forward pointers an update follows (an id cycled twice in a row is two).
const FORWARD_HOPS: usize = 4;

/// Loads, creates, saves and destroys sessions in one store, with one set of settings: the
/// expiry policy, the id generator and the value codec. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use session_core::{SaveOutcome, SessionManager};
/// # use session_core::SessionStore;
/// # async fn demo(store: impl SessionStore) -> Result<(), session_core::SessionError> {
/// let manager = SessionManager::builder(store)
///     .idle_timeout(Some(Duration::from_secs(30 * 60)))
///     .absolute_lifetime(Some(Duration::from_secs(12 * 3600)))
///     .build();
///
/// let session = manager.create();
/// session.insert("user", "alice")?;
/// assert_eq!(manager.save(&session).await?, SaveOutcome::Created);
///
/// let again = manager.load(&session.id()).await?.expect("saved just now");
/// assert_eq!(again.get::<String>("user")?.as_deref(), Some("alice"));
/// manager.destroy(&again).await?;
/// assert!(manager.load(&session.id()).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SessionManager {
    inner: Arc<ManagerInner>,
}

#[derive(Debug)]
struct ManagerInner {
    store: Arc<dyn SessionStore>,
    expiry: Expiry,
    touch_after: Duration,
    ids: Arc<dyn IdGenerator>,
    codec: Codec,
    clock: Arc<dyn Clock>,
    cycle_grace: Duration,
    listener: Listener,
    max_per_owner: Option<usize>,
}

/// Settings for a [`SessionManager`].
#[derive(Debug)]
#[must_use]
pub struct SessionManagerBuilder {
    store: Arc<dyn SessionStore>,
    expiry: Expiry,
    touch_after: Option<Duration>,
    ids: Arc<dyn IdGenerator>,
    codec: Codec,
    clock: Arc<dyn Clock>,
    cycle_grace: Duration,
    listener: Listener,
    max_per_owner: Option<usize>,
}

impl SessionManagerBuilder {
    /// The idle timeout: a session unused this long expires (default 24 h; `None` for none).
    pub fn idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.expiry.idle = idle;
        self
    }

    /// The absolute lifetime: a session expires this long after creation, however active
    /// (default `None`).
    pub fn absolute_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.expiry.absolute = lifetime;
        self
    }

    /// Both expiry settings at once.
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self
    }

    /// How far an unchanged session's expiry must be able to move before a save `touch`es
    /// the store. Default: a tenth of the idle timeout, so reads do not turn into writes.
    pub fn touch_after(mut self, after: Duration) -> Self {
        self.touch_after = Some(after);
        self
    }

    /// The id generator (default [`UuidV4Generator`]).
    pub fn id_generator(mut self, ids: impl IdGenerator) -> Self {
        self.ids = Arc::new(ids);
        self
    }

    /// The value codec (default [`Codec::Bincode`]).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How long the old id of a cycled session forwards writes (default 30 s): a request
    /// that loaded the session before another request cycled its id (a login) and saves
    /// after it still reaches the session under its new id instead of losing its changes.
    /// Only requests already holding the session use it: loading by the old id finds
    /// nothing. `Duration::ZERO` deletes the old record at once, and such writes are lost.
    pub fn cycle_grace(mut self, grace: Duration) -> Self {
        self.cycle_grace = grace;
        self
    }

    /// The listener told of each session's life: created, id cycled, destroyed, an owner
    /// logged out everywhere, expired (see [`crate::events`]). Default none.
    pub fn listener(mut self, listener: impl SessionListener) -> Self {
        self.listener = Listener::new(Arc::new(listener));
        self
    }

    /// At most this many sessions per owner (Spring Security's `maximumSessions`; default
    /// no limit, `Some(0)` counts as 1): when a save gives a session an owner (a login) and
    /// the owner then has more, the oldest others (by creation) are ended, each told to the
    /// listener as [`SessionEvent::Destroyed`].
    ///
    /// The login's write and the ending are one call to the store,
    /// [`SessionStore::write_capped`]. The SQL stores make it one transaction serialized per
    /// owner and the memory store one step under its login lock: the write and the ending
    /// land together, so the owner is never over the cap, even for a moment. The Redis,
    /// MongoDB and disk stores write and then end ([`crate::write_then_cap`]): for a moment
    /// the owner may have one more, and logins at once may end more than needed but never
    /// leave more than the cap. A store that keeps no per-user
    /// index (memcached) cannot enforce it; the login then succeeds and a warning is logged.
    pub fn max_sessions_per_owner(mut self, max: Option<usize>) -> Self {
        self.max_per_owner = max.map(|m| m.max(1));
        self
    }

    /// The clock (default [`SystemClock`]); tests pass a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The manager.
    pub fn build(self) -> SessionManager {
        let touch_after = self
            .touch_after
            .unwrap_or_else(|| self.expiry.idle.unwrap_or(Expiry::CEILING) / 10);
        SessionManager {
            inner: Arc::new(ManagerInner {
                store: self.store,
                expiry: self.expiry,
                touch_after,
                ids: self.ids,
                codec: self.codec,
                clock: self.clock,
                cycle_grace: self.cycle_grace,
                listener: self.listener,
                max_per_owner: self.max_per_owner,
            }),
        }
    }
}

impl SessionManager {
    /// A manager with default settings over `store`.
    pub fn new(store: impl SessionStore) -> Self {
        Self::builder(store).build()
    }

    /// Settings for a manager over `store`.
    pub fn builder(store: impl SessionStore) -> SessionManagerBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Settings for a manager over a store that is already shared.
    pub fn builder_arc(store: Arc<dyn SessionStore>) -> SessionManagerBuilder {
        SessionManagerBuilder {
            store,
            expiry: Expiry::default(),
            touch_after: None,
            ids: Arc::new(UuidV4Generator),
            codec: Codec::default(),
            clock: Arc::new(SystemClock),
            cycle_grace: Duration::from_secs(30),
            listener: Listener::default(),
            max_per_owner: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// The store itself: calling through `&Arc<dyn SessionStore>` would pick the `Arc`
    /// forwarding impl and box every call's future twice. Its calls are counted and timed
    /// with the `metrics` feature.
    fn store_dyn(&self) -> Metered<'_> {
        Metered(&*self.inner.store)
    }

    /// The expiry policy.
    pub fn expiry(&self) -> Expiry {
        self.inner.expiry
    }

    /// Whether an expiry last written as `written` has fallen far enough behind `deadline` to
    /// be written again: by at least [`SessionManagerBuilder::touch_after`]. A save `touch`es
    /// an unchanged session by this rule, and the HTTP layer re-sends a persistent cookie by
    /// it.
    pub fn refresh_due(&self, written: Timestamp, deadline: Timestamp) -> bool {
        refresh_due(self.inner.touch_after, written, deadline)
    }

    /// [`SessionManager::refresh_due`] for `session`, whose own expiry (see
    /// [`SessionExpiry`]) may call for a shorter `touch_after`: what the HTTP layers re-send
    /// a persistent cookie by.
    pub fn refresh_due_for(
        &self,
        session: &Session,
        written: Timestamp,
        deadline: Timestamp,
    ) -> bool {
        let touch_after = SessionExpiry::touch_after(session.own_expiry(), self.inner.touch_after);
        refresh_due(touch_after, written, deadline)
    }

    /// The manager's clock's time.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// A new, empty session with a fresh id. Nothing is written until it holds data and is
    /// saved, so visitors who never store anything cost the store nothing.
    pub fn create(&self) -> Session {
        let now = self.now();
        Session::new(
            self.inner.codec,
            self.inner.ids.generate(),
            now,
            self.inner.expiry.deadline(now, now),
        )
    }

    /// The live session with this id, or `None` when there is none (or it has expired).
    ///
    /// # Errors
    /// [`SessionError::Store`] when the store fails or holds a damaged record.
    pub async fn load(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        Ok(match self.find(id).await? {
            Found::Live(session) => Some(session),
            Found::Expired | Found::Absent => None,
        })
    }

    /// [`SessionManager::load`] for a request that presented `id` with a signed expiry
    /// (`presented_expiry`, what the cookie or token carries): when the store has no record
    /// and that expiry has passed, the session is reported [`SessionEvent::Expired`] to the
    /// listener — expiry found on read, on every store, without the store's own
    /// notifications. (A record deleted after that expiry passed is reported so too.) The
    /// HTTP layers load through it.
    ///
    /// # Errors
    /// As [`SessionManager::load`].
    pub async fn load_presented(
        &self,
        id: &SessionId,
        presented_expiry: Timestamp,
    ) -> Result<Option<Session>, SessionError> {
        Ok(match self.find(id).await? {
            Found::Live(session) => Some(session),
            Found::Expired => None,
            Found::Absent => {
                if presented_expiry <= self.now() {
                    self.inner.listener.emit(|| SessionEvent::Expired {
                        key: id.storage_key(),
                    });
                }
                None
            }
        })
    }

    /// The session under `id`, or why there is none. A record past its expiry by this
    /// manager's clock and rules is reported [`SessionEvent::Expired`].
    async fn find(&self, id: &SessionId) -> Result<Found, SessionError> {
        let key = id.storage_key();
        let Some(record) = self.store_dyn().load_body(&key).await? else {
            return Ok(Found::Absent);
        };
        let now = self.now();
        let expiry =
            SessionExpiry::of(|k| record.reserved(k)).map_or(self.inner.expiry, |own| own.expiry);
        let past_lifetime = expiry
            .absolute
            .is_some_and(|lifetime| record.created_at().saturating_add(lifetime) <= now);
        if record.expires_at() <= now || past_lifetime {
            self.inner.listener.emit(|| SessionEvent::Expired { key });
            return Ok(Found::Expired);
        }
        Ok(Found::Live(Session::from_loaded(
            self.inner.codec,
            id.clone(),
            record,
        )))
    }

    /// The session a client's raw id names, or a new one when the id is missing, malformed
    /// or unknown. A malformed id never reaches the store, and an unknown id is never
    /// adopted (the new session gets a fresh id: no session fixation).
    ///
    /// # Errors
    /// [`SessionError::Store`] when the store fails.
    pub async fn load_or_create(&self, raw_id: Option<&str>) -> Result<Session, SessionError> {
        if let Some(Ok(id)) = raw_id.map(SessionId::parse)
            && let Some(session) = self.load(&id).await?
        {
            return Ok(session);
        }
        Ok(self.create())
    }

    /// The live sessions of `owner` (see [`Session::set_owner`]).
    ///
    /// # Errors
    /// [`SessionError::Store`] with [`StoreError::Unsupported`] when the store keeps no
    /// per-user index (memcached), or when the store fails.
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<crate::SessionInfo>, SessionError> {
        let now = self.now();
        let mut sessions = self.store_dyn().sessions_of(owner).await?;
        sessions.retain(|s| s.expires_at > now);
        Ok(sessions)
    }

    /// "Log out everywhere": ends every session of `owner`; returns how many records were
    /// removed.
    ///
    /// # Errors
    /// As [`SessionManager::sessions_of`].
    pub async fn destroy_all_of(&self, owner: &str) -> Result<u64, SessionError> {
        let sessions = self.store_dyn().delete_sessions_of(owner).await?;
        self.inner.listener.emit(|| SessionEvent::OwnerLoggedOut {
            owner: owner.to_owned(),
            sessions,
        });
        Ok(sessions)
    }

    /// The live sessions of `owner` with their devices (see [`crate::devices`]), most
    /// recently seen first: what an "active sessions" page lists. Each is loaded from the
    /// store (one load per session).
    ///
    /// # Errors
    /// As [`SessionManager::sessions_of`].
    pub async fn devices_of(&self, owner: &str) -> Result<Vec<DeviceSession>, SessionError> {
        let store = self.store_dyn();
        let now = self.now();
        let mut devices = Vec::new();
        for info in self.sessions_of(owner).await? {
            if let Some(record) = store.load(&info.key).await?
                && record.owner.as_deref() == Some(owner)
                && !record.is_expired_at(now)
            {
                devices.push(DeviceSession::of_record(&record));
            }
        }
        devices.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then(b.created_at.cmp(&a.created_at))
        });
        Ok(devices)
    }

    /// Ends **one** session of `owner`, named by the handle [`SessionManager::devices_of`]
    /// lists (its storage key, never the bearer id): `true` when it was `owner`'s and is now
    /// gone, `false` when there is no such live session of `owner` (a handle of another
    /// user's session ends nothing).
    ///
    /// # Errors
    /// [`SessionError::Store`] when the store fails.
    pub async fn end_session_of(
        &self,
        owner: &str,
        key: &StorageKey,
    ) -> Result<bool, SessionError> {
        let store = self.store_dyn();
        let Some(record) = store.load(key).await? else {
            return Ok(false);
        };
        if record.owner.as_deref() != Some(owner) {
            return Ok(false);
        }
        store.delete(key).await?;
        self.inner
            .listener
            .emit(|| SessionEvent::Destroyed { key: *key });
        Ok(true)
    }

    /// The cap on `owner`'s sessions for a login's write, when the manager has one.
    fn cap<'a>(&self, owner: &'a str, spare: Option<&'a StorageKey>) -> Option<OwnerCap<'a>> {
        self.inner.max_per_owner.map(|max| OwnerCap {
            owner,
            max,
            spare,
            now: self.now(),
        })
    }

    /// Tells the listener of the sessions a login's cap ended.
    fn ended(&self, ended: &[StorageKey]) {
        for key in ended {
            self.inner
                .listener
                .emit(|| SessionEvent::Destroyed { key: *key });
        }
    }

    /// Adds `by` to the counter under `key` ([`Session::increment`]) and saves the session
    /// now; returns the counter as the store wrote it: every addition saved before this one,
    /// other requests' included, so concurrent callers each get a different value.
    ///
    /// ```
    /// # use session_core::SessionManager;
    /// # async fn demo(manager: &SessionManager) -> Result<(), session_core::SessionError> {
    /// let session = manager.create();
    /// assert_eq!(manager.increment(&session, "visits", 1).await?, 1);
    ///
    /// // Another request adds 5 to the same session.
    /// let other = manager.load(&session.id()).await?.expect("saved");
    /// other.increment("visits", 5)?;
    /// manager.save(&other).await?;
    ///
    /// assert_eq!(manager.increment(&session, "visits", 1).await?, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Session::increment`] and [`SessionManager::save`]; on a save error the addition
    /// stays pending.
    pub async fn increment(
        &self,
        session: &Session,
        key: &str,
        by: i64,
    ) -> Result<i64, SessionError> {
        let local = session.increment(key, by)?;
        self.save(session).await?;
        Ok(session.get::<i64>(key)?.unwrap_or(local))
    }

    /// Ends the session now: deletes its record.
    ///
    /// # Errors
    /// [`SessionError::Store`] when the store fails.
    pub async fn destroy(&self, session: &Session) -> Result<SaveOutcome, SessionError> {
        session.destroy();
        self.save(session).await
    }

    /// Writes what the session's handle changed: nothing when nothing changed (or a `touch`
    /// once enough of the idle window has passed), the changed keys, a new record under a new
    /// id, or a deletion.
    ///
    /// On error nothing is lost from the handle: its changes stay pending for a retry.
    ///
    /// # Errors
    /// [`SessionError::Store`] when the store fails; [`StoreError::IdCollision`] inside it
    /// when several fresh ids in a row collided (a broken id generator).
    pub async fn save(&self, session: &Session) -> Result<SaveOutcome, SessionError> {
        let store = self.store_dyn();
        let rules = SaveRules {
            now: self.now(),
            expiry: self.inner.expiry,
            touch_after: self.inner.touch_after,
            ids: &*self.inner.ids,
        };
        loop {
            let plan = session.lock().plan(&rules);
            let outcome = match plan {
                SavePlan::DeleteStale(stale) => {
                    if let Err(e) = store.delete(&stale).await {
                        session.lock().delete_later(stale);
                        return Err(e.into());
                    }
                    if session.lock().take_destroyed(stale) {
                        self.inner
                            .listener
                            .emit(|| SessionEvent::Destroyed { key: stale });
                    }
                    continue;
                }
                SavePlan::Nothing(outcome) => Ok(outcome),
                SavePlan::Delete(key) => {
                    store.delete(&key).await?;
                    session.lock().on_deleted();
                    self.inner.listener.emit(|| SessionEvent::Destroyed { key });
                    Ok(SaveOutcome::Destroyed)
                }
                // Boxed: its state (a whole record) would otherwise triple the size of every
                // save's future, updates included, and of the futures that hold one.
                SavePlan::Create(new) => Box::pin(self.save_new(session, new)).await,
                SavePlan::Update {
                    key,
                    changes,
                    expires_at,
                } => {
                    // A login under a cap: the store ends the owner's oldest sessions with it.
                    let cap = match changes.owner() {
                        OwnerChange::Set(owner) => self.cap(owner, None),
                        _ => None,
                    };
                    let updated = match &cap {
                        None => store.update(&key, &changes, expires_at).await,
                        Some(cap) => {
                            let write = OwnedWrite::Update {
                                key: &key,
                                changes: &changes,
                                expires_at,
                            };
                            store.write_capped(write, cap).await.map(|done| {
                                self.ended(&done.ended);
                                done.written
                            })
                        }
                    };
                    let written = match updated {
                        Ok(true) => Ok(SaveOutcome::Updated),
                        // No record: gone, or cycled by another request (then follow it).
                        Ok(false) => match self.forward(&key, &changes, expires_at).await {
                            Ok(true) => Ok(SaveOutcome::Forwarded),
                            Ok(false) => Ok(SaveOutcome::Gone),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    };
                    {
                        let mut state = session.lock();
                        match written {
                            Ok(SaveOutcome::Updated) => state.on_updated(expires_at, &changes),
                            Ok(_) => state.on_gone(),
                            Err(_) => state.restore(changes),
                        }
                    }
                    written.map_err(SessionError::from)
                }
                SavePlan::Touch { key, expires_at } => {
                    let live = store.touch(&key, expires_at).await?;
                    let mut state = session.lock();
                    if live {
                        state.on_touched(expires_at);
                        Ok(SaveOutcome::Touched)
                    } else {
                        state.on_gone();
                        Ok(SaveOutcome::Gone)
                    }
                }
            };
            return outcome;
        }
    }

    /// An update that found no record under `key`: when another request cycled the id,
    /// follows the forward pointers and applies `changes` to the session's current record.
    /// `Ok(false)` when there is none (the session ended, or it was never cycled).
    async fn forward(
        &self,
        key: &StorageKey,
        changes: &Changes,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let store = self.store_dyn();
        let mut at = *key;
        for _ in 0..FORWARD_HOPS {
            let Some(next) = store.forwarded(&at).await? else {
                return Ok(false);
            };
            if store.update(&next, changes, expires_at).await? {
                return Ok(true);
            }
            at = next;
        }
        Ok(false)
    }

    async fn save_new(
        &self,
        session: &Session,
        NewRecord {
            mut id,
            mut record,
            cycled_from,
        }: NewRecord,
    ) -> Result<SaveOutcome, SessionError> {
        let store = self.store_dyn();
        let spare = cycled_from.as_ref().map(|(old, _)| *old);
        let mut attempt = 1;
        loop {
            // A login under a cap: the store ends the owner's oldest sessions with it.
            let created = match record
                .owner
                .as_deref()
                .and_then(|o| self.cap(o, spare.as_ref()))
            {
                None => store.create(&record).await,
                Some(cap) => store
                    .write_capped(OwnedWrite::Create(&record), &cap)
                    .await
                    .map(|done| self.ended(&done.ended)),
            };
            match created {
                Ok(()) => break,
                Err(StoreError::IdCollision) if attempt < CREATE_ATTEMPTS => {
                    attempt += 1;
                    id = self.inner.ids.generate();
                    record.key = id.storage_key();
                }
                Err(e) => return Err(e.into()),
            }
        }
        session.lock().on_created(id, &record);
        let Some((old, mine)) = cycled_from else {
            self.inner.listener.emit(|| SessionEvent::Created {
                key: record.key,
                owner: record.owner.clone(),
            });
            return Ok(SaveOutcome::Created);
        };
        self.inner.listener.emit(|| SessionEvent::IdCycled {
            from: old,
            to: record.key,
            owner: record.owner.clone(),
        });
        let retired = self.retire(&old, &record, &mine).await;
        if let Err(e) = retired {
            // The new record is live; the old one goes at the next save.
            session.lock().delete_later(old);
            return Err(e.into());
        }
        Ok(SaveOutcome::Cycled)
    }
}

impl SessionManager {
    /// Ends the old record of a cycled session whose data `record` now holds under its new
    /// key. Within the grace period the old key becomes a forward pointer, and writes other
    /// requests made to it after this handle loaded it (between the snapshot and the
    /// pointer) are carried over, key by key, except on the keys this handle changed itself
    /// (`mine`), which it decides.
    async fn retire(
        &self,
        old: &StorageKey,
        record: &Record,
        mine: &Changes,
    ) -> Result<(), StoreError> {
        let store = self.store_dyn();
        if self.inner.cycle_grace.is_zero() {
            return store.delete(old).await;
        }
        let until = self.now().saturating_add(self.inner.cycle_grace);
        let Some(last) = store.retire(old, &record.key, until).await? else {
            return Ok(());
        };
        let missed = missed_writes(&record.data, &last.data, mine);
        if !missed.is_empty() {
            // The new record may have ended meanwhile (a logout): then nothing is written.
            store
                .update(&record.key, &missed, record.expires_at)
                .await?;
        }
        Ok(())
    }
}

/// The store as the manager calls it. Without the `metrics` feature each call is the
/// store's own future, unchanged; with it, [`crate::metrics`] counts and times it.
#[derive(Clone, Copy)]
struct Metered<'a>(&'a dyn SessionStore);

macro_rules! metered {
    ($($op:ident $name:literal ($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl<'a> Metered<'a> {
            $(
                #[allow(clippy::let_and_return)]
                fn $op<'b>(self, $($arg: $ty),*) -> impl Future<Output = Result<$out, StoreError>> + Send + 'b
                where
                    'a: 'b,
                {
                    let call = self.0.$op($($arg),*);
                    #[cfg(feature = "metrics")]
                    let call = crate::metrics::store_call($name, call);
                    call
                }
            )*
        }
    };
}

metered! {
    // Counted as `load`: it is the store's read of a session, whichever form it answers in.
    load "load" (key: &'b StorageKey) -> Option<Record>;
    load_body "load" (key: &'b StorageKey) -> Option<Loaded>;
    create "create" (record: &'b Record) -> ();
    update "update" (key: &'b StorageKey, changes: &'b Changes, expires_at: Timestamp) -> bool;
    touch "touch" (key: &'b StorageKey, expires_at: Timestamp) -> bool;
    delete "delete" (key: &'b StorageKey) -> ();
    retire "retire" (key: &'b StorageKey, to: &'b StorageKey, until: Timestamp) -> Option<Record>;
    forwarded "forwarded" (key: &'b StorageKey) -> Option<StorageKey>;
    sessions_of "sessions_of" (owner: &'b str) -> Vec<crate::SessionInfo>;
    write_capped "write_capped" (write: OwnedWrite<'b>, cap: &'b OwnerCap<'b>) -> crate::CappedWrite;
    delete_sessions_of "delete_sessions_of" (owner: &'b str) -> u64;
}

/// What other requests wrote to a cycled session's old record after this handle loaded it:
/// the keys where the old record's last state differs from this handle's snapshot, leaving
/// out the keys this handle changed itself (and everything, when it cleared the session).
fn missed_writes(
    snapshot: &BTreeMap<String, Vec<u8>>,
    last: &BTreeMap<String, Vec<u8>>,
    mine: &Changes,
) -> Changes {
    let mut missed = Changes::new();
    if mine.is_cleared() {
        return missed;
    }
    let own = |key: &str| mine.written().contains_key(key) || mine.removed().contains(key);
    for (key, value) in last {
        if own(key) {
            continue;
        }
        if let Some(inc) = mine.incremented().get(key) {
            // The new record holds what this handle loaded plus its own additions; what
            // other requests added to the old record since goes on top.
            let delta = counter_delta(inc.codec(), snapshot.get(key), value, inc.by());
            if delta != 0 {
                missed.increment(key.clone(), delta, inc.codec());
            }
        } else if snapshot.get(key) != Some(value) {
            missed.set(key.clone(), value.clone());
        }
    }
    for key in snapshot.keys() {
        if !own(key) && !last.contains_key(key) {
            missed.remove(key);
        }
    }
    missed
}

/// What other requests added to a counter of the old record: its last value `after` less
/// the value this handle loaded, which is the new record's value `with_mine` less this
/// handle's own additions `mine` (a value that is no counter reads as 0).
fn counter_delta(codec: Codec, with_mine: Option<&Vec<u8>>, after: &[u8], mine: i64) -> i64 {
    let read = |bytes: &[u8]| codec.decode_counter(bytes).unwrap_or(0);
    let loaded = with_mine.map_or(0, |b| read(b)).saturating_sub(mine);
    read(after).saturating_sub(loaded)
}

/// What [`SessionManager::find`] found under an id.
enum Found {
    Live(Session),
    /// A record past its expiry (told to the listener).
    Expired,
    Absent,
}
