use http_body_util::BodyExt;

use super::*;

async fn render(error: Error) -> (u16, Option<String>, Option<String>, String) {
    let response = error.into_response();
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &HeaderValue| v.to_str().expect("ascii").to_owned())
    };
    let (location, www) = (header(LOCATION), header(WWW_AUTHENTICATE));
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        location,
        www,
        String::from_utf8(body.to_vec()).expect("utf8"),
    )
}

#[tokio::test]
async fn mapping_table() {
    let unauthenticated = |login: Option<&str>| Error::Unauthenticated {
        reason: "no token".to_owned(),
        login: login.map(str::to_owned),
        clear_cookies: Vec::new(),
    };
    let cases: Vec<(Error, u16, &str)> = vec![
        (Error::BadRequest("bad path"), 400, "bad_request"),
        (Error::MethodNotAllowed, 405, "method_not_allowed"),
        (Error::NotFound, 404, "not_found"),
        (Error::PayloadTooLarge, 413, "payload_too_large"),
        (Error::HeadersTooLarge, 431, "headers_too_large"),
        (Error::UnsupportedMediaType, 415, "unsupported_media_type"),
        (Error::Forbidden("cross-site request"), 403, "forbidden"),
        (unauthenticated(None), 401, "unauthenticated"),
        (
            Error::TooManyRequests { retry_after: 30 },
            429,
            "too_many_requests",
        ),
        (
            Error::UpstreamUnavailable("refused".into()),
            502,
            "upstream_unavailable",
        ),
        (Error::UpstreamTimeout, 504, "upstream_timeout"),
        (
            Error::BackendUnavailable("garbage".into()),
            502,
            "backend_unavailable",
        ),
        (Error::BackendTimeout, 504, "backend_unavailable"),
        (Error::Internal("bug".into()), 500, "internal_error"),
    ];
    for (error, status, code) in cases {
        let (got_status, _, _, body) = render(error).await;
        assert_eq!(got_status, status, "{code}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json body");
        assert_eq!(json["error"], code);
    }
}

#[tokio::test]
async fn unauthenticated_forms() {
    let (status, location, www, _) = render(Error::Unauthenticated {
        reason: "expired".into(),
        login: Some("/login?next=%2Fdashboard".into()),
        clear_cookies: Vec::new(),
    })
    .await;
    assert_eq!(
        (status, location.as_deref(), www),
        (302, Some("/login?next=%2Fdashboard"), None)
    );
    let (status, location, www, _) = render(Error::Unauthenticated {
        reason: "expired".into(),
        login: None,
        clear_cookies: Vec::new(),
    })
    .await;
    assert_eq!(
        (status, location, www.as_deref()),
        (401, None, Some("Bearer"))
    );
}

#[tokio::test]
async fn details_never_reach_the_client() {
    let (_, _, _, body) = render(Error::UpstreamUnavailable(
        "connect 10.0.0.7:5432 refused".into(),
    ))
    .await;
    assert!(!body.contains("10.0.0.7"), "{body}");
}
