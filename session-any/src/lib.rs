//! Open any `session-core` store from a URL, the way an application reads its backing
//! services from its environment: `SESSION_STORE=redis://10.0.0.5:6379 ./myapp`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), session_core::StoreError> {
//! use session_core::SessionManager;
//!
//! let url = std::env::var("SESSION_STORE").unwrap_or_else(|_| "memory://".into());
//! let store = session_any::open(&url).await?; // Arc<dyn SessionStore>
//! println!("sessions in {}", session_any::redact(&url)); // never prints a password
//! let manager = SessionManager::builder_arc(store).build();
//!
//! let session = manager.create();
//! session.insert("user", "alice").unwrap();
//! manager.save(&session).await.unwrap();
//! # Ok(()) }
//! ```
//!
//! Each store is behind its own cargo feature, so an application compiles only the driver
//! it uses (`memory` is on by default; `full` turns on every store):
//!
//! | URL | store | feature |
//! |---|---|---|
//! | `memory://` | `session_memory::MemoryStore` | `memory` |
//! | `file:///var/lib/myapp/sessions` (an absolute path) | `session_disk::DiskStore` | `disk` |
//! | `redis://[user:password@]host[:port][/db]` | `session_redis::RedisStore` | `redis` |
//! | `rediss://…` (TLS) | the same | `redis-tls` |
//! | `redis+cluster://[user:password@]host:port,host:port,…` (`rediss+cluster://` with TLS) | `session_redis::RedisStore` on a Redis Cluster, reached through any of the nodes | `redis` |
//! | `memcache://host:port,host:port,…` (port 11211 when omitted) | `session_memcache::MemcacheStore` | `memcache` |
//! | `mongodb://…` (any MongoDB connection string) | `session_mongo::MongoStore` | `mongo` |
//! | `mongodb+srv://…` | the same | `mongo-dns` |
//! | `postgres://[user:password@]host[:port]/database` (`postgresql://`) | `session_sql::SqlStore` on PostgreSQL | `postgres` |
//! | `sqlite:///var/lib/myapp/sessions.db`, `sqlite://:memory:` | `session_sql::SqlStore` on SQLite | `sqlite` |
//! | `mysql://[user:password@]host[:port]/database` (`mariadb://`) | `session_sql::SqlStore` on MySQL or MariaDB | `mysql` |
//!
//! # Options
//!
//! The settings that matter in production are query options of the URL, named like the
//! builder methods they set; durations are written `500ms`, `2s`, `1m` or `1h`.
//!
//! | scheme | option | meaning | default |
//! |---|---|---|---|
//! | `memory` | `shards` | number of shards (more shards, less lock contention) | 64 |
//! | `file` | `shard_depth` | levels of two-hex-digit subdirectories, 0 to 4 | 2 |
//! | `file` | `fsync` | `always` (a returned write survives a power loss) or `never` | `always` |
//! | `file` | `file_mode` | permission bits of session files, octal | `600` |
//! | `file` | `lock_timeout` | how long a write waits for another process's lock | `5s` |
//! | `redis`, `redis+cluster` | `key_prefix` | prefix of every key | `session:` |
//! | `redis`, `redis+cluster` | `command_timeout` | bound on one call, reconnecting included | `2s` |
//! | `redis`, `redis+cluster` | `connection_timeout` | bound on one connection attempt | `1s` |
//! | `redis`, `redis+cluster` | `cas_retries` | compare-and-set races a write may lose to other processes | 32 |
//! | `memcache` | `key_prefix` | prefix of every key | `session:` |
//! | `memcache` | `pool_size` | connections per server at most | 16 |
//! | `memcache` | `command_timeout` | bound on one call, connecting included | `1s` |
//! | `memcache` | `cas_retries` | retries of an update that lost a CAS race | 32 |
//! | `memcache` | `item_size_limit` | the servers' `-I` (`1m`, `512k` or bytes) | `1m` |
//! | `mongodb` | `database` | the database of the sessions collection | `sessions` |
//! | `mongodb` | `collection` | the collection | `sessions` |
//! | `mongodb` | `command_timeout` | bound on one call: server selection, connecting, the operation | `2s` |
//! | `mongodb` | `cas_retries` | reads an update that increments counters may retry after another writer changed one | 32 |
//! | `mongodb` | `create_indexes` | create the TTL and owner indexes at open (`false`: no call at open, the first request connects) | `true` |
//! | `postgres`, `sqlite`, `mysql` | `table` | the sessions table (keys in `{table}_data`) | `sessions` |
//! | `postgres` | `schema` | the PostgreSQL schema of the tables | the `search_path` |
//! | `postgres`, `sqlite`, `mysql` | `create_schema` | create the tables at open if missing (`false`: check they exist) | `true` |
//! | `postgres`, `sqlite`, `mysql` | `pool_size` | connections in the pool | 10 |
//! | `postgres`, `sqlite`, `mysql` | `command_timeout` | bound on one call, a whole transaction | `5s` |
//! | `postgres`, `sqlite`, `mysql` | `connection_timeout` | bound on opening a connection | `2s` |
//! | `sqlite` | `lock_timeout` | how long a write waits for another process's lock | `5s` |
//! | `postgres`, `sqlite`, `mysql` | `record_size_limit` | the largest record written (`8m`, `512k` or bytes) | `8m` |
//!
//! A MongoDB URL keeps every option of the driver's own (`w=majority`,
//! `readPreference=…`, `tls=true`, `authSource=…`): only the four above are taken out
//! before the driver reads the rest, and none of the driver's options has those names. The
//! path of a MongoDB URL stays what the driver makes of it (the database to authenticate
//! against), which is why the sessions' database is an option of its own. A SQL URL passes the
//! options sqlx knows to it (`sslmode=require`, `ssl-mode=…`, SQLite's `mode=…`) and refuses
//! any other name, since sqlx would ignore a misspelt one.
//!
//! # Errors
//!
//! Every error names the URL with its password replaced by `***` ([`redact`]), and says
//! what is wrong:
//!
//! - `StoreError::Config` for a URL that cannot work: an unknown scheme (the message lists
//!   the schemes this build supports, and names the feature that enables a known scheme
//!   that is off), an unknown, repeated or malformed option, a missing host, a relative
//!   file path.
//! - `StoreError::Unavailable` when the server does not answer within the connect timeout
//!   (`command_timeout` plus `connection_timeout` for Redis, `command_timeout` for memcached
//!   and MongoDB): `open` never hangs. A memcached URL opens when at least one of its
//!   servers answers (a down server affects only its share of sessions; the others are
//!   logged as warnings).
//! - The store's own error otherwise (a root directory that cannot be created, a Redis that
//!   refuses the password, …).
//!
//! No input makes `open` panic.
//!
//! # On the application's own client
//!
//! An application that already holds a Redis connection or a MongoDB database builds the
//! store on it instead: `session_redis::RedisStore::with_connection_manager`,
//! `RedisStore::with_cluster_connection`, `session_mongo::MongoStore::with_database` and
//! `MongoStore::with_collection`.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

use session_core::{SessionStore, StoreError};

// A build with only some stores uses only part of the URL helpers.
#[cfg_attr(
    not(all(
        feature = "memory",
        feature = "disk",
        feature = "redis",
        feature = "memcache",
        feature = "mongo"
    )),
    allow(dead_code)
)]
mod url;

pub use url::{UrlError, redact};

#[cfg(any(
    feature = "memory",
    feature = "disk",
    feature = "redis",
    feature = "memcache",
    feature = "mongo",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
use url::StoreUrl;

/// Every scheme this crate knows, with the feature that enables it.
const SCHEMES: &[(&str, &str)] = &[
    ("memory", "memory"),
    ("file", "disk"),
    ("redis", "redis"),
    ("rediss", "redis-tls"),
    ("redis+cluster", "redis"),
    ("rediss+cluster", "redis-tls"),
    ("memcache", "memcache"),
    ("mongodb", "mongo"),
    ("mongodb+srv", "mongo-dns"),
    ("postgres", "postgres"),
    ("postgresql", "postgres"),
    ("sqlite", "sqlite"),
    ("mysql", "mysql"),
    ("mariadb", "mysql"),
];

#[allow(
    clippy::match_like_matches_macro,
    reason = "which arms are true depends on the build's features"
)]
fn enabled(feature: &str) -> bool {
    match feature {
        "memory" => cfg!(feature = "memory"),
        "disk" => cfg!(feature = "disk"),
        "redis" => cfg!(feature = "redis"),
        "redis-tls" => cfg!(feature = "redis-tls"),
        "memcache" => cfg!(feature = "memcache"),
        "mongo" => cfg!(feature = "mongo"),
        "postgres" => cfg!(feature = "postgres"),
        "sqlite" => cfg!(feature = "sqlite"),
        "mysql" => cfg!(feature = "mysql"),
        "mongo-dns" => cfg!(feature = "mongo-dns"),
        _ => false,
    }
}

/// The URL schemes this build of the crate opens, as `scheme://`.
///
/// ```
/// assert!(session_any::schemes().contains(&"memory://"));
/// ```
pub fn schemes() -> Vec<&'static str> {
    const WITH_SEPARATOR: &[&str] = &[
        "memory://",
        "file://",
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
        "memcache://",
        "mongodb://",
        "mongodb+srv://",
        "postgres://",
        "postgresql://",
        "sqlite://",
        "mysql://",
        "mariadb://",
    ];
    SCHEMES
        .iter()
        .zip(WITH_SEPARATOR)
        .filter(|((_, feature), _)| enabled(feature))
        .map(|(_, shown)| *shown)
        .collect()
}

/// Opens the store `url` names (see the [crate docs](crate) for the URL forms and options)
/// and checks that it answers.
///
/// # Errors
/// `StoreError::Config` for a URL that is wrong; `StoreError::Unavailable` for a server that
/// does not answer within the connect timeout; the store's own error otherwise. Each names
/// the URL, password redacted.
pub async fn open(url: &str) -> Result<Arc<dyn SessionStore>, StoreError> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let Some((_, feature)) = SCHEMES.iter().find(|(s, _)| *s == scheme) else {
        return Err(unknown_scheme(url, &scheme));
    };
    if !enabled(feature) {
        return Err(feature_off(url, &scheme, feature));
    }
    open_enabled(url).await
}

fn feature_off(url: &str, scheme: &str, feature: &str) -> StoreError {
    let why = format!(
        "{scheme}:// needs the `{feature}` feature of session-any, which this build does not enable"
    );
    StoreError::config("session-any", UrlError::new(url, why))
}

fn unknown_scheme(url: &str, scheme: &str) -> StoreError {
    let why = if url.contains("://") {
        format!(
            "unknown scheme {scheme:?}; this build opens {}",
            schemes().join(", ")
        )
    } else {
        format!("not a store URL: expected one of {}", schemes().join(", "))
    };
    StoreError::config("session-any", UrlError::new(url, why))
}

#[cfg(not(any(
    feature = "memory",
    feature = "disk",
    feature = "redis",
    feature = "memcache",
    feature = "mongo",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
)))]
async fn open_enabled(url: &str) -> Result<Arc<dyn SessionStore>, StoreError> {
    Err(unknown_scheme(url, ""))
}

#[cfg(any(
    feature = "memory",
    feature = "disk",
    feature = "redis",
    feature = "memcache",
    feature = "mongo",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
async fn open_enabled(url: &str) -> Result<Arc<dyn SessionStore>, StoreError> {
    let mut parsed = StoreUrl::parse(url)?;
    let store: Arc<dyn SessionStore> = match parsed.scheme.as_str() {
        #[cfg(feature = "memory")]
        "memory" => Arc::new(stores::memory(&mut parsed)?),
        #[cfg(feature = "disk")]
        "file" => Arc::new(stores::disk(&mut parsed)?),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Arc::new(stores::redis(&mut parsed).await?),
        #[cfg(feature = "redis")]
        "redis+cluster" | "rediss+cluster" => Arc::new(stores::redis_cluster(&mut parsed).await?),
        #[cfg(feature = "memcache")]
        "memcache" => Arc::new(stores::memcache(&mut parsed).await?),
        #[cfg(feature = "mongo")]
        "mongodb" | "mongodb+srv" => Arc::new(stores::mongo(&mut parsed).await?),
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
        "postgres" | "postgresql" | "sqlite" | "mysql" | "mariadb" => {
            Arc::new(stores::sql(&mut parsed).await?)
        }
        _ => return Err(unknown_scheme(url, &parsed.scheme)),
    };
    Ok(store)
}

/// The store's own error, with the URL (redacted) in front of its cause.
#[cfg(any(
    feature = "disk",
    feature = "redis",
    feature = "memcache",
    feature = "mongo",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
fn at_url(url: &str, error: StoreError) -> StoreError {
    match error {
        StoreError::Unavailable { store, source } => StoreError::Unavailable {
            store,
            source: Box::new(UrlError::new(url, source)),
        },
        StoreError::Backend { store, source } => StoreError::Backend {
            store,
            source: Box::new(UrlError::new(url, source)),
        },
        StoreError::Config { store, source } => StoreError::Config {
            store,
            source: Box::new(UrlError::new(url, source)),
        },
        other => other,
    }
}

#[cfg(any(
    feature = "memory",
    feature = "disk",
    feature = "redis",
    feature = "memcache",
    feature = "mongo",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
mod stores;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_scheme_whose_feature_is_off_names_the_feature() {
        let err = feature_off("rediss://:pw@h:6380", "rediss", "redis-tls").to_string();
        assert_eq!(
            err,
            "session store session-any is misconfigured: rediss://:***@h:6380: rediss:// needs \
             the `redis-tls` feature of session-any, which this build does not enable"
        );
        // Every scheme names a feature this crate has.
        for (_, feature) in SCHEMES {
            assert!(
                include_str!("../Cargo.toml").contains(&format!("\n{feature} = [")),
                "{feature}"
            );
        }
    }

    #[test]
    fn an_unknown_scheme_lists_what_this_build_opens() {
        let err = unknown_scheme("postgres://u:pw@h/db", "postgres").to_string();
        assert!(err.contains("postgres://u:***@h/db"), "{err}");
        assert!(
            err.contains("unknown scheme \"postgres\"; this build opens memory://"),
            "{err}"
        );
        let err = unknown_scheme("just-a-word", "").to_string();
        assert!(err.contains("not a store URL"), "{err}");
    }
}
