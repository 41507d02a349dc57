//! A real nginx and a real Caddy, each started with the documented recipe
//! (`examples/ingress/`), in front of the test upstream, with Portcullis answering their
//! subrequests. The same walk through each: refusals without a session (the upstream never
//! reached), sign-in through the ingress, the bearer and identity headers the upstream gets
//! (and a client's forged ones it does not), claims, a transparent refresh whose cookies reach
//! the browser, path tricks the ingress passes through, the CSRF guard, and sign-out.

use super::{stack, Stack, ADMIN, USER};
use crate::support::backend::DEFAULT_PASSWORD as PASSWORD;
use crate::support::ingress::{Addresses, Ingress};
use crate::support::{CookieJar, Req, SetCookie};

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

async fn walk(s: &Stack, front: &Ingress) {
    let name = front.name();
    let page = |path: &str| {
        Req::get(&front.url(path))
            .header("accept", "text/html,application/xhtml+xml")
            .header("sec-fetch-mode", "navigate")
    };
    let api = |path: &str| Req::get(&front.url(path)).header("accept", "application/json");

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

    // Path tricks the ingress passes through never reach the upstream unauthenticated.
    for trick in [
        "/public/%2e%2e/dashboard",
        "/public/%2E%2E/api/admin/users",
        "//dashboard",
        "/dashboard%2fx",
        "/public/..%2fdashboard",
        "/public/..%5cdashboard",
        "/Dashboard",
        "/dashboard;x=1",
    ] {
        let resp = api(trick).send().await;
        let refused = matches!(resp.status, 302 | 400 | 401 | 403 | 404);
        assert!(refused, "{name}: {trick} got {}", resp.status);
    }
    assert_eq!(s.up.requests(), 0, "{name}: the upstream was reached");

    // Sign in through the ingress.
    let login = Req::post(&front.url("/login?next=%2Fdashboard%2Fx"))
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
        .header("x-user-email", "evil@example.com")
        .header("x-auth-request-user", "root")
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
    let cookie = seen.header_all("cookie").join("; ");
    assert!(cookie.contains("theme=dark"), "{name}: {cookie}");
    assert!(!cookie.contains("access_token"), "{name}: {cookie}");
    assert!(!cookie.contains("refresh_token"), "{name}: {cookie}");
    assert!(resp.header_all("set-cookie").is_empty(), "{name}");

    // A public page carries nothing the proxy would add, and no placeholder text.
    let resp = Req::get(&front.url("/about")).send().await;
    assert_eq!(resp.status, 200, "{name}");
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
    // the browser the renewed cookies, both of them.
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
    let seen = s.up.last().expect("forwarded");
    assert_eq!(
        seen.header_all("authorization"),
        [format!("Bearer {new_access}")],
        "{name}"
    );

    // The CSRF guard compares with the origin the browser used, as the ingress reports it.
    let origin = front.url("");
    let post = |origin: &str| {
        Req::post(&front.url("/api/items"))
            .jar(&jar)
            .header("accept", "application/json")
            .header("origin", origin)
            .json(serde_json::json!({ "name": "x" }))
    };
    let resp = post(&origin).send().await;
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
    let resp = Req::post(&front.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303, "{name}");
    jar.apply(&resp);
    assert!(!jar.contains("access_token"), "{name}: still signed in");
    assert_eq!(
        api("/api/items").jar(&jar).send().await.status,
        401,
        "{name}"
    );
}
