//! Logout: both cookies cleared with the attributes they were set with, the backend told,
//! and a cross-site logout refused.

use super::*;

#[tokio::test]
async fn logout_clears_both_cookies_and_tells_the_backend() {
    let s = site(|b| b).await;
    let (login, jar) = s.signed_in().await;
    let access = jar.get("access_token").expect("access").to_owned();
    let refresh = jar.get("refresh_token").expect("refresh").to_owned();

    let resp = Req::post(&s.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(resp.location(), Some("/login"));
    assert_cleared(&resp, &login, "POST /logout");
    s.backend.wait_for_logouts(1).await;
    assert_eq!(
        s.backend.last_logout_authorization(),
        Some(format!("Bearer {access}"))
    );
    let mut after = jar.clone();
    after.apply(&resp);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(s.api().jar(&after).send().await.status, 401);

    // The backend revoked the refresh token it was told of: it cannot revive the session.
    let resp = s
        .api()
        .cookie(&format!("refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
}

#[tokio::test]
async fn logout_by_get_and_by_json() {
    let s = site(|b| b).await;
    let (login, jar) = s.signed_in().await;
    let resp = Req::get(&s.url("/logout")).jar(&jar).send().await;
    assert_eq!(resp.status, 303);
    assert_eq!(resp.location(), Some("/login"));
    assert_cleared(&resp, &login, "GET /logout");
    s.backend.wait_for_logouts(1).await;

    let (login, jar) = s.signed_in().await;
    let resp = Req::post(&s.url("/logout"))
        .header("accept", "application/json")
        .header("origin", &s.origin())
        .jar(&jar)
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({ "ok": true }));
    assert_cleared(&resp, &login, "JSON logout");
    s.backend.wait_for_logouts(2).await;

    // Without a session there is nothing to tell the backend, but the cookies are cleared.
    let resp = Req::post(&s.url("/logout")).send().await;
    assert_eq!(resp.status, 303);
    assert_cleared(&resp, &login, "logout without cookies");
    assert_eq!(s.backend.logouts(), 2);
}

#[tokio::test]
async fn a_cross_site_logout_post_is_refused() {
    let s = site(|b| b).await;
    let (_, jar) = s.signed_in().await;
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let resp = Req::post(&s.url("/logout"))
            .header(name, value)
            .jar(&jar)
            .send()
            .await;
        assert_error(&resp, 403, "forbidden", &format!("{name}: {value}"));
        assert_no_cookies(&resp, "cross-site logout");
    }
    assert_eq!(s.backend.logouts(), 0);
    // The session is intact.
    assert_eq!(s.api().jar(&jar).send().await.status, 200);
}

#[tokio::test]
async fn a_failing_backend_logout_does_not_block_the_logout() {
    // A logout endpoint that accepts connections and never answers, and one that refuses them.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hanging_url = format!("http://{}/auth/logout", hanging.local_addr().expect("addr"));
    let refused = site(|b| b.fault(Fault::Down)).await;
    let hangs = site_with(
        |b| b,
        Sections {
            logout_url: Some(hanging_url),
            ..Sections::default()
        },
    )
    .await;
    for s in [refused, hangs] {
        let (access, refresh) = (
            s.backend.mint_access(USER, 600),
            s.backend.mint_refresh(USER),
        );
        let started = Instant::now();
        let resp = Req::post(&s.url("/logout"))
            .cookie(&cookies(&access, &refresh))
            .send()
            .await;
        assert_eq!(resp.status, 303);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the logout waited {:?} for the backend",
            started.elapsed()
        );
        for name in ["access_token", "refresh_token"] {
            assert!(
                resp.set_cookie(name).is_some_and(|c| c.is_removal()),
                "{name}"
            );
        }
    }
}
