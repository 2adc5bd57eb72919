//! `sessions`: an operator's command line for session-core stores, each opened by the same
//! URL the application uses (`session_any::open`).
//!
//! ```text
//! sessions stats   URL                     live sessions, expired ones not yet swept, sizes, top owners
//! sessions list    URL --owner USER        a user's sessions (hashed keys, created, expires)
//! sessions revoke  URL --owner USER        log a user out everywhere
//! sessions revoke  URL --key KEY           end one session by its storage key
//! sessions purge   URL                     delete_expired once (the cron job)
//! sessions migrate FROM TO [--dry-run] [--resume]
//!                                          copy every live session, keys and expiry intact
//! ```
//!
//! Every command prints for a person by default and one JSON object with `--json`. Errors
//! are one line on stderr and exit status 1; bad arguments exit with 2.

// A binary: it owns the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod report;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use session_core::migrate::{Migration, Summary};
use session_core::{SessionStore, StorageKey};

use crate::report::{Stats, human_time, summary_json, summary_lines};

/// Inspect, purge and log out session stores, and move every live session to another store
/// with nobody logged out. STORE URLs are those the application opens (`memory://` aside),
/// e.g. redis://127.0.0.1:6379, file:///var/lib/app/sessions, postgres://user:pw@host/db.
#[derive(Debug, Parser)]
#[command(name = "sessions", version)]
struct Cli {
    /// Print one JSON object instead of text for a person.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live sessions, expired ones not yet swept, damaged records, sizes (p50/p99/max bytes of
    /// data) and the owners with the most sessions.
    Stats {
        /// The store.
        url: String,
        /// How many owners to show.
        #[arg(long, default_value_t = 5)]
        top: usize,
    },
    /// A user's live sessions: storage keys (never the bearer ids), created, expires.
    List {
        /// The store.
        url: String,
        /// The user.
        #[arg(long)]
        owner: String,
    },
    /// End sessions: every session of a user (log out everywhere) or one by its key.
    Revoke {
        /// The store.
        url: String,
        /// End every session of this user.
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        owner: Option<String>,
        /// End the session with this storage key (64 hex digits, as `list` shows it).
        #[arg(long)]
        key: Option<String>,
    },
    /// Delete expired records once and say how many (run it from cron for stores without a
    /// server TTL: files, SQL, memory).
    Purge {
        /// The store.
        url: String,
    },
    /// Copy every live session from FROM into TO under the same storage key, with its
    /// expiry, owner and data, so every cookie keeps working against TO. Never overwrites:
    /// a session already in TO is compared and kept.
    Migrate {
        /// The store to copy from.
        from: String,
        /// The store to copy into.
        to: String,
        /// Read both stores and count what would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Go on into a TO that already holds sessions (an interrupted migration, or a TO
        /// the application already writes to through a FallbackStore).
        #[arg(long)]
        resume: bool,
        /// Keys read from FROM a page.
        #[arg(long, default_value_t = 500)]
        page_size: usize,
        /// Sessions copied at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
}

/// A failure: one line for stderr.
type Failure = String;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let failed = match run(cli).await {
        Ok(code) => code != ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sessions: {message}");
            true
        }
    };
    // Exit here, without shutting the runtime down: the MongoDB driver ends its server
    // sessions from a task it spawns when its client is dropped, and a runtime shut down
    // under that task makes it panic, printing a backtrace after the command's own output.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(i32::from(failed));
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let json = cli.json;
    match cli.command {
        Command::Stats { url, top } => {
            let store = open(&url).await?;
            let stats = Stats::gather(store, top).await.map_err(|e| e.to_string())?;
            if json {
                println!("{}", stats.to_json());
            } else {
                print!("{}", stats.to_text(&session_any::redact(&url)));
            }
        }
        Command::List { url, owner } => {
            let store = open(&url).await?;
            let mut sessions = store.sessions_of(&owner).await.map_err(|e| e.to_string())?;
            sessions.sort_by_key(|s| s.created_at);
            if json {
                let list: Vec<serde_json::Value> = sessions
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "key": s.key.to_hex().as_str(),
                            "created_at": human_time(s.created_at),
                            "expires_at": human_time(s.expires_at),
                            "created_at_ms": s.created_at.as_unix_millis(),
                            "expires_at_ms": s.expires_at.as_unix_millis(),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "owner": owner, "sessions": list })
                );
            } else {
                println!("{} live sessions of {owner:?}", sessions.len());
                for s in &sessions {
                    println!(
                        "{}  created {}  expires {}",
                        s.key.to_hex().as_str(),
                        human_time(s.created_at),
                        human_time(s.expires_at)
                    );
                }
            }
        }
        Command::Revoke { url, owner, key } => {
            let store = open(&url).await?;
            let (ended, what) = match (owner, key) {
                (Some(owner), _) => (
                    store
                        .delete_sessions_of(&owner)
                        .await
                        .map_err(|e| e.to_string())?,
                    format!("of {owner:?}"),
                ),
                (None, Some(hex)) => {
                    let key = StorageKey::parse_hex(&hex).ok_or_else(|| {
                        format!("--key {hex:?} is not a storage key (64 hex digits, as `sessions list` shows)")
                    })?;
                    let live = store.load(&key).await.map_err(|e| e.to_string())?;
                    store.delete(&key).await.map_err(|e| e.to_string())?;
                    (u64::from(live.is_some()), format!("under key {hex}"))
                }
                (None, None) => return Err("revoke needs --owner or --key".into()),
            };
            if json {
                println!("{}", serde_json::json!({ "ended": ended }));
            } else {
                println!("ended {ended} session(s) {what}");
            }
        }
        Command::Purge { url } => {
            let store = open(&url).await?;
            let removed = store.delete_expired().await.map_err(|e| e.to_string())?;
            let native = store.expires_natively();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "removed": removed, "expires_natively": native })
                );
            } else if native {
                println!(
                    "removed {removed} expired records ({} removes expired sessions by itself)",
                    session_any::redact(&url)
                );
            } else {
                println!("removed {removed} expired records");
            }
        }
        Command::Migrate {
            from,
            to,
            dry_run,
            resume,
            page_size,
            parallel,
        } => {
            return migrate(&from, &to, dry_run, resume, page_size, parallel, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens `url`; `memory://` is refused: it lives inside one process, never this one.
async fn open(url: &str) -> Result<Arc<dyn SessionStore>, Failure> {
    if url.to_ascii_lowercase().starts_with("memory:") {
        return Err(format!(
            "{url}: a memory store lives inside the application's process; the command line cannot reach it"
        ));
    }
    session_any::open(url).await.map_err(|e| e.to_string())
}

/// A URL as compared for "the same store": scheme and host case, a trailing slash.
fn same_store(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let u = u.trim().trim_end_matches('/');
        match u.split_once("://") {
            Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            None => u.to_owned(),
        }
    };
    norm(a) == norm(b)
}

async fn migrate(
    from_url: &str,
    to_url: &str,
    dry_run: bool,
    resume: bool,
    page_size: usize,
    parallel: usize,
    json: bool,
) -> Result<ExitCode, Failure> {
    let (shown_from, shown_to) = (session_any::redact(from_url), session_any::redact(to_url));
    if same_store(from_url, to_url) {
        return Err(format!(
            "FROM and TO are the same store ({shown_from}); nothing to migrate"
        ));
    }
    let from = open(from_url).await?;
    let to = open(to_url).await?;
    let held = session_core::scan::holds_any(&*to)
        .await
        .map_err(|e| e.to_string())?;
    if held && !resume {
        return Err(format!(
            "{shown_to} already holds sessions; pass --resume to go on with a migration into it (sessions there are compared and kept, never overwritten)"
        ));
    }
    let total = count_keys(&*from, page_size).await?;
    let progress = Progress::new(total, json);
    let started = Instant::now();
    let result = Migration::new(from, to)
        .page_size(page_size)
        .parallel(parallel)
        .dry_run(dry_run)
        .run(|so_far| progress.update(so_far))
        .await;
    progress.finish();
    let elapsed = started.elapsed();
    let (summary, failure) = match result {
        Ok(summary) => (summary, None),
        Err(e) => (e.summary.clone(), Some(e.to_string())),
    };
    if json {
        println!(
            "{}",
            summary_json(&summary, dry_run, elapsed, failure.as_deref())
        );
    } else {
        let verb = if dry_run { "would copy" } else { "copied" };
        println!("{shown_from} -> {shown_to}: {verb} in {elapsed:.1?}");
        for line in summary_lines(&summary, dry_run) {
            println!("{line}");
        }
    }
    if let Some(failure) = failure {
        return Err(format!(
            "migration {failure}; run it again with --resume to go on"
        ));
    }
    if summary.failed > 0 {
        return Err(format!(
            "{} session(s) could not be copied into {shown_to}; the others were",
            summary.failed
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// How many keys `store` lists (a pass over keys only, for the progress bar's length).
async fn count_keys(store: &dyn SessionStore, page_size: usize) -> Result<u64, Failure> {
    let mut total = 0;
    let mut cursor = None;
    loop {
        let page = store
            .scan(cursor.as_ref(), page_size)
            .await
            .map_err(|e| e.to_string())?;
        total += page.keys.len() as u64;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(total),
        }
    }
}

/// A progress bar with rate and ETA on a terminal; otherwise a plain line after the first
/// page and then at most one a second (nothing with `--json`).
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    quiet: bool,
    last_line: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} sessions  {per_sec}  ETA {eta}  {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Self {
            bar,
            total,
            quiet,
            last_line: std::sync::Mutex::new(None),
        }
    }

    fn update(&self, so_far: &Summary) {
        if let Some(bar) = &self.bar {
            bar.set_position(so_far.listed);
            bar.set_message(format!("{} copied", so_far.copied));
            return;
        }
        if self.quiet {
            return;
        }
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *last = Some(Instant::now());
            eprintln!(
                "{}/{} sessions read, {} copied",
                so_far.listed, self.total, so_far.copied
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_store_is_recognised_through_case_and_a_trailing_slash() {
        assert!(same_store(
            "redis://127.0.0.1:6379",
            "REDIS://127.0.0.1:6379/"
        ));
        assert!(!same_store(
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6380"
        ));
        assert!(!same_store("file:///a", "file:///b"));
    }

    #[test]
    fn the_arguments_parse_as_documented() {
        Cli::try_parse_from(["sessions", "migrate", "file:///a", "redis://h", "--dry-run"])
            .unwrap();
        Cli::try_parse_from(["sessions", "--json", "stats", "redis://h"]).unwrap();
        assert!(Cli::try_parse_from(["sessions", "revoke", "redis://h"]).is_err());
        assert!(
            Cli::try_parse_from([
                "sessions",
                "revoke",
                "redis://h",
                "--owner",
                "a",
                "--key",
                "b"
            ])
            .is_err()
        );
    }
}
