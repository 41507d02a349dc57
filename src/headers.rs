//! Header names the proxy treats specially, as plain predicates on names: hop-by-hop ones,
//! the ones it decides for the upstream itself, and identity claims only it may assert. Below
//! configuration (which refuses claim headers by these rules), forwarding and forward auth.
//! And, for both of the proxy's own HTTP/1.1 readers and writers (the server's lane and the
//! pool's exchange), how field lines are written and how two kinds of value are read.

use http::header::{self, HeaderName};

pub const HOP_BY_HOP_COUNT: usize = 10;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard ones still seen in the wild).
///
/// A `static`, not a `const`: a `const` array of header names is built and dropped again at
/// every use.
pub static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    // Only meaningful with `Upgrade: h2c` (RFC 7540 §3.2.1), which is never forwarded.
    HeaderName::from_static("http2-settings"),
];

/// Headers the proxy itself decides for the upstream; a route may not fill them from claims.
pub fn is_reserved_header(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || *name == header::AUTHORIZATION
        || *name == header::HOST
        || *name == header::COOKIE
        || *name == header::CONTENT_LENGTH
        || name.as_str().starts_with("x-forwarded-")
        || *name == header::FORWARDED
}

/// Whether a client-sent header claims an identity that only the proxy may assert. Matched on
/// the lower-cased name with `_` and `-` read as the same character on both sides, since
/// upstreams differ in which spelling they keep: CGI, WSGI and PHP fold both into one
/// variable, while nginx and gunicorn drop `_` names, so a forged `-` spelling of a `_` name
/// would be the only one the application sees.
pub fn is_identity_header(name: &str, configured: &[HeaderName]) -> bool {
    // Header names arrive lower-cased; the comparison folds `_` into `-` without allocating
    // (this runs for every header of every request).
    let fold = |b: u8| if b == b'_' { b'-' } else { b };
    let starts = |prefix: &str| {
        name.len() >= prefix.len()
            && name
                .bytes()
                .zip(prefix.bytes())
                .all(|(a, b)| fold(a) == fold(b))
    };
    let equals = |other: &str| name.len() == other.len() && starts(other);
    let configured = || configured.iter().any(|h| equals(h.as_str()));
    // Every built-in name starts with `x`, `f` or `r`: most headers are cleared by one byte.
    if !matches!(name.as_bytes().first(), Some(b'x' | b'f' | b'r')) {
        return configured();
    }
    const PREFIXES: [&str; 4] = ["x-user-", "x-auth-", "x-forwarded-", "x-remote-"];
    const NAMES: [&str; 8] = [
        "x-user",
        "forwarded",
        "remote-user",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-real-ip",
        "x-request-id",
    ];
    PREFIXES.iter().any(|p| starts(p)) || NAMES.iter().any(|n| equals(n)) || configured()
}

/// Writes `headers` as HTTP/1.1 field lines (`name: value\r\n`, names as `http` keeps them,
/// lowercase) into `out`. Names and values are valid by construction of their types: no line
/// can be split or added.
pub fn put_fields(out: &mut impl bytes::BufMut, headers: &http::HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Whether a comma-separated field value (`Connection`) lists `token`, case-insensitively.
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

/// A decimal number of ASCII digits only (no sign, no space), as `Content-Length` is.
pub fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.iter().try_fold(0u64, |n, digit| {
        n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}
