//! Talking to upstreams: the request and response header rewrite, and forwarding itself
//! (including WebSocket upgrades) over each upstream's connection pool (`upstream/pool.rs`);
//! and the pooled client of backend calls.
//!
//! The header rewrite runs in a fixed order — strip hop-by-hop headers and everything the
//! client named in `Connection`, strip client-supplied identity headers and the proxy's own
//! cookies, *then* inject `Authorization`, identity and `X-Forwarded-*` headers — so nothing a
//! client sends can remove or forge what the proxy injects.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ipnet::IpNet;

use crate::auth::Permit;
use crate::body::{Body, RequestBody};
use crate::config::{self, Config};
use crate::error::Error;
use crate::headers::{is_identity_header, HOP_BY_HOP, HOP_BY_HOP_COUNT};
pub use crate::view::{client_ip, is_trusted};
use crate::{telemetry, ConnInfo};

mod pool;
mod tunnel;

pub use pool::Pool;
use pool::{PooledBody, SendError, UpstreamBody};

/// The pooled HTTP(S) client of backend and JWKS calls.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The connector of both: connect timeout, `TCP_NODELAY`, HTTPS per `tls` (ALPN offers `h2`
/// only when `tls.http2` is set; over plain HTTP that setting means HTTP/2 by prior knowledge).
fn connector(
    server: &config::Server,
    tls: &config::ClientTls,
) -> Result<HttpsConnector<HttpConnector>, Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(server.connect_timeout));
    let tls_config = crate::tls::client_config(tls).map_err(Error::Internal)?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http();
    Ok(if tls.http2 {
        builder.enable_all_versions().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}

/// The connection pool of one upstream.
pub fn pool(server: &config::Server, upstream: &config::Upstream) -> Result<Pool, Error> {
    Ok(Pool::new(
        connector(server, &upstream.client)?,
        upstream.scheme.clone(),
        upstream.authority.clone(),
        pool::Settings {
            http2: upstream.client.http2,
            max_buf_size: UPSTREAM_BUFFER,
            keepalive: upstream.keepalive_timeout,
            max_connections: upstream.max_connections,
        },
    ))
}

/// Builds a pooled client for backend calls: keep-alive, connect timeout, HTTPS per `tls`.
pub fn client(server: &config::Server, tls: &config::ClientTls) -> Result<HttpClient, Error> {
    let https = connector(server, tls)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        // hyper's default lets each connection queue ~400 KiB of body before pushing back;
        // bound it so that many uploads to a slow upstream cannot pile up in memory.
        .http1_max_buf_size(UPSTREAM_BUFFER)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(tls.http2)
        .build(https))
}

/// Per-connection read/write buffer towards upstreams (response heads must fit in it).
const UPSTREAM_BUFFER: usize = 64 << 10;
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the rewrite needs to know about the downstream request and its connection.
pub struct Forwarding<'a> {
    pub conn: &'a std::sync::Arc<ConnInfo>,
    pub trusted_proxies: &'a [IpNet],
    /// Names of the proxy's cookies, removed from the upstream `Cookie` header.
    pub own_cookies: [&'a str; 2],
    /// Every header name any rule fills from claims: always stripped from client requests.
    pub identity_headers: &'a [HeaderName],
    pub request_id: &'a HeaderValue,
    /// The host the rules matched (the view's: [`crate::view::authority`], or a trusted
    /// proxy's `X-Forwarded-Host`): the upstream's `Host`, whatever `Host` headers the client
    /// sent.
    pub host: &'a HeaderValue,
}

/// Rewrites the downstream request headers into the upstream's. `may_upgrade` says whether
/// the request could be a WebSocket handshake at all (an HTTP/1.1 `GET`). Returns whether this
/// is one, which must keep its `Connection`/`Upgrade` headers; any other request loses every
/// header of the handshake, so that no upstream can take it for one.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    permit: &Permit,
    fwd: &Forwarding<'_>,
    may_upgrade: bool,
) -> bool {
    let present = Present::scan(headers, Some(fwd.identity_headers));
    let upgrade =
        (may_upgrade && present.has(&header::CONNECTION) && present.has(&header::UPGRADE))
            .then(|| upgrade_protocol(headers))
            .flatten();
    strip_hop_by_hop(headers, &present);
    if upgrade.is_none() && present.websocket {
        for name in &WEBSOCKET_HANDSHAKE {
            headers.remove(name);
        }
    }
    let trusted = is_trusted(fwd.conn.peer.ip(), fwd.trusted_proxies);
    // Believed only from a trusted proxy, and read before identity stripping removes them.
    let forwarded_for = trusted.then(|| joined(headers, &X_FORWARDED_FOR)).flatten();
    let forwarded_proto = trusted
        .then(|| headers.get(X_FORWARDED_PROTO).cloned())
        .flatten();
    let forwarded_host = trusted
        .then(|| headers.get(X_FORWARDED_HOST).cloned())
        .flatten();

    if present.identity {
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|name| is_identity_header(name.as_str(), fwd.identity_headers))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
    crate::cookie_header::strip(headers, &fwd.own_cookies);

    // From here on, only the proxy writes.
    headers.insert(header::HOST, fwd.host.clone());
    permit.apply(headers);
    let peer = &fwd.conn.peer_ip;
    match forwarded_for {
        Some(chain) if !chain.is_empty() => {
            let peer = peer.to_str().expect("an IP address is ASCII");
            if let Ok(value) = HeaderValue::try_from(format!("{chain}, {peer}")) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        _ => {
            headers.insert(X_FORWARDED_FOR, peer.clone());
        }
    }
    let proto = forwarded_proto
        .unwrap_or_else(|| HeaderValue::from_static(if fwd.conn.tls { "https" } else { "http" }));
    headers.insert(X_FORWARDED_PROTO, proto);
    headers.insert(
        X_FORWARDED_HOST,
        forwarded_host.unwrap_or_else(|| fwd.host.clone()),
    );
    headers.insert(X_REQUEST_ID, fwd.request_id.clone());
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    upgrade.is_some()
}

/// Which of the headers the rewrite removes a map carries, found in one pass over its names:
/// a removal is a hash lookup, so only the headers that are there are removed by name.
struct Present {
    /// `HOP_BY_HOP[i]` is there.
    hop_by_hop: [bool; HOP_BY_HOP_COUNT],
    /// Some header of [`WEBSOCKET_HANDSHAKE`] is there.
    websocket: bool,
    /// Some name claims an identity ([`is_identity_header`]; only when asked).
    identity: bool,
}

impl Present {
    fn scan(headers: &HeaderMap, identity: Option<&[HeaderName]>) -> Present {
        let mut present = Present {
            hop_by_hop: [false; HOP_BY_HOP_COUNT],
            websocket: false,
            identity: false,
        };
        for name in headers.keys() {
            let name = name.as_str();
            if let Some(i) = hop_by_hop_index(name) {
                present.hop_by_hop[i] = true;
            } else if is_websocket_handshake(name) {
                present.websocket = true;
            } else if let Some(configured) = identity {
                present.identity |= is_identity_header(name, configured);
            }
        }
        present
    }

    fn has(&self, hop_by_hop: &HeaderName) -> bool {
        hop_by_hop_index(hop_by_hop.as_str()).is_some_and(|i| self.hop_by_hop[i])
    }
}

/// The position of `name` in [`HOP_BY_HOP`]. A `match` on the text (its length first) is far
/// cheaper than comparing with each name in turn, and this runs for every header of every
/// request and response.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    let index = match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authorization" => 7,
        "proxy-authenticate" => 8,
        "http2-settings" => 9,
        _ => return None,
    };
    debug_assert_eq!(HOP_BY_HOP[index], name);
    Some(index)
}

/// Whether `name` is one of [`WEBSOCKET_HANDSHAKE`].
fn is_websocket_handshake(name: &str) -> bool {
    matches!(
        name,
        "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-protocol"
    )
}

/// The request headers that only mean something in a WebSocket handshake (RFC 6455 §11.3).
static WEBSOCKET_HANDSHAKE: [HeaderName; 4] = [
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::SEC_WEBSOCKET_PROTOCOL,
];

/// Removes hop-by-hop headers from a response, keeping `Connection`/`Upgrade` on a `101`, and
/// a `Content-Length` that `Transfer-Encoding` overrides.
pub fn rewrite_response_headers(status: StatusCode, headers: &mut HeaderMap) {
    let present = Present::scan(headers, None);
    // A response framed by `Transfer-Encoding` has no length, whatever `Content-Length` it
    // also carries (RFC 9112 §6.3): passed on, that length would cut the body short.
    if present.has(&header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let upgrade = (status == StatusCode::SWITCHING_PROTOCOLS)
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(headers, &present);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// The `Upgrade` protocol if the request is a WebSocket handshake (`Connection: upgrade`,
/// `Upgrade: websocket`, a `Sec-WebSocket-Key`). Nothing else is ever upgraded: after a `101`
/// the proxy only copies bytes, so an upgrade to, say, `h2c` would open a tunnel in which
/// requests reach the upstream without passing any rule.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    let protocol = headers.get(header::UPGRADE)?;
    let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
    (asks && websocket && headers.contains_key(header::SEC_WEBSOCKET_KEY)).then(|| protocol.clone())
}

/// Whether an upstream's `101` completes the WebSocket handshake the client started: it
/// switches to `websocket` and proves it read the client's key (RFC 6455 §4.2.2).
fn accepts_websocket(key: &HeaderValue, response: &HeaderMap) -> bool {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(openssl::sha::sha1(&[key.as_bytes(), GUID].concat()));
    let upgrade = response
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let accept = response
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    upgrade && accept
}

/// Removes the hop-by-hop headers `present` found, and every header `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap, present: &Present) {
    // `close` names no header, and `keep-alive` is removed below anyway.
    let names_none = |token: &[u8]| {
        token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive")
    };
    if present.has(&header::CONNECTION) {
        let lines = headers.get_all(header::CONNECTION);
        // A plain `keep-alive` or `close`, nearly every `Connection` there is, is not taken
        // apart.
        if !lines.iter().all(|line| names_none(line.as_bytes())) {
            let named: Vec<HeaderName> = lines
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|token| !names_none(token.as_bytes()))
                .filter_map(|token| HeaderName::try_from(token).ok())
                // The framing of the request is the proxy's business, not the client's to
                // remove.
                .filter(|name| *name != header::HOST && *name != header::CONTENT_LENGTH)
                .collect();
            for name in &named {
                headers.remove(name);
            }
        }
    }
    for (name, _) in HOP_BY_HOP
        .iter()
        .zip(present.hop_by_hop)
        .filter(|(_, here)| *here)
    {
        headers.remove(name);
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A request rewritten for its upstream ([`outgoing`]), to be sent on the upstream's [`Pool`]
/// and its answer passed to [`answered`] with `exchange`. Forwarding is these three steps
/// rather than one `async fn`: the request's future then holds the pool's send alone while it
/// waits, not the downstream head beside it (an `async fn` keeps room for its arguments after
/// they are moved), and moves one future fewer.
pub struct Outgoing {
    pub request: Request<UpstreamBody>,
    pub exchange: Exchange,
}

/// What the upstream's answer is judged and passed on under.
pub struct Exchange {
    permit: Permit,
    /// The `Sec-WebSocket-Key` of a WebSocket handshake; `None` for any other request.
    websocket_key: Option<HeaderValue>,
    /// When it went out (the clock's: the moment's time would count the work done before it
    /// in this poll; the answer comes in a later poll, whose moment is when it was handed
    /// over).
    sent: std::time::Instant,
}

/// Rewrites `request` for its upstream at `path_and_query` under `permit`: the header
/// rewrite, the target, and the body streaming through with `max_body` enforced as it flows.
pub fn outgoing(
    config: &Config,
    permit: Permit,
    request: Request<RequestBody>,
    path_and_query: &str,
    fwd: &Forwarding<'_>,
) -> Result<Outgoing, Error> {
    let (mut parts, body) = request.into_parts();
    let may_upgrade = parts.version == Version::HTTP_11 && parts.method == http::Method::GET;
    let is_upgrade = rewrite_request_headers(&mut parts.headers, &permit, fwd, may_upgrade);
    // A handshake always has its key (`upgrade_protocol`).
    let websocket_key = is_upgrade
        .then(|| parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned())
        .flatten();
    // The downstream target as it is when normalizing changed nothing: shared, not re-parsed.
    let target = match parts.uri.path_and_query() {
        Some(original) if original.as_str() == path_and_query => original.clone(),
        _ => PathAndQuery::try_from(path_and_query)
            .map_err(|_| Error::BadRequest("the request target cannot be forwarded"))?,
    };
    // Origin form: the pool adds scheme and authority where the protocol wants them (HTTP/2).
    parts.uri = Uri::from(target);
    parts.version = Version::HTTP_11;
    let max_body = usize::try_from(config.server.max_body).unwrap_or(usize::MAX);
    let body = UpstreamBody::new(Limited::new(body, max_body), fwd.conn);
    Ok(Outgoing {
        request: Request::from_parts(parts, body),
        exchange: Exchange {
            permit,
            websocket_key,
            sent: std::time::Instant::now(),
        },
    })
}

/// The upstream's answer to an [`Outgoing`] request as the client gets it: a failure as the
/// status it deserves, the response's hop-by-hop headers stripped, a WebSocket upgrade checked
/// and spliced to the client's connection `conn`; the body streams back.
pub fn answered(
    sent: Result<Response<PooledBody>, SendError>,
    exchange: Exchange,
    config: &Config,
    upstream: &config::Upstream,
    conn: &std::sync::Arc<ConnInfo>,
) -> Result<Response<Body>, Error> {
    let response = match sent {
        Ok(response) => response,
        Err(SendError::Timeout) => {
            telemetry::upstream_error("timeout");
            return Err(Error::UpstreamTimeout);
        }
        Err(SendError::Busy) => {
            telemetry::upstream_error("busy");
            return Err(Error::UpstreamBusy(format!(
                "{}: every connection max_connections allows stayed busy",
                upstream.name
            )));
        }
        Err(err) => {
            let error = classify(&err, &upstream.name);
            if !matches!(error, Error::PayloadTooLarge) {
                telemetry::upstream_error(match err {
                    SendError::Connect(_) => "connect",
                    _ => "request",
                });
            }
            return Err(error);
        }
    };
    let Exchange {
        permit,
        websocket_key,
        sent,
    } = exchange;
    telemetry::upstream_latency(crate::clock::now().saturating_duration_since(sent));

    let (mut parts, body) = response.into_parts();
    rewrite_response_headers(parts.status, &mut parts.headers);
    permit.apply_to_response(&mut parts.headers);
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        let completes = websocket_key.is_some_and(|key| accepts_websocket(&key, &parts.headers));
        if !completes {
            telemetry::upstream_error("bad_upgrade");
            return Err(Error::UpstreamUnavailable(format!(
                "{}: answered 101 without completing a WebSocket handshake",
                upstream.name
            )));
        }
        let mut upstream_response = Response::from_parts(parts, body);
        let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
        let (parts, _) = upstream_response.into_parts();
        // The tunnel keeps the downstream connection (and its slot under
        // `server.max_connections`) until either side closes, it idles past
        // `server.idle_timeout`, or the server shuts down.
        tokio::spawn(tunnel::splice(
            conn.clone(),
            conn.on_upgrade(),
            upstream_upgrade,
            config.server.idle_timeout,
        ));
        return Ok(Response::from_parts(parts, crate::body::empty()));
    }
    let body = body.boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// Maps a send error to the right status: our body cap → 413, otherwise upstream's fault.
fn classify(err: &SendError, upstream: &str) -> Error {
    let (kind, err): (_, &(dyn std::error::Error + 'static)) = match err {
        SendError::Connect(err) => ("connect", &**err),
        SendError::Request(err) => ("request", err),
        SendError::Exchange(err) => ("request", err),
        SendError::Timeout => return Error::UpstreamTimeout,
        SendError::Busy => return Error::UpstreamBusy(upstream.to_owned()),
    };
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return Error::PayloadTooLarge;
        }
        source = cause.source();
    }
    Error::UpstreamUnavailable(format!("{upstream}: {kind} failed: {}", error_chain(err)))
}

/// `a: b: c` from an error and its sources, for log lines.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
