//! The per-request pipeline: the phases every request runs through, in order, whichever front
//! door it came in by.
//!
//! Proxy mode (`server.listen`): request filter (method, limits) → view (normalize, host) →
//! the proxy's own endpoints → route → admit (authenticate, authorize) → forward (rewrite,
//! stream) → log. Forward auth (`forward_auth.listen`, [`crate::forward_auth`]) runs the same
//! view, route and admit phases on the request the ingress describes, then answers instead of
//! forwarding. [`handle`] never fails: every error becomes a response in exactly one place
//! per door (`Error::into_response`, or `forward_auth::answer`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Method, Request, Response};
use tracing::{error, info, warn};

use crate::auth::{Admission, Authenticator};
use crate::body::{Body, RequestBody};
use crate::config::Config;
use crate::error::{Error, Source};
use crate::forward_auth::{self, Ingress};
use crate::response;
use crate::rules::{self, Rule};
use crate::upstream::{self, Forwarding, Pool};
use crate::view::RequestView;
use crate::ConnInfo;

/// The listener a request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `server.listen`: requests are forwarded.
    Proxy,
    /// `forward_auth.listen`: an ingress asks about a request; it is answered.
    ForwardAuth,
}

impl Door {
    /// The `mode` of access log lines and metrics.
    pub fn mode(self) -> &'static str {
        match self {
            Door::Proxy => "proxy",
            Door::ForwardAuth => "forward_auth",
        }
    }
}

/// Everything a request needs, built once from a validated configuration.
pub struct App {
    pub config: Config,
    /// One connection pool per upstream, in `config.upstreams` order.
    pub pools: Vec<Pool>,
    pub auth: Authenticator,
    /// TLS termination settings, when `server.tls` is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The names the server answers for (`server.hosts`, else its certificates' names): the
    /// only hosts the plain-HTTP listener redirects to.
    pub served_names: Vec<String>,
    /// Every header name a rule fills from claims; clients may never send these.
    identity_headers: Vec<HeaderName>,
    /// Request counters per rule, registered once.
    metrics: crate::telemetry::RequestMetrics,
}

impl App {
    /// An `App` with shared state of its own (a single instance, no `[cluster]`).
    pub fn new(config: Config) -> Result<App, Error> {
        App::with_cluster(config, Arc::new(crate::cluster::Cluster::local()))
    }

    /// An `App` over `cluster`, the shared state that outlives configuration reloads.
    pub fn with_cluster(
        config: Config,
        cluster: Arc<crate::cluster::Cluster>,
    ) -> Result<App, Error> {
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
        let served_names = match &config.server.tls {
            _ if !config.server.hosts.is_empty() => config.server.hosts.clone(),
            Some(files) => crate::tls::served_names(files).map_err(Error::Internal)?,
            None => Vec::new(),
        };
        let auth = Authenticator::new(&config, backend_client, cluster)?;
        let identity_headers = config.claim_headers();
        // Each rule's metrics label: its path pattern, after its host when it has one.
        let patterns: Vec<String> = config
            .rules
            .iter()
            .map(|r| match &r.host {
                Some(host) => format!("{host}{}", r.pattern),
                None => r.pattern.to_string(),
            })
            .collect();
        let metrics = crate::telemetry::RequestMetrics::new(&patterns);
        Ok(App {
            config,
            pools,
            auth,
            tls,
            served_names,
            identity_headers,
            metrics,
        })
    }
}

/// What the pipeline learns about a request that outlives its result: what the access log
/// records, and cookies renewed on the way, which every response to the request carries.
#[derive(Default)]
struct Trace<'a> {
    /// The method of the request as the view saw it (forward auth: the original one).
    method: Option<Method>,
    path: Option<String>,
    rule: Option<&'a Rule>,
    /// The admission's outcome (`allow`, `unauthenticated`, `csrf`, …), once there is one.
    auth: Option<&'static str>,
    renewed: Vec<HeaderValue>,
}

/// Runs `pipeline`, answering `500` if it panics: a bug in one request's handling costs that
/// request, never the connection's other requests or the process. The pipeline is boxed here,
/// where it is made, so that its several-KiB future is copied once; the answer is `Unpin`.
pub fn guarded<F>(pipeline: F) -> Guarded<F>
where
    F: std::future::Future<Output = Response<Body>>,
{
    Guarded {
        pipeline: Box::pin(pipeline),
    }
}

/// A request's pipeline that answers `500` if it panics ([`guarded`]).
pub struct Guarded<F> {
    pipeline: std::pin::Pin<Box<F>>,
}

impl<F> std::future::Future for Guarded<F>
where
    F: std::future::Future<Output = Response<Body>>,
{
    type Output = Response<Body>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response<Body>> {
        let _moment = crate::clock::moment();
        let pipeline = self.pipeline.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.poll(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(panic = %what, "request handling panicked");
                std::task::Poll::Ready(Error::Internal("panic".to_owned()).into_response())
            }
        }
    }
}

/// Handles one request that came in by `door`. Never fails: errors are answered here.
pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    request: Request<RequestBody>,
    door: Door,
) -> Response<Body> {
    // The moment's time is when the connection woke for this request; the end is read from
    // the clock, so that a request answered in one poll is not timed at zero.
    let started = crate::clock::now();
    let request_id = next_request_id();
    let method = request.method().clone();
    let mut trace = Trace::default();
    let response = match door {
        Door::Proxy => {
            let result = proxy(&app, &conn, request, &request_id, &mut trace).await;
            let mut response = result.unwrap_or_else(|err| {
                log_failure(&err, &request_id);
                err.into_response()
            });
            session_cookies_out(&app, &mut response, std::mem::take(&mut trace.renewed));
            response
        }
        Door::ForwardAuth => forward_auth(&app, &conn, request, &request_id, &mut trace).await,
    };
    let elapsed = started.elapsed();
    app.metrics.request(
        door.mode(),
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
        mode = door.mode(),
        method = %trace.method.as_ref().unwrap_or(&method),
        path = trace.path.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        rule = trace.rule.map(|r| r.index as i64).unwrap_or(-1),
        upstream = upstream.unwrap_or("-"),
        auth = trace.auth.unwrap_or("-"),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        peer = %conn.peer,
    );
    response
}

fn log_failure(err: &Error, request_id: &HeaderValue) {
    match err.source_of_fault() {
        Source::Client => {}
        Source::Upstream => warn!(request_id = ?request_id, error = %err, "upstream failure"),
        Source::Internal => error!(request_id = ?request_id, error = %err, "internal error"),
    }
}

/// Proxy mode: the request goes upstream if admitted.
async fn proxy<'a>(
    app: &'a App,
    conn: &Arc<ConnInfo>,
    request: Request<RequestBody>,
    request_id: &HeaderValue,
    trace: &mut Trace<'a>,
) -> Result<Response<Body>, Error> {
    filter(&app.config, &request)?;
    // The head, the view of it and the admission live in this block: the request's future
    // holds them while it authenticates, not while it waits for the upstream.
    let (rule, outgoing) = {
        let (parts, body) = request.into_parts();
        // The target as received, shared rather than copied: what goes upstream when
        // normalizing changed nothing (the usual case).
        let original = parts.uri.path_and_query().cloned();
        let view = RequestView::proxied(
            &parts,
            conn,
            &app.config.server.trusted_proxies,
            &mut trace.path,
        )?;
        trace.method = Some(view.method.clone());

        // The proxy's own endpoints, before any rule.
        if let Some(endpoint) = own_endpoint(&app.config, &view)? {
            let client_ip = view.client_ip;
            let site = crate::auth::csrf::Origin::of_view(&view);
            drop(view);
            let request = Request::from_parts(parts, body);
            // Boxed: these call the backend, and unboxed they would make every request's
            // future as large as theirs.
            return match endpoint {
                Endpoint::Login => {
                    Box::pin(app.auth.login(request, client_ip, site.as_ref())).await
                }
                Endpoint::Logout => {
                    Box::pin(app.auth.logout(request, site.as_ref(), client_ip)).await
                }
                Endpoint::Me => {
                    let renewed = &mut trace.renewed;
                    Box::pin(app.auth.me(request.headers(), client_ip, renewed)).await
                }
            };
        }

        let rule = route(app, &view)?;
        trace.rule = Some(rule);
        let admission = admit(app, rule, &view, &mut trace.renewed, &mut trace.auth).await;
        let permit = match admission? {
            Admission::Forward(permit) => permit,
            Admission::Redirect(location) => {
                return Ok(response::redirect(http::StatusCode::FOUND, &location))
            }
        };

        // Forward, to the host the rules matched (a trusted proxy's X-Forwarded-Host, else
        // the request's own): an upstream serving several sites must serve the one
        // authorized.
        let host = view.host.header_value().clone();
        let target = match view.target {
            Cow::Owned(changed) => Cow::Owned(changed),
            Cow::Borrowed(_) => Cow::Borrowed(original.as_ref().map_or("/", |pq| pq.as_str())),
        };
        let session = &app.config.session;
        let forwarding = Forwarding {
            conn,
            trusted_proxies: &app.config.server.trusted_proxies,
            own_cookies: [&session.access_cookie, &session.refresh_cookie],
            identity_headers: &app.identity_headers,
            request_id,
            host: &host,
        };
        let request = Request::from_parts(parts, body);
        let outgoing = upstream::outgoing(&app.config, permit, request, &target, &forwarding)?;
        (rule, outgoing)
    };
    let sent = app.pools[rule.upstream]
        .send(outgoing.request, app.config.server.upstream_timeout)
        .await;
    let upstream = app.config.upstream(rule.upstream);
    upstream::answered(sent, outgoing.exchange, &app.config, upstream, conn)
}

/// Forward auth: the same phases on the request the ingress describes, then an answer.
async fn forward_auth<'a>(
    app: &'a App,
    conn: &ConnInfo,
    request: Request<RequestBody>,
    request_id: &HeaderValue,
    trace: &mut Trace<'a>,
) -> Response<Body> {
    // The body of a subrequest is never read: the answer depends on the head alone.
    let (parts, _body) = request.into_parts();
    let (ingress, decision) = match Ingress::detect(&parts.headers) {
        Ok(ingress) => (ingress, decide(app, conn, &parts, ingress, trace).await),
        // Refused as nginx would need it: the stricter answer fits every ingress.
        Err(err) => (Ingress::Original, Err(err)),
    };
    if let Err(err) = &decision {
        log_failure(err, request_id);
    }
    let config = &app.config;
    let mut response = forward_auth::answer(
        ingress,
        decision,
        &parts.headers,
        config,
        &app.identity_headers,
    );
    session_cookies_out(app, &mut response, std::mem::take(&mut trace.renewed));
    forward_auth::mirror_cookies(ingress, &mut response, &config.session);
    response
}

async fn decide<'a>(
    app: &'a App,
    conn: &ConnInfo,
    parts: &Parts,
    ingress: Ingress,
    trace: &mut Trace<'a>,
) -> Result<Admission, Error> {
    let claim_headers = &app.identity_headers;
    let view = forward_auth::view(
        parts,
        conn,
        &app.config,
        ingress,
        claim_headers,
        &mut trace.path,
    )?;
    trace.method = Some(view.method.clone());
    filter_method(&view.method)?;
    // The ingress routes the proxy's own endpoints to server.listen by their exact path; one
    // asked about here is a near miss (`/logout/`, `/auth/me/`) that the ingress would send to
    // the site, with whatever `Authorization` the client put on it.
    if own_endpoint(&app.config, &view)?.is_some() {
        return Err(Error::Forbidden(
            "the proxy's own endpoints are served on server.listen",
        ));
    }
    let rule = route(app, &view)?;
    trace.rule = Some(rule);
    admit(app, rule, &view, &mut trace.renewed, &mut trace.auth).await
}

/// Request filter: refuse what cannot be proxied before looking at anything else.
fn filter(config: &Config, request: &Request<RequestBody>) -> Result<(), Error> {
    filter_method(request.method())?;
    // One pass over the names: the size, and whether the body's framing needs a look (two
    // lookups by name saved on the usual request that declares no body).
    let mut header_bytes = 0;
    let mut framed = false;
    for (name, value) in request.headers() {
        header_bytes += name.as_str().len() + value.len() + 4;
        framed |= name == CONTENT_LENGTH || name == TRANSFER_ENCODING;
    }
    if header_bytes > config.server.max_header_size {
        return Err(Error::HeadersTooLarge);
    }
    if framed && declared_length(request)? > config.server.max_body {
        return Err(Error::PayloadTooLarge);
    }
    Ok(())
}

/// Methods no rule may admit, whichever door asks: CONNECT would open a tunnel past every
/// rule; TRACE would echo the request back with the injected bearer token in it (nginx
/// refuses it too).
fn filter_method(method: &Method) -> Result<(), Error> {
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(Error::MethodNotAllowed);
    }
    Ok(())
}

/// The proxy's own endpoints.
enum Endpoint {
    Login,
    Logout,
    Me,
}

/// Which of the proxy's own endpoints the request is for, if any. Like rules, they ignore one
/// trailing `/`; a wrong method on one is `405`.
fn own_endpoint(config: &Config, view: &RequestView<'_>) -> Result<Option<Endpoint>, Error> {
    let own = crate::path::without_trailing_slash(view.path);
    let method = &view.method;
    if own == config.login.path && method == Method::POST && config.backend.is_some() {
        return Ok(Some(Endpoint::Login));
    }
    if own == config.logout.path {
        if method != Method::POST && method != Method::GET {
            return Err(Error::MethodNotAllowed);
        }
        return Ok(Some(Endpoint::Logout));
    }
    if own == config.session.me_path {
        if method != Method::GET && method != Method::HEAD {
            return Err(Error::MethodNotAllowed);
        }
        return Ok(Some(Endpoint::Me));
    }
    Ok(None)
}

/// Route: the first rule that takes the request's host and normalized path.
fn route<'a>(app: &'a App, view: &RequestView<'_>) -> Result<&'a Rule, Error> {
    rules::route(&app.config.rules, view.host.matchable(), view.path).ok_or(Error::NotFound)
}

/// Admit: refuse forgeries, authenticate and authorize; only an admitted request gets a
/// permit. Renewed cookies go to `renewed` whatever is decided; the outcome to `outcome`.
async fn admit(
    app: &App,
    rule: &Rule,
    view: &RequestView<'_>,
    renewed: &mut Vec<HeaderValue>,
    outcome: &mut Option<&'static str>,
) -> Result<Admission, Error> {
    let admission = app.auth.admit(rule, view, renewed).await;
    let decided = match &admission {
        Ok(Admission::Forward(_)) => "allow",
        Ok(Admission::Redirect(_)) => "guest_redirect",
        Err(Error::Unauthenticated { login: Some(_), .. }) => "redirect",
        Err(Error::Unauthenticated { login: None, .. }) => "unauthenticated",
        Err(Error::Forbidden(_)) => "forbidden",
        Err(Error::Csrf(_)) => "csrf",
        Err(_) => "error",
    };
    crate::telemetry::auth(decided);
    *outcome = Some(decided);
    admission
}

/// Sends renewed cookies with the response, whatever its status, and keeps every response
/// that carries a session cookie (set, renewed or cleared) out of every cache.
fn session_cookies_out(app: &App, response: &mut Response<Body>, renewed: Vec<HeaderValue>) {
    let headers = response.headers_mut();
    for cookie in renewed {
        headers.append(http::header::SET_COOKIE, cookie);
    }
    let session = &app.config.session;
    if response::sets_cookie(headers, [&session.access_cookie, &session.refresh_cookie]) {
        response::never_cache(headers);
    }
}

/// The declared body length, refusing conflicting or unparsable `Content-Length` headers and
/// any `Transfer-Encoding` but plain `chunked` (a coding the proxy would silently drop, and
/// the classic lever of request smuggling).
fn declared_length<B>(request: &Request<B>) -> Result<u64, Error> {
    let mut codings = request.headers().get_all(TRANSFER_ENCODING).iter();
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
        let fine = guarded(async { Response::new(crate::body::empty()) }).await;
        assert_eq!(fine.status(), 200);
    }
}
