//! Splitting a store URL into its parts, reading its query options, and redacting it.

use std::time::Duration;

use session_core::{BoxError, StoreError};

/// A problem with a store URL, naming the URL with any password replaced by `***`.
///
/// It is the source of the [`StoreError`] that [`open`](crate::open) returns:
/// `StoreError::Config` for a URL that is wrong, or the store's own `Unavailable` /
/// `Backend` when the store behind a good URL failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {source}")]
pub struct UrlError {
    url: String,
    #[source]
    source: BoxError,
}

impl UrlError {
    pub(crate) fn new(url: &str, source: impl Into<BoxError>) -> Self {
        Self {
            url: redact(url),
            source: source.into(),
        }
    }

    /// The URL, with any password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `url` with the password of its user information replaced by `***`, for logs and
/// error messages: `redis://:secret@host:6379` → `redis://:***@host:6379`.
///
/// Everything between the scheme and the last `@` counts as user information, so a
/// password holding an unescaped `/`, `?` or `@` is hidden whole too.
///
/// ```
/// assert_eq!(
///     session_any::redact("mongodb://app:s3cr%40t@db1:27017,db2:27017/?w=majority"),
///     "mongodb://app:***@db1:27017,db2:27017/?w=majority"
/// );
/// assert_eq!(session_any::redact("redis://127.0.0.1:6379/2"), "redis://127.0.0.1:6379/2");
/// ```
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, after) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{after}"),
        None => url.to_owned(),
    }
}

/// A store URL taken apart: `scheme://[userinfo@]authority[path][?query]`.
#[derive(Debug)]
pub(crate) struct StoreUrl<'a> {
    pub(crate) raw: &'a str,
    /// Lower-cased.
    pub(crate) scheme: String,
    pub(crate) userinfo: Option<&'a str>,
    /// Host(s) and port(s), as written.
    pub(crate) authority: &'a str,
    /// Empty or starting with `/`, as written (not decoded).
    pub(crate) path: &'a str,
    pub(crate) query: Query<'a>,
}

impl<'a> StoreUrl<'a> {
    pub(crate) fn parse(raw: &'a str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::config("session-any", UrlError::new(raw, why.to_owned()));
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(bad(
                "not a store URL: expected scheme://…, such as memory:// or redis://host:6379",
            ));
        };
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return Err(bad("the scheme is malformed"));
        }
        if rest.contains('#') {
            return Err(bad("a store URL takes no #fragment"));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, query),
            None => (rest, ""),
        };
        let (authority, path) = match before_query.find('/') {
            Some(slash) => before_query.split_at(slash),
            None => (before_query, ""),
        };
        let (userinfo, authority) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        if raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("the URL holds spaces or control characters"));
        }
        Ok(Self {
            raw,
            scheme: scheme.to_ascii_lowercase(),
            userinfo,
            authority,
            path,
            query: Query::parse(raw, query)?,
        })
    }

    /// A [`StoreError::Config`] for `store` naming this URL (redacted) and `why`.
    pub(crate) fn error(&self, store: &'static str, why: impl Into<BoxError>) -> StoreError {
        StoreError::config(store, UrlError::new(self.raw, why))
    }

    /// The hosts of the authority, split at commas; an error when there is none or one is
    /// empty.
    pub(crate) fn hosts(&self, store: &'static str) -> Result<Vec<&'a str>, StoreError> {
        let hosts: Vec<&str> = self.authority.split(',').collect();
        if hosts.iter().any(|h| h.is_empty()) {
            return Err(self.error(store, "expected host:port[,host:port…] after ://"));
        }
        Ok(hosts)
    }

    /// `userinfo@` as written, or nothing.
    pub(crate) fn userinfo_at(&self) -> String {
        self.userinfo.map(|u| format!("{u}@")).unwrap_or_default()
    }

    /// Fails unless the path is empty or `/`.
    pub(crate) fn no_path(&self, store: &'static str) -> Result<(), StoreError> {
        if self.path.is_empty() || self.path == "/" {
            Ok(())
        } else {
            Err(self.error(store, format!("unexpected path {:?}", self.path)))
        }
    }

    /// Fails when the URL has user information (a store that takes no credentials).
    pub(crate) fn no_userinfo(&self, store: &'static str) -> Result<(), StoreError> {
        match self.userinfo {
            None => Ok(()),
            Some(_) => Err(self.error(store, "this store takes no user or password")),
        }
    }
}

/// The query's `name=value` pairs, taken one by one by the store that reads them.
#[derive(Debug)]
pub(crate) struct Query<'a> {
    raw: &'a str,
    pairs: Vec<Pair<'a>>,
}

#[derive(Debug)]
struct Pair<'a> {
    /// Decoded.
    name: String,
    /// Decoded.
    value: String,
    /// `name=value` as written.
    written: &'a str,
    taken: bool,
}

impl<'a> Query<'a> {
    fn parse(raw: &'a str, query: &'a str) -> Result<Self, StoreError> {
        let mut pairs = Vec::new();
        for written in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = written.split_once('=').unwrap_or((written, ""));
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| {
                    StoreError::config(
                        "session-any",
                        UrlError::new(raw, format!("option {written:?} is not valid %-encoding")),
                    )
                })
            };
            pairs.push(Pair {
                name: decode(name)?,
                value: decode(value)?,
                written,
                taken: false,
            });
        }
        Ok(Self { raw, pairs })
    }

    fn error(&self, store: &'static str, why: String) -> StoreError {
        StoreError::config(store, UrlError::new(self.raw, why))
    }

    /// The value of option `name`, marking it read; an error when it is given twice.
    pub(crate) fn take(
        &mut self,
        store: &'static str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut found = None;
        let mut twice = false;
        for pair in self.pairs.iter_mut().filter(|p| p.name == name) {
            twice |= found.is_some();
            pair.taken = true;
            found = Some(pair.value.clone());
        }
        if twice {
            let why = format!("option {name:?} is given twice");
            return Err(StoreError::config(store, UrlError::new(self.raw, why)));
        }
        Ok(found)
    }

    /// Option `name` parsed by `parse`, whose error says what was expected.
    pub(crate) fn parsed<T>(
        &mut self,
        store: &'static str,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        match self.take(store, name)? {
            None => Ok(None),
            Some(value) => parse(&value).map(Some).map_err(|expected| {
                self.error(
                    store,
                    format!("option {name}={value:?}: expected {expected}"),
                )
            }),
        }
    }

    pub(crate) fn duration(
        &mut self,
        store: &'static str,
        name: &str,
    ) -> Result<Option<Duration>, StoreError> {
        self.parsed(store, name, parse_duration)
    }

    pub(crate) fn number<T: std::str::FromStr>(
        &mut self,
        store: &'static str,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.parsed(store, name, |v| {
            v.parse().map_err(|_| "a whole number in range".to_owned())
        })
    }

    pub(crate) fn boolean(
        &mut self,
        store: &'static str,
        name: &str,
    ) -> Result<Option<bool>, StoreError> {
        self.parsed(store, name, |v| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("true or false".to_owned()),
        })
    }

    /// Fails on any option not taken, listing the ones `store` knows.
    pub(crate) fn finish(&self, store: &'static str, known: &[&str]) -> Result<(), StoreError> {
        match self.pairs.iter().find(|p| !p.taken) {
            None => Ok(()),
            Some(p) => Err(self.error(
                store,
                format!(
                    "unknown option {:?} for {store}; known: {}",
                    p.name,
                    known.join(", ")
                ),
            )),
        }
    }

    /// The options not taken, as written, joined by `&` (for a driver that reads its own).
    pub(crate) fn rest(&self) -> String {
        let rest: Vec<&str> = self
            .pairs
            .iter()
            .filter(|p| !p.taken)
            .map(|p| p.written)
            .collect();
        rest.join("&")
    }
}

/// `%XX` decoding (and `+` as a space, as in HTML forms); `None` for a malformed escape or
/// bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `500ms`, `2s`, `1m`, `1h`: a whole number and a unit.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let expected = || "a duration such as 500ms, 2s, 1m or 1h".to_owned();
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let n: u64 = number.parse().map_err(|_| expected())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(expected)
}

/// `1048576`, `512k`, `1m`: bytes, or KiB / MiB.
pub(crate) fn parse_size(value: &str) -> Result<usize, String> {
    let expected = || "a size in bytes such as 1048576, 512k or 1m".to_owned();
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    let n: usize = number.parse().map_err(|_| expected())?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1024,
        "m" => 1024 * 1024,
        _ => return Err(expected()),
    };
    n.checked_mul(factor).ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        for (url, shown) in [
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("redis://user:pw@h:1", "redis://user:***@h:1"),
            ("redis://user@h:1", "redis://user@h:1"),
            (
                "rediss+cluster://u:p@a:1,b:2",
                "rediss+cluster://u:***@a:1,b:2",
            ),
            ("mongodb://u:p/w?d@h/?w=1", "mongodb://u:***@h/?w=1"),
            ("memory://", "memory://"),
            ("no scheme", "no scheme"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn urls_split_into_their_parts() {
        let u = StoreUrl::parse("Redis://u:p@h1:1,h2:2/3?key_prefix=a%3Ab&x=").unwrap();
        assert_eq!(u.scheme, "redis");
        assert_eq!(u.userinfo, Some("u:p"));
        assert_eq!(u.authority, "h1:1,h2:2");
        assert_eq!(u.path, "/3");
        let mut q = u.query;
        assert_eq!(q.take("t", "key_prefix").unwrap().as_deref(), Some("a:b"));
        assert_eq!(q.rest(), "x=");
        let file = StoreUrl::parse("file:///var/lib/s%20x?fsync=never").unwrap();
        assert_eq!((file.authority, file.path), ("", "/var/lib/s%20x"));
    }

    #[test]
    fn bad_urls_are_config_errors_naming_the_redacted_url() {
        for (url, says) in [
            ("redis:/h", "not a store URL"),
            ("://h", "scheme is malformed"),
            ("redis://:pw@h/#x", "no #fragment"),
            ("redis://:pw@h/?a=%zz", "not valid %-encoding"),
            ("redis://:pw@h /", "spaces or control"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StoreError::Config { .. }), "{url}: {err:?}");
            assert!(text.contains(says), "{url}: {text}");
            assert!(!text.contains("pw"), "{url}: the password shows in {text}");
        }
    }

    #[test]
    fn options_are_typed_and_checked() {
        let mut q = StoreUrl::parse("redis://h/?a=2s&b=10&c=true&d=x&d=y&e=1m")
            .unwrap()
            .query;
        assert_eq!(q.duration("t", "a").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(q.number::<u8>("t", "b").unwrap(), Some(10));
        assert_eq!(q.boolean("t", "c").unwrap(), Some(true));
        assert!(q.take("t", "d").unwrap_err().to_string().contains("twice"));
        assert_eq!(q.parsed("t", "e", parse_size).unwrap(), Some(1 << 20));
        assert_eq!(q.take("t", "missing").unwrap(), None);
        q.finish("t", &["a"]).unwrap();

        let mut q = StoreUrl::parse("redis://h/?a=5&zz=1").unwrap().query;
        let err = q.duration("t", "a").unwrap_err().to_string();
        assert!(err.contains("option a=\"5\": expected a duration"), "{err}");
        let err = q.finish("t", &["a", "b"]).unwrap_err().to_string();
        assert!(
            err.contains("unknown option \"zz\" for t; known: a, b"),
            "{err}"
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5", "s", "1.5s", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("1g").is_err());
        assert_eq!(percent_decode("a%2Fb+c"), Some("a/b c".into()));
        assert_eq!(percent_decode("%f"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
