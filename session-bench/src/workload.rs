//! What every workload of the cycle bench is made of, ours and the anchors' alike.

use std::sync::Arc;

use anyhow::Result;

/// One cycle in flight.
pub(crate) type CycleFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// One loop body of a workload: given a random number, do one cycle.
pub(crate) type Cycle = Arc<dyn Fn(u64) -> CycleFuture + Send + Sync>;

/// The 40-byte value a cycle writes for `n`.
pub(crate) fn value(n: u64) -> String {
    format!("{n:040}")
}
