//! The example app, started as a process and driven over 127.0.0.1 with plain HTTP/1.1.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// `target/<profile>/examples/counter`, built by `cargo test` alongside this test.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join("counter");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo test -p session-tower` (examples are built with the tests)",
        path.display()
    );
    path
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn cookie(&self) -> String {
        let all = self.set_cookies();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].split(';').next().unwrap().to_owned()
    }
}

pub(crate) async fn request(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        req.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn visits(body: &str) -> u64 {
    let start = body.find("id=\"visits\">").unwrap() + "id=\"visits\">".len();
    body[start..].split('<').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_serves_login_flash_counter_and_logout() {
    let mut child = Command::new(example_binary())
        .env("SESSION_EXAMPLE_ADDR", "127.0.0.1:0")
        .env_remove("SESSION_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("the example did not start within 30 s")
        .unwrap()
        .expect("the example exited before listening");
    let addr = line
        .strip_prefix("listening on http://")
        .expect("unexpected first line")
        .to_owned();

    let first = request(&addr, "GET", "/", None, None).await;
    assert_eq!(first.status, 200);
    assert_eq!(visits(&first.body), 1);
    let set = first.set_cookies()[0];
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let anonymous = first.cookie();

    let login = request(
        &addr,
        "POST",
        "/login",
        Some(&anonymous),
        Some("username=alice"),
    )
    .await;
    assert_eq!(login.status, 303);
    let signed_in = login.cookie();
    assert_ne!(signed_in, anonymous, "login must change the session id");

    let page = request(&addr, "GET", "/", Some(&signed_in), None).await;
    assert!(
        page.body.contains("Welcome, alice!"),
        "no flash after login: {}",
        page.body
    );
    assert!(page.body.contains("Signed in as <b>alice</b>"));
    assert_eq!(visits(&page.body), 2);

    let page = request(&addr, "GET", "/", Some(&signed_in), None).await;
    assert!(!page.body.contains("Welcome"), "the flash was shown twice");
    assert_eq!(visits(&page.body), 3);

    let stale = request(&addr, "GET", "/", Some(&anonymous), None).await;
    assert_eq!(visits(&stale.body), 1, "the pre-login id still worked");

    let health = request(&addr, "GET", "/health", Some(&signed_in), None).await;
    assert!(health.set_cookies().is_empty());

    let logout = request(&addr, "POST", "/logout", Some(&signed_in), None).await;
    assert_eq!(logout.status, 303);
    assert!(
        logout.set_cookies()[0].contains("Max-Age=0"),
        "{:?}",
        logout.set_cookies()
    );
    let after = request(&addr, "GET", "/", Some(&signed_in), None).await;
    assert_eq!(visits(&after.body), 1, "the session survived logout");
    assert!(!after.body.contains("Signed in"));

    child.kill().await.unwrap();
}
