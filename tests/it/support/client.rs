//! The test client. It opens a fresh connection for every request and never follows
//! redirects, so every `302`/`303` the proxy sends is there to be asserted:
//!
//! ```ignore
//! let resp = Req::post(&format!("{}/login", proxy.url()))
//!     .form(&[("email", "alice@example.com"), ("password", "secret")])
//!     .send()
//!     .await;
//! assert_eq!(resp.status, 303);
//! assert_eq!(resp.location(), Some("/dashboard"));
//! ```
//!
//! [`Req::send`] panics on transport errors (the test fails with the reason);
//! [`Req::try_send`] returns them, for tests that expect a refused or reset connection.
//! Every exchange has a timeout (30 s by default) so a hung proxy fails the test instead
//! of hanging it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

use super::{
    cookies::CookieJar,
    serve::{self, Body, FillBody},
};

/// A transport-level failure: refused, reset, timed out, or a malformed response.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The default limit on one whole exchange, body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET url` over HTTP/1.1.
pub async fn get(url: &str) -> Resp {
    Req::get(url).send().await
}

/// A request being built. Headers are sent in the order given, duplicates included.
#[derive(Clone, Debug)]
pub struct Req {
    method: Method,
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<String>,
    body: ReqBody,
    timeout: Duration,
    keep_body: bool,
}

#[derive(Clone, Debug)]
enum ReqBody {
    Bytes(Bytes),
    Generated { len: u64, exact_length: bool },
}

impl Req {
    /// A request with any method token, e.g. `Req::new("PROPFIND", url)`.
    pub fn new(method: &str, url: &str) -> Req {
        Req {
            method: Method::from_bytes(method.as_bytes()).expect("a valid method token"),
            url: url.to_owned(),
            headers: Vec::new(),
            cookies: Vec::new(),
            body: ReqBody::Bytes(Bytes::new()),
            timeout: DEFAULT_TIMEOUT,
            keep_body: true,
        }
    }

    pub fn get(url: &str) -> Req {
        Req::new("GET", url)
    }

    pub fn post(url: &str) -> Req {
        Req::new("POST", url)
    }

    /// Adds a header line; calling it twice with one name sends the header twice.
    /// A `host` header given here replaces the one derived from the URL.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("header name {name:?}: {e}"));
        let value = HeaderValue::from_bytes(value.as_bytes())
            .unwrap_or_else(|e| panic!("header value {value:?}: {e}"));
        self.headers.push((name, value));
        self
    }

    /// Adds `k=v` (or several, `a=1; b=2`) to the one `Cookie` header. Empty text is
    /// ignored, so `.cookie(&jar.header())` is fine with an empty jar.
    pub fn cookie(mut self, pairs: &str) -> Self {
        if !pairs.trim().is_empty() {
            self.cookies.push(pairs.to_owned());
        }
        self
    }

    /// Sends every cookie in `jar`.
    pub fn jar(self, jar: &CookieJar) -> Self {
        self.cookie(&jar.header())
    }

    /// The request body, sent with `Content-Length`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = ReqBody::Bytes(body.into());
        self
    }

    /// An `n`-byte body generated in 64 KiB chunks and sent with `Content-Length`,
    /// without ever holding it in memory (for `max_body` and streaming tests).
    pub fn body_of_len(mut self, n: u64) -> Self {
        self.body = ReqBody::Generated {
            len: n,
            exact_length: true,
        };
        self
    }

    /// Like [`Req::body_of_len`] but with chunked framing, so the size is not known up
    /// front (HTTP/1.1 `Transfer-Encoding: chunked`; no `content-length` on HTTP/2).
    pub fn chunked_body_of_len(mut self, n: u64) -> Self {
        self.body = ReqBody::Generated {
            len: n,
            exact_length: false,
        };
        self
    }

    /// An `application/x-www-form-urlencoded` body (and that content type unless a
    /// `content-type` header was already given).
    pub fn form(self, fields: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.default_content_type("application/x-www-form-urlencoded")
            .body(body)
    }

    /// A JSON body (and `content-type: application/json` unless one was given).
    pub fn json(self, value: Value) -> Self {
        self.default_content_type("application/json")
            .body(value.to_string())
    }

    /// Limits the whole exchange, body included (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Counts the response body into [`Resp::body_len`] without keeping it.
    pub fn discard_body(mut self) -> Self {
        self.keep_body = false;
        self
    }

    /// Sends over HTTP/1.1; panics on transport errors.
    pub async fn send(self) -> Resp {
        let what = format!("{} {}", self.method, self.url);
        self.try_send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Sends over HTTP/1.1.
    pub async fn try_send(self) -> Result<Resp, Error> {
        self.exchange(false).await
    }

    /// Sends over HTTP/2 with prior knowledge (h2c); panics on transport errors.
    pub async fn send_h2c(self) -> Resp {
        let what = format!("{} {} (h2c)", self.method, self.url);
        self.try_send_h2c()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Sends over HTTP/2 with prior knowledge (h2c).
    pub async fn try_send_h2c(self) -> Result<Resp, Error> {
        self.exchange(true).await
    }

    fn default_content_type(self, content_type: &str) -> Self {
        if self.has_header("content-type") {
            self
        } else {
            self.header("content-type", content_type)
        }
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }

    async fn exchange(self, h2: bool) -> Result<Resp, Error> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange_untimed(h2)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no complete response within {timeout:?}").into()),
        }
    }

    async fn exchange_untimed(self, h2: bool) -> Result<Resp, Error> {
        let uri: Uri = self.url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("only http:// URLs are supported: {uri}").into());
        }
        let authority = uri.authority().ok_or("URL without a host")?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = TcpStream::connect((host, authority.port_u16().unwrap_or(80))).await?;
        stream.set_nodelay(true)?;

        let target = if h2 {
            uri.clone()
        } else {
            uri.path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .expect("a path-and-query is a valid origin-form target")
        };
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(target)
            .version(if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            });
        if !h2 && !self.has_header("host") {
            request = request.header("host", authority.as_str());
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookies.join("; "));
        }
        let body: Body = match self.body {
            ReqBody::Bytes(bytes) => serve::full(bytes),
            ReqBody::Generated { len, exact_length } => {
                FillBody::new(Bytes::new(), len, b'x', exact_length).boxed()
            }
        };
        let request = request.body(body)?;

        let io = TokioIo::new(stream);
        let response = if h2 {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            sender.send_request(request).await?
        };

        let (parts, mut body) = response.into_parts();
        let mut kept = BytesMut::new();
        let mut body_len = 0u64;
        let mut body_complete = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                body_complete = false;
                break;
            };
            if let Some(data) = frame.data_ref() {
                body_len += data.len() as u64;
                if self.keep_body {
                    kept.extend_from_slice(data);
                }
            }
        }
        Ok(Resp {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body: kept.freeze(),
            body_len,
            body_complete,
        })
    }
}

/// A response as the client received it.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body (empty with [`Req::discard_body`]).
    pub body: Bytes,
    /// Body bytes received.
    pub body_len: u64,
    /// False when the connection broke before the body ended (e.g. the proxy aborted
    /// an oversized stream).
    pub body_complete: bool,
}

impl Resp {
    /// The first value of header `name`, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// `Location`, for redirects.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// The body as JSON; panics with the status and body text when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body, got {} with {:?}: {e}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every `Set-Cookie`, parsed.
    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.header_all("set-cookie")
            .into_iter()
            .map(SetCookie::parse)
            .collect()
    }

    /// The last `Set-Cookie` for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        self.set_cookies()
            .into_iter()
            .rev()
            .find(|c| c.name == name)
    }
}

/// One `Set-Cookie` header, split simply: `name=value`, then `;`-separated attributes
/// (`Name=Value` or bare flags like `HttpOnly`), whitespace trimmed, no unquoting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub attributes: Vec<(String, Option<String>)>,
}

impl SetCookie {
    pub fn parse(header: &str) -> SetCookie {
        let mut parts = header.split(';');
        let (name, value) = split_pair(parts.next().unwrap_or_default());
        SetCookie {
            name,
            value: value.unwrap_or_default(),
            attributes: parts
                .filter(|part| !part.trim().is_empty())
                .map(split_pair)
                .collect(),
        }
    }

    /// Whether attribute `name` is present (case-insensitive), with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.attributes
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The value of attribute `name` (case-insensitive): `attr("SameSite")`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
    }

    /// `Max-Age` as a number, if present and numeric.
    pub fn max_age(&self) -> Option<i64> {
        self.attr("max-age").and_then(|v| v.parse().ok())
    }

    /// Whether this header deletes the cookie (`Max-Age` zero or negative).
    pub fn is_removal(&self) -> bool {
        self.max_age().is_some_and(|age| age <= 0)
    }
}

fn split_pair(part: &str) -> (String, Option<String>) {
    match part.split_once('=') {
        Some((name, value)) => (name.trim().to_owned(), Some(value.trim().to_owned())),
        None => (part.trim().to_owned(), None),
    }
}
