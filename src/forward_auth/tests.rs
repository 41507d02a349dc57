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

#[test]
fn each_session_cookie_is_mirrored_in_its_own_header() {
    let session = crate::Config::from_toml_str(
        "[upstreams]\napp = \"http://127.0.0.1:9\"\n[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n",
    )
    .expect("valid")
    .session;
    let mut answer = headers(&[
        ("set-cookie", "access_token=a1; Path=/; HttpOnly"),
        ("set-cookie", "refresh_token=r1; Path=/; HttpOnly"),
        ("set-cookie", "access_token_x=other; Path=/"),
    ]);
    mirror_cookies(&mut answer, &session);
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
    let mut none = headers(&[("set-cookie", "theme=dark")]);
    mirror_cookies(&mut none, &session);
    assert!(!none.contains_key(X_AUTH_SET_COOKIE_ACCESS));
    assert!(!none.contains_key(X_AUTH_SET_COOKIE_REFRESH));
}
