//! The credential exchange in a real browser: Debian's Chromium, driven by
//! `tests/browser/flow.mjs` (playwright-core), through Portcullis in front of an unmodified
//! static site and the fake backend. The site knows nothing of tokens: its login form posts to
//! its own URL and its dashboard calls `/api/items` with a plain `fetch`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::backend::DEFAULT_USER as USER;
use crate::support::proxy::proxy;
use crate::support::{backend, TestKey};

/// Access token lifetime: short, so the flow sees it expire and renewed.
const ACCESS_TTL: i64 = 3;
/// How long the flow waits before reloading the dashboard: past the access token's expiry.
const WAIT_EXPIRY: u64 = 4;
/// The whole browser run, expiry wait included.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// One request the site received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    cookie: Option<String>,
}

/// The unmodified static site: `/login`, `/dashboard` and the API `/api/items`.
struct StaticSite {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StaticSite {
    async fn start() -> StaticSite {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind site");
        let addr = listener.local_addr().expect("site address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = Arc::clone(&log);
                let service = service_fn(move |request| {
                    let response = answer(&log, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                connections.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StaticSite { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("site log").clone()
    }
}

fn answer(log: &Mutex<Vec<Seen>>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = request.uri().path().to_owned();
    log.lock().expect("site log").push(Seen {
        path: path.clone(),
        authorization: header("authorization"),
        cookie: header("cookie"),
    });
    let page = |file: &str| {
        let html = std::fs::read(browser_dir().join("site").join(file))
            .unwrap_or_else(|e| panic!("reading tests/browser/site/{file}: {e}"));
        ("text/html; charset=utf-8", 200, Bytes::from(html))
    };
    let (content_type, status, body) = match path.as_str() {
        "/login" => page("login.html"),
        "/dashboard" => page("dashboard.html"),
        "/api/items" => {
            // The API trusts the bearer the proxy injected; without one it refuses.
            let items =
                json!({ "items": [{ "id": 1, "name": "apple" }, { "id": 2, "name": "pear" }] });
            match header("authorization") {
                Some(bearer) if bearer.starts_with("Bearer ") => {
                    ("application/json", 200, Bytes::from(items.to_string()))
                }
                _ => ("application/json", 401, Bytes::from_static(b"{}")),
            }
        }
        _ => ("text/plain", 404, Bytes::from_static(b"not found")),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body))
        .expect("a valid response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_refreshes_and_signs_out() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser` \
         (the browser test never skips itself)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: install Debian's chromium package \
         (the browser test never skips itself)"
    );

    let key = TestKey::new("HS256");
    let backend = backend(&key).access_ttl(ACCESS_TTL).run().await;
    let site = StaticSite::start().await;
    let toml = format!(
        r#"[upstreams]
site = {site}

{jwt}leeway = "0s"

{backend}timeout = "5s"

[login]
success_redirect = "/dashboard"
failure_redirect = "/login?error=wrong_credentials"

[session]
refresh_ahead = "0s"

[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "site"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "site"

[[routes]]
path = "/login"
auth = "guest"
upstream = "site"

[[routes]]
path = "/:path*"
upstream = "site"
"#,
        site = Value::from(site.url()),
        jwt = key.jwt_toml(),
        backend = backend.backend_toml(),
    );
    let proxy = proxy(&toml).await;

    let child = tokio::process::Command::new("node")
        .arg(dir.join("flow.mjs"))
        .arg(proxy.url("/"))
        .arg("--wait-expiry")
        .arg(WAIT_EXPIRY.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting `node tests/browser/flow.mjs`: {e} (is node installed?)")
        });
    let output = tokio::time::timeout(FLOW_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("flow.mjs did not finish within {FLOW_TIMEOUT:?}"))
        .expect("waiting for flow.mjs");
    let report = format!(
        "--- flow.mjs stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Shown with --nocapture, or when an assertion below fails.
    eprintln!("{report}");
    assert!(
        output.status.success(),
        "flow.mjs failed ({})\n{report}",
        output.status
    );

    // What the site saw: the API got the proxy's bearer, before and after the refresh, and
    // never the proxy's cookies.
    let seen = site.seen();
    let bearers: Vec<String> = seen
        .iter()
        .filter(|s| s.path == "/api/items")
        .filter_map(|s| s.authorization.clone())
        .collect();
    assert!(
        bearers.len() >= 2,
        "API calls with a bearer: {seen:#?}\n{report}"
    );
    for bearer in &bearers {
        let token = bearer.strip_prefix("Bearer ").expect("a Bearer token");
        // Tokens seen early in the run have expired since: a good signature is what counts.
        match key.verify(token) {
            Ok(claims) => assert_eq!(claims["sub"], USER),
            Err(why) => assert!(why.starts_with("expired at"), "{why}: {bearer}"),
        }
    }
    let mut distinct = bearers.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "the API never saw a renewed token: {bearers:?}"
    );
    assert!(
        seen.iter().all(|s| s
            .cookie
            .as_deref()
            .is_none_or(|c| !c.contains("access_token") && !c.contains("refresh_token"))),
        "the proxy's cookies reached the site: {seen:#?}"
    );
    assert!(
        seen.iter()
            .filter(|s| s.path == "/dashboard")
            .all(|s| s.authorization.is_some()),
        "the dashboard went upstream without a bearer: {seen:#?}"
    );
    assert!(backend.refreshes() >= 1, "no refresh happened\n{report}");
    assert_eq!(backend.logins(), 2, "one wrong and one right password");
    backend.wait_for_logouts(1).await;
}
