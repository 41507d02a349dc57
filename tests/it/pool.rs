//! The upstream connection pool over real sockets, against upstreams that misbehave on cue
//! (`support::scripted` for HTTP/1.1, `support::raw_h2` for HTTP/2): which connections are
//! reused, which never are (an answer that came before the request body went out whole: a
//! desync), which requests are sent a second time (only those the upstream provably did not
//! process), and how many connections an upstream gets.

use std::time::{Duration, Instant};

use crate::support::keys::TestKey;
use crate::support::proxy::{proxy, Proxy};
use crate::support::raw::{self, RawConn};

mod h1;
mod h2;

const ROUTES: &str = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";

/// A proxy in front of `url` (upstream `app`, public routes); `upstream` adds keys to the
/// upstream's table, `server` to `[server]`.
async fn proxy_to(url: &str, upstream: &str, server: &str) -> Proxy {
    let key = TestKey::new("HS256");
    let text = format!(
        "[server]\n{server}\n\n[upstreams.app]\nurl = {}\n{upstream}\n\n{}\n{ROUTES}",
        serde_json::Value::from(url),
        key.jwt_toml()
    );
    proxy(&text).await
}

/// One response read off `conn`: status, head, body (by `Content-Length`, chunked, or none).
async fn response(conn: &mut RawConn, head_only: bool) -> (u16, String, Vec<u8>) {
    let head = conn.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    let status = raw::status_codes(&head)[0];
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if head_only || matches!(status, 100..=199 | 204 | 304) {
        return (status, head, Vec::new());
    }
    if header("transfer-encoding").is_some() {
        let mut body = Vec::new();
        loop {
            let size = conn.read_until(b"\r\n", Duration::from_secs(5)).await;
            let size = usize::from_str_radix(size.trim_end(), 16).expect("a chunk size");
            body.extend(conn.read_exact(size, Duration::from_secs(5)).await);
            conn.read_exact(2, Duration::from_secs(5)).await;
            if size == 0 {
                return (status, head, body);
            }
        }
    }
    let length = header("content-length").map_or(0, |v| v.parse().expect("a length"));
    let body = conn.read_exact(length, Duration::from_secs(5)).await;
    (status, head, body)
}

/// Sends `request` on `conn` and reads its response: status and body as text.
async fn exchange(conn: &mut RawConn, request: &str) -> (u16, String) {
    conn.write(request.as_bytes()).await.expect("write");
    let (status, _, body) = response(conn, request.starts_with("HEAD ")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path` on a connection of its own.
async fn get_once(proxy: &Proxy, path: &str) -> (u16, String) {
    let mut conn = raw::connect(proxy.addr()).await;
    exchange(
        &mut conn,
        &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Waits until `done` holds (panics with `what` after 5 s).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
