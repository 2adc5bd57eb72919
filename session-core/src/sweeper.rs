//! Background removal of expired records for stores without a native TTL.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::SessionStore;

/// Runs [`SessionStore::delete_expired`] every `every` (the first run after one interval)
/// until `cancel` is cancelled; a sweep in progress is abandoned at cancellation. Failures
/// are logged with `tracing` and the next sweep tries again.
///
/// Must be called inside a tokio runtime. `every` is at least one millisecond.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use session_core::{spawn_sweeper, CancellationToken, SessionStore};
///
/// # async fn demo(store: Arc<dyn SessionStore>) {
/// let cancel = CancellationToken::new();
/// let sweeper = spawn_sweeper(store, Duration::from_secs(60), cancel.clone());
/// // ... at shutdown:
/// cancel.cancel();
/// sweeper.await.expect("the sweeper does not panic");
/// # }
/// ```
pub fn spawn_sweeper(
    store: Arc<dyn SessionStore>,
    every: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let every = every.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                swept = store.delete_expired() => match swept {
                    Ok(count) => tracing::debug!(count, "swept expired sessions"),
                    Err(error) => tracing::warn!(%error, "sweeping expired sessions failed"),
                },
            }
        }
    })
}
