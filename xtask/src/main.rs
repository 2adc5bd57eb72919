//! Project automation, run as `cargo xtask <command>`:
//!
//! - `test-backends [--no-lint] [-p CRATE]… [-- TEST-ARGS]`: format check, clippy, docs, then every
//!   crate's tests (or only those of the crates named) against real servers started on
//!   127.0.0.1, and a table of the results. Arguments after `--` go to every test binary
//!   (a name filter, `--nocapture` for the drills' figures).
//! - `bench [--quick]`: the benchmarks (see BENCHMARKS.md).
//! - `chart [REPORT.md] [OUT.svg]`: the bench's chart, redrawn from a saved report.
//! - `fuzz [--seconds N]`: every cargo-fuzz target for N seconds (see FUZZING.md).

// A command-line tool: it reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

mod bench;
mod chart;
mod fuzz;
mod servers;
mod tests;
mod util;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test-backends") => tests::test_backends(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("chart") => chart::chart(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask test-backends [--no-lint] [-p CRATE]… [-- TEST-ARGS] | bench [--quick] | chart [REPORT.md] [OUT.svg] | fuzz [--seconds N]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
