//! Several processes sharing one session directory: this program updates sessions in a
//! `DiskStore` root that other processes use at the same time. The crate's tests run it as
//! the "other process" (and kill it mid-write to check crash safety).
//!
//! ```sh
//! disk_hammer write-forever <root> <key-hex> [first]  # rewrite one session until killed
//! disk_hammer add-keys <root> <name> <n> <key-hex>... # n rounds of new keys per session
//! ```

use std::time::Duration;

use session_core::{Changes, SessionStore, StorageKey, Timestamp};
use session_disk::{DiskStore, Fsync};

/// The value written in round `round`: 256 KiB of one byte, so a torn write would show.
fn value(round: u64) -> Vec<u8> {
    vec![(round % 251) as u8; 256 * 1024]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: disk_hammer write-forever <root> <key> | add-keys <root> <name> <n> <key>...";
    let root = args.get(1).ok_or(usage)?;
    let store = DiskStore::builder(root).fsync(Fsync::Never).open()?;
    let parse = |hex: &String| StorageKey::parse_hex(hex).ok_or("bad key");
    let later = || Timestamp::now().saturating_add(Duration::from_secs(3600));
    match args.first().map(String::as_str) {
        Some("write-forever") => {
            let key = parse(args.get(2).ok_or(usage)?)?;
            let first: u64 = args.get(3).map_or(Ok(1), |f| f.parse())?;
            // Bounded: the parent kills it long before this ends.
            for round in first..first + 1_000_000 {
                let mut changes = Changes::new();
                changes.set("v", value(round));
                changes.set("round", round.to_le_bytes().to_vec());
                store.update(&key, &changes, later()).await?;
            }
        }
        Some("add-keys") => {
            let name = args.get(2).ok_or(usage)?;
            let n: u32 = args.get(3).ok_or(usage)?.parse()?;
            let keys = args[4..].iter().map(parse).collect::<Result<Vec<_>, _>>()?;
            for i in 0..n {
                for key in &keys {
                    let mut changes = Changes::new();
                    changes.set(format!("{name}-{i}"), vec![1]);
                    if !store.update(key, &changes, later()).await? {
                        return Err("session vanished".into());
                    }
                }
            }
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
