//! Portcullis in front of a real third-party backend: Django REST framework with
//! djangorestframework-simplejwt (`tests/django/server.py`), configured only through the
//! proxy's TOML. Django issues `{access, refresh}`, takes `{"refresh": …}` to renew, rotates
//! and blacklists refresh tokens, and authorizes its own API with the bearer the proxy injects.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::support::proxy::{proxy, Proxy};
use crate::support::{CookieJar, Req, TestKey};

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "secret";
/// How long Django may take to migrate its database and start listening.
const STARTUP: Duration = Duration::from_secs(30);

/// A running `tests/django/server.py`, killed when dropped.
struct Django {
    url: String,
    _child: Child,
}

impl Django {
    async fn start(key: &TestKey, access_ttl: u64) -> Django {
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
    async fn stats(&self) -> Value {
        let resp = Req::get(&format!("{}/_stats/", self.url)).send().await;
        assert_eq!(resp.status, 200, "/_stats/: {}", resp.text());
        resp.json()
    }

    async fn calls(&self, endpoint: &str) -> u64 {
        self.stats().await[endpoint]["calls"].as_u64().unwrap_or(0)
    }

    /// Waits until `endpoint` has been called `n` times (panics after 5 s).
    async fn wait_for_calls(&self, endpoint: &str, n: u64) {
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
}

/// Portcullis configured for Django, as a user would write it.
async fn proxy_for(key: &TestKey, django: &Django) -> Proxy {
    let url = |path: &str| Value::from(format!("{}{path}", django.url));
    proxy(&format!(
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
timeout = "20s"   # generous: Django on a loaded CI machine is slow, and this test is not about latency

[login]
fields = {{ username = "email", password = "password" }}
success_redirect = "/dashboard"
attempts_per_minute = 0

[session]
refresh_ahead = "0s"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "django"

[[routes]]
path = "/:path*"
upstream = "django"
"#,
        upstream = Value::from(django.url.as_str()),
        jwt = key.jwt_toml(),
        login = url("/api/token/"),
        refresh = url("/api/token/refresh/"),
        logout = url("/api/logout/"),
        profile = url("/api/me/"),
    ))
    .await
}

fn api(proxy: &Proxy) -> Req {
    Req::get(&proxy.url("/api/items/")).header("accept", "application/json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_api_and_logout_with_django() {
    let key = TestKey::new("HS256");
    let django = Django::start(&key, 300).await;
    let proxy = proxy_for(&key, &django).await;

    // Without the proxy, Django refuses its API; through it without a session, the proxy does.
    let direct = Req::get(&format!("{}/api/items/", django.url)).send().await;
    assert_eq!(direct.status, 401, "{}", direct.text());
    assert_eq!(api(&proxy).send().await.status, 401);
    assert_eq!(
        django.calls("items").await,
        1,
        "the proxy let a request through"
    );

    // A wrong password: Django says 401, the form goes back to the login page.
    let resp = Req::post(&proxy.url("/login"))
        .form(&[("email", EMAIL), ("password", "wrong")])
        .send()
        .await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/login?error=wrong_credentials"));
    assert!(resp.header_all("set-cookie").is_empty());

    // JSON login.
    let resp = Req::post(&proxy.url("/login"))
        .json(json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({ "ok": true }));
    assert!(resp
        .set_cookie("access_token")
        .is_some_and(|c| !c.is_removal()));

    // Form login, whose session is used from here on.
    let resp = Req::post(&proxy.url("/login?next=%2Fapi%2Fitems%2F"))
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.location(), Some("/api/items/"));
    let mut jar = CookieJar::new();
    jar.apply(&resp);
    let access = jar.get("access_token").expect("access cookie").to_owned();
    let refresh = jar.get("refresh_token").expect("refresh cookie").to_owned();
    let refresh_age = resp.set_cookie("refresh_token").and_then(|c| c.max_age());
    assert!(
        refresh_age.is_some_and(|a| (86_398..=86_400).contains(&a)),
        "the refresh cookie lives as long as Django's refresh token: {refresh_age:?}"
    );
    let stats = django.stats().await;
    assert_eq!(
        stats["token"]["status"],
        json!({ "200": 2, "401": 1 }),
        "{stats}"
    );

    // Django itself authorizes the bearer the proxy injects.
    let resp = api(&proxy).jar(&jar).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["user"], "alice");
    let stats = django.stats().await;
    assert_eq!(
        stats["items"]["last_authorization"],
        format!("Bearer {access}")
    );

    // /auth/me is backed by Django's profile endpoint.
    let resp = Req::get(&proxy.url("/auth/me")).jar(&jar).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({ "username": "alice", "email": EMAIL }));

    // Logout: cookies cleared, Django told with the bearer (and the refresh token blacklisted).
    let resp = Req::post(&proxy.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/login"));
    for name in ["access_token", "refresh_token"] {
        assert!(
            resp.set_cookie(name).is_some_and(|c| c.is_removal()),
            "{name}"
        );
    }
    django.wait_for_calls("logout", 1).await;
    let stats = django.stats().await;
    assert_eq!(stats["logout"]["status"], json!({ "200": 1 }), "{stats}");
    assert_eq!(
        stats["logout"]["last_authorization"],
        format!("Bearer {access}")
    );
    // The blacklisted refresh token cannot revive the session.
    let resp = api(&proxy)
        .cookie(&format!("refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(resp
        .set_cookie("refresh_token")
        .is_some_and(|c| c.is_removal()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_after_expiry_with_django() {
    let key = TestKey::new("HS256");
    let django = Django::start(&key, 1).await;
    let proxy = proxy_for(&key, &django).await;
    let resp = Req::post(&proxy.url("/login"))
        .json(json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut jar = CookieJar::new();
    jar.apply(&resp);
    let old_access = jar.get("access_token").expect("access").to_owned();
    let old_refresh = jar.get("refresh_token").expect("refresh").to_owned();

    // Wait out the 1 s access token (exp is in whole seconds).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A page's burst of API calls: one refresh at Django, every call authorized by it.
    let mut calls = JoinSet::new();
    for _ in 0..5 {
        calls.spawn(api(&proxy).jar(&jar).send());
    }
    let mut renewed = Vec::new();
    while let Some(resp) = calls.join_next().await {
        let resp = resp.expect("request task");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["user"], "alice");
        renewed.push(resp);
    }
    let stats = django.stats().await;
    assert_eq!(stats["refresh"]["calls"], 1, "{stats}");
    assert_eq!(stats["refresh"]["status"], json!({ "200": 1 }), "{stats}");
    assert_eq!(stats["items"]["status"], json!({ "200": 5 }), "{stats}");

    jar.apply(&renewed[0]);
    let access = jar.get("access_token").expect("renewed access").to_owned();
    assert_ne!(access, old_access);
    assert_ne!(
        jar.get("refresh_token"),
        Some(old_refresh.as_str()),
        "Django rotates refresh tokens; the cookie must follow"
    );
    assert_eq!(
        django.stats().await["items"]["last_authorization"],
        format!("Bearer {access}")
    );
    // The renewed session works as it is.
    let resp = api(&proxy).jar(&jar).send().await;
    assert_eq!(resp.status, 200);
    assert!(resp.header_all("set-cookie").is_empty());
}
