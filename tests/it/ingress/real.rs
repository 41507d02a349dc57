//! A real nginx and a real Caddy, each started with the documented recipe
//! (`examples/ingress/`), in front of the test upstream, with Portcullis answering their
//! subrequests. The same walk through each: refusals without a session (the upstream never
//! reached), sign-in through the ingress, the bearer and identity headers the upstream gets
//! (and a client's forged ones it does not, whatever their name or spelling), claims, a
//! transparent refresh whose cookies reach the browser (and no token in a header page script
//! can read), cache headers, path tricks the ingress passes through as sent, near misses of
//! Portcullis's own endpoints, the CSRF guard, and sign-out. Then host rules through more than
//! one site, and login limits per client behind the ingress.
//!
//! The ingress forwards the client's raw request target, so every request the upstream
//! received is also read as upstreams read it ([`Recorded::path_readings`]): none of those
//! readings may be a protected path unless the request carries Portcullis's bearer.

use std::net::IpAddr;
use std::time::Duration;

use super::{stack, stack_with, Stack, ADMIN, USER};
use crate::support::backend::DEFAULT_PASSWORD as PASSWORD;
use crate::support::ingress::{Addresses, Ingress, SITE};
use crate::support::{raw, upstream, CookieJar, Recorded, Resp, SetCookie, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx() {
    let s = stack(|t| t).await;
    let nginx = Ingress::nginx(&addresses(&s)).await;
    walk(&s, &nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_caddy() {
    let s = stack(|t| t).await;
    let caddy = Ingress::caddy(&addresses(&s)).await;
    walk(&s, &caddy).await;
}

fn addresses(s: &Stack) -> Addresses {
    Addresses {
        main: s.proxy.addr(),
        forward_auth: s.doors.forward_auth,
        site: s.up.addr(),
    }
}

/// The protected prefixes of `examples/forward-auth.toml`.
const PROTECTED: [&str; 2] = ["/dashboard", "/api"];

/// Whether an upstream reading `path` (any case) serves a protected page.
fn is_protected(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    PROTECTED
        .iter()
        .any(|p| lower == *p || lower.starts_with(&format!("{p}/")))
}

/// Every request the upstream served whose path, read as any upstream might read it, is a
/// protected one carries Portcullis's bearer (a JWT, not whatever a client sent).
fn assert_protected_paths_carried_the_bearer(up: &Upstream, name: &str) {
    for seen in up.all() {
        let protected = seen.path_readings().into_iter().find(|p| is_protected(p));
        if let Some(path) = protected {
            let authorization = seen.header("authorization").unwrap_or_default();
            assert!(
                authorization.starts_with("Bearer eyJ"),
                "{name}: Portcullis let {} through, and the upstream served {path} with {authorization:?}",
                seen.path_and_query(),
            );
        }
    }
}

/// `target` sent byte for byte to the site through `front`, with `lines` as extra headers;
/// the status (0 when the ingress closed the connection without one).
async fn raw_get(front: &Ingress, target: &str, lines: &str) -> u16 {
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n{lines}Connection: close\r\n\r\n",
        front.host(SITE)
    );
    let answer = raw::send(front.addr(), request.as_bytes(), Duration::from_secs(5)).await;
    raw::status_codes(&answer).first().copied().unwrap_or(0)
}

/// No refusal a page's script can read carries a token: the renewed cookies come as
/// `Set-Cookie` only, which script cannot read.
fn assert_no_token_in_readable_headers(resp: &Resp, name: &str) {
    for header in [
        "authorization",
        "x-auth-set-cookie-access",
        "x-auth-set-cookie-refresh",
        "x-auth-request-user",
        "x-auth-request-email",
    ] {
        assert_eq!(
            resp.header(header),
            None,
            "{name}: {header} reached the browser"
        );
    }
    for (header, value) in &resp.headers {
        if header != "set-cookie" {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains("eyJ"),
                "{name}: a token in {header}: {value}"
            );
        }
    }
}

async fn walk(s: &Stack, front: &Ingress) {
    let name = front.name();
    let page = |path: &str| {
        front
            .get(path)
            .header("accept", "text/html,application/xhtml+xml")
            .header("sec-fetch-mode", "navigate")
    };
    let api = |path: &str| front.get(path).header("accept", "application/json");

    // No session: the login page for a page, 401 for an API call, nothing upstream.
    let resp = page("/dashboard?tab=2").send().await;
    assert_eq!(
        resp.status,
        302,
        "{name}: {}\n{}",
        resp.text(),
        front.logs()
    );
    assert_eq!(
        resp.location(),
        Some("/login?next=%2Fdashboard%3Ftab%3D2"),
        "{name}"
    );
    let resp = api("/api/items").send().await;
    assert_eq!(resp.status, 401, "{name}");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{name}");
    assert_eq!(resp.json()["error"], "unauthenticated", "{name}");

    // Path tricks the ingress passes through as sent never reach the upstream
    // unauthenticated: neither those Portcullis would resolve into a protected path, nor
    // those it would resolve out of one while the upstream reads them into it (`//..` as
    // RFC 3986 and WHATWG resolve it, a raw `#`, a raw `..` under a router matching the raw
    // path).
    let mut let_through = Vec::new();
    for trick in [
        "/public/%2e%2e/dashboard",
        "/public/%2E%2E/api/admin/users",
        "//dashboard",
        "/dashboard%2fx",
        "/public/..%2fdashboard",
        "/public/..%5cdashboard",
        "/Dashboard",
        "/dashboard;x=1",
        "/dashboard//../public",
        "/dashboard/x#/../../public",
        "/dashboard/../public",
        "/dashboard/%2e%2e/public",
        "/dashboard/.%2E/public",
        "/dashboard/./../public",
        "/api//../about",
        "/api/items/..",
        "/dashboard/x/%2e%2e/%2e%2e/about?y=1",
    ] {
        let status = raw_get(front, trick, "").await;
        if (200..300).contains(&status) {
            let_through.push(format!("{trick} ({status})"));
        }
    }
    assert_protected_paths_carried_the_bearer(&s.up, name);
    assert!(
        let_through.is_empty(),
        "{name}: let through {let_through:?}"
    );
    assert_eq!(s.up.requests(), 0, "{name}: the upstream was reached");

    // Sign in through the ingress.
    let login = front
        .post("/login?next=%2Fdashboard%2Fx")
        .form(&[("email", USER), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(login.status, 303, "{name}: {}", login.text());
    assert_eq!(login.location(), Some("/dashboard/x"), "{name}");
    let mut jar = CookieJar::new();
    jar.apply(&login);
    let token = jar.get("access_token").expect("access cookie").to_owned();

    // The upstream gets the cookie's token as a bearer, the identity headers, and none of
    // what the client forged.
    let resp = page("/dashboard")
        .jar(&jar)
        .cookie("theme=dark")
        .header("authorization", "Bearer forged")
        .send()
        .await;
    assert_eq!(
        resp.status,
        200,
        "{name}: {}\n{}",
        resp.text(),
        front.logs()
    );
    let seen = s.up.last().expect("forwarded");
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {token}")],
        "{name}"
    );
    assert_eq!(seen.header_all("x-user-email"), [USER], "{name}");
    assert_eq!(seen.header_all("x-auth-request-user"), [USER], "{name}");
    assert_eq!(seen.header_all("x-auth-request-email"), [USER], "{name}");
    assert_eq!(seen.header_all("host"), [front.host(SITE)], "{name}");
    let cookie = seen.header_all("cookie").join("; ");
    assert!(cookie.contains("theme=dark"), "{name}: {cookie}");
    assert!(!cookie.contains("access_token"), "{name}: {cookie}");
    assert!(!cookie.contains("refresh_token"), "{name}: {cookie}");
    assert!(resp.header_all("set-cookie").is_empty(), "{name}");
    // An authenticated answer is private unless the site decided.
    assert_eq!(resp.header("cache-control"), Some("private"), "{name}");

    // Identity headers a client forged, listed in the recipe or not, in either spelling:
    // never at the upstream (Portcullis refuses the request; nginx drops `_` names itself).
    let mut leaked = Vec::new();
    for forged in [
        "x-user-email",
        "x-auth-request-user",
        "x-user-id",
        "x-forwarded-user",
        "remote-user",
        "x-remote-user",
        "x-auth-request-groups",
        "x-auth-token",
        "x_user_email",
        "x_auth_request_email",
        "x_user_id",
        "X-User",
    ] {
        for (path, signed_in) in [("/api/items", true), ("/about", false)] {
            let mut req = api(path).header(forged, "forged-identity");
            if signed_in {
                req = req.jar(&jar);
            }
            let before = s.up.requests();
            let resp = req.send().await;
            if s.up.requests() > before {
                let seen = s.up.last().expect("forwarded");
                for (header, value) in &seen.headers {
                    if value.contains("forged-identity") {
                        leaked.push(format!("{forged} on {path} as {header}"));
                    }
                }
            } else {
                assert!(
                    matches!(resp.status, 400 | 403),
                    "{name}: {forged} on {path}: {}",
                    resp.status
                );
            }
        }
    }

    assert!(
        leaked.is_empty(),
        "{name}: reached the upstream: {leaked:?}"
    );

    // A client with many headers (beyond hyper's default of 100, nginx has no limit of its
    // own): the subrequest carries them all, and is answered, not refused with a 431 that
    // nginx would turn into a 500.
    let mut crowded = front.get("/about");
    for i in 0..300 {
        crowded = crowded.header(&format!("x-pad-{i}"), "1");
    }
    let resp = crowded.send().await;
    assert_eq!(resp.status, 200, "{name}: {}", front.logs());

    // A public page carries nothing the proxy would add, and no placeholder text.
    let resp = front.get("/about").send().await;
    assert_eq!(resp.status, 200, "{name}");
    assert_eq!(resp.header("cache-control"), None, "{name}");
    let seen = s.up.last().expect("forwarded");
    for header in [
        "authorization",
        "x-auth-request-user",
        "x-user-email",
        "cookie",
    ] {
        assert_eq!(
            seen.header(header),
            None,
            "{name}: {header} on a public page"
        );
    }
    for (header, value) in &seen.headers {
        assert!(
            !value.contains('{') && !value.contains("<nil>"),
            "{name}: placeholder in {header}: {value}"
        );
    }

    // Claims: a signed-in user without the role is refused, and the upstream not reached.
    let before = s.up.requests();
    let resp = api("/api/admin/users").jar(&jar).send().await;
    assert_eq!(resp.status, 403, "{name}");
    assert_eq!(s.up.requests(), before, "{name}");
    let admin = format!("access_token={}", s.token(ADMIN));
    let resp = api("/api/admin/users").cookie(&admin).send().await;
    assert_eq!(resp.status, 200, "{name}");

    // An expired access token and a refresh cookie: the upstream gets the new token and
    // the browser the renewed cookies, both of them, on a response no cache keeps.
    let expired = s.backend.mint_access(USER, -600);
    let refresh = s.backend.mint_refresh(USER);
    let refreshes = s.backend.refreshes();
    let resp = api("/api/items")
        .cookie(&format!("access_token={expired}; refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    assert_eq!(s.backend.refreshes(), refreshes + 1, "{name}");
    let renewed = resp.set_cookies();
    let names: Vec<&str> = renewed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["access_token", "refresh_token"], "{name}");
    let new_access = &renewed[0].value;
    assert_ne!(new_access, &expired, "{name}");
    assert_ne!(
        renewed[1].value, refresh,
        "{name}: the refresh token rotates"
    );
    assert!(
        renewed.iter().all(|c: &SetCookie| c.has("HttpOnly")),
        "{name}"
    );
    assert_eq!(
        resp.header_all("cache-control"),
        ["private, no-store"],
        "{name}"
    );
    assert_no_token_in_readable_headers(&resp, name);
    let seen = s.up.last().expect("forwarded");
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {new_access}")],
        "{name}"
    );
    for header in ["x-auth-set-cookie-access", "x-auth-set-cookie-refresh"] {
        assert_eq!(seen.header(header), None, "{name}: {header} upstream");
    }

    // A renewal on a request that is then refused (no role): the browser keeps the renewed
    // cookies, and no header its script can read carries them.
    let before = s.up.requests();
    let resp = api("/api/admin/users")
        .cookie(&s.expired_session())
        .send()
        .await;
    assert_eq!(resp.status, 403, "{name}");
    assert_eq!(s.up.requests(), before, "{name}");
    let names: Vec<String> = resp.set_cookies().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["access_token", "refresh_token"], "{name}");
    assert_eq!(
        resp.header_all("cache-control"),
        ["private, no-store"],
        "{name}"
    );
    assert_no_token_in_readable_headers(&resp, name);

    // Near misses of Portcullis's own endpoints are not routed to it by the ingress: they are
    // refused, never let through to the site with the client's Authorization.
    for (method, path) in [
        ("GET", "/auth/me/"),
        ("GET", "/logout/"),
        ("POST", "/logout/"),
        ("POST", "/login/"),
    ] {
        let before = s.up.requests();
        let resp = front
            .req(method, path)
            .header("authorization", "Bearer forged")
            .header("accept", "application/json")
            .send()
            .await;
        assert_eq!(resp.status, 403, "{name}: {method} {path}");
        assert_eq!(
            s.up.requests(),
            before,
            "{name}: {method} {path} reached the site"
        );
    }

    // The CSRF guard compares with the origin the browser used, as the ingress reports it.
    let post = |origin: &str| {
        front
            .post("/api/items")
            .jar(&jar)
            .header("accept", "application/json")
            .header("origin", origin)
            .json(serde_json::json!({ "name": "x" }))
    };
    let resp = post(&front.origin()).send().await;
    assert_eq!(resp.status, 200, "{name}: {}", resp.text());
    let before = s.up.requests();
    let resp = post("https://evil.example").send().await;
    assert_eq!(resp.status, 403, "{name}: {}", resp.text());
    assert_eq!(
        s.up.requests(),
        before,
        "{name}: a forged POST reached the upstream"
    );

    // Sign out through the ingress.
    let resp = front.post("/logout").jar(&jar).send().await;
    assert_eq!(resp.status, 303, "{name}");
    jar.apply(&resp);
    assert!(!jar.contains("access_token"), "{name}: still signed in");
    assert_eq!(
        api("/api/items").jar(&jar).send().await.status,
        401,
        "{name}"
    );
    assert_protected_paths_carried_the_bearer(&s.up, name);
}

/// A site that marks its answers cacheable by anyone: a response that renews the session's
/// cookies goes out `private, no-store` all the same, through each recipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_cookies_are_never_cached_whatever_the_site_says() {
    let site = upstream().response_header("cache-control", "public, max-age=600");
    let s = stack_with(site, |t| t).await;
    for front in [
        Ingress::nginx(&addresses(&s)).await,
        Ingress::caddy(&addresses(&s)).await,
    ] {
        let name = front.name();
        let resp = front
            .get("/api/items")
            .cookie(&s.expired_session())
            .send()
            .await;
        assert_eq!(
            resp.status,
            200,
            "{name}: {}\n{}",
            resp.text(),
            front.logs()
        );
        assert_eq!(resp.set_cookies().len(), 2, "{name}");
        assert_eq!(
            resp.header_all("cache-control"),
            ["private, no-store"],
            "{name}"
        );
        // Without a renewal the site's word stands.
        let resp = front.get("/about").send().await;
        assert_eq!(
            resp.header_all("cache-control"),
            ["public, max-age=600"],
            "{name}"
        );
    }
}

/// Host rules through each recipe serving two sites: a rule for `admin.example.com` is decided
/// for the site the ingress chose, whatever the `Host` header says beside an absolute-form
/// target, and a request for no site or another one never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_hold_through_each_recipe() {
    const ADMIN_SITE: &str = "admin.example.com";
    let s = stack(|t| {
        t.replacen(
            "[[routes]]",
            &format!("[[routes]]\nhost = \"{ADMIN_SITE}\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"site\"\n\n[[routes]]"),
            1,
        )
    })
    .await;
    for front in [
        Ingress::nginx_sites(&addresses(&s), &[ADMIN_SITE]).await,
        Ingress::caddy_sites(&addresses(&s), &[ADMIN_SITE]).await,
    ] {
        let name = front.name();
        let admin = front.host(ADMIN_SITE);
        let app = front.host(SITE);
        let addr = front.addr();
        let send = move |request: String| async move {
            let answer = raw::send(addr, request.as_bytes(), Duration::from_secs(5)).await;
            raw::status_codes(&answer).first().copied().unwrap_or(0)
        };
        let before = s.up.requests();
        // (request, the status: the admin site's 401, or none at all when no site serves the
        // host: nginx closes the connection, Caddy answers an empty 200 of its own)
        for (request, want) in [
            (format!("GET /secret HTTP/1.1\r\nHost: {admin}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"), Some(401)),
            // RFC 9112 §3.2.2: the target's authority is the host, whatever Host says.
            (format!("GET http://{admin}/secret HTTP/1.1\r\nHost: {app}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"), Some(401)),
            // No host, or one no site serves.
            ("GET /secret HTTP/1.0\r\nAccept: application/json\r\n\r\n".to_owned(), None),
            ("GET /secret HTTP/1.1\r\nHost: foreign.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n".to_owned(), None),
        ] {
            let status = send(request.clone()).await;
            if let Some(want) = want {
                assert_eq!(status, want, "{name}: {request:?}\n{}", front.logs());
            }
            assert_eq!(s.up.requests(), before, "{name}: {request:?} was served");
        }
        assert_eq!(s.up.requests(), before, "{name}: a refused host was served");

        // The public site, and the admin site with a session, are served as the host they
        // were decided for.
        let resp = front.get("/secret").send().await;
        assert_eq!(resp.status, 200, "{name}: {}", front.logs());
        assert_eq!(
            s.up.last().expect("served").header_all("host"),
            [app.as_str()],
            "{name}"
        );
        let resp = front
            .req_for(ADMIN_SITE, "GET", "/secret")
            .cookie(&format!("access_token={}", s.token(USER)))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{name}");
        let seen: Recorded = s.up.last().expect("served");
        assert_eq!(seen.header_all("host"), [admin.as_str()], "{name}");
        assert!(
            seen.header("authorization")
                .is_some_and(|a| a.starts_with("Bearer eyJ")),
            "{name}"
        );
    }
}

/// Behind the ingress, the login limit counts each client, not the ingress: ten failed
/// attempts from one address leave another one's first attempt alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_counted_per_client_behind_nginx() {
    let s = stack(|t| t).await;
    let nginx = Ingress::nginx(&addresses(&s)).await;
    let attempt = |from: [u8; 4]| {
        let body = format!("email={USER}&password=wrong");
        let request = format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            nginx.host(SITE),
            body.len()
        );
        let addr = nginx.addr();
        async move {
            let answer = raw::send_from(
                IpAddr::from(from),
                addr,
                request.as_bytes(),
                Duration::from_secs(5),
            )
            .await;
            raw::status_codes(&answer).first().copied().unwrap_or(0)
        }
    };
    for _ in 0..10 {
        assert_eq!(attempt([127, 0, 0, 2]).await, 303, "{}", nginx.logs());
    }
    assert_eq!(
        attempt([127, 0, 0, 2]).await,
        429,
        "the limit holds for that client"
    );
    assert_eq!(
        attempt([127, 0, 0, 3]).await,
        303,
        "another client is not limited"
    );
}
