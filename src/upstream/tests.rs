use super::*;

fn conn(peer: &str) -> ConnInfo {
    ConnInfo::new(
        peer.parse().expect("addr"),
        "127.0.0.1:8080".parse().expect("addr"),
        false,
    )
}

fn rewrite(lines: &[(&str, &str)], peer: &str, trusted: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            HeaderName::try_from(*name).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().expect("cidr")).collect();
    let conn = std::sync::Arc::new(conn(peer));
    let request_id = HeaderValue::from_static("req-1");
    let host = HeaderValue::from_static("site.example");
    let fwd = Forwarding {
        conn: &conn,
        trusted_proxies: &trusted,
        own_cookies: ["access_token", "refresh_token"],
        identity_headers: &[HeaderName::from_static("x-tenant")],
        request_id: &request_id,
        host: &host,
    };
    rewrite_request_headers(
        &mut headers,
        &Permit::for_tests(Some("Bearer good")),
        &fwd,
        true,
    );
    headers
}

fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

#[test]
fn connection_cannot_remove_injected_headers() {
    let headers = rewrite(
        &[
            ("host", "site.example"),
            (
                "connection",
                "Authorization, X-Forwarded-For, X-User-Id, keep-alive, x-custom",
            ),
            ("x-custom", "dropped"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("authorization", "Bearer forged"),
            ("authorization", "Basic Zm9vOmJhcg=="),
        ],
        "203.0.113.9:5555",
        &[],
    );
    assert_eq!(all(&headers, "authorization"), ["Bearer good"]);
    assert_eq!(all(&headers, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(all(&headers, "x-user-id"), ["42"]);
    for gone in ["connection", "x-custom", "keep-alive", "te"] {
        assert!(headers.get(gone).is_none(), "{gone} should be stripped");
    }
    assert_eq!(all(&headers, "host"), ["site.example"]);
    assert_eq!(all(&headers, "x-forwarded-host"), ["site.example"]);
    assert_eq!(all(&headers, "x-forwarded-proto"), ["http"]);
}

#[test]
fn spoofed_identity_headers_are_stripped() {
    let headers = rewrite(
        &[
            ("x-user-email", "admin@example.com"),
            ("x_user_id", "1"),
            ("x-auth-request-user", "admin"),
            ("x_auth_request_email", "admin@example.com"),
            ("x-forwarded-user", "admin"),
            ("x_forwarded_email", "admin@example.com"),
            ("x-tenant", "other"),
            ("x_tenant", "other"),
            ("x-original-url", "/public"),
            ("x-rewrite-url", "/public"),
            ("remote-user", "admin"),
            ("x-keep", "yes"),
        ],
        "203.0.113.9:5555",
        &[],
    );
    let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    for name in &names {
        assert!(
            !name.contains("email")
                && !name.contains("tenant")
                && !name.contains("original")
                && !name.contains("rewrite")
                && *name != "remote-user"
                && !name.starts_with("x-auth")
                && *name != "x-forwarded-user",
            "{name} survived"
        );
    }
    assert_eq!(all(&headers, "x-user-id"), ["42"]);
    assert_eq!(all(&headers, "x-keep"), ["yes"]);
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_peers() {
    let spoofed = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
    ];
    let untrusted = rewrite(&spoofed, "203.0.113.9:5555", &["10.0.0.0/8"]);
    assert_eq!(all(&untrusted, "x-forwarded-for"), ["203.0.113.9"]);
    assert_eq!(all(&untrusted, "x-forwarded-proto"), ["http"]);
    let trusted = rewrite(&spoofed, "10.1.2.3:5555", &["10.0.0.0/8"]);
    assert_eq!(all(&trusted, "x-forwarded-for"), ["1.2.3.4, 10.1.2.3"]);
    assert_eq!(all(&trusted, "x-forwarded-proto"), ["https"]);
}

#[test]
fn own_cookies_never_reach_the_upstream() {
    let headers = rewrite(
        &[("cookie", "access_token=a; theme=dark; refresh_token=r")],
        "127.0.0.1:1",
        &[],
    );
    assert_eq!(all(&headers, "cookie"), ["theme=dark"]);
}

#[test]
fn upgrade_survives_the_rewrite() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    let conn = std::sync::Arc::new(conn("127.0.0.1:1"));
    let request_id = HeaderValue::from_static("req-1");
    let host = HeaderValue::from_static("site.example");
    let fwd = Forwarding {
        conn: &conn,
        trusted_proxies: &[],
        own_cookies: ["a", "r"],
        identity_headers: &[],
        request_id: &request_id,
        host: &host,
    };
    assert!(rewrite_request_headers(
        &mut headers,
        &Permit::for_tests(None),
        &fwd,
        true
    ));
    assert_eq!(all(&headers, "connection"), ["upgrade"]);
    assert_eq!(all(&headers, "upgrade"), ["websocket"]);
    // The same headers on a request that cannot be a handshake (a POST) keep nothing of it.
    let mut post = HeaderMap::new();
    post.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    post.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    post.insert(
        header::SEC_WEBSOCKET_KEY,
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    post.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    assert!(!rewrite_request_headers(
        &mut post,
        &Permit::for_tests(None),
        &fwd,
        false
    ));
    for gone in [
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
    ] {
        assert!(post.get(gone).is_none(), "{gone} survived on a POST");
    }
}

#[test]
fn client_ip_skips_trusted_hops() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("9.9.9.9, 198.51.100.7, 10.0.0.2"),
    );
    assert_eq!(
        client_ip(&conn("10.0.0.1:1"), &headers, &trusted).to_string(),
        "198.51.100.7"
    );
    assert_eq!(
        client_ip(&conn("203.0.113.1:1"), &headers, &trusted).to_string(),
        "203.0.113.1"
    );
}

#[test]
fn identity_header_names_fold_underscore_and_dash_both_ways() {
    let configured = [
        HeaderName::from_static("x-email"),
        HeaderName::from_static("x-role"),
    ];
    for name in [
        "x-email",
        "x_email",
        "x-role",
        "x_role",
        "x_user_id",
        "x-user_id",
    ] {
        assert!(is_identity_header(name, &configured), "{name}");
    }
    // A configured name is compared with `_` folded too, whichever side carries it.
    let underscored = [HeaderName::from_static("x_email")];
    assert!(is_identity_header("x-email", &underscored));
    assert!(is_identity_header("x_email", &underscored));
    assert!(!is_identity_header("x-emails", &underscored));
    assert!(!is_identity_header("x-keep", &configured));
}

#[test]
fn forwarded_for_hops_with_ports_are_read() {
    let trusted = ["10.0.0.0/8"];
    // Azure Application Gateway writes `ip:port`; IPv6 hops come as `[v6]:port`.
    for (chain, client) in [
        ("198.51.100.7:50123", "198.51.100.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("198.51.100.7, 10.0.0.5:8080", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(chain).expect("value"),
        );
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().expect("cidr")).collect();
        let ip = client_ip(&conn("10.1.2.3:5555"), &headers, &trusted);
        assert_eq!(ip.to_string(), client, "{chain}");
    }
}

#[test]
fn ipv4_mapped_peers_are_unmapped_once() {
    let conn = conn("[::ffff:192.0.2.9]:5555");
    assert_eq!(conn.peer.ip().to_string(), "192.0.2.9");
    assert_eq!(conn.peer_ip, "192.0.2.9");
}

#[test]
fn the_name_matches_agree_with_the_lists() {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(hop_by_hop_index(name.as_str()), Some(i));
        assert!(!is_websocket_handshake(name.as_str()));
    }
    for name in &WEBSOCKET_HANDSHAKE {
        assert!(is_websocket_handshake(name.as_str()));
        assert_eq!(hop_by_hop_index(name.as_str()), None);
    }
    for other in [
        "host",
        "cookie",
        "connectio",
        "tee",
        "x-upgrade",
        "sec-websocket-accept",
    ] {
        assert_eq!(hop_by_hop_index(other), None, "{other}");
        assert!(!is_websocket_handshake(other), "{other}");
    }
}
