//! Route decisions (redirect / 401 / 403, guest rules), what the upstream receives on an
//! admitted request, HTTP/2, and `/auth/me`.

use std::time::Duration;

use serde_json::json;

use super::{for_each_alg, good_claims, with, Guard, API, PAGE, PAGE_LOGIN, ROUTES};
use crate::support::keys::{now, raw_token, sign_hmac, TestKey};
use crate::support::proxy::{self, proxy};
use crate::support::{backend, raw, upstream, CookieJar, Req};

#[tokio::test]
async fn unauthenticated_requests_are_redirected_or_refused_per_rule() {
    let g = Guard::start("HS256").await;
    let nav = "text/html,application/xhtml+xml,*/*;q=0.8";
    // (path, headers, expected status)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case<'_>> = vec![
        // redirect: always a redirect, even for an API-looking request.
        ("/page/x", vec![], 302),
        ("/page/x", vec![("accept", "application/json")], 302),
        ("/page/x", vec![("x-requested-with", "XMLHttpRequest")], 302),
        // status: always 401, even for a navigation.
        ("/api/x", vec![("accept", nav)], 401),
        (
            "/api/x",
            vec![("sec-fetch-mode", "navigate"), ("accept", nav)],
            401,
        ),
        ("/api/admin/x", vec![("accept", nav)], 401),
        // auto: navigations redirect, everything else is an API call.
        ("/dashboard", vec![], 401),
        ("/dashboard", vec![("accept", "*/*")], 401),
        ("/dashboard", vec![("accept", "application/json")], 401),
        ("/dashboard", vec![("accept", nav)], 302),
        ("/dashboard", vec![("accept", "TEXT/HTML")], 302),
        (
            "/dashboard",
            vec![("accept", nav), ("x-requested-with", "XMLHttpRequest")],
            401,
        ),
        ("/dashboard", vec![("sec-fetch-mode", "navigate")], 302),
        (
            "/dashboard",
            vec![("sec-fetch-mode", "navigate"), ("accept", "*/*")],
            302,
        ),
        (
            "/dashboard",
            vec![("sec-fetch-mode", "cors"), ("accept", nav)],
            401,
        ),
        (
            "/dashboard",
            vec![("sec-fetch-mode", "no-cors"), ("accept", nav)],
            401,
        ),
    ];
    for (path, headers, want) in cases {
        for h2 in [false, true] {
            let mut req = Req::get(&g.proxy.url(path));
            for (name, value) in &headers {
                req = req.header(name, value);
            }
            let resp = if h2 {
                req.send_h2c().await
            } else {
                req.send().await
            };
            assert_eq!(resp.status, want, "{path} {headers:?} h2={h2}");
            if want == 401 {
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
                assert_eq!(resp.json()["error"], "unauthenticated");
            } else {
                let next = format!("/login?next={}", path.replace('/', "%2F"));
                assert_eq!(resp.location(), Some(next.as_str()), "{path}");
            }
        }
    }
    assert_eq!(g.up.requests(), 0);
}

#[tokio::test]
async fn the_login_redirect_carries_the_normalized_path_and_query() {
    let g = Guard::start("HS256").await;
    for (sent, next) in [
        ("/dashboard", "/dashboard"),
        (
            "/dashboard/reports?tab=2&q=a%20b",
            "/dashboard/reports?tab=2&q=a%20b",
        ),
        (
            "/page/x?next=//evil.example&a=1",
            "/page/x?next=//evil.example&a=1",
        ),
        (
            "/dashboard/../dashboard/./a//b?x=%2F",
            "/dashboard/a/b?x=%2F",
        ),
        ("/%64ashboard/caf%C3%A9", "/dashboard/caf%C3%A9"),
    ] {
        let resp = g.navigate(sent, "").await;
        assert_eq!(resp.status, 302, "{sent}");
        let location = resp.location().expect("a Location");
        let query = location
            .strip_prefix("/login?")
            .unwrap_or_else(|| panic!("{sent}: redirected to {location}"));
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(params, [("next".to_owned(), next.to_owned())], "{sent}");
        assert!(
            !query[5..].contains(['/', '?', '&', ' ']),
            "{sent}: next is not encoded: {location}"
        );
    }
    assert_eq!(g.up.requests(), 0);
}

#[tokio::test]
async fn claims_rules_answer_403_as_json() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        // (path, claim, value, admitted)
        let cases = [
            ("/api/admin/x", "role", json!("admin"), true),
            ("/api/admin/x", "role", json!("user"), false),
            ("/api/admin/x", "role", json!("Admin"), false),
            ("/api/admin/x", "role", json!(["user", "admin"]), true),
            ("/api/admin/x", "role", json!(["user"]), false),
            ("/api/admin/x", "role", json!([]), false),
            ("/api/admin/x", "role", json!(null), false),
            ("/api/admin/x", "role", json!({"admin": true}), false),
            ("/api/admin/x", "role", json!(1), false),
            ("/api/admin/x", "roles", json!("admin"), false),
            ("/api/team/x", "role", json!("editor"), true),
            ("/api/team/x", "role", json!("admin"), true),
            ("/api/team/x", "role", json!("viewer"), false),
            ("/api/team/x", "role", json!(["viewer", "editor"]), true),
            ("/api/groups/x", "groups", json!(["dev", "ops"]), true),
            ("/api/groups/x", "groups", json!("ops"), true),
            ("/api/groups/x", "groups", json!(["dev"]), false),
            ("/api/groups/x", "groups", json!(["dev", ["ops"]]), false),
        ];
        for (path, claim, value, admitted) in cases {
            let before = g.up.requests();
            let token = g.token_with(claim, value.clone());
            for h2 in [false, true] {
                let req = Req::get(&g.proxy.url(path)).cookie(&format!("access_token={token}"));
                let resp = if h2 {
                    req.send_h2c().await
                } else {
                    req.send().await
                };
                let what = format!("{alg} {path} {claim}={value} h2={h2}");
                if admitted {
                    assert_eq!(resp.status, 200, "{what}");
                } else {
                    assert_eq!(resp.status, 403, "{what}");
                    assert_eq!(resp.json()["error"], "forbidden", "{what}");
                    assert_eq!(
                        resp.header("content-type"),
                        Some("application/json"),
                        "{what}"
                    );
                }
            }
            let forwarded = g.up.requests() - before;
            assert_eq!(forwarded, if admitted { 2 } else { 0 }, "{path} {value}");
        }
        // Unauthenticated on a claims rule is still 401, not 403.
        let resp = g.get("/api/admin/x", "").await;
        assert_eq!(resp.status, 401);
    })
    .await;
}

#[tokio::test]
async fn a_signed_in_user_is_sent_away_from_guest_pages() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let signed_in = g
            .navigate("/login", &format!("access_token={}", g.token()))
            .await;
        assert_eq!(signed_in.status, 302, "{alg}");
        assert_eq!(signed_in.location(), Some("/dashboard"));
        assert_eq!(g.up.requests(), 0);
        let expired = g.token_with("exp", json!(now() - 3600));
        let forged = TestKey::new(alg).sign(good_claims());
        for cookie in [
            String::new(),
            format!("access_token={expired}"),
            format!("access_token={forged}"),
        ] {
            let resp = g.navigate("/login?next=%2Fdashboard", &cookie).await;
            assert_eq!(resp.status, 200, "{alg} guest page with {cookie:?}");
        }
        assert_eq!(g.up.requests(), 3);
    })
    .await;
}

#[tokio::test]
async fn the_upstream_sees_one_bearer_and_none_of_the_proxys_cookies() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let token = g.token_with("tenant", json!("acme"));
        for h2 in [false, true] {
            let req = Req::get(&g.proxy.url("/api/items?id=7"))
                .cookie(&format!(
                    "theme=dark; access_token={token}; refresh_token=r.r.r; lang=en"
                ))
                .header("authorization", "Bearer forged.by.client")
                .header("authorization", "Basic YWxpY2U6c2VjcmV0")
                .header("x-user-id", "root")
                .header("x_user_id", "root")
                .header("X-User-Email", "root@evil.example")
                .header("x_user_email", "root@evil.example")
                .header("x-user-role", "admin")
                .header("x_user_role", "admin")
                .header("x-auth-request-user", "root")
                .header("x_auth_request_email", "root@evil.example")
                .header("x-forwarded-user", "root")
                .header("x_forwarded_user", "root")
                .header("x-forwarded-email", "root@evil.example")
                .header("x-tenant", "evil")
                .header("x_tenant", "evil")
                .header("connection", "Authorization, X-User-Id, X-Tenant");
            let resp = if h2 {
                // HTTP/2 forbids connection-specific headers; send the rest.
                Req::get(&g.proxy.url("/api/items?id=7"))
                    .cookie(&format!(
                        "theme=dark; access_token={token}; refresh_token=r.r.r; lang=en"
                    ))
                    .header("authorization", "Bearer forged.by.client")
                    .header("x-user-id", "root")
                    .header("x_user_id", "root")
                    .header("x-tenant", "evil")
                    .header("x_tenant", "evil")
                    .header("x-forwarded-user", "root")
                    .send_h2c()
                    .await
            } else {
                req.send().await
            };
            assert_eq!(resp.status, 200, "{alg} h2={h2}: {}", resp.text());
            let seen = g.up.last().expect("forwarded");
            let what = format!("{alg} h2={h2}");
            assert_eq!(
                seen.header_all("authorization"),
                [format!("Bearer {token}")],
                "{what}"
            );
            assert_eq!(seen.header_all("x-user-id"), ["alice"], "{what}");
            assert_eq!(
                seen.header_all("x-user-email"),
                ["alice@example.com"],
                "{what}"
            );
            assert_eq!(seen.header_all("x-tenant"), ["acme"], "{what}");
            assert_eq!(
                seen.header_all("cookie").join("; "),
                "theme=dark; lang=en",
                "{what}"
            );
            for (name, _) in &seen.headers {
                let canonical = name.replace('_', "-");
                assert!(
                    !(canonical.starts_with("x-auth-")
                        || canonical == "x-user-role"
                        || canonical == "x-forwarded-user"
                        || canonical == "x-forwarded-email"
                        || name.contains('_')),
                    "{what}: spoofed {name} reached the upstream"
                );
            }
        }
        // A claim that is absent leaves its header out rather than forwarding the client's.
        let resp = Req::get(&g.proxy.url(API))
            .cookie(&format!("access_token={}", g.token()))
            .header("x-tenant", "evil")
            .send()
            .await;
        assert_eq!(resp.status, 200);
        assert!(g.up.last().expect("forwarded").header("x-tenant").is_none());
        // Configured identity headers are stripped on public rules too.
        let public = Req::get(&g.proxy.url("/public/x"))
            .header("x-tenant", "evil")
            .header("x_user_id", "root")
            .header("x-user-id", "root")
            .send()
            .await;
        assert_eq!(public.status, 200);
        let seen = g.up.last().expect("forwarded");
        assert!(seen.header("x-tenant").is_none(), "{alg}");
        assert!(seen.header("x-user-id").is_none(), "{alg}");
        assert!(seen.header("x_user_id").is_none(), "{alg}");
    })
    .await;
}

#[tokio::test]
async fn http2_gets_the_same_decisions() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let forged = raw_token(
            &json!({"alg": "none"}).to_string(),
            &good_claims().to_string(),
            b"",
        );
        let confused = g
            .key
            .public_pem()
            .map(|pem| sign_hmac("HS256", pem, json!({}), good_claims()));
        let mut refused = vec![forged, TestKey::new(alg).sign(good_claims())];
        refused.extend(confused);
        for token in &refused {
            let cookie = format!("access_token={token}");
            let api = Req::get(&g.proxy.url(API)).cookie(&cookie).send_h2c().await;
            assert_eq!(api.status, 401, "{alg} h2 API");
            let page = Req::get(&g.proxy.url(PAGE))
                .header("sec-fetch-mode", "navigate")
                .cookie(&cookie)
                .send_h2c()
                .await;
            assert_eq!(page.status, 302, "{alg} h2 page");
            assert_eq!(page.location(), Some(PAGE_LOGIN));
        }
        assert_eq!(g.up.requests(), 0, "{alg}");
        let token = g.token();
        let ok = Req::get(&g.proxy.url(API))
            .cookie(&format!("access_token={token}"))
            .send_h2c()
            .await;
        assert_eq!(ok.status, 200);
        let seen = g.up.last().expect("forwarded");
        assert_eq!(
            seen.header_all("authorization"),
            [format!("Bearer {token}")]
        );
        let me = Req::get(&g.proxy.url("/auth/me"))
            .cookie(&format!("access_token={token}"))
            .send_h2c()
            .await;
        assert_eq!(me.status, 200);
        assert_eq!(me.json()["sub"], "alice");
    })
    .await;
}

#[tokio::test]
async fn auth_me_returns_the_verified_claims() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let claims = with(good_claims(), "role", json!(["a", "b"]));
        let token = g.key.sign(claims.clone());
        let me = g.get("/auth/me", &format!("access_token={token}")).await;
        assert_eq!(me.status, 200, "{alg}");
        assert_eq!(me.header("content-type"), Some("application/json"));
        assert_eq!(me.json(), claims, "{alg}");
        let expired = g.token_with("exp", json!(now() - 3600));
        let none = raw_token(
            &json!({"alg": "none"}).to_string(),
            &claims.to_string(),
            b"",
        );
        for cookie in [
            String::new(),
            format!("access_token={expired}"),
            format!("access_token={none}"),
            format!("access_token={}", TestKey::new(alg).sign(good_claims())),
        ] {
            let resp = Req::get(&g.proxy.url("/auth/me"))
                .header("accept", "text/html")
                .cookie(&cookie)
                .send()
                .await;
            assert_eq!(resp.status, 401, "{alg} /auth/me with {cookie:?}");
            assert_eq!(resp.json()["error"], "unauthenticated");
        }
        assert_eq!(g.up.requests(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_guest_page_never_breaks_a_session_that_needs_renewal() {
    let key = TestKey::new("HS256");
    // The backend rotates refresh tokens: using one revokes it.
    let issuer = backend(&key).run().await;
    let up = upstream().run().await;
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("{}\n{ROUTES}", issuer.backend_toml()),
    ))
    .await;
    let user = crate::support::backend::DEFAULT_USER;
    let mut jar = CookieJar::new();
    jar.set("access_token", &issuer.mint_access(user, -3600));
    jar.set("refresh_token", &issuer.mint_refresh(user));

    // The login page, visited with an expired access token and a good refresh token.
    let login = Req::get(&p.url("/login"))
        .header("accept", "text/html")
        .jar(&jar)
        .send()
        .await;
    jar.apply(&login);
    let refreshes = issuer.refreshes();
    // Whatever the login page did, the browser's cookies still make a working session.
    let dashboard = Req::get(&p.url("/dashboard"))
        .header("accept", "text/html")
        .jar(&jar)
        .send()
        .await;
    assert_eq!(
        dashboard.status,
        200,
        "the session broke after a guest page (login answered {} {:?}, {refreshes} refresh call(s))",
        login.status,
        login.location()
    );
}

#[tokio::test]
async fn a_non_ascii_cookie_neither_hides_nor_leaks_the_session() {
    let g = Guard::start("HS256").await;
    let token = g.token();
    // Browsers send a site's UTF-8 cookie values as raw bytes.
    let line = format!("Cookie: lang=caf\u{e9}; access_token={token}; refresh_token=r.r.r\r\n");
    for path in [API, "/public/x"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: site.example\r\n{line}Connection: close\r\n\r\n");
        let answer = raw::send(g.proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(raw::status_codes(&answer), [200], "{path}");
        let seen = g.up.last().expect("forwarded");
        assert_eq!(seen.header_all("cookie"), ["lang=caf\u{e9}"], "{path}");
    }
    let seen = g.up.all();
    assert_eq!(
        seen[0].header_all("authorization"),
        [format!("Bearer {token}")]
    );
}
