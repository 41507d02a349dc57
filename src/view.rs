//! The request as the proxy sees it: which origin it was sent to (scheme, host, port), which
//! normalized path and target, from which client. Both front doors build one — proxy mode
//! from the request itself, forward auth from the ingress's description of it — and every
//! later phase (route, admit, forward or answer) reads only this view.
//!
//! [`authority`] is *the* host of a request: host rules, the `Host` sent upstream and the
//! origin admission compares against all come from it. It follows the RFCs to the letter,
//! because a host two servers read differently is a host rule walked around: exactly one
//! `Host` on HTTP/1.x (RFC 9112 §3.2), an absolute-form target's authority over it (§3.2.2),
//! `:authority` over a `host` header on HTTP/2 (RFC 9113 §8.3.1), no userinfo, and `400` for
//! a missing or malformed one. `X-Forwarded-Host`/`-Proto` are believed only from
//! `server.trusted_proxies` (and from the ingress in forward auth).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Version};
use ipnet::IpNet;

use crate::error::Error;
use crate::path;
use crate::ConnInfo;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The scheme a request was sent with, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`, in any case; anything else is not a scheme a browser sent.
    pub fn parse(text: &str) -> Option<Scheme> {
        if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }
}

/// A validated `host[:port]`: a DNS name, an IPv4 address or a bracketed IPv6 address, and
/// an optional port. No userinfo, no percent-encoding, no empty labels.
#[derive(Clone, PartialEq, Eq)]
pub struct Host {
    /// The text as received, case kept: what the upstream is sent as `Host`.
    value: HeaderValue,
    /// Length of the host part (brackets included, port excluded).
    host_len: usize,
    port: Option<u16>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({:?})", self.as_str())
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Host {
    /// Parses a `Host` value (or an authority). The error is fit for a client.
    pub fn parse(value: HeaderValue) -> Result<Host, &'static str> {
        let bytes = value.as_bytes();
        if bytes.is_empty() {
            return Err("empty Host");
        }
        // `@` is in none of the forms below: looked for only to say why a host is refused.
        let (host_len, port) = Host::split(bytes).map_err(|malformed| {
            if bytes.contains(&b'@') {
                "userinfo in the request's host"
            } else {
                malformed
            }
        })?;
        Ok(Host {
            value,
            host_len,
            port,
        })
    }

    /// The length of the host part of a non-empty `bytes` and its port, in one pass over a
    /// name (this runs for every request).
    fn split(bytes: &[u8]) -> Result<(usize, Option<u16>), &'static str> {
        let host_len = if bytes[0] == b'[' {
            let close = bytes
                .iter()
                .position(|&b| b == b']')
                .ok_or("malformed Host")?;
            let inside = std::str::from_utf8(&bytes[1..close]).map_err(|_| "malformed Host")?;
            inside
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| "malformed Host")?;
            close + 1
        } else {
            // Letters, digits, `-`, `_` and dots; labels are never empty, but one trailing dot
            // (a fully qualified name) is allowed. (`previous` starts as a dot so that a
            // leading one counts as an empty label.)
            let mut end = bytes.len();
            let mut previous = b'.';
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b':' => {
                        end = i;
                        break;
                    }
                    b'.' if previous == b'.' => return Err("malformed Host"),
                    b'.' | b'-' | b'_' => {}
                    _ if b.is_ascii_alphanumeric() => {}
                    _ => return Err("malformed Host"),
                }
                previous = b;
            }
            if end == 0 {
                return Err("malformed Host");
            }
            end
        };
        let port = match &bytes[host_len..] {
            [] => None,
            // 1 to 65535, written one way: no leading zero (`:080`, `:00000`), so the port a
            // rule or an origin compares is the text that goes upstream.
            [b':', digits @ ..] if (1..=5).contains(&digits.len()) && digits[0] != b'0' => {
                let mut port: u32 = 0;
                for &digit in digits {
                    if !digit.is_ascii_digit() {
                        return Err("malformed port in Host");
                    }
                    port = port * 10 + u32::from(digit - b'0');
                }
                Some(u16::try_from(port).map_err(|_| "malformed port in Host")?)
            }
            [b':', ..] => return Err("malformed port in Host"),
            _ => return Err("malformed Host"),
        };
        Ok((host_len, port))
    }

    fn from_authority(authority: &http::uri::Authority) -> Result<Host, &'static str> {
        let value = HeaderValue::from_str(authority.as_str()).map_err(|_| "malformed Host")?;
        Host::parse(value)
    }

    /// `host[:port]` as received.
    pub fn as_str(&self) -> &str {
        self.value.to_str().expect("a parsed Host is visible ASCII")
    }

    /// The host without its port, case kept (`[::1]` keeps its brackets).
    pub fn name(&self) -> &str {
        &self.as_str()[..self.host_len]
    }

    /// The host for comparisons: without its port and without one trailing dot
    /// (`App.Example.com.` is `App.Example.com`); compare it without regard to ASCII case.
    pub fn matchable(&self) -> &str {
        let name = self.name();
        name.strip_suffix('.').unwrap_or(name)
    }

    /// The explicit port, if the host carried one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The value to send as `Host`.
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }
}

/// *The* host of a request, as it reached this listener: what host rules match (unless a
/// trusted proxy names another, see [`RequestView`]) and what the upstream is sent as `Host`.
///
/// - HTTP/2 and later: `:authority`, whatever `host` headers say; without it, exactly one
///   `host` header.
/// - HTTP/1.x: exactly one valid `Host` header, always (RFC 9112 §3.2); with an absolute-form
///   target, the target's authority replaces it (§3.2.2).
/// - Userinfo (`evil@app.test`) anywhere, a missing, repeated or malformed host: `400`.
pub fn authority(parts: &Parts) -> Result<Host, Error> {
    let mut headers = parts.headers.get_all(header::HOST).iter();
    let first = headers.next();
    let repeated = headers.next().is_some();
    if parts.version >= Version::HTTP_2 {
        if let Some(authority) = parts.uri.authority() {
            return Host::from_authority(authority).map_err(Error::BadRequest);
        }
    }
    if repeated {
        return Err(Error::BadRequest("more than one Host header"));
    }
    let header = first.ok_or(Error::BadRequest("missing Host header"))?;
    let host = Host::parse(header.clone()).map_err(Error::BadRequest)?;
    match parts.uri.authority() {
        Some(authority) => Host::from_authority(authority).map_err(Error::BadRequest),
        None => Ok(host),
    }
}

/// The first host a trusted proxy forwarded in `X-Forwarded-Host` (the client-facing one of
/// a chain), if any. A malformed one is refused like a malformed `Host`.
pub fn forwarded_host(headers: &HeaderMap) -> Result<Option<Host>, Error> {
    let Some(value) = headers.get(X_FORWARDED_HOST) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::BadRequest("malformed X-Forwarded-Host"))?;
    let first = text.split(',').next().unwrap_or("").trim();
    if first.is_empty() {
        return Ok(None);
    }
    let value = HeaderValue::from_str(first)
        .map_err(|_| Error::BadRequest("malformed X-Forwarded-Host"))?;
    Host::parse(value)
        .map(Some)
        .map_err(|_| Error::BadRequest("malformed X-Forwarded-Host"))
}

/// The scheme a trusted proxy says the client used (`X-Forwarded-Proto`, first of a chain).
pub fn forwarded_proto(headers: &HeaderMap) -> Option<Scheme> {
    let text = headers.get(X_FORWARDED_PROTO)?.to_str().ok()?;
    Scheme::parse(text.split(',').next()?.trim())
}

/// Whether the peer is a configured trusted proxy, whose `X-Forwarded-*` headers are believed.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = crate::unmapped(peer);
    trusted.iter().any(|net| net.contains(&peer))
}

/// The client's address: the peer, or — behind trusted proxies — the nearest untrusted
/// address in `X-Forwarded-For`, read from the right.
pub fn client_ip(conn: &ConnInfo, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(conn.peer.ip(), trusted) {
        return conn.peer.ip();
    }
    forwarded_client(conn.peer.ip(), headers, trusted)
}

/// The nearest address in `X-Forwarded-For` that is not a trusted proxy, read from the right
/// of a chain that `peer` (believed) sent; `peer` itself when the chain is empty.
pub fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer;
    let hops = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, `ip:port` (as Azure Application Gateway writes)
/// or `[v6]:port`, with an IPv4-mapped IPv6 address read as the IPv4 address it is.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
    Some(crate::unmapped(ip))
}

/// How a request's path is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathForm {
    /// Normalized ([`path::normalize`]): the proxy forwards the path it decided on.
    Normalized,
    /// Taken only if already normal ([`path::normal`]): someone else forwards the request as
    /// it was sent (forward auth), so a path whose meaning depends on how dot segments and
    /// `//` are resolved is refused.
    AsSent,
}

/// The normalized path (placed in `slot`, which outlives the view: the access log reads it)
/// and the target sent upstream: that path plus the original query, borrowed from `raw`
/// when normalizing changed nothing (the usual case).
pub fn normalize<'s, 'q>(
    raw: &'q str,
    slot: &'s mut Option<String>,
    form: PathForm,
) -> Result<(&'s str, Cow<'q, str>), Error> {
    let (raw_path, query) = split_target(raw);
    let normalized = normalized_path(raw_path, form)?.unwrap_or_else(|| raw_path.to_owned());
    let path: &'s str = slot.insert(normalized);
    Ok((path, with_query(raw, raw_path, query, path)))
}

/// [`normalize`] for a target that outlives the view (proxy mode): a path that normalizing
/// leaves alone is borrowed from `raw`, and copied into `slot` only when the access log,
/// which outlives the request, is on.
pub fn normalize_shared<'r>(
    raw: &'r str,
    slot: &'r mut Option<String>,
) -> Result<(&'r str, Cow<'r, str>), Error> {
    let (raw_path, query) = split_target(raw);
    let path: &'r str = match normalized_path(raw_path, PathForm::Normalized)? {
        Some(changed) => slot.insert(changed),
        None if tracing::enabled!(target: "access", tracing::Level::INFO) => {
            slot.insert(raw_path.to_owned())
        }
        None => raw_path,
    };
    Ok((path, with_query(raw, raw_path, query, path)))
}

/// The path and the query of a request target.
fn split_target(raw: &str) -> (&str, Option<&str>) {
    match memchr::memchr(b'?', raw.as_bytes()) {
        Some(at) => (&raw[..at], Some(&raw[at + 1..])),
        None => (raw, None),
    }
}

/// The path to decide on as `form` asks, or `None` when `raw_path` is already in normal form
/// (the usual case, decided without allocating: such a path is its own normal form either
/// way).
fn normalized_path(raw_path: &str, form: PathForm) -> Result<Option<String>, Error> {
    if path::is_normal_form(raw_path) {
        return Ok(None);
    }
    match form {
        PathForm::Normalized => path::normalize(raw_path),
        PathForm::AsSent => path::normal(raw_path),
    }
    .map(Some)
    .map_err(|err| {
        tracing::debug!(error = %err, "refused request path");
        Error::BadRequest(err.message())
    })
}

/// The target sent upstream: `path` with the original query, `raw` itself when `path` is
/// the raw path.
fn with_query<'q>(raw: &'q str, raw_path: &str, query: Option<&str>, path: &str) -> Cow<'q, str> {
    match query {
        _ if raw_path == path => Cow::Borrowed(raw),
        Some(query) => Cow::Owned(format!("{path}?{query}")),
        None => Cow::Owned(path.to_owned()),
    }
}

/// One request as the proxy sees it, whichever door it came through.
#[derive(Debug)]
pub struct RequestView<'r> {
    pub method: Method,
    /// The origin the client sent the request to (`X-Forwarded-Proto`/`-Host` from a trusted
    /// proxy or the ingress, else the connection and [`authority`]): what host rules match
    /// and what an `Origin` header is compared with.
    pub scheme: Scheme,
    pub host: Host,
    /// The normalized path: what rules match and what goes upstream.
    pub path: &'r str,
    /// The normalized path with the original query.
    pub target: Cow<'r, str>,
    pub headers: &'r HeaderMap,
    pub client_ip: IpAddr,
}

impl<'r> RequestView<'r> {
    /// Proxy mode: the view of a request received on `server.listen`. Its host is the one
    /// the upstream is sent as `Host`.
    pub fn proxied(
        parts: &'r Parts,
        conn: &ConnInfo,
        trusted_proxies: &[IpNet],
        path_slot: &'r mut Option<String>,
    ) -> Result<RequestView<'r>, Error> {
        let raw = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let (path, target) = normalize_shared(raw, path_slot)?;
        let authority = authority(parts)?;
        let trusted_peer = is_trusted(conn.peer.ip(), trusted_proxies);
        let (scheme, host) = if trusted_peer {
            let scheme = forwarded_proto(&parts.headers);
            let host = forwarded_host(&parts.headers)?;
            (scheme, host)
        } else {
            (None, None)
        };
        let view = RequestView {
            method: parts.method.clone(),
            scheme: scheme.unwrap_or(if conn.tls {
                Scheme::Https
            } else {
                Scheme::Http
            }),
            host: host.unwrap_or(authority),
            path,
            target,
            headers: &parts.headers,
            client_ip: client_ip(conn, &parts.headers, trusted_proxies),
        };
        Ok(view)
    }

    /// The port of the origin: explicit, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.host
            .port()
            .unwrap_or_else(|| self.scheme.default_port())
    }
}

#[cfg(test)]
mod tests;
