//! Requests in flight that stop moving: a login body that never comes (`408` after the header
//! timeout), a client that stops reading its response, an upstream that stops sending one,
//! an HTTP/2 stream the client never reads while its connection answers PINGs. Each ends its
//! connection after `server.idle_timeout` without progress, as nginx's `send_timeout` would;
//! a response that keeps moving, however slowly, is left alone.

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::ROUTES;
use crate::support::keys::TestKey;
use crate::support::proxy::{self, proxy};
use crate::support::raw;
use crate::support::scripted::{scripted, Answer};
use crate::support::{backend, upstream};

#[tokio::test]
async fn a_login_body_that_never_comes_gets_408_after_the_header_timeout() {
    let key = TestKey::new("HS256");
    let backend = backend(&key).run().await;
    let up = upstream().run().await;
    let text = proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!(
            "{}\n[server]\nheader_read_timeout = \"500ms\"\nidle_timeout = \"30s\"\n{ROUTES}",
            backend.backend_toml()
        ),
    );
    let p = proxy(&text).await;
    let mut conn = raw::connect(p.addr()).await;
    conn.write(
        b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\"",
    )
    .await
    .expect("write");
    let started = Instant::now();
    let answer = conn.read_until_close(Duration::from_secs(5)).await;
    assert_eq!(raw::status_codes(&answer), [408], "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection() {
    const SIZE: usize = 64 << 20;
    let up = upstream().response_bytes(SIZE as u64).run().await;
    let key = TestKey::new("HS256");
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("[server]\nidle_timeout = \"1s\"\n{ROUTES}"),
    ))
    .await;
    let mut conn = raw::connect(p.addr()).await;
    conn.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    // Not reading: the socket buffers fill, then nothing moves for the idle timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rest = conn.read_until_close(Duration::from_secs(10)).await;
    assert!(
        rest.len() < SIZE,
        "the whole body came: a client that stopped reading kept its connection"
    );
}

#[tokio::test]
async fn an_upstream_that_stops_sending_ends_the_connection() {
    let up = scripted(|_| {
        Answer::Stall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nthe first bytes".to_vec())
    })
    .await;
    let key = TestKey::new("HS256");
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("[server]\nidle_timeout = \"1s\"\n{ROUTES}"),
    ))
    .await;
    let mut conn = raw::connect(p.addr()).await;
    conn.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    conn.read_until(b"the first bytes", Duration::from_secs(5))
        .await;
    let quiet = Instant::now();
    assert!(
        conn.closed_within(Duration::from_secs(4)).await,
        "a response the upstream stopped sending held its connection"
    );
    assert!(
        quiet.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        quiet.elapsed()
    );
}

#[tokio::test]
async fn a_slow_but_moving_response_is_left_alone() {
    const SIZE: usize = 64 << 20;
    let up = upstream().response_bytes(SIZE as u64).run().await;
    let key = TestKey::new("HS256");
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("[server]\nidle_timeout = \"1s\"\n{ROUTES}"),
    ))
    .await;
    let mut conn = raw::connect(p.addr()).await;
    conn.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    // A client reading a little every half idle timeout: the response takes several idle
    // timeouts, and keeps moving all along.
    let started = Instant::now();
    let mut read = 0;
    while read < SIZE {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let chunk = conn
            .read_exact((8 << 20).min(SIZE - read), Duration::from_secs(5))
            .await;
        read += chunk.len();
    }
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_http2_stream_nobody_reads_ends_its_connection_despite_pings() {
    let up = upstream().response_bytes(64 << 20).run().await;
    let key = TestKey::new("HS256");
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("[server]\nidle_timeout = \"1s\"\n{ROUTES}"),
    ))
    .await;
    let stream = TcpStream::connect(p.addr()).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // The client stays lively at the transport level: PINGs both ways.
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get(p.url("/big"))
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    // Held, never read: its windows fill, and nothing moves.
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), connection).await;
    assert!(ended.is_ok(), "a stream nobody read held its connection");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    drop(response);
}
