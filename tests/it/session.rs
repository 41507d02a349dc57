//! The credential exchange against the fake backend, with the fixtures its three parts share.
//!
//! # Layout
//! - [`login`]: every answer shape and body format, refusals and faults, cookie attributes,
//!   return paths, login CSRF and the attempt limit.
//! - [`refresh`]: transparent renewal, single-flight, rejection and outages.
//! - [`logout`]: clearing the cookies and telling the backend.

mod login;
mod logout;
mod refresh;

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
