//! `backend.session_check`: the backend's word on a session, asked at most once per
//! `session.check_every` per token, in both formats (a bearer GET, RFC 7662 introspection);
//! an ended session is refused like a revoked one; a backend that cannot be asked is
//! tolerated (`open`) or not (`closed`), and never asked once per request.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{api, clears_session, config, cookie_header, sign_in, USER};
use crate::support::proxy::proxy;
use crate::support::{backend, upstream, Backend, Resp, TestKey};

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
    let key = TestKey::new("HS256");
    for fail in ["open", "closed"] {
        let backend = backend(&key).run().await;
        backend.set_check_status(Some(503));
        let up = upstream().run().await;
        let proxy = proxy(&config(
            &key,
            &backend,
            &up,
            &check_toml(&backend.session_url(), "bearer"),
            &format!("[session]\ncheck_every = \"30s\"\ncheck_fail = \"{fail}\"\n"),
        ))
        .await;
        let minted = format!("access_token={}", backend.mint_access(USER, 600));
        for _ in 0..3 {
            let resp = api(&proxy.url(""), &minted).await;
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
            1,
            "{fail}: a backend that cannot answer is not asked on every request"
        );
        // A token confirmed once keeps its answer while the backend is away.
        backend.set_check_status(None);
        let confirmed = format!("access_token={}", backend.mint_access(USER, 600));
        assert_eq!(api(&proxy.url(""), &confirmed).await.status, 200);
        backend.set_check_status(Some(503));
        assert_eq!(api(&proxy.url(""), &confirmed).await.status, 200);
    }
}
