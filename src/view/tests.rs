use super::*;

fn host(text: &str) -> Result<Host, &'static str> {
    Host::parse(HeaderValue::from_str(text).expect("header-safe test input"))
}

#[test]
fn hosts_parse_strictly() {
    let good: [(&str, &str, Option<u16>); 8] = [
        ("app.example.com", "app.example.com", None),
        ("App.Example.COM:8443", "App.Example.COM", Some(8443)),
        ("127.0.0.1:8080", "127.0.0.1", Some(8080)),
        ("[::1]:8080", "[::1]", Some(8080)),
        ("[2001:db8::1]", "[2001:db8::1]", None),
        ("localhost", "localhost", None),
        ("app.example.com.", "app.example.com.", None),
        ("my_host-1", "my_host-1", None),
    ];
    for (text, name, port) in good {
        let parsed = host(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((parsed.name(), parsed.port()), (name, port), "{text}");
        assert_eq!(parsed.as_str(), text);
    }
    let bad = [
        "",
        "evil@app.test",
        "user:pass@app.test:80",
        "app.test:",
        "app.test:99999",
        "app.test:8o",
        "app.test:80:80",
        "[::1",
        "[nope]:80",
        "app test",
        "app%2etest",
        ".app.test",
        "app..test",
        "app.test/path",
        "app.test\\x",
        ":80",
        // Found by the host fuzz target: a port no client means, or one spelt two ways.
        "apple.com:00000",
        "app.test:0",
        "app.test:080",
    ];
    for text in bad {
        assert!(host(text).is_err(), "{text:?} accepted");
    }
    // What the client is told.
    for (text, why) in [
        ("evil@app.test", "userinfo in the request's host"),
        ("user:pass@app.test:80", "userinfo in the request's host"),
        ("[::1]@app.test", "userinfo in the request's host"),
        ("app.test:99999", "malformed port in Host"),
        ("app.test:", "malformed port in Host"),
        ("app..test", "malformed Host"),
        ("", "empty Host"),
    ] {
        assert_eq!(host(text).err(), Some(why), "{text:?}");
    }
}

#[test]
fn the_matchable_host_drops_the_port_and_one_trailing_dot() {
    assert_eq!(
        host("Admin.Example.com.:443").expect("valid").matchable(),
        "Admin.Example.com"
    );
    assert_eq!(host("[::1]:80").expect("valid").matchable(), "[::1]");
}

fn parts(version: Version, uri: &str, hosts: &[&str]) -> Parts {
    let mut builder = http::Request::builder().version(version).uri(uri);
    for h in hosts {
        builder = builder.header(header::HOST, *h);
    }
    builder.body(()).expect("valid test request").into_parts().0
}

#[test]
fn the_host_of_a_request_follows_the_rfcs() {
    use Version as V;
    // (version, target, Host headers, the host, or None for a 400)
    let cases: [(V, &str, &[&str], Option<&str>); 13] = [
        (V::HTTP_11, "/x", &["app.test"], Some("app.test")),
        (V::HTTP_11, "/x", &["app.test:8080"], Some("app.test:8080")),
        (V::HTTP_11, "/x", &[], None),
        (V::HTTP_11, "/x", &["a.test", "b.test"], None),
        (V::HTTP_11, "/x", &["a.test", "a.test"], None),
        (V::HTTP_11, "/x", &["evil@app.test"], None),
        (V::HTTP_11, "/x", &["bad host"], None),
        // RFC 9112 §3.2.2: the absolute-form target's authority replaces Host.
        (
            V::HTTP_11,
            "http://app.test/x",
            &["evil.test"],
            Some("app.test"),
        ),
        (V::HTTP_11, "http://evil@app.test/x", &["app.test"], None),
        (V::HTTP_10, "/x", &[], None),
        // RFC 9113 §8.3.1: :authority wins over a host header.
        (
            V::HTTP_2,
            "http://app.test/x",
            &["evil.test"],
            Some("app.test"),
        ),
        (V::HTTP_2, "http://evil@app.test/x", &[], None),
        (V::HTTP_2, "/x", &["app.test"], Some("app.test")),
    ];
    for (version, target, hosts, want) in cases {
        let got = authority(&parts(version, target, hosts));
        match (want, got) {
            (Some(want), Ok(got)) => {
                assert_eq!(got.as_str(), want, "{version:?} {target} {hosts:?}")
            }
            (None, Err(Error::BadRequest(_))) => {}
            (want, got) => panic!("{version:?} {target} {hosts:?}: want {want:?}, got {got:?}"),
        }
    }
    assert!(authority(&parts(Version::HTTP_2, "/x", &["a.test", "b.test"])).is_err());
    assert!(authority(&parts(Version::HTTP_2, "/x", &[])).is_err());
}

#[test]
fn forwarded_host_and_proto_take_the_first_of_a_chain() {
    let mut headers = HeaderMap::new();
    assert_eq!(forwarded_host(&headers).expect("absent is fine"), None);
    headers.insert(
        X_FORWARDED_HOST,
        HeaderValue::from_static("App.test:8443, inner.test"),
    );
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("HTTPS, http"));
    let host = forwarded_host(&headers).expect("valid").expect("present");
    assert_eq!((host.name(), host.port()), ("App.test", Some(8443)));
    assert_eq!(forwarded_proto(&headers), Some(Scheme::Https));
    headers.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil@app.test"));
    assert!(forwarded_host(&headers).is_err());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
    assert_eq!(forwarded_proto(&headers), None);
}

#[test]
fn normalizing_keeps_the_original_query() {
    let cases = [
        ("/a/b?x=1", "/a/b", "/a/b?x=1"),
        ("/a/./b/../c?x=%2F", "/a/c", "/a/c?x=%2F"),
        ("//a//b", "/a/b", "/a/b"),
        ("/a?", "/a", "/a?"),
        ("/%7Euser", "/~user", "/~user"),
    ];
    for (raw, want_path, want_target) in cases {
        let mut slot = None;
        let (path, target) = normalize(raw, &mut slot, PathForm::Normalized).expect(raw);
        assert_eq!((path, target.as_ref()), (want_path, want_target), "{raw}");
        let mut slot = None;
        let (path, target) = normalize_shared(raw, &mut slot).expect(raw);
        assert_eq!((path, target.as_ref()), (want_path, want_target), "{raw}");
    }
    let mut slot = None;
    assert!(normalize("/a%2Fb", &mut slot, PathForm::Normalized).is_err());
    let mut slot = None;
    assert!(normalize_shared("/a%2Fb", &mut slot).is_err());
}
