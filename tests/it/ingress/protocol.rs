//! The forward-auth answers, asked the way each ingress asks: Traefik and Caddy
//! (`X-Forwarded-Method/-Proto/-Host/-Uri`), nginx (`X-Original-URI`/`-Method`, or
//! ingress-nginx's `X-Original-URL`) and Envoy `ext_authz` (the request itself, below
//! `forward_auth.path_prefix`).

use std::time::{Duration, Instant};

use super::{stack, Stack, ADMIN, USER};
use crate::support::instance::Instance;
use crate::support::redis::free_port;
use crate::support::{Req, Resp, SetCookie};

/// Traefik's and Caddy's description of a request for `uri`.
fn forwarded(s: &Stack, method: &str, uri: &str) -> Req {
    s.ask("/")
        .header("x-forwarded-method", method)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-uri", uri)
}

/// nginx's description of a request for `uri` (its subrequests are GETs).
fn original(s: &Stack, method: &str, uri: &str) -> Req {
    s.ask("/_portcullis")
        .header("x-original-method", method)
        .header("x-original-uri", uri)
        .header("x-forwarded-host", "app.example.com")
}

/// ingress-nginx's description of a request for `url`.
fn original_url(s: &Stack, method: &str, url: &str) -> Req {
    s.ask("/")
        .header("x-original-method", method)
        .header("x-original-url", url)
}

fn page(req: Req) -> Req {
    req.header("accept", "text/html,application/xhtml+xml")
        .header("sec-fetch-mode", "navigate")
}

fn api(req: Req) -> Req {
    req.header("accept", "application/json")
}

/// A refusal that Traefik, Caddy or Envoy passes to the browser: no header page script can
/// read carries a token.
fn assert_no_token(resp: &Resp, what: &str) {
    for name in [
        "authorization",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-user-email",
        "x-auth-set-cookie-access",
        "x-auth-set-cookie-refresh",
    ] {
        assert_eq!(resp.header(name), None, "{what}: {name} in a refusal");
    }
}

#[tokio::test]
async fn traefik_and_caddy_get_redirects_bearers_and_refusals() {
    let s = stack(|t| t).await;
    let token = s.token(USER);

    let login = page(forwarded(&s, "GET", "/dashboard?tab=2")).send().await;
    assert_eq!(login.status, 302);
    assert_eq!(login.location(), Some("/login?next=%2Fdashboard%3Ftab%3D2"));
    assert_no_token(&login, "redirect");
    let denied = api(forwarded(&s, "GET", "/api/items")).send().await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Bearer"));
    assert_eq!(denied.json()["error"], "unauthenticated");

    let allowed = page(forwarded(&s, "GET", "/dashboard"))
        .cookie(&format!("theme=dark; access_token={token}"))
        .header("authorization", "Bearer forged")
        .send()
        .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(
        allowed.header_all("authorization"),
        [format!("Bearer {token}")]
    );
    assert_eq!(allowed.header_all("x-user-email"), [USER]);
    assert_eq!(allowed.header("x-auth-request-user"), Some(USER));
    assert_eq!(allowed.header("x-auth-request-email"), Some(USER));
    assert_eq!(allowed.header_all("cookie"), ["theme=dark"]);
    assert_eq!(allowed.header("cache-control"), Some("no-store"));
    assert!(allowed.header_all("set-cookie").is_empty());

    // Claims, and a path no rule takes.
    let forbidden = api(forwarded(&s, "GET", "/api/admin/users"))
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(forbidden.status, 403);
    assert_no_token(&forbidden, "403");
    let admin = api(forwarded(&s, "GET", "/api/admin/users"))
        .cookie(&format!("access_token={}", s.token(ADMIN)))
        .send()
        .await;
    assert_eq!(admin.status, 200);

    // A public page: the client's own Authorization stays its own, nothing is added.
    let public = forwarded(&s, "GET", "/about")
        .header("authorization", "Basic YTpi")
        .send()
        .await;
    assert_eq!(public.status, 200);
    assert_eq!(public.header_all("authorization"), ["Basic YTpi"]);
    assert_eq!(public.header("x-auth-request-user"), None);

    // The ingress forwards the path as sent: one that is not already normal is refused, as
    // are ambiguous encodings. A spelling of a normal path is decided as that path.
    for refused in [
        "/public/%2e%2e/dashboard",
        "//dashboard",
        "/public/../api/items",
        "/dashboard%2fx",
        "/public/..%2fdashboard",
        "/dashboard;x=1",
    ] {
        let resp = api(forwarded(&s, "GET", refused)).send().await;
        assert_eq!(resp.status, 400, "{refused}");
        assert_no_token(&resp, refused);
    }
    let spelled = api(forwarded(&s, "GET", "/%64ashboard")).send().await;
    assert_eq!(spelled.status, 401);
    // The proxy's own endpoints are not asked about: the ingress sends them to server.listen
    // by their exact path, so what is asked is a near miss it would send to the site.
    for (method, path) in [
        ("POST", "/logout"),
        ("GET", "/auth/me/"),
        ("POST", "/login/"),
    ] {
        let own = forwarded(&s, method, path)
            .header("authorization", "Bearer forged")
            .send()
            .await;
        assert_eq!(own.status, 403, "{method} {path}");
        assert_no_token(&own, path);
    }
    assert_eq!(s.up.requests(), 0, "forward auth never forwards anything");
}

/// Asks about `req` for a session whose access token expired and whose refresh token the
/// backend rotates; checks that the renewal happened, that each renewed cookie is in the
/// answer as `Set-Cookie`, and in its own `X-Auth-Set-Cookie-*` exactly when `mirrored`.
/// Returns the answer, the expired access token and the spent refresh token.
async fn renewed(s: &Stack, req: Req, mirrored: bool) -> (Resp, String, String) {
    let expired = s.backend.mint_access(USER, -600);
    let refresh = s.backend.mint_refresh(USER);
    let refreshes = s.backend.refreshes();
    let resp = req
        .cookie(&format!("access_token={expired}; refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(s.backend.refreshes(), refreshes + 1);
    let set = resp.header_all("set-cookie");
    assert_eq!(set.len(), 2, "{set:?}");
    let copies = (
        resp.header("x-auth-set-cookie-access"),
        resp.header("x-auth-set-cookie-refresh"),
    );
    if mirrored {
        assert_eq!(copies, (Some(set[0]), Some(set[1])));
    } else {
        assert_eq!(copies, (None, None));
    }
    (resp, expired, refresh)
}

#[tokio::test]
async fn a_renewal_reaches_the_ingress_as_whole_cookies_one_per_header() {
    let s = stack(|t| t).await;
    let (resp, expired, refresh) = renewed(&s, api(forwarded(&s, "GET", "/api/items")), true).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let access = SetCookie::parse(resp.header("x-auth-set-cookie-access").expect("mirrored"));
    let refreshed = SetCookie::parse(resp.header("x-auth-set-cookie-refresh").expect("mirrored"));
    assert_eq!(access.name, "access_token");
    assert_eq!(refreshed.name, "refresh_token");
    assert_ne!(access.value, expired);
    assert_ne!(
        refreshed.value, refresh,
        "the backend rotates refresh tokens"
    );
    assert_eq!(
        resp.header("authorization"),
        Some(format!("Bearer {}", access.value).as_str())
    );
    assert!(access.has("HttpOnly"));
    assert_eq!(resp.header_all("cookie"), Vec::<&str>::new());
}

#[tokio::test]
async fn nginx_only_ever_gets_200_401_or_403() {
    let s = stack(|t| t).await;
    let token = s.token(USER);
    // A page navigation is a 401 with where to send the browser.
    let login = page(original(&s, "GET", "/dashboard?tab=2")).send().await;
    assert_eq!(login.status, 401);
    assert_eq!(
        login.header("x-auth-redirect"),
        Some("/login?next=%2Fdashboard%3Ftab%3D2")
    );
    assert_eq!(login.location(), None);
    let denied = api(original(&s, "GET", "/api/items")).send().await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("x-auth-redirect"), None);
    // Ambiguous paths, paths that are not normal ($request_uri is raw, and the site is sent
    // it as it is) and bad methods are 403s, not 400/405 (nginx would answer 500).
    for (method, uri) in [
        ("GET", "/dashboard%2fx"),
        ("GET", "/public/..%5cdashboard"),
        ("GET", "/public/%2E%2E/api/items"),
        ("GET", "/dashboard//../public"),
        ("GET", "/dashboard/x#/../../public"),
        ("GET", "*"),
        ("CONNECT", "/dashboard"),
        ("PUT", "/logout"),
        ("GET", "/logout"),
    ] {
        let resp = api(original(&s, method, uri)).send().await;
        assert_eq!(resp.status, 403, "{method} {uri}");
    }
    let allowed = original(&s, "GET", "/dashboard")
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    // A signed-in user on a guest page: let through, since nginx cannot redirect.
    let guest = page(original(&s, "GET", "/login"))
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(guest.status, 200);
    // ingress-nginx sends the whole URL instead.
    let url = page(original_url(&s, "GET", "https://app.example.com/dashboard"))
        .send()
        .await;
    assert_eq!(url.status, 401);
    assert_eq!(
        url.header("x-auth-redirect"),
        Some("/login?next=%2Fdashboard")
    );
}

#[tokio::test]
async fn two_conventions_at_once_are_refused() {
    let s = stack(|t| t).await;
    // An ingress sets its own header and passes a client's other ones on: whichever the
    // proxy believed, one of them would be the client's word.
    let resp = page(s.ask("/"))
        .header("x-forwarded-uri", "/about")
        .header("x-original-uri", "/dashboard")
        .send()
        .await;
    assert_eq!(resp.status, 403);
    assert_no_token(&resp, "ambiguous");
}

#[tokio::test]
async fn envoy_is_read_from_the_request_below_the_prefix() {
    let s = stack(|t| {
        t.replace(
            "[forward_auth]\n",
            "[forward_auth]\npath_prefix = \"/authz\"\n",
        )
    })
    .await;
    let token = s.token(USER);
    let login = page(s.ask("/authz/dashboard")).send().await;
    assert_eq!(login.status, 401, "no redirect without X-Forwarded-Uri");
    let allowed = s
        .ask("/authz/dashboard/x?y=1")
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    for outside in ["/dashboard", "/authzdashboard", "/other/authz/dashboard"] {
        let resp = s.ask(outside).send().await;
        assert_eq!(resp.status, 403, "{outside}");
    }
    // Envoy only overwrites what the answer sets, and sends only the headers its recipe
    // allows: every header Portcullis may set but did not is named for removal, whatever the
    // check request carried (and a Cookie of only Portcullis's cookies).
    let public = s
        .ask("/authz/about")
        .cookie(&format!("access_token={token}"))
        .send()
        .await;
    assert_eq!(public.status, 200);
    let removed: Vec<&str> = public
        .header("x-envoy-auth-headers-to-remove")
        .expect("removals named")
        .split(", ")
        .collect();
    for name in [
        "x-user-email",
        "x-auth-request-user",
        "x-auth-request-email",
        "cookie",
    ] {
        assert!(removed.contains(&name), "{name} not removed: {removed:?}");
    }
    // A signed-in request: what the answer sets is not removed, the rest is.
    let signed_in = s
        .ask("/authz/api/items")
        .cookie(&format!("theme=dark; access_token={token}"))
        .send()
        .await;
    assert_eq!(signed_in.status, 200);
    let removed = signed_in
        .header("x-envoy-auth-headers-to-remove")
        .unwrap_or_default();
    assert_eq!(removed, "x-user-email", "{signed_in:?}");
    // Identity headers Envoy lets through to the check (the recipe allows them) are refused,
    // and the path is decided as sent (the recipe has Envoy normalize it first).
    for (header, path) in [
        ("x-auth-request-user", "/authz/about"),
        ("x-user-id", "/authz/about"),
        ("accept", "/authz/dashboard//../about"),
        ("accept", "/authz/dashboard/%2e%2e/about"),
    ] {
        let resp = s.ask(path).header(header, "root").send().await;
        assert_eq!(resp.status, 400, "{header} {path}");
        assert_no_token(&resp, path);
    }
    // The check request's own Host is the original one: an X-Forwarded-Host is the client's.
    let s = stack(|t| {
        t.replace(
            "[forward_auth]\n",
            "[forward_auth]\npath_prefix = \"/authz\"\n",
        )
        .replacen(
            "[[routes]]",
            "[[routes]]\nhost = \"admin.example.com\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"site\"\n\n[[routes]]",
            1,
        )
    })
    .await;
    let spoofed = s
        .ask("/authz/about")
        .header("host", "admin.example.com")
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await;
    assert_eq!(spoofed.status, 401);
}

#[tokio::test]
async fn host_rules_read_the_forwarded_host_in_forward_auth() {
    let s = stack(|t| {
        t.replacen(
            "[[routes]]",
            "[[routes]]\nhost = \"*.admin.example.com\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"site\"\n\n[[routes]]",
            1,
        )
    })
    .await;
    let asked = |host: &str| {
        api(s.ask("/"))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/about")
            .header("x-forwarded-host", host)
    };
    assert_eq!(asked("eu.Admin.example.com:443").send().await.status, 401);
    assert_eq!(asked("app.example.com").send().await.status, 200);
    // Only the host the ingress chose decides: without X-Forwarded-Host, the subrequest's own
    // Host is not taken for it (nginx sends its own idea of where Portcullis is; a client's
    // Host need not be the host an absolute-form request was routed by).
    let without = api(s.ask("/"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/about")
        .header("host", "app.example.com")
        .send()
        .await;
    assert_eq!(without.status, 400, "{}", without.text());
    let nginx = api(s.ask("/_portcullis"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/about")
        .send()
        .await;
    assert_eq!(nginx.status, 403);
    let two = api(s.ask("/"))
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-uri", "/about")
        .header("x-forwarded-host", "app.example.com")
        .header("x-forwarded-host", "eu.admin.example.com")
        .send()
        .await;
    assert_eq!(two.status, 400);
}

/// What nginx and ingress-nginx send is read strictly: the method and the host are required,
/// each convention header once, and ingress-nginx's whole URL must be a URL whose path starts
/// right after a valid host.
#[tokio::test]
async fn the_original_request_is_read_strictly() {
    let s = stack(|t| t).await;
    let token = format!("access_token={}", s.token(USER));
    // (request, status)
    let cases: Vec<(Req, u16)> = vec![
        // A misconfigured ingress without the method would turn every POST into a GET.
        (
            s.ask("/")
                .header("x-forwarded-uri", "/about")
                .header("x-forwarded-host", "app.example.com"),
            400,
        ),
        (
            s.ask("/")
                .header("x-original-uri", "/about")
                .header("x-forwarded-host", "app.example.com"),
            403,
        ),
        (
            forwarded(&s, "GET", "/about").header("x-forwarded-uri", "/dashboard"),
            400,
        ),
        (
            forwarded(&s, "GET", "/about").header("x-forwarded-method", "POST"),
            400,
        ),
        (
            original(&s, "GET", "/about").header("x-original-uri", "/dashboard"),
            403,
        ),
        (
            original(&s, "GET", "/about").header("x-original-method", "POST"),
            403,
        ),
        // `Host: x#` makes ingress-nginx's URL `http://x#/dashboard/x`: not host x, path /.
        (original_url(&s, "GET", "http://x#/dashboard/x"), 403),
        (original_url(&s, "GET", "http://x?/dashboard/x"), 403),
        (
            original_url(&s, "GET", "http://evil@app.example.com/about"),
            403,
        ),
        (
            original_url(&s, "GET", "https://app.example.com/about#x"),
            403,
        ),
        (
            original_url(&s, "GET", "https://app.example.com/about")
                .header("x-original-uri", "/dashboard"),
            403,
        ),
        (
            original_url(&s, "GET", "https://app.example.com/about")
                .header("x-original-uri", "/about"),
            200,
        ),
        (
            original_url(&s, "GET", "https://app.example.com/about"),
            200,
        ),
    ];
    for (i, (req, want)) in cases.into_iter().enumerate() {
        let resp = api(req).cookie(&token).send().await;
        assert_eq!(resp.status, want, "case {i}: {}", resp.text());
    }
    // The URL's scheme and host are the origin when the controller sends nothing else (it
    // sets X-Forwarded-Proto to "" in its auth location): a same-origin POST passes.
    let same = original_url(&s, "POST", "https://app.example.com/api/items")
        .cookie(&token)
        .header("origin", "https://app.example.com")
        .send()
        .await;
    assert_eq!(same.status, 200, "{}", same.text());
    let with_uri = original_url(&s, "POST", "https://app.example.com/api/items")
        .header("x-original-uri", "/api/items")
        .cookie(&token)
        .header("origin", "https://app.example.com")
        .send()
        .await;
    assert_eq!(with_uri.status, 200, "{}", with_uri.text());
    let cross = original_url(&s, "POST", "https://app.example.com/api/items")
        .cookie(&token)
        .header("origin", "http://app.example.com")
        .send()
        .await;
    assert_eq!(cross.status, 403);
}

/// Identity headers from the client reach the check request through every ingress (Envoy's
/// recipe allows them), and no ingress can be relied on to remove them all: refused. The
/// ingresses' own headers are not identities.
#[tokio::test]
async fn identity_headers_from_the_client_are_refused() {
    let s = stack(|t| t).await;
    let token = format!("access_token={}", s.token(USER));
    for forged in [
        "x-user-id",
        "x_user_email",
        "x-auth-request-groups",
        "remote-user",
        "x-forwarded-user",
    ] {
        let traefik = forwarded(&s, "GET", "/about")
            .header(forged, "root")
            .send()
            .await;
        assert_eq!(traefik.status, 400, "{forged}");
        let nginx = original(&s, "GET", "/api/items")
            .cookie(&token)
            .header(forged, "root")
            .send()
            .await;
        assert_eq!(nginx.status, 403, "{forged}");
        assert_no_token(&traefik, forged);
    }
    let ingress_own = forwarded(&s, "GET", "/api/items")
        .cookie(&token)
        .header("x-forwarded-for", "192.0.2.7")
        .header("x-forwarded-port", "443")
        .header("x-real-ip", "192.0.2.7")
        .header("x-request-id", "abc")
        .send()
        .await;
    assert_eq!(ingress_own.status, 200, "{}", ingress_own.text());
}

/// A renewal on the way to a refusal: Traefik, Caddy and Envoy relay the refusal to the
/// browser, so the renewed cookies come as `Set-Cookie` only (which page script cannot read);
/// nginx answers the browser itself and needs the copies.
#[tokio::test]
async fn a_renewed_refusal_mirrors_cookies_only_for_nginx() {
    let s = stack(|t| t).await;
    let (traefik, _, _) = renewed(&s, api(forwarded(&s, "GET", "/api/admin/users")), false).await;
    assert_eq!(traefik.status, 403);
    assert_no_token(&traefik, "403 after a renewal");
    let (nginx, _, _) = renewed(&s, api(original(&s, "GET", "/api/admin/users")), true).await;
    assert_eq!(nginx.status, 403);
    let (allowed, _, _) = renewed(&s, api(forwarded(&s, "GET", "/api/items")), true).await;
    assert_eq!(allowed.status, 200);
}

#[tokio::test]
async fn the_answer_is_never_served_on_server_listen() {
    let s = stack(|t| t).await;
    let token = s.token(USER);
    // Asked on the public listener the way an ingress asks, a request is just a request:
    // forwarded as it is, and nothing a page's script can read carries the token.
    for path in ["/", "/_portcullis", "/authz/dashboard"] {
        let resp = Req::get(&s.proxy.url(path))
            .header("x-forwarded-uri", "/dashboard")
            .header("x-forwarded-method", "GET")
            .header("x-original-uri", "/dashboard")
            .header("x-original-method", "GET")
            .cookie(&format!("access_token={token}"))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{path}");
        for (name, value) in &resp.headers {
            let value = value.to_str().unwrap_or_default();
            assert!(!value.contains(&token), "{path}: {name} carries the token");
            assert!(
                !name.as_str().starts_with("x-auth-"),
                "{path}: {name} on server.listen"
            );
        }
        assert!(
            !resp.text().contains(&token),
            "{path}: the body carries the token"
        );
        let seen = s.up.last().expect("forwarded as a normal request");
        assert_eq!(seen.path_and_query(), path);
        for header in ["x-forwarded-uri", "x-original-uri"] {
            assert_eq!(seen.header(header), None, "{path}: {header} forwarded");
        }
    }
    // And the forward-auth listener never forwards.
    let before = s.up.requests();
    let asked = forwarded(&s, "GET", "/about").send().await;
    assert_eq!(asked.status, 200);
    assert_eq!(s.up.requests(), before);
}

#[tokio::test]
async fn forward_auth_requests_are_counted_with_their_mode() {
    let s = stack(|t| t).await;
    for _ in 0..3 {
        api(forwarded(&s, "GET", "/api/items")).send().await;
    }
    let metrics = Req::get(&format!("http://{}/metrics", s.doors.admin))
        .send()
        .await
        .text();
    let count = |mode: &str, status: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("portcullis_requests_total{"))
            .filter(|l| l.contains(&format!("mode=\"{mode}\"")))
            .filter(|l| l.contains(&format!("status=\"{status}\"")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert!(count("forward_auth", "4xx") >= 3.0, "{metrics}");
    assert!(
        metrics.contains("portcullis_request_duration_seconds_count{mode=\"forward_auth\"}"),
        "{metrics}"
    );
}

/// The binary, from `examples/forward-auth.toml`: its access log says `mode="forward_auth"`,
/// and `explain --forward-auth` reads the ingress's headers the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_and_explains_forward_auth() {
    let forward_auth = free_port();
    let secret = "5f0c9e2a7b41d8e36a9f0b2c4d7e18a95c3b6f2e0d4a7c91";
    let example = crate::support::ingress::recipe("forward-auth.toml");
    // The instance writes its own [server] section.
    let server = example
        .find("[server]")
        .and_then(|at| Some(at..at + example[at..].find("\n\n")?))
        .expect("a [server] section");
    let text = example
        .replace(&example[server], "")
        .replace("127.0.0.1:9091", &format!("127.0.0.1:{forward_auth}"))
        .replace(
            "algorithms = [\"HS256\"]",
            &format!("algorithms = [\"HS256\"]\nsecret = \"{secret}\""),
        );
    let instance = Instance::start(&text).await;

    let explain = |headers: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["explain", "--config"])
            .arg(instance.config_path())
            .arg("--forward-auth");
        for header in headers {
            command.args(["-H", header]);
        }
        let output = command.args(["GET", "/"]).output().expect("run explain");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let traefik = explain(&[
        "X-Forwarded-Uri: /dashboard?tab=1",
        "X-Forwarded-Method: GET",
        "X-Forwarded-Host: app.example.com",
        "Accept: text/html",
    ]);
    for expected in [
        "mode        forward_auth, original request from X-Forwarded-Uri",
        "normalized  /dashboard",
        "routes[0] /dashboard/:path* (required): match",
        "refuse: 302 to /login?next=%2Fdashboard%3Ftab%3D1",
    ] {
        assert!(
            traefik.contains(expected),
            "{expected:?} not in:\n{traefik}"
        );
    }
    let nginx = |uri: &str| {
        explain(&[
            &format!("X-Original-URI: {uri}"),
            "X-Original-Method: GET",
            "X-Forwarded-Host: app.example.com",
            "Accept: text/html",
        ])
    };
    let guarded = nginx("/%64ashboard");
    assert!(guarded.contains("refuse: 401"), "{guarded}");
    for refused in ["/public/%2e%2e/dashboard", "/dashboard%2Fx"] {
        let out = nginx(refused);
        assert!(out.contains("refuse: 403"), "{out}");
    }

    let resp = Req::get(&format!("http://127.0.0.1:{forward_auth}/"))
        .header("x-forwarded-uri", "/dashboard")
        .header("x-forwarded-method", "GET")
        .header("x-forwarded-host", "app.example.com")
        .header("accept", "application/json")
        .send()
        .await;
    assert_eq!(resp.status, 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    let access = loop {
        let log = without_colors(&instance.log());
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("mode=\"forward_auth\"") && l.contains("status=401"))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no forward-auth access line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for expected in ["path=\"/dashboard\"", "rule=0", "auth=\"unauthenticated\""] {
        assert!(access.contains(expected), "{expected} not in {access}");
    }
}

/// `text` without ANSI color sequences (`ESC [ … m`), which a log on a terminal-less pipe may
/// still carry.
fn without_colors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for skipped in chars.by_ref() {
                if skipped == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn the_csrf_guard_compares_with_the_origin_the_ingress_names() {
    let s = stack(|t| t).await;
    let token = s.token(USER);
    let post = |origin: &str| {
        forwarded(&s, "POST", "/api/items")
            .cookie(&format!("access_token={token}"))
            .header("origin", origin)
    };
    // The ingress says the client reached https://app.example.com.
    let same = post("https://app.example.com").send().await;
    assert_eq!(same.status, 200, "{}", same.text());
    let cross = post("https://evil.example").send().await;
    assert_eq!(cross.status, 403);
    assert_eq!(cross.json()["error"], "csrf");
    assert_no_token(&cross, "csrf");
    // The subrequest's own Host is not the origin: X-Forwarded-Host is.
    let own_host = format!("http://{}", s.doors.forward_auth);
    assert_eq!(post(&own_host).send().await.status, 403);
    // nginx: the original method comes from X-Original-Method.
    let nginx = original(&s, "DELETE", "/api/items")
        .cookie(&format!("access_token={token}"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await;
    assert_eq!(nginx.status, 403);
}

#[tokio::test]
async fn a_renewal_reaches_the_browser_even_when_the_answer_is_a_refusal() {
    let s = stack(|t| t).await;
    let (resp, _, _) = renewed(&s, api(original(&s, "GET", "/api/admin/users")), true).await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("cache-control"), Some("private, no-store"));
    assert_eq!(resp.header("authorization"), None);
}

#[tokio::test]
async fn trace_and_connect_are_refused_for_every_ingress() {
    let s = stack(|t| t).await;
    let token = format!("access_token={}", s.token(USER));
    for method in ["TRACE", "CONNECT"] {
        let traefik = forwarded(&s, method, "/dashboard")
            .cookie(&token)
            .send()
            .await;
        assert_eq!(traefik.status, 405, "{method}");
        let nginx = original(&s, method, "/dashboard")
            .cookie(&token)
            .send()
            .await;
        assert_eq!(nginx.status, 403, "{method}");
        assert_no_token(&traefik, method);
        assert_no_token(&nginx, method);
    }
}
