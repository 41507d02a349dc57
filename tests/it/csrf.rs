//! The CSRF guard on the cookie-to-bearer path, and `jwt.from = ["cookie", "authorization"]`:
//! forged unsafe requests authenticated by the cookie are refused before the upstream is
//! contacted; same-origin, allowed-origin and non-browser requests, safe methods, and requests
//! carrying their own bearer token go through.

use serde_json::Value;

use crate::support::keys::{self, TestKey};
use crate::support::proxy::{proxy, Proxy};
use crate::support::{backend, upstream, Backend, Req, Resp, Upstream};

const ROUTES: &str = r#"
[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

const UNSAFE: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

struct Site {
    key: TestKey,
    be: Backend,
    up: Upstream,
    proxy: Proxy,
}

async fn site(extra: &str) -> Site {
    let key = TestKey::new("HS256");
    let be = backend(&key).run().await;
    let up = upstream().run().await;
    let proxy = proxy(&format!(
        "[upstreams]\napp = {up}\n\n{jwt}\n{backend}\n{extra}\n{ROUTES}",
        up = Value::from(up.url()),
        jwt = key.jwt_toml(),
        backend = be.backend_toml(),
    ))
    .await;
    Site { key, be, up, proxy }
}

impl Site {
    fn token(&self) -> String {
        self.key.sign(keys::claims("alice", 600))
    }

    /// `http://127.0.0.1:PORT`: the origin a browser on this site sends.
    fn origin(&self) -> String {
        format!("http://{}", self.proxy.addr())
    }

    /// An unsafe request with the session cookie and `headers`.
    async fn send(&self, method: &str, headers: &[(&str, &str)]) -> Resp {
        let mut request = Req::new(method, &self.proxy.url("/api/items"))
            .cookie(&format!("access_token={}", self.token()))
            .header("content-type", "application/json")
            .body("{}");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await
    }

    async fn assert_refused(&self, what: &str, headers: &[(&str, &str)]) {
        for method in UNSAFE {
            let before = self.up.requests();
            let resp = self.send(method, headers).await;
            assert_eq!(resp.status, 403, "{method} {what}: {}", resp.text());
            assert_eq!(resp.json()["error"], "csrf", "{method} {what}");
            assert_eq!(
                self.up.requests(),
                before,
                "{method} {what}: the upstream was contacted"
            );
        }
    }

    async fn assert_forwarded(&self, what: &str, headers: &[(&str, &str)]) {
        for method in UNSAFE {
            let before = self.up.requests();
            let resp = self.send(method, headers).await;
            assert_eq!(resp.status, 200, "{method} {what}: {}", resp.text());
            assert_eq!(self.up.requests(), before + 1, "{method} {what}");
        }
    }
}

#[tokio::test]
async fn forged_unsafe_requests_are_refused_before_the_upstream() {
    let s = site("").await;
    s.assert_refused("cross-site Origin", &[("origin", "https://evil.example")])
        .await;
    s.assert_refused(
        "Sec-Fetch-Site: cross-site",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    // A sibling subdomain is the same site but another origin.
    s.assert_refused(
        "sibling subdomain (Fetch Metadata)",
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://evil.127.0.0.1.example"),
        ],
    )
    .await;
    s.assert_refused(
        "sibling subdomain (Origin only)",
        &[("origin", "http://sibling.localhost")],
    )
    .await;
    s.assert_refused("Origin: null", &[("origin", "null")])
        .await;
    let other_port = format!("http://127.0.0.1:{}", s.proxy.addr().port() ^ 1);
    s.assert_refused("another port", &[("origin", &other_port)])
        .await;
    let other_scheme = format!("https://{}", s.proxy.addr());
    s.assert_refused("another scheme", &[("origin", &other_scheme)])
        .await;
    // Fetch Metadata decides, even beside this site's own Origin.
    let origin = s.origin();
    s.assert_refused(
        "cross-site Fetch Metadata with our Origin",
        &[("sec-fetch-site", "cross-site"), ("origin", &origin)],
    )
    .await;
    assert_eq!(s.up.requests(), 0);

    // The refusals are counted.
    let admin_metrics = crate::support::proxy::proxy_with_admin(&format!(
        "[upstreams]\napp = {up}\n\n{jwt}\n[admin]\nlisten = \"127.0.0.1:0\"\n{ROUTES}",
        up = Value::from(s.up.url()),
        jwt = s.key.jwt_toml(),
    ))
    .await;
    let (proxy, admin) = admin_metrics;
    let resp = Req::post(&proxy.url("/api/items"))
        .cookie(&format!("access_token={}", s.token()))
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(resp.status, 403);
    let metrics = Req::get(&format!("http://{admin}/metrics"))
        .send()
        .await
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_auth_decisions_total{decision=\"csrf\"}"))
        .unwrap_or_else(|| panic!("no csrf counter in:\n{metrics}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(count >= 1.0, "{line}");
}

#[tokio::test]
async fn same_origin_allowed_and_header_less_requests_go_through() {
    let s = site("[session]\nallowed_origins = [\"https://admin.example.com\"]\n").await;
    let origin = s.origin();
    s.assert_forwarded("same-origin Origin", &[("origin", &origin)])
        .await;
    s.assert_forwarded(
        "Sec-Fetch-Site: same-origin",
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    s.assert_forwarded("Sec-Fetch-Site: none", &[("sec-fetch-site", "none")])
        .await;
    s.assert_forwarded(
        "an allowed origin",
        &[("origin", "https://admin.example.com")],
    )
    .await;
    s.assert_forwarded("no browser headers (curl, a server)", &[])
        .await;

    // Safe methods are never refused, whatever their headers say.
    for method in ["GET", "HEAD", "OPTIONS"] {
        let resp = Req::new(method, &s.proxy.url("/api/items"))
            .cookie(&format!("access_token={}", s.token()))
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .send()
            .await;
        assert_eq!(resp.status, 200, "{method}");
    }
    // Without a session there is nothing to forge: the usual 401.
    let anonymous = Req::post(&s.proxy.url("/api/items"))
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_origin_counts() {
    let s = site("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").await;
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
    ];
    s.assert_forwarded(
        "the public origin",
        &[
            forwarded[0],
            forwarded[1],
            ("origin", "https://app.example.com"),
        ],
    )
    .await;
    s.assert_refused(
        "the proxy's own address is not the public origin",
        &[forwarded[0], forwarded[1], ("origin", &s.origin())],
    )
    .await;

    // From an untrusted peer the same headers change nothing.
    let untrusted = site("").await;
    untrusted
        .assert_refused(
            "spoofed X-Forwarded-Host",
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
}

#[tokio::test]
async fn csrf_off_forwards_everything() {
    let s = site("[session]\ncsrf = \"off\"\n").await;
    s.assert_forwarded(
        "cross-site with csrf off",
        &[("origin", "https://evil.example")],
    )
    .await;
}

#[tokio::test]
async fn a_clients_own_bearer_token_is_verified_never_renewed_and_not_csrf_checked() {
    let key = TestKey::new("HS256");
    let be = backend(&key).run().await;
    let up = upstream().run().await;
    let proxy = proxy(&format!(
        "[upstreams]\napp = {up}\n\n{jwt}from = [\"cookie\", \"authorization\"]\n\n{backend}\n{ROUTES}",
        up = Value::from(up.url()),
        jwt = key.jwt_toml(),
        backend = be.backend_toml(),
    ))
    .await;
    let token = key.sign(keys::claims("mobile-app", 600));
    let url = proxy.url("/api/items");

    // A script's own bearer token is verified and forwarded as it is.
    let resp = Req::get(&url)
        .header("authorization", &format!("Bearer {token}"))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        up.last()
            .and_then(|r| r.header("authorization").map(str::to_owned)),
        Some(format!("Bearer {token}"))
    );
    // Not subject to CSRF: a browser never attaches it on its own.
    let resp = Req::post(&url)
        .header("authorization", &format!("bearer {token}"))
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Forged or expired bearer tokens are refused; an expired one is never renewed, even
    // beside a refresh cookie, and the cookie does not stand in for it.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let expired = key.sign(keys::claims("mobile-app", -60));
    let refreshes = be.refreshes();
    let cookie_token = be.mint_access("alice@example.com", 600);
    for bad in [forged.as_str(), expired.as_str(), ""] {
        let resp = Req::get(&url)
            .header("authorization", &format!("Bearer {bad}"))
            .cookie(&format!(
                "access_token={cookie_token}; refresh_token={}",
                be.mint_refresh("alice@example.com")
            ))
            .send()
            .await;
        assert_eq!(resp.status, 401, "{bad:?}");
        assert!(resp.set_cookie("access_token").is_none());
    }
    assert_eq!(be.refreshes(), refreshes, "a bearer token was renewed");
    // Two Authorization headers are ambiguous.
    let resp = Req::get(&url)
        .header("authorization", &format!("Bearer {token}"))
        .header("authorization", &format!("Bearer {token}"))
        .send()
        .await;
    assert_eq!(resp.status, 401);
    // Another scheme is not a token: the cookie decides, and the header is replaced.
    let resp = Req::get(&url)
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .cookie(&format!("access_token={cookie_token}"))
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        up.last()
            .and_then(|r| r.header("authorization").map(str::to_owned)),
        Some(format!("Bearer {cookie_token}"))
    );
}

#[tokio::test]
async fn by_default_a_clients_bearer_token_is_replaced() {
    let s = site("").await;
    let resp = Req::get(&s.proxy.url("/api/items"))
        .header("authorization", &format!("Bearer {}", s.token()))
        .send()
        .await;
    assert_eq!(resp.status, 401, "jwt.from defaults to the cookie alone");
    assert_eq!(s.be.refreshes(), 0);
}
