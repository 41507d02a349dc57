//! How long downstream connections live, over real sockets: HTTP/1.1 keep-alive outlives the
//! header timeout and ends at `server.keepalive_timeout`; an idle HTTP/2 connection that
//! only answers PINGs ends at `server.idle_timeout`; a WebSocket tunnel keeps its
//! connection's slot under `server.max_connections`. Upstream side: a pooled connection the
//! upstream closed under a request is retried once, for idempotent requests only.

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::support::keys::TestKey;
use crate::support::proxy::{self, proxy, Proxy};
use crate::support::raw::{self, RawConn};
use crate::support::{upstream, Upstream};

const ROUTES: &str = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";

async fn setup(server: &str) -> (Upstream, Proxy) {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("[server]\n{server}\n{ROUTES}"),
    ))
    .await;
    (up, p)
}

/// Sends one keep-alive GET on `conn` and reads its whole response; returns the status.
async fn get(conn: &mut RawConn, path: &str) -> u16 {
    conn.write(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("a length"))
        })
        .unwrap_or(0);
    conn.read_exact(length, Duration::from_secs(5)).await;
    raw::status_codes(&head)[0]
}

#[tokio::test]
async fn keepalive_connections_outlive_the_header_timeout_until_the_keepalive_timeout() {
    let (_up, p) = setup("header_read_timeout = \"300ms\"\nkeepalive_timeout = \"2s\"").await;
    let mut conn = raw::connect(p.addr()).await;
    assert_eq!(get(&mut conn, "/one").await, 200);
    // Three header timeouts idle: a browser's pause between two clicks.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(get(&mut conn, "/two").await, 200, "closed while idle");
    let idle = Instant::now();
    assert!(
        conn.closed_within(Duration::from_secs(6)).await,
        "an idle keep-alive connection stayed open past keepalive_timeout"
    );
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(1800),
        "closed after {waited:?}, before keepalive_timeout"
    );
}

#[tokio::test]
async fn a_slow_head_after_an_idle_pause_still_gets_the_header_timeout() {
    let (_up, p) = setup("header_read_timeout = \"300ms\"\nkeepalive_timeout = \"30s\"").await;
    let mut conn = raw::connect(p.addr()).await;
    assert_eq!(get(&mut conn, "/one").await, 200);
    conn.write(b"GET /two HTTP/1.1\r\nHost: a\r\nX-Slow: 1")
        .await
        .expect("write");
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "an unfinished head was allowed the keep-alive timeout"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_answering_pings_is_closed_after_the_idle_timeout() {
    let (_up, p) = setup("idle_timeout = \"1s\"").await;
    let stream = TcpStream::connect(p.addr()).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // The client keeps the connection lively at the transport level: PINGs both ways.
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(p.url("/x"))
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    drop(response);
    let idle = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), connection).await;
    assert!(
        ended.is_ok(),
        "an HTTP/2 connection without requests stayed open"
    );
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}, before idle_timeout"
    );
}

#[tokio::test]
async fn a_websocket_tunnel_holds_its_connection_slot() {
    let (_up, p) = setup("max_connections = 2").await;
    let mut tunnel = raw::connect(p.addr()).await;
    tunnel
        .write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write upgrade");
    let head = tunnel.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tunnel.write(b"ping").await.expect("write");
    assert_eq!(tunnel.read_exact(4, Duration::from_secs(5)).await, b"ping");

    // The second slot: an ordinary keep-alive connection.
    let mut second = raw::connect(p.addr()).await;
    assert_eq!(get(&mut second, "/x").await, 200);
    // No third: the tunnel still counts.
    let mut third = raw::connect(p.addr()).await;
    let answer = third.read_until_close(Duration::from_secs(3)).await;
    assert_eq!(answer, "", "a connection past max_connections was served");

    // Once the tunnel closes, its slot is free again.
    drop(tunnel);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = raw::connect(p.addr()).await;
        let served = next
            .write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
            && raw::status_codes(&next.read_until_close(Duration::from_secs(2)).await) == [200];
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed tunnel's slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An upstream that answers the first request on each connection and closes the connection
/// when a second one arrives on it, unanswered: what an upstream closing an idle keep-alive
/// connection looks like when the proxy's request crosses its close. Returns its address and
/// the number of request heads it has read.
async fn closing_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = false;
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let body: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap_or(0));
                        if seen.len() < end + 4 + body {
                            break;
                        }
                        seen.drain(..end + 4 + body);
                        counter.fetch_add(1, Ordering::SeqCst);
                        if answered {
                            return; // closes the connection, unanswered
                        }
                        answered = true;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn a_reused_upstream_connection_found_closed_is_retried_once_for_idempotent_requests() {
    use std::sync::atomic::Ordering;
    let (addr, heads) = closing_upstream().await;
    let key = TestKey::new("HS256");
    let p = proxy(&proxy::config(
        &format!("http://{addr}"),
        &key.jwt_toml(),
        ROUTES,
    ))
    .await;
    let mut conn = raw::connect(p.addr()).await;
    assert_eq!(get(&mut conn, "/first").await, 200);
    // Idle long enough for an upstream's keep-alive timeout to be a suspect.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        get(&mut conn, "/again").await,
        200,
        "the GET was not sent again on a new connection"
    );
    assert_eq!(
        heads.load(Ordering::SeqCst),
        3,
        "one request, then the lost one and its retry"
    );
    // A POST may have been acted on: it is never sent twice.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    conn.write(b"POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .expect("write");
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert_eq!(raw::status_codes(&head), [502], "{head}");
    assert_eq!(heads.load(Ordering::SeqCst), 4, "the POST was sent twice");
}
