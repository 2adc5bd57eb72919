//! Reading and writing the signed session cookie.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Key, SameSite};
use hmac::{Hmac, Mac as _};
use session_core::{SessionId, Timestamp};
use sha2::Sha256;

/// base64url (no padding) of a 32-byte HMAC-SHA256 tag.
const TAG_LEN: usize = 43;
/// The longest signed value accepted: the longest id, the expiry (at most 20 characters for
/// an `i64`), the tag and two dots.
const MAX_VALUE_LEN: usize = session_core::MAX_ID_LEN + 1 + 20 + 1 + TAG_LEN;

/// Signs and verifies session cookie values.
///
/// A value is `<id>.<expires>.<tag>`: the session id, the Unix second at which the cookie
/// was told to expire, and the base64url HMAC-SHA256, under the [`Key`]'s signing half, of
/// the cookie's name, `=`, and everything before the last dot. The name is signed too, so a
/// value cannot move to another cookie signed with the same key. The expiry lets the layer
/// refresh a persistent cookie only when it has fallen behind the session's expiry, instead
/// of re-signing and re-sending it on every response.
///
/// Each key is turned into a keyed HMAC state once; signing and verifying clone that state,
/// so the key is not hashed again per request. The first key signs, every key verifies (key
/// rotation), and tags are compared in constant time.
///
/// ```
/// use session_core::{IdGenerator, Timestamp, UuidV4Generator};
/// use session_http::{CookieSigner, Key};
///
/// let signer = CookieSigner::new(&Key::generate());
/// let id = UuidV4Generator.generate();
/// let expires = Timestamp::from_unix_millis(1_900_000_000_000);
/// let value = signer.sign("id", &id, expires);
/// assert_eq!(signer.verify("id", &value), Some((id, expires)));
/// assert_eq!(signer.verify("other", &value), None); // bound to the cookie's name
/// assert_eq!(CookieSigner::new(&Key::generate()).verify("id", &value), None);
/// ```
#[derive(Clone)]
pub struct CookieSigner {
    keys: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieSigner(<{} keys redacted>)", self.keys.len())
    }
}

fn keyed(key: &Key) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `Key::signing` is 32 bytes.
    <Hmac<Sha256> as hmac::Mac>::new_from_slice(key.signing())
        .expect("HMAC accepts every key length")
}

impl CookieSigner {
    /// A signer whose values are signed and verified with `key`.
    pub fn new(key: &Key) -> Self {
        Self {
            keys: vec![keyed(key)],
        }
    }

    /// Also verifies values signed with `key` (an old key, during rotation).
    pub fn accept(&mut self, key: &Key) {
        self.keys.push(keyed(key));
    }

    fn mac(&self, key: &Hmac<Sha256>, name: &str, signed: &str) -> Hmac<Sha256> {
        let mut mac = key.clone();
        mac.update(name.as_bytes());
        mac.update(b"=");
        mac.update(signed.as_bytes());
        mac
    }

    /// The value of cookie `name` carrying `id`, told to expire at `expires_at` (whole
    /// seconds are kept).
    pub fn sign(&self, name: &str, id: &SessionId, expires_at: Timestamp) -> String {
        let mut value = String::with_capacity(id.as_str().len() + 22 + TAG_LEN);
        let secs = expires_at.as_unix_millis().div_euclid(1000);
        let _ = write!(value, "{}.{secs}", id.as_str());
        let tag = self
            .mac(&self.keys[0], name, &value)
            .finalize()
            .into_bytes();
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut value);
        value
    }

    /// The id and expiry in `value`, when it is a value of cookie `name` signed by one of
    /// the keys and carries a valid id; `None` for anything else.
    pub fn verify(&self, name: &str, value: &str) -> Option<(SessionId, Timestamp)> {
        self.verify_with(name, value)
            .map(|(id, expires, _)| (id, expires))
    }

    /// [`CookieSigner::verify`], and whether the signing key was the current (first) one.
    pub(crate) fn verify_with(
        &self,
        name: &str,
        value: &str,
    ) -> Option<(SessionId, Timestamp, bool)> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let (signed, tag) = value.rsplit_once('.')?;
        let mut raw = [0u8; 32];
        if tag.len() != TAG_LEN || URL_SAFE_NO_PAD.decode_slice(tag, &mut raw).ok()? != 32 {
            return None;
        }
        let index = self
            .keys
            .iter()
            .position(|key| self.mac(key, name, signed).verify_slice(&raw).is_ok())?;
        let (id, secs) = signed.rsplit_once('.')?;
        let secs: i64 = secs.parse().ok()?;
        let id = SessionId::parse(id).ok()?;
        Some((
            id,
            Timestamp::from_unix_millis(secs.saturating_mul(1000)),
            index == 0,
        ))
    }
}

/// The cookie's attributes.
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) persistent: bool,
    pub(crate) partitioned: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "id".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: true,
            partitioned: false,
        }
    }
}

impl CookieConfig {
    /// The session id in the request's cookie, when there is one that is well-formed,
    /// correctly signed and a valid id, with the expiry the cookie carries and whether it was
    /// signed by the current key (an old key's cookie is signed again on the response).
    /// Anything else is `None`: a fresh session, with no store lookup.
    ///
    /// `headers` are the bytes of each of the request's `Cookie` headers.
    pub(crate) fn read_id<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a [u8]>,
        signer: &CookieSigner,
    ) -> Option<(SessionId, Timestamp, bool)> {
        // Other cookies in the header are not ours: however long they are, and whatever
        // bytes they hold, only our own pair is looked at (and its value bounded by
        // `verify_with`).
        for header in headers {
            let found = match std::str::from_utf8(header) {
                // The common case, text: split with the `str` searches.
                Ok(text) => text
                    .split(';')
                    .find_map(|pair| self.verify_pair(pair, signer)),
                // Another cookie holds other bytes: split the bytes, read only our pair.
                Err(_) => header
                    .split(|b| *b == b';')
                    .filter_map(|pair| std::str::from_utf8(pair).ok())
                    .find_map(|pair| self.verify_pair(pair, signer)),
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// The verified id of one `name=value` pair of a `Cookie` header, when it is ours.
    fn verify_pair(
        &self,
        pair: &str,
        signer: &CookieSigner,
    ) -> Option<(SessionId, Timestamp, bool)> {
        let (key, value) = pair.split_once('=')?;
        if key.trim() != self.name {
            return None;
        }
        signer.verify_with(&self.name, value.trim())
    }

    /// `Set-Cookie` carrying `id`, signed by the signer's first key; with `Max-Age` when
    /// `persistent` (the configuration's `persistent` setting, or the session's own expiry's).
    pub(crate) fn set_cookie(
        &self,
        id: &SessionId,
        signer: &CookieSigner,
        expires_at: Timestamp,
        now: Timestamp,
        persistent: bool,
    ) -> Option<String> {
        let mut header = String::with_capacity(160);
        let _ = write!(
            header,
            "{}={}",
            self.name,
            signer.sign(&self.name, id, expires_at)
        );
        if persistent {
            // Rounded up: a session that is still live never gets `Max-Age=0`, which would
            // make the browser drop the cookie at once.
            let max_age: Duration = expires_at.duration_since(now);
            let _ = write!(header, "; Max-Age={}", max_age.as_millis().div_ceil(1000));
        }
        self.attributes(&mut header);
        self.checked(header)
    }

    /// `header` when browsers would take it (see [`CookieConfig::refused_because`]) and it is
    /// a valid header value; else none, and an error in the log.
    fn checked(&self, header: String) -> Option<String> {
        if let Some(reason) = self.refused_because() {
            tracing::error!(cookie = %self.name, "{reason}: no session cookie sent");
            return None;
        }
        header_value(header)
    }

    fn attributes(&self, header: &mut String) {
        if self.http_only {
            header.push_str("; HttpOnly");
        }
        let _ = write!(header, "; SameSite={}", self.same_site);
        if self.secure {
            header.push_str("; Secure");
        }
        let _ = write!(header, "; Path={}", self.path);
        if let Some(domain) = &self.domain {
            let _ = write!(header, "; Domain={domain}");
        }
        if self.partitioned {
            header.push_str("; Partitioned");
        }
    }

    /// Why a browser would refuse this cookie, if it would: the `__Host-` and `__Secure-`
    /// name prefixes' rules, and `Partitioned` without `Secure`.
    pub(crate) fn refused_because(&self) -> Option<&'static str> {
        let host = self.name.starts_with("__Host-");
        if (host || self.name.starts_with("__Secure-")) && !self.secure {
            Some("a __Host- or __Secure- cookie must be Secure")
        } else if host && (self.path != "/" || self.domain.is_some()) {
            Some("a __Host- cookie must have Path=/ and no Domain")
        } else if self.partitioned && !self.secure {
            Some("a Partitioned cookie must be Secure")
        } else {
            None
        }
    }

    /// `Set-Cookie` that makes the browser forget the cookie: built like `set_cookie`, with
    /// an empty value, `Max-Age=0` and an `Expires` in the past for old browsers.
    pub(crate) fn removal(&self) -> Option<String> {
        let mut header = String::with_capacity(128);
        let _ = write!(
            header,
            "{}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            self.name
        );
        self.attributes(&mut header);
        self.checked(header)
    }
}

/// `header` when every byte may stand in a header value (visible ASCII, space and tab): a
/// cookie name, path or domain set to anything else gives no cookie, and an error in the log,
/// rather than a header the HTTP library would refuse (or panic on).
fn header_value(header: String) -> Option<String> {
    if header
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        Some(header)
    } else {
        tracing::error!(
            header = %header.escape_debug(),
            "the session cookie's settings make an invalid Set-Cookie header: no cookie sent"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cookie::Cookie;
    use session_core::{IdGenerator, UuidV4Generator};

    #[test]
    fn the_removal_carries_the_cookies_attributes_and_expires_it() {
        let config = CookieConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            ..CookieConfig::default()
        };
        let removal = config.removal().unwrap();
        let parsed = Cookie::parse(removal.as_str()).unwrap();
        assert_eq!(parsed.name(), "id");
        assert_eq!(parsed.value(), "");
        assert_eq!(parsed.max_age(), Some(cookie::time::Duration::ZERO));
        assert!(parsed.expires_datetime().unwrap().unix_timestamp() <= 0);
        assert_eq!(parsed.path(), Some("/app"));
        assert_eq!(parsed.domain(), Some("example.com"));
        assert_eq!(parsed.secure(), Some(true));
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.same_site(), Some(SameSite::Lax));
    }

    /// The `Cookie` header a browser sends back for `set_cookie`.
    fn header_for(set_cookie: &str) -> Vec<u8> {
        set_cookie.split(';').next().unwrap().as_bytes().to_vec()
    }

    fn read(
        config: &CookieConfig,
        header: &[u8],
        signer: &CookieSigner,
    ) -> Option<(SessionId, Timestamp, bool)> {
        config.read_id([header], signer)
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(secs * 1000)
    }

    #[test]
    fn a_signed_cookie_round_trips_and_tampering_is_rejected() {
        let config = CookieConfig::default();
        let key = Key::generate();
        let signer = CookieSigner::new(&key);
        let id = UuidV4Generator.generate();
        let set = config
            .set_cookie(&id, &signer, at(1_000_060), at(1_000_000), true)
            .unwrap();
        let text = set.as_str();
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(text.contains(attr), "{text} lacks {attr}");
        }
        let parsed = Cookie::parse(text).unwrap();
        assert_eq!(parsed.max_age(), Some(cookie::time::Duration::seconds(60)));
        assert_eq!(parsed.same_site(), Some(SameSite::Lax));
        assert_eq!(
            read(&config, &header_for(&set), &signer),
            Some((id.clone(), at(1_000_060), true))
        );

        // Every single-character change of the value is rejected.
        let pair = text.split(';').next().unwrap();
        for i in "id=".len()..pair.len() {
            let mut bytes = pair.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(read(&config, &bytes, &signer), None, "changed at {i}");
        }

        // Another key's signature is rejected; rotation accepts an old key.
        let other = CookieSigner::new(&Key::generate());
        assert_eq!(read(&config, &header_for(&set), &other), None);
        // Rotation accepts an old key, and says so (the cookie is re-signed).
        let mut rotated = CookieSigner::new(&Key::generate());
        rotated.accept(&key);
        assert_eq!(
            read(&config, &header_for(&set), &rotated),
            Some((id.clone(), at(1_000_060), false))
        );
        assert_eq!(
            rotated.verify("id", set.split(['=', ';']).nth(1).unwrap()),
            Some((id, at(1_000_060)))
        );
    }

    #[test]
    fn a_value_is_bound_to_its_cookie_name() {
        let signer = CookieSigner::new(&Key::generate());
        let id = UuidV4Generator.generate();
        let value = signer.sign("id", &id, at(5));
        let config = CookieConfig {
            name: "other".into(),
            ..CookieConfig::default()
        };
        let header = format!("other={value}");
        assert_eq!(read(&config, header.as_bytes(), &signer), None);
    }

    #[test]
    fn the_right_cookie_is_found_among_others() {
        let config = CookieConfig::default();
        let signer = CookieSigner::new(&Key::generate());
        let id = UuidV4Generator.generate();
        let value = signer.sign("id", &id, at(5));
        let second = format!("idx=1; id=forged; id = {value} ;x=y");
        let headers: [&[u8]; 2] = [b"theme=dark; lang=en", second.as_bytes()];
        assert_eq!(config.read_id(headers, &signer), Some((id, at(5), true)));
    }

    #[test]
    fn hostile_headers_are_ignored() {
        let config = CookieConfig::default();
        let signer = CookieSigner::new(&Key::generate());
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"id=".to_vec(),
            b"id".to_vec(),
            b";;;==;".to_vec(),
            b"id=..".to_vec(),
            b"id=a.b.c".to_vec(),
            format!("id={}", "A".repeat(10 * 1024)).into_bytes(),
            format!("id=AAAAAAAAAAAAAAAAAAAAAA.1.{}", "A".repeat(TAG_LEN)).into_bytes(),
            b"id=\xff\xfe\xfd".to_vec(),
            b"id=../../etc/passwd".to_vec(),
            b"id=AAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        ];
        for bytes in cases {
            assert_eq!(read(&config, &bytes, &signer), None, "{bytes:?}");
        }
    }

    #[test]
    fn a_valid_signature_over_an_invalid_id_or_expiry_is_rejected() {
        let signer = CookieSigner::new(&Key::generate());
        // Sign by hand what `sign` never produces.
        for signed in [
            "../../x y.5",
            "AAAAAAAAAAAAAAAAAAAAAA.soon",
            "AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let tag = signer
                .mac(&signer.keys[0], "id", signed)
                .finalize()
                .into_bytes();
            let value = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag));
            assert_eq!(signer.verify("id", &value), None, "{value}");
        }
    }

    #[test]
    fn settings_that_cannot_stand_in_a_header_give_no_cookie() {
        let signer = CookieSigner::new(&Key::generate());
        let id = UuidV4Generator.generate();
        for config in [
            CookieConfig {
                domain: Some("example.com\r\nX-Injected: 1".into()),
                ..CookieConfig::default()
            },
            CookieConfig {
                path: "/caf\u{e9}".into(),
                ..CookieConfig::default()
            },
        ] {
            assert_eq!(config.set_cookie(&id, &signer, at(60), at(0), true), None);
            assert_eq!(config.removal(), None);
        }
        let fine = CookieConfig::default().set_cookie(&id, &signer, at(60), at(0), true);
        assert!(fine.is_some_and(|header| header.starts_with("id=")));
    }

    #[test]
    fn prefixed_and_partitioned_cookies_follow_the_browsers_rules() {
        let signer = CookieSigner::new(&Key::generate());
        let id = UuidV4Generator.generate();
        let config = |name: &str, f: fn(&mut CookieConfig)| {
            let mut config = CookieConfig {
                name: name.into(),
                ..CookieConfig::default()
            };
            f(&mut config);
            config
        };
        let refused = [
            config("__Host-id", |c| c.secure = false),
            config("__Host-id", |c| c.path = "/app".into()),
            config("__Host-id", |c| c.domain = Some("example.com".into())),
            config("__Secure-id", |c| c.secure = false),
            config("id", |c| {
                c.partitioned = true;
                c.secure = false;
            }),
        ];
        for config in refused {
            assert!(config.refused_because().is_some(), "{config:?}");
            assert_eq!(config.set_cookie(&id, &signer, at(60), at(0), true), None);
            assert_eq!(config.removal(), None);
        }
        let host = config("__Host-id", |_| {}).set_cookie(&id, &signer, at(60), at(0), true);
        assert!(
            host.is_some_and(|h| h.starts_with("__Host-id=") && h.contains("; Secure; Path=/"))
        );
        let secure = config("__Secure-id", |c| c.path = "/app".into());
        assert!(
            secure
                .set_cookie(&id, &signer, at(60), at(0), true)
                .is_some()
        );
        let partitioned = config("id", |c| c.partitioned = true);
        let set = partitioned
            .set_cookie(&id, &signer, at(60), at(0), true)
            .unwrap();
        assert!(set.ends_with("; Partitioned"), "{set}");
        assert!(partitioned.removal().unwrap().ends_with("; Partitioned"));
        assert!(
            !CookieConfig::default()
                .removal()
                .unwrap()
                .contains("Partitioned")
        );
    }
}
