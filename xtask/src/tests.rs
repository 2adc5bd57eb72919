//! `cargo xtask test-backends`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::servers;
use crate::util::{cargo, phase, root, run};

/// Results of one crate.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: u64,
    failed: u64,
    /// Test binaries that crashed or printed no result line.
    broken: u64,
}

pub(crate) fn test_backends(args: &[String]) -> Result<()> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    // `-p CRATE` (repeatable): only those crates' tests, for a quick round while working.
    let only: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1].as_str())
        .collect();
    // Anything after `--` goes to every test binary (a filter, `--nocapture`).
    let test_args: &[String] = args
        .iter()
        .position(|a| a == "--")
        .map_or(&[], |at| &args[at + 1..]);
    if lint {
        phase("format check: cargo fmt --check");
        run(cargo().args(["fmt", "--all", "--check"]))?;
        phase("lint: cargo clippy --workspace --all-targets --all-features -- -D warnings");
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))?;
        phase("docs: cargo doc --workspace --no-deps --all-features (RUSTDOCFLAGS=-D warnings)");
        run(cargo()
            .args(["doc", "--workspace", "--no-deps", "--all-features"])
            .env("RUSTDOCFLAGS", "-D warnings"))?;
    }

    phase("build tests: cargo test --workspace --all-features --no-run");
    let binaries = build_test_binaries()?;

    phase("servers: provision and start on 127.0.0.1");
    let servers = servers::start_all()?;
    for (k, v) in &servers.env {
        eprintln!("    {k}={v}");
    }

    let mut table: BTreeMap<String, Tally> = BTreeMap::new();
    for bin in binaries
        .iter()
        .filter(|b| only.is_empty() || only.contains(&b.package.as_str()))
    {
        phase(&format!("tests: {} ({})", bin.package, bin.target));
        let mut cmd = Command::new(&bin.executable);
        cmd.current_dir(&bin.manifest_dir)
            .env("CARGO_MANIFEST_DIR", &bin.manifest_dir)
            .env("SESSION_TEST_REQUIRE_SERVERS", "1")
            .envs(&servers.env)
            .args(test_args);
        let tally = run_and_count(&mut cmd)?;
        add(table.entry(bin.package.clone()).or_default(), tally);
    }

    // Doc tests live in libraries: of the crates asked for, those with a `src/lib.rs`
    // (`cargo test --doc -p` refuses a binary-only crate).
    let with_docs: Vec<&str> = only
        .iter()
        .copied()
        .filter(|package| {
            binaries
                .iter()
                .find(|b| b.package == *package)
                .is_none_or(|b| b.manifest_dir.join("src/lib.rs").exists())
        })
        .collect();
    if only.is_empty() || !with_docs.is_empty() {
        phase("doc tests: cargo test --workspace --all-features --doc");
        let mut cmd = cargo();
        cmd.args(["test", "--all-features", "--doc", "--no-fail-fast"]);
        if only.is_empty() {
            cmd.arg("--workspace");
        }
        for package in &with_docs {
            cmd.args(["-p", package]);
        }
        let doc = run_and_count_doc(&mut cmd)?;
        for (package, tally) in doc {
            add(table.entry(package).or_default(), tally);
        }
    }
    drop(servers);

    print_table(&table);
    let total = table.values().fold(Tally::default(), |mut acc, t| {
        add(&mut acc, *t);
        acc
    });
    println!(
        "{} passed, {} failed",
        total.passed,
        total.failed + total.broken
    );
    if total.failed + total.broken > 0 {
        bail!("tests failed");
    }
    if total.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn add(into: &mut Tally, t: Tally) {
    into.passed += t.passed;
    into.failed += t.failed;
    into.broken += t.broken;
}

#[derive(Debug)]
struct TestBinary {
    package: String,
    target: String,
    executable: PathBuf,
    manifest_dir: PathBuf,
}

fn build_test_binaries() -> Result<Vec<TestBinary>> {
    let output = cargo()
        .args([
            "test",
            "--workspace",
            "--all-features",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo test --no-run")?;
    if !output.status.success() {
        bail!("building the tests failed");
    }
    let mut binaries = Vec::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
            continue;
        }
        let Some(executable) = msg["executable"].as_str() else {
            continue;
        };
        let manifest = PathBuf::from(msg["manifest_path"].as_str().unwrap_or_default());
        let manifest_dir = manifest.parent().map(PathBuf::from).unwrap_or_else(root);
        let package = manifest_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = msg["target"]["kind"][0].as_str().unwrap_or("test");
        let name = msg["target"]["name"].as_str().unwrap_or("?");
        binaries.push(TestBinary {
            package,
            target: format!("{kind} {name}"),
            executable: executable.into(),
            manifest_dir,
        });
    }
    binaries.sort_by(|a, b| (&a.package, &a.target).cmp(&(&b.package, &b.target)));
    Ok(binaries)
}

/// Runs a test binary, echoing its output, and counts its results.
fn run_and_count(cmd: &mut Command) -> Result<Tally> {
    let (lines, ok) = run_capturing(cmd)?;
    let mut tally = Tally::default();
    let mut saw_result = false;
    for line in &lines {
        if let Some((passed, failed)) = parse_result(line) {
            tally.passed += passed;
            tally.failed += failed;
            saw_result = true;
        }
    }
    if !saw_result || (!ok && tally.failed == 0) {
        tally.broken += 1;
    }
    Ok(tally)
}

/// Runs `cargo test --doc`, echoing its output, and counts results per package.
fn run_and_count_doc(cmd: &mut Command) -> Result<BTreeMap<String, Tally>> {
    let (lines, ok) = run_capturing(cmd)?;
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in &lines {
        if let Some(name) = line.trim().strip_prefix("Doc-tests ") {
            current = Some(name.trim().replace('_', "-"));
        } else if let Some((passed, failed)) = parse_result(line) {
            let entry = out
                .entry(current.clone().unwrap_or_else(|| "?".into()))
                .or_default();
            entry.passed += passed;
            entry.failed += failed;
        }
    }
    if !ok && out.values().all(|t| t.failed == 0) {
        out.entry("doc tests".into()).or_default().broken += 1;
    }
    Ok(out)
}

fn run_capturing(cmd: &mut Command) -> Result<(Vec<String>, bool)> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?)
        .stderr(writer)
        .stdin(Stdio::null());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {cmd:?}"))?;
    // Drop our copies of the write end so the read below ends with the child.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut lines = Vec::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap_or_default();
        eprintln!("{line}");
        lines.push(line);
    }
    let status = child.wait()?;
    Ok((lines, status.success()))
}

/// `test result: ok. 12 passed; 0 failed; ...` → (12, 0).
fn parse_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let number = |word: &str| -> Option<u64> {
        let before = rest.split(&format!(" {word}")).next()?;
        before
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((number("passed")?, number("failed")?))
}

fn print_table(table: &BTreeMap<String, Tally>) {
    println!();
    println!("| crate / backend | passed | failed |");
    println!("|---|---:|---:|");
    for (package, t) in table {
        let broken = if t.broken > 0 {
            format!(" (+{} crashed)", t.broken)
        } else {
            String::new()
        };
        println!("| {package} | {} | {}{broken} |", t.passed, t.failed);
    }
    println!();
}

#[cfg(test)]
mod unit {
    use super::parse_result;

    #[test]
    fn parses_result_lines() {
        assert_eq!(
            parse_result(
                "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_result("test result: FAILED. 25 passed; 1 failed; 0 ignored"),
            Some((25, 1))
        );
        assert_eq!(parse_result("running 3 tests"), None);
    }
}
