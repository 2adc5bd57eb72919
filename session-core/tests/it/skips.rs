//! A server test without its server says so in the plain output of `cargo test`.

/// The probe the test below runs in a child process; on its own it does nothing.
#[test]
fn skip_probe() {
    if std::env::var_os("SESSION_TEST_SKIP_PROBE").is_some() {
        assert_eq!(
            session_core::suite::server_url("SESSION_TEST_NEVER_SET"),
            None
        );
    }
}

#[test]
fn a_skipped_server_test_says_so_without_nocapture() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["skips::skip_probe", "--exact", "--test-threads=1"])
        .env("SESSION_TEST_SKIP_PROBE", "1")
        .env_remove("SESSION_TEST_NEVER_SET")
        .env_remove("SESSION_TEST_REQUIRE_SERVERS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "skipped: skips::skip_probe: SESSION_TEST_NEVER_SET is not set; run `cargo xtask test-backends`"
        ),
        "the skip is not in the normal output: {stderr:?}"
    );

    // Under SESSION_TEST_REQUIRE_SERVERS=1 the same test fails instead.
    let required = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["skips::skip_probe", "--exact", "--test-threads=1"])
        .env("SESSION_TEST_SKIP_PROBE", "1")
        .env("SESSION_TEST_REQUIRE_SERVERS", "1")
        .env_remove("SESSION_TEST_NEVER_SET")
        .output()
        .unwrap();
    assert!(!required.status.success(), "{required:?}");
}
