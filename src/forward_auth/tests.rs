use super::*;

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            HeaderName::try_from(*name).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    headers
}

#[test]
fn the_ingress_is_told_by_its_headers_and_two_conventions_are_refused() {
    type Case = (&'static [(&'static str, &'static str)], Option<Ingress>);
    let cases: [Case; 5] = [
        (&[("x-forwarded-uri", "/a")], Some(Ingress::Forwarded)),
        (&[("x-original-uri", "/a")], Some(Ingress::Original)),
        (
            &[("x-original-url", "https://a.test/a")],
            Some(Ingress::Original),
        ),
        (&[], Some(Ingress::Direct)),
        (
            &[("x-forwarded-uri", "/public"), ("x-original-uri", "/admin")],
            None,
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(Ingress::detect(&headers(lines)).ok(), want, "{lines:?}");
    }
}

/// Every refusal, as each ingress gets it.
#[test]
fn refusals_per_ingress() {
    // (the pipeline's error, Forwarded, Original, Direct)
    type Case = (fn() -> Error, u16, u16, u16);
    let cases: [Case; 9] = [
        (
            || Error::Unauthenticated {
                reason: "no token".into(),
                login: Some("/login?next=%2F".into()),
                clear_cookies: Vec::new(),
            },
            302,
            401,
            401,
        ),
        (
            || Error::Unauthenticated {
                reason: "no token".into(),
                login: None,
                clear_cookies: Vec::new(),
            },
            401,
            401,
            401,
        ),
        (|| Error::Forbidden("claims"), 403, 403, 403),
        (|| Error::NotFound, 403, 403, 403),
        (|| Error::BadRequest("ambiguous path"), 400, 403, 400),
        (|| Error::MethodNotAllowed, 405, 403, 405),
        (|| Error::BackendUnavailable("down".into()), 502, 401, 502),
        (|| Error::BackendTimeout, 504, 401, 504),
        (|| Error::Internal("bug".into()), 500, 401, 500),
    ];
    for (err, forwarded, original, direct) in cases {
        let status = |ingress| refusal(ingress, err()).status().as_u16();
        let got = (
            status(Ingress::Forwarded),
            status(Ingress::Original),
            status(Ingress::Direct),
        );
        assert_eq!(got, (forwarded, original, direct), "{}", err());
    }
}

fn session() -> Session {
    crate::Config::from_toml_str(
        "[upstreams]\napp = \"http://127.0.0.1:9\"\n[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n",
    )
    .expect("valid")
    .session
}

fn answer_with(status: u16, lines: &[(&str, &str)]) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    *response.headers_mut() = headers(lines);
    response
}

#[test]
fn each_session_cookie_is_mirrored_in_its_own_header() {
    let session = session();
    let cookies = [
        ("set-cookie", "access_token=a1; Path=/; HttpOnly"),
        ("set-cookie", "refresh_token=r1; Path=/; HttpOnly"),
        ("set-cookie", "access_token_x=other; Path=/"),
    ];
    let mut answer = answer_with(200, &cookies);
    mirror_cookies(Ingress::Forwarded, &mut answer, &session);
    let answer = answer.headers();
    assert_eq!(
        answer
            .get(X_AUTH_SET_COOKIE_ACCESS)
            .expect("access mirrored"),
        "access_token=a1; Path=/; HttpOnly"
    );
    assert_eq!(
        answer
            .get(X_AUTH_SET_COOKIE_REFRESH)
            .expect("refresh mirrored"),
        "refresh_token=r1; Path=/; HttpOnly"
    );
    let mut none = answer_with(200, &[("set-cookie", "theme=dark")]);
    mirror_cookies(Ingress::Forwarded, &mut none, &session);
    assert!(!none.headers().contains_key(X_AUTH_SET_COOKIE_ACCESS));
    assert!(!none.headers().contains_key(X_AUTH_SET_COOKIE_REFRESH));
}

/// A refusal that Traefik, Caddy or Envoy relays to the browser carries no token in a header
/// page script can read; nginx never relays an answer's headers and needs the copies.
#[test]
fn cookies_are_mirrored_on_a_refusal_only_for_nginx() {
    let session = session();
    for (ingress, status, mirrored) in [
        (Ingress::Forwarded, 403, false),
        (Ingress::Forwarded, 401, false),
        (Ingress::Forwarded, 302, false),
        (Ingress::Direct, 403, false),
        (Ingress::Direct, 200, true),
        (Ingress::Original, 403, true),
        (Ingress::Original, 401, true),
        (Ingress::Original, 200, true),
    ] {
        let mut answer = answer_with(status, &[("set-cookie", "access_token=a1; HttpOnly")]);
        mirror_cookies(ingress, &mut answer, &session);
        assert_eq!(
            answer.headers().contains_key(X_AUTH_SET_COOKIE_ACCESS),
            mirrored,
            "{ingress:?} {status}"
        );
    }
}

#[test]
fn the_original_url_is_read_strictly() {
    let good = [
        (
            "https://app.example.com/dashboard?x=1",
            "app.example.com",
            "/dashboard?x=1",
        ),
        ("http://App.Example.com:8080/", "App.Example.com:8080", "/"),
        ("http://[::1]:80/a", "[::1]:80", "/a"),
    ];
    for (url, host, target) in good {
        let (_, parsed, path) = original_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!((parsed.as_str(), path), (host, target), "{url}");
    }
    for url in [
        // nginx takes `#` in a Host: a loose parser reads host `x`, path `/`.
        "http://x#/dashboard/x",
        "http://x?/dashboard/x",
        "http://evil@app.example.com/dashboard",
        "http://app.example.com",
        "ftp://app.example.com/x",
        "/dashboard",
        "http:///dashboard",
        "http://app example.com/x",
    ] {
        assert!(original_url(url).is_err(), "{url:?} accepted");
    }
}

#[test]
fn identity_headers_from_the_client_are_refused_but_the_ingress_own_are_not() {
    let claims = [HeaderName::from_static("x-email")];
    for forged in [
        "x-user-id",
        "x_user_email",
        "x-auth-request-groups",
        "x_auth_request_email",
        "x-auth-token",
        "x-forwarded-user",
        "x_forwarded_for",
        "remote-user",
        "x-remote-user",
        "x-user",
        "x-email",
        "x_email",
        "x-rewrite-url",
    ] {
        let asked = headers(&[(forged, "root")]);
        assert!(
            refuse_client_identity(&asked, &claims).is_err(),
            "{forged} accepted"
        );
    }
    let ingress_own = headers(&[
        ("x-forwarded-for", "192.0.2.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-uri", "/"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-client-cert", "Hash=1"),
        ("x-real-ip", "192.0.2.1"),
        ("x-request-id", "1"),
        ("x-original-url", "https://app.example.com/"),
        ("x-auth-request-redirect", "/"),
        ("forwarded", "for=192.0.2.1"),
    ]);
    assert!(refuse_client_identity(&ingress_own, &claims).is_ok());
}
