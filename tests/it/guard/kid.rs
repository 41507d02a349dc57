//! Backends that stamp a `kid` on tokens signed with one static key: the proxy configured with
//! that key's secret or PEM file (and no `jwt.kid`) takes their tokens, from login on.

use serde_json::json;

use crate::support::backend::{DEFAULT_PASSWORD as PASSWORD, DEFAULT_USER as USER};
use crate::support::proxy::proxy;
use crate::support::{backend, upstream, CookieJar, Req, TestKey};

#[tokio::test]
async fn a_backend_that_stamps_a_kid_works_with_a_static_key() {
    for alg in ["HS256", "RS256"] {
        let key = TestKey::with_kid(alg, "backend-key-2026");
        let be = backend(&key).run().await;
        let up = upstream().run().await;
        let proxy = proxy(&format!(
            "[upstreams]\napp = {up}\n\n{jwt}\n{backend}\n\
             [[routes]]\npath = \"/api/:path*\"\nauth = \"required\"\nupstream = \"app\"\n",
            up = serde_json::Value::from(up.url()),
            jwt = key.jwt_toml(),
            backend = be.backend_toml(),
        ))
        .await;
        let login = Req::post(&proxy.url("/login"))
            .json(json!({ "email": USER, "password": PASSWORD }))
            .send()
            .await;
        assert_eq!(login.status, 200, "{alg}: {}", login.text());
        let mut jar = CookieJar::new();
        jar.apply(&login);
        let access = jar.get("access_token").expect("access cookie").to_owned();
        let header = access.split('.').next().expect("header segment");
        let header: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .expect("base64url"),
        )
        .expect("header JSON");
        assert_eq!(
            header["kid"], "backend-key-2026",
            "{alg}: the backend stamps a kid"
        );
        let api = Req::get(&proxy.url("/api/items")).jar(&jar).send().await;
        assert_eq!(api.status, 200, "{alg}: {}", api.text());
        assert_eq!(up.requests(), 1, "{alg}");
    }
}
