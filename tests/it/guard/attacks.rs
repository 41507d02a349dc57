//! The JWT table over real sockets: every forged, malformed or mistyped token is denied for
//! every algorithm, the controls are admitted, and the token is read from the access cookie
//! only (and never past the header size limit).

use std::time::Duration;

use serde_json::json;

use super::forge::{attacks, controls};
use super::{for_each_alg, Guard, API, AUDIENCE, ISSUER, ROUTES};
use crate::support::keys::{now, TestKey};
use crate::support::proxy::{self, proxy};
use crate::support::{backend, raw, upstream, Req};

#[tokio::test]
async fn every_jwt_attack_is_denied_for_every_algorithm() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let attacker = TestKey::new(alg);
        let jwks_host = backend(&attacker).run().await;
        let cases = attacks(&g, &jwks_host.jwks_url(), &g.up.url());
        assert!(cases.len() > 100, "{alg}: only {} cases", cases.len());
        for (what, token) in &cases {
            g.assert_denied(token, what).await;
        }
        assert_eq!(
            g.up.requests(),
            0,
            "{alg}: a forged token reached the upstream"
        );
        assert_eq!(
            jwks_host.jwks_fetches(),
            0,
            "{alg}: a token header made the proxy fetch keys"
        );
    })
    .await;
}

#[tokio::test]
async fn attack_controls_are_admitted() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let jwks_host = backend(&TestKey::new(alg)).run().await;
        for (what, token) in controls(&g, &jwks_host.jwks_url()) {
            g.assert_admitted(&token, &token, &what).await;
        }
        // A quoted cookie value is the same cookie.
        let token = g.token();
        g.assert_admitted(&format!("\"{token}\""), &token, "quoted cookie")
            .await;
        assert_eq!(jwks_host.jwks_fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_from_the_backend_is_not_an_access_token() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let issuer = backend(&g.key)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .run()
            .await;
        let refresh = issuer.mint_refresh("alice@example.com");
        g.assert_denied(&refresh, "backend refresh token").await;
        let access = issuer.mint_access("alice@example.com", 300);
        g.assert_admitted(&access, &access, "backend access token")
            .await;
    })
    .await;
}

#[tokio::test]
async fn required_claims_tell_an_id_token_from_an_access_token() {
    let key = TestKey::new("RS256");
    let up = upstream().run().await;
    let jwt = format!("{}claims = {{ token_type = \"access\" }}\n", key.jwt_toml());
    let p = proxy(&proxy::config(&up.url(), &jwt, ROUTES)).await;
    let exp = now() + 300;
    let id_token = key.sign(json!({"sub": "alice", "exp": exp, "nonce": "n"}));
    let access = key.sign(json!({"sub": "alice", "exp": exp, "token_type": "access"}));
    let id = Req::get(&p.url(API))
        .cookie(&format!("access_token={id_token}"))
        .send()
        .await;
    assert_eq!(id.status, 401);
    assert_eq!(up.requests(), 0);
    let ok = Req::get(&p.url(API))
        .cookie(&format!("access_token={access}"))
        .send()
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn oversized_tokens_get_431_before_decoding() {
    let g = Guard::start("HS256").await;
    for size in [64 << 10, 1 << 20] {
        let token = format!("{}.{}", g.token(), "A".repeat(size));
        for header in [
            format!("Cookie: access_token={token}\r\n"),
            format!("Cookie: theme=dark\r\nCookie: access_token={token}\r\n"),
            format!("Authorization: Bearer {token}\r\n"),
        ] {
            let request = format!(
                "GET {API} HTTP/1.1\r\nHost: site.example\r\n{header}Connection: close\r\n\r\n"
            );
            let answer =
                raw::send(g.proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await;
            assert_eq!(
                raw::status_codes(&answer).first().copied(),
                Some(431),
                "{size}-byte header"
            );
        }
    }
    // Over HTTP/2 the header list limit holds too.
    let big = format!("access_token={}", "A".repeat(64 << 10));
    // A refused stream is also fine: nothing was decoded or forwarded.
    if let Ok(resp) = Req::get(&g.proxy.url(API))
        .cookie(&big)
        .try_send_h2c()
        .await
    {
        assert_eq!(resp.status, 431, "h2 64 KiB cookie");
    }
    // Between the token limit (8 KiB) and the header limit: a plain 401, never a 500.
    let mid = format!("{}.{}", g.token(), "A".repeat(16 << 10));
    g.assert_denied(&mid, "16 KiB token").await;
    assert_eq!(g.up.requests(), 0);
}

#[tokio::test]
async fn the_token_is_read_from_the_access_cookie_only() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let token = g.token();
        let denied: Vec<(&str, Req)> = vec![
            (
                "Authorization header instead of the cookie",
                Req::get(&g.proxy.url(API)).header("authorization", &format!("Bearer {token}")),
            ),
            (
                "cookie name in other case",
                Req::get(&g.proxy.url(API)).cookie(&format!("Access_Token={token}")),
            ),
            (
                "cookie name upper case",
                Req::get(&g.proxy.url(API)).cookie(&format!("ACCESS_TOKEN={token}")),
            ),
            (
                "another cookie name",
                Req::get(&g.proxy.url(API)).cookie(&format!("token={token}")),
            ),
            (
                "the refresh cookie",
                Req::get(&g.proxy.url(API)).cookie(&format!("refresh_token={token}")),
            ),
            (
                "empty access cookie",
                Req::get(&g.proxy.url(API)).cookie("access_token="),
            ),
            (
                "first of two access cookies is garbage",
                Req::get(&g.proxy.url(API))
                    .cookie(&format!("access_token=x.y.z; access_token={token}")),
            ),
            (
                "token in the query",
                Req::get(&g.proxy.url(&format!("/api/items?access_token={token}"))),
            ),
        ];
        for (what, req) in denied {
            let resp = req.send().await;
            assert_eq!(resp.status, 401, "{alg} {what}");
        }
        assert_eq!(g.up.requests(), 0, "{alg}");

        // Admitted: the first access cookie wins, in one Cookie header or split across two,
        // and every copy is removed from what the upstream sees.
        let first_wins = Req::get(&g.proxy.url(API))
            .cookie(&format!(
                "access_token={token}; access_token=x.y.z; theme=dark"
            ))
            .send()
            .await;
        assert_eq!(first_wins.status, 200, "{alg}");
        let seen = g.up.last().expect("forwarded");
        assert_eq!(
            seen.header_all("authorization"),
            [format!("Bearer {token}")]
        );
        assert_eq!(seen.header_all("cookie"), ["theme=dark"], "{alg}");
        let split = Req::get(&g.proxy.url(API))
            .header("cookie", "theme=dark")
            .header("cookie", &format!("access_token={token}"))
            .send()
            .await;
        assert_eq!(split.status, 200, "{alg}");
        let seen = g.up.last().expect("forwarded");
        assert_eq!(seen.header_all("cookie").join("; "), "theme=dark", "{alg}");
    })
    .await;
}
