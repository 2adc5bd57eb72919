//! `cargo xtask bench`: builds the bench crate in release and runs each workload in a fresh
//! process, printing markdown tables.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, phase, root, run, spawn_listening};

pub(crate) fn bench(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    phase("build: cargo build --release -p session-bench");
    run(cargo().args(["build", "--release", "-p", "session-bench"]))?;
    let exe = root().join("target/release/session-bench");

    cycles(&exe, quick)?;
    http(&exe, quick)?;
    memory(&exe, quick)?;
    Ok(())
}

/// The session cycle (load, change one key, save) per store at 16 tasks, rounds alternating
/// between stores in one run.
fn cycles(exe: &std::path::Path, quick: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("session-bench-disk-{}", std::process::id()));
    let specs = [
        "memory".to_owned(),
        format!("disk-never:{}", dir.join("never").display()),
        format!("disk-always:{}", dir.join("always").display()),
    ];
    let (rounds, secs, sessions) = if quick {
        (1, "1", "1000")
    } else {
        (3, "5", "10000")
    };
    let tasks = "16";
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); specs.len()];
    for round in 1..=rounds {
        for (spec, out) in specs.iter().zip(&mut samples) {
            phase(&format!(
                "cycle: {spec}, {tasks} tasks, round {round}/{rounds}"
            ));
            let line = result_line(Command::new(exe).args(["cycle", spec, tasks, secs, sessions]))?;
            out.push(field(&line, "cycles_per_sec").parse()?);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let base = median(&samples[0]);
    println!("\n| store | tasks | cycles/s (median) | rounds min–max | ratio to memory |");
    println!("|---|---:|---:|---|---:|");
    for (spec, s) in specs.iter().zip(&samples) {
        let name = spec.split(':').next().unwrap_or(spec);
        println!(
            "| {name} | {tasks} | {:.0} | {} | {:.3} |",
            median(s),
            spread(s),
            median(s) / base
        );
    }
    Ok(())
}

fn memory(exe: &std::path::Path, quick: bool) -> Result<()> {
    let sizes: &[&str] = if quick {
        &["10000"]
    } else {
        &["100000", "1000000"]
    };
    let mut rows = Vec::new();
    for n in sizes {
        phase(&format!("memory: {n} sessions"));
        rows.push(result_line(Command::new(exe).args(["memory", n]))?);
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

/// The counter route with sessions (memory store) against the same app without, under wrk,
/// alternating rounds A B A B in one run.
fn http(exe: &std::path::Path, quick: bool) -> Result<()> {
    crate::servers::ensure_packages(&[("wrk", "wrk")])?;
    let (rounds, secs, connections) = if quick { (1, 2, 64) } else { (3, 10, 64) };
    let mut results: Vec<(&str, Vec<f64>)> = vec![("bare", vec![]), ("sessions", vec![])];
    for round in 1..=rounds {
        for (variant, samples) in &mut results {
            phase(&format!(
                "http: {variant}, round {round}/{rounds}, wrk -c{connections} -d{secs}s"
            ));
            let (server, addr) = spawn_listening(
                &format!("session-bench serve {variant}"),
                Command::new(exe).args(["serve", variant, "127.0.0.1:0"]),
            )?;
            let cookies = prime_cookies(&addr, variant, 1000)?;
            let rps = wrk(&addr, &cookies, secs, connections)?;
            drop(server);
            eprintln!("    {rps:.0} requests/s");
            samples.push(rps);
        }
    }
    let bare = median(&results[0].1);
    let sessions = median(&results[1].1);
    println!(
        "\n| workload | connections | bare axum req/s | with sessions req/s | ratio | rounds (bare; sessions) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| counter route, memory store | {connections} | {bare:.0} | {sessions:.0} | {:.2} | {}; {} |",
        sessions / bare,
        spread(&results[0].1),
        spread(&results[1].1)
    );
    Ok(())
}

/// One session cookie per simulated visitor, from real responses. The bare app has no
/// sessions, so it gets stand-ins of the same length (the requests stay byte-identical).
fn prime_cookies(addr: &str, variant: &str, n: usize) -> Result<Vec<String>> {
    let mut cookies = Vec::with_capacity(n);
    for i in 0..n {
        if variant == "bare" {
            cookies.push(format!("id={:0>66}", i));
            continue;
        }
        let mut stream = TcpStream::connect(addr)?;
        write!(
            stream,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        let cookie = reply
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|v| v.split(';').next())
            .context("the sessions server set no cookie")?;
        cookies.push(cookie.to_owned());
    }
    Ok(cookies)
}

fn wrk(addr: &str, cookies: &[String], secs: u32, connections: u32) -> Result<f64> {
    let script = std::env::temp_dir().join(format!("session-bench-{}.lua", std::process::id()));
    let list: Vec<String> = cookies.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        &script,
        format!(
            "local cookies = {{{}}}\nrequest = function()\n  return wrk.format(nil, nil, {{Cookie = cookies[math.random(#cookies)]}})\nend\n",
            list.join(",")
        ),
    )?;
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .output()
        .context("could not run wrk")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(errors) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("wrk saw errors: {errors}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

pub(crate) fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn spread(samples: &[f64]) -> String {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}–{max:.0}")
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
