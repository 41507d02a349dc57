//! How long downstream connections live, over real sockets: HTTP/1.1 keep-alive outlives the
//! header timeout and ends at `server.keepalive_timeout`; an idle HTTP/2 connection that
//! only answers PINGs ends at `server.idle_timeout`; a WebSocket tunnel keeps its
//! connection's slot under `server.max_connections` (one cap for every listener) until it
//! closes, idles or the server stops; responses and bodies that stop moving end their
//! connection (`stalls`); a half-sent HTTP/2 preface costs nothing while it waits; an idle
//! HTTP/1.1 connection is parked and woken without the client noticing (`parking`).

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::keys::TestKey;
use crate::support::pki::Pki;
use crate::support::proxy::{self, proxy, Proxy};
use crate::support::raw::{self, RawConn};
use crate::support::{upstream, Upstream};

mod parking;
mod stalls;
mod stopping;

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

/// [`setup`] terminating TLS for `a.test` (a certificate from the returned `Pki`), every other
/// setting at its default.
async fn setup_tls() -> (Pki, Upstream, Proxy) {
    let pki = Pki::new();
    let (cert, key) = pki.issue("default", &["a.test"]);
    let toml_path =
        |path: &std::path::Path| serde_json::Value::from(path.to_string_lossy()).to_string();
    let (up, p) = setup(&format!(
        "tls = {{ cert = {}, key = {} }}",
        toml_path(&cert),
        toml_path(&key)
    ))
    .await;
    (pki, up, p)
}

/// A TLS connection to `p` for `a.test`, handshake done (HTTP/1.1 by ALPN).
async fn connect_tls(pki: &Pki, p: &Proxy) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(p.addr()).await.expect("connect");
    let name = ServerName::try_from("a.test".to_owned()).expect("server name");
    pki.connector(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// A WebSocket handshake for the upstream's echo at `/ws`.
const WS_HANDSHAKE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Sends one keep-alive GET on `conn` and reads its whole response; returns the status.
async fn get(conn: &mut RawConn, path: &str) -> u16 {
    conn.write(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .expect("write");
    read_response(conn).await
}

/// Reads one whole response on `conn` (its head, then a `Content-Length` body); returns the
/// status.
async fn read_response(conn: &mut RawConn) -> u16 {
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
    // Idle for three header timeouts: the keep-alive timeout applies, not the header's.
    tokio::time::sleep(Duration::from_millis(900)).await;
    conn.write(b"GET /two HTTP/1.1\r\nHost: a\r\nX-Slow: 1")
        .await
        .expect("the idle connection was closed before keepalive_timeout");
    let started = Instant::now();
    assert!(
        conn.closed_within(Duration::from_secs(3)).await,
        "an unfinished head was allowed the keep-alive timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}, before the header timeout",
        started.elapsed()
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
    tunnel.write(WS_HANDSHAKE).await.expect("write upgrade");
    let head = tunnel.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tunnel.write(b"ping").await.expect("write");
    assert_eq!(tunnel.read_exact(4, Duration::from_secs(5)).await, b"ping");

    // The second slot: an ordinary keep-alive connection.
    let mut second = raw::connect(p.addr()).await;
    assert_eq!(get(&mut second, "/x").await, 200);
    // No third: the tunnel still counts, and a connection past the cap is closed at once.
    let mut third = raw::connect(p.addr()).await;
    assert!(
        third.closed_within(Duration::from_secs(1)).await,
        "a connection past max_connections was kept open"
    );

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

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
    let (_up, p) = setup("idle_timeout = \"1s\"").await;
    let mut tunnel = open_tunnel(&p).await;
    // Traffic keeps it: four pings half an idle timeout apart.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tunnel.write(b"ping").await.expect("write");
        assert_eq!(tunnel.read_exact(4, Duration::from_secs(5)).await, b"ping");
    }
    let quiet = Instant::now();
    assert!(
        tunnel.closed_within(Duration::from_secs(4)).await,
        "an idle tunnel stayed open"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn max_connections_counts_every_listener() {
    let up = upstream().run().await;
    let key = TestKey::new("HS256");
    let text = proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!(
            "[server]\nmax_connections = 1\n\n[forward_auth]\nlisten = \"127.0.0.1:1\"\n{ROUTES}"
        ),
    );
    let (p, doors) = proxy::proxy_with_forward_auth(&text).await;
    let mut first = raw::connect(p.addr()).await;
    assert_eq!(get(&mut first, "/x").await, 200);
    let mut second = raw::connect(doors.forward_auth).await;
    assert!(
        second.closed_within(Duration::from_secs(1)).await,
        "the forward-auth listener had a cap of its own"
    );
}

/// A WebSocket tunnel through the proxy to the upstream's echo, checked with one round trip.
async fn open_tunnel(p: &Proxy) -> RawConn {
    let mut tunnel = raw::connect(p.addr()).await;
    tunnel.write(WS_HANDSHAKE).await.expect("write upgrade");
    let head = tunnel.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tunnel.write(b"ping").await.expect("write");
    assert_eq!(tunnel.read_exact(4, Duration::from_secs(5)).await, b"ping");
    tunnel
}

/// CPU time this thread spends in the next second, while the proxy (on this thread) waits.
async fn cpu_in_a_second() -> Duration {
    let before = thread_cpu();
    tokio::time::sleep(Duration::from_secs(1)).await;
    thread_cpu() - before
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (nanoseconds). The proxy
/// runs on the test's own runtime thread, so this is what it spends.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let nanos = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("run time");
    Duration::from_nanos(nanos)
}

#[tokio::test]
async fn a_half_sent_http2_preface_costs_nothing_while_it_waits() {
    let (_up, p) = setup("header_read_timeout = \"10s\"").await;
    let mut conns = Vec::new();
    // Prefixes of the preface: one decided at once (`PRI`), one that could still be `POST`.
    for start in [&b"PRI * HTTP/2.0\r\n"[..], b"PR"] {
        for _ in 0..200 {
            let mut conn = raw::connect(p.addr()).await;
            conn.write(start).await.expect("write");
            conns.push(conn);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = cpu_in_a_second().await;
    assert!(
        spent < Duration::from_millis(150),
        "400 waiting prefaces cost {spent:?} of CPU in a second"
    );
    drop(conns);
}
