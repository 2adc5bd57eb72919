//! The SQL workloads of the cycle bench: our `SqlStore`, tower-sessions-sqlx-store 0.15 (on
//! sqlx 0.8) through its `SessionStore` API, the raw limit (sqlx 0.9, the driver our store
//! uses, doing only a `SELECT` by primary key and one `UPDATE`), and the layout our store did
//! not take, measured to decide between them: one row per session whose keys are a JSON
//! object, a cycle being a `SELECT` of it and one `UPDATE` that merges the changed key into it
//! (`jsonb ||`, `JSON_MERGE_PATCH`, `json_patch`), values as base64 strings.
//!
//! Every contender gets the same database settings: a pool of 10 connections, and on SQLite a
//! file in WAL mode with a 5 s busy timeout (sqlx's default `synchronous = FULL`). Each run
//! starts from empty tables of its own (dropped and created again), and on SQLite from a file
//! of its own, so rounds do not inherit each other's rows.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use session_core::SessionStore;
use session_sql::SqlStore;

use crate::workload::Cycle;

const POOL: u32 = 10;
const BUSY: Duration = Duration::from_secs(5);

/// The database URL of a spec, and on SQLite a file of the run's own: `sqlite://<dir>` names
/// the directory, the file is `<dir>/<contender>.db`, removed first.
fn url_for(url: &str, contender: &str) -> Result<String> {
    let Some(dir) = url.strip_prefix("sqlite://") else {
        return Ok(url.to_owned());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    let file = std::path::Path::new(dir).join(format!("{contender}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.clone().into_os_string();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(format!("sqlite://{}", file.display()))
}

/// Our store on empty tables `bench`, `bench_data`, `bench_schema`.
pub(crate) async fn ours(url: &str) -> Result<Arc<dyn SessionStore>> {
    let url = url_for(url, "ours")?;
    drop_tables(&url, &["bench_data", "bench", "bench_schema"]).await?;
    Ok(Arc::new(
        SqlStore::builder(&url)
            .table("bench")
            .pool_size(POOL)
            .lock_timeout(BUSY)
            .create_schema(true)
            .open()
            .await?,
    ))
}

/// Drops the tables a previous run left, with a connection of sqlx 0.9's.
async fn drop_tables(url: &str, tables: &[&str]) -> Result<()> {
    macro_rules! drop_with {
        ($conn:ty) => {{
            use sqlx::Connection as _;
            let mut conn = <$conn>::connect(url).await?;
            for table in tables {
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                    .execute(&mut conn)
                    .await?;
            }
            conn.close().await?;
        }};
    }
    match url.split(':').next().unwrap_or_default() {
        "sqlite" => {} // a fresh file
        "postgres" | "postgresql" => drop_with!(sqlx::PgConnection),
        _ => drop_with!(sqlx::MySqlConnection),
    }
    Ok(())
}

/// tower-sessions-sqlx-store: its store for the URL's database, its tables made by its
/// `migrate`, the sessions created through its API; then the cycle of every tower-sessions
/// anchor (load the record, change one key, save it whole).
pub(crate) async fn tower_sessions_sqlx(url: &str, sessions: usize) -> Result<Cycle> {
    use sqlx08::pool::PoolOptions;
    use tower_sessions_sqlx_store::{MySqlStore, PostgresStore, SqliteStore};
    let url = url_for(url, "tower-sessions")?;
    let table = "tsbench";
    match url.split(':').next().unwrap_or_default() {
        "sqlite" => {
            let options: sqlx08::sqlite::SqliteConnectOptions = url.parse()?;
            let options = options
                .create_if_missing(true)
                .journal_mode(sqlx08::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(BUSY);
            let pool = PoolOptions::new()
                .max_connections(POOL)
                .connect_with(options)
                .await?;
            let store = SqliteStore::new(pool)
                .with_table_name(table)
                .map_err(anyhow::Error::msg)?;
            store.migrate().await?;
            crate::anchors::tower_sessions_cycle(store, sessions).await
        }
        "postgres" | "postgresql" => {
            let pool = PoolOptions::new()
                .max_connections(POOL)
                .connect(&url)
                .await?;
            sqlx08::query(&format!("DROP TABLE IF EXISTS tower_sessions.{table}"))
                .execute(&pool)
                .await?;
            let store = PostgresStore::new(pool)
                .with_table_name(table)
                .map_err(anyhow::Error::msg)?;
            store.migrate().await?;
            crate::anchors::tower_sessions_cycle(store, sessions).await
        }
        _ => {
            let url = url.replacen("mariadb://", "mysql://", 1);
            let pool = PoolOptions::new()
                .max_connections(POOL)
                .connect(&url)
                .await?;
            sqlx08::query(&format!("DROP TABLE IF EXISTS tower_sessions.{table}"))
                .execute(&pool)
                .await?;
            let store = MySqlStore::new(pool)
                .with_table_name(table)
                .map_err(anyhow::Error::msg)?;
            store.migrate().await?;
            crate::anchors::tower_sessions_cycle(store, sessions).await
        }
    }
}

/// The raw limit: a table of a 32-byte key, 250 bytes of data and an expiry; a cycle is a
/// `SELECT` by the key and an `UPDATE` of data and expiry by the key, each its own implicit
/// transaction, on sqlx 0.9.
pub(crate) async fn raw(url: &str, sessions: usize) -> Result<Cycle> {
    let url = url_for(url, "raw")?;
    let key = |i: u64| -> Vec<u8> {
        let mut k = i.to_be_bytes().to_vec();
        k.resize(32, 0);
        k
    };
    macro_rules! raw_with {
        ($db:ty, $pool:expr, $sql:expr) => {{
            let pool: sqlx::Pool<$db> = $pool;
            let sql: BenchSql = $sql;
            sqlx::query("DROP TABLE IF EXISTS rawbench")
                .execute(&pool)
                .await?;
            sqlx::query(sql.create).execute(&pool).await?;
            for i in 0..sessions as u64 {
                sqlx::query(sql.insert)
                    .bind(key(i))
                    .bind(crate::anchors::payload(i))
                    .bind(i as i64)
                    .execute(&pool)
                    .await?;
            }
            let sessions = sessions as u64;
            let cycle: Cycle = Arc::new(move |r| {
                let pool = pool.clone();
                Box::pin(async move {
                    let id = key(r % sessions);
                    let row: Option<(Vec<u8>, i64)> = sqlx::query_as(sql.select)
                        .bind(&id)
                        .fetch_optional(&pool)
                        .await?;
                    row.context("a row vanished")?;
                    sqlx::query(sql.update)
                        .bind(crate::anchors::payload(r))
                        .bind(r as i64)
                        .bind(&id)
                        .execute(&pool)
                        .await?;
                    Ok(())
                })
            });
            Ok(cycle)
        }};
    }
    match connect(&url).await? {
        Pool::Sqlite(pool) => raw_with!(
            sqlx::Sqlite,
            pool,
            RawSql::new("BLOB", "BLOB", "?", "?", "?")
        ),
        Pool::Postgres(pool) => raw_with!(
            sqlx::Postgres,
            pool,
            RawSql::new("BYTEA", "BYTEA", "$1", "$2", "$3")
        ),
        Pool::MySql(pool) => raw_with!(
            sqlx::MySql,
            pool,
            RawSql::new("BINARY(32)", "BLOB", "?", "?", "?")
        ),
    }
}

/// The statements of the raw limit or of the JSON layout in one dialect, leaked once per run
/// so that the cycles can share them as `&'static str`.
#[derive(Clone, Copy)]
struct BenchSql {
    create: &'static str,
    /// The index on the expiry a store needs for its sweeps (the JSON layout, as ours has).
    index: Option<&'static str>,
    insert: &'static str,
    select: &'static str,
    update: &'static str,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The raw limit's statements.
struct RawSql;

impl RawSql {
    /// With the dialect's key and blob types and its three placeholders.
    #[allow(clippy::new_ret_no_self)]
    fn new(key: &str, blob: &str, p1: &str, p2: &str, p3: &str) -> BenchSql {
        BenchSql {
            create: leak(format!(
                "CREATE TABLE rawbench (id {key} PRIMARY KEY, data {blob} NOT NULL, expires_at BIGINT NOT NULL)"
            )),
            index: None,
            insert: leak(format!(
                "INSERT INTO rawbench (id, data, expires_at) VALUES ({p1}, {p2}, {p3})"
            )),
            select: leak(format!(
                "SELECT data, expires_at FROM rawbench WHERE id = {p1}"
            )),
            update: leak(format!(
                "UPDATE rawbench SET data = {p1}, expires_at = {p2} WHERE id = {p3}"
            )),
        }
    }
}

fn options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new().max_connections(POOL)
}

/// A sqlx 0.9 pool on the URL's database, with the settings every contender gets.
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
}

async fn connect(url: &str) -> Result<Pool> {
    Ok(match url.split(':').next().unwrap_or_default() {
        "sqlite" => {
            let connect: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let connect = connect
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(BUSY);
            Pool::Sqlite(options().connect_with(connect).await?)
        }
        "postgres" | "postgresql" => Pool::Postgres(options().connect(url).await?),
        _ => {
            let url = url.replacen("mariadb://", "mysql://", 1);
            Pool::MySql(options().connect(&url).await?)
        }
    })
}

/// The JSON-merge layout: one row per session, its keys a JSON object of base64 values, its
/// expiry indexed (as a store's sweeps need); a
/// cycle loads the row (decoding every value, as a store must) and merges the one changed key
/// in a single `UPDATE` that checks the session is live: per-key atomic without a transaction.
pub(crate) async fn json_merge(url: &str, sessions: usize) -> Result<Cycle> {
    let url = url_for(url, "json")?;
    let key = |i: u64| -> Vec<u8> {
        let mut k = i.to_be_bytes().to_vec();
        k.resize(32, 1);
        k
    };
    macro_rules! json_with {
        ($db:ty, $pool:expr, $sql:expr) => {{
            let pool: sqlx::Pool<$db> = $pool;
            let sql: BenchSql = $sql;
            sqlx::query("DROP TABLE IF EXISTS jsonbench")
                .execute(&pool)
                .await?;
            sqlx::query(sql.create).execute(&pool).await?;
            if let Some(index) = sql.index {
                sqlx::query(index).execute(&pool).await?;
            }
            for i in 0..sessions as u64 {
                let keys = crate::workload::keys();
                let pairs: Vec<(String, String)> = (0..keys)
                    .map(|k| {
                        (
                            crate::workload::key(k),
                            crate::workload::value(i * keys + k),
                        )
                    })
                    .collect();
                sqlx::query(sql.insert)
                    .bind(key(i))
                    .bind(json_object(&pairs))
                    .bind(i64::MAX)
                    .execute(&pool)
                    .await?;
            }
            let sessions = sessions as u64;
            let cycle: Cycle = Arc::new(move |r| {
                let pool = pool.clone();
                Box::pin(async move {
                    let id = key(r % sessions);
                    let row: Option<(String, i64)> = sqlx::query_as(sql.select)
                        .bind(&id)
                        .bind(0i64)
                        .fetch_optional(&pool)
                        .await?;
                    let (data, _) = row.context("a row vanished")?;
                    json_decode(&data)?;
                    let change = json_object(&[(
                        crate::workload::key(r % crate::workload::keys()),
                        crate::workload::value(r),
                    )]);
                    // A new expiry every cycle, as a store's rolling expiry writes.
                    let done = sqlx::query(sql.update)
                        .bind(change)
                        .bind((1i64 << 40) + r as i64 % (1 << 40))
                        .bind(&id)
                        .bind(0i64)
                        .execute(&pool)
                        .await?;
                    anyhow::ensure!(done.rows_affected() == 1, "the session vanished");
                    Ok(())
                })
            });
            Ok(cycle)
        }};
    }
    match connect(&url).await? {
        Pool::Sqlite(pool) => json_with!(
            sqlx::Sqlite,
            pool,
            JsonSql::new("BLOB", "TEXT", "?", "json_patch(data, ?)", ["?"; 3])
        ),
        Pool::Postgres(pool) => json_with!(
            sqlx::Postgres,
            pool,
            JsonSql::new(
                "BYTEA",
                "JSONB",
                "$2::jsonb",
                "data || $1::jsonb",
                ["$2", "$3", "$4"]
            )
        ),
        Pool::MySql(pool) => json_with!(
            sqlx::MySql,
            pool,
            JsonSql::new(
                "BINARY(32)",
                "JSON",
                "?",
                "JSON_MERGE_PATCH(data, ?)",
                ["?"; 3]
            )
        ),
    }
}

/// The JSON-merge layout's statements.
struct JsonSql;

impl JsonSql {
    /// `insert_data` is the placeholder of the inserted object (with a cast where needed),
    /// `merge` the expression merging the first parameter into `data`, `rest` the update's
    /// other three placeholders (expiry, id, now).
    #[allow(clippy::new_ret_no_self)]
    fn new(key: &str, json: &str, insert_data: &str, merge: &str, rest: [&str; 3]) -> BenchSql {
        let (p1, p2, p3) = if rest[0] == "?" {
            ("?", "?", "?")
        } else {
            ("$1", "$2", "$3")
        };
        let [expiry, id, now] = rest;
        BenchSql {
            create: leak(format!(
                "CREATE TABLE jsonbench (id {key} PRIMARY KEY, data {json} NOT NULL, expires_at BIGINT NOT NULL)"
            )),
            index: Some("CREATE INDEX jsonbench_expires ON jsonbench (expires_at)"),
            insert: leak(format!(
                "INSERT INTO jsonbench (id, data, expires_at) VALUES ({p1}, {insert_data}, {p3})"
            )),
            select: leak(format!(
                "SELECT CAST(data AS {text}), expires_at FROM jsonbench WHERE id = {p1} AND expires_at > {p2}",
                // MySQL casts to CHAR, not TEXT.
                text = if json == "JSON" { "CHAR" } else { "TEXT" }
            )),
            update: leak(format!(
                "UPDATE jsonbench SET data = {merge}, expires_at = {expiry} WHERE id = {id} AND expires_at > {now}"
            )),
        }
    }
}

/// A JSON object of the pairs, values in base64.
fn json_object(pairs: &[(String, String)]) -> String {
    use base64::Engine as _;
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| {
            let v = base64::engine::general_purpose::STANDARD.encode(v.as_bytes());
            (k.clone(), serde_json::Value::String(v))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Decodes a session's JSON object and every value, as a store's load must; the bytes read.
fn json_decode(json: &str) -> Result<usize> {
    use base64::Engine as _;
    let map: std::collections::HashMap<String, String> = serde_json::from_str(json)?;
    let mut bytes = 0;
    for v in map.values() {
        bytes += base64::engine::general_purpose::STANDARD.decode(v)?.len();
    }
    Ok(bytes)
}
