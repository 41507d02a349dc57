//! One backend refresh per refresh token across real Portcullis processes on a real
//! `redis-server`, in the ways it can go wrong: a refresh slower than the lease (the
//! oauth2-proxy bug), a Redis that stalls while others wait or while the outcome is
//! published, and a Redis that dies and comes back empty mid-refresh. The fake backend
//! rotates refresh tokens, so a second call with one token would be refused and end the
//! session; each test asserts it saw exactly one.

use std::time::Duration;

use tokio::task::JoinSet;

use super::{api, cluster_toml, config, expired_session, values_of};
use crate::support::instance::Instance;
use crate::support::redis::RedisServer;
use crate::support::{backend, upstream, Backend, Resp, TestKey, Upstream};

/// Instances in front of a backend whose refreshes take `delay`, with `backend.timeout`.
async fn cluster_of<const N: usize>(
    redis: &RedisServer,
    delay: Duration,
    timeout: &str,
) -> (Backend, Upstream, [Instance; N]) {
    let key = TestKey::new("HS256");
    let backend = backend(&key).refresh_delay(delay).run().await;
    let up = upstream().run().await;
    let extra = format!(
        "[session]\nrefresh_ahead = \"0s\"\n\n{}",
        cluster_toml(&redis.url())
    );
    // The helper's `timeout = "3s"` is replaced by the one these tests need.
    let toml = config(&key, &backend, &up, "", &extra)
        .replace("timeout = \"3s\"", &format!("timeout = \"{timeout}\""));
    let instances = Instance::start_connected::<N>(&toml).await;
    (backend, up, instances)
}

/// Sends the same cookies to `base` in the background.
fn send(requests: &mut JoinSet<Resp>, base: String, cookies: &str) {
    let cookies = cookies.to_owned();
    requests.spawn(async move { api(&base, &cookies).await });
}

/// Every response is 200 with the same renewed tokens; returns them.
async fn all_renewed_alike(mut requests: JoinSet<Resp>) -> Vec<String> {
    let mut renewed = std::collections::HashSet::new();
    while let Some(resp) = requests.join_next().await {
        let resp = resp.expect("request task");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let cookie = |name: &str| resp.set_cookie(name).expect("renewed").value;
        renewed.insert(vec![cookie("access_token"), cookie("refresh_token")]);
    }
    assert_eq!(
        renewed.len(),
        1,
        "the instances handed out different tokens"
    );
    renewed.into_iter().next().expect("one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_slower_than_the_lease_is_made_once_across_instances() {
    let redis = RedisServer::start().await;
    let (backend, _up, instances) = cluster_of::<3>(&redis, Duration::from_secs(7), "10s").await;
    let session = expired_session(&backend);
    let mut requests = JoinSet::new();
    send(&mut requests, instances[0].url(""), &session);
    backend.wait_for_refreshes(1).await;
    send(&mut requests, instances[1].url(""), &session);
    // Past the lease (6 s): had it not been renewed, this one would claim and call again.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    send(&mut requests, instances[2].url(""), &session);
    all_renewed_alike(requests).await;
    assert_eq!(backend.refreshes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_never_makes_a_second_instance_refresh() {
    let redis = RedisServer::start().await;
    let heard = redis.record_pubsub();
    let (backend, _up, instances) =
        cluster_of::<3>(&redis, Duration::from_millis(1500), "5s").await;
    let session = expired_session(&backend);
    let mut requests = JoinSet::new();
    send(&mut requests, instances[0].url(""), &session);
    backend.wait_for_refreshes(1).await;
    // The second instance sees the claim held and waits.
    send(&mut requests, instances[1].url(""), &session);
    // Redis stalls (a fork, a slow command) around the moment the outcome is published:
    // the waiter's looks, the holder's publish and a newcomer's claim all go unanswered for
    // longer than cluster.timeout, but not long enough for Redis to count as down.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    redis.pause(Duration::from_millis(800));
    send(&mut requests, instances[2].url(""), &session);
    let mut secrets = all_renewed_alike(requests).await;
    assert_eq!(backend.refreshes(), 1);
    // A second later, with the old cookies, anywhere: the shared outcome, no second call.
    for instance in &instances {
        assert_eq!(api(&instance.url(""), &session).await.status, 200);
    }
    assert_eq!(backend.refreshes(), 1);
    // The outcome went through Redis sealed: no token there, nor in what was published.
    secrets.extend(values_of(&session));
    redis.assert_no_token(Some(&heard), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_mid_refresh_costs_no_second_refresh() {
    let mut redis = RedisServer::start().await;
    let (backend, _up, instances) = cluster_of::<2>(&redis, Duration::from_secs(2), "5s").await;
    let session = expired_session(&backend);
    let mut requests = JoinSet::new();
    send(&mut requests, instances[0].url(""), &session);
    backend.wait_for_refreshes(1).await;
    send(&mut requests, instances[1].url(""), &session);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis dies with the claim, and comes back empty before the refresh ends.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    // The holder publishes its outcome once Redis takes it; the waiter never calls.
    all_renewed_alike(requests).await;
    assert_eq!(backend.refreshes(), 1);
    for instance in &instances {
        instance.wait_connected(true).await;
    }
    // The outcome reached the new Redis (sealed), for an instance that did not wait on it.
    let outcome = redis
        .contents()
        .into_iter()
        .any(|(key, _)| key.starts_with(b"it:refresh:") && !key.ends_with(b":lock"));
    assert!(outcome, "{:?}", redis.contents());
}
