//! Counters and histograms through the [`metrics`](https://docs.rs/metrics) facade, with the
//! crate feature `metrics` (off by default). The application installs the recorder of its
//! choice (a Prometheus exporter, StatsD, …); nothing is recorded before it does, and
//! without the feature the calls below compile to nothing.
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | `session_store_calls_total` | counter | `op` | every store call the manager makes: `load`, `create`, `update`, `touch`, `delete`, `retire`, `forwarded`, `sessions_of`, `delete_sessions_of`, `write_capped` |
//! | `session_store_call_seconds` | histogram | `op` | how long each of those calls took |
//! | `session_store_errors_total` | counter | `op`, `kind` | the calls that failed, by [`error_kind`]: `unavailable`, `backend`, `corrupt`, `too_large`, `config`, `unsupported`, `id_collision` |
//! | `session_damaged_records_total` | counter | | damaged or foreign records the HTTP layer found and started afresh from |
//! | `session_unavailable_responses_total` | counter | | requests the HTTP layer answered 503 because the store failed |
//! | `session_fail_open_total` | counter | | requests served with an unsaved empty session because the store failed (`fail_open`) |
//!
//! The tracing spans (`session.load`, `session.save`) keep their names beside these.
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! use session_core::metrics::STORE_CALLS;
//! assert_eq!(STORE_CALLS, "session_store_calls_total");
//! # }
//! ```

use crate::StoreError;

/// Store calls made by the manager, labelled `op`.
pub const STORE_CALLS: &str = "session_store_calls_total";
/// Seconds each store call took, labelled `op`.
pub const STORE_CALL_SECONDS: &str = "session_store_call_seconds";
/// Store calls that failed, labelled `op` and `kind`.
pub const STORE_ERRORS: &str = "session_store_errors_total";
/// Damaged records found by the HTTP layer.
pub const DAMAGED_RECORDS: &str = "session_damaged_records_total";
/// Requests answered 503 because the store failed.
pub const UNAVAILABLE_RESPONSES: &str = "session_unavailable_responses_total";
/// Requests served failing open.
pub const FAIL_OPEN: &str = "session_fail_open_total";

/// The `kind` label of a store error.
///
/// ```
/// use session_core::{StoreError, metrics::error_kind};
///
/// assert_eq!(error_kind(&StoreError::IdCollision), "id_collision");
/// assert_eq!(error_kind(&StoreError::unavailable("redis", "down")), "unavailable");
/// ```
pub fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::IdCollision => "id_collision",
        StoreError::Unavailable { .. } => "unavailable",
        StoreError::Backend { .. } => "backend",
        StoreError::Corrupt { .. } => "corrupt",
        StoreError::TooLarge { .. } => "too_large",
        StoreError::Config { .. } => "config",
        StoreError::Unsupported { .. } => "unsupported",
    }
}

/// The keys of one operation's counter and histogram, built at compile time: a key built
/// at each call (what `counter!` does with a label that is not a literal) costs an
/// allocation even when no recorder is installed.
#[cfg(feature = "metrics")]
macro_rules! op_keys {
    ($($op:literal),* $(,)?) => {
        fn op_keys(op: &str) -> Option<(&'static ::metrics::Key, &'static ::metrics::Key)> {
            use ::metrics::{Key, Label};
            match op {
                $($op => {
                    static LABELS: [Label; 1] = [Label::from_static_parts("op", $op)];
                    static CALLS: Key = Key::from_static_parts(STORE_CALLS, &LABELS);
                    static SECONDS: Key = Key::from_static_parts(STORE_CALL_SECONDS, &LABELS);
                    Some((&CALLS, &SECONDS))
                })*
                _ => None,
            }
        }
    };
}

#[cfg(feature = "metrics")]
op_keys!(
    "load",
    "create",
    "update",
    "touch",
    "delete",
    "retire",
    "forwarded",
    "sessions_of",
    "delete_sessions_of",
    "write_capped",
);

#[cfg(feature = "metrics")]
static METADATA: ::metrics::Metadata<'static> =
    ::metrics::Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// Awaits one store call, counting and timing it as `op`.
#[cfg(feature = "metrics")]
pub(crate) async fn store_call<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = call.await;
    let elapsed = started.elapsed();
    if let Some((calls, seconds)) = op_keys(op) {
        ::metrics::with_recorder(|recorder| {
            recorder.register_counter(calls, &METADATA).increment(1);
            recorder
                .register_histogram(seconds, &METADATA)
                .record(elapsed);
        });
    }
    if let Err(error) = &result {
        ::metrics::counter!(STORE_ERRORS, "op" => op, "kind" => error_kind(error)).increment(1);
    }
    result
}

/// Counts a damaged record the HTTP layer found.
#[inline]
pub fn damaged_record() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(DAMAGED_RECORDS).increment(1);
}

/// Counts a request answered 503 because the store failed.
#[inline]
pub fn unavailable_response() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(UNAVAILABLE_RESPONSES).increment(1);
}

/// Counts a request served failing open.
#[inline]
pub fn fail_open() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(FAIL_OPEN).increment(1);
}
