//! The proxy core over real sockets: path normalization, routing, forwarding, limits, faults.

use std::time::Duration;

use crate::support::keys::{claims, TestKey};
use crate::support::proxy::{self, proxy, Proxy};
use crate::support::{raw, upstream, Req, Upstream};

const ROUTES: &str = r#"
[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "app"

[[routes]]
path = "/public/:path*"
upstream = "app"

[[routes]]
path = "/ws"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

struct Setup {
    key: TestKey,
    up: Upstream,
    proxy: Proxy,
}

async fn setup_with(server: &str) -> Setup {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let proxy = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("{server}\n{ROUTES}"),
    ))
    .await;
    Setup { key, up, proxy }
}

async fn setup() -> Setup {
    setup_with("").await
}

impl Setup {
    fn token(&self) -> String {
        self.key.sign(claims("alice", 300))
    }

    /// Sends `method target` byte-exact and returns the first status code.
    async fn raw(&self, method: &str, target: &str, extra_headers: &str) -> u16 {
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: site.example\r\n{extra_headers}Connection: close\r\n\r\n");
        let text = raw::send(
            self.proxy.addr(),
            request.as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        raw::status_codes(&text).first().copied().unwrap_or(0)
    }
}

#[tokio::test]
async fn every_security_path_is_guarded_or_refused() {
    let s = setup().await;
    let cookie = format!("Cookie: access_token={}\r\n", s.token());
    // Each normalizes to the protected /dashboard (deny without a token, forward /dashboard
    // with one), or is refused with 400 before anything is forwarded.
    let guarded = [
        "/public/../dashboard",
        "/public/%2e%2e/dashboard",
        "/%64ashboard",
        "//dashboard",
        "/dashboard/",
        "/public/.%2E/dashboard",
        "/DASHBOARD",
        "/Dashboard/x",
        // RFC 3986 §5.2.4 (and WHATWG URL): `..` removes the empty segment, not `dashboard`.
        "/dashboard//../x",
        // A fragment is no part of the path: cut before normalizing, as the upstream would.
        "/dashboard#/../../public",
    ];
    let refused = [
        "/public/..%2fdashboard",
        "/dashboard%2fx",
        "/public/..%5cdashboard",
        "/dashboard%00",
        "/dashboard;x=1",
        "/dashboard%3bx=1",
        "/public/..\\dashboard",
        "/dash%zzboard",
        "/dashboard.",
        "/dashboard%2e",
        "/dashboard%20",
    ];
    for path in guarded {
        assert_eq!(s.raw("GET", path, "").await, 401, "{path} without a token");
        assert_eq!(
            s.up.requests(),
            0,
            "{path} reached the upstream without a token"
        );
    }
    for path in refused {
        assert_eq!(s.raw("GET", path, &cookie).await, 400, "{path}");
    }
    assert_eq!(s.up.requests(), 0, "a refused path reached the upstream");
    for path in guarded {
        assert_eq!(
            s.raw("GET", path, &cookie).await,
            200,
            "{path} with a token"
        );
        let seen = s.up.last().expect("forwarded").path_and_query();
        // Matched case-insensitively, forwarded exactly as normalized.
        let lower = seen.to_ascii_lowercase();
        assert!(
            lower == "/dashboard" || lower.starts_with("/dashboard/"),
            "{path} forwarded as {seen}"
        );
    }
}

#[tokio::test]
async fn the_upstream_receives_exactly_the_normalized_path() {
    let s = setup().await;
    let cases = [
        ("/a/./b/../c//d", "/a/c/d"),
        ("/a/./b/../c//d?x=1&y=%2F", "/a/c/d?x=1&y=%2F"),
        // Decoded once: the upstream sees the literal %25, never a second decoding's dots.
        (
            "/public/%252e%252e/dashboard",
            "/public/%252e%252e/dashboard",
        ),
        ("/%7Euser/caf%c3%a9", "/~user/caf%C3%A9"),
        ("/x?next=/../dashboard", "/x?next=/../dashboard"),
    ];
    for (sent, want) in cases {
        assert_eq!(s.raw("GET", sent, "").await, 200, "{sent}");
        assert_eq!(
            s.up.last().expect("forwarded").path_and_query(),
            want,
            "{sent}"
        );
    }
}

#[tokio::test]
async fn query_fragment_and_override_headers_take_no_part_in_matching() {
    let s = setup().await;
    assert_eq!(s.raw("GET", "/dashboard?/public/x", "").await, 401);
    assert_eq!(
        s.raw(
            "GET",
            "/dashboard",
            "X-Original-URL: /public\r\nX-Rewrite-URL: /public\r\n"
        )
        .await,
        401
    );
    for method in ["HEAD", "OPTIONS", "POST", "DELETE", "PATCH"] {
        assert_eq!(
            s.raw(method, "/dashboard", "Content-Length: 0\r\n").await,
            401,
            "{method}"
        );
    }
    assert_eq!(s.up.requests(), 0);
    // Absolute-form is matched by its path and still goes to the configured upstream.
    assert_eq!(s.raw("GET", "http://evil.example/dashboard", "").await, 401);
    assert_eq!(s.raw("GET", "http://evil.example/public/x", "").await, 200);
    assert_eq!(
        s.up.last().expect("forwarded").path_and_query(),
        "/public/x"
    );
    assert_eq!(s.up.requests(), 1);
}

#[tokio::test]
async fn connect_and_asterisk_targets_are_refused() {
    let s = setup().await;
    let connect = s.raw("CONNECT", "evil.example:443", "").await;
    assert!(matches!(connect, 400 | 405), "CONNECT got {connect}");
    let asterisk = s.raw("OPTIONS", "*", "").await;
    assert!(matches!(asterisk, 400 | 405), "OPTIONS * got {asterisk}");
    assert_eq!(s.up.requests(), 0);
}

#[tokio::test]
async fn a_path_no_rule_matches_is_404() {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let only_api = "[[routes]]\npath = \"/api/:path*\"\nupstream = \"app\"\n";
    let p = proxy(&proxy::config(&up.url(), &key.jwt_toml(), only_api)).await;
    let resp = Req::get(&p.url("/other")).send().await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["error"], "not_found");
    assert_eq!(up.requests(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_but_never_what_the_proxy_injects() {
    let s = setup().await;
    let resp = Req::get(&s.proxy.url("/dashboard"))
        .cookie(&format!("access_token={}; theme=dark", s.token()))
        .header(
            "Connection",
            "Authorization, X-Forwarded-For, X-Custom, Keep-Alive",
        )
        .header("X-Custom", "gone")
        .header("Keep-Alive", "timeout=5")
        .header("Authorization", "Bearer forged")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-User-Id", "admin")
        .header("X_Auth_Request_Email", "admin@example.com")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    let seen = s.up.last().expect("forwarded");
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {}", s.token())]
    );
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert!(seen.header("x-forwarded-host").is_some());
    assert!(seen.header("x-request-id").is_some());
    for gone in [
        "x-custom",
        "keep-alive",
        "x-user-id",
        "x_auth_request_email",
        "connection",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen.header_all("cookie"), ["theme=dark"]);
}

#[tokio::test]
async fn forwarded_for_is_kept_only_from_trusted_proxies() {
    let untrusted = setup().await;
    Req::get(&untrusted.proxy.url("/x"))
        .header("X-Forwarded-For", "1.2.3.4")
        .send()
        .await;
    assert_eq!(
        untrusted
            .up
            .last()
            .expect("forwarded")
            .header_all("x-forwarded-for"),
        ["127.0.0.1"]
    );

    let trusted = setup_with("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    Req::get(&trusted.proxy.url("/x"))
        .header("X-Forwarded-For", "1.2.3.4")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await;
    let seen = trusted.up.last().expect("forwarded");
    assert_eq!(seen.header_all("x-forwarded-for"), ["1.2.3.4, 127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    const SIZE: u64 = 50 << 20;
    let key = TestKey::new("HS256");
    let up = upstream().response_bytes(SIZE).run().await;
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("[server]\nmax_body = \"64MiB\"\n{ROUTES}"),
    ))
    .await;
    let upload = Req::post(&p.url("/upload"))
        .chunked_body_of_len(SIZE)
        .discard_body()
        .send()
        .await;
    assert_eq!(upload.status, 200);
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.body_len, SIZE);
    assert!(seen.body_complete);
    assert_eq!(upload.body_len, SIZE, "the 50 MB answer streamed back");
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let s = setup().await;
    let mut conn = raw::connect(s.proxy.addr()).await;
    conn.write(
        b"GET /ws HTTP/1.1\r\nHost: site.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("write upgrade");
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    conn.write(b"hello through the proxy").await.expect("write");
    let echoed = conn.read_exact(23, Duration::from_secs(5)).await;
    assert_eq!(echoed, b"hello through the proxy");
}

#[tokio::test]
async fn oversized_bodies_get_413_at_once() {
    let s = setup_with("[server]\nmax_body = \"1KiB\"").await;
    let declared = Req::post(&s.proxy.url("/upload"))
        .body_of_len(100 << 20)
        .send()
        .await;
    assert_eq!(declared.status, 413);
    assert_eq!(declared.json()["error"], "payload_too_large");
    assert_eq!(
        s.up.requests(),
        0,
        "a declared oversize body must not be forwarded"
    );
    let streamed = Req::post(&s.proxy.url("/upload"))
        .chunked_body_of_len(64 << 10)
        .send()
        .await;
    assert_eq!(streamed.status, 413);
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let s = setup().await;
    for size in [64 << 10, 1 << 20] {
        let cookie = format!("Cookie: access_token={}\r\n", "a".repeat(size));
        assert_eq!(
            s.raw("GET", "/dashboard", &cookie).await,
            431,
            "{size}-byte cookie"
        );
    }
    assert_eq!(s.up.requests(), 0);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let key = TestKey::new("HS256");
    let down = upstream().run().await;
    let url = down.url();
    down.stop();
    let p = proxy(&proxy::config(&url, &key.jwt_toml(), ROUTES)).await;
    let resp = Req::get(&p.url("/x")).send().await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error"], "upstream_unavailable");

    let slow = upstream().delay(Duration::from_secs(5)).run().await;
    let p = proxy(&proxy::config(
        &slow.url(),
        &key.jwt_toml(),
        &format!("[server]\nupstream_timeout = \"200ms\"\n{ROUTES}"),
    ))
    .await;
    let resp = Req::get(&p.url("/x")).send().await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn slowloris_connections_are_closed_while_others_are_served() {
    let s = setup_with("[server]\nheader_read_timeout = \"300ms\"").await;
    let mut slow = raw::connect(s.proxy.addr()).await;
    slow.write(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: 1")
        .await
        .expect("write");
    let served = Req::get(&s.proxy.url("/x")).send().await;
    assert_eq!(served.status, 200);
    assert!(
        slow.closed_within(Duration::from_secs(3)).await,
        "the slow connection was not closed"
    );
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    let key = TestKey::new("HS256");
    let up = upstream().delay(Duration::from_millis(400)).run().await;
    let mut p = proxy(&proxy::config(&up.url(), &key.jwt_toml(), ROUTES)).await;
    let url = p.url("/slow");
    let in_flight = tokio::spawn(async move { Req::get(&url).send().await });
    up.wait_for_requests(1).await;
    let stopped = p.begin_stop();
    let resp = in_flight.await.expect("request task");
    assert_eq!(resp.status, 200);
    stopped.await.expect("proxy task").expect("clean shutdown");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let s = setup().await;
    let resp = Req::get(&s.proxy.url("/dashboard"))
        .cookie(&format!("access_token={}", s.token()))
        .send_h2c()
        .await;
    assert_eq!(resp.status, 200);
    let seen = s.up.last().expect("forwarded");
    assert_eq!(seen.path_and_query(), "/dashboard");
    assert!(
        seen.header("host").is_some(),
        "HTTP/2 :authority becomes the upstream Host"
    );
    let denied = Req::get(&s.proxy.url("/dashboard")).send_h2c().await;
    assert_eq!(denied.status, 401);
}

#[tokio::test]
async fn a_path_has_one_spelling_for_rules_and_upstreams() {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let routes = "[[routes]]\npath = \"/@admin/:path*\"\nauth = \"required\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/café/:path*\"\nauth = \"required\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
    let p = proxy(&proxy::config(&up.url(), &key.jwt_toml(), routes)).await;
    for path in [
        "/@admin/x",
        "/%40admin/x",
        "/%40ADMIN/x",
        "/caf%C3%A9/menu",
        "/caf%c3%a9/menu",
    ] {
        let resp = Req::get(&p.url(path)).send().await;
        assert_eq!(resp.status, 401, "{path}");
    }
    assert_eq!(up.requests(), 0);
    let token = key.sign(claims("alice", 300));
    let resp = Req::get(&p.url("/%40admin/x"))
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().expect("forwarded").path_and_query(), "/@admin/x");
}

#[tokio::test]
async fn only_websocket_upgrades_are_forwarded() {
    let s = setup().await;
    let mut conn = raw::connect(s.proxy.addr()).await;
    conn.write(
        b"GET /ws HTTP/1.1\r\nHost: site.example\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .expect("write");
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(
        !head.starts_with("HTTP/1.1 101"),
        "an h2c upgrade was switched: {head}"
    );
    let seen = s.up.last().expect("forwarded as a plain request");
    for header in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.header(header), None, "{header} reached the upstream");
    }
}

#[tokio::test]
async fn a_101_without_a_websocket_handshake_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that switches protocols without proving it read the client's key.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .await;
        }
    });
    let key = TestKey::new("HS256");
    let p = proxy(&proxy::config(&url, &key.jwt_toml(), ROUTES)).await;
    let mut conn = raw::connect(p.addr()).await;
    conn.write(
        b"GET /ws HTTP/1.1\r\nHost: site.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("write");
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let s = setup().await;
    for coding in ["gzip, chunked", "chunked, chunked", "identity", "x-custom"] {
        let request = format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let text = raw::send(s.proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await;
        let status = raw::status_codes(&text).first().copied().unwrap_or(0);
        assert_eq!(status, 400, "Transfer-Encoding: {coding}");
    }
    assert_eq!(s.up.requests(), 0);
    // Plain chunked is framed once and forwarded.
    let ok = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let text = raw::send(s.proxy.addr(), ok.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw::status_codes(&text), [200]);
    assert_eq!(s.up.last().expect("forwarded").body_len, 5);
}

#[tokio::test]
async fn silent_connections_are_closed_by_the_header_timeout() {
    let s = setup_with("[server]\nheader_read_timeout = \"300ms\"").await;
    let mut silent = raw::connect(s.proxy.addr()).await;
    assert!(
        silent.closed_within(Duration::from_secs(3)).await,
        "a connection that sent nothing stayed open"
    );
}

#[tokio::test]
async fn smuggling_attempts_never_become_two_upstream_requests() {
    let s = setup().await;
    let smuggled = "GET /dashboard HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases = [
        // CL.TE: a front end trusting Content-Length would pass the smuggled request on.
        format!(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Conflicting lengths.
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{smuggled}"),
        // TE obfuscated.
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\n{smuggled}"),
    ];
    for request in &cases {
        let before = s.up.requests();
        let text = raw::send(s.proxy.addr(), request.as_bytes(), Duration::from_secs(3)).await;
        let codes = raw::status_codes(&text);
        // Whatever the framing decision, the smuggled GET /dashboard never reaches the
        // upstream unauthenticated: at most the one POST does.
        assert!(s.up.requests() - before <= 1, "{request:?} -> {codes:?}");
        assert!(
            s.up.all()
                .iter()
                .all(|r| r.path_and_query() != "/dashboard"),
            "{request:?} smuggled a request"
        );
        assert!(
            !codes.contains(&200)
                || codes.len() == 1
                || codes[1..].iter().all(|c| *c == 401 || *c == 400),
            "{request:?} -> {codes:?}"
        );
    }
}

#[tokio::test]
async fn jwt_kid_names_the_kid_of_a_static_key() {
    let key = TestKey::with_kid("HS256", "backend-2026");
    let up = upstream().run().await;
    let jwt = format!("{}kid = \"backend-2026\"\n", key.jwt_toml());
    let p = proxy(&proxy::config(&up.url(), &jwt, ROUTES)).await;
    let send = |token: String| {
        let url = p.url("/dashboard");
        async move {
            Req::get(&url)
                .cookie(&format!("access_token={token}"))
                .send()
                .await
                .status
        }
    };
    assert_eq!(
        send(key.sign(claims("alice", 300))).await,
        200,
        "the configured kid"
    );
    let no_kid = key.sign_with_header(serde_json::json!({ "kid": null }), claims("alice", 300));
    assert_eq!(send(no_kid).await, 200, "no kid: the static key is tried");
    let other = key.sign_with_header(
        serde_json::json!({ "kid": "../../dev/null" }),
        claims("alice", 300),
    );
    assert_eq!(send(other).await, 401, "a kid that names no configured key");
}
