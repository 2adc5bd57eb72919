//! One function per scheme: read the URL's parts and options into the store's builder.

#[cfg(any(
    feature = "redis",
    feature = "memcache",
    feature = "mongo",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
use crate::at_url;
use crate::url::StoreUrl;
#[cfg(any(
    feature = "memory",
    feature = "disk",
    feature = "memcache",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
use session_core::StoreError;

#[cfg(feature = "memory")]
pub(crate) fn memory(url: &mut StoreUrl<'_>) -> Result<session_memory::MemoryStore, StoreError> {
    const STORE: &str = "memory";
    if !url.authority.is_empty() || !(url.path.is_empty() || url.path == "/") {
        return Err(url.error(STORE, "memory:// takes no host or path"));
    }
    url.no_userinfo(STORE)?;
    let shards = url.query.number::<usize>(STORE, "shards")?;
    url.query.finish(STORE, &["shards"])?;
    Ok(match shards {
        Some(0) => return Err(url.error(STORE, "option shards=0: expected at least 1")),
        Some(n) => session_memory::MemoryStore::with_shards(n),
        None => session_memory::MemoryStore::default(),
    })
}

#[cfg(feature = "disk")]
pub(crate) fn disk(url: &mut StoreUrl<'_>) -> Result<session_disk::DiskStore, StoreError> {
    use session_disk::{DiskStore, Fsync};
    const STORE: &str = "disk";
    if !(url.authority.is_empty() || url.authority.eq_ignore_ascii_case("localhost"))
        || url.userinfo.is_some()
        || url.path.len() < 2
    {
        return Err(url.error(
            STORE,
            "expected an absolute path: file:///var/lib/myapp/sessions (three slashes)",
        ));
    }
    let path = crate::url::percent_decode(url.path)
        .ok_or_else(|| url.error(STORE, "the path is not valid %-encoding"))?;
    let mut builder = DiskStore::builder(path);
    if let Some(depth) = url.query.number::<u8>(STORE, "shard_depth")? {
        builder = builder.shard_depth(depth);
    }
    let fsync = url.query.parsed(STORE, "fsync", |v| match v {
        "always" => Ok(Fsync::Always),
        "never" => Ok(Fsync::Never),
        _ => Err("always or never".to_owned()),
    })?;
    if let Some(fsync) = fsync {
        builder = builder.fsync(fsync);
    }
    let mode = url.query.parsed(STORE, "file_mode", |v| {
        let digits = v.strip_prefix("0o").unwrap_or(v);
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| "octal permission bits such as 600 or 0640".to_owned())
    })?;
    if let Some(mode) = mode {
        builder = builder.file_mode(mode);
    }
    if let Some(timeout) = url.query.duration(STORE, "lock_timeout")? {
        builder = builder.lock_timeout(timeout);
    }
    url.query.finish(
        STORE,
        &["shard_depth", "fsync", "file_mode", "lock_timeout"],
    )?;
    builder.open().map_err(|e| crate::at_url(url.raw, e))
}

#[cfg(feature = "redis")]
const REDIS_OPTIONS: &[&str] = &[
    "key_prefix",
    "command_timeout",
    "connection_timeout",
    "cas_retries",
];

/// The Redis options of the URL, onto `builder`.
#[cfg(feature = "redis")]
fn redis_options(
    url: &mut StoreUrl<'_>,
    mut builder: session_redis::RedisStoreBuilder,
) -> Result<session_redis::RedisStoreBuilder, session_core::StoreError> {
    const STORE: &str = "redis";
    if let Some(prefix) = url.query.take(STORE, "key_prefix")? {
        builder = builder.key_prefix(prefix);
    }
    if let Some(timeout) = url.query.duration(STORE, "command_timeout")? {
        builder = builder.command_timeout(timeout);
    }
    if let Some(timeout) = url.query.duration(STORE, "connection_timeout")? {
        builder = builder.connection_timeout(timeout);
    }
    if let Some(retries) = url.query.number::<u32>(STORE, "cas_retries")? {
        builder = builder.cas_retries(retries);
    }
    url.query.finish(STORE, REDIS_OPTIONS)?;
    Ok(builder)
}

#[cfg(feature = "redis")]
pub(crate) async fn redis(
    url: &mut StoreUrl<'_>,
) -> Result<session_redis::RedisStore, session_core::StoreError> {
    const STORE: &str = "redis";
    let hosts = url.hosts(STORE)?;
    if hosts.len() > 1 {
        return Err(url.error(
            STORE,
            format!(
                "several hosts: for a Redis Cluster write {}+cluster://host:port,host:port",
                url.scheme
            ),
        ));
    }
    let db = url.path.strip_prefix('/').unwrap_or(url.path);
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(url.error(
            STORE,
            format!("the path {:?} is not a database number", url.path),
        ));
    }
    let target = format!(
        "{}://{}{}{}",
        url.scheme,
        url.userinfo_at(),
        url.authority,
        url.path
    );
    let builder = redis_options(url, session_redis::RedisStore::builder(target))?;
    builder.open().await.map_err(|e| at_url(url.raw, e))
}

#[cfg(feature = "redis")]
pub(crate) async fn redis_cluster(
    url: &mut StoreUrl<'_>,
) -> Result<session_redis::RedisStore, session_core::StoreError> {
    const STORE: &str = "redis";
    let hosts = url.hosts(STORE)?;
    if !(url.path.is_empty() || url.path == "/") {
        return Err(url.error(STORE, "a Redis Cluster has no database number"));
    }
    let node_scheme = url.scheme.trim_end_matches("+cluster");
    let userinfo = url.userinfo_at();
    let nodes: Vec<String> = hosts
        .iter()
        .map(|host| format!("{node_scheme}://{userinfo}{host}"))
        .collect();
    let builder = redis_options(url, session_redis::RedisStore::cluster_builder(nodes))?;
    builder.open().await.map_err(|e| at_url(url.raw, e))
}

#[cfg(feature = "memcache")]
pub(crate) async fn memcache(
    url: &mut StoreUrl<'_>,
) -> Result<session_memcache::MemcacheStore, StoreError> {
    const STORE: &str = "memcache";
    url.no_userinfo(STORE)?;
    url.no_path(STORE)?;
    let servers: Vec<String> = url
        .hosts(STORE)?
        .into_iter()
        .map(|host| match host.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => host.to_owned(),
            _ => format!("{host}:11211"),
        })
        .collect();
    let mut builder = session_memcache::MemcacheStore::builder(servers);
    if let Some(prefix) = url.query.take(STORE, "key_prefix")? {
        builder = builder.key_prefix(prefix);
    }
    if let Some(size) = url.query.number::<usize>(STORE, "pool_size")? {
        builder = builder.pool_size(size);
    }
    if let Some(timeout) = url.query.duration(STORE, "command_timeout")? {
        builder = builder.command_timeout(timeout);
    }
    if let Some(retries) = url.query.number::<u32>(STORE, "cas_retries")? {
        builder = builder.cas_retries(retries);
    }
    if let Some(limit) = url
        .query
        .parsed(STORE, "item_size_limit", crate::url::parse_size)?
    {
        builder = builder.item_size_limit(limit);
    }
    url.query.finish(
        STORE,
        &[
            "key_prefix",
            "pool_size",
            "command_timeout",
            "cas_retries",
            "item_size_limit",
        ],
    )?;
    let store = builder.build().map_err(|e| at_url(url.raw, e))?;
    let answers = store.ping().await;
    if answers.iter().all(Result::is_err) {
        let first = answers.into_iter().find_map(Result::err);
        return Err(first.map_or_else(|| url.error(STORE, "no server"), |e| at_url(url.raw, e)));
    }
    for (server, answer) in store.servers().zip(&answers) {
        if let Err(e) = answer {
            tracing::warn!(
                server,
                error = %e,
                "memcached server not answering at start; its share of sessions is unavailable until it is back"
            );
        }
    }
    Ok(store)
}

#[cfg(feature = "mongo")]
pub(crate) async fn mongo(
    url: &mut StoreUrl<'_>,
) -> Result<session_mongo::MongoStore, session_core::StoreError> {
    const STORE: &str = "mongo";
    let database = url.query.take(STORE, "database")?;
    let collection = url.query.take(STORE, "collection")?;
    let timeout = url.query.duration(STORE, "command_timeout")?;
    let create_indexes = url.query.boolean(STORE, "create_indexes")?;
    let cas_retries = url.query.number::<u32>(STORE, "cas_retries")?;
    // Everything else is the driver's to read (and to reject).
    let rest = url.query.rest();
    let query = match (rest.is_empty(), url.path.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!("/?{rest}"),
        (false, false) => format!("?{rest}"),
    };
    let uri = format!(
        "{}://{}{}{}{}",
        url.scheme,
        url.userinfo_at(),
        url.authority,
        url.path,
        query
    );
    let mut builder = session_mongo::MongoStore::builder(uri);
    if let Some(database) = database {
        builder = builder.database(database);
    }
    if let Some(collection) = collection {
        builder = builder.collection(collection);
    }
    if let Some(timeout) = timeout {
        builder = builder.command_timeout(timeout);
    }
    if let Some(create) = create_indexes {
        builder = builder.create_indexes(create);
    }
    if let Some(retries) = cas_retries {
        builder = builder.cas_retries(retries);
    }
    builder.open().await.map_err(|e| at_url(url.raw, e))
}

#[cfg(any(feature = "postgres", feature = "sqlite", feature = "mysql"))]
pub(crate) async fn sql(url: &mut StoreUrl<'_>) -> Result<session_sql::SqlStore, StoreError> {
    const STORE: &str = "sql";
    let table = url.query.take(STORE, "table")?;
    let schema = url.query.take(STORE, "schema")?;
    let create = url.query.boolean(STORE, "create_schema")?;
    let pool_size = url.query.number::<u32>(STORE, "pool_size")?;
    let command_timeout = url.query.duration(STORE, "command_timeout")?;
    let connection_timeout = url.query.duration(STORE, "connection_timeout")?;
    let lock_timeout = url.query.duration(STORE, "lock_timeout")?;
    let size_limit = url
        .query
        .parsed(STORE, "record_size_limit", crate::url::parse_size)?;
    // The rest is sqlx's to read; it would ignore a name it does not know, so a misspelt
    // option fails here instead.
    let rest = url.query.rest();
    let driver: &[&str] = match url.scheme.as_str() {
        "postgres" | "postgresql" => &[
            "sslmode",
            "sslrootcert",
            "sslcert",
            "sslkey",
            "statement-cache-capacity",
            "host",
            "hostaddr",
            "port",
            "dbname",
            "user",
            "password",
            "application_name",
            "options",
        ],
        "sqlite" => &["mode", "cache", "immutable", "vfs"],
        _ => &[
            "ssl-mode",
            "ssl-ca",
            "ssl-cert",
            "ssl-key",
            "statement-cache-capacity",
            "socket",
            "timezone",
            "charset",
            "collation",
        ],
    };
    for name in driver {
        url.query.take(STORE, name)?;
    }
    let ours = [
        "table",
        "schema",
        "create_schema",
        "pool_size",
        "command_timeout",
        "connection_timeout",
        "lock_timeout",
        "record_size_limit",
    ];
    let known: Vec<&str> = ours.iter().chain(driver).copied().collect();
    url.query.finish(STORE, &known)?;
    let query = if rest.is_empty() {
        String::new()
    } else {
        format!("?{rest}")
    };
    let database_url = format!(
        "{}://{}{}{}{}",
        url.scheme,
        url.userinfo_at(),
        url.authority,
        url.path,
        query
    );
    let mut builder =
        session_sql::SqlStore::builder(database_url).create_schema(create.unwrap_or(true));
    if let Some(table) = table {
        builder = builder.table(table);
    }
    if let Some(schema) = schema {
        builder = builder.schema(schema);
    }
    if let Some(size) = pool_size {
        builder = builder.pool_size(size);
    }
    if let Some(timeout) = command_timeout {
        builder = builder.command_timeout(timeout);
    }
    if let Some(timeout) = connection_timeout {
        builder = builder.connection_timeout(timeout);
    }
    if let Some(timeout) = lock_timeout {
        builder = builder.lock_timeout(timeout);
    }
    if let Some(limit) = size_limit {
        builder = builder.record_size_limit(limit);
    }
    builder.open().await.map_err(|e| at_url(url.raw, e))
}
