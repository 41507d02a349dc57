//! Route guards over real sockets: every row of the token table of docs/security.md for HS256, RS256,
//! ES256 and EdDSA, the redirect / 401 / 403 decisions, what the upstream receives on an
//! admitted request, `/auth/me`, and keys from `jwks_file` and `jwks_url` (rotation, refresh,
//! outage, readiness).
//!
//! A denial is always checked the same way ([`Guard::assert_denied`]): `401` JSON with
//! `WWW-Authenticate: Bearer` for an API request, `302` to `/login?next=<path and query>` for a
//! page navigation, and the upstream never contacted.
//!
//! # Layout
//! - [`forge`]: hand-made tokens: every attack of the table and the controls beside them.
//! - [`attacks`]: the table itself, token kinds, sizes, and where the token is read from.
//! - [`routes`]: redirect / 401 / 403, guest rules, what the upstream receives, `/auth/me`.
//! - [`jwks`]: keys from `jwks_file` and `jwks_url`.
//! - [`kid`]: a backend that stamps a `kid` on tokens of one static key.

mod attacks;
mod forge;
mod jwks;
mod kid;
mod routes;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support::keys::{now, TestKey};
use crate::support::proxy::{self, proxy, Proxy};
use crate::support::{upstream, Req, Resp, Upstream};

/// The algorithms every table runs for.
const ALGS: [&str; 4] = ["HS256", "RS256", "ES256", "EdDSA"];

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "web";

/// Route table shared by most tests: API rules answer 401/403, pages redirect.
const ROUTES: &str = r#"
[login]
success_redirect = "/dashboard"

[[routes]]
path = "/api/admin/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { role = "admin" }
upstream = "app"

[[routes]]
path = "/api/team/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { role = ["admin", "editor"] }
upstream = "app"

[[routes]]
path = "/api/groups/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { groups = "ops" }
upstream = "app"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
headers = { "X-User-Id" = "sub", "X-User-Email" = "email", "X-Tenant" = "tenant" }
upstream = "app"

[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "app"

[[routes]]
path = "/page/:path*"
auth = "required"
on_unauthenticated = "redirect"
upstream = "app"

[[routes]]
path = "/login"
auth = "guest"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

/// The API request of [`Guard::assert_denied`] and the login redirect its page twin gets.
const API: &str = "/api/items?id=7";
const PAGE: &str = "/dashboard/reports?tab=2&q=a%20b";
const PAGE_LOGIN: &str = "/login?next=%2Fdashboard%2Freports%3Ftab%3D2%26q%3Da%2520b";

/// A proxy guarding a recording upstream with one key.
struct Guard {
    key: TestKey,
    up: Upstream,
    proxy: Proxy,
}

impl Guard {
    async fn start(alg: &str) -> Guard {
        let key = TestKey::new(alg);
        let up = upstream().run().await;
        let jwt = format!(
            "{}issuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nleeway = \"30s\"\n",
            key.jwt_toml()
        );
        let proxy = proxy(&proxy::config(&up.url(), &jwt, ROUTES)).await;
        Guard { key, up, proxy }
    }

    fn alg(&self) -> &str {
        self.key.alg()
    }

    fn token(&self) -> String {
        self.key.sign(good_claims())
    }

    fn token_with(&self, name: &str, value: Value) -> String {
        self.key.sign(with(good_claims(), name, value))
    }

    async fn get(&self, path: &str, cookie: &str) -> Resp {
        Req::get(&self.proxy.url(path)).cookie(cookie).send().await
    }

    /// `GET path` as a browser navigation.
    async fn navigate(&self, path: &str, cookie: &str) -> Resp {
        Req::get(&self.proxy.url(path))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .cookie(cookie)
            .send()
            .await
    }

    /// The token in the access cookie is refused as an API call and as a page navigation,
    /// and nothing reaches the upstream.
    async fn assert_denied(&self, token: &str, what: &str) {
        let what = format!("{} {what}", self.alg());
        let before = self.up.requests();
        let cookie = format!("access_token={token}");
        let api = self.get(API, &cookie).await;
        assert_eq!(api.status, 401, "{what}: API answer {}", api.text());
        assert_eq!(api.header("www-authenticate"), Some("Bearer"), "{what}");
        assert_eq!(api.json()["error"], "unauthenticated", "{what}");
        let page = self.navigate(PAGE, &cookie).await;
        assert_eq!(page.status, 302, "{what}: page answer {}", page.text());
        assert_eq!(page.location(), Some(PAGE_LOGIN), "{what}");
        assert_eq!(self.up.requests(), before, "{what}: reached the upstream");
    }

    /// The token is admitted: `200` from the upstream, which got it as the bearer token.
    async fn assert_admitted(&self, cookie_value: &str, bearer: &str, what: &str) {
        let what = format!("{} {what}", self.alg());
        let resp = self.get(API, &format!("access_token={cookie_value}")).await;
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let seen = self.up.last().expect("forwarded");
        assert_eq!(
            seen.header_all("authorization"),
            [format!("Bearer {bearer}")],
            "{what}"
        );
    }
}

/// Runs `test` for every algorithm in [`ALGS`] at once.
async fn for_each_alg<F, Fut>(test: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    join_all(ALGS.map(test)).await;
}

/// Claims every check accepts.
fn good_claims() -> Value {
    let now = now();
    json!({
        "sub": "alice",
        "email": "alice@example.com",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    })
}

/// `claims` with `name` set to `value`, or removed when `value` is `null`.
fn with(mut claims: Value, name: &str, value: Value) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_owned(), value);
    }
    claims
}
