//! Login: every answer shape and body format, refusals and faults, cookie attributes,
//! return paths, login CSRF and the attempt limit.

use super::*;

#[tokio::test]
async fn login_works_with_every_answer_shape() {
    let shapes = [
        Shape::AccessRefresh,
        Shape::Token,
        Shape::CamelCase,
        Shape::SimpleJwt,
    ];
    for shape in shapes {
        let jwt = match shape {
            Shape::SimpleJwt => format!("{JWT}claims = {{ token_type = \"access\" }}\n"),
            _ => JWT.to_owned(),
        };
        let s = site_with(
            |b| b.shape(shape).access_ttl(600).refresh_ttl(3600),
            Sections {
                jwt,
                ..Sections::default()
            },
        )
        .await;
        let resp = Req::post(&s.url("/login"))
            .form(&[("email", USER), ("password", PASSWORD), ("remember", "1")])
            .send()
            .await;
        assert_eq!(resp.status, 303, "{shape:?}: {}", resp.text());
        assert_eq!(resp.location(), Some("/dashboard"), "{shape:?}");

        let access = resp.set_cookie("access_token").expect("access cookie");
        let claims = s
            .key
            .verify(&access.value)
            .unwrap_or_else(|e| panic!("{shape:?}: the access cookie is no valid token: {e}"));
        assert_eq!(claims["sub"], USER, "{shape:?}");
        let age = access.max_age().expect("Max-Age");
        assert!(
            (598..=600).contains(&age),
            "{shape:?}: access Max-Age {age}"
        );
        let refresh = resp.set_cookie("refresh_token").expect("refresh cookie");
        if shape == Shape::Token {
            assert!(
                refresh.is_removal(),
                "{shape:?}: no refresh token, yet {refresh:?}"
            );
        } else {
            assert!(!refresh.value.is_empty(), "{shape:?}");
            let age = refresh.max_age().expect("Max-Age");
            assert!(
                (3598..=3600).contains(&age),
                "{shape:?}: refresh Max-Age {age} is not the refresh token's exp"
            );
        }

        // Exactly the configured fields went to the backend, as JSON.
        let sent: Value = serde_json::from_str(&s.backend.last_login_body().expect("a login"))
            .expect("JSON login body");
        assert_eq!(
            sent,
            json!({ "email": USER, "password": PASSWORD }),
            "{shape:?}"
        );
        assert!(s
            .backend
            .last_login_content_type()
            .is_some_and(|t| t.starts_with("application/json")));

        // The session works: the upstream gets the token as a bearer, never the cookies.
        let mut jar = CookieJar::new();
        jar.apply(&resp);
        let page = s.page().jar(&jar).send().await;
        assert_eq!(page.status, 200, "{shape:?}: {}", page.text());
        assert_eq!(
            s.last_bearer(),
            Some(format!("Bearer {}", access.value)),
            "{shape:?}"
        );
        let forwarded_cookie =
            s.up.last()
                .and_then(|r| r.header("cookie").map(str::to_owned));
        assert_eq!(
            forwarded_cookie, None,
            "{shape:?}: the proxy's cookies went upstream"
        );
    }
}

#[tokio::test]
async fn form_backend_with_renamed_fields() {
    // FastAPI Users / OAuth2 password style: `username` and `password`, form-encoded.
    let s = site_with(
        |b| b.format(Format::Form).login_fields("username", "password"),
        Sections {
            login: format!("{LOGIN}fields = {{ username = \"email\", password = \"password\" }}\n"),
            ..Sections::default()
        },
    )
    .await;
    for (what, request) in [
        ("form", s.login_form("/login", PASSWORD)),
        ("json", s.login_json("/login", PASSWORD)),
    ] {
        let resp = request.send().await;
        assert!(
            resp.set_cookie("access_token")
                .is_some_and(|c| !c.is_removal()),
            "{what}: {} {}",
            resp.status,
            resp.text()
        );
        assert!(s
            .backend
            .last_login_content_type()
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")));
        let body = s.backend.last_login_body().expect("a login");
        let mut fields: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                ("password".to_owned(), PASSWORD.to_owned()),
                ("username".to_owned(), USER.to_owned())
            ],
            "{what}"
        );
    }
}

#[tokio::test]
async fn json_logins_get_json_and_forms_get_redirects() {
    let s = site(|b| b).await;
    let resp = s
        .login_json("/login?next=%2Fdashboard%2Freports", PASSWORD)
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({ "ok": true }));
    assert!(resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    assert!(resp
        .set_cookie("access_token")
        .is_some_and(|c| !c.is_removal()));
    assert!(resp
        .set_cookie("refresh_token")
        .is_some_and(|c| !c.is_removal()));

    let resp = s
        .login_form("/login?next=%2Fdashboard%2Freports", PASSWORD)
        .send()
        .await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/dashboard/reports"));
    let resp = s.login_form("/login", PASSWORD).send().await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/dashboard"));
    assert_eq!(s.backend.logins(), 3);
    assert_eq!(s.up.requests(), 0, "a login POST reached the site");
}

#[tokio::test]
async fn own_endpoints_ignore_a_trailing_slash() {
    let s = site(|b| b).await;
    let resp = s.login_form("/login/", PASSWORD).send().await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(s.backend.logins(), 1);
    let resp = Req::post(&s.proxy.url("/logout/")).send().await;
    assert_eq!(resp.status, 303);
    assert_eq!(s.up.requests(), 0, "an own endpoint reached the site");
}

#[tokio::test]
async fn without_a_backend_login_posts_go_to_the_site() {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let p = proxy(&crate::support::proxy::config(
        &up.url(),
        &key.jwt_toml(),
        ROUTES,
    ))
    .await;
    let resp = Req::post(&p.url("/login"))
        .form(&[("email", "a"), ("password", "b")])
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        up.requests(),
        1,
        "the site handles its own login when no backend is configured"
    );
}

#[tokio::test]
async fn wrong_passwords_in_every_dialect() {
    for status in [400, 401, 403, 422] {
        let s = site(|b| b.reject_status(status)).await;
        let resp = s
            .login_form("/login?next=%2Fdashboard%2Fx", "wrong")
            .send()
            .await;
        assert_eq!(resp.status, 303, "backend {status}: {}", resp.text());
        assert_eq!(
            resp.location(),
            Some("/login?error=wrong_credentials"),
            "backend {status}"
        );
        assert_no_cookies(&resp, &format!("form, backend {status}"));

        let resp = s.login_json("/login", "wrong").send().await;
        assert_eq!(resp.status, 401, "backend {status}: {}", resp.text());
        assert_eq!(resp.json(), json!({ "error": "invalid_credentials" }));
        assert_no_cookies(&resp, &format!("json, backend {status}"));
        assert_eq!(s.backend.logins(), 2);
    }
    // A 404 means a wrong backend.login URL, not a wrong password: an outage.
    let s = site(|b| b.reject_status(404)).await;
    let resp = s.login_json("/login", "wrong").send().await;
    assert_error(&resp, 502, "backend_unavailable", "backend 404");
}

#[tokio::test]
async fn a_backend_429_is_passed_on_with_its_retry_after() {
    let s = site(|b| b.fault(Fault::Status(429))).await;
    for request in [
        s.login_form("/login", PASSWORD),
        s.login_json("/login", PASSWORD),
    ] {
        let resp = request.send().await;
        assert_eq!(resp.status, 429, "{}", resp.text());
        assert_eq!(resp.header("retry-after"), Some("30"));
        assert_no_cookies(&resp, "backend 429");
    }
}

#[tokio::test]
async fn backend_faults_set_no_cookie() {
    let cases = [
        ("down", Fault::Down, 502),
        ("slow", Fault::Slow(Duration::from_secs(10)), 504),
        ("html", Fault::Html, 502),
        ("empty body", Fault::Empty, 502),
        ("json without a token", Fault::NoToken, 502),
        ("token signed by another key", Fault::BadToken, 502),
        ("100 MB body", Fault::Huge(100 << 20), 502),
        ("500", Fault::Status(500), 502),
        ("503", Fault::Status(503), 502),
        ("token with ; and space", Fault::WeirdToken, 502),
        ("token too long for a cookie", Fault::LongToken, 502),
    ];
    let mut set = JoinSet::new();
    for (what, fault, status) in cases {
        set.spawn(async move {
            let s = site_with(
                |b| b.fault(fault),
                Sections {
                    backend: "timeout = \"500ms\"\n".to_owned(),
                    ..Sections::default()
                },
            )
            .await;
            // One error code for every backend failure; a timeout is told apart by its 504.
            let code = "backend_unavailable";
            for (style, request) in [
                ("form", s.login_form("/login", PASSWORD)),
                ("json", s.login_json("/login", PASSWORD)),
            ] {
                let started = Instant::now();
                let resp = request.send().await;
                let what = format!("{what} ({style})");
                assert_error(&resp, status, code, &what);
                assert_no_cookies(&resp, &what);
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{what}: took {:?}",
                    started.elapsed()
                );
                // The client gets a generic message, never the backend's details.
                assert!(!resp.text().contains("aaaa"), "{what}: {}", resp.text());
            }
            assert_eq!(s.up.requests(), 0, "{what}");
        });
    }
    while let Some(result) = set.join_next().await {
        if let Err(err) = result {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

#[tokio::test]
async fn the_backends_own_access_cookie_is_relayed() {
    let s = site(|b| b.fault(Fault::SetCookie)).await;
    let resp = s.login_form("/login", PASSWORD).send().await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    let access: Vec<&str> = resp
        .header_all("set-cookie")
        .into_iter()
        .filter(|c| c.starts_with("access_token="))
        .collect();
    assert_eq!(access.len(), 1, "{access:?}");
    let token = &SetCookie::parse(access[0]).value;
    s.key
        .verify(token)
        .expect("the relayed cookie holds the token");
    assert_eq!(access[0], format!("access_token={token}; HttpOnly; Path=/"));
    // The proxy still sets the refresh cookie, and the relayed cookie is a working session.
    assert!(resp
        .set_cookie("refresh_token")
        .is_some_and(|c| !c.is_removal()));
    let mut jar = CookieJar::new();
    jar.apply(&resp);
    assert_eq!(s.page().jar(&jar).send().await.status, 200);
    assert_eq!(s.last_bearer(), Some(format!("Bearer {token}")));
}

#[tokio::test]
async fn cookie_attributes_follow_the_configuration() {
    // Defaults: Secure, SameSite=Strict.
    let s = site(|b| b.access_ttl(120)).await;
    let resp = s.login_form("/login", PASSWORD).send().await;
    for name in ["access_token", "refresh_token"] {
        let c = resp.set_cookie(name).expect(name);
        assert!(c.has("HttpOnly"), "{name}: {c:?}");
        assert!(c.has("Secure"), "{name}: {c:?}");
        assert_eq!(c.attr("SameSite"), Some("Strict"), "{name}");
        assert_eq!(c.attr("Path"), Some("/"), "{name}");
        assert!(!c.has("Domain"), "{name}");
    }
    let age = resp.set_cookie("access_token").and_then(|c| c.max_age());
    assert_eq!(age, Some(120), "Max-Age from expires_in");
    let age = resp.set_cookie("refresh_token").and_then(|c| c.max_age());
    assert!(
        age.is_some_and(|a| (7 * 86_400 - 2..=7 * 86_400).contains(&a)),
        "refresh Max-Age {age:?}"
    );

    let s = site_with(
        |b| b.shape(Shape::SimpleJwt).access_ttl(90).refresh_ttl(1000),
        Sections {
            session: format!(
                "{SESSION}secure = false\nsame_site = \"lax\"\ndomain = \"app.example\"\n"
            ),
            ..Sections::default()
        },
    )
    .await;
    let resp = s.login_form("/login", PASSWORD).send().await;
    for name in ["access_token", "refresh_token"] {
        let c = resp.set_cookie(name).expect(name);
        assert!(c.has("HttpOnly"), "{name}: {c:?}");
        assert!(!c.has("Secure"), "{name}: {c:?}");
        assert_eq!(c.attr("SameSite"), Some("Lax"), "{name}");
        assert_eq!(c.attr("Path"), Some("/"), "{name}");
        assert_eq!(c.attr("Domain"), Some("app.example"), "{name}");
    }
    // No expires_in in this shape: both lifetimes come from the tokens' exp.
    let age = resp.set_cookie("access_token").and_then(|c| c.max_age());
    assert!(
        age.is_some_and(|a| (88..=90).contains(&a)),
        "access Max-Age {age:?}"
    );
    let age = resp.set_cookie("refresh_token").and_then(|c| c.max_age());
    assert!(
        age.is_some_and(|a| (998..=1000).contains(&a)),
        "refresh Max-Age {age:?}"
    );
}

#[tokio::test]
async fn only_forms_and_json_are_accepted() {
    let s = site(|b| b).await;
    let multipart = "--x\r\ncontent-disposition: form-data; name=\"email\"\r\n\r\nalice@example.com\r\n--x--\r\n";
    let cases = [
        Req::post(&s.url("/login"))
            .header("content-type", "multipart/form-data; boundary=x")
            .body(multipart),
        Req::post(&s.url("/login"))
            .header("content-type", "text/plain")
            .body("email=alice@example.com&password=secret"),
        Req::post(&s.url("/login")).body("email=alice@example.com&password=secret"),
    ];
    for request in cases {
        let resp = request.send().await;
        assert_error(&resp, 415, "unsupported_media_type", "login body");
        assert_no_cookies(&resp, "415");
    }
    let resp = Req::post(&s.url("/login"))
        .header("content-type", "application/json")
        .body("[1,2]")
        .send()
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(s.backend.logins(), 0);
}

#[tokio::test]
async fn cross_site_login_posts_are_refused() {
    let s = site(|b| b).await;
    // This site's host and port over the other scheme is another origin, as for CSRF.
    let other_scheme = s.origin().replacen("http://", "https://", 1);
    let refused = [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("origin", "http://127.0.0.1"),
        ("origin", other_scheme.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in refused {
        for request in [
            s.login_form("/login", PASSWORD),
            s.login_json("/login", PASSWORD),
        ] {
            let resp = request.header(name, value).send().await;
            assert_error(&resp, 403, "forbidden", &format!("{name}: {value}"));
            assert_no_cookies(&resp, &format!("{name}: {value}"));
        }
    }
    assert_eq!(s.backend.logins(), 0);
    let origin = s.origin();
    let allowed = [
        ("origin", origin.as_str()),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-site", "none"),
        ("x-nothing", "none"),
    ];
    for (name, value) in allowed {
        let resp = s
            .login_form("/login", PASSWORD)
            .header(name, value)
            .send()
            .await;
        assert_eq!(resp.status, 303, "{name}: {value}: {}", resp.text());
        assert_eq!(resp.location(), Some("/dashboard"));
    }
    assert_eq!(s.backend.logins(), 4);
}

#[tokio::test]
async fn login_attempts_are_limited_per_client() {
    let s = site_with(
        |b| b,
        Sections {
            login: LOGIN.replace("attempts_per_minute = 0", "attempts_per_minute = 3"),
            ..Sections::default()
        },
    )
    .await;
    for _ in 0..3 {
        let resp = s.login_form("/login", "wrong").send().await;
        assert_eq!(resp.location(), Some("/login?error=wrong_credentials"));
    }
    for request in [
        s.login_form("/login", PASSWORD),
        s.login_json("/login", PASSWORD),
    ] {
        let resp = request.send().await;
        assert_error(&resp, 429, "too_many_requests", "fourth attempt");
        let retry: u64 = resp
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After seconds");
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert_no_cookies(&resp, "429");
    }
    assert_eq!(
        s.backend.logins(),
        3,
        "a limited attempt reached the backend"
    );

    // 0 turns the limit off.
    let s = site(|b| b).await;
    for _ in 0..15 {
        let resp = s.login_form("/login", "wrong").send().await;
        assert_eq!(resp.status, 303);
    }
    assert_eq!(s.backend.logins(), 15);
}

/// Return paths docs/security.md lists as refused, as the value the proxy sees after one decoding.
const OFF_SITE: &[&str] = &[
    "//evil.com",
    "//evil.com/dashboard",
    "///evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/%09/evil.com",
    "/\t/evil.com",
    "/%2f%2fevil.com",
    "/%2F%2Fevil.com",
    "/%5cevil.com",
    "/%5C%5Cevil.com",
    "https:evil.com",
    "https://evil.com",
    "http://evil.com/dashboard",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,evil",
    "/x%0d%0aSet-Cookie:%20evil=1",
    "/x\r\nSet-Cookie: evil=1",
    "/x\nLocation: //evil.com",
    "/%0a/evil.com",
    "evil.com",
    " /evil.com",
    "",
    // Dot segments a browser resolves into `//evil.com` (RFC 3986 §5.2.4).
    "/.//evil.com",
    "/./\\evil.com",
    "/a/..//evil.com",
    "/..//evil.com",
    "/%2e//evil.com",
    "/%2E%2E//evil.com",
    "/x/.%2e//evil.com",
    "/./%5cevil.com",
];

/// The same attacks as they appear literally in a URL (decoded once by the proxy).
const OFF_SITE_RAW: &[&str] = &[
    "//evil.com",
    "%2F%2Fevil.com",
    "/%5Cevil.com",
    "/%09/evil.com",
    "/%252f%252fevil.com/%0a",
    "/%2f%2fevil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/x%0D%0ASet-Cookie:evil=1",
    "%0d%0a/evil.com",
    "/.//evil.com",
    "/%2e//evil.com",
    "/%2e%2f%2fevil.com",
    "/%252e//evil.com",
    "/a/%2e%2e//evil.com",
];

#[tokio::test]
async fn every_off_site_return_path_falls_back_to_success_redirect() {
    let s = site(|b| b).await;
    let origin = s.origin();
    let mut cases: Vec<String> = OFF_SITE
        .iter()
        .map(|v| form_urlencoded::byte_serialize(v.as_bytes()).collect())
        .collect();
    cases.extend(OFF_SITE_RAW.iter().map(|v| (*v).to_owned()));
    for query_value in &cases {
        let resp = s
            .login_form(&format!("/login?next={query_value}"), PASSWORD)
            .send()
            .await;
        assert_eq!(resp.status, 303, "next={query_value}: {}", resp.text());
        assert_eq!(resp.location(), Some("/dashboard"), "next={query_value}");
        assert!(!resp.text().contains("evil"), "next={query_value} echoed");

        // The same value in the login page's URL, reaching the proxy as the Referer.
        let resp = s
            .login_form("/login", PASSWORD)
            .header("referer", &format!("{origin}/login?next={query_value}"))
            .send()
            .await;
        assert_eq!(resp.status, 303, "Referer next={query_value}");
        assert_eq!(
            resp.location(),
            Some("/dashboard"),
            "Referer next={query_value}"
        );
    }
    // The fallback applies to the URL's value even when the Referer holds a good one.
    let resp = s
        .login_form("/login?next=%2F%2Fevil.com", PASSWORD)
        .header("referer", &format!("{origin}/login?next=%2Fdashboard%2Fok"))
        .send()
        .await;
    assert_eq!(resp.location(), Some("/dashboard"));
}

#[tokio::test]
async fn same_site_return_paths_are_kept() {
    let s = site(|b| b).await;
    let good = [
        "/dashboard/reports",
        "/x?y=1",
        "/search?q=a%20b&page=2",
        "/a/b#section",
        "/search?u=http://example.com/",
    ];
    for path in good {
        let encoded: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
        let resp = s
            .login_form(&format!("/login?next={encoded}"), PASSWORD)
            .send()
            .await;
        assert_eq!(resp.location(), Some(path), "next={encoded}");
    }
    // Non-ASCII is sent percent-encoded, never as raw bytes in Location.
    let resp = s
        .login_form("/login?next=%2Fcaf%C3%A9", PASSWORD)
        .send()
        .await;
    assert_eq!(resp.location(), Some("/caf%C3%A9"));
}

#[tokio::test]
async fn the_return_path_comes_from_a_same_origin_referer() {
    let s = site(|b| b).await;
    let origin = s.origin();
    // The login form posts to /login although the page was /login?next=...
    let resp = s
        .login_form("/login", PASSWORD)
        .header(
            "referer",
            &format!("{origin}/login?next=%2Fdashboard%2Freports"),
        )
        .send()
        .await;
    assert_eq!(resp.location(), Some("/dashboard/reports"));
    // A cross-origin Referer is ignored.
    for referer in [
        "http://evil.example/login?next=%2Fdashboard%2Freports",
        "http://127.0.0.1/login?next=%2Fdashboard%2Freports",
    ] {
        let resp = s
            .login_form("/login", PASSWORD)
            .header("referer", referer)
            .send()
            .await;
        assert_eq!(resp.location(), Some("/dashboard"), "{referer}");
    }
    // The POST URL's own value wins over the Referer's.
    let resp = s
        .login_form("/login?next=%2Fa", PASSWORD)
        .header("referer", &format!("{origin}/login?next=%2Fb"))
        .send()
        .await;
    assert_eq!(resp.location(), Some("/a"));
}

#[tokio::test]
async fn a_login_replaces_the_cookies_the_browser_had() {
    for shape in [Shape::AccessRefresh, Shape::Token] {
        let s = site(|b| {
            b.shape(shape)
                .user(USER, PASSWORD)
                .user("mallory@example.com", "m")
        })
        .await;
        let planted = s.backend.mint_access("mallory@example.com", 600);
        let mut jar = CookieJar::new();
        jar.set("access_token", &planted);
        jar.set("refresh_token", "planted-refresh-token");
        jar.set("theme", "dark");
        let resp = s.login_form("/login", PASSWORD).jar(&jar).send().await;
        assert_eq!(resp.status, 303, "{shape:?}");
        jar.apply(&resp);
        assert_ne!(jar.get("access_token"), Some(planted.as_str()), "{shape:?}");
        assert_ne!(
            jar.get("refresh_token"),
            Some("planted-refresh-token"),
            "{shape:?}: the planted refresh cookie survived the login"
        );
        assert_eq!(jar.get("theme"), Some("dark"));
        let page = s.page().jar(&jar).send().await;
        assert_eq!(page.status, 200);
        let bearer = s.last_bearer().expect("bearer");
        let token = bearer.strip_prefix("Bearer ").expect("Bearer");
        assert_eq!(
            s.key.verify(token).expect("valid")["sub"],
            USER,
            "{shape:?}"
        );
        assert_eq!(
            s.up.last()
                .and_then(|r| r.header("cookie").map(str::to_owned)),
            Some("theme=dark".to_owned())
        );
    }
}

#[tokio::test]
async fn get_login_passes_through_to_the_site() {
    let s = site(|b| b).await;
    let resp = Req::get(&s.url("/login?next=%2Fdashboard"))
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        s.up.last().map(|r| (r.method.clone(), r.path_and_query())),
        Some(("GET".to_owned(), "/login?next=%2Fdashboard".to_owned()))
    );
    assert_eq!(s.backend.logins(), 0);
    // A signed-in user is sent on instead (login is a guest route).
    let (_, jar) = s.signed_in().await;
    let resp = Req::get(&s.url("/login")).jar(&jar).send().await;
    assert_eq!(resp.status, 302);
    assert_eq!(resp.location(), Some("/dashboard"));
    assert_eq!(s.up.requests(), 1);
}

/// A login refused as cross-site says in the log which origin came and which this site is:
/// `https://…` against `http://…` is an operator's missing `server.trusted_proxies` entry.
#[tokio::test]
async fn a_refused_login_logs_both_origins() {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let instance = crate::support::instance::Instance::start(&format!(
        "[upstreams]\napp = {up}\n\n{jwt}\n{backend}\n{ROUTES}",
        up = Value::from(up.url()),
        jwt = key.jwt_toml(),
        backend = backend.backend_toml(),
    ))
    .await;
    let site = instance.url("");
    let https = site.replacen("http://", "https://", 1);
    let resp = Req::post(&instance.url("/login"))
        .form(&[("email", USER), ("password", PASSWORD)])
        .header("origin", &https)
        .send()
        .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(backend.logins(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = instance.log();
        if let Some(line) = log.lines().find(|line| line.contains("login refused")) {
            assert!(line.contains(&https), "{line}");
            assert!(line.contains(&site), "{line}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
