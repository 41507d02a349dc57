//! Real Portcullis processes sharing a real `redis-server`: the login limit counts across
//! them, a logout on one is obeyed by the others within a second, and a Redis outage costs
//! sharing, never service: signed-in users and new logins keep working, a logout made
//! meanwhile is pushed when Redis is back, and sharing resumes within ten seconds. A large
//! revocation set is loaded, and a connection cut without a reset is replaced. Nothing Redis
//! holds, and nothing published on it, contains a token.

use std::time::Duration;

use serde_json::json;

use super::{
    api, cluster_toml, config, cookie_header, expired_session, log_out, secrets_of, sign_in,
    values_of, within, PASSWORD, USER,
};
use crate::support::cutter::Cutter;
use crate::support::instance::Instance;
use crate::support::redis::{find_secrets, RedisServer};
use crate::support::{backend, upstream, Req, TestKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_limits_and_revocations_and_survive_redis() {
    let mut redis = RedisServer::start().await;
    let heard = redis.record_pubsub();
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let extra = format!(
        "[login]\nattempts_per_minute = 6\n\n[session]\nrefresh_ahead = \"0s\"\n\n{}",
        cluster_toml(&redis.url())
    );
    let toml = config(&key, &backend, &up, "", &extra);
    let instances = Instance::start_connected::<3>(&toml).await;
    let base = |i: usize| instances[i].url("");
    let mut secrets = Vec::new();

    // A logout on one instance is obeyed by the others within a second.
    let a = sign_in(&base(0)).await;
    secrets.extend(secrets_of(&a));
    let session_a = cookie_header(&a);
    for i in 0..3 {
        assert_eq!(api(&base(i), &session_a).await.status, 200);
    }
    log_out(&instances[0].url(""), &session_a).await;
    for i in 1..3 {
        let took = within(Duration::from_secs(1), "logout seen elsewhere", || async {
            api(&base(i), &session_a).await.status == 401
        })
        .await;
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    // A refresh on one instance, reused on another: its outcome passes through Redis.
    let expired = expired_session(&backend);
    secrets.extend(values_of(&expired));
    let resp = api(&base(0), &expired).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let renewed = resp.set_cookie("access_token").expect("renewed").value;
    secrets.push(renewed.clone());
    secrets.extend(resp.set_cookie("refresh_token").map(|c| c.value));
    let resp = api(&base(1), &expired).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.set_cookie("access_token").map(|c| c.value),
        Some(renewed)
    );
    assert_eq!(backend.refreshes(), 1);

    // `portcullis explain` reads the shared revocations and names the token revoked.
    let explained = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("explain")
        .arg("--config")
        .arg(instances[1].config_path())
        .args(["--cookie", &session_a, "GET", "/api/items"])
        .output()
        .expect("run portcullis explain");
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(explained.status.success(), "{text}");
    assert!(text.contains("REVOKED"), "{text}");
    assert!(text.contains("401"), "{text}");

    // Everything Redis holds now (revocations, the refresh outcome) and everything published
    // so far: no token in any form.
    redis.assert_no_token(Some(&heard), &secrets);

    // Redis goes away: every instance notices, and keeps serving with local state.
    let b = sign_in(&base(1)).await;
    secrets.extend(secrets_of(&b));
    let session_b = cookie_header(&b);
    redis.kill();
    for instance in &instances {
        instance.wait_connected(false).await;
    }
    for i in 0..3 {
        assert_eq!(
            api(&base(i), &session_b).await.status,
            200,
            "signed-in user, instance {i}"
        );
    }
    let c = sign_in(&base(2)).await;
    secrets.extend(secrets_of(&c));
    let session_c = cookie_header(&c);
    assert_eq!(
        api(&base(0), &session_c).await.status,
        200,
        "login during the outage"
    );
    // A logout during the outage holds on its own instance at once...
    log_out(&instances[2].url(""), &session_c).await;
    assert_eq!(api(&base(2), &session_c).await.status, 401);
    assert!(instances[0].log().contains("Redis unreachable"));
    // ...and an operator is told that only this instance knows yet.
    let answer = instances[1].revoke_subject("nobody@example.com").await;
    assert_eq!(answer["shared"], false, "{answer}");

    // ...and everywhere once Redis is back (it comes back empty: the instances refill it).
    redis.restart().await;
    let took = within(Duration::from_secs(10), "sharing resumes", || async {
        let mut all = true;
        for instance in &instances {
            all &= instance.metric("portcullis_cluster_connected").await == Some(1.0);
        }
        all
    })
    .await;
    assert!(took < Duration::from_secs(10));
    for i in 0..2 {
        within(
            Duration::from_secs(2),
            "the outage's logout shared",
            || async { api(&base(i), &session_c).await.status == 401 },
        )
        .await;
    }
    assert_eq!(api(&base(0), &session_b).await.status, 200);
    let answer = instances[1].revoke_subject("nobody@example.com").await;
    assert_eq!(answer["shared"], true, "{answer}");

    // The login limit counts across instances: 6 a minute in all, not 6 each.
    let mut refused_at = None;
    for attempt in 1..=8 {
        let resp = Req::post(&instances[attempt % 3].url("/login"))
            .json(json!({ "email": USER, "password": "wrong" }))
            .send()
            .await;
        if resp.status == 429 {
            refused_at = Some(attempt);
            assert!(resp.header("retry-after").is_some());
            break;
        }
        assert_eq!(resp.status, 401, "attempt {attempt}");
    }
    assert_eq!(
        refused_at,
        Some(7),
        "the seventh attempt of the minute is refused"
    );
    let resp = Req::post(&instances[0].url("/login"))
        .json(json!({ "email": USER, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 429, "the limit holds on every instance");

    // The cluster's metrics are described like every other family.
    let metrics = Req::get(&instances[0].admin_url("/metrics"))
        .send()
        .await
        .text();
    for family in [
        "portcullis_cluster_connected",
        "portcullis_cluster_call_duration_seconds",
        "portcullis_cluster_call_failures_total",
        "portcullis_revocations",
    ] {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "{family} has no # HELP line:\n{metrics}"
        );
    }

    redis.assert_no_token(Some(&heard), &secrets);
}

#[tokio::test]
async fn the_token_search_finds_tokens_in_any_form() {
    use base64::Engine as _;
    let redis = RedisServer::start().await;
    let heard = redis.record_pubsub();
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let tokens: Vec<String> = (0..5).map(|_| backend.mint_access(USER, 600)).collect();
    let signature = |token: &str| token.rsplit('.').next().expect("a JWT").to_owned();
    let mut conn = redis.connection().expect("connect");
    let plant = |conn: &mut redis::Connection, args: &[&str]| {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        let _: redis::Value = command.query(conn).expect("plant");
    };
    // In clear inside a long JSON value (DUMP would compress it out of sight), base64url in
    // a hash, the signature alone in a sorted set, base64 in a published message, and in a key.
    let json = format!(
        "{{\"access\":\"{}\",\"padding\":\"{}\"}}",
        tokens[0],
        "x".repeat(100)
    );
    plant(&mut conn, &["SET", "it:a", &json]);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tokens[1]);
    plant(&mut conn, &["HSET", "it:b", "field", &url]);
    plant(&mut conn, &["ZADD", "it:c", "1", &signature(&tokens[2])]);
    let std = base64::engine::general_purpose::STANDARD.encode(&tokens[3]);
    plant(&mut conn, &["PUBLISH", "it:channel", &std]);
    plant(&mut conn, &["SET", &format!("it:{}", tokens[4]), "x"]);
    within(Duration::from_secs(2), "the message heard", || async {
        !heard.messages().is_empty()
    })
    .await;
    let places = redis.places(Some(&heard));
    for (i, token) in tokens.iter().enumerate() {
        let found = find_secrets(&places, std::slice::from_ref(token));
        assert!(!found.is_empty(), "token {i} was not found: {places:?}");
    }
    let innocent = backend.mint_access(USER, 600);
    assert!(find_secrets(&places, &[innocent]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let pki = crate::support::pki::Pki::new();
    let (cert, key_file) = pki.issue("redis", &["127.0.0.1", "localhost"]);
    let redis = RedisServer::start_with_tls(cert, key_file).await;
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let cluster = format!(
        "[cluster]\nredis = \"{}\"\nca_file = {}\n",
        redis.tls_url(),
        serde_json::Value::from(pki.ca_path().to_string_lossy())
    );
    let [instance] =
        Instance::start_connected::<1>(&config(&key, &backend, &up, "", &cluster)).await;
    // A logout's revocation travels over TLS into Redis (read back on the plain port).
    let session = cookie_header(&sign_in(&instance.url("")).await);
    let resp = Req::post(&instance.url("/logout"))
        .cookie(&session)
        .send()
        .await;
    assert_eq!(resp.status, 303);
    within(
        Duration::from_secs(2),
        "the revocation reaches Redis",
        || async {
            redis
                .contents()
                .iter()
                .any(|(key, _)| key == b"portcullis:revoked")
        },
    )
    .await;
}

/// Revocation records for `redis-server`, written straight into the shared set.
fn preload_revocations(redis: &RedisServer, count: usize) {
    let mut conn = redis.connection().expect("connect");
    let until = crate::support::keys::now() + 3600;
    for chunk in 0..count.div_ceil(10_000) {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("it:revoked");
        for i in chunk * 10_000..((chunk + 1) * 10_000).min(count) {
            // Ids differ in their first half: the in-memory set keys on it.
            zadd.arg(until).arg(format!("t:{i:032x}{:032x}:{until}", 0));
        }
        let _: i64 = zadd.query(&mut conn).expect("ZADD");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_revocation_set_is_loaded_and_a_logout_meanwhile_reaches_every_instance() {
    const LOADED: usize = 100_000;
    let redis = RedisServer::start().await;
    preload_revocations(&redis, LOADED);
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let toml = config(&key, &backend, &up, "", &cluster_toml(&redis.url()));
    // The first instance loads the set in pages (one call for all of it would miss the
    // 200 ms deadline every time, and the instance would never share again).
    let first = Instance::start(&toml).await;
    let session = cookie_header(&sign_in(&first.url("")).await);
    // A logout while it may still be loading.
    log_out(&first.url(""), &session).await;
    within(Duration::from_secs(20), "the whole set loaded", || async {
        first.metric("portcullis_revocations").await >= Some(LOADED as f64)
    })
    .await;
    let [second] = Instance::start_connected::<1>(&toml).await;
    within(Duration::from_secs(20), "the logout shared", || async {
        api(&second.url(""), &session).await.status == 401
    })
    .await;
    first.wait_connected(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_redis_cut_without_a_reset_is_replaced() {
    let redis = RedisServer::start().await;
    let cutter = Cutter::start(([127, 0, 0, 1], redis.port()).into()).await;
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let through = format!("redis://{}/0", cutter.addr());
    let [behind] =
        Instance::start_connected::<1>(&config(&key, &backend, &up, "", &cluster_toml(&through)))
            .await;
    let [direct] = Instance::start_connected::<1>(&config(
        &key,
        &backend,
        &up,
        "",
        &cluster_toml(&redis.url()),
    ))
    .await;
    // The partition: every connection of `behind` to Redis goes silent, nothing is reset.
    cutter.cut();
    // A logout elsewhere: `behind` must hear of it on a new subscription.
    let session = cookie_header(&sign_in(&direct.url("")).await);
    assert_eq!(api(&behind.url(""), &session).await.status, 200);
    log_out(&direct.url(""), &session).await;
    within(
        Duration::from_secs(8),
        "the logout heard behind the cut",
        || async { api(&behind.url(""), &session).await.status == 401 },
    )
    .await;
    behind.wait_connected(true).await;
    // Its commands work again too: the login limit is shared.
    let resp = Req::post(&behind.url("/login"))
        .json(json!({ "email": USER, "password": PASSWORD }))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}
