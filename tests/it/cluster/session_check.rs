//! `backend.session_check`: the backend's word on a session, asked at most once per
//! `session.check_every` per token, in both formats (a bearer GET, RFC 7662 introspection);
//! an ended session is refused like a revoked one (its refresh cookie too) and not asked
//! about again; a backend that cannot be asked is tolerated (`open`) or not (`closed`), never
//! asked once per request, and a slow one never stalls a confirmed session; answers shared
//! between instances stand no longer than the backend gave them.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{api, clears_session, cluster_toml, config, cookie_header, sign_in, USER};
use crate::support::instance::Instance;
use crate::support::proxy::proxy;
use crate::support::redis::RedisServer;
use crate::support::{backend, upstream, Backend, Resp, TestKey, Upstream};

/// Polls `attempt` every 50 ms until it gives a response with `status` (5 s at most).
async fn eventually<F, Fut>(status: u16, mut attempt: F) -> Resp
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = attempt().await;
        if resp.status == status || Instant::now() > deadline {
            return resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fake backend with a bearer session check, and the configuration of an instance in front
/// of it (with `session`, more sections after it, and `jwt.leeway` as given).
async fn bearer_checked(session: &str, leeway: &str) -> (Backend, Upstream, String) {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let toml = config(
        &key,
        &backend,
        &up,
        &check_toml(&backend.session_url(), "bearer"),
        &format!("[session]\ncheck_every = \"1s\"\n{session}"),
    )
    .replace("leeway = \"0s\"", &format!("leeway = \"{leeway}\""));
    (backend, up, toml)
}

fn check_toml(url: &str, format: &str) -> String {
    format!(
        "session_check = {}\nsession_check_format = \"{format}\"\n",
        Value::from(url)
    )
}

async fn ended_sessions_are_obeyed(format: &str, url: impl Fn(&Backend) -> String) {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let proxy = proxy(&config(
        &key,
        &backend,
        &up,
        &check_toml(&url(&backend), format),
        "[session]\ncheck_every = \"1s\"\n",
    ))
    .await;
    let base = proxy.url("");

    // A token the backend just issued needs no asking.
    let jar = sign_in(&base).await;
    let session = cookie_header(&jar);
    assert_eq!(api(&base, &session).await.status, 200);
    assert_eq!(
        backend.session_checks(),
        0,
        "{format}: a fresh login was checked"
    );

    // A token this proxy never saw: asked once, however many requests carry it.
    let minted = format!("access_token={}", backend.mint_access(USER, 600));
    for _ in 0..5 {
        assert_eq!(api(&base, &minted).await.status, 200);
    }
    assert_eq!(backend.session_checks(), 1, "{format}");

    // The backend ends the user's sessions: obeyed within check_every, cookies cleared.
    backend.end_sessions(USER);
    let resp = eventually(401, || api(&base, &session)).await;
    assert_eq!(resp.status, 401, "{format}: {}", resp.text());
    assert!(clears_session(&resp), "{format}");
    let resp = eventually(401, || api(&base, &minted)).await;
    assert_eq!(resp.status, 401, "{format}");
    // Refused from now on without asking again (the session is revoked).
    let asked = backend.session_checks();
    for _ in 0..3 {
        assert_eq!(api(&base, &minted).await.status, 401);
    }
    assert_eq!(backend.session_checks(), asked, "{format}");
}

#[tokio::test]
async fn bearer_session_check() {
    ended_sessions_are_obeyed("bearer", Backend::session_url).await;
}

#[tokio::test]
async fn introspection_session_check() {
    ended_sessions_are_obeyed("introspection", Backend::introspect_url).await;
}

#[tokio::test]
async fn a_backend_that_cannot_be_asked_fails_open_or_closed() {
    for fail in ["open", "closed"] {
        let (backend, _up, toml) =
            bearer_checked(&format!("check_fail = \"{fail}\"\n"), "0s").await;
        let proxy = proxy(&toml).await;
        let base = proxy.url("");
        // A token the backend confirms while it can.
        let confirmed = format!("access_token={}", backend.mint_access(USER, 600));
        assert_eq!(api(&base, &confirmed).await.status, 200);
        assert_eq!(backend.session_checks(), 1);
        backend.set_check_status(Some(503));
        // A token it never confirmed, while it cannot: admitted or refused by check_fail,
        // and the failing backend is not asked again on each request.
        let minted = format!("access_token={}", backend.mint_access(USER, 600));
        for _ in 0..3 {
            let resp = api(&base, &minted).await;
            match fail {
                "open" => assert_eq!(resp.status, 200, "{}", resp.text()),
                _ => {
                    assert_eq!(resp.status, 502, "{}", resp.text());
                    assert!(resp.set_cookies().is_empty(), "the session was cleared");
                }
            }
        }
        assert_eq!(
            backend.session_checks(),
            2,
            "{fail}: a backend that cannot answer is not asked on every request"
        );
        // The confirmed token's answer ages past check_every: it keeps its last answer
        // while the backend is away, in both modes.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let resp = api(&base, &confirmed).await;
        assert_eq!(resp.status, 200, "{fail}: {}", resp.text());
    }
}

#[tokio::test]
async fn a_slow_session_check_never_stalls_a_confirmed_session() {
    let (backend, _up, toml) = bearer_checked("", "0s").await;
    let proxy = proxy(&toml).await;
    let base = proxy.url("");
    let session = cookie_header(&sign_in(&base).await);
    backend.set_check_delay(Some(Duration::from_secs(3)));
    // For twice check_every, the session's answer ages and is re-checked by a backend that
    // takes 3 s: no request waits on it.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        let sent = Instant::now();
        let resp = api(&base, &session).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(
            sent.elapsed() < Duration::from_millis(700),
            "a request waited {:?} on the session check",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(backend.session_checks() >= 1, "the session was re-checked");
    // A token never confirmed waits for the slow backend at most a second.
    let minted = format!("access_token={}", backend.mint_access(USER, 600));
    let sent = Instant::now();
    assert_eq!(api(&base, &minted).await.status, 200);
    assert!(
        sent.elapsed() < Duration::from_millis(1800),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn an_ended_session_is_asked_about_once_and_takes_its_refresh_cookie_along() {
    let (backend, _up, toml) = bearer_checked("refresh_ahead = \"0s\"\n", "30s").await;
    let proxy = proxy(&toml).await;
    let base = proxy.url("");
    backend.end_sessions(USER);
    // Expired, but within the leeway: it still verifies, and is asked about once.
    let access = backend.mint_access(USER, -5);
    let resp = api(&base, &format!("access_token={access}")).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(clears_session(&resp));
    assert_eq!(backend.session_checks(), 1);
    // Refused from now on without asking again, for as long as the token verifies.
    for _ in 0..3 {
        assert_eq!(
            api(&base, &format!("access_token={access}")).await.status,
            401
        );
    }
    assert_eq!(
        backend.session_checks(),
        1,
        "asked again about an ended session"
    );
    // The refresh cookie that came with an ended session cannot start a new one.
    let access = backend.mint_access(USER, 600);
    let refresh = backend.mint_refresh(USER);
    let resp = api(
        &base,
        &format!("access_token={access}; refresh_token={refresh}"),
    )
    .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(backend.session_checks(), 2);
    let resp = api(&base, &format!("refresh_token={refresh}")).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(backend.refreshes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_shared_between_instances_and_still_expire() {
    let redis = RedisServer::start().await;
    let (backend, _up, toml) =
        bearer_checked(&format!("\n{}", cluster_toml(&redis.url())), "0s").await;
    let instances = Instance::start_connected::<2>(&toml).await;
    let minted = format!("access_token={}", backend.mint_access(USER, 600));
    let at = |i: usize| {
        let base = instances[i].url("");
        let minted = minted.clone();
        async move { api(&base, &minted).await.status }
    };
    let started = Instant::now();
    let after = |ms: u64| tokio::time::sleep_until((started + Duration::from_millis(ms)).into());
    assert_eq!(at(0).await, 200);
    assert_eq!(backend.session_checks(), 1);
    // Each instance comes back just after its answer aged, when the other one took the
    // answer later: passed on with a fresh lifetime, an answer would live on for ever. It
    // stands only as long as the backend gave it, so the backend is asked again.
    after(900).await;
    assert_eq!(at(1).await, 200);
    assert_eq!(backend.session_checks(), 1, "the answer was not shared");
    after(1100).await;
    assert_eq!(at(0).await, 200);
    after(2000).await;
    assert_eq!(at(1).await, 200);
    after(2200).await;
    assert_eq!(at(0).await, 200);
    let asked = backend.session_checks();
    assert!(
        asked >= 2,
        "asked {asked} times in 2.2 s with check_every = 1s"
    );
    // The backend ends the session: obeyed on both instances within check_every (and the
    // time one check takes).
    backend.end_sessions(USER);
    let ended = Instant::now();
    for instance in &instances {
        let base = instance.url("");
        let resp = eventually(401, || api(&base, &minted)).await;
        assert_eq!(resp.status, 401, "{}", resp.text());
    }
    assert!(
        ended.elapsed() < Duration::from_millis(2500),
        "{:?}",
        ended.elapsed()
    );
}
