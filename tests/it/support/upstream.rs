//! The fake upstream: the site or API that sits behind the proxy. A real HTTP/1.1 + h2c
//! server on `127.0.0.1:0` that records every request it receives, so tests can assert
//! what the proxy forwarded — and, just as often, that it forwarded nothing:
//!
//! ```ignore
//! let up = support::upstream().run().await;
//! // ... a request the proxy must refuse ...
//! assert_eq!(up.requests(), 0);
//! ```
//!
//! Answers, unless configured otherwise: `200`, `content-type: application/json`, body
//! `{"method", "uri", "authorization", "cookie", "body_len"}` (absent headers are `null`).
//!
//! `/ws` with an `Upgrade` header is an echo service over HTTP/1.1 upgrade: the answer is
//! `101 Switching Protocols` repeating the requested protocol (for `Upgrade: websocket`
//! with a `Sec-WebSocket-Key`, with the RFC 6455 `Sec-WebSocket-Accept`), after which every
//! byte received is sent back unchanged. No WebSocket framing is interpreted: the echo is
//! byte for byte, which is all a proxy test needs to prove the tunnel works.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::{body::Incoming, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::serve::{self, Body, Counter, FillBody, Server, StopSignal};

/// How many leading body bytes a [`Recorded`] keeps; the rest is only counted.
pub const BODY_KEPT: usize = 64 * 1024;

/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Starts configuring an upstream: `support::upstream().status(503).run().await`.
pub fn upstream() -> UpstreamBuilder {
    UpstreamBuilder::default()
}

/// How the upstream answers. Every setting applies to every request except `/ws` upgrades.
#[derive(Clone, Debug, Default)]
pub struct UpstreamBuilder {
    delay: Option<Duration>,
    status: Option<u16>,
    response_bytes: Option<u64>,
    headers: Vec<(String, String)>,
}

impl UpstreamBuilder {
    /// Waits this long after reading the request body before answering (a slow upstream,
    /// for timeout tests).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Answers with this status (default 200).
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Answers with an `n`-byte `application/octet-stream` body (with `Content-Length`),
    /// generated in 64 KiB chunks instead of the JSON echo.
    pub fn response_bytes(mut self, n: u64) -> Self {
        self.response_bytes = Some(n);
        self
    }

    /// Adds a header to every answer; repeat to send a header more than once
    /// (`Location` for redirects, `Set-Cookie`, hop-by-hop headers, …).
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn run(self) -> Upstream {
        let log = Arc::new(Log::default());
        let config = Arc::new(self);
        let server = Server::start({
            let log = Arc::clone(&log);
            move |request, stopped| handle(Arc::clone(&config), Arc::clone(&log), request, stopped)
        })
        .await;
        Upstream {
            inner: Arc::new(Inner { server, log }),
        }
    }
}

/// A running upstream. Clones share it; it stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    server: Server,
    log: Arc<Log>,
}

#[derive(Debug, Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    arrivals: Counter,
}

impl Upstream {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.inner.server.addr()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// How many requests have arrived. A request counts as soon as its head is read,
    /// before its body, so a proxy that aborts mid-body is still caught.
    pub fn requests(&self) -> usize {
        self.lock().len()
    }

    /// The most recent request.
    pub fn last(&self) -> Option<Recorded> {
        self.lock().last().cloned()
    }

    /// Every request, oldest first.
    pub fn all(&self) -> Vec<Recorded> {
        self.lock().clone()
    }

    /// Waits until `n` requests have arrived (panics after 10 s): for tests that must act
    /// while a request is in flight, without sleeping.
    pub async fn wait_for_requests(&self, n: usize) {
        self.inner
            .log
            .arrivals
            .wait_for(n as u64, "upstream requests")
            .await;
    }

    /// Closes the listener and every open connection; later connections are refused.
    pub fn stop(&self) {
        self.inner.server.stop();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.inner.log.requests.lock().expect("upstream log lock")
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The request target as hyper parsed it: `/path?query` for HTTP/1.1 origin-form,
    /// `http://host:port/path?query` for HTTP/2 and absolute-form. See
    /// [`Recorded::path_and_query`] for a version-independent view.
    pub uri: String,
    /// `"HTTP/1.1"`, `"HTTP/2.0"`, …
    pub version: String,
    /// Every header line in order, names lowercase, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// Body bytes received, counted while streaming.
    pub body_len: u64,
    /// The first [`BODY_KEPT`] bytes of the body.
    pub body: Bytes,
    /// Whether the body ended cleanly (false when the sender aborted it).
    pub body_complete: bool,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Path and query of the target, whatever its form: `/a/b?c=d`.
    pub fn path_and_query(&self) -> String {
        match self.uri.parse::<http::Uri>() {
            Ok(uri) => uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string),
            Err(_) => self.uri.clone(),
        }
    }

    /// The path as upstreams that route on their own reading of the raw request target see
    /// it: the target as received, whose leading segments a router such as Express matches
    /// (`/dashboard/../public` is under `/dashboard/`), and the path a WHATWG URL parser
    /// makes of it (Node's `new URL`, Next.js: dot segments resolved, `%2e` too, empty
    /// segments kept and counted, the fragment dropped). A forward-auth decision is sound only
    /// if every reading is the path it decided on.
    pub fn path_readings(&self) -> Vec<String> {
        let raw = self.path_and_query();
        let path = raw.split(['?', '#']).next().unwrap_or("/").to_owned();
        let whatwg = url::Url::parse(&format!("http://upstream.test{path}"))
            .map_or_else(|_| path.clone(), |url| url.path().to_owned());
        vec![path, whatwg]
    }

    /// The kept body bytes as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn handle(
    config: Arc<UpstreamBuilder>,
    log: Arc<Log>,
    mut request: Request<Incoming>,
    stopped: StopSignal,
) -> Response<Body> {
    let upgrade_to = (request.uri().path() == "/ws")
        .then(|| request.headers().get("upgrade").cloned())
        .flatten();
    // Must be taken before the request is split: it is how hyper hands over the socket.
    let on_upgrade = upgrade_to
        .is_some()
        .then(|| hyper::upgrade::on(&mut request));

    let (parts, body) = request.into_parts();
    let index = {
        let mut requests = log.requests.lock().expect("upstream log lock");
        requests.push(Recorded {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            version: format!("{:?}", parts.version),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body_len: 0,
            body: Bytes::new(),
            body_complete: false,
        });
        requests.len() - 1
    };
    log.arrivals.increment();

    let (body_len, kept, complete) = drain(body).await;
    if let Some(recorded) = log
        .requests
        .lock()
        .expect("upstream log lock")
        .get_mut(index)
    {
        recorded.body_len = body_len;
        recorded.body = kept;
        recorded.body_complete = complete;
    }

    if let (Some(protocol), Some(on_upgrade)) = (upgrade_to, on_upgrade) {
        return switch_protocols(&parts.headers, protocol, on_upgrade, stopped);
    }

    if let Some(delay) = config.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = match config.response_bytes {
        Some(n) => Response::builder()
            .header("content-type", "application/octet-stream")
            .body(FillBody::new(Bytes::new(), n, b'x', true).boxed())
            .expect("a static header makes a valid response"),
        None => {
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            serve::json_response(
                200,
                &json!({
                    "method": parts.method.as_str(),
                    "uri": parts.uri.to_string(),
                    "authorization": header("authorization"),
                    "cookie": header("cookie"),
                    "body_len": body_len,
                }),
            )
        }
    };
    *response.status_mut() = http::StatusCode::from_u16(config.status.unwrap_or(200))
        .expect("the test configured a valid status code");
    for (name, value) in &config.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = http::HeaderValue::from_str(value).expect("valid header value");
        response.headers_mut().append(name, value);
    }
    response
}

/// Reads a body to its end, counting every byte and keeping the first [`BODY_KEPT`].
async fn drain(mut body: Incoming) -> (u64, Bytes, bool) {
    let mut len = 0u64;
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (len, kept.freeze(), false);
        };
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
            let room = BODY_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    (len, kept.freeze(), true)
}

/// Answers `101` and echoes the upgraded connection's bytes back until either side closes
/// or the server stops.
fn switch_protocols(
    headers: &http::HeaderMap,
    protocol: http::HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    stopped: StopSignal,
) -> Response<Body> {
    let mut response = Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", protocol.clone());
    let key = headers.get("sec-websocket-key");
    if let (true, Some(key)) = (protocol.as_bytes().eq_ignore_ascii_case(b"websocket"), key) {
        response = response.header("sec-websocket-accept", websocket_accept(key.as_bytes()));
    }
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        tokio::select! {
            _ = tokio::io::copy(&mut reader, &mut writer) => {}
            () = serve::until_stopped(stopped) => {}
        }
    });
    response
        .body(serve::full(Bytes::new()))
        .expect("copied header values make a valid response")
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn websocket_accept(key: &[u8]) -> String {
    let mut input = key.to_vec();
    input.extend_from_slice(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(openssl::sha::sha1(&input))
}
