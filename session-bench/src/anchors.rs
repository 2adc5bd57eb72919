//! The anchors a cycle is compared with: tower-sessions' stores through their own API (load
//! the whole record, change one key, save it whole — what its layer does), and the bare
//! driver round trips a cycle needs (the raw limit).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tower_sessions::session::{Id, Record};
use tower_sessions::{SessionStore as TsStore, cookie::time::OffsetDateTime};

use crate::workload::{Cycle, key, keys, value};

/// The cycle through a tower-sessions `SessionStore` (`store`, cloneable) over the sessions
/// `ids`: load, change one key, save the whole record. A macro, not a generic function:
/// the MongoDB anchor implements tower-sessions-core 0.11's trait, the others 0.14's.
macro_rules! ts_cycle {
    ($store:expr, $ids:expr) => {{
        let (store, ids) = ($store, Arc::new($ids));
        let cycle: Cycle = Arc::new(move |r| {
            let (ids, store) = (ids.clone(), store.clone());
            Box::pin(async move {
                let id = &ids[(r % ids.len() as u64) as usize];
                let mut record = store
                    .load(id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .context("a session vanished")?;
                record
                    .data
                    .insert(key(r % keys()), serde_json::Value::String(value(r)));
                store
                    .save(&record)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(())
            })
        });
        cycle
    }};
}

/// Session `i`'s data as tower-sessions keeps it (values as JSON strings).
fn ts_data(i: usize) -> std::collections::HashMap<String, serde_json::Value> {
    (0..keys())
        .map(|k| {
            (
                key(k),
                serde_json::Value::String(value(i as u64 * keys() + k)),
            )
        })
        .collect()
}

fn ts_record(i: usize) -> Record {
    Record {
        id: Id::default(),
        data: ts_data(i),
        expiry_date: OffsetDateTime::now_utc() + tower_sessions::cookie::time::Duration::hours(1),
    }
}

pub(crate) async fn tower_sessions_cycle<S: TsStore + Clone>(
    store: S,
    sessions: usize,
) -> Result<Cycle> {
    let mut ids = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let mut record = ts_record(i);
        store
            .create(&mut record)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ids.push(record.id);
    }
    Ok(ts_cycle!(store, ids))
}

pub(crate) async fn tower_sessions_memory(sessions: usize) -> Result<Cycle> {
    tower_sessions_cycle(tower_sessions::MemoryStore::default(), sessions).await
}

pub(crate) async fn tower_sessions_redis(url: &str, sessions: usize) -> Result<Cycle> {
    use tower_sessions_redis_store::fred::prelude::*;
    let config = Config::from_url(url)?;
    let pool = Pool::new(config, None, None, None, 6)?;
    pool.connect();
    pool.wait_for_connect().await?;
    tower_sessions_cycle(tower_sessions_redis_store::RedisStore::new(pool), sessions).await
}

/// tower-sessions-mongodb-store 0.11 (on tower-sessions-core 0.11 and the 2.x driver), the
/// same workload through its `SessionStore` API: it has no `create`, so sessions are saved.
pub(crate) async fn tower_sessions_mongo(url: &str, sessions: usize) -> Result<Cycle> {
    use ts_core_011::SessionStore as _;
    use ts_core_011::session::{Id, Record};
    let client = mongodb2::Client::with_uri_str(url).await?;
    let store = Arc::new(tower_sessions_mongodb_store::MongoDBStore::new(
        client,
        format!("tsbench{}", std::process::id()),
    ));
    let mut ids = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let record = Record {
            id: Id::default(),
            data: ts_data(i),
            expiry_date: OffsetDateTime::now_utc()
                + tower_sessions::cookie::time::Duration::hours(1),
        };
        store
            .save(&record)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ids.push(record.id);
    }
    Ok(ts_cycle!(store, ids))
}

/// The raw limits' value for `r`: 250 bytes for the default session shape (5 keys of 40
/// bytes, with names and encoding), and as large as the session for a larger
/// `SESSION_BENCH_SHAPE` (keys × (value + 10) bytes: 20 500 for `50x400`).
pub(crate) fn payload(r: u64) -> Vec<u8> {
    let len = crate::workload::session_bytes().max(250);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(crate::workload::padded(r, 20).as_bytes());
    v.resize(len, b'x');
    v
}

pub(crate) async fn raw_redis(url: &str, sessions: usize) -> Result<Cycle> {
    let client = redis::Client::open(url)?;
    raw_get_set(redis::aio::ConnectionManager::new(client).await?, sessions).await
}

/// The raw limit on a Redis Cluster (`nodes`: comma-separated `host:port`): the same GET +
/// SET of 250 bytes through redis-rs's cluster client, keys spread over the slots.
pub(crate) async fn raw_redis_cluster(nodes: &str, sessions: usize) -> Result<Cycle> {
    let client = redis::cluster::ClusterClient::new(
        nodes
            .split(',')
            .map(|n| format!("redis://{n}"))
            .collect::<Vec<_>>(),
    )?;
    raw_get_set(client.get_async_connection().await?, sessions).await
}

/// `sessions` values set on `conn`, and the cycle of a bare `GET` + `SET` of one of them.
async fn raw_get_set<C>(conn: C, sessions: usize) -> Result<Cycle>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let prefix = format!("raw{}:", std::process::id());
    let mut setup = conn.clone();
    for i in 0..sessions {
        let _: () = redis::cmd("SET")
            .arg(format!("{prefix}{i}"))
            .arg(payload(i as u64))
            .query_async(&mut setup)
            .await?;
    }
    Ok(Arc::new(move |r| {
        let (mut conn, key) = (conn.clone(), format!("{prefix}{}", r % sessions as u64));
        Box::pin(async move {
            let _: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(payload(r))
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }))
}

/// tower-sessions-redis-store on a Redis Cluster (`nodes`: comma-separated `host:port`),
/// through fred's clustered pool.
pub(crate) async fn tower_sessions_redis_cluster(nodes: &str, sessions: usize) -> Result<Cycle> {
    use tower_sessions_redis_store::fred::prelude::*;
    let mut nodes = nodes.split(',');
    let first = nodes.next().context("no cluster node")?;
    let rest: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
    let config = Config::from_url(&format!("redis-cluster://{first}?{}", rest.join("&")))?;
    let pool = Pool::new(config, None, None, None, 6)?;
    pool.connect();
    pool.wait_for_connect().await?;
    tower_sessions_cycle(tower_sessions_redis_store::RedisStore::new(pool), sessions).await
}

/// The raw limit of a compare-and-set layout: the same driver doing a `GET` and an
/// `EVALSHA` of session-redis's own compare-and-set script on 250-byte values with an 8-byte
/// tag, and nothing else. What the server's script costs on its own, with the least client.
pub(crate) async fn raw_redis_cas(url: &str, sessions: usize) -> Result<Cycle> {
    raw_redis_compare_and_set(url, sessions, false).await
}

/// The raw limit of the same layout with the server's own compare-and-set (`SET … IFEQ
/// <value read> GET`, Valkey 8.1 and Redis 8.4) in place of the script.
pub(crate) async fn raw_redis_ifeq(url: &str, sessions: usize) -> Result<Cycle> {
    raw_redis_compare_and_set(url, sessions, true).await
}

/// A value of the tagged layouts: the raw payload for `r` followed by its 8-byte tag.
fn tagged(r: u64, tag: u64) -> Vec<u8> {
    let mut v = payload(r);
    v.extend_from_slice(&tag.to_le_bytes());
    v
}

/// The tag at the end of a tagged value read, and the tag of the value that replaces it.
fn tag_of(value: &[u8]) -> Result<(&[u8], u64)> {
    let at = value
        .len()
        .checked_sub(8)
        .context("a value without its tag")?;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&value[at..]);
    Ok((&value[at..], u64::from_le_bytes(bytes).wrapping_add(1)))
}

/// The tagged layouts' set-up: a connection to `url`, `script` loaded (its SHA1 returned),
/// `sessions` values tagged 0 under the keys `key` names, and an expiry an hour ahead (Unix
/// ms).
async fn tagged_setup(
    url: &str,
    script: &str,
    sessions: usize,
    key: impl Fn(usize) -> String,
) -> Result<(redis::aio::ConnectionManager, String, u64)> {
    let client = redis::Client::open(url)?;
    let conn = redis::aio::ConnectionManager::new(client).await?;
    let mut setup = conn.clone();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query_async(&mut setup)
        .await?;
    for i in 0..sessions {
        let _: () = redis::cmd("SET")
            .arg(key(i))
            .arg(tagged(i as u64, 0))
            .query_async(&mut setup)
            .await?;
    }
    let expires = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    Ok((conn, sha, expires))
}

async fn raw_redis_compare_and_set(url: &str, sessions: usize, ifeq: bool) -> Result<Cycle> {
    let prefix = format!("rawcas{}:", std::process::id());
    let (conn, sha, expires) = tagged_setup(url, session_redis::CAS, sessions, |i| {
        format!("{prefix}{i}")
    })
    .await?;
    Ok(Arc::new(move |r| {
        let (mut conn, key, sha) = (
            conn.clone(),
            format!("{prefix}{}", r % sessions as u64),
            sha.clone(),
        );
        Box::pin(async move {
            let value: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            let (old, next) = tag_of(&value)?;
            // A lost race (another task's write in between) just counts as a cycle here.
            if ifeq {
                let _: redis::Value = redis::cmd("SET")
                    .arg(&key)
                    .arg(tagged(r, next))
                    .arg("IFEQ")
                    .arg(&value)
                    .arg("GET")
                    .arg("PXAT")
                    .arg(expires)
                    .query_async(&mut conn)
                    .await?;
                return Ok(());
            }
            let _: redis::Value = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(&key)
                .arg(old)
                .arg(tagged(r, next))
                .arg(expires)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }))
}

/// The raw limit of the staged write that session-redis uses for values of 2 KB and more:
/// a `GET`, then one pipelined round trip of a `SET` of the new value to a key of its own
/// and the store's [`session_redis::STAGED_CAS`] script that renames it over the session.
pub(crate) async fn raw_redis_staged(url: &str, sessions: usize) -> Result<Cycle> {
    let prefix = format!("rawstaged{}:", std::process::id());
    let (conn, sha, expires) = tagged_setup(url, session_redis::STAGED_CAS, sessions, |i| {
        format!("{prefix}{{{i}}}")
    })
    .await?;
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Ok(Arc::new(move |r| {
        let (mut conn, key, sha) = (
            conn.clone(),
            format!("{prefix}{{{}}}", r % sessions as u64),
            sha.clone(),
        );
        let staged = format!(
            "{key}:staged:{}",
            writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Box::pin(async move {
            let value: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
            let (old, next) = tag_of(&value)?;
            // A lost race (another task's write in between) just counts as a cycle here.
            let _: (redis::Value, redis::Value) = redis::pipe()
                .cmd("SET")
                .arg(&staged)
                .arg(tagged(r, next))
                .arg("PXAT")
                .arg(expires)
                .cmd("EVALSHA")
                .arg(&sha)
                .arg(2)
                .arg(&key)
                .arg(&staged)
                .arg(old)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }))
}

/// The raw limit of a hash layout without a script: `HGETALL` of a session of 5 keys of
/// 40 bytes and two fields of metadata, then one `MULTI` / `HSET` of the changed key and
/// the expiry / `PEXPIREAT` / `EXEC` round trip. Not a layout we ship (an `HSET` on a
/// deleted session re-creates it); the bound such a layout could reach.
pub(crate) async fn raw_redis_hash(url: &str, sessions: usize) -> Result<Cycle> {
    let client = redis::Client::open(url)?;
    let conn = redis::aio::ConnectionManager::new(client).await?;
    let prefix = format!("rawhash{}:", std::process::id());
    let mut setup = conn.clone();
    for i in 0..sessions {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("{prefix}{i}"))
            .arg("c")
            .arg(1_700_000_000_000u64)
            .arg("e")
            .arg(1_800_000_000_000u64);
        for k in 0..5 {
            cmd.arg(key(k)).arg(value(i as u64 * 5 + k));
        }
        let _: () = cmd.query_async(&mut setup).await?;
    }
    let expires = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    Ok(Arc::new(move |r| {
        let (mut conn, key) = (conn.clone(), format!("{prefix}{}", r % sessions as u64));
        Box::pin(async move {
            let _: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            let _: (i64, i64) = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg(crate::workload::key(r % 5))
                .arg(value(r))
                .arg("e")
                .arg(expires)
                .cmd("PEXPIREAT")
                .arg(&key)
                .arg(expires)
                .query_async(&mut conn)
                .await?;
            Ok(())
        })
    }))
}

pub(crate) async fn raw_memcache(addr: &str, sessions: usize) -> Result<Cycle> {
    use memcache_async::ascii::Protocol;
    use tokio::io::BufWriter;
    use tokio::net::TcpStream;
    // One connection per task at most: a pool the tasks take from and give back.
    let pool = Arc::new(std::sync::Mutex::new(
        Vec::<Protocol<BufWriter<TcpStream>>>::new(),
    ));
    let addr = addr.split(',').next().unwrap_or(addr).to_owned();
    let prefix = format!("raw{}:", std::process::id());
    let connect = |addr: String| async move {
        let stream = TcpStream::connect(addr).await?;
        // As the store does: without it, Nagle and delayed ACKs stall every write.
        stream.set_nodelay(true)?;
        // As the store does: the protocol's three writes of a store command leave in one
        // `sendto` when it flushes (unbuffered, the limit was lower: BENCHMARKS.md).
        anyhow::Ok(Protocol::new(BufWriter::new(stream)))
    };
    let mut setup = connect(addr.clone()).await?;
    for i in 0..sessions {
        let _ = setup
            .add(format!("{prefix}{i}"), &payload(i as u64), 3600)
            .await;
    }
    Ok(Arc::new(move |r| {
        let (pool, addr, key) = (
            pool.clone(),
            addr.clone(),
            format!("{prefix}{}", r % sessions as u64),
        );
        Box::pin(async move {
            let idle = pool.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
            let mut conn = match idle {
                Some(c) => c,
                None => connect(addr).await?,
            };
            let _ = conn.get(key.as_bytes()).await?;
            // `set` is noreply in this client: `add` on the existing key is the same write
            // path and size with a reply (NOT_STORED), one real round trip.
            let _ = conn.add(&key, &payload(r), 3600).await;
            pool.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(conn);
            Ok(())
        })
    }))
}

pub(crate) async fn raw_mongo(url: &str, sessions: usize) -> Result<Cycle> {
    use mongodb::bson::{Binary, Document, doc, spec::BinarySubtype};
    let mut options = mongodb::options::ClientOptions::parse(url).await?;
    options.server_selection_timeout = Some(Duration::from_secs(2));
    let client = mongodb::Client::with_options(options)?;
    let coll: mongodb::Collection<Document> = client
        .database("bench")
        .collection(&format!("raw{}", std::process::id()));
    let bin = |r: u64| Binary {
        subtype: BinarySubtype::Generic,
        bytes: payload(r),
    };
    let docs: Vec<Document> = (0..sessions)
        .map(|i| doc! { "_id": i as i64, "data": { "v": bin(i as u64) } })
        .collect();
    for chunk in docs.chunks(1000) {
        coll.insert_many(chunk.to_vec()).await?;
    }
    Ok(Arc::new(move |r| {
        let (coll, id) = (coll.clone(), (r % sessions as u64) as i64);
        Box::pin(async move {
            let _ = coll.find_one(doc! { "_id": id }).await?;
            coll.update_one(doc! { "_id": id }, doc! { "$set": { "data.v": bin(r) } })
                .await?;
            Ok(())
        })
    }))
}

/// The memory store's raw limit: what a cycle must do at the least in a sharded in-process
/// map — 64 `Mutex<HashMap>` shards, a `get` and clone of the session's 250-byte value, then
/// an `insert` of a new one.
pub(crate) async fn raw_memory(sessions: usize) -> Result<Cycle> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    const SHARDS: u64 = 64;
    type Shard = Mutex<HashMap<u64, Vec<u8>>>;
    let shards: Arc<Vec<Shard>> = Arc::new((0..SHARDS).map(|_| Mutex::default()).collect());
    for i in 0..sessions as u64 {
        shards[(i % SHARDS) as usize]
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(i, payload(i));
    }
    Ok(Arc::new(move |r| {
        let shards = shards.clone();
        Box::pin(async move {
            let key = r % sessions as u64;
            let shard = &shards[(key % SHARDS) as usize];
            let value = shard
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .get(&key)
                .cloned()
                .context("a session vanished")?;
            std::hint::black_box(value);
            shard
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert(key, payload(r));
            Ok(())
        })
    }))
}

/// The disk store's raw limit: a file per session (250 bytes), spread over 256
/// subdirectories as the store spreads its files (one directory would serialise every
/// create and rename on its lock), and a cycle the least a crash-safe file store does — read
/// the file, write a temporary file beside it (with `fsync` when `sync`), rename it over the
/// session's — on the blocking pool, as the store runs its file I/O.
pub(crate) async fn raw_disk(dir: &str, sync: bool, sessions: usize) -> Result<Cycle> {
    use std::io::Write as _;
    let dir = Arc::new(std::path::PathBuf::from(dir));
    let shard = |dir: &std::path::Path, key: u64| dir.join(format!("{:02x}", key % 256));
    for i in 0..256 {
        std::fs::create_dir_all(shard(&dir, i))?;
    }
    for i in 0..sessions as u64 {
        std::fs::write(shard(&dir, i).join(i.to_string()), payload(i))?;
    }
    Ok(Arc::new(move |r| {
        let dir = dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let key = r % sessions as u64;
                let path = shard(&dir, key).join(key.to_string());
                std::hint::black_box(std::fs::read(&path)?);
                let tmp = shard(&dir, key).join(format!(".tmp-{r}"));
                let mut file = std::fs::File::create(&tmp)?;
                file.write_all(&payload(r))?;
                if sync {
                    file.sync_all()?;
                }
                std::fs::rename(&tmp, &path)?;
                anyhow::Ok(())
            })
            .await?
        })
    }))
}
