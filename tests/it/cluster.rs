//! Sessions that end and instances that share: revocation (logout, an operator's revoke by
//! subject), the backend's session check, the per-client refresh budget and refresh answers
//! that are outages, and several real Portcullis processes sharing state through a real
//! `redis-server`.
//!
//! - `cluster/single.rs`: one instance, no Redis: revocation (floods, opaque refresh tokens,
//!   a backend clock ahead), budget, refresh answers.
//! - `cluster/session_check.rs`: `backend.session_check`, bearer and introspection, open and
//!   closed, a slow endpoint, answers shared between instances.
//! - `cluster/shared.rs`: three instances and Redis: limiter, revocations, an outage, a large
//!   revocation set, a connection cut without a reset; nothing in Redis is a token.
//! - `cluster/refresh.rs`: one refresh per token across instances when the refresh outlives
//!   the lease, when Redis is slow, and when it restarts mid-refresh.
//! - `cluster/django.rs`: the same against Django + SimpleJWT (rotation with blacklisting).

mod django;
mod refresh;
mod session_check;
mod shared;
mod single;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::backend::{DEFAULT_PASSWORD as PASSWORD, DEFAULT_USER as USER};
use crate::support::{Backend, CookieJar, Req, Resp, TestKey, Upstream};

/// Routes every test here uses: a guarded API (401 JSON) and a guarded page (login redirect).
const ROUTES: &str = r#"
[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "app"

[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

/// The configuration of one instance in front of `backend` and `up`, without `[server]`
/// and `[admin]`; `extra` holds more sections (or keys that open them).
fn config(
    key: &TestKey,
    backend: &Backend,
    up: &Upstream,
    backend_extra: &str,
    extra: &str,
) -> String {
    format!(
        "[upstreams]\napp = {up}\n\n{jwt}leeway = \"0s\"\n\n{backend}timeout = \"3s\"\n{backend_extra}\n{extra}\n{ROUTES}",
        up = Value::from(up.url()),
        jwt = key.jwt_toml(),
        backend = backend.backend_toml(),
    )
}

/// Signs in with a JSON login at `base` (a proxy's URL without path) and returns the jar.
/// The fake backend's default user is Django's too (alice@example.com, "secret").
async fn sign_in(base: &str) -> CookieJar {
    let resp = Req::post(&format!("{base}/login"))
        .json(serde_json::json!({ "email": USER, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "login: {}", resp.text());
    let mut jar = CookieJar::new();
    jar.apply(&resp);
    jar
}

/// A JSON logout at `base` with `cookies`; asserts it succeeded.
async fn log_out(base: &str, cookies: &str) {
    let resp = Req::post(&format!("{base}/logout"))
        .header("accept", "application/json")
        .cookie(cookies)
        .send()
        .await;
    assert_eq!(resp.status, 200, "logout: {}", resp.text());
}

/// An API call at `base` with `cookies`.
async fn api(base: &str, cookies: &str) -> Resp {
    Req::get(&format!("{base}/api/items"))
        .header("accept", "application/json")
        .cookie(cookies)
        .send()
        .await
}

/// A page navigation to the guarded `/dashboard` at `base` with `cookies`.
async fn page(base: &str, cookies: &str) -> Resp {
    Req::get(&format!("{base}/dashboard"))
        .header("sec-fetch-mode", "navigate")
        .cookie(cookies)
        .send()
        .await
}

/// `access_token=…; refresh_token=…` from a jar.
fn cookie_header(jar: &CookieJar) -> String {
    let mut pairs = Vec::new();
    for name in ["access_token", "refresh_token"] {
        if let Some(value) = jar.get(name) {
            pairs.push(format!("{name}={value}"));
        }
    }
    pairs.join("; ")
}

/// Whether `resp` expires both session cookies.
fn clears_session(resp: &Resp) -> bool {
    ["access_token", "refresh_token"]
        .iter()
        .all(|name| resp.set_cookie(name).is_some_and(|c| c.is_removal()))
}

/// Cookies of a session whose access token expired and whose refresh token is good.
fn expired_session(backend: &Backend) -> String {
    format!(
        "access_token={}; refresh_token={}",
        backend.mint_access(USER, -5),
        backend.mint_refresh(USER)
    )
}

/// A JWT's payload, unverified (tests read what they were issued).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// Polls `check` every 20 ms until it holds, for `limit` at most; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The session cookies' values in `jar`: the secrets Redis must never hold.
fn secrets_of(jar: &CookieJar) -> Vec<String> {
    ["access_token", "refresh_token"]
        .iter()
        .filter_map(|name| jar.get(name).map(str::to_owned))
        .collect()
}

/// The values of a `Cookie` header's pairs (the secrets it carries).
fn values_of(cookies: &str) -> Vec<String> {
    cookies
        .split("; ")
        .filter_map(|pair| Some(pair.split_once('=')?.1.to_owned()))
        .collect()
}

/// The `[cluster]` section for `redis_url`, with a short call deadline.
fn cluster_toml(redis_url: &str) -> String {
    format!("[cluster]\nredis = \"{redis_url}\"\nkey_prefix = \"it:\"\ntimeout = \"200ms\"\n")
}
