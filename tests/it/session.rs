//! The credential exchange against the fake backend: login in every answer shape and body
//! format, its refusals and faults, cookie attributes, return paths, login CSRF and the
//! attempt limit, transparent refresh (single-flight included), and logout.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::support::backend::{DEFAULT_PASSWORD as PASSWORD, DEFAULT_USER as USER};
use crate::support::proxy::{proxy, Proxy};
use crate::support::{
    backend, upstream, Backend, BackendBuilder, CookieJar, Fault, Format, Req, Resp, SetCookie,
    Shape, TestKey, Upstream,
};

const ROUTES: &str = r#"
[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "app"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "app"

[[routes]]
path = "/login"
auth = "guest"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

const JWT: &str = "leeway = \"0s\"\n";
const BACKEND: &str = "timeout = \"2s\"\n";
const LOGIN: &str = "success_redirect = \"/dashboard\"\n\
                     failure_redirect = \"/login?error=wrong_credentials\"\n\
                     attempts_per_minute = 0\n";
const SESSION: &str = "refresh_ahead = \"0s\"\n";

/// Lines added to each section of the proxy's configuration.
#[derive(Clone)]
struct Sections {
    jwt: String,
    backend: String,
    login: String,
    session: String,
    /// Replaces the backend's logout endpoint.
    logout_url: Option<String>,
}

impl Default for Sections {
    fn default() -> Sections {
        Sections {
            jwt: JWT.to_owned(),
            backend: BACKEND.to_owned(),
            login: LOGIN.to_owned(),
            session: SESSION.to_owned(),
            logout_url: None,
        }
    }
}

/// A fake backend, a recording upstream and Portcullis in front of both.
struct Site {
    key: TestKey,
    backend: Backend,
    up: Upstream,
    proxy: Proxy,
}

async fn site(configure: impl FnOnce(BackendBuilder) -> BackendBuilder) -> Site {
    site_with(configure, Sections::default()).await
}

async fn site_with(
    configure: impl FnOnce(BackendBuilder) -> BackendBuilder,
    sections: Sections,
) -> Site {
    let key = TestKey::new("HS256");
    let backend = configure(backend(&key)).run().await;
    let up = upstream().run().await;
    let mut backend_toml = backend.backend_toml();
    if let Some(url) = &sections.logout_url {
        backend_toml = backend_toml.replace(
            &Value::from(backend.logout_url()).to_string(),
            &Value::from(url.as_str()).to_string(),
        );
    }
    let toml = format!(
        "[upstreams]\napp = {up}\n\n{jwt}{jwt_extra}\n{backend}{backend_extra}\n\
         [login]\n{login}\n[session]\n{session}\n{ROUTES}",
        up = Value::from(up.url()),
        jwt = key.jwt_toml(),
        jwt_extra = sections.jwt,
        backend = backend_toml,
        backend_extra = sections.backend,
        login = sections.login,
        session = sections.session,
    );
    let proxy = proxy(&toml).await;
    Site {
        key,
        backend,
        up,
        proxy,
    }
}

impl Site {
    fn url(&self, path: &str) -> String {
        self.proxy.url(path)
    }

    /// `http://127.0.0.1:PORT`, what a browser sends as `Origin` for this site.
    fn origin(&self) -> String {
        format!("http://{}", self.proxy.addr())
    }

    fn login_form(&self, path: &str, password: &str) -> Req {
        Req::post(&self.url(path)).form(&[("email", USER), ("password", password)])
    }

    fn login_json(&self, path: &str, password: &str) -> Req {
        Req::post(&self.url(path)).json(json!({ "email": USER, "password": password }))
    }

    /// Signs in with the right password and returns the browser's cookies afterwards.
    async fn signed_in(&self) -> (Resp, CookieJar) {
        let resp = self.login_form("/login", PASSWORD).send().await;
        assert_eq!(resp.status, 303, "login: {}", resp.text());
        let mut jar = CookieJar::new();
        jar.apply(&resp);
        assert!(jar.contains("access_token"), "no access cookie after login");
        (resp, jar)
    }

    /// An API call (`fetch` with `Accept: application/json`).
    fn api(&self) -> Req {
        Req::get(&self.url("/api/items")).header("accept", "application/json")
    }

    /// A top-level page navigation.
    fn page(&self) -> Req {
        Req::get(&self.url("/dashboard"))
            .header("accept", "text/html,application/xhtml+xml")
            .header("sec-fetch-mode", "navigate")
    }

    /// An expired access token and a refresh token the backend accepts.
    fn expired_session(&self) -> (String, String) {
        (
            self.backend.mint_access(USER, -30),
            self.backend.mint_refresh(USER),
        )
    }

    fn last_bearer(&self) -> Option<String> {
        self.up
            .last()
            .and_then(|r| r.header("authorization").map(str::to_owned))
    }
}

fn cookies(access: &str, refresh: &str) -> String {
    format!("access_token={access}; refresh_token={refresh}")
}

fn assert_no_cookies(resp: &Resp, what: &str) {
    assert!(
        resp.header_all("set-cookie").is_empty(),
        "{what}: cookies were set: {:?}",
        resp.header_all("set-cookie")
    );
}

fn assert_error(resp: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(resp.json()["error"], code, "{what}: {}", resp.text());
}

/// The attributes of a `Set-Cookie` other than `Max-Age`, in a comparable order.
fn attributes_but_max_age(cookie: &SetCookie) -> Vec<(String, Option<String>)> {
    let mut attributes: Vec<_> = cookie
        .attributes
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("max-age"))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    attributes.sort();
    attributes
}

fn assert_cleared(resp: &Resp, set_at_login: &Resp, what: &str) {
    for name in ["access_token", "refresh_token"] {
        let cleared = resp
            .set_cookie(name)
            .unwrap_or_else(|| panic!("{what}: {name} not cleared"));
        assert_eq!(cleared.max_age(), Some(0), "{what}: {name}");
        assert!(cleared.value.is_empty(), "{what}: {name} keeps a value");
        let set = set_at_login.set_cookie(name).expect("set at login");
        assert_eq!(
            attributes_but_max_age(&cleared),
            attributes_but_max_age(&set),
            "{what}: {name} is cleared with other attributes than it was set with"
        );
    }
}

// ---------------------------------------------------------------------------------- login

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
    let refused = [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("origin", "http://127.0.0.1"),
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

// -------------------------------------------------------------------------------- refresh

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_request_proceeds() {
    let s = site(|b| b.access_ttl(900)).await;
    for (what, request) in [("api", s.api()), ("page", s.page())] {
        let (expired, refresh) = s.expired_session();
        let before = s.backend.refreshes();
        let resp = request.cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        assert_eq!(s.backend.refreshes(), before + 1, "{what}");
        assert_eq!(
            s.backend
                .last_refresh_body()
                .map(|b| serde_json::from_str::<Value>(&b).ok()),
            Some(Some(json!({ "refresh_token": refresh }))),
            "{what}"
        );
        let access = resp.set_cookie("access_token").expect("new access cookie");
        assert_ne!(access.value, expired, "{what}");
        s.key.verify(&access.value).expect("a valid new token");
        assert_eq!(access.max_age(), Some(900), "{what}");
        assert!(access.has("HttpOnly") && access.has("Secure"), "{what}");
        let new_refresh = resp
            .set_cookie("refresh_token")
            .expect("rotated refresh cookie");
        assert_ne!(new_refresh.value, refresh, "{what}");
        assert!(!new_refresh.is_removal(), "{what}");
        // The request went upstream with the NEW token.
        assert_eq!(
            s.last_bearer(),
            Some(format!("Bearer {}", access.value)),
            "{what}"
        );

        // The new cookies make a working session without another refresh.
        let mut jar = CookieJar::new();
        jar.apply(&resp);
        let again = s.api().jar(&jar).send().await;
        assert_eq!(again.status, 200, "{what}");
        assert_no_cookies(&again, what);
        assert_eq!(s.backend.refreshes(), before + 1, "{what}");
    }
}

#[tokio::test]
async fn a_lapsed_access_cookie_is_renewed_from_the_refresh_cookie() {
    let s = site(|b| b).await;
    let (_, refresh) = s.expired_session();
    let resp = s
        .api()
        .cookie(&format!("refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.backend.refreshes(), 1);
    let access = resp.set_cookie("access_token").expect("access cookie");
    assert_eq!(s.last_bearer(), Some(format!("Bearer {}", access.value)));
}

#[tokio::test]
async fn a_token_within_refresh_ahead_is_renewed() {
    let s = site_with(
        |b| b,
        Sections {
            session: "refresh_ahead = \"60s\"\n".to_owned(),
            ..Sections::default()
        },
    )
    .await;
    let refresh = s.backend.mint_refresh(USER);
    let fresh = s.backend.mint_access(USER, 300);
    let resp = s.api().cookie(&cookies(&fresh, &refresh)).send().await;
    assert_eq!(resp.status, 200);
    assert_no_cookies(&resp, "a token far from expiry");
    assert_eq!(s.backend.refreshes(), 0);
    assert_eq!(s.last_bearer(), Some(format!("Bearer {fresh}")));

    let expiring = s.backend.mint_access(USER, 30);
    let resp = s.api().cookie(&cookies(&expiring, &refresh)).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(s.backend.refreshes(), 1);
    let access = resp.set_cookie("access_token").expect("renewed");
    assert_ne!(access.value, expiring);
    assert_eq!(s.last_bearer(), Some(format!("Bearer {}", access.value)));
}

#[tokio::test]
async fn renewal_ahead_of_expiry_is_best_effort() {
    // The backend is down, but the current token is still good: the request goes through.
    let s = site_with(
        |b| b.fault(Fault::Down),
        Sections {
            session: "refresh_ahead = \"60s\"\n".to_owned(),
            ..Sections::default()
        },
    )
    .await;
    let expiring = s.backend.mint_access(USER, 30);
    let resp = s
        .api()
        .cookie(&cookies(&expiring, "some-refresh-token"))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_no_cookies(&resp, "failed renewal ahead of expiry");
    assert_eq!(s.last_bearer(), Some(format!("Bearer {expiring}")));
}

#[tokio::test]
async fn concurrent_requests_of_one_session_share_one_refresh() {
    let s = site(|b| b.refresh_delay(Duration::from_millis(300))).await;
    let (expired, refresh) = s.expired_session();
    let cookie = cookies(&expired, &refresh);
    let mut set = JoinSet::new();
    for i in 0..20 {
        let request = if i % 2 == 0 { s.api() } else { s.page() };
        set.spawn(request.cookie(&cookie).send());
    }
    let mut tokens = Vec::new();
    while let Some(result) = set.join_next().await {
        let resp = result.expect("request task");
        assert_eq!(resp.status, 200, "{}", resp.text());
        tokens.push(
            resp.set_cookie("access_token")
                .expect("renewed cookie")
                .value,
        );
    }
    assert_eq!(
        s.backend.refreshes(),
        1,
        "one backend call for the whole burst"
    );
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every response carries the same new token");
    let bearers: Vec<_> =
        s.up.all()
            .iter()
            .map(|r| r.header("authorization").map(str::to_owned))
            .collect();
    assert_eq!(bearers.len(), 20);
    assert!(bearers
        .iter()
        .all(|b| b.as_deref() == Some(&*format!("Bearer {}", tokens[0]))));

    // A straggler with the old cookies (sent before the browser stored the new ones) reuses
    // the result: a rotating backend would take a second use as token theft.
    let resp = s.api().cookie(&cookie).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.backend.refreshes(), 1);
}

#[tokio::test]
async fn a_rejected_refresh_ends_the_session() {
    let s = site(|b| b).await;
    let expired = s.backend.mint_access(USER, -30);
    let cookie = cookies(&expired, "revoked-or-unknown");
    let (login, _) = s.signed_in().await;

    let resp = s.api().cookie(&cookie).send().await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    assert_cleared(&resp, &login, "api");

    let resp = s.page().cookie(&cookie).send().await;
    assert_eq!(resp.status, 302);
    assert_eq!(resp.location(), Some("/login?next=%2Fdashboard"));
    assert_cleared(&resp, &login, "page");

    // Only refresh cookie, rejected: the same.
    let resp = s
        .api()
        .cookie("refresh_token=revoked-or-unknown")
        .send()
        .await;
    assert_eq!(resp.status, 401);
    assert_cleared(&resp, &login, "lapsed access cookie");
    assert!(s.backend.refreshes() >= 1);
    assert_eq!(s.up.requests(), 0);
}

#[tokio::test]
async fn a_refresh_backend_that_is_down_keeps_the_cookies() {
    for (what, fault, api_status) in [
        ("down", Fault::Down, 502),
        ("slow", Fault::Slow(Duration::from_secs(10)), 504),
        ("500", Fault::Status(500), 502),
        ("html", Fault::Html, 502),
        ("unverifiable token", Fault::BadToken, 502),
        ("token with ; and space", Fault::WeirdToken, 502),
    ] {
        let s = site_with(
            |b| b.fault(fault),
            Sections {
                backend: "timeout = \"300ms\"\n".to_owned(),
                ..Sections::default()
            },
        )
        .await;
        let (expired, refresh) = s.expired_session();
        let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, api_status, "{what}: {}", resp.text());
        assert_no_cookies(&resp, what);

        let resp = s.page().cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, 302, "{what}");
        assert_eq!(resp.location(), Some("/login?next=%2Fdashboard"), "{what}");
        assert_no_cookies(&resp, what);
        assert_eq!(s.up.requests(), 0, "{what}");
    }
}

#[tokio::test]
async fn a_failed_refresh_is_not_reused() {
    // A backend error is transient: the next request asks again (a rejection is final).
    let s = site(|b| b.fault(Fault::Status(500))).await;
    let (expired, refresh) = s.expired_session();
    for n in 1..=2 {
        let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, 502);
        assert_eq!(s.backend.refreshes(), n);
    }
}

#[tokio::test]
async fn a_refresh_outlives_a_caller_that_went_away() {
    let s = site(|b| b.refresh_delay(Duration::from_millis(500))).await;
    let (expired, refresh) = s.expired_session();
    let cookie = cookies(&expired, &refresh);
    // The browser navigates away while the refresh is in the air.
    let gone = s
        .api()
        .cookie(&cookie)
        .timeout(Duration::from_millis(100))
        .try_send()
        .await;
    assert!(gone.is_err(), "the backend answered within 100 ms");
    s.backend.wait_for_refreshes(1).await;
    // The next request of the session gets the result of that call, not a second one that
    // a rotating backend would take for the reuse of a spent refresh token.
    let resp = s.api().cookie(&cookie).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.set_cookie("access_token").is_some());
    assert_eq!(s.backend.refreshes(), 1);
}

#[tokio::test]
async fn the_guest_login_page_does_not_spend_the_refresh_token() {
    let s = site(|b| b).await;
    let (expired, refresh) = s.expired_session();
    // A redirect away from the login page could not carry renewed cookies: show the page.
    let resp = Req::get(&s.url("/login"))
        .header("accept", "text/html")
        .cookie(&cookies(&expired, &refresh))
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(s.backend.refreshes(), 0);
    assert_no_cookies(&resp, "guest page");
    // The session is still good for the pages that need it.
    let resp = s.page().cookie(&cookies(&expired, &refresh)).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(s.backend.refreshes(), 1);
}

#[tokio::test]
async fn auth_me_renews_and_reports_a_backend_outage() {
    let s = site(|b| b).await;
    let (expired, refresh) = s.expired_session();
    let resp = Req::get(&s.url("/auth/me"))
        .cookie(&cookies(&expired, &refresh))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["email"], USER);
    assert!(resp.set_cookie("access_token").is_some());
    assert_eq!(s.backend.refreshes(), 1);

    let s = site(|b| b.fault(Fault::Down)).await;
    let (expired, refresh) = s.expired_session();
    let resp = Req::get(&s.url("/auth/me"))
        .cookie(&cookies(&expired, &refresh))
        .send()
        .await;
    assert_error(&resp, 502, "backend_unavailable", "/auth/me, backend down");
    assert_no_cookies(&resp, "/auth/me, backend down");
    let resp = Req::get(&s.url("/auth/me")).send().await;
    assert_eq!(resp.status, 401);
}

#[tokio::test]
async fn the_refresh_cookie_is_replaced_only_by_a_new_refresh_token() {
    let s = site(|b| b.rotate_refresh(false)).await;
    let (expired, refresh) = s.expired_session();
    let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.set_cookie("access_token").is_some());
    assert!(
        resp.set_cookie("refresh_token").is_none(),
        "{:?}",
        resp.header_all("set-cookie")
    );

    // SimpleJWT answers a refresh with a new access token only, too (rotation off).
    let s = site_with(
        |b| {
            b.shape(Shape::SimpleJwt)
                .refresh_field("refresh")
                .rotate_refresh(false)
        },
        Sections {
            jwt: format!("{JWT}claims = {{ token_type = \"access\" }}\n"),
            ..Sections::default()
        },
    )
    .await;
    let (expired, refresh) = s.expired_session();
    let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.backend
            .last_refresh_body()
            .map(|b| serde_json::from_str::<Value>(&b).ok()),
        Some(Some(json!({ "refresh": refresh })))
    );
    assert!(resp.set_cookie("access_token").is_some());
    assert!(resp.set_cookie("refresh_token").is_none());
}

// --------------------------------------------------------------------------------- logout

#[tokio::test]
async fn logout_clears_both_cookies_and_tells_the_backend() {
    let s = site(|b| b).await;
    let (login, jar) = s.signed_in().await;
    let access = jar.get("access_token").expect("access").to_owned();
    let refresh = jar.get("refresh_token").expect("refresh").to_owned();

    let resp = Req::post(&s.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.location(), Some("/login"));
    assert_cleared(&resp, &login, "POST /logout");
    s.backend.wait_for_logouts(1).await;
    assert_eq!(
        s.backend.last_logout_authorization(),
        Some(format!("Bearer {access}"))
    );
    let mut after = jar.clone();
    after.apply(&resp);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(s.api().jar(&after).send().await.status, 401);

    // The backend revoked the refresh token it was told of: it cannot revive the session.
    let resp = s
        .api()
        .cookie(&format!("refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
}

#[tokio::test]
async fn logout_by_get_and_by_json() {
    let s = site(|b| b).await;
    let (login, jar) = s.signed_in().await;
    let resp = Req::get(&s.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/login"));
    assert_cleared(&resp, &login, "GET /logout");
    s.backend.wait_for_logouts(1).await;

    let (login, jar) = s.signed_in().await;
    let resp = Req::post(&s.url("/logout"))
        .header("accept", "application/json")
        .header("origin", &s.origin())
        .jar(&jar)
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({ "ok": true }));
    assert_cleared(&resp, &login, "JSON logout");
    s.backend.wait_for_logouts(2).await;

    // Without a session there is nothing to tell the backend, but the cookies are cleared.
    let resp = Req::post(&s.url("/logout")).send().await;
    assert_eq!(resp.status, 303);
    assert_cleared(&resp, &login, "logout without cookies");
    assert_eq!(s.backend.logouts(), 2);
}

#[tokio::test]
async fn a_cross_site_logout_post_is_refused() {
    let s = site(|b| b).await;
    let (_, jar) = s.signed_in().await;
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let resp = Req::post(&s.url("/logout"))
            .header(name, value)
            .jar(&jar)
            .send()
            .await;
        assert_error(&resp, 403, "forbidden", &format!("{name}: {value}"));
        assert_no_cookies(&resp, "cross-site logout");
    }
    assert_eq!(s.backend.logouts(), 0);
    // The session is intact.
    assert_eq!(s.api().jar(&jar).send().await.status, 200);
}

#[tokio::test]
async fn a_failing_backend_logout_does_not_block_the_logout() {
    // A logout endpoint that accepts connections and never answers, and one that refuses them.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hanging_url = format!("http://{}/auth/logout", hanging.local_addr().expect("addr"));
    let refused = site(|b| b.fault(Fault::Down)).await;
    let hangs = site_with(
        |b| b,
        Sections {
            logout_url: Some(hanging_url),
            ..Sections::default()
        },
    )
    .await;
    for s in [refused, hangs] {
        let (access, refresh) = (
            s.backend.mint_access(USER, 600),
            s.backend.mint_refresh(USER),
        );
        let started = Instant::now();
        let resp = Req::post(&s.url("/logout"))
            .cookie(&cookies(&access, &refresh))
            .send()
            .await;
        assert_eq!(resp.status, 303);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the logout waited {:?} for the backend",
            started.elapsed()
        );
        for name in ["access_token", "refresh_token"] {
            assert!(
                resp.set_cookie(name).is_some_and(|c| c.is_removal()),
                "{name}"
            );
        }
    }
}
