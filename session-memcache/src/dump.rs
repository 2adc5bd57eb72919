//! Listing a server's session keys with `lru_crawler metadump`, for
//! [`SessionStore::scan`](session_core::SessionStore::scan): `metadump hash` (memcached
//! 1.6.x), which walks the hash table and so sees every item once, or on servers without it
//! `metadump all` (1.4.31+), which walks the LRUs and can miss an item the server moves
//! between LRU segments during the walk.

use std::collections::BinaryHeap;
use std::time::Duration;

use session_core::{StorageKey, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::{STORE, unavailable};

/// How often a dump is asked for again while the crawler is busy with another one.
const BUSY_RETRIES: u32 = 50;
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// The `limit` smallest session keys after `after` on `server` (items named `prefix` + 64
/// hex digits), in order, and whether there are more. Memory is bounded by `limit`: the dump
/// streams through a heap of that size.
pub(crate) async fn keys_after(
    server: &str,
    prefix: &str,
    after: Option<StorageKey>,
    limit: usize,
) -> Result<(Vec<StorageKey>, bool), StoreError> {
    let mut walk = Walk::Hash;
    for _ in 0..BUSY_RETRIES {
        match dump(server, walk, prefix, after, limit).await? {
            Dump::Keys(keys, more) => return Ok((keys, more)),
            Dump::Busy => tokio::time::sleep(BUSY_PAUSE).await,
            Dump::Unknown if walk == Walk::Hash => walk = Walk::Lru,
            Dump::Unknown => {
                return Err(StoreError::backend(
                    STORE,
                    format!(
                        "{server} cannot list its keys: `lru_crawler metadump` needs memcached 1.4.31 or later with the LRU crawler on"
                    ),
                ));
            }
        }
    }
    Err(unavailable(
        server,
        "the LRU crawler stayed busy with another metadump",
    ))
}

/// How a dump walks the server's items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// `metadump hash`: the hash table.
    Hash,
    /// `metadump all`: every LRU.
    Lru,
}

/// What one dump answered.
enum Dump {
    /// The keys, and whether there are more.
    Keys(Vec<StorageKey>, bool),
    /// Another dump is running.
    Busy,
    /// The server does not know this kind of dump.
    Unknown,
}

async fn dump(
    server: &str,
    walk: Walk,
    prefix: &str,
    after: Option<StorageKey>,
    limit: usize,
) -> Result<Dump, StoreError> {
    let io = |e: std::io::Error| unavailable(server, e);
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let command: &[u8] = match walk {
        Walk::Hash => b"lru_crawler metadump hash\r\n",
        Walk::Lru => b"lru_crawler metadump all\r\n",
    };
    stream.write_all(command).await.map_err(io)?;
    let mut lines = BufReader::new(stream);
    let mut heap = BinaryHeap::with_capacity(limit + 1);
    let mut more = false;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(unavailable(server, "the metadump ended early"));
        }
        let text = line.trim_end();
        // `NOTSTARTED`: `metadump all` of a server without items.
        if text == "END" || text.starts_with("NOTSTARTED") {
            break;
        }
        if text.starts_with("BUSY") {
            return Ok(Dump::Busy);
        }
        if ["ERROR", "CLIENT_ERROR", "BADCLASS"]
            .iter()
            .any(|e| text.starts_with(e))
        {
            return Ok(Dump::Unknown);
        }
        let Some(key) = text
            .strip_prefix("key=")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|raw| session_key(raw, prefix))
        else {
            continue;
        };
        if after.is_some_and(|a| key <= a) {
            continue;
        }
        heap.push(key);
        if heap.len() > limit {
            heap.pop();
            more = true;
        }
    }
    Ok(Dump::Keys(heap.into_sorted_vec(), more))
}

/// The storage key in a dumped (URL-encoded) item key, when it is one of this prefix.
fn session_key(raw: &str, prefix: &str) -> Option<StorageKey> {
    let decoded = percent_decode(raw)?;
    StorageKey::parse_hex(decoded.strip_prefix(prefix)?)
}

fn percent_decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumped_keys_are_decoded_and_filtered_by_prefix() {
        let hex = "ab".repeat(32);
        let key = StorageKey::parse_hex(&hex).unwrap();
        assert_eq!(session_key(&format!("s%3A{hex}"), "s:"), Some(key));
        assert_eq!(session_key(&format!("s:{hex}"), "s:"), Some(key));
        assert_eq!(session_key(&format!("other:{hex}"), "s:"), None);
        assert_eq!(session_key("s%3Ashort", "s:"), None);
        assert_eq!(session_key("s%zz", "s:"), None);
    }
}
