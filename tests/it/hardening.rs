//! What an outside attack pass found, each held against real sockets: forged identity headers
//! in their other spelling, a dual-stack listener's IPv4 clients sharing one limiter bucket,
//! renewed cookies thrown away by a failing request, session cookies cached publicly, and
//! requests that carry a WebSocket handshake's headers or ask for `TRACE`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use crate::support::backend::{DEFAULT_PASSWORD as PASSWORD, DEFAULT_USER as USER};
use crate::support::keys;
use crate::support::proxy::{proxy, proxy_on, Proxy};
use crate::support::raw_upstream::raw_upstream;
use crate::support::{backend, raw, upstream, Backend, Req, Resp, TestKey, Upstream};

const ROUTES: &str = r#"
[[routes]]
path = "/admin/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { role = "admin" }
upstream = "app"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
headers = { "x-email" = "email", "x-role" = "role" }
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

/// The config of a site in front of `upstream_url`, with a backend when given.
fn site_toml(key: &TestKey, upstream_url: &str, backend: Option<&Backend>, extra: &str) -> String {
    format!(
        "[upstreams]\napp = {up}\n\n{jwt}leeway = \"0s\"\n\n{backend}\n\
         [session]\nrefresh_ahead = \"0s\"\n\n{extra}\n{ROUTES}",
        up = Value::from(upstream_url),
        jwt = key.jwt_toml(),
        backend = backend.map(Backend::backend_toml).unwrap_or_default(),
    )
}

fn cookies(access: &str, refresh: &str) -> String {
    format!("access_token={access}; refresh_token={refresh}")
}

/// Sends `request` (a whole HTTP/1.1 request) from local address `from` to `to` and returns
/// the response head.
async fn send_from(from: &str, to: SocketAddr, request: &str) -> String {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(from.parse().expect("source address"), 0))
        .expect("bind the source address");
    let mut stream = socket.connect(to).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

// ------------------------------------------------------------------- identity headers

#[tokio::test]
async fn a_forged_identity_header_in_either_spelling_never_reaches_the_upstream() {
    let key = TestKey::new("HS256");
    let up = raw_upstream().await;
    let proxy = proxy(&site_toml(&key, &up.url(), None, "")).await;
    let mut claims = keys::claims("alice", 600);
    claims["email"] = "alice@example.com".into();
    let token = key.sign(claims);
    let resp = Req::get(&proxy.url("/api/items"))
        .cookie(&format!("access_token={token}"))
        .header("X-Email", "admin@example.com")
        .header("X_Email", "admin@example.com")
        .header("X_Role", "admin")
        .header("X-Role", "admin")
        .header("X-User_Id", "1")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let email = up.header_lines("x-email");
    assert_eq!(email, ["x-email: alice@example.com"], "{:?}", up.heads());
    for forged in ["x_email", "x-role", "x_role", "x-user_id", "x-user-id"] {
        assert!(
            up.header_lines(forged).is_empty(),
            "{forged} reached the upstream: {:?}",
            up.heads()
        );
    }
}

#[tokio::test]
async fn identity_header_names_with_underscores_are_refused() {
    let key = TestKey::new("HS256");
    let toml = site_toml(&key, "http://127.0.0.1:9", None, "").replace(
        r#"headers = { "x-email" = "email", "x-role" = "role" }"#,
        r#"headers = { "x_email" = "email" }"#,
    );
    let problems = portcullis::Config::from_toml_str(&toml)
        .expect_err("a `_` header name is refused")
        .to_string();
    assert!(
        problems.contains("routes[1].headers") && problems.contains("\"x-email\""),
        "{problems}"
    );
}

// ------------------------------------------------------------------ dual-stack clients

#[tokio::test]
async fn ipv4_clients_on_a_dual_stack_listener_are_limited_one_by_one() {
    let key = TestKey::new("HS256");
    let be = backend(&key).run().await;
    let up = upstream().run().await;
    let listener = TcpListener::bind("[::]:0").await.expect("bind [::]:0");
    let port = listener.local_addr().expect("address").port();
    let _proxy: Proxy = proxy_on(
        &site_toml(
            &key,
            &up.url(),
            Some(&be),
            "[login]\nattempts_per_minute = 3\n",
        ),
        listener,
    );
    let login = |password: &str| {
        let body = format!("email={USER}&password={password}");
        format!(
            "POST /login HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let v6: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    for _ in 0..3 {
        let head = send_from("127.0.0.1", v4, &login("wrong")).await;
        assert_eq!(raw::status_codes(&head), [303], "{head}");
    }
    let limited = send_from("127.0.0.1", v4, &login(PASSWORD)).await;
    assert_eq!(raw::status_codes(&limited), [429], "{limited}");
    // Other IPv4 clients, and IPv6 ones, have their own budgets.
    for (from, to) in [("127.0.0.2", v4), ("127.0.0.3", v4), ("::1", v6)] {
        let head = send_from(from, to, &login(PASSWORD)).await;
        assert_eq!(raw::status_codes(&head), [303], "{from}: {head}");
    }

    // The upstream sees the IPv4 address as such.
    let page = send_from(
        "127.0.0.2",
        v4,
        "GET /hello HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw::status_codes(&page), [200], "{page}");
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.2"));
}

// -------------------------------------------------------------- renewals that must stick

/// A rotating backend (the old refresh token is revoked by a refresh), an upstream, the proxy.
struct Rotating {
    key: TestKey,
    be: Backend,
    up: Upstream,
    proxy: Proxy,
}

async fn rotating(up: Upstream, extra: &str) -> Rotating {
    let key = TestKey::new("HS256");
    let be = backend(&key)
        .user_with_claims(
            "bob@example.com",
            PASSWORD,
            serde_json::json!({ "role": "user" }),
        )
        .rotate_refresh(true)
        .run()
        .await;
    let proxy = proxy(&site_toml(&key, &up.url(), Some(&be), extra)).await;
    Rotating { key, be, up, proxy }
}

impl Rotating {
    /// Sends `request` with an expired access token and a live refresh token, then checks that
    /// the response carried renewed cookies that make a working session, and that the spent
    /// refresh token is dead at the backend.
    async fn assert_renewal_sticks(&self, what: &str, request: Req, status: u16) -> Resp {
        let expired = self.be.mint_access("bob@example.com", -30);
        let refresh = self.be.mint_refresh("bob@example.com");
        let before = self.be.refreshes();
        let resp = request.cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, status, "{what}: {}", resp.text());
        assert_eq!(self.be.refreshes(), before + 1, "{what}: one refresh");
        let access = resp
            .set_cookie("access_token")
            .unwrap_or_else(|| panic!("{what}: no renewed access cookie"));
        let new_refresh = resp
            .set_cookie("refresh_token")
            .unwrap_or_else(|| panic!("{what}: no renewed refresh cookie"));
        self.key.verify(&access.value).expect("a valid new token");
        assert_ne!(new_refresh.value, refresh, "{what}");
        assert_eq!(
            resp.header("cache-control"),
            Some("private, no-store"),
            "{what}"
        );
        // The renewed refresh token is the one that works now.
        let later = Req::get(&self.proxy.url("/api/items"))
            .cookie(&cookies(
                &self.be.mint_access("bob@example.com", -30),
                &new_refresh.value,
            ))
            .send()
            .await;
        assert_ne!(
            later.status, 401,
            "{what}: the renewed refresh token does not work"
        );
        resp
    }
}

#[tokio::test]
async fn a_renewal_survives_a_forbidden_answer() {
    let r = rotating(upstream().run().await, "").await;
    r.assert_renewal_sticks("403", Req::get(&r.proxy.url("/admin/users")), 403)
        .await;
    assert_eq!(
        r.up.requests(),
        1,
        "only the follow-up request went upstream"
    );
}

#[tokio::test]
async fn a_renewal_survives_an_upstream_failure() {
    let up = upstream().run().await;
    let r = rotating(up.clone(), "").await;
    up.stop();
    let resp = r
        .assert_renewal_sticks("upstream down", Req::get(&r.proxy.url("/api/items")), 502)
        .await;
    assert_eq!(resp.json()["error"], "upstream_unavailable");
}

#[tokio::test]
async fn a_renewal_survives_a_body_over_the_limit() {
    let r = rotating(upstream().run().await, "[server]\nmax_body = \"1KiB\"\n").await;
    r.assert_renewal_sticks(
        "413",
        Req::post(&r.proxy.url("/api/upload")).chunked_body_of_len(64 << 10),
        413,
    )
    .await;
}

// --------------------------------------------------------------------------- caching

#[tokio::test]
async fn responses_with_session_cookies_are_never_cached() {
    let up = upstream()
        .response_header("cache-control", "public, max-age=600")
        .run()
        .await;
    let r = rotating(up, "").await;
    r.assert_renewal_sticks("public upstream", Req::get(&r.proxy.url("/api/items")), 200)
        .await;
}

#[tokio::test]
async fn authenticated_responses_stay_out_of_shared_caches() {
    let up = upstream()
        .response_header("cache-control", "max-age=600")
        .run()
        .await;
    let r = rotating(up, "").await;
    let token = r.be.mint_access("bob@example.com", 600);
    let authenticated = Req::get(&r.proxy.url("/api/items"))
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(authenticated.status, 200);
    assert_eq!(
        authenticated.header("cache-control"),
        Some("max-age=600, private")
    );
    // A public route's answer is the upstream's own business.
    let public = Req::get(&r.proxy.url("/about")).send().await;
    assert_eq!(public.header("cache-control"), Some("max-age=600"));
}

// ------------------------------------------------------------ methods and handshakes

#[tokio::test]
async fn trace_is_refused_and_handshake_headers_only_travel_with_a_handshake() {
    let key = TestKey::new("HS256");
    let up = raw_upstream().await;
    let proxy = proxy(&site_toml(&key, &up.url(), None, "")).await;
    let token = key.sign(keys::claims("alice", 600));

    let trace = Req::new("TRACE", &proxy.url("/api/items"))
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(trace.status, 405);

    let request = format!(
        "POST /api/items HTTP/1.1\r\nHost: site.test\r\nCookie: access_token={token}\r\n\
         Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nContent-Length: 2\r\n\r\nhi"
    );
    let answer = raw::send(proxy.addr(), request.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(raw::status_codes(&answer), [200], "{answer}");
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "only the POST went upstream: {heads:?}");
    let head = heads[0].to_ascii_lowercase();
    for gone in ["\r\nupgrade:", "connection: upgrade", "\r\nsec-websocket-"] {
        assert!(
            !head.contains(gone),
            "{gone:?} reached the upstream: {head}"
        );
    }
}

// ------------------------------------------------------------------------------ admin

#[tokio::test]
async fn reload_needs_the_admin_token_when_one_is_set() {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let toml = site_toml(
        &key,
        &up.url(),
        None,
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"0123456789abcdef-token\"\n",
    );
    let (_proxy, admin) = crate::support::proxy::proxy_with_admin(&toml).await;
    let reload = format!("http://{admin}/reload");
    let refused = Req::post(&reload).send().await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    let forged = Req::post(&reload)
        .header("authorization", "Bearer 0123456789abcdef-tokex")
        .send()
        .await;
    assert_eq!(forged.status, 403);
    // With the token the reload is attempted (and refused here only because this proxy was
    // started from text, with no file to re-read).
    let allowed = Req::post(&reload)
        .header("authorization", "Bearer 0123456789abcdef-token")
        .send()
        .await;
    assert_ne!(allowed.status, 403, "{}", allowed.text());
    // Probes stay open.
    assert_eq!(
        Req::get(&format!("http://{admin}/healthz"))
            .send()
            .await
            .status,
        200
    );
}
