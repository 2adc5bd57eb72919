//! What the commands print: `stats` gathered from a scan, a migration's summary, times.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use session_core::migrate::Summary;
use session_core::scan::{Scan, Scanned};
use session_core::{SessionStore, StoreError, Timestamp};

/// What `sessions stats` reports.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) live: u64,
    /// Listed but not live: expired and not yet swept (or ended while the scan ran).
    pub(crate) expired: u64,
    pub(crate) damaged: u64,
    /// Bytes of key names and values of each live session, sorted.
    sizes: Vec<u32>,
    /// The owners with the most live sessions, most first.
    pub(crate) top_owners: Vec<(String, u64)>,
    pub(crate) with_owner: u64,
}

impl Stats {
    /// A scan of `store` with its records read.
    pub(crate) async fn gather(
        store: Arc<dyn SessionStore>,
        top: usize,
    ) -> Result<Self, StoreError> {
        let mut stats = Self::default();
        let mut owners: HashMap<String, u64> = HashMap::new();
        let mut scan = Scan::new(store);
        while let Some(page) = scan.next_page().await? {
            for found in page {
                match found {
                    Scanned::Live(record) => {
                        stats.live += 1;
                        stats
                            .sizes
                            .push(u32::try_from(record.data_size()).unwrap_or(u32::MAX));
                        if let Some(owner) = record.owner {
                            stats.with_owner += 1;
                            *owners.entry(owner).or_default() += 1;
                        }
                    }
                    Scanned::NotLive(_) => stats.expired += 1,
                    Scanned::Damaged(..) => stats.damaged += 1,
                    _ => {}
                }
            }
        }
        stats.sizes.sort_unstable();
        let mut owners: Vec<(String, u64)> = owners.into_iter().collect();
        owners.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        owners.truncate(top);
        stats.top_owners = owners;
        Ok(stats)
    }

    /// The `q`-quantile (0.0 to 1.0) of live sessions' sizes, nearest rank; 0 with none.
    pub(crate) fn size_quantile(&self, q: f64) -> u32 {
        quantile(&self.sizes, q)
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "live": self.live,
            "expired_not_swept": self.expired,
            "damaged": self.damaged,
            "size_bytes": {
                "p50": self.size_quantile(0.5),
                "p99": self.size_quantile(0.99),
                "max": self.size_quantile(1.0),
            },
            "with_owner": self.with_owner,
            "top_owners": self.top_owners.iter()
                .map(|(owner, n)| serde_json::json!({ "owner": owner, "sessions": n }))
                .collect::<Vec<_>>(),
        })
    }

    pub(crate) fn to_text(&self, shown: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "store: {shown}");
        let _ = writeln!(out, "live sessions: {}", self.live);
        let _ = writeln!(out, "expired, not yet swept: {}", self.expired);
        let _ = writeln!(out, "damaged records: {}", self.damaged);
        let _ = writeln!(
            out,
            "size (bytes of data): p50 {}  p99 {}  max {}",
            self.size_quantile(0.5),
            self.size_quantile(0.99),
            self.size_quantile(1.0)
        );
        let _ = writeln!(out, "sessions with an owner: {}", self.with_owner);
        for (owner, n) in &self.top_owners {
            let _ = writeln!(out, "  {n:>8}  {owner}");
        }
        out
    }
}

/// Nearest-rank quantile of sorted `values`.
fn quantile(values: &[u32], q: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The lines `migrate` prints after the copy.
pub(crate) fn summary_lines(s: &Summary, dry_run: bool) -> Vec<String> {
    let row = |label: &str, n: u64, why: &str| format!("  {label:<10} {n:>8}{why}");
    let mut lines = vec![
        row("read", s.listed, ""),
        row(if dry_run { "to copy" } else { "copied" }, s.copied, ""),
        row(
            "skipped",
            s.skipped(),
            &format!(
                "  ({} identical, {} changed at the destination since and kept)",
                s.identical, s.changed_at_destination
            ),
        ),
        row("expired", s.expired, "  (expired or ended during the copy)"),
        row("withdrawn", s.withdrawn, "  (logged out during the copy)"),
        row("damaged", s.damaged, "  (unreadable at the source)"),
        row("failed", s.failed, ""),
    ];
    for f in &s.failures {
        lines.push(format!("    {}: {}", f.key.to_hex().as_str(), f.reason));
    }
    lines
}

pub(crate) fn summary_json(
    s: &Summary,
    dry_run: bool,
    elapsed: Duration,
    error: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "dry_run": dry_run,
        "read": s.listed,
        "copied": s.copied,
        "skipped": s.skipped(),
        "identical": s.identical,
        "changed_at_destination": s.changed_at_destination,
        "expired": s.expired,
        "withdrawn": s.withdrawn,
        "damaged": s.damaged,
        "failed": s.failed,
        "failures": s.failures.iter()
            .map(|f| serde_json::json!({ "key": f.key.to_hex().as_str(), "reason": f.reason }))
            .collect::<Vec<_>>(),
        "seconds": elapsed.as_secs_f64(),
        "error": error,
    })
}

/// `2026-12-06T04:05:06Z`: a timestamp in UTC, to the second.
pub(crate) fn human_time(t: Timestamp) -> String {
    let secs = t.as_unix_millis().div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        let at = |ms| human_time(Timestamp::from_unix_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_526_306_999), "2026-12-06T03:05:06Z");
        assert_eq!(at(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
