//! The refresh storm: many concurrent requests of a few sessions whose access
//! tokens all expired at once. Each session costs exactly one backend refresh call, however
//! many of its requests wait on it, and every request is answered as if nothing had expired.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;

use crate::support::backend::DEFAULT_USER as USER;
use crate::support::proxy::proxy;
use crate::support::{backend, upstream, Req, TestKey};

const SESSIONS: usize = 20;
const REQUESTS_PER_SESSION: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_costs_one_backend_call_per_session() {
    let key = TestKey::new("HS256");
    // The delay keeps each session's refresh in flight while its other requests arrive.
    let backend = backend(&key)
        .refresh_delay(Duration::from_millis(200))
        .run()
        .await;
    let up = upstream().run().await;
    let toml = format!(
        "[upstreams]\napp = {up}\n\n{jwt}leeway = \"0s\"\n\n{backend}timeout = \"5s\"\n\n\
         [session]\nrefresh_ahead = \"0s\"\n\n\
         [[routes]]\npath = \"/api/:path*\"\nauth = \"required\"\non_unauthenticated = \"status\"\nupstream = \"app\"\n",
        up = Value::from(up.url()),
        jwt = key.jwt_toml(),
        backend = backend.backend_toml(),
    );
    let proxy = proxy(&toml).await;

    let sessions: Vec<String> = (0..SESSIONS)
        .map(|_| {
            format!(
                "access_token={}; refresh_token={}",
                backend.mint_access(USER, -30),
                backend.mint_refresh(USER)
            )
        })
        .collect();
    let mut storm = JoinSet::new();
    for round in 0..REQUESTS_PER_SESSION {
        for (session, cookie) in sessions.iter().enumerate() {
            let request = Req::get(&proxy.url(&format!("/api/items/{session}/{round}")))
                .header("accept", "application/json")
                .cookie(cookie);
            storm.spawn(async move { (session, request.send().await) });
        }
    }

    let mut renewed: Vec<HashSet<String>> = vec![HashSet::new(); SESSIONS];
    let mut answered = 0;
    while let Some(result) = storm.join_next().await {
        let (session, resp) = result.expect("request task");
        assert_eq!(resp.status, 200, "session {session}: {}", resp.text());
        let cookie = resp
            .set_cookie("access_token")
            .expect("every answer carries the renewed access cookie");
        renewed[session].insert(cookie.value);
        answered += 1;
    }
    assert_eq!(answered, SESSIONS * REQUESTS_PER_SESSION);
    assert_eq!(
        backend.refreshes(),
        SESSIONS as u64,
        "exactly one backend refresh call per session"
    );
    for (session, tokens) in renewed.iter().enumerate() {
        assert_eq!(
            tokens.len(),
            1,
            "session {session}: its requests got different renewed tokens"
        );
    }
    let distinct: HashSet<&String> = renewed.iter().flatten().collect();
    assert_eq!(distinct.len(), SESSIONS, "each session got its own token");
    assert_eq!(up.requests(), SESSIONS * REQUESTS_PER_SESSION);
}
