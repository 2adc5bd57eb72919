//! What an "active sessions" page shows: each session's device (user agent, IP) and when it
//! was last seen, stored with the session; see [`Session::set_client`],
//! [`SessionManager::devices_of`](crate::SessionManager::devices_of) and
//! [`SessionManager::end_session_of`](crate::SessionManager::end_session_of).
//!
//! **Privacy.** A user agent and an IP address are personal data in many jurisdictions
//! (the GDPR among them). Nothing is recorded unless the application calls
//! [`Session::set_client`] or turns recording on in the HTTP layer; keep only what the page
//! needs, say so in the privacy notice, and they go with the session when it ends.

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::id::StorageKey;
use crate::record::Record;
use crate::session::Session;
use crate::time::Timestamp;

/// The reserved data key the device record is stored under.
pub(crate) const DEVICE_KEY: &str = "\u{0}session:device";

/// A session's device record, as stored (bincode, whatever the manager's codec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    pub(crate) last_seen_ms: Option<i64>,
    pub(crate) user_agent: Option<String>,
    pub(crate) ip: Option<String>,
}

impl DeviceRecord {
    /// The device record stored in a record's data, given how to read its reserved keys.
    pub(crate) fn of<'a>(reserved: impl FnOnce(&str) -> Option<&'a [u8]>) -> Option<Self> {
        reserved(DEVICE_KEY).and_then(|bytes| Codec::Bincode.decode(bytes).ok())
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        Codec::Bincode.encode(self).unwrap_or_default()
    }
}

/// One session of a user, as [`SessionManager::devices_of`](crate::SessionManager::devices_of)
/// lists it: its handle (the storage key, never the bearer id), its times and its device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceSession {
    /// The handle to end this session by
    /// ([`SessionManager::end_session_of`](crate::SessionManager::end_session_of)); its
    /// hex form ([`StorageKey::to_hex`]) is what a page puts in a form.
    pub key: StorageKey,
    /// When it was created (signed in, for a session that logged in at creation).
    pub created_at: Timestamp,
    /// When it expires unless used again.
    pub expires_at: Timestamp,
    /// When a request last used it, to within the manager's `touch_after`; `None` when no
    /// device is recorded for it.
    pub last_seen: Option<Timestamp>,
    /// The `User-Agent` it was last used with, when recorded.
    pub user_agent: Option<String>,
    /// The client IP it was last used from, when recorded.
    pub ip: Option<String>,
}

impl DeviceSession {
    /// The device session a record holds (its device fields `None` when none is recorded).
    pub fn of_record(record: &Record) -> Self {
        let device =
            DeviceRecord::of(|k| crate::session::reserved(&record.data, k)).unwrap_or_default();
        Self {
            key: record.key,
            created_at: record.created_at,
            expires_at: record.expires_at,
            last_seen: device.last_seen_ms.map(Timestamp::from_unix_millis),
            user_agent: device.user_agent,
            ip: device.ip,
        }
    }
}

impl Session {
    /// Records the device this request comes from: its `User-Agent` and IP (either may be
    /// `None`), and from now on when the session was last seen, kept current to within the
    /// manager's `touch_after` by the saves that happen anyway (never a write per request).
    /// Nothing is written when the values are the ones already recorded, nor for a new
    /// session that holds no data (an anonymous visitor costs no write). See the
    /// [privacy note](crate::devices).
    ///
    /// ```
    /// # use session_core::SessionManager;
    /// # fn demo(manager: &SessionManager) {
    /// let session = manager.create();
    /// session.insert("user", "alice").unwrap();
    /// session.set_client(Some("Mozilla/5.0 (X11; Linux x86_64)"), Some("203.0.113.7"));
    /// # }
    /// ```
    pub fn set_client(&self, user_agent: Option<&str>, ip: Option<&str>) {
        let mut state = self.lock();
        if !state.is_stored() && state.user_keys() == 0 {
            return;
        }
        let mut device = DeviceRecord::of(|k| state.reserved(k)).unwrap_or_default();
        if device.user_agent.as_deref() == user_agent
            && device.ip.as_deref() == ip
            && device.last_seen_ms.is_some()
        {
            return;
        }
        device.user_agent = user_agent.map(str::to_owned);
        device.ip = ip.map(str::to_owned);
        // Seen now: set by the save (see `State::plan`), which knows the manager's clock.
        device.last_seen_ms = None;
        state.put_reserved(DEVICE_KEY, device.encode());
    }
}
