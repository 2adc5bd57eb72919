//! `cargo xtask bench`: builds the bench crate in release and runs each workload in a fresh
//! process, printing a markdown table.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, phase, root, run};

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    phase("build: cargo build --release -p session-bench");
    run(cargo().args(["build", "--release", "-p", "session-bench"]))?;
    let exe = root().join("target/release/session-bench");

    let sizes: &[&str] = if quick {
        &["10000"]
    } else {
        &["100000", "1000000"]
    };
    let mut rows = Vec::new();
    for n in sizes {
        phase(&format!("memory: {n} sessions"));
        rows.push(result_line(Command::new(&exe).args(["memory", n]))?);
    }

    println!("\n| workload | sessions | payload B | bytes/session | ratio to payload |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| memory store | {} | {} | {} | {} |",
            field(row, "sessions"),
            field(row, "payload_bytes"),
            field(row, "bytes_per_session"),
            field(row, "ratio")
        );
    }
    Ok(())
}

/// Runs a workload and returns its `RESULT` line.
fn result_line(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .map(str::to_owned)
        .context("the workload printed no RESULT line")
}

/// The value of `key=value` in a result line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("?")
}
