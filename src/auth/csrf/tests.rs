use http::header::HeaderValue;

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn site() -> Origin {
    Origin::parse("https://app.example.com").expect("origin")
}

fn refused(pairs: &[(&'static str, &'static str)], allowed: &[Origin]) -> bool {
    matches!(
        check(&headers(pairs), Some(&site()), allowed),
        Verdict::Refuse(_)
    )
}

#[test]
fn origins_parse_to_scheme_host_and_port() {
    let same = [
        "https://app.example.com",
        "https://APP.example.com",
        "HTTPS://app.example.com:443",
    ];
    for text in same {
        assert_eq!(Origin::parse(text), Some(site()), "{text}");
    }
    assert_eq!(
        Origin::parse("http://127.0.0.1:8080").map(|o| o.to_string()),
        Some("http://127.0.0.1:8080".to_owned())
    );
    assert_eq!(
        Origin::parse("http://[::1]").map(|o| o.to_string()),
        Some("http://[::1]:80".to_owned())
    );
    for bad in [
        "null",
        "app.example.com",
        "https://",
        "https://app.example.com/",
        "https://app.example.com/x",
        "https://user@app.example.com",
        "https://app.example.com:",
        "https://app.example.com:99999",
        "ftp://app.example.com",
        "file://",
        "https://app.example.com?x",
        "https://app.example.com\\@evil",
        "https://app example.com",
        // Found by the origin fuzz target: characters no host can hold, and port 0.
        "http://+)[:000000003e]e):0000",
        "http://+)[",
        "http://app.example.com:0",
        "http://app..example.com",
    ] {
        assert_eq!(Origin::parse(bad), None, "{bad}");
    }
    assert_ne!(Origin::parse("http://app.example.com"), Some(site()));
    assert_ne!(Origin::parse("https://app.example.com:8443"), Some(site()));
}

#[test]
fn fetch_metadata_decides_when_present() {
    assert!(!refused(&[("sec-fetch-site", "same-origin")], &[]));
    assert!(!refused(&[("sec-fetch-site", "none")], &[]));
    for value in ["cross-site", "same-site", "Cross-Site", "whatever", ""] {
        // Even with this site's own Origin beside it: the browser's word on the context wins.
        assert!(
            refused(
                &[
                    ("sec-fetch-site", value),
                    ("origin", "https://app.example.com")
                ],
                &[]
            ),
            "{value}"
        );
    }
}

#[test]
fn origin_must_be_this_site_or_allowed() {
    assert!(!refused(&[("origin", "https://app.example.com")], &[]));
    assert!(!refused(&[("origin", "https://app.example.com:443")], &[]));
    for origin in [
        "https://evil.example.com",
        "https://sibling.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
        "NULL",
        "garbage",
        "https://app.example.com.evil.test",
    ] {
        assert!(refused(&[("origin", origin)], &[]), "{origin}");
    }
    let allowed = [Origin::parse("https://admin.example.com").expect("origin")];
    assert!(!refused(
        &[("origin", "https://admin.example.com")],
        &allowed
    ));
    assert!(refused(
        &[("origin", "https://other.example.com")],
        &allowed
    ));
}

#[test]
fn a_request_without_browser_headers_passes() {
    assert_eq!(
        check(&headers(&[]), Some(&site()), &[]),
        Verdict::Pass("no Origin or Sec-Fetch-Site: not a browser")
    );
    // With no usable Host, only an allowed origin can match.
    assert!(matches!(
        check(
            &headers(&[("origin", "https://app.example.com")]),
            None,
            &[]
        ),
        Verdict::Refuse(_)
    ));
}

#[test]
fn the_site_origin_comes_from_the_request_and_trusted_proxies_only() {
    let origin = |uri: &str, lines: &[(&'static str, &'static str)], trusted: bool, tls: bool| {
        let mut builder = http::Request::get(uri);
        for (name, value) in lines {
            builder = builder.header(*name, *value);
        }
        let (parts, ()) = builder.body(()).expect("request").into_parts();
        let peer = "10.0.0.1:1000".parse().expect("addr");
        let conn = crate::ConnInfo::new(peer, peer, tls);
        let proxies: Vec<ipnet::IpNet> = if trusted {
            vec!["10.0.0.0/8".parse().expect("cidr")]
        } else {
            Vec::new()
        };
        let mut path = None;
        let view = RequestView::proxied(&parts, &conn, &proxies, &mut path).expect("view");
        Origin::of_view(&view).map(|o| o.to_string())
    };
    let direct = [
        ("host", "app.example.com:8080"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example.com"),
    ];
    assert_eq!(
        origin("/x", &direct, false, false),
        Some("http://app.example.com:8080".to_owned())
    );
    assert_eq!(
        origin("/x", &direct, true, false),
        Some("https://evil.example.com:443".to_owned())
    );
    assert_eq!(
        origin("/x", &[("host", "App.Example.com")], false, true),
        Some("https://app.example.com:443".to_owned())
    );
    // RFC 9112 §3.2.2: an absolute-form target names the host, whatever Host says.
    assert_eq!(
        origin(
            "https://app.example.com/x",
            &[("host", "evil.example.com")],
            false,
            true
        ),
        Some("https://app.example.com:443".to_owned())
    );
}

#[test]
fn unsafe_methods() {
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        assert!(is_unsafe(&method), "{method}");
    }
    assert!(is_unsafe(
        &Method::from_bytes(b"PROPPATCH").expect("method")
    ));
    for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert!(!is_unsafe(&method), "{method}");
    }
}
