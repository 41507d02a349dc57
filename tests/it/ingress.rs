//! Forward auth: Portcullis answering an ingress's subrequests on `forward_auth.listen`,
//! configured with `examples/forward-auth.toml` (the documented configuration).
//!
//! - [`protocol`]: the answers themselves, for each ingress convention (Traefik/Caddy's
//!   `X-Forwarded-*`, nginx's `X-Original-*`, Envoy's path prefix), and the listener's
//!   separation from `server.listen`.
//! - [`real`]: a real nginx and a real Caddy started with the documented recipes in front of
//!   the test upstream: sign-in, refresh, refusals and path tricks through each.

mod protocol;
mod real;

use serde_json::{json, Value};

use crate::support::backend::DEFAULT_USER as USER;
use crate::support::ingress::recipe;
use crate::support::proxy::{proxy_with_forward_auth, Doors, Proxy};
use crate::support::{backend, upstream, Backend, Req, TestKey, Upstream, UpstreamBuilder};

/// A user whose tokens carry `role: admin`.
const ADMIN: &str = "root@example.com";
const ADMIN_PASSWORD: &str = "hunter2";

/// The fake backend, the upstream and Portcullis with its forward-auth listener.
struct Stack {
    backend: Backend,
    up: Upstream,
    proxy: Proxy,
    doors: Doors,
}

/// `examples/forward-auth.toml` pointed at the test's backend and upstream, with the key's
/// secret (the example takes it from the environment), then changed by `edit`.
async fn stack(edit: impl FnOnce(String) -> String) -> Stack {
    stack_with(upstream(), edit).await
}

/// [`stack`] with an upstream that answers as `site` says.
async fn stack_with(site: UpstreamBuilder, edit: impl FnOnce(String) -> String) -> Stack {
    let key = TestKey::new("HS256");
    let backend = backend(&key)
        .user(USER, crate::support::backend::DEFAULT_PASSWORD)
        .user_with_claims(ADMIN, ADMIN_PASSWORD, json!({ "role": "admin" }))
        .run()
        .await;
    let up = site.run().await;
    let secret = String::from_utf8(key.secret().expect("an HMAC key").to_vec()).expect("hex");
    let text = recipe("forward-auth.toml")
        // The backend's first, and the site's with its quotes: a port of one that begins
        // with the other placeholder's (`40001`) is then never rewritten twice.
        .replace("http://127.0.0.1:4000", &backend.url())
        .replace("\"http://127.0.0.1:3000\"", &format!("\"{}\"", up.url()))
        .replace(
            "algorithms = [\"HS256\"]",
            &format!("algorithms = [\"HS256\"]\nsecret = {}", Value::from(secret)),
        );
    assert!(text.contains(&up.url()) && text.contains(&backend.url()));
    let (proxy, doors) = proxy_with_forward_auth(&edit(text)).await;
    Stack {
        backend,
        up,
        proxy,
        doors,
    }
}

impl Stack {
    /// A request to the forward-auth listener.
    fn ask(&self, path: &str) -> Req {
        Req::get(&format!("http://{}{path}", self.doors.forward_auth))
    }

    /// An access token for `login`, valid for 15 minutes.
    fn token(&self, login: &str) -> String {
        self.backend.mint_access(login, 900)
    }

    /// The `Cookie` text of a session whose access token expired ten minutes ago and whose
    /// refresh token is good: a request with it is renewed on the way.
    fn expired_session(&self) -> String {
        format!(
            "access_token={}; refresh_token={}",
            self.backend.mint_access(USER, -600),
            self.backend.mint_refresh(USER)
        )
    }
}

/// The recipes in docs/ingress.md are the files in examples/ (the nginx and Caddy ones are
/// the files the tests above run), and the YAML ones parse.
#[test]
fn the_documented_recipes_are_the_example_files() {
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ingress.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/ingress.md");
    for name in [
        "forward-auth.toml",
        "ingress/nginx.conf",
        "ingress/Caddyfile",
        "ingress/ingress-nginx.yaml",
        "ingress/traefik.yml",
        "ingress/traefik-compose.yml",
        "ingress/envoy.yaml",
    ] {
        let text = recipe(name);
        assert!(
            doc.contains(text.trim_end()),
            "docs/ingress.md does not show examples/{name} as it is"
        );
        if name.ends_with(".yml") || name.ends_with(".yaml") {
            // Every document of a multi-document file.
            for (i, part) in text.split("\n---\n").enumerate() {
                let parsed: Result<Value, _> = figment::Figment::from(
                    <figment::providers::Yaml as figment::providers::Format>::string(part),
                )
                .extract();
                assert!(parsed.is_ok(), "examples/{name} document {i}: {parsed:?}");
            }
        }
    }
}
