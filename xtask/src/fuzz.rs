//! `cargo xtask fuzz [--seconds N]`: runs every cargo-fuzz target in `fuzz/` for N seconds
//! (default 30) and prints corpus sizes and executions.
//!
//! cargo-fuzz normally wants a nightly toolchain for its sanitizers; here the targets run
//! with `--sanitizer none`, which stable Rust builds (libFuzzer's coverage instrumentation
//! uses only stable `-C` flags). If cargo-fuzz cannot be installed or a target cannot be
//! built on this toolchain, the run says so plainly and skips, rather than fail the build.

use anyhow::{Context, Result};
use std::fmt::Write as _;

use crate::util::{cargo, have, phase, root};

const TARGETS: [&str; 4] = ["cookie", "session_id", "envelope", "mongo_keys"];

pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let seconds: u64 = match args.iter().position(|a| a == "--seconds") {
        Some(i) => args.get(i + 1).context("--seconds N")?.parse()?,
        None => 30,
    };
    if !have("cargo-fuzz") {
        phase("fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
        let installed = cargo().args(["install", "cargo-fuzz", "--locked"]).status();
        if !installed.is_ok_and(|s| s.success()) {
            println!("fuzz: SKIPPED — cargo-fuzz could not be installed on this machine");
            return Ok(());
        }
    }
    let dir = root().join("fuzz");
    let mut table = String::from(
        "| target | seconds | executions | exec/s | corpus entries | coverage |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for target in TARGETS {
        phase(&format!(
            "fuzz: {target} for {seconds} s (cargo fuzz run -s none)"
        ));
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let out = cargo()
            .current_dir(&dir)
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .output()
            .context("could not run cargo fuzz")?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // Only a toolchain that cannot build cargo-fuzz targets is a skip; a target that
            // does not compile (an `error[E…]` from rustc) is a failure like a crash.
            if !log.contains("error[E") && (log.contains("-Z") || log.contains("nightly")) {
                eprintln!("{log}");
                println!(
                    "fuzz: SKIPPED {target} — this toolchain cannot build cargo-fuzz targets (a nightly toolchain is needed here)"
                );
                continue;
            }
            eprintln!("{log}");
            anyhow::bail!(
                "fuzz target {target} failed: it does not build, or a crash or an assertion (see the log above)"
            );
        }
        // libFuzzer's last status line: `#12345 DONE cov: 456 ft: 789 corp: 12/345b ... exec/s: 678`.
        let done = log
            .lines()
            .rev()
            .find(|l| l.contains("DONE") || l.contains("exec/s"))
            .unwrap_or_default();
        let word = |name: &str| -> String {
            done.split_whitespace()
                .skip_while(|w| *w != name)
                .nth(1)
                .map(|w| w.trim_end_matches(',').to_owned())
                .unwrap_or_else(|| "?".into())
        };
        let execs = done
            .split_whitespace()
            .next()
            .unwrap_or("#?")
            .trim_start_matches('#');
        let corpus_entries = word("corp:").split('/').next().unwrap_or("?").to_owned();
        writeln!(
            table,
            "| {target} | {seconds} | {execs} | {} | {corpus_entries} | {} |",
            word("exec/s:"),
            word("cov:")
        )?;
    }
    println!("\n{table}");
    std::fs::write(root().join("target/fuzz-results.md"), &table)?;
    Ok(())
}
