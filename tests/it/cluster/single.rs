//! One instance, no Redis: logout and an operator's revoke end sessions on the spot, a revoked
//! token cannot be refreshed (an opaque refresh token included), a backend clock running
//! ahead does not slip past a revocation, a flood of logouts cannot fill the revocation set,
//! `explain` says so; each client has a refresh budget; a refresh URL that answers 404 or 405
//! is an outage, not a reason to sign users out.

use std::time::Duration;

use serde_json::{json, Value};

use super::{
    api, claims, clears_session, config, cookie_header, expired_session, log_out, page, sign_in,
};
use crate::support::instance::Instance;
use crate::support::proxy::{proxy, proxy_with_admin};
use crate::support::{backend, upstream, Fault, Req, TestKey};

/// One instance in front of `backend` with an admin listener and `jwt.leeway`; `session`
/// opens `[session]`.
async fn with_admin(
    key: &TestKey,
    backend: &crate::support::Backend,
    up: &crate::support::Upstream,
    session: &str,
    leeway: &str,
) -> (crate::support::proxy::Proxy, std::net::SocketAddr) {
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nexplain = true\n\n{}",
        config(key, backend, up, "", session)
    )
    .replace("leeway = \"0s\"", &format!("leeway = \"{leeway}\""));
    proxy_with_admin(&toml).await
}

/// A backend issuing opaque refresh tokens, and an instance with an admin listener in front.
async fn opaque_refresh_site() -> (
    crate::support::Backend,
    crate::support::Upstream,
    crate::support::proxy::Proxy,
    std::net::SocketAddr,
) {
    let key = TestKey::new("HS256");
    let backend = backend(&key).opaque_refresh().run().await;
    let up = upstream().run().await;
    let session = "[session]\nrefresh_ahead = \"0s\"\n";
    let (proxy, admin) = with_admin(&key, &backend, &up, session, "0s").await;
    (backend, up, proxy, admin)
}

/// `POST /sessions/revoke {"sub": sub}` on `admin`; without `[cluster]` there is no one to
/// share it with.
async fn revoke_subject(admin: std::net::SocketAddr, sub: &str) {
    let resp = Req::post(&format!("http://{admin}/sessions/revoke"))
        .json(json!({ "sub": sub }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["ok"], true);
    assert_eq!(resp.json()["shared"], Value::Null);
}

#[tokio::test]
async fn logout_revokes_the_access_and_refresh_tokens() {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let proxy = proxy(&config(&key, &backend, &up, "", "")).await;
    let base = proxy.url("");

    let jar = sign_in(&base).await;
    let copied = cookie_header(&jar);
    assert_eq!(api(&base, &copied).await.status, 200);
    let other = cookie_header(&sign_in(&base).await);

    log_out(&proxy.url(""), &copied).await;
    let forwarded = up.requests();

    // The copied cookies, replayed: refused by the proxy itself, cookies cleared.
    let resp = api(&base, &copied).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(clears_session(&resp));
    // The refresh token alone cannot revive the session, and the backend is not even asked.
    let refresh = jar.get("refresh_token").expect("refresh cookie");
    let resp = api(&base, &format!("refresh_token={refresh}")).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(clears_session(&resp));
    assert_eq!(
        backend.refreshes(),
        0,
        "a revoked refresh token was sent to the backend"
    );
    // A page navigation goes to the login page.
    let resp = page(&proxy.url(""), &copied).await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        up.requests(),
        forwarded,
        "a revoked token reached the upstream"
    );

    // Another session of the same user is untouched.
    assert_eq!(api(&base, &other).await.status, 200);
}

#[tokio::test]
async fn an_expired_token_of_a_revoked_subject_is_not_renewed() {
    // An opaque refresh token shows nothing to refuse it by: the expired access token beside
    // it, revoked by its subject, is what stops the renewal before the backend is asked.
    let (backend, _up, proxy, admin) = opaque_refresh_site().await;
    let session = expired_session(&backend);
    revoke_subject(admin, super::USER).await;
    let resp = api(&proxy.url(""), &session).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(clears_session(&resp));
    assert_eq!(backend.refreshes(), 0, "the backend was asked");
}

/// A refresh cookie that looks like a JWT of `sub` lasting until 2286, signed by no one.
fn forged_refresh(sub: &str, n: usize) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl{n}",
        b64(json!({ "alg": "HS256" })),
        b64(json!({ "sub": sub, "exp": 9_999_999_999u64, "jti": n.to_string() })),
    )
}

#[tokio::test]
async fn a_logout_flood_cannot_fill_the_revocation_set() {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let instance = Instance::start(&config(
        &key,
        &backend,
        &up,
        "",
        "[session]\nrefreshes_per_minute = 5\n",
    ))
    .await;
    let jar = sign_in(&instance.url("")).await;
    let access = jar.get("access_token").expect("access");
    // One genuine access token, replayed with a new far-future refresh cookie each time.
    for n in 0..40 {
        let cookies = format!(
            "access_token={access}; refresh_token={}",
            forged_refresh(super::USER, n)
        );
        let resp = Req::post(&instance.url("/logout"))
            .header("accept", "application/json")
            .cookie(&cookies)
            .send()
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // The access token, the refresh cookie its first logout proved, and the client's budget
    // of unproven ones: nothing more.
    let kept = instance.metric("portcullis_revocations").await;
    assert!(kept.is_some_and(|n| n <= 7.0), "{kept:?} revocations kept");
    // The session itself is over.
    assert_eq!(
        api(&instance.url(""), &cookie_header(&jar)).await.status,
        401
    );
}

#[tokio::test]
async fn an_opaque_refresh_token_does_not_outlive_its_subjects_revocation() {
    let (_backend, _up, proxy, admin) = opaque_refresh_site().await;
    let base = proxy.url("");
    let stolen = sign_in(&base).await;
    revoke_subject(admin, super::USER).await;
    // More than a second later the backend issues tokens with a later `iat`: a stolen opaque
    // refresh token alone must not get one admitted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refresh = stolen.get("refresh_token").expect("refresh");
    let resp = api(&base, &format!("refresh_token={refresh}")).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(clears_session(&resp));
    // A login after the revocation gets an opaque refresh token that still works, and so
    // does the one its renewal rotates to.
    let mut fresh = sign_in(&base).await;
    for round in 0..2 {
        let refresh = fresh.get("refresh_token").expect("refresh").to_owned();
        let resp = api(&base, &format!("refresh_token={refresh}")).await;
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
        fresh.apply(&resp);
        assert_ne!(
            fresh.get("refresh_token"),
            Some(refresh.as_str()),
            "rotated"
        );
    }
}

#[tokio::test]
async fn a_backend_clock_ahead_cannot_slip_a_token_past_a_revocation() {
    let key = TestKey::new("HS256");
    let backend = backend(&key).clock_ahead(3).run().await;
    let up = upstream().run().await;
    let (proxy, admin) = with_admin(&key, &backend, &up, "", "5s").await;
    let session = cookie_header(&sign_in(&proxy.url("")).await);
    assert_eq!(api(&proxy.url(""), &session).await.status, 200);
    // Its `iat` is 3 s ahead of the proxy's clock: "issued up to now" must cover it.
    revoke_subject(admin, super::USER).await;
    let resp = api(&proxy.url(""), &session).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
}

#[tokio::test]
async fn an_operator_revokes_every_token_of_a_subject() {
    let key = TestKey::new("HS256");
    let backend = backend(&key)
        .user("alice@example.com", "secret")
        .user("bob@example.com", "secret")
        .run()
        .await;
    let up = upstream().run().await;
    let (proxy, admin) = with_admin(&key, &backend, &up, "", "0s").await;
    let base = proxy.url("");
    let login = |user: &'static str| {
        let url = proxy.url("/login");
        async move {
            let resp = Req::post(&url)
                .json(json!({ "email": user, "password": "secret" }))
                .send()
                .await;
            assert_eq!(resp.status, 200);
            let mut jar = crate::support::CookieJar::new();
            jar.apply(&resp);
            jar
        }
    };
    let alice = login("alice@example.com").await;
    let bob = login("bob@example.com").await;
    let admin_url = |path: &str| format!("http://{admin}{path}");

    // Bad requests are refused with a reason.
    for body in [
        "",
        "[]",
        "{\"sub\": \"\"}",
        "{\"sub\": {}}",
        "{\"user\": \"x\"}",
    ] {
        let resp = Req::post(&admin_url("/sessions/revoke"))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await;
        assert_eq!(resp.status, 400, "{body:?}: {}", resp.text());
    }
    assert_eq!(
        Req::get(&admin_url("/sessions/revoke")).send().await.status,
        405
    );

    revoke_subject(admin, "alice@example.com").await;

    let resp = api(&base, &super::cookie_header(&alice)).await;
    assert_eq!(resp.status, 401);
    assert!(clears_session(&resp));
    let refresh = alice.get("refresh_token").expect("refresh");
    assert_eq!(
        api(&base, &format!("refresh_token={refresh}")).await.status,
        401
    );
    assert_eq!(backend.refreshes(), 0);
    assert_eq!(api(&base, &super::cookie_header(&bob)).await.status, 200);

    // explain on the admin listener shows the token as revoked.
    let access = alice.get("access_token").expect("access");
    let cookie = format!("access_token={access}");
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", "/api/items")
        .append_pair("cookie", &cookie)
        .append_pair("header", "Accept: application/json")
        .finish();
    let explained = Req::get(&admin_url(&format!("/explain?{query}")))
        .send()
        .await
        .json();
    let revoked = explained["token"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == "revoked")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(revoked["ok"], false, "{explained}");
    assert!(
        revoked["detail"]
            .as_str()
            .is_some_and(|d| d.contains("REVOKED")),
        "{revoked}"
    );
    assert_eq!(explained["status"], 401, "{explained}");
    assert_eq!(explained["token"]["valid"], false);

    // Tokens issued after the revocation (the next second on) are fine.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = login("alice@example.com").await;
    assert_eq!(api(&base, &super::cookie_header(&again)).await.status, 200);
    let iat = claims(again.get("access_token").expect("access"))["iat"].as_u64();
    assert!(iat.is_some());
}

#[tokio::test]
async fn each_client_has_a_refresh_budget() {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let proxy = proxy(&config(
        &key,
        &backend,
        &up,
        "",
        "[session]\nrefresh_ahead = \"0s\"\nrefreshes_per_minute = 2\n",
    ))
    .await;
    let base = proxy.url("");
    let sessions: Vec<String> = (0..4).map(|_| expired_session(&backend)).collect();
    assert_eq!(api(&base, &sessions[0]).await.status, 200);
    assert_eq!(api(&base, &sessions[1]).await.status, 200);
    // The third new refresh this minute: the backend is not asked, the cookies are kept.
    let resp = api(&base, &sessions[2]).await;
    assert_eq!(resp.status, 429, "{}", resp.text());
    assert!(resp.header("retry-after").is_some());
    assert!(resp.set_cookies().is_empty(), "cookies were touched");
    assert_eq!(backend.refreshes(), 2);
    // A page navigation over budget goes to the login page, cookies kept.
    let resp = page(&proxy.url(""), &sessions[3]).await;
    assert_eq!(resp.status, 302);
    assert!(resp.set_cookies().is_empty());
    // Joining a refresh that just happened is free.
    let resp = api(&base, &sessions[0]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(backend.refreshes(), 2);
}

#[tokio::test]
async fn a_refresh_url_answering_404_or_405_keeps_the_session() {
    let key = TestKey::new("HS256");
    for status in [404, 405, 410, 401] {
        let backend = backend(&key).fault(Fault::Status(status)).run().await;
        let up = upstream().run().await;
        let toml = config(
            &key,
            &backend,
            &up,
            "",
            "[session]\nrefresh_ahead = \"0s\"\n",
        );
        let proxy = proxy(&toml).await;
        let session = expired_session(&backend);
        let resp = api(&proxy.url(""), &session).await;
        if status == 401 {
            // A refusal of the token still ends the session.
            assert_eq!(resp.status, 401);
            assert!(clears_session(&resp));
            continue;
        }
        assert_eq!(resp.status, 502, "{status}: {}", resp.text());
        assert_eq!(resp.json()["error"], "backend_unavailable", "{status}");
        assert!(
            resp.set_cookies().is_empty(),
            "{status}: the session was cleared"
        );
        let resp = page(&proxy.url(""), &session).await;
        assert_eq!(resp.status, 302, "{status}");
        assert!(resp.set_cookies().is_empty(), "{status}");
        assert_eq!(up.requests(), 0);
    }
}
