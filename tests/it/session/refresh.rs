//! Transparent renewal: once per session however many requests wait on it, rejected or
//! unavailable backends, and the guest page that must not spend the refresh token.

use super::*;

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_request_proceeds() {
    let s = site(|b| b.access_ttl(900)).await;
    for (what, request) in [("api", s.api()), ("page", s.page())] {
        let (expired, refresh) = s.expired_session();
        let before = s.backend.refreshes();
        let resp = request.cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        assert_eq!(s.backend.refreshes(), before + 1, "{what}");
        assert_eq!(
            s.backend
                .last_refresh_body()
                .map(|b| serde_json::from_str::<Value>(&b).ok()),
            Some(Some(json!({ "refresh_token": refresh }))),
            "{what}"
        );
        let access = resp.set_cookie("access_token").expect("new access cookie");
        assert_ne!(access.value, expired, "{what}");
        s.key.verify(&access.value).expect("a valid new token");
        assert_eq!(access.max_age(), Some(900), "{what}");
        assert!(access.has("HttpOnly") && access.has("Secure"), "{what}");
        let new_refresh = resp
            .set_cookie("refresh_token")
            .expect("rotated refresh cookie");
        assert_ne!(new_refresh.value, refresh, "{what}");
        assert!(!new_refresh.is_removal(), "{what}");
        // The request went upstream with the NEW token.
        assert_eq!(
            s.last_bearer(),
            Some(format!("Bearer {}", access.value)),
            "{what}"
        );

        // The new cookies make a working session without another refresh.
        let mut jar = CookieJar::new();
        jar.apply(&resp);
        let again = s.api().jar(&jar).send().await;
        assert_eq!(again.status, 200, "{what}");
        assert_no_cookies(&again, what);
        assert_eq!(s.backend.refreshes(), before + 1, "{what}");
    }
}

#[tokio::test]
async fn a_lapsed_access_cookie_is_renewed_from_the_refresh_cookie() {
    let s = site(|b| b).await;
    let (_, refresh) = s.expired_session();
    let resp = s
        .api()
        .cookie(&format!("refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.backend.refreshes(), 1);
    let access = resp.set_cookie("access_token").expect("access cookie");
    assert_eq!(s.last_bearer(), Some(format!("Bearer {}", access.value)));
}

#[tokio::test]
async fn a_token_within_refresh_ahead_is_renewed() {
    let s = site_with(
        |b| b,
        Sections {
            session: "refresh_ahead = \"60s\"\n".to_owned(),
            ..Sections::default()
        },
    )
    .await;
    let refresh = s.backend.mint_refresh(USER);
    let fresh = s.backend.mint_access(USER, 300);
    let resp = s.api().cookie(&cookies(&fresh, &refresh)).send().await;
    assert_eq!(resp.status, 200);
    assert_no_cookies(&resp, "a token far from expiry");
    assert_eq!(s.backend.refreshes(), 0);
    assert_eq!(s.last_bearer(), Some(format!("Bearer {fresh}")));

    let expiring = s.backend.mint_access(USER, 30);
    let resp = s.api().cookie(&cookies(&expiring, &refresh)).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(s.backend.refreshes(), 1);
    let access = resp.set_cookie("access_token").expect("renewed");
    assert_ne!(access.value, expiring);
    assert_eq!(s.last_bearer(), Some(format!("Bearer {}", access.value)));
}

#[tokio::test]
async fn renewal_ahead_of_expiry_is_best_effort() {
    // The backend is down, but the current token is still good: the request goes through.
    let s = site_with(
        |b| b.fault(Fault::Down),
        Sections {
            session: "refresh_ahead = \"60s\"\n".to_owned(),
            ..Sections::default()
        },
    )
    .await;
    let expiring = s.backend.mint_access(USER, 30);
    let resp = s
        .api()
        .cookie(&cookies(&expiring, "some-refresh-token"))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_no_cookies(&resp, "failed renewal ahead of expiry");
    assert_eq!(s.last_bearer(), Some(format!("Bearer {expiring}")));
}

#[tokio::test]
async fn concurrent_requests_of_one_session_share_one_refresh() {
    let s = site(|b| b.refresh_delay(Duration::from_millis(300))).await;
    let (expired, refresh) = s.expired_session();
    let cookie = cookies(&expired, &refresh);
    let mut set = JoinSet::new();
    for i in 0..20 {
        let request = if i % 2 == 0 { s.api() } else { s.page() };
        set.spawn(request.cookie(&cookie).send());
    }
    let mut tokens = Vec::new();
    while let Some(result) = set.join_next().await {
        let resp = result.expect("request task");
        assert_eq!(resp.status, 200, "{}", resp.text());
        tokens.push(
            resp.set_cookie("access_token")
                .expect("renewed cookie")
                .value,
        );
    }
    assert_eq!(
        s.backend.refreshes(),
        1,
        "one backend call for the whole burst"
    );
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every response carries the same new token");
    let bearers: Vec<_> =
        s.up.all()
            .iter()
            .map(|r| r.header("authorization").map(str::to_owned))
            .collect();
    assert_eq!(bearers.len(), 20);
    assert!(bearers
        .iter()
        .all(|b| b.as_deref() == Some(&*format!("Bearer {}", tokens[0]))));

    // A straggler with the old cookies (sent before the browser stored the new ones) reuses
    // the result: a rotating backend would take a second use as token theft.
    let resp = s.api().cookie(&cookie).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.backend.refreshes(), 1);
}

#[tokio::test]
async fn a_rejected_refresh_ends_the_session() {
    let s = site(|b| b).await;
    let expired = s.backend.mint_access(USER, -30);
    let cookie = cookies(&expired, "revoked-or-unknown");
    let (login, _) = s.signed_in().await;

    let resp = s.api().cookie(&cookie).send().await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    assert_cleared(&resp, &login, "api");

    let resp = s.page().cookie(&cookie).send().await;
    assert_eq!(resp.status, 302);
    assert_eq!(resp.location(), Some("/login?next=%2Fdashboard"));
    assert_cleared(&resp, &login, "page");

    // Only refresh cookie, rejected: the same.
    let resp = s
        .api()
        .cookie("refresh_token=revoked-or-unknown")
        .send()
        .await;
    assert_eq!(resp.status, 401);
    assert_cleared(&resp, &login, "lapsed access cookie");
    assert!(s.backend.refreshes() >= 1);
    assert_eq!(s.up.requests(), 0);
}

#[tokio::test]
async fn a_refresh_backend_that_is_down_keeps_the_cookies() {
    for (what, fault, api_status) in [
        ("down", Fault::Down, 502),
        ("slow", Fault::Slow(Duration::from_secs(10)), 504),
        ("500", Fault::Status(500), 502),
        ("html", Fault::Html, 502),
        ("unverifiable token", Fault::BadToken, 502),
        ("token with ; and space", Fault::WeirdToken, 502),
    ] {
        let s = site_with(
            |b| b.fault(fault),
            Sections {
                backend: "timeout = \"300ms\"\n".to_owned(),
                ..Sections::default()
            },
        )
        .await;
        let (expired, refresh) = s.expired_session();
        let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, api_status, "{what}: {}", resp.text());
        assert_no_cookies(&resp, what);

        let resp = s.page().cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, 302, "{what}");
        assert_eq!(resp.location(), Some("/login?next=%2Fdashboard"), "{what}");
        assert_no_cookies(&resp, what);
        assert_eq!(s.up.requests(), 0, "{what}");
    }
}

#[tokio::test]
async fn a_failed_refresh_is_not_reused() {
    // A backend error is transient: the next request asks again (a rejection is final).
    let s = site(|b| b.fault(Fault::Status(500))).await;
    let (expired, refresh) = s.expired_session();
    for n in 1..=2 {
        let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
        assert_eq!(resp.status, 502);
        assert_eq!(s.backend.refreshes(), n);
    }
}

#[tokio::test]
async fn a_refresh_outlives_a_caller_that_went_away() {
    let s = site(|b| b.refresh_delay(Duration::from_millis(500))).await;
    let (expired, refresh) = s.expired_session();
    let cookie = cookies(&expired, &refresh);
    // The browser navigates away while the refresh is in the air.
    let gone = s
        .api()
        .cookie(&cookie)
        .timeout(Duration::from_millis(100))
        .try_send()
        .await;
    assert!(gone.is_err(), "the backend answered within 100 ms");
    s.backend.wait_for_refreshes(1).await;
    // The next request of the session gets the result of that call, not a second one that
    // a rotating backend would take for the reuse of a spent refresh token.
    let resp = s.api().cookie(&cookie).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.set_cookie("access_token").is_some());
    assert_eq!(s.backend.refreshes(), 1);
}

#[tokio::test]
async fn the_guest_login_page_does_not_spend_the_refresh_token() {
    let s = site(|b| b).await;
    let (expired, refresh) = s.expired_session();
    // A redirect away from the login page could not carry renewed cookies: show the page.
    let resp = Req::get(&s.url("/login"))
        .header("accept", "text/html")
        .cookie(&cookies(&expired, &refresh))
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(s.backend.refreshes(), 0);
    assert_no_cookies(&resp, "guest page");
    // The session is still good for the pages that need it.
    let resp = s.page().cookie(&cookies(&expired, &refresh)).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(s.backend.refreshes(), 1);
}

#[tokio::test]
async fn auth_me_renews_and_reports_a_backend_outage() {
    let s = site(|b| b).await;
    let (expired, refresh) = s.expired_session();
    let resp = Req::get(&s.url("/auth/me"))
        .cookie(&cookies(&expired, &refresh))
        .send()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["email"], USER);
    assert!(resp.set_cookie("access_token").is_some());
    assert_eq!(s.backend.refreshes(), 1);

    let s = site(|b| b.fault(Fault::Down)).await;
    let (expired, refresh) = s.expired_session();
    let resp = Req::get(&s.url("/auth/me"))
        .cookie(&cookies(&expired, &refresh))
        .send()
        .await;
    assert_error(&resp, 502, "backend_unavailable", "/auth/me, backend down");
    assert_no_cookies(&resp, "/auth/me, backend down");
    let resp = Req::get(&s.url("/auth/me")).send().await;
    assert_eq!(resp.status, 401);
}

#[tokio::test]
async fn the_refresh_cookie_is_replaced_only_by_a_new_refresh_token() {
    let s = site(|b| b.rotate_refresh(false)).await;
    let (expired, refresh) = s.expired_session();
    let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.set_cookie("access_token").is_some());
    assert!(
        resp.set_cookie("refresh_token").is_none(),
        "{:?}",
        resp.header_all("set-cookie")
    );

    // SimpleJWT answers a refresh with a new access token only, too (rotation off).
    let s = site_with(
        |b| {
            b.shape(Shape::SimpleJwt)
                .refresh_field("refresh")
                .rotate_refresh(false)
        },
        Sections {
            jwt: format!("{JWT}claims = {{ token_type = \"access\" }}\n"),
            ..Sections::default()
        },
    )
    .await;
    let (expired, refresh) = s.expired_session();
    let resp = s.api().cookie(&cookies(&expired, &refresh)).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.backend
            .last_refresh_body()
            .map(|b| serde_json::from_str::<Value>(&b).ok()),
        Some(Some(json!({ "refresh": refresh })))
    );
    assert!(resp.set_cookie("access_token").is_some());
    assert!(resp.set_cookie("refresh_token").is_none());
}
