//! Portcullis in front of a real third-party backend: Django REST framework with
//! djangorestframework-simplejwt (`tests/django/server.py`), configured only through the
//! proxy's TOML. Django issues `{access, refresh}`, takes `{"refresh": …}` to renew, rotates
//! and blacklists refresh tokens, and authorizes its own API with the bearer the proxy injects.

use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

use crate::support::django::{Django, EMAIL, PASSWORD};
use crate::support::proxy::{proxy, Proxy};
use crate::support::{CookieJar, Req, TestKey};

/// Portcullis configured for Django, as a user would write it.
async fn proxy_for(key: &TestKey, django: &Django) -> Proxy {
    proxy(&django.proxy_toml(key, "", "", "")).await
}

fn api(proxy: &Proxy) -> Req {
    Req::get(&proxy.url("/api/items/")).header("accept", "application/json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_api_and_logout_with_django() {
    let key = TestKey::new("HS256");
    let django = Django::start(&key, 300).await;
    let proxy = proxy_for(&key, &django).await;

    // Without the proxy, Django refuses its API; through it without a session, the proxy does.
    let direct = Req::get(&format!("{}/api/items/", django.url)).send().await;
    assert_eq!(direct.status, 401, "{}", direct.text());
    assert_eq!(api(&proxy).send().await.status, 401);
    assert_eq!(
        django.calls("items").await,
        1,
        "the proxy let a request through"
    );

    // A wrong password: Django says 401, the form goes back to the login page.
    let resp = Req::post(&proxy.url("/login"))
        .form(&[("email", EMAIL), ("password", "wrong")])
        .send()
        .await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/login?error=wrong_credentials"));
    assert!(resp.header_all("set-cookie").is_empty());

    // JSON login.
    let resp = Req::post(&proxy.url("/login"))
        .json(json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({ "ok": true }));
    assert!(resp
        .set_cookie("access_token")
        .is_some_and(|c| !c.is_removal()));

    // Form login, whose session is used from here on.
    let resp = Req::post(&proxy.url("/login?next=%2Fapi%2Fitems%2F"))
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.location(), Some("/api/items/"));
    let mut jar = CookieJar::new();
    jar.apply(&resp);
    let access = jar.get("access_token").expect("access cookie").to_owned();
    let refresh = jar.get("refresh_token").expect("refresh cookie").to_owned();
    let refresh_age = resp.set_cookie("refresh_token").and_then(|c| c.max_age());
    assert!(
        refresh_age.is_some_and(|a| (86_398..=86_400).contains(&a)),
        "the refresh cookie lives as long as Django's refresh token: {refresh_age:?}"
    );
    let stats = django.stats().await;
    assert_eq!(
        stats["token"]["status"],
        json!({ "200": 2, "401": 1 }),
        "{stats}"
    );

    // Django itself authorizes the bearer the proxy injects.
    let resp = api(&proxy).jar(&jar).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["user"], "alice");
    let stats = django.stats().await;
    assert_eq!(
        stats["items"]["last_authorization"],
        format!("Bearer {access}")
    );

    // /auth/me is backed by Django's profile endpoint.
    let resp = Req::get(&proxy.url("/auth/me")).jar(&jar).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({ "username": "alice", "email": EMAIL }));

    // Logout: cookies cleared, Django told with the bearer (and the refresh token blacklisted).
    let resp = Req::post(&proxy.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/login"));
    for name in ["access_token", "refresh_token"] {
        assert!(
            resp.set_cookie(name).is_some_and(|c| c.is_removal()),
            "{name}"
        );
    }
    django.wait_for_calls("logout", 1).await;
    let stats = django.stats().await;
    assert_eq!(stats["logout"]["status"], json!({ "200": 1 }), "{stats}");
    assert_eq!(
        stats["logout"]["last_authorization"],
        format!("Bearer {access}")
    );
    // The blacklisted refresh token cannot revive the session.
    let resp = api(&proxy)
        .cookie(&format!("refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(resp
        .set_cookie("refresh_token")
        .is_some_and(|c| c.is_removal()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_after_expiry_with_django() {
    let key = TestKey::new("HS256");
    let django = Django::start(&key, 1).await;
    let proxy = proxy_for(&key, &django).await;
    let resp = Req::post(&proxy.url("/login"))
        .json(json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut jar = CookieJar::new();
    jar.apply(&resp);
    let old_access = jar.get("access_token").expect("access").to_owned();
    let old_refresh = jar.get("refresh_token").expect("refresh").to_owned();

    // Wait out the 1 s access token (exp is in whole seconds).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // SimpleJWT truncates `exp` to whole seconds, so a 1 s token issued late in a second is
    // valid for a few milliseconds only: start the burst just after a second begins, so the
    // renewed token outlives the calls it authorizes.
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1020 - into_second))).await;

    // A page's burst of API calls: one refresh at Django, every call authorized by it.
    let mut calls = JoinSet::new();
    for _ in 0..5 {
        calls.spawn(api(&proxy).jar(&jar).send());
    }
    let mut renewed = Vec::new();
    while let Some(resp) = calls.join_next().await {
        let resp = resp.expect("request task");
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["user"], "alice");
        renewed.push(resp);
    }
    let stats = django.stats().await;
    assert_eq!(stats["refresh"]["calls"], 1, "{stats}");
    assert_eq!(stats["refresh"]["status"], json!({ "200": 1 }), "{stats}");
    assert_eq!(stats["items"]["status"], json!({ "200": 5 }), "{stats}");

    jar.apply(&renewed[0]);
    let access = jar.get("access_token").expect("renewed access").to_owned();
    assert_ne!(access, old_access);
    assert_ne!(
        jar.get("refresh_token"),
        Some(old_refresh.as_str()),
        "Django rotates refresh tokens; the cookie must follow"
    );
    assert_eq!(
        django.stats().await["items"]["last_authorization"],
        format!("Bearer {access}")
    );
    // The renewed session works as it is.
    let resp = api(&proxy).jar(&jar).send().await;
    assert_eq!(resp.status, 200);
    assert!(resp.header_all("set-cookie").is_empty());
}
