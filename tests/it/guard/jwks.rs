//! Keys from `jwks_file` and `jwks_url`: selection by `kid`, rotation picked up through an
//! unknown `kid` (at most one refetch a minute), removal on refresh, bad answers and outages
//! keeping the last good keys, readiness, static keys kept beside fetched ones, and the
//! refresh stopping with the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};

use super::{API, ROUTES};
use crate::support::keys::{now, TestKey};
use crate::support::proxy::{self, proxy, proxy_with_admin, Proxy};
use crate::support::{backend, upstream, Req};

/// The asymmetric algorithms (a JWKS never carries HMAC secrets).
const JWKS_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

fn jwks_url_toml(alg: &str, url: &str, refresh: &str) -> String {
    format!("[jwt]\nalgorithms = [{alg:?}]\njwks_url = {url:?}\njwks_refresh = {refresh:?}\n")
}

/// GETs `path` on the admin listener and returns the status.
async fn admin_status(admin: SocketAddr, path: &str) -> u16 {
    Req::get(&format!("http://{admin}{path}"))
        .send()
        .await
        .status
}

/// Waits (polling) until `/readyz` answers 200; panics after 10 s.
async fn wait_ready(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin_status(admin, "/readyz").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api_status(p: &Proxy, token: &str) -> u16 {
    Req::get(&p.url(API))
        .cookie(&format!("access_token={token}"))
        .send()
        .await
        .status
}

fn claims_plain() -> Value {
    json!({"sub": "alice", "exp": now() + 300})
}

#[tokio::test]
async fn jwks_file_keys_are_selected_by_kid() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let key = TestKey::with_kid(alg, "file-key");
        let up = upstream().run().await;
        let p = proxy(&proxy::config(&up.url(), &key.jwt_jwks_toml(), ROUTES)).await;
        assert_eq!(
            api_status(&p, &key.sign(claims_plain())).await,
            200,
            "{alg}"
        );
        let no_kid = key.sign_with_header(json!({"kid": null}), claims_plain());
        assert_eq!(api_status(&p, &no_kid).await, 200, "{alg} without kid");
        for kid in ["other", "FILE-KEY", "file-key ", "../file-key"] {
            let token = key.sign_with_header(json!({"kid": kid}), claims_plain());
            assert_eq!(api_status(&p, &token).await, 401, "{alg} kid {kid}");
        }
        let foreign = TestKey::with_kid(alg, "file-key").sign(claims_plain());
        assert_eq!(
            api_status(&p, &foreign).await,
            401,
            "{alg} same kid, other key"
        );
        assert_eq!(up.requests(), 2);
    }))
    .await;
}

#[tokio::test]
async fn jwks_url_rotation_is_picked_up_through_an_unknown_kid() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let k1 = TestKey::with_kid(alg, "k1");
        let k2 = TestKey::with_kid(alg, "k2");
        let k3 = TestKey::with_kid(alg, "k3");
        let keys = backend(&k1).run().await;
        let up = upstream().run().await;
        // The periodic refresh is far away: only start-up and unknown kids fetch here.
        let (p, admin) = proxy_with_admin(&proxy::config(
            &up.url(),
            &jwks_url_toml(alg, &keys.jwks_url(), "1h"),
            ROUTES,
        ))
        .await;
        wait_ready(admin).await;
        assert_eq!(keys.jwks_fetches(), 1, "{alg}: one fetch at start-up");
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            200,
            "{alg} k1"
        );

        keys.rotate_key(&k2);
        assert_eq!(
            api_status(&p, &k2.sign(claims_plain())).await,
            200,
            "{alg} k2 after rotation"
        );
        assert_eq!(keys.jwks_fetches(), 2, "{alg}: one refetch for the new kid");
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            200,
            "{alg} k1 still listed"
        );
        assert_eq!(api_status(&p, &k2.sign(claims_plain())).await, 200);
        assert_eq!(keys.jwks_fetches(), 2, "{alg}: known kids never fetch");

        // Within the minute, unknown kids (a further rotation, or forgeries) fetch nothing more.
        keys.rotate_key(&k3);
        for _ in 0..5 {
            assert_eq!(
                api_status(&p, &k3.sign(claims_plain())).await,
                401,
                "{alg} k3"
            );
            let forged = TestKey::with_kid(alg, "random").sign(claims_plain());
            assert_eq!(api_status(&p, &forged).await, 401);
        }
        assert_eq!(
            keys.jwks_fetches(),
            2,
            "{alg}: at most one refetch per minute"
        );
        assert_eq!(up.requests(), 4);
    }))
    .await;
}

#[tokio::test]
async fn jwks_url_refresh_drops_removed_keys_and_survives_bad_answers() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let k1 = TestKey::with_kid(alg, "k1");
        let k2 = TestKey::with_kid(alg, "k2");
        let keys = backend(&k1).run().await;
        keys.set_jwks(json!({"keys": [k1.jwk(), k2.jwk()]}));
        let up = upstream().run().await;
        let (p, admin) = proxy_with_admin(&proxy::config(
            &up.url(),
            &jwks_url_toml(alg, &keys.jwks_url(), "50ms"),
            ROUTES,
        ))
        .await;
        wait_ready(admin).await;
        assert_eq!(api_status(&p, &k1.sign(claims_plain())).await, 200, "{alg}");
        assert_eq!(api_status(&p, &k2.sign(claims_plain())).await, 200, "{alg}");

        // Bad answers keep the last good set: not a JWKS, no usable key, a wrong key type.
        for bad in [
            json!("not a jwks"),
            json!({"keys": []}),
            json!({"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}),
        ] {
            keys.set_jwks(bad.clone());
            // Fetch n+1 is the first to see the new document; once n+2 arrives, n+1 has been
            // handled (fetches never overlap).
            let n = keys.jwks_fetches();
            keys.wait_for_jwks_fetches(n + 2).await;
            assert_eq!(
                api_status(&p, &k1.sign(claims_plain())).await,
                200,
                "{alg} after {bad}"
            );
            assert_eq!(admin_status(admin, "/readyz").await, 200);
        }

        // A key removed from the JWKS is refused after the next refresh.
        keys.set_jwks(json!({"keys": [k2.jwk()]}));
        let n = keys.jwks_fetches();
        keys.wait_for_jwks_fetches(n + 2).await;
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            401,
            "{alg} removed k1"
        );
        assert_eq!(
            api_status(&p, &k2.sign(claims_plain())).await,
            200,
            "{alg} k2"
        );

        // The refresh stops with the proxy.
        p.stop().await.expect("clean shutdown");
        let n = keys.jwks_fetches();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            keys.jwks_fetches() <= n + 1,
            "{alg}: JWKS fetched after shutdown"
        );
    }))
    .await;
}

#[tokio::test]
async fn a_jwks_outage_keeps_the_last_good_keys() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let k1 = TestKey::with_kid(alg, "k1");
        let keys = backend(&k1).run().await;
        let up = upstream().run().await;
        let (p, admin) = proxy_with_admin(&proxy::config(
            &up.url(),
            &jwks_url_toml(alg, &keys.jwks_url(), "1h"),
            ROUTES,
        ))
        .await;
        wait_ready(admin).await;
        assert_eq!(api_status(&p, &k1.sign(claims_plain())).await, 200, "{alg}");
        let gone = keys.addr();
        drop(keys);
        // Wait until the JWKS server's port refuses connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(gone).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the JWKS server never stopped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An unknown kid makes the proxy refetch now; the JWKS server is gone.
        let unknown = TestKey::with_kid(alg, "k2").sign(claims_plain());
        assert_eq!(api_status(&p, &unknown).await, 401, "{alg}");
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            200,
            "{alg} k1 kept"
        );
        assert_eq!(
            admin_status(admin, "/readyz").await,
            200,
            "{alg} still ready"
        );
    }))
    .await;
}

#[tokio::test]
async fn without_jwks_keys_the_proxy_serves_but_is_not_ready() {
    let alg = "ES256";
    let key = TestKey::with_kid(alg, "k1");
    let keys = backend(&key).run().await;
    keys.set_jwks(json!({"keys": []}));
    let up = upstream().run().await;
    let (p, admin) = proxy_with_admin(&proxy::config(
        &up.url(),
        &jwks_url_toml(alg, &keys.jwks_url(), "50ms"),
        ROUTES,
    ))
    .await;
    keys.wait_for_jwks_fetches(1).await;
    assert_eq!(admin_status(admin, "/healthz").await, 200);
    assert_eq!(admin_status(admin, "/readyz").await, 503);
    let resp = Req::get(&p.url(API))
        .cookie(&format!("access_token={}", key.sign(claims_plain())))
        .send()
        .await;
    assert_eq!(resp.status, 401, "tokens are refused, not a 500");
    assert_eq!(Req::get(&p.url("/public")).send().await.status, 200);
    // The keys appear: the retry loads them and the proxy becomes ready.
    keys.set_jwks(key.jwks());
    wait_ready(admin).await;
    assert_eq!(api_status(&p, &key.sign(claims_plain())).await, 200);

    // A JWKS server that is down from the start does not stop the proxy either.
    let down = backend(&key).fault(crate::support::Fault::Down).run().await;
    let (p, admin) = proxy_with_admin(&proxy::config(
        &up.url(),
        &jwks_url_toml(alg, &down.jwks_url(), "5m"),
        ROUTES,
    ))
    .await;
    assert_eq!(admin_status(admin, "/readyz").await, 503);
    assert_eq!(api_status(&p, &key.sign(claims_plain())).await, 401);
    assert_eq!(Req::get(&p.url("/public")).send().await.status, 200);
}

#[tokio::test]
async fn static_keys_stay_alongside_jwks_url_keys() {
    let file_key = TestKey::new("ES256");
    let url_key = TestKey::with_kid("ES256", "remote");
    let keys = backend(&url_key).run().await;
    let up = upstream().run().await;
    let jwt = format!(
        "{}jwks_url = {:?}\njwks_refresh = \"50ms\"\n",
        file_key.jwt_toml(),
        keys.jwks_url()
    );
    let (p, admin) = proxy_with_admin(&proxy::config(&up.url(), &jwt, ROUTES)).await;
    wait_ready(admin).await;
    assert_eq!(api_status(&p, &file_key.sign(claims_plain())).await, 200);
    assert_eq!(api_status(&p, &url_key.sign(claims_plain())).await, 200);
    // The URL's keys go away; the configured PEM key stays.
    keys.set_jwks(json!({"keys": [TestKey::with_kid("ES256", "other").jwk()]}));
    let n = keys.jwks_fetches();
    keys.wait_for_jwks_fetches(n + 2).await;
    assert_eq!(api_status(&p, &url_key.sign(claims_plain())).await, 401);
    assert_eq!(api_status(&p, &file_key.sign(claims_plain())).await, 200);
}
