//! The request view, admission and the upstream header rewrite for a typical browser request
//! with a valid (cached) HS256 token: what the proxy adds per request on top of routing.
//!
//! `cargo bench --bench headers`. The `Permit` comes from `Authenticator::admit` itself, the
//! only way to get one, so the rewrite is measured exactly as `upstream::forward` runs it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt as _;
use http::Request;
use portcullis::auth::Admission;
use portcullis::upstream::{rewrite_request_headers, Forwarding};
use portcullis::view::RequestView;
use portcullis::{rules, App, Config, ConnInfo};
use serde_json::{json, Value};

const SECRET: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn config() -> Config {
    let text = format!(
        r#"
[upstreams]
api = "http://127.0.0.1:18080"

[jwt]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "https://auth.bench.local/"
audience = "bench-api"

[[routes]]
path = "/public/:path*"
upstream = "api"

[[routes]]
path = "/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "api"
"#
    );
    Config::from_toml_str(&text).expect("the bench config is valid")
}

fn token() -> String {
    let now = portcullis::auth::now();
    let Value::Object(claims) = json!({
        "iss": "https://auth.bench.local/", "aud": "bench-api", "sub": "user-0001",
        "iat": now, "nbf": now - 5, "exp": now + 3600, "email": "alice@example.test",
    }) else {
        unreachable!("an object literal")
    };
    portcullis::auth::jwt::sign_hs256(SECRET.as_bytes(), &claims).expect("signing")
}

fn request(token: &str) -> http::request::Parts {
    Request::get("/api/v1/items?page=1")
        .header("host", "app.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header("accept", "application/json")
        .header("accept-language", "en-GB,en;q=0.5")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .header("referer", "https://app.example.com/dashboard")
        .header(
            "cookie",
            format!("theme=dark; access_token={token}; refresh_token=r1; lang=en"),
        )
        .header("sec-fetch-dest", "empty")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-site", "same-origin")
        .header("connection", "keep-alive")
        .body(())
        .expect("a valid request")
        .into_parts()
        .0
}

fn headers(c: &mut Criterion) {
    let app = App::new(config()).expect("the app builds");
    let rule = rules::route(&app.config.rules, "app.example.com", "/api/v1/items").expect("a rule");
    let parts = request(&token());
    let conn = std::sync::Arc::new(ConnInfo::new(
        "203.0.113.7:51000".parse().expect("address"),
        "127.0.0.1:8080".parse().expect("address"),
        false,
    ));
    let mut path = None;
    let view = RequestView::proxied(&parts, &conn, &[], &mut path).expect("a valid request");
    c.bench_function("request view (normalize, host)", |b| {
        b.iter(|| {
            let mut path = None;
            let built = RequestView::proxied(black_box(&parts), &conn, &[], &mut path)
                .map(|view| (view.path.len(), view.host.port()));
            black_box(built.is_ok())
        })
    });
    let admit = || {
        app.auth
            .admit(rule, &view, &mut Vec::new())
            .now_or_never()
            .expect("a cached token needs no I/O")
            .expect("the token is admitted")
    };
    let Admission::Forward(permit) = admit() else {
        panic!("a required rule forwards")
    };
    c.bench_function("admit (HS256, cached)", |b| b.iter(|| black_box(admit())));

    let request_id = http::HeaderValue::from_static("6a1b2c3d-1f");
    let session = &app.config.session;
    let forwarding = Forwarding {
        conn: &conn,
        trusted_proxies: &[],
        own_cookies: [&session.access_cookie, &session.refresh_cookie],
        identity_headers: &[],
        request_id: &request_id,
        host: view.host.header_value(),
    };
    c.bench_function("rewrite request headers", |b| {
        b.iter_batched(
            || parts.headers.clone(),
            |mut headers| {
                rewrite_request_headers(&mut headers, &permit, &forwarding, true);
                headers
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, headers);
criterion_main!(benches);
