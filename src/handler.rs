//! The per-request pipeline: one function that shows every phase in order.
//!
//! request filter (method, target, limits) → normalize → the proxy's own endpoints → route →
//! admit (authenticate, authorize) → forward (rewrite, stream) → log. [`handle`] never fails:
//! every error becomes a response in exactly one place, `Error::into_response`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::{error, info, warn};

use crate::auth::{Admission, Authenticator};
use crate::body::{self, Body};
use crate::config::Config;
use crate::error::{Error, Source};
use crate::path;
use crate::rules::{self, Rule};
use crate::upstream::{self, Forwarding, Pool};
use crate::ConnInfo;

/// Everything a request needs, built once from a validated configuration.
pub struct App {
    pub config: Config,
    /// One connection pool per upstream, in `config.upstreams` order.
    pub pools: Vec<Pool>,
    pub auth: Authenticator,
    /// TLS termination settings, when `server.tls` is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Every header name a rule fills from claims; clients may never send these.
    identity_headers: Vec<HeaderName>,
    /// Request counters per rule, registered once.
    metrics: crate::telemetry::RequestMetrics,
}

impl App {
    pub fn new(config: Config) -> Result<App, Error> {
        let pools = config
            .upstreams
            .iter()
            .map(|u| upstream::pool(&config.server, u))
            .collect::<Result<Vec<_>, _>>()?;
        let backend_tls = config
            .backend
            .as_ref()
            .map(|b| b.client.clone())
            .unwrap_or_default();
        let backend_client = upstream::client(&config.server, &backend_tls)?;
        let tls = match &config.server.tls {
            Some(files) => Some(crate::tls::acceptor(files).map_err(Error::Internal)?),
            None => None,
        };
        let auth = Authenticator::new(&config, backend_client)?;
        let mut identity_headers: Vec<HeaderName> = config
            .rules
            .iter()
            .flat_map(|rule| rule.headers.iter().map(|(name, _)| name.clone()))
            .collect();
        identity_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        identity_headers.dedup();
        let metrics = crate::telemetry::RequestMetrics::new(config.rules.len());
        Ok(App {
            config,
            pools,
            auth,
            tls,
            identity_headers,
            metrics,
        })
    }
}

/// What the access log records about a request, filled in as the pipeline runs.
#[derive(Default)]
struct Trace<'a> {
    path: Option<String>,
    rule: Option<&'a Rule>,
}

/// Runs `pipeline`, answering `500` if it panics: a bug in one request's handling costs that
/// request, never the connection's other requests or the process.
pub async fn guarded<F>(pipeline: F) -> Response<Body>
where
    F: std::future::Future<Output = Response<Body>>,
{
    use futures_util::FutureExt as _;
    match std::panic::AssertUnwindSafe(pipeline).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(panic = %what, "request handling panicked");
            Error::Internal("panic".to_owned()).into_response()
        }
    }
}

/// Handles one downstream request. Never fails: errors are answered here.
pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let request_id = next_request_id();
    let method = request.method().clone();
    let mut trace = Trace::default();
    let result = pipeline(&app, &conn, request, &request_id, &mut trace).await;
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            match err.source_of_fault() {
                Source::Client => {}
                Source::Upstream => {
                    warn!(request_id = ?request_id, error = %err, "upstream failure")
                }
                Source::Internal => {
                    error!(request_id = ?request_id, error = %err, "internal error")
                }
            }
            err.into_response()
        }
    };
    let elapsed = started.elapsed();
    app.metrics.request(
        trace.rule.map(|r| r.index),
        response.status().as_u16(),
        elapsed,
    );
    let upstream = trace
        .rule
        .map(|rule| app.config.upstream(rule.upstream).name.as_str());
    info!(
        target: "access",
        request_id = request_id.to_str().unwrap_or_default(),
        method = %method,
        path = trace.path.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        rule = trace.rule.map(|r| r.index as i64).unwrap_or(-1),
        upstream = upstream.unwrap_or("-"),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        peer = %conn.peer,
    );
    response
}

async fn pipeline<'a>(
    app: &'a App,
    conn: &ConnInfo,
    request: Request<Incoming>,
    request_id: &HeaderValue,
    trace: &mut Trace<'a>,
) -> Result<Response<Body>, Error> {
    // Request filter: refuse what cannot be proxied before looking at anything else.
    if request.method() == Method::CONNECT {
        return Err(Error::MethodNotAllowed);
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > app.config.server.max_header_size {
        return Err(Error::HeadersTooLarge);
    }
    if declared_length(&request)? > app.config.server.max_body {
        return Err(Error::PayloadTooLarge);
    }

    // Normalize: the one path that is matched and forwarded.
    let normalized = path::normalize(request.uri().path()).map_err(|err| {
        tracing::debug!(error = %err, "refused request path");
        Error::BadRequest(err.message())
    })?;
    // The request's own target when normalizing changed nothing (the usual case): a
    // reference-counted copy, no new string.
    let original = request.uri().path_and_query().cloned();
    let target: Cow<'_, str> = match (&original, request.uri().query()) {
        (Some(pq), _) if pq.path() == normalized => Cow::Borrowed(pq.as_str()),
        (_, Some(query)) => Cow::Owned(format!("{normalized}?{query}")),
        (_, None) => Cow::Owned(normalized.clone()),
    };
    trace.path = Some(normalized);
    let normalized = trace.path.as_deref().unwrap_or("/");

    // The proxy's own endpoints, before any rule. Like rules, they ignore one trailing `/`.
    let method = request.method();
    let own = path::without_trailing_slash(normalized);
    if own == app.config.login.path && method == Method::POST && app.config.backend.is_some() {
        let client_ip =
            upstream::client_ip(conn, request.headers(), &app.config.server.trusted_proxies);
        let trusted = upstream::is_trusted(conn.peer.ip(), &app.config.server.trusted_proxies);
        // The own endpoints' futures are boxed: they call the backend, and unboxed they would
        // make every request's future (which hyper keeps per connection) as large as theirs.
        return Box::pin(app.auth.login(request, client_ip, trusted)).await;
    }
    if own == app.config.logout.path {
        if method != Method::POST && method != Method::GET {
            return Err(Error::MethodNotAllowed);
        }
        let trusted = upstream::is_trusted(conn.peer.ip(), &app.config.server.trusted_proxies);
        return Box::pin(app.auth.logout(request, trusted)).await;
    }
    if own == app.config.session.me_path {
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed);
        }
        return Box::pin(app.auth.me(request.headers())).await;
    }

    // Route.
    let rule = rules::route(&app.config.rules, normalized).ok_or(Error::NotFound)?;
    trace.rule = Some(rule);

    // Admit: authenticate and authorize; only an admitted request gets a permit.
    let (parts, body) = request.into_parts();
    let admission = app.auth.admit(rule, &parts, &target).await;
    crate::telemetry::auth(match &admission {
        Ok(Admission::Forward(_)) => "allow",
        Ok(Admission::Redirect(_)) => "guest_redirect",
        Err(Error::Unauthenticated { login: Some(_), .. }) => "redirect",
        Err(Error::Unauthenticated { login: None, .. }) => "unauthenticated",
        Err(Error::Forbidden(_)) => "forbidden",
        Err(_) => "error",
    });
    let permit = match admission? {
        Admission::Forward(permit) => permit,
        Admission::Redirect(location) => return Ok(redirect(http::StatusCode::FOUND, &location)),
    };

    let request = Request::from_parts(parts, body);

    // Forward.
    let session = &app.config.session;
    let forwarding = Forwarding {
        conn,
        trusted_proxies: &app.config.server.trusted_proxies,
        own_cookies: [&session.access_cookie, &session.refresh_cookie],
        identity_headers: &app.identity_headers,
        request_id,
    };
    let upstream = app.config.upstream(rule.upstream);
    upstream::forward(
        &app.pools[rule.upstream],
        &app.config,
        upstream,
        permit,
        request,
        &target,
        &forwarding,
    )
    .await
}

/// The declared body length, refusing conflicting or unparsable `Content-Length` headers and
/// any `Transfer-Encoding` but plain `chunked` (a coding the proxy would silently drop, and
/// the classic lever of request smuggling).
fn declared_length<B>(request: &Request<B>) -> Result<u64, Error> {
    let mut codings = request
        .headers()
        .get_all(http::header::TRANSFER_ENCODING)
        .iter();
    if let Some(first) = codings.next() {
        if !first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
            || codings.next().is_some()
        {
            return Err(Error::BadRequest(
                "only Transfer-Encoding: chunked is accepted",
            ));
        }
    }
    let mut length = None;
    for value in request.headers().get_all(CONTENT_LENGTH) {
        let parsed = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(Error::BadRequest("invalid Content-Length"))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(Error::BadRequest("conflicting Content-Length headers"));
        }
        length = Some(parsed);
    }
    Ok(length.unwrap_or(0))
}

/// A redirect to a same-site path the proxy chose (never one taken from the request as is).
pub fn redirect(status: http::StatusCode, location: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// A short unique id for each request, for the access log and the upstream's `X-Request-Id`.
fn next_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{boot:08x}-{n:x}`, written by hand on the stack (no formatting machinery): the header
    // value is then the one allocation.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 8 + 1 + 16];
    let boot = boot as u32;
    for (i, byte) in text[..8].iter_mut().enumerate() {
        *byte = HEX[((boot >> (28 - 4 * i)) & 0xf) as usize];
    }
    text[8] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        text[9 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text[..9 + digits]).expect("hex digits are header-safe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_boot_and_counter_in_hex() {
        let first = next_request_id();
        let second = next_request_id();
        let (boot, n) = first
            .to_str()
            .expect("ascii")
            .split_once('-')
            .expect("a dash");
        assert_eq!(boot.len(), 8);
        assert!(boot.bytes().all(|b| b.is_ascii_hexdigit()));
        let n = u64::from_str_radix(n, 16).expect("hex counter");
        let (_, m) = second
            .to_str()
            .expect("ascii")
            .split_once('-')
            .expect("a dash");
        assert!(u64::from_str_radix(m, 16).expect("hex counter") > n);
    }

    #[tokio::test]
    async fn a_panicking_request_gets_500_and_the_runtime_survives() {
        let response = guarded(async { panic!("injected") }).await;
        assert_eq!(response.status(), 500);
        let fine = guarded(async { Response::new(body::empty()) }).await;
        assert_eq!(fine.status(), 200);
    }
}
