//! Reading and writing the signed session cookie.

use std::time::Duration;

use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{COOKIE, HeaderMap, HeaderValue};
use session_core::SessionId;

/// A `Cookie` header longer than this is ignored whole (browsers send at most ~4 KiB a
/// cookie; a larger header is not ours to parse).
const MAX_HEADER_LEN: usize = 8 * 1024;
/// The longest signed value accepted: 44 characters of signature plus the longest id.
const MAX_VALUE_LEN: usize = 44 + session_core::MAX_ID_LEN;

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
        }
    }
}

/// The signing keys: the first signs, every one verifies (key rotation).
#[derive(Clone)]
pub(crate) struct Keys(pub(crate) Vec<Key>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(<{} redacted>)", self.0.len())
    }
}

impl CookieConfig {
    /// The session id in the request's cookie, when there is one that is well-formed,
    /// correctly signed by one of `keys`, and a valid id. Anything else is `None`: a fresh
    /// session, with no store lookup.
    pub(crate) fn read_id(&self, headers: &HeaderMap, keys: &Keys) -> Option<SessionId> {
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            if text.len() > MAX_HEADER_LEN {
                continue;
            }
            for cookie in Cookie::split_parse(text).flatten() {
                if cookie.name() != self.name || cookie.value().len() > MAX_VALUE_LEN {
                    continue;
                }
                let cookie = cookie.into_owned();
                let verified = keys
                    .0
                    .iter()
                    .find_map(|key| CookieJar::new().signed(key).verify(cookie.clone()));
                if let Some(id) = verified.and_then(|c| SessionId::parse(c.value()).ok()) {
                    return Some(id);
                }
            }
        }
        None
    }

    fn base(&self, value: String) -> Cookie<'static> {
        let mut cookie = Cookie::new(self.name.clone(), value);
        cookie.set_path(self.path.clone());
        if let Some(domain) = &self.domain {
            cookie.set_domain(domain.clone());
        }
        cookie.set_secure(self.secure);
        cookie.set_http_only(self.http_only);
        cookie.set_same_site(self.same_site);
        cookie
    }

    /// `Set-Cookie` carrying `id`, signed with the first key; with `Max-Age` when the cookie
    /// is persistent.
    pub(crate) fn set_cookie(
        &self,
        id: &SessionId,
        keys: &Keys,
        max_age: Duration,
    ) -> Option<HeaderValue> {
        let mut cookie = self.base(id.as_str().to_owned());
        if self.persistent {
            let secs = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            cookie.set_max_age(cookie::time::Duration::seconds(secs));
        }
        let mut jar = CookieJar::new();
        jar.signed_mut(keys.0.first()?).add(cookie);
        let signed = jar.get(&self.name)?;
        HeaderValue::from_str(&signed.to_string()).ok()
    }

    /// `Set-Cookie` that makes the browser forget the cookie.
    pub(crate) fn removal(&self) -> Option<HeaderValue> {
        let mut cookie = self.base(String::new());
        cookie.make_removal();
        HeaderValue::from_str(&cookie.to_string()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::{IdGenerator, UuidV4Generator};

    fn header_for(value: &HeaderValue) -> HeaderMap {
        let pair = value
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&pair).unwrap());
        headers
    }

    #[test]
    fn a_signed_cookie_round_trips_and_tampering_is_rejected() {
        let config = CookieConfig::default();
        let keys = Keys(vec![Key::generate()]);
        let id = UuidV4Generator.generate();
        let set = config
            .set_cookie(&id, &keys, Duration::from_secs(60))
            .unwrap();
        let text = set.to_str().unwrap();
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(text.contains(attr), "{text} lacks {attr}");
        }
        assert_eq!(config.read_id(&header_for(&set), &keys), Some(id.clone()));

        // Flip one character of the id part: the signature no longer matches.
        let pair = text.split(';').next().unwrap();
        let mut bytes = pair.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
        assert_eq!(config.read_id(&headers, &keys), None);

        // Another key's signature is rejected; rotation accepts an old key.
        let other = Keys(vec![Key::generate()]);
        assert_eq!(config.read_id(&header_for(&set), &other), None);
        let rotated = Keys(vec![Key::generate(), keys.0[0].clone()]);
        assert_eq!(config.read_id(&header_for(&set), &rotated), Some(id));
    }

    #[test]
    fn hostile_headers_are_ignored() {
        let config = CookieConfig::default();
        let keys = Keys(vec![Key::generate()]);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"id=".to_vec(),
            b"id".to_vec(),
            b";;;==;".to_vec(),
            format!("id={}", "A".repeat(10 * 1024)).into_bytes(),
            b"id=\xff\xfe\xfd".to_vec(),
            b"id=../../etc/passwd".to_vec(),
            b"id=AAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        ];
        for bytes in cases {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.insert(COOKIE, value);
            }
            assert_eq!(config.read_id(&headers, &keys), None, "{bytes:?}");
        }
    }

    #[test]
    fn a_valid_signature_over_an_invalid_id_is_rejected() {
        let config = CookieConfig::default();
        let keys = Keys(vec![Key::generate()]);
        let mut jar = CookieJar::new();
        jar.signed_mut(&keys.0[0])
            .add(Cookie::new("id", "../../x y"));
        let signed = jar.get("id").unwrap().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&signed).unwrap());
        assert_eq!(config.read_id(&headers, &keys), None);
    }
}
