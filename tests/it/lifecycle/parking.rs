//! Parking: an HTTP/1.1 connection idle between requests for a quarter of a second is taken
//! back from hyper and only its socket kept (the gauge `portcullis_parked_connections` counts
//! them). The client notices nothing: its next request, whole, split, pipelined or a
//! WebSocket handshake, is served on the same connection; keep-alive and header limits hold
//! while parked, and shutdown closes a parked connection at once.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    connect_tls, cpu_in_a_second, get, open_tunnel, read_response, setup, setup_tls, ROUTES,
    WS_HANDSHAKE,
};
use crate::support::instance::Instance;
use crate::support::keys::TestKey;
use crate::support::proxy::{self, Proxy};
use crate::support::raw::RawConn;
use crate::support::{raw, upstream, Upstream};

/// Long enough for any connection idle since the wait began to be parked.
const PARKED: Duration = Duration::from_millis(700);

/// [`setup`] with `server`, and a connection that has served one request and been parked.
async fn parked(server: &str) -> (Upstream, Proxy, RawConn) {
    let (up, p) = setup(server).await;
    let mut conn = raw::connect(p.addr()).await;
    assert_eq!(get(&mut conn, "/one").await, 200);
    tokio::time::sleep(PARKED).await;
    (up, p, conn)
}

/// Waits (5 s at most) until the instance's parked-connection gauge reads `want`.
async fn parked_becomes(instance: &Instance, want: f64) {
    instance
        .wait_metric(
            "portcullis_parked_connections",
            want,
            Duration::from_secs(5),
        )
        .await;
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_its_next_request_served_on_it() {
    let up = upstream().run().await;
    let key = TestKey::new("HS256");
    let instance = Instance::start(&proxy::config(&up.url(), &key.jwt_toml(), ROUTES)).await;
    let mut conn = raw::connect(instance.addr()).await;
    assert_eq!(get(&mut conn, "/one").await, 200);
    parked_becomes(&instance, 1.0).await;
    // The next request wakes it: served on the same socket, the connection no longer parked.
    assert_eq!(get(&mut conn, "/two").await, 200);
    parked_becomes(&instance, 0.0).await;
    // Parked again, and closed by the client while parked: counted out.
    parked_becomes(&instance, 1.0).await;
    drop(conn);
    parked_becomes(&instance, 0.0).await;
    // A connection that keeps sending is never parked.
    let mut busy = raw::connect(instance.addr()).await;
    for i in 0..20 {
        assert_eq!(get(&mut busy, &format!("/busy/{i}")).await, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            instance.metric("portcullis_parked_connections").await,
            Some(0.0),
            "a connection in use was parked"
        );
    }
}

#[tokio::test]
async fn split_and_pipelined_requests_wake_a_parked_connection() {
    let (_up, _p, mut conn) = parked("header_read_timeout = \"2s\"").await;
    // One byte wakes it; the rest of the head comes later.
    conn.write(b"G").await.expect("write");
    tokio::time::sleep(Duration::from_millis(400)).await;
    conn.write(b"ET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(read_response(&mut conn).await, 200);
    tokio::time::sleep(PARKED).await;
    // Two requests in one write, the second asking to close: both answered, in order.
    conn.write(
        b"GET /three HTTP/1.1\r\nHost: a\r\n\r\nGET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let both = conn.read_until_close(Duration::from_secs(5)).await;
    assert_eq!(raw::status_codes(&both), [200, 200], "{both}");
    let three = both
        .find("/three")
        .expect("the first answer echoes its path");
    let four = both
        .find("/four")
        .expect("the second answer echoes its path");
    assert!(three < four, "answered out of order: {both}");
}

#[tokio::test]
async fn a_websocket_handshake_wakes_a_parked_connection_and_keeps_the_bytes_behind_it() {
    let (_up, _p, mut conn) = parked("").await;
    // The handshake and the client's first bytes in one write: those bytes reach the
    // upstream through the tunnel, not lost with hyper's read buffer.
    conn.write(&[WS_HANDSHAKE, b"early"].concat())
        .await
        .expect("write upgrade");
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(conn.read_exact(5, Duration::from_secs(5)).await, b"early");
    conn.write(b"ping").await.expect("write");
    assert_eq!(conn.read_exact(4, Duration::from_secs(5)).await, b"ping");
}

#[tokio::test]
async fn a_tunnel_opened_on_a_fresh_connection_still_works() {
    let (_up, p) = setup("").await;
    let mut tunnel = open_tunnel(&p).await;
    // Idle past the parking delay: a tunnel is not an HTTP connection and is left alone.
    tokio::time::sleep(PARKED).await;
    tunnel.write(b"again").await.expect("write");
    assert_eq!(tunnel.read_exact(5, Duration::from_secs(5)).await, b"again");
}

#[tokio::test]
async fn shutdown_closes_a_parked_connection_at_once() {
    let (_up, mut p, mut conn) = parked("").await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(5), p.begin_stop()).await;
    assert!(stopped.is_ok(), "shutdown waited for a parked connection");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(conn.closed_within(Duration::from_secs(1)).await);
}

/// A response larger than the socket buffers, read only after the parking delay has passed
/// twice: it arrives whole, and then the connection either serves the next request (held
/// back from parking until flushed) or, asked to close, closes once everything is sent.
#[tokio::test]
async fn a_response_read_slowly_arrives_whole_before_the_connection_parks_or_closes() {
    let up = upstream().response_bytes(8 << 20).run().await;
    let key = TestKey::new("HS256");
    let p = proxy::proxy(&proxy::config(&up.url(), &key.jwt_toml(), ROUTES)).await;
    for close in [false, true] {
        let mut conn = raw::connect(p.addr()).await;
        let extra = if close { "Connection: close\r\n" } else { "" };
        conn.write(format!("GET /big HTTP/1.1\r\nHost: a\r\n{extra}\r\n").as_bytes())
            .await
            .expect("write");
        tokio::time::sleep(PARKED).await;
        assert_eq!(read_response(&mut conn).await, 200, "close: {close}");
        if close {
            assert!(conn.closed_within(Duration::from_secs(2)).await);
        } else {
            assert_eq!(get(&mut conn, "/after").await, 200);
        }
    }
}

/// Connections waiting for their first request (TLS preconnects: a handshake, then nothing),
/// or parked after one, cost no CPU while they wait: nothing wakes them before a limit.
#[tokio::test]
async fn waiting_and_parked_connections_cost_nothing_while_they_wait() {
    let (pki, _up, p) = setup_tls().await;
    let mut preconnects = Vec::new();
    for _ in 0..50 {
        preconnects.push(connect_tls(&pki, &p).await);
    }
    let mut served = Vec::new();
    for _ in 0..50 {
        let mut stream = connect_tls(&pki, &p).await;
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .expect("write");
        let mut head = vec![0u8; 12];
        stream.read_exact(&mut head).await.expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 200");
        served.push(stream);
    }
    tokio::time::sleep(PARKED).await;
    let spent = cpu_in_a_second().await;
    assert!(
        spent < Duration::from_millis(100),
        "100 waiting connections cost {spent:?} of CPU in a second"
    );
    drop((preconnects, served));
}

/// A connection parks only once every request body on it has been read to its end: the
/// bytes after a body left part-way could be the rest of it, and parking would read them as a
/// request. A body read whole parks as usual; one refused unread (a sign-in required, `401`
/// before the body is looked at) keeps the connection unparked until a new request shows
/// hyper is past it.
#[tokio::test]
async fn a_connection_parks_only_once_its_request_bodies_are_read_to_the_end() {
    let up = upstream().run().await;
    let key = TestKey::new("HS256");
    let routes = format!("[[routes]]\npath = \"/private/:path*\"\nauth = \"required\"\nupstream = \"app\"\n\n{ROUTES}");
    let instance = Instance::start(&proxy::config(&up.url(), &key.jwt_toml(), &routes)).await;
    let post = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nContent-Length: 5\r\n\r\nhello")
    };
    let mut conn = raw::connect(instance.addr()).await;
    conn.write(post("/form").as_bytes()).await.expect("write");
    assert_eq!(read_response(&mut conn).await, 200);
    parked_becomes(&instance, 1.0).await;

    let mut refused = raw::connect(instance.addr()).await;
    refused
        .write(post("/private/form").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut refused).await, 401);
    tokio::time::sleep(PARKED).await;
    assert_eq!(
        instance.metric("portcullis_parked_connections").await,
        Some(1.0),
        "parked with a body left unread"
    );
    assert_eq!(get(&mut refused, "/next").await, 200);
    parked_becomes(&instance, 2.0).await;
    assert_eq!(up.requests(), 2, "the refused request went nowhere");
}
