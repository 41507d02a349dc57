//! Three real Portcullis processes sharing a real `redis-server`: the login limit counts
//! across them, a logout on one is obeyed by the others within a second, and a Redis outage
//! costs sharing, never service: signed-in users and new logins keep working, a logout made
//! meanwhile is pushed when Redis is back, and sharing resumes within ten seconds. Nothing
//! Redis holds contains a token.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{api, config, cookie_header, log_out, sign_in, PASSWORD, USER};
use crate::support::instance::Instance;
use crate::support::redis::RedisServer;
use crate::support::{backend, upstream, CookieJar, Req, TestKey};

/// Polls `check` every 20 ms until it holds, for `within` at most; returns how long it took.
async fn within<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that no key or value in Redis contains any of `secrets`.
pub(super) fn assert_no_token_in(redis: &RedisServer, secrets: &[String]) {
    let dump = redis.dump();
    assert!(!dump.is_empty(), "the instances stored nothing in Redis");
    for (key, value) in &dump {
        for secret in secrets {
            let needle = secret.as_bytes();
            let found = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
            assert!(
                !found(key) && !found(value),
                "Redis holds a token under {}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_limits_and_revocations_and_survive_redis() {
    let mut redis = RedisServer::start().await;
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let cluster = format!(
        "[login]\nattempts_per_minute = 6\n\n[cluster]\nredis = \"{}\"\nkey_prefix = \"it:\"\ntimeout = \"200ms\"\n",
        redis.url()
    );
    let toml = config(&key, &backend, &up, "", &cluster);
    let instances = Instance::start_connected::<3>(&toml).await;
    let base = |i: usize| instances[i].url("");
    let mut secrets = Vec::new();
    let mut remember = |jar: &CookieJar| {
        for name in ["access_token", "refresh_token"] {
            secrets.extend(jar.get(name).map(str::to_owned));
        }
    };

    // A logout on one instance is obeyed by the others within a second.
    let a = sign_in(&base(0)).await;
    remember(&a);
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

    // Redis goes away: every instance notices, and keeps serving with local state.
    let b = sign_in(&base(1)).await;
    remember(&b);
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
    remember(&c);
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

    assert_no_token_in(&redis, &secrets);
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
                .dump()
                .iter()
                .any(|(key, _)| key == b"portcullis:revoked")
        },
    )
    .await;
}
