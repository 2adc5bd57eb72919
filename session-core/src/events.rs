//! Lifecycle events: what happened to sessions, told to the application's listener
//! ([`SessionManagerBuilder::listener`](crate::SessionManagerBuilder::listener)).
//!
//! A listener is called synchronously, on the request's task, right after the store call
//! that made the event happen; it must return quickly and never wait on I/O of its own —
//! send the event to a channel or spawn a task for that. A listener that panics is logged
//! and ignored: the request goes on as if it had not been called.
//!
//! Expiry is found on read, never through a store's own notifications (Redis keyspace
//! events do not reach a client on Redis Cluster): [`SessionEvent::Expired`] is told when a
//! request presents a session whose time is up — the record is past its expiry, or gone
//! while the signed expiry the client presented had passed (see
//! [`SessionManager::load_presented`](crate::SessionManager::load_presented)).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::id::StorageKey;

/// What happened to a session. Sessions are named by their storage key (the hashed id,
/// what the per-user index and the `sessions` command show), never by the bearer id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A new session was written for the first time.
    Created {
        /// Its key.
        key: StorageKey,
        /// Its owner, when it has one.
        owner: Option<String>,
    },
    /// A session's id was cycled ([`Session::cycle_id`](crate::Session::cycle_id), at
    /// login): its data now lives under `to`.
    IdCycled {
        /// The old key.
        from: StorageKey,
        /// The new key.
        to: StorageKey,
        /// Its owner after the cycle, when it has one.
        owner: Option<String>,
    },
    /// A session was destroyed ([`Session::destroy`](crate::Session::destroy), logout).
    Destroyed {
        /// Its key.
        key: StorageKey,
    },
    /// Every session of a user was ended
    /// ([`SessionManager::destroy_all_of`](crate::SessionManager::destroy_all_of)).
    OwnerLoggedOut {
        /// The user.
        owner: String,
        /// How many sessions ended.
        sessions: u64,
    },
    /// A request presented a session whose time was up.
    Expired {
        /// Its key.
        key: StorageKey,
    },
}

/// Receives [`SessionEvent`]s. Any `Fn(&SessionEvent) + Send + Sync + 'static` is one.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use session_core::{SessionEvent, SessionManager, SessionStore};
///
/// # async fn demo(store: impl SessionStore) {
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let manager = SessionManager::builder(store)
///     .listener(move |event: &SessionEvent| log.lock().unwrap().push(event.clone()))
///     .build();
/// let session = manager.create();
/// session.insert("user", "alice").unwrap();
/// manager.save(&session).await.unwrap();
/// manager.destroy(&session).await.unwrap();
/// assert!(matches!(seen.lock().unwrap()[..], [
///     SessionEvent::Created { .. },
///     SessionEvent::Destroyed { .. },
/// ]));
/// # }
/// ```
pub trait SessionListener: Send + Sync + 'static {
    /// Called once per event; see the [module docs](crate::events) for what it may do.
    fn on_event(&self, event: &SessionEvent);
}

impl<F: Fn(&SessionEvent) + Send + Sync + 'static> SessionListener for F {
    fn on_event(&self, event: &SessionEvent) {
        self(event);
    }
}

/// The manager's listener, if any.
#[derive(Clone, Default)]
pub(crate) struct Listener(Option<Arc<dyn SessionListener>>);

impl Listener {
    pub(crate) fn new(listener: Arc<dyn SessionListener>) -> Self {
        Self(Some(listener))
    }

    /// Tells the listener the event `make` builds (built only when there is a listener).
    pub(crate) fn emit(&self, make: impl FnOnce() -> SessionEvent) {
        let Some(listener) = &self.0 else {
            return;
        };
        let event = make();
        if catch_unwind(AssertUnwindSafe(|| listener.on_event(&event))).is_err() {
            tracing::error!(?event, "the session event listener panicked; ignored");
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
