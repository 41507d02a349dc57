//! Against Django REST framework + SimpleJWT (`ROTATE_REFRESH_TOKENS` and
//! `BLACKLIST_AFTER_ROTATION`): the session check obeys a blocked user; three real Portcullis
//! processes sharing Redis spend each refresh token once however their requests are spread,
//! and share logouts and an operator's revocations.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{claims, clears_session, cookie_header, log_out, sign_in};
use crate::support::django::Django;
use crate::support::instance::Instance;
use crate::support::proxy::proxy;
use crate::support::redis::RedisServer;
use crate::support::{CookieJar, Req, TestKey};

fn items(base: &str, cookies: &str) -> Req {
    Req::get(&format!("{base}/api/items/"))
        .header("accept", "application/json")
        .cookie(cookies)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until a token with this `exp` has expired (leeway 0).
async fn until_expired(exp: u64) {
    let wait = (exp as f64 + 1.05) - unix_now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
}

/// Polls `check` until it holds, one second at most.
async fn within_a_second<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: not within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_blocking_a_user_ends_the_session_within_check_every() {
    let key = TestKey::new("HS256");
    let django = Django::start(&key, 300).await;
    let check = format!(
        "session_check = {}\n",
        Value::from(format!("{}/api/session/", django.url))
    );
    let proxy = proxy(&django.proxy_toml(&key, &check, "check_every = \"1s\"\n", "")).await;
    let base = proxy.url("");
    let jar = sign_in(&base).await;
    let session = cookie_header(&jar);
    for _ in 0..3 {
        assert_eq!(items(&base, &session).send().await.status, 200);
    }
    assert_eq!(
        django.calls("session").await,
        0,
        "a fresh login needs no check"
    );
    django.block("alice").await;
    // Django itself refuses the blocked user's bearer at once; the proxy, within check_every.
    let started = Instant::now();
    let resp = loop {
        let resp = items(&base, &session).send().await;
        if clears_session(&resp) || started.elapsed() > Duration::from_secs(3) {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(clears_session(&resp));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(django.calls("session").await, 1, "{}", django.stats().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_spend_each_rotating_refresh_token_once() {
    let key = TestKey::new("HS256");
    let (django, redis) = tokio::join!(Django::start(&key, 3), RedisServer::start());
    let heard = redis.record_pubsub();
    let toml = django.proxy_toml(
        &key,
        "",
        "",
        &format!("[cluster]\nredis = \"{}\"\n", redis.url()),
    );
    let instances = Instance::start_connected::<3>(&toml).await;
    let base = |i: usize| instances[i].url("");
    let mut secrets: Vec<String> = Vec::new();

    let a = sign_in(&base(0)).await;
    let b = sign_in(&base(1)).await;
    let (old_a, old_b) = (cookie_header(&a), cookie_header(&b));
    for jar in [&a, &b] {
        secrets.extend(["access_token", "refresh_token"].map(|n| jar.get(n).expect(n).to_owned()));
    }
    let exp = [&a, &b]
        .iter()
        .filter_map(|jar| claims(jar.get("access_token")?)["exp"].as_u64())
        .max()
        .expect("exp");
    until_expired(exp).await;

    // A page's burst after expiry, spread over three instances: all 200, one refresh.
    let mut burst = JoinSet::new();
    for i in 0..30 {
        burst.spawn(items(&base(i % 3), &old_a).send());
    }
    let mut renewed = std::collections::HashSet::new();
    let mut renewed_jar = CookieJar::new();
    while let Some(resp) = burst.join_next().await {
        let resp = resp.expect("request task");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let access = resp
            .set_cookie("access_token")
            .expect("renewed cookie")
            .value;
        renewed.insert(access);
        renewed_jar.apply(&resp);
    }
    assert_eq!(
        renewed.len(),
        1,
        "the instances handed out different tokens"
    );
    // Session B renews on one instance only.
    let resp = items(&base(0), &old_b).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut renewed_b = CookieJar::new();
    renewed_b.apply(&resp);
    let stats = django.stats().await;
    assert_eq!(
        stats["refresh"]["calls"], 2,
        "one refresh per session: {stats}"
    );

    // A second later the old cookies arrive again, and Django never sees a refresh token
    // twice: session A on an instance that took part in its burst (its own reuse window),
    // session B on instances that never saw it (the sealed outcome in Redis).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resp = items(&base(2), &old_a).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = items(&base(2), &old_b).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = items(&base(1), &old_b).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.set_cookie("access_token").map(|c| c.value).as_deref(),
        renewed_b.get("access_token"),
        "instance 1 reused instance 0's refresh"
    );
    let stats = django.stats().await;
    assert_eq!(stats["refresh"]["calls"], 2, "{stats}");
    assert_eq!(stats["refresh"]["status"], json!({ "200": 2 }), "{stats}");
    for jar in [&renewed_jar, &renewed_b] {
        secrets.extend(["access_token", "refresh_token"].map(|n| jar.get(n).expect(n).to_owned()));
    }

    // A logout on one instance: the old access cookie is refused on the others within 1 s.
    let session_a = cookie_header(&renewed_jar);
    log_out(&instances[0].url(""), &session_a).await;
    let access_a = format!(
        "access_token={}",
        renewed_jar.get("access_token").expect("a")
    );
    for i in 1..3 {
        within_a_second("logout", || async {
            items(&base(i), &access_a).send().await.status == 401
        })
        .await;
    }

    // An operator revokes the user on one instance: refused on every instance within 1 s.
    let session_b = cookie_header(&renewed_b);
    assert_eq!(items(&base(2), &session_b).send().await.status, 200);
    let user_id = claims(renewed_b.get("access_token").expect("b"))["user_id"].to_string();
    instances[2].revoke_subject(user_id.trim_matches('"')).await;
    for i in 0..3 {
        within_a_second("subject revocation", || async {
            items(&base(i), &session_b).send().await.status == 401
        })
        .await;
    }

    redis.assert_no_token(Some(&heard), &secrets);
}
