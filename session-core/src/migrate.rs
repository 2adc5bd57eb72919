//! Copying every live session from one store to another, keyed by the same storage keys, so
//! every cookie in the wild keeps working against the new store: what `sessions migrate`
//! runs.
//!
//! A migration never overwrites: a session already at the destination is compared and left
//! as it is (identical: it was copied before; different: it changed there since, and the
//! newer copy wins). So a migration can be stopped and run again, and can run while the
//! application serves through a [`FallbackStore`](crate::FallbackStore).
//!
//! ```
//! use std::sync::Arc;
//! use session_core::migrate::{MigrateError, Migration};
//! use session_core::SessionStore;
//!
//! async fn move_all(
//!     old: Arc<dyn SessionStore>,
//!     new: Arc<dyn SessionStore>,
//! ) -> Result<u64, MigrateError> {
//!     let summary = Migration::new(old, new)
//!         .run(|so_far| eprintln!("{} sessions read", so_far.listed))
//!         .await?;
//!     Ok(summary.copied)
//! }
//! ```

use std::fmt;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::error::StoreError;
use crate::fallback::{Copied, copy_record};
use crate::id::StorageKey;
use crate::record::Record;
use crate::scan::{Scan, Scanned};
use crate::store::SessionStore;
use crate::time::Timestamp;

/// How many failures a [`Summary`] keeps the reasons of.
pub const FAILURES_KEPT: usize = 20;

/// A copy of every live session of `from` into `to`.
#[derive(Debug)]
#[must_use]
pub struct Migration {
    from: Arc<dyn SessionStore>,
    to: Arc<dyn SessionStore>,
    page_size: usize,
    parallel: usize,
    dry_run: bool,
}

/// What a migration did, so far or in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Keys the source listed.
    pub listed: u64,
    /// Sessions written to the destination (with `dry_run`: that would be written).
    pub copied: u64,
    /// Sessions the destination already held, identical: copied by an earlier run.
    pub identical: u64,
    /// Sessions the destination already held with other data or expiry: they changed there
    /// since (through a [`FallbackStore`](crate::FallbackStore)) and are kept as they are.
    pub changed_at_destination: u64,
    /// Listed but not live when read or about to be written: expired (or ended) during the
    /// copy, and not copied.
    pub expired: u64,
    /// Copied, then deleted again because the source no longer held them: a logout that ran
    /// during the copy.
    pub withdrawn: u64,
    /// Records the source holds damaged (unreadable), not copied.
    pub damaged: u64,
    /// Sessions the destination refused (too large for it, for one), not copied.
    pub failed: u64,
    /// The first [`FAILURES_KEPT`] damaged and refused records, with the reason.
    pub failures: Vec<Failure>,
}

impl Summary {
    /// Sessions not copied because the destination already held them.
    pub fn skipped(&self) -> u64 {
        self.identical + self.changed_at_destination
    }

    fn fail(&mut self, key: StorageKey, reason: &StoreError) {
        if self.failures.len() < FAILURES_KEPT {
            self.failures.push(Failure {
                key,
                reason: reason.to_string(),
            });
        }
    }
}

/// One session a migration could not copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its storage key.
    pub key: StorageKey,
    /// Why.
    pub reason: String,
}

/// A migration stopped by a store failure (`Unavailable`, `Backend`, …): what it had done,
/// and the error. Running it again goes on where it stopped (sessions already copied count
/// as [`Summary::identical`]).
#[derive(Debug)]
pub struct MigrateError {
    /// What was done before the failure.
    pub summary: Summary,
    /// The failure.
    pub source: StoreError,
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stopped after {} sessions: {}",
            self.summary.listed, self.source
        )
    }
}

impl std::error::Error for MigrateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What became of one record.
enum Outcome {
    Copied,
    Identical,
    Changed,
    Expired,
    Withdrawn,
    Refused(StorageKey, StoreError),
}

impl Migration {
    /// A migration from `from` into `to`: 500 keys a page, 32 sessions in flight.
    pub fn new(from: Arc<dyn SessionStore>, to: Arc<dyn SessionStore>) -> Self {
        Self {
            from,
            to,
            page_size: 500,
            parallel: 32,
            dry_run: false,
        }
    }

    /// About how many keys are read from the source a page (at least 1).
    pub fn page_size(mut self, keys: usize) -> Self {
        self.page_size = keys.max(1);
        self
    }

    /// How many sessions are read and written at once (at least 1).
    pub fn parallel(mut self, sessions: usize) -> Self {
        self.parallel = sessions.max(1);
        self
    }

    /// With `true`, reads both stores and counts what would be copied, writing nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Copies every live session, calling `progress` with the totals after each page.
    ///
    /// # Errors
    /// [`MigrateError`] when either store fails (other than a damaged source record or a
    /// destination refusing one record as [`StoreError::TooLarge`], which are counted in
    /// [`Summary::failed`] and [`Summary::damaged`]).
    pub async fn run(self, mut progress: impl FnMut(&Summary)) -> Result<Summary, MigrateError> {
        let mut summary = Summary::default();
        let mut scan = Scan::new(self.from.clone())
            .page_size(self.page_size)
            .parallel(self.parallel);
        loop {
            let page = match scan.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(source) => return Err(MigrateError { summary, source }),
            };
            if let Err(source) = self.copy_page(page, &mut summary).await {
                return Err(MigrateError { summary, source });
            }
            progress(&summary);
        }
        Ok(summary)
    }

    async fn copy_page(&self, page: Vec<Scanned>, summary: &mut Summary) -> Result<(), StoreError> {
        let mut tasks = JoinSet::new();
        let mut failure = None;
        for found in page {
            summary.listed += 1;
            let record = match found {
                Scanned::Live(record) => record,
                Scanned::NotLive(_) => {
                    summary.expired += 1;
                    continue;
                }
                Scanned::Damaged(key, e) => {
                    summary.damaged += 1;
                    summary.fail(key, &e);
                    continue;
                }
            };
            while tasks.len() >= self.parallel {
                tally(tasks.join_next().await, summary, &mut failure);
            }
            let (from, to, dry_run) = (self.from.clone(), self.to.clone(), self.dry_run);
            tasks.spawn(async move { copy_one(&*from, &*to, record, dry_run).await });
        }
        while let Some(joined) = tasks.join_next().await {
            tally(Some(joined), summary, &mut failure);
        }
        failure.map_or(Ok(()), Err)
    }
}

type Joined = Result<Result<Outcome, StoreError>, tokio::task::JoinError>;

fn tally(joined: Option<Joined>, summary: &mut Summary, failure: &mut Option<StoreError>) {
    let Some(joined) = joined else { return };
    let outcome = joined
        .map_err(|e| StoreError::backend("migrate", e))
        .flatten();
    match outcome {
        Ok(Outcome::Copied) => summary.copied += 1,
        Ok(Outcome::Identical) => summary.identical += 1,
        Ok(Outcome::Changed) => summary.changed_at_destination += 1,
        Ok(Outcome::Expired) => summary.expired += 1,
        Ok(Outcome::Withdrawn) => summary.withdrawn += 1,
        Ok(Outcome::Refused(key, e)) => {
            summary.failed += 1;
            summary.fail(key, &e);
        }
        Err(e) => {
            failure.get_or_insert(e);
        }
    }
}

/// Copies one live record unless the destination holds its key: a `create` first (most
/// keys are new), and only when the key is taken a `load` to tell a repeat from a change.
async fn copy_one(
    from: &dyn SessionStore,
    to: &dyn SessionStore,
    record: Record,
    dry_run: bool,
) -> Result<Outcome, StoreError> {
    if record.is_expired_at(Timestamp::now()) {
        return Ok(Outcome::Expired);
    }
    if dry_run {
        return Ok(match to.load(&record.key).await? {
            None => Outcome::Copied,
            Some(there) => compared(&there, &record),
        });
    }
    match copy_record(from, to, &record).await {
        Ok(Copied::Written) => Ok(Outcome::Copied),
        Ok(Copied::Withdrawn) => Ok(Outcome::Withdrawn),
        // Taken by a session (compared) or a forward pointer (a login moved it on there).
        Ok(Copied::Taken) => Ok(match to.load(&record.key).await? {
            Some(there) => compared(&there, &record),
            None => Outcome::Changed,
        }),
        Err(e @ StoreError::TooLarge { .. }) => Ok(Outcome::Refused(record.key, e)),
        Err(e) => Err(e),
    }
}

fn compared(there: &Record, record: &Record) -> Outcome {
    if there == record {
        Outcome::Identical
    } else {
        Outcome::Changed
    }
}
