//! A real Django REST framework + SimpleJWT backend (`tests/django/server.py`), started as a
//! child process on a free port and killed on drop.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Req, TestKey};

pub const EMAIL: &str = "alice@example.com";
pub const PASSWORD: &str = "secret";
/// How long Django may take to migrate its database and start listening.
const STARTUP: Duration = Duration::from_secs(30);

/// A running `tests/django/server.py`, killed when dropped.
pub struct Django {
    pub url: String,
    _child: Child,
}

impl Django {
    pub async fn start(key: &TestKey, access_ttl: u64) -> Django {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django");
        let imports = std::process::Command::new("python3")
            .args([
                "-c",
                "import django, rest_framework, rest_framework_simplejwt",
            ])
            .output();
        match imports {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "Django REST framework + SimpleJWT are not installed for python3: run \
                 `python3 -m pip install -r tests/django/requirements.txt` \
                 (the Django test never skips itself)\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("python3 cannot be run ({e}): the Django test needs it"),
        }
        let secret = std::str::from_utf8(key.secret().expect("an HMAC key"))
            .expect("the test secret is hex text")
            .to_owned();
        let mut child = Command::new("python3")
            .arg(dir.join("server.py"))
            .env("DJANGO_JWT_SECRET", secret)
            .env("DJANGO_ACCESS_TTL", access_ttl.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting python3 tests/django/server.py");
        // Django's log is kept for failure messages rather than mixed into the test output.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn({
            let log = Arc::clone(&log);
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut log = log.lock().expect("django log");
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let log_text = || log.lock().expect("django log").clone();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await.expect("reading server.py stdout") {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    return Some(port.trim().parse::<u16>().expect("a port number"));
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "server.py did not listen within {STARTUP:?}:\n{}",
                log_text()
            )
        });
        let Some(port) = port else {
            // Give the log reader a moment to catch the traceback of a crashed start-up.
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            panic!("server.py exited before listening:\n{}", log_text());
        };
        Django {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }

    /// `GET /_stats/`: calls and statuses per endpoint.
    pub async fn stats(&self) -> Value {
        let resp = Req::get(&format!("{}/_stats/", self.url)).send().await;
        assert_eq!(resp.status, 200, "/_stats/: {}", resp.text());
        resp.json()
    }

    pub async fn calls(&self, endpoint: &str) -> u64 {
        self.stats().await[endpoint]["calls"].as_u64().unwrap_or(0)
    }

    /// Waits until `endpoint` has been called `n` times (panics after 5 s).
    pub async fn wait_for_calls(&self, endpoint: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.calls(endpoint).await < n {
            assert!(
                Instant::now() < deadline,
                "Django's {endpoint} was not called {n} times within 5 s: {}",
                self.stats().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Blocks `username` (`is_active = False`): Django refuses its tokens from now on.
    pub async fn block(&self, username: &str) {
        let resp = Req::post(&format!("{}/_block/", self.url))
            .json(serde_json::json!({ "username": username }))
            .send()
            .await;
        assert_eq!(resp.status, 200, "/_block/: {}", resp.text());
    }

    /// Portcullis's configuration for this backend, as a user would write it: `backend`
    /// and `session` are added to those sections, `extra` (more sections) at the end.
    pub fn proxy_toml(&self, key: &TestKey, backend: &str, session: &str, extra: &str) -> String {
        let url = |path: &str| Value::from(format!("{}{path}", self.url));
        format!(
            r#"[upstreams]
django = {upstream}

{jwt}leeway = "0s"
claims = {{ token_type = "access" }}

[backend]
login = {login}
refresh = {refresh}
logout = {logout}
profile = {profile}
refresh_field = "refresh"
timeout = "5s"
{backend}
[login]
fields = {{ username = "email", password = "password" }}
success_redirect = "/dashboard"
attempts_per_minute = 0

[session]
refresh_ahead = "0s"
{session}
[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "django"

[[routes]]
path = "/:path*"
upstream = "django"

{extra}
"#,
            upstream = Value::from(self.url.as_str()),
            jwt = key.jwt_toml(),
            login = url("/api/token/"),
            refresh = url("/api/token/refresh/"),
            logout = url("/api/logout/"),
            profile = url("/api/me/"),
        )
    }
}
