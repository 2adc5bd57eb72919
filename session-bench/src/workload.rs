//! What every workload of the cycle bench is made of, ours and the anchors' alike.

use std::sync::Arc;

use anyhow::Result;

/// One cycle in flight.
pub(crate) type CycleFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// One loop body of a workload: given a random number, do one cycle.
pub(crate) type Cycle = Arc<dyn Fn(u64) -> CycleFuture + Send + Sync>;

/// The shape of a session: `SESSION_BENCH_SHAPE=<keys>x<value bytes>` (default `5x40`, the
/// figures in BENCHMARKS.md unless a table says otherwise).
fn shape() -> (u64, usize) {
    static SHAPE: std::sync::OnceLock<(u64, usize)> = std::sync::OnceLock::new();
    *SHAPE.get_or_init(|| {
        std::env::var("SESSION_BENCH_SHAPE")
            .ok()
            .and_then(|s| {
                let (k, b) = s.split_once('x')?;
                Some((k.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or((5, 40))
    })
}

/// How many keys a session has.
pub(crate) fn keys() -> u64 {
    shape().0
}

/// The value a cycle writes for `n` (40 bytes by default).
pub(crate) fn value(n: u64) -> String {
    format!("{n:0width$}", width = shape().1)
}

/// About the bytes a session of the shape holds: each key's value and ~10 bytes of name and
/// encoding (250 for the default `5x40`).
pub(crate) fn session_bytes() -> usize {
    let (keys, bytes) = shape();
    usize::try_from(keys)
        .unwrap_or(usize::MAX)
        .saturating_mul(bytes + 10)
}
