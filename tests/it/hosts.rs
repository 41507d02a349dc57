//! The host of a request, which host rules, admission and the upstream's `Host` all take
//! from one function: `routes[].host` (exact, `*.domain`, case, port, trailing dot;
//! `X-Forwarded-Host` only from a trusted proxy), and ambiguous hosts refused rather than
//! forwarded — two `Host` headers (RFC 9112 §3.2), `host` beside HTTP/2 `:authority` (RFC 9113
//! §8.3.1), userinfo, an absolute-form target (RFC 9112 §3.2.2), a missing or malformed `Host`.
//! What reaches the upstream is read byte for byte from a raw upstream.

use std::time::Duration;

use http::{Request, Version};

use crate::support::proxy::{self, proxy, Proxy};
use crate::support::raw;
use crate::support::raw_upstream::{raw_upstream, RawUpstream};
use crate::support::{upstream, Req, TestKey, Upstream};

/// `admin.example.com` and every host under `apps.test` need a token; anything else is public.
const HOST_ROUTES: &str = r#"
[[routes]]
host = "admin.example.com"
path = "/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "app"

[[routes]]
host = "*.apps.test"
path = "/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

async fn host_rules(server: &str) -> (Upstream, Proxy, TestKey) {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let extra = format!("{server}\n{HOST_ROUTES}");
    let p = proxy(&proxy::config(&up.url(), &key.jwt_toml(), &extra)).await;
    (up, p, key)
}

async fn status_for_host(p: &Proxy, host: &str, extra: &[(&str, &str)]) -> u16 {
    let mut req = Req::get(&p.url("/x")).header("host", host);
    for (name, value) in extra {
        req = req.header(name, value);
    }
    req.send().await.status
}

#[tokio::test]
async fn host_rules_match_exact_and_wildcard_hosts_whatever_their_case_and_port() {
    let (up, p, _key) = host_rules("").await;
    let cases = [
        ("admin.example.com", 401),
        ("ADMIN.Example.COM", 401),
        ("admin.example.com:8443", 401),
        ("admin.example.com.", 401),
        ("Admin.Example.com.:80", 401),
        ("a.apps.test", 401),
        ("x.y.apps.test:8080", 401),
        ("A.APPS.TEST", 401),
        ("apps.test", 200),
        ("evilapps.test", 200),
        ("admin.example.com.evil.test", 200),
        ("other.example.com", 200),
        ("127.0.0.1", 200),
    ];
    for (host, want) in cases {
        assert_eq!(status_for_host(&p, host, &[]).await, want, "Host: {host}");
    }
    assert_eq!(up.requests(), 5, "only the public hosts were forwarded");
}

#[tokio::test]
async fn x_forwarded_host_counts_only_from_a_trusted_proxy() {
    // An untrusted peer cannot move a request off a host rule, nor onto one.
    let (up, p, _key) = host_rules("").await;
    let spoof = [("x-forwarded-host", "public.test")];
    assert_eq!(status_for_host(&p, "admin.example.com", &spoof).await, 401);
    let onto = [("x-forwarded-host", "admin.example.com")];
    assert_eq!(status_for_host(&p, "public.test", &onto).await, 200);
    assert_eq!(up.requests(), 1);
    drop(p);

    // Behind a trusted proxy, its X-Forwarded-Host is the host the client asked for: the
    // rules match it, and the upstream is sent it as Host, so that a site serving several
    // hosts serves the one that was authorized (not the admin site the proxy's own Host
    // names, with no session).
    let (up, p, _key) = host_rules("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]").await;
    assert_eq!(status_for_host(&p, "public.test", &onto).await, 401);
    assert_eq!(status_for_host(&p, "admin.example.com", &spoof).await, 200);
    let malformed = [("x-forwarded-host", "evil@admin.example.com")];
    assert_eq!(status_for_host(&p, "public.test", &malformed).await, 400);
    assert_eq!(up.requests(), 1);
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.header_all("host"), ["public.test"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["public.test"]);
}

/// A proxy with the host routes in front of a raw upstream.
async fn raw_setup() -> (RawUpstream, Proxy) {
    let key = TestKey::new("HS256");
    let up = raw_upstream().await;
    let p = proxy(&proxy::config(&up.url(), &key.jwt_toml(), HOST_ROUTES)).await;
    (up, p)
}

async fn raw_status(p: &Proxy, request: &str) -> u16 {
    let answer = raw::send(p.addr(), request.as_bytes(), Duration::from_secs(5)).await;
    raw::status_codes(&answer).first().copied().unwrap_or(0)
}

#[tokio::test]
async fn ambiguous_http1_hosts_are_refused() {
    let (up, p) = raw_setup().await;
    let refused = [
        // RFC 9112 §3.2: more than one Host.
        "GET /x HTTP/1.1\r\nHost: public.test\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: public.test\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        // Missing or malformed.
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.0\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: evil@public.test\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: public.test:99999\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: public.test/x\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: public..test\r\nConnection: close\r\n\r\n",
        // Userinfo in an absolute-form target; an absolute-form target without Host.
        "GET http://evil@public.test/x HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        "GET http://public.test/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for request in refused {
        assert_eq!(raw_status(&p, request).await, 400, "{request:?}");
    }
    assert_eq!(up.heads(), Vec::<String>::new(), "nothing was forwarded");

    // One Host: exactly that one reaches the upstream, once.
    let fine = "GET /x HTTP/1.1\r\nHost: Public.test:8080\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(&p, fine).await, 200);
    assert_eq!(up.header_lines("host"), ["host: Public.test:8080"]);
    assert_eq!(
        up.header_lines("x-forwarded-host"),
        ["x-forwarded-host: Public.test:8080"]
    );
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host() {
    let (up, p) = raw_setup().await;
    // RFC 9112 §3.2.2: the target's authority replaces Host, for the rules too.
    let guarded =
        "GET http://admin.example.com/x HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(&p, guarded).await, 401);
    assert!(up.heads().is_empty());
    let public =
        "GET http://public.test/x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(&p, public).await, 200);
    assert_eq!(up.header_lines("host"), ["host: public.test"]);
    let first_line = up.heads()[0].lines().next().unwrap_or_default().to_owned();
    assert_eq!(first_line, "GET /x HTTP/1.1");
}

fn h2_request(uri: &str, version: Version, hosts: &[&str]) -> Request<()> {
    let mut builder = Request::get(uri).version(version);
    for host in hosts {
        builder = builder.header("host", *host);
    }
    builder.body(()).expect("a valid request")
}

#[tokio::test]
async fn http2_authority_wins_over_a_host_header() {
    let (up, p) = raw_setup().await;
    let base = |host: &str| format!("http://{host}/x");
    // RFC 9113 §8.3.1: :authority decides, for the rules and for the upstream's Host.
    let guarded = h2_request(
        &base("admin.example.com"),
        Version::HTTP_2,
        &["public.test"],
    );
    assert_eq!(raw::h2(p.addr(), guarded).await, 401);
    assert!(up.heads().is_empty());
    let public = h2_request(
        &base("public.test"),
        Version::HTTP_2,
        &["admin.example.com"],
    );
    assert_eq!(raw::h2(p.addr(), public).await, 200);
    assert_eq!(up.header_lines("host"), ["host: public.test"]);
    assert_eq!(
        up.header_lines("x-forwarded-host"),
        ["x-forwarded-host: public.test"]
    );

    // Userinfo in :authority is refused, not forwarded.
    let userinfo = h2_request(&base("evil@public.test"), Version::HTTP_2, &[]);
    assert_eq!(raw::h2(p.addr(), userinfo).await, 400);
    // Without :authority, one host header names the host; two are refused.
    let no_authority = h2_request("/x", Version::HTTP_11, &["admin.example.com"]);
    assert_eq!(raw::h2(p.addr(), no_authority).await, 401);
    let two = h2_request(
        "/x",
        Version::HTTP_11,
        &["public.test", "admin.example.com"],
    );
    assert_eq!(raw::h2(p.addr(), two).await, 400);
    let none = h2_request("/x", Version::HTTP_11, &[]);
    assert_eq!(raw::h2(p.addr(), none).await, 400);
    assert_eq!(up.heads().len(), 1);
}
