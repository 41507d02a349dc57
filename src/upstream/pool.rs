//! Connections to one upstream: a pool per worker thread over `hyper::client::conn`.
//!
//! Each worker thread keeps its own idle HTTP/1.1 connections (a LIFO stack, so the warmest
//! connection is reused and the coldest ones age out) and at most one shared HTTP/2
//! connection, so taking and returning a connection touches no lock and no other thread's
//! memory. An HTTP/1.1 connection goes back on the stack when its response body has been
//! read to the end. A connection unused for `IDLE_TIMEOUT` is closed by its own task; the
//! stack holds at most `MAX_IDLE` connections per thread (the oldest is closed first).
//!
//! A request that a reused connection could not carry (the upstream closed it while it sat
//! idle) is sent once more on a fresh connection: always when hyper hands the request back
//! unsent, and for an idempotent request without a body when it may have been written.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;
use tower_service::Service as _;
use tracing::debug;

use crate::body::BoxError;
use crate::clock;

/// How long an unused connection stays open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept per upstream and worker thread.
pub const MAX_IDLE: usize = 256;
/// A reused connection idle for at least this long may have been closed by the upstream's
/// own keep-alive timeout as the request went out: the head of an idempotent request is
/// kept so that it can be sent again. (Upstreams close idle connections after seconds at
/// the least; a connection busy a moment ago is not at risk, and copying every request's
/// headers would cost every request.)
const REPLAY_AFTER: Duration = Duration::from_secs(1);

/// The body of a request going upstream: the client's, capped at `server.max_body`, or none
/// (a request sent again).
pub enum UpstreamBody {
    Stream(Limited<Incoming>),
    Empty,
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Stream(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Stream(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Stream(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

type H1 = http1::SendRequest<UpstreamBody>;
type H2 = http2::SendRequest<UpstreamBody>;

/// Why a request did not get a response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, TLS, timeout).
    Connect(BoxError),
    /// The connection failed while the request was sent or the response awaited.
    Request(hyper::Error),
}

/// The connections to one upstream.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`: what the connector dials.
    origin: Uri,
    scheme: Scheme,
    authority: Authority,
    /// HTTP/2 by prior knowledge (`http2 = true` on a plain-HTTP upstream); over TLS, ALPN.
    http2: bool,
    /// Per-connection read/write buffer limit for HTTP/1.1.
    max_buf_size: usize,
    idle: ThreadLocal<RefCell<Idle>>,
}

#[derive(Default)]
struct Idle {
    /// Ready HTTP/1.1 connections, the most recently used last.
    h1: VecDeque<IdleConn>,
    h2: Option<(H2, Arc<Usage>)>,
}

struct IdleConn {
    sender: H1,
    usage: Arc<Usage>,
    since: Instant,
}

/// What a connection's task needs to know to close it once it has been unused too long.
#[derive(Default)]
struct Usage {
    in_flight: AtomicU32,
    /// When the last exchange on it ended (`clock::millis`).
    last_used: AtomicU64,
}

impl Usage {
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self, now: Instant) {
        self.last_used.store(clock::millis(now), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Sender {
    H1(H1),
    H2(H2),
}

/// A connection taken for one request.
struct Checkout {
    sender: Sender,
    usage: Arc<Usage>,
    /// How long it sat idle before this request, if it was reused.
    reused: Option<Duration>,
}

impl Pool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: Scheme,
        authority: Authority,
        http2: bool,
        max_buf_size: usize,
    ) -> Pool {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("a validated scheme and authority make a URI");
        Pool {
            inner: Arc::new(Inner {
                connector,
                origin,
                scheme,
                authority,
                http2,
                max_buf_size,
                idle: ThreadLocal::new(),
            }),
        }
    }

    /// Sends `request` (its URI in origin form, `/path?query`) and waits for the response head.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        let checkout = match self.inner.take_idle() {
            Some(checkout) => checkout,
            // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) is a large future that
            // every request's future would otherwise carry and move, reused connection or not.
            None => Box::pin(self.inner.connect()).await?,
        };
        let reused = checkout.reused;
        let replay = reused
            .filter(|idle| *idle >= REPLAY_AFTER)
            .and_then(|_| replayable_head(&request));
        match self.inner.send_on(checkout, request).await {
            Ok(response) => Ok(response),
            Err((error, unsent)) => {
                // Only a reused connection gets a second chance: a fresh one that fails is
                // the upstream's problem, and trying again would only double the wait.
                let again = match (reused, unsent, replay) {
                    (None, _, _) => None,
                    (Some(_), Some(unsent), _) => Some(unsent),
                    (Some(_), None, Some(head)) if closed_under_us(&error) => {
                        Some(Request::from_parts(head, UpstreamBody::Empty))
                    }
                    _ => None,
                };
                let Some(request) = again else {
                    return Err(SendError::Request(error));
                };
                debug!(upstream = %self.inner.authority, error = %error, "reused connection closed; sending again on a new one");
                Box::pin(async {
                    let fresh = self.inner.connect().await?;
                    self.inner
                        .send_on(fresh, request)
                        .await
                        .map_err(|(error, _)| SendError::Request(error))
                })
                .await
            }
        }
    }

    /// Idle HTTP/1.1 connections this thread holds (tests).
    pub fn idle_here(&self) -> usize {
        self.inner
            .idle
            .get()
            .map_or(0, |idle| idle.borrow().h1.len())
    }
}

impl Inner {
    fn take_idle(&self) -> Option<Checkout> {
        let local = self.idle.get_or(|| RefCell::new(Idle::default()));
        let mut idle = local.borrow_mut();
        if let Some((h2, usage)) = &idle.h2 {
            if !h2.is_closed() {
                let checkout = Checkout {
                    sender: Sender::H2(h2.clone()),
                    usage: usage.clone(),
                    reused: Some(Duration::ZERO),
                };
                checkout.usage.begin();
                return Some(checkout);
            }
            idle.h2 = None;
        }
        let now = Instant::now();
        while let Some(conn) = idle.h1.pop_back() {
            let idle_for = now.saturating_duration_since(conn.since);
            if idle_for >= IDLE_TIMEOUT {
                // Everything below it has been idle longer still.
                idle.h1.clear();
                break;
            }
            if conn.sender.is_ready() {
                conn.usage.begin();
                return Some(Checkout {
                    sender: Sender::H1(conn.sender),
                    usage: conn.usage,
                    reused: Some(idle_for),
                });
            }
            // Closed by the upstream meanwhile: its task has ended; let it go.
        }
        None
    }

    fn check_in(&self, sender: H1, usage: Arc<Usage>, now: Instant) {
        let local = self.idle.get_or(|| RefCell::new(Idle::default()));
        let mut idle = local.borrow_mut();
        if idle.h1.len() >= MAX_IDLE {
            idle.h1.pop_front();
        }
        idle.h1.push_back(IdleConn {
            sender,
            usage,
            since: now,
        });
    }

    async fn connect(self: &Arc<Self>) -> Result<Checkout, SendError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let usage = Arc::new(Usage::default());
        usage.begin();
        let sender = if self.http2 || io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|err| SendError::Connect(Box::new(err)))?;
            tokio::spawn(drive(connection, usage.clone()));
            let local = self.idle.get_or(|| RefCell::new(Idle::default()));
            local.borrow_mut().h2 = Some((sender.clone(), usage.clone()));
            Sender::H2(sender)
        } else {
            let (sender, connection) = http1::Builder::new()
                .max_buf_size(self.max_buf_size)
                .handshake(io)
                .await
                .map_err(|err| SendError::Connect(Box::new(err)))?;
            tokio::spawn(drive(connection.with_upgrades(), usage.clone()));
            Sender::H1(sender)
        };
        Ok(Checkout {
            sender,
            usage,
            reused: None,
        })
    }

    /// Sends on `checkout`; on failure, the error and the request if hyper never sent it.
    async fn send_on(
        self: &Arc<Self>,
        checkout: Checkout,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, (hyper::Error, Option<Request<UpstreamBody>>)> {
        let Checkout { sender, usage, .. } = checkout;
        let lease = |h1: Option<H1>| Lease {
            pool: self.clone(),
            h1,
            usage: usage.clone(),
        };
        match sender {
            Sender::H1(mut sender) => {
                if !request.headers().contains_key(header::HOST) {
                    if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
                        request.headers_mut().insert(header::HOST, host);
                    }
                }
                match sender.try_send_request(request).await {
                    Ok(response) => Ok(response.map(|body| PooledBody {
                        inner: body,
                        lease: Some(lease(Some(sender))),
                    })),
                    Err(mut err) => {
                        drop(lease(None));
                        let unsent = err.take_message();
                        Err((err.into_error(), unsent))
                    }
                }
            }
            Sender::H2(mut sender) => {
                // HTTP/2 carries scheme and authority in the request itself.
                let target = request.uri().path_and_query().cloned();
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(self.authority.clone());
                parts.path_and_query = target;
                if let Ok(uri) = Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
                match sender.try_send_request(request).await {
                    Ok(response) => Ok(response.map(|body| PooledBody {
                        inner: body,
                        lease: Some(lease(None)),
                    })),
                    Err(mut err) => {
                        drop(lease(None));
                        let unsent = err.take_message();
                        Err((err.into_error(), unsent))
                    }
                }
            }
        }
    }
}

/// Runs a connection until it ends, or until it has been unused for `IDLE_TIMEOUT`.
async fn drive<F>(connection: F, usage: Arc<Usage>)
where
    F: std::future::Future<Output = hyper::Result<()>>,
{
    let mut connection = std::pin::pin!(connection);
    let sleep = tokio::time::sleep(IDLE_TIMEOUT);
    let mut sleep = std::pin::pin!(sleep);
    loop {
        tokio::select! {
            ended = &mut connection => {
                if let Err(err) = ended {
                    debug!(error = %err, "upstream connection ended");
                }
                return;
            }
            () = &mut sleep => {
                let now = Instant::now();
                let last = clock::instant(usage.last_used.load(Ordering::Relaxed));
                let idle_until = last + IDLE_TIMEOUT;
                if usage.in_flight.load(Ordering::Relaxed) == 0 && idle_until <= now {
                    debug!("closing an idle upstream connection");
                    return;
                }
                let next = if idle_until > now { idle_until } else { now + IDLE_TIMEOUT };
                sleep.as_mut().reset(next.into());
            }
        }
    }
}

/// The connection a response came on, given back when its body has been read.
struct Lease {
    pool: Arc<Inner>,
    h1: Option<H1>,
    usage: Arc<Usage>,
}

impl Lease {
    fn release(mut self, complete: bool) {
        let now = Instant::now();
        self.usage.end(now);
        if let Some(sender) = self.h1.take() {
            // An HTTP/1.1 connection whose response was not read to the end carries the rest
            // of it: it cannot serve another request, and hyper closes it once dropped.
            if complete && sender.is_ready() {
                self.pool.check_in(sender, self.usage.clone(), now);
            } else if complete && !sender.is_closed() {
                // The connection's task has not yet seen the end of the exchange (another
                // thread may run it); return it once it has. (Outside a runtime, as when one
                // shuts down, the connection is simply let go.)
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let pool = self.pool.clone();
                let usage = self.usage.clone();
                let mut sender = sender;
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.check_in(sender, usage, Instant::now());
                    }
                });
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body; its end returns the connection to the pool.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
    }

    impl PinnedDrop for PooledBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(lease) = this.lease.take() {
                let complete = this.inner.is_end_stream();
                lease.release(complete);
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = frame {
            if let Some(lease) = this.lease.take() {
                lease.release(true);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy of the head of an idempotent request without a body, to send it again.
fn replayable_head(request: &Request<UpstreamBody>) -> Option<http::request::Parts> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    );
    if !idempotent || !request.body().is_end_stream() {
        return None;
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    Some(parts)
}

/// Whether `error` says the connection was closed before a response came (an upstream
/// closing an idle keep-alive connection as the request went out), not a bad answer.
fn closed_under_us(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            );
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_bodiless_requests_are_replayable() {
        let get = Request::get("/x")
            .header("a", "b")
            .body(UpstreamBody::Empty)
            .expect("request");
        let head = replayable_head(&get).expect("a GET without a body");
        assert_eq!(head.headers["a"], "b");
        assert_eq!(head.uri, "/x");
        let post = Request::post("/x")
            .body(UpstreamBody::Empty)
            .expect("request");
        assert!(replayable_head(&post).is_none());
    }
}
