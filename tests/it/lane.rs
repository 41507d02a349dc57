//! The front door's own HTTP/1.1 (`server/lane.rs`) over real sockets: plain requests are
//! answered by it, anything else by hyper on the same connection, and the hand-over between
//! the two neither loses a byte nor lets a request through that either reader would refuse.

use std::time::Duration;

use crate::support::keys::TestKey;
use crate::support::proxy::{self, proxy, Proxy};
use crate::support::{raw, upstream, Upstream};

const ROUTES: &str = r#"
[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

const WAIT: Duration = Duration::from_secs(5);

async fn setup() -> (Upstream, Proxy) {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let p = proxy(&proxy::config(&up.url(), &key.jwt_toml(), ROUTES)).await;
    (up, p)
}

fn paths(up: &Upstream) -> Vec<String> {
    up.all().iter().map(|r| r.path_and_query()).collect()
}

#[tokio::test]
async fn pipelined_plain_requests_are_answered_in_order_on_one_connection() {
    let (up, p) = setup().await;
    let text = raw::send(
        p.addr(),
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nHEAD /two HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /three?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\
          GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(raw::status_codes(&text), [200, 200, 200], "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert_eq!(paths(&up), ["/one", "/two", "/three?x=1"]);
    assert_eq!(up.all()[1].method, "HEAD");
}

/// A request with a body hands the connection to hyper: the upstream gets it whole, and the
/// plain requests before and after it are served on the same connection.
#[tokio::test]
async fn plain_requests_and_one_with_a_body_share_a_connection() {
    let (up, p) = setup().await;
    let text = raw::send(
        p.addr(),
        b"GET /before HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(raw::status_codes(&text), [200, 200, 200], "{text}");
    assert_eq!(paths(&up), ["/before", "/form", "/after"]);
    assert_eq!(up.all()[1].body_len, 5);
}

/// The smuggling table of `core.rs`, each attempt sent after a plain request on the same
/// connection (so from the lane, not from a fresh hyper connection): the smuggled request
/// never reaches the upstream.
#[tokio::test]
async fn smuggling_after_a_plain_request_never_becomes_two_upstream_requests() {
    let (up, p) = setup().await;
    let smuggled = "GET /dashboard HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases = [
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{smuggled}"),
        format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\n{smuggled}"),
        format!("GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n{smuggled}"),
        format!("GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n2d\r\n{smuggled}"),
        format!("GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
    ];
    for case in &cases {
        let request = format!("GET /plain HTTP/1.1\r\nHost: a\r\n\r\n{case}");
        let text = raw::send(p.addr(), request.as_bytes(), Duration::from_secs(3)).await;
        let codes = raw::status_codes(&text);
        assert_eq!(codes.first(), Some(&200), "{case:?} -> {codes:?}");
        assert!(
            up.all().iter().all(|r| r.path_and_query() != "/dashboard"),
            "{case:?} smuggled a request: {:?}",
            paths(&up)
        );
        assert!(
            codes[1..].iter().all(|c| *c != 200) || codes.len() <= 2,
            "{case:?} -> {codes:?}"
        );
    }
}

/// A malformed head, on a fresh connection or after a plain request, gets hyper's `400`
/// and reaches no upstream.
#[tokio::test]
async fn malformed_heads_get_400_and_reach_no_upstream() {
    let (up, p) = setup().await;
    let bad: [&[u8]; 5] = [
        b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
        b"GET /x y HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for case in bad {
        let text = raw::send(p.addr(), case, WAIT).await;
        assert_eq!(
            raw::status_codes(&text),
            [400],
            "{:?}",
            String::from_utf8_lossy(case)
        );
        let mut after = b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        after.extend_from_slice(case);
        let text = raw::send(p.addr(), &after, WAIT).await;
        assert_eq!(
            raw::status_codes(&text),
            [200, 400],
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert!(
        paths(&up).iter().all(|path| path == "/plain"),
        "{:?}",
        paths(&up)
    );
}

#[tokio::test]
async fn http_1_0_is_served_by_hyper_and_closed() {
    let (up, p) = setup().await;
    let text = raw::send(p.addr(), b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n", WAIT).await;
    assert_eq!(raw::status_codes(&text), [200], "{text}");
    assert_eq!(paths(&up), ["/old"]);
}
