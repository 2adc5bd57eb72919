//! Listing a server's session keys with `lru_crawler metadump all` (memcached 1.4.31+),
//! for [`SessionStore::scan`](session_core::SessionStore::scan).

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
    for _ in 0..BUSY_RETRIES {
        match dump(server, prefix, after, limit).await? {
            Some(found) => return Ok(found),
            None => tokio::time::sleep(BUSY_PAUSE).await,
        }
    }
    Err(unavailable(
        server,
        "the LRU crawler stayed busy with another metadump",
    ))
}

/// One dump; `None` when the crawler is busy.
async fn dump(
    server: &str,
    prefix: &str,
    after: Option<StorageKey>,
    limit: usize,
) -> Result<Option<(Vec<StorageKey>, bool)>, StoreError> {
    let io = |e: std::io::Error| unavailable(server, e);
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    stream
        .write_all(b"lru_crawler metadump all\r\n")
        .await
        .map_err(io)?;
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
        if text == "END" {
            break;
        }
        if text.starts_with("BUSY") {
            return Ok(None);
        }
        if text.starts_with("ERROR") || text.starts_with("CLIENT_ERROR") {
            return Err(StoreError::backend(
                STORE,
                format!(
                    "{server} cannot list its keys ({text}): `lru_crawler metadump` needs memcached 1.4.31 or later with the LRU crawler on"
                ),
            ));
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
    Ok(Some((heap.into_sorted_vec(), more)))
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
