//! Connections to one upstream: a pool per worker thread over `hyper::client::conn`, and for
//! requests without a body to a plain-text HTTP/1.1 upstream, over the pool's own exchange
//! (`bare`: no connection task, no channel).
//!
//! Each worker thread keeps its own idle HTTP/1.1 connections (a LIFO stack, so the warmest
//! connection is reused and the coldest ones age out) and its HTTP/2 connections (each
//! shared by up to `MAX_STREAMS` requests), so taking and returning a connection touches no
//! lock and no other thread's memory. A connection unused for the upstream's
//! `keepalive_timeout` is closed by its own task; a thread keeps at most its share of
//! `MAX_IDLE` idle connections; and `max_connections` caps how many exist at once
//! (`pool/limit.rs`).
//!
//! An HTTP/1.1 connection goes back on the stack only after a clean exchange: its request
//! went out whole before the upstream said anything, and its response was read to the end.
//! An upstream that answers early may take the rest of the request body for a request of its
//! own; the next client's request would then get that request's response (a desync), so
//! such a connection is closed, as nginx does.
//!
//! A request is sent a second time only when the upstream provably did not process it: hyper
//! handed it back unsent (a reused connection found closed), or an HTTP/2 upstream refused
//! its stream (`REFUSED_STREAM`) or named a lower last stream in a graceful `GOAWAY`
//! (RFC 9113 §8.7). A request that may have reached the upstream is never replayed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thread_local::ThreadLocal;
use tokio::sync::{OnceCell, OwnedSemaphorePermit};
use tokio::task::AbortHandle;
use tower_service::Service as _;
use tracing::debug;

use crate::body::BoxError;
use crate::clock;

mod bare;
mod body;
mod limit;
mod wire;

pub use bare::BareError;
pub use body::{PooledBody, UpstreamBody};
use limit::{Got, Limit, Spare};
use wire::{Streams, Wire};

/// Idle HTTP/1.1 connections kept per upstream, shared out between the worker threads.
const MAX_IDLE: usize = 256;
/// Requests one HTTP/2 connection carries at once; more open another connection. (RFC 9113
/// recommends servers allow at least 100.)
const MAX_STREAMS: u32 = 100;
/// Each HTTP/2 stream's receive window. The connection's is `MAX_STREAMS` of them, so that
/// responses nobody reads cannot use up the window every other stream needs.
const H2_STREAM_WINDOW: u32 = 128 << 10;
/// While requests are in flight on an HTTP/2 connection, a PING after this much silence...
const H2_PING_EVERY: Duration = Duration::from_secs(10);
/// ...which must be answered within this, or the connection is closed (an upstream that
/// vanished without a word would otherwise hold every request until TCP gives up).
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

type H1 = http1::SendRequest<UpstreamBody>;
type H2 = http2::SendRequest<UpstreamBody>;
/// What hyper makes of one request sent on a connection.
type Sent = Result<
    Response<hyper::body::Incoming>,
    hyper::client::conn::TrySendError<Request<UpstreamBody>>,
>;
/// What sending a request comes to.
type Outcome = Result<Response<PooledBody>, SendError>;

/// Why a request did not get a response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, TLS, timeout).
    Connect(BoxError),
    /// The connection failed while the request was sent or the response awaited.
    Request(hyper::Error),
    /// The same, on a connection without hyper's client ([`bare`]).
    Exchange(BareError),
    /// No response head within the deadline.
    Timeout,
    /// Every connection `max_connections` allows stayed busy until the deadline.
    Busy,
}

/// How the pool treats one upstream (from its configuration).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Over plain HTTP, speak HTTP/2 by prior knowledge; over TLS, ALPN decides (the
    /// connector offers `h2` when this is set).
    pub http2: bool,
    /// Per-connection read/write buffer limit for HTTP/1.1.
    pub max_buf_size: usize,
    /// How long an unused connection stays open.
    pub keepalive: Duration,
    /// Connections open at once.
    pub max_connections: usize,
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
    tls: bool,
    settings: Settings,
    /// ALPN picked HTTP/2 on this upstream before: a thread opens one connection at a time.
    h2_seen: AtomicBool,
    /// Idle HTTP/1.1 connections one thread keeps.
    max_idle: usize,
    /// Requests sent a second time.
    resent: std::sync::atomic::AtomicUsize,
    limit: Limit,
    idle: ThreadLocal<RefCell<Idle>>,
    /// Idle connections of the requests without a body ([`bare`]), per thread.
    bare: ThreadLocal<Arc<bare::Idle>>,
}

#[derive(Default)]
struct Idle {
    /// Ready HTTP/1.1 connections, the most recently used last.
    h1: VecDeque<IdleConn>,
    h2: Vec<H2Conn>,
    /// The HTTP/2 connection being opened for this thread, which its other requests wait
    /// for rather than each opening one.
    h2_opening: Option<Arc<OnceCell<H2Conn>>>,
}

struct IdleConn {
    sender: H1,
    usage: Arc<Usage>,
    since: Instant,
}

#[derive(Clone)]
struct H2Conn {
    sender: H2,
    usage: Arc<Usage>,
}

impl H2Conn {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && !self.usage.retired.load(Ordering::Relaxed)
    }
}

/// `Usage::exchange`: the request body is still going out.
const OPEN: u8 = 1;
/// `Usage::exchange`: the upstream said something meanwhile.
const EARLY: u8 = 2;

/// What is known about one connection, shared by its task, its socket and its requests.
struct Usage {
    in_flight: AtomicU32,
    /// HTTP/2: requests it takes at once (`MAX_STREAMS`, or fewer if the upstream says so).
    max_streams: AtomicU32,
    /// When the last exchange on it ended (`clock::millis`).
    last_used: AtomicU64,
    /// HTTP/1.1: the exchange under way, `OPEN` and `EARLY` bits; `0` is a clean one.
    exchange: AtomicU8,
    /// HTTP/2: no new request takes it (a request timed out on it); it closes once idle.
    retired: AtomicBool,
    /// HTTP/1.1: when the response head of the request under way is due (`clock::millis`;
    /// `0` when none is awaited). The connection's task enforces it (see [`drive`]).
    answer_by: AtomicU64,
    /// HTTP/1.1: something was read since the request under way went out.
    heard: AtomicBool,
    /// HTTP/1.1: the connection was closed because its response head was late.
    answer_late: AtomicBool,
    /// The connection's task, to close it at once.
    task: OnceLock<AbortHandle>,
}

impl Usage {
    /// One request on the connection ended at `now`.
    fn done(&self, now: Instant) {
        self.last_used.store(clock::millis(now), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            in_flight: AtomicU32::new(0),
            max_streams: AtomicU32::new(MAX_STREAMS),
            last_used: AtomicU64::new(0),
            exchange: AtomicU8::new(0),
            retired: AtomicBool::new(false),
            answer_by: AtomicU64::new(0),
            heard: AtomicBool::new(false),
            answer_late: AtomicBool::new(false),
            task: OnceLock::new(),
        }
    }
}

impl Usage {
    /// HTTP/2: whether it takes one more request.
    fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < self.max_streams.load(Ordering::Relaxed)
    }

    fn close(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// One request on a connection, counted in its `Usage` until it ends or is dropped (a
/// failure, a timeout, a client gone).
struct Busy(Option<Arc<Usage>>);

impl Busy {
    fn new(usage: Arc<Usage>) -> Busy {
        usage.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Some(usage))
    }

    fn usage(&self) -> Option<&Arc<Usage>> {
        self.0.as_ref()
    }

    /// The exchange ended at `now`.
    fn end(mut self, now: Instant) -> Option<Arc<Usage>> {
        let usage = self.0.take()?;
        usage.done(now);
        Some(usage)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(usage) = self.0.take() {
            usage.done(clock::now());
        }
    }
}

enum Sender {
    H1(H1),
    H2(H2),
}

/// A connection taken for one request.
struct Checkout {
    sender: Sender,
    busy: Busy,
    /// It carried requests before this one.
    reused: bool,
}

/// A connection just opened (or handed over), before a request takes it.
enum Opened {
    H1(H1, Arc<Usage>, bool),
    H2(H2Conn),
}

impl Opened {
    fn checkout(self) -> Checkout {
        match self {
            Opened::H1(sender, usage, reused) => Checkout {
                sender: Sender::H1(sender),
                busy: Busy::new(usage),
                reused,
            },
            Opened::H2(conn) => Checkout {
                sender: Sender::H2(conn.sender),
                busy: Busy::new(conn.usage),
                reused: false,
            },
        }
    }
}

/// Why a sent request got no response head, and what could be sent again.
struct Failure {
    error: hyper::Error,
    /// The request, when hyper never sent it.
    unsent: Option<Request<UpstreamBody>>,
    /// HTTP/1.1: the connection was closed because the answer was late ([`drive`]).
    late: bool,
    /// HTTP/2, a request without a body: its head, for an upstream that refused the stream.
    replay: Option<http::request::Parts>,
}

impl From<Failure> for SendError {
    /// A late answer is a timeout, whatever hyper made of the closed connection.
    fn from(failure: Failure) -> SendError {
        match failure {
            Failure { late: true, .. } => SendError::Timeout,
            Failure { error, .. } => SendError::Request(error),
        }
    }
}

impl From<bare::Failed> for SendError {
    fn from(failed: bare::Failed) -> SendError {
        if failed.late {
            SendError::Timeout
        } else {
            SendError::Exchange(failed.error)
        }
    }
}

impl Pool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: Scheme,
        authority: Authority,
        settings: Settings,
    ) -> Pool {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("a validated scheme and authority make a URI");
        let workers = tokio::runtime::Handle::try_current()
            .map_or(1, |runtime| runtime.metrics().num_workers())
            .max(1);
        Pool {
            inner: Arc::new(Inner {
                connector,
                origin,
                tls: scheme == Scheme::HTTPS,
                scheme,
                authority,
                settings,
                h2_seen: AtomicBool::new(false),
                max_idle: (MAX_IDLE / workers).max(2),
                resent: std::sync::atomic::AtomicUsize::new(0),
                limit: Limit::new(settings.max_connections),
                idle: ThreadLocal::new(),
                bare: ThreadLocal::new(),
            }),
        }
    }

    /// Sends `request` (its URI in origin form, `/path?query`) and waits for the response
    /// head, for `timeout` at most (connecting, and waiting for a connection, included).
    ///
    /// A request that finds an idle HTTP/1.1 connection (nearly every one) is handed to it
    /// here, when `send` is called, and the future returned only waits for the answer: a few
    /// hundred bytes. (Dropped before the request went out, it cancels it and the connection
    /// is closed, as when the `async fn` was dropped after its first poll.) As an
    /// `async fn`, everything sending may take (connecting, HTTP/2, a second attempt) was
    /// nested in every request's future, several KiB moved at each level of it; that is one
    /// boxed future now, made only when needed.
    pub fn send(
        &self,
        mut request: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Sending<'_, impl Future<Output = Sent> + Send> {
        let inner = &self.inner;
        let deadline = clock::now() + timeout;
        // A request without a body to a plain-text HTTP/1.1 upstream goes out without hyper's
        // client, on a connection of its own kind if this thread has one idle, else on an
        // idle one of hyper's, else on a new one.
        let bare = !inner.tls && !inner.settings.http2 && bare::eligible(&request);
        if bare {
            if let Some(conn) = inner.take_bare() {
                return Sending {
                    inner,
                    deadline,
                    state: State::Bare {
                        exchange: bare::Exchange::new(conn, request, deadline, inner.clone()),
                    },
                };
            }
        }
        let state = match inner.take_idle() {
            Some(Checkout {
                sender: Sender::H1(mut sender),
                busy,
                reused,
            }) => {
                // HTTP/1.1's deadline is kept by the connection's task, which has a timer
                // anyway; a timer per request would be set and cancelled on nearly every one.
                inner.prepare_h1(&mut request, &busy, deadline);
                State::H1 {
                    sent: sender.try_send_request(request),
                    on: Some((sender, busy)),
                    reused,
                }
            }
            None if bare => State::Boxed {
                sending: Box::pin(inner.send_bare(request, deadline)),
            },
            checkout => State::Boxed {
                sending: Box::pin(inner.send_slowly(checkout, request, deadline)),
            },
        };
        Sending {
            inner,
            deadline,
            state,
        }
    }

    /// Requests sent a second time so far (tests).
    pub fn resent(&self) -> usize {
        self.inner.resent.load(Ordering::Relaxed)
    }

    /// Idle HTTP/1.1 connections this thread holds, of both kinds (tests).
    pub fn idle_here(&self) -> usize {
        let hyper = self
            .inner
            .idle
            .get()
            .map_or(0, |idle| idle.borrow().h1.len());
        hyper + self.inner.bare_idle_here()
    }
}

impl Inner {
    /// [`Pool::send`] for a request that found no idle HTTP/1.1 connection (`checkout` is
    /// the thread's HTTP/2 connection, if it has one with room).
    async fn send_slowly(
        self: &Arc<Self>,
        checkout: Option<Checkout>,
        request: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Outcome {
        let checkout = match checkout {
            Some(checkout) => checkout,
            None => {
                let mut queued = false;
                // Boxed, as the second attempt is: this future is made for every request to
                // an HTTP/2 upstream, and connecting (TCP, TLS, the handshake) is large.
                let opening = Box::pin(self.checkout(&mut queued));
                match tokio::time::timeout_at(deadline.into(), opening).await {
                    Ok(checkout) => checkout?,
                    Err(_) if queued => return Err(SendError::Busy),
                    Err(_) => return Err(SendError::Timeout),
                }
            }
        };
        let reused = checkout.reused;
        // An HTTP/2 connection a request timed out on is suspect (an upstream gone silent):
        // new requests open another.
        let h2 = match checkout.sender {
            Sender::H2(_) => checkout.busy.usage().cloned(),
            Sender::H1(_) => None,
        };
        let failure = match h2 {
            None => match self.send_on(checkout, request, deadline).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            },
            Some(usage) => {
                let sending = self.send_on(checkout, request, deadline);
                match tokio::time::timeout_at(deadline.into(), sending).await {
                    Ok(Ok(response)) => return Ok(response),
                    Ok(Err(failure)) => failure,
                    Err(_) => {
                        usage.retired.store(true, Ordering::Relaxed);
                        return Err(SendError::Timeout);
                    }
                }
            }
        };
        let again = self.resendable(failure, reused)?;
        Box::pin(self.resend(again, deadline)).await
    }

    /// [`Pool::send`] for a request without a body that found no idle connection: a new one
    /// without hyper's client, or one of hyper's handed over while it waited under
    /// `max_connections`.
    async fn send_bare(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Outcome {
        let mut queued = false;
        let opening = Box::pin(self.open_bare(&mut queued, deadline));
        let conn = match tokio::time::timeout_at(deadline.into(), opening).await {
            Ok(Ok(Ok(conn))) => conn,
            Ok(Ok(Err(handed))) => {
                let checkout = Opened::H1(handed.sender, handed.usage, true).checkout();
                return match self.send_on(checkout, request, deadline).await {
                    Ok(response) => Ok(response),
                    Err(failure) => {
                        let again = self.resendable(failure, true)?;
                        Box::pin(self.resend(again, deadline)).await
                    }
                };
            }
            Ok(Err(err)) => return Err(err),
            Err(_) if queued => return Err(SendError::Busy),
            Err(_) => return Err(SendError::Timeout),
        };
        let mut exchange = bare::Exchange::new(conn, request, deadline, self.clone());
        match poll_fn(|cx| exchange.poll(cx)).await {
            Ok(response) => Ok(response.map(PooledBody::bare)),
            // A connection handed over may have been closed meanwhile, as an idle one may.
            Err(failed) => {
                let again = self.resendable_bare(failed)?;
                Box::pin(self.resend(again, deadline)).await
            }
        }
    }

    /// The request to send a second time after a failed exchange without hyper's client: only
    /// one that found its reused connection closed before a byte of it went out (a new
    /// connection gives no `unsent`: its failure is the upstream's).
    fn resendable_bare(&self, failed: bare::Failed) -> Result<Request<UpstreamBody>, SendError> {
        match failed.unsent {
            Some(request) => {
                self.resending();
                Ok(request)
            }
            None => Err(SendError::from(failed)),
        }
    }

    /// Counts (and logs) a request about to be sent a second time.
    fn resending(&self) {
        debug!(upstream = %self.authority, "request not processed; sending it again on a new connection");
        self.resent.fetch_add(1, Ordering::Relaxed);
    }

    /// A new connection for [`Inner::send_bare`] (`Err`: one of hyper's handed over).
    async fn open_bare(
        self: &Arc<Self>,
        queued: &mut bool,
        deadline: Instant,
    ) -> Result<Result<bare::Bare, IdleConn>, SendError> {
        let permit = match self.wait_for_room(queued).await {
            Got::Permit(permit) => permit,
            Got::Conn(Spare::Hyper(conn)) => return Ok(Err(conn)),
            Got::Conn(Spare::Bare(mut conn)) => {
                conn.reused = true;
                return Ok(Ok(conn));
            }
        };
        let io = self.dial().await?;
        match io {
            hyper_rustls::MaybeHttpsStream::Http(io) => {
                Ok(Ok(bare::Bare::new(io.into_inner(), permit, deadline)))
            }
            hyper_rustls::MaybeHttpsStream::Https(_) => Err(SendError::Connect(
                "a plain-text upstream answered with TLS".into(),
            )),
        }
    }

    /// The request to send a second time after `failure`, if the upstream provably did not
    /// process it; else the error (a late answer's is a timeout).
    fn resendable(
        &self,
        failure: Failure,
        reused: bool,
    ) -> Result<Request<UpstreamBody>, SendError> {
        let again = match failure {
            // The connection was closed for a late answer: the deadline has passed.
            Failure { late: true, .. } => return Err(failure.into()),
            // Only a reused connection gets a second chance: a fresh one that fails is the
            // upstream's problem, and trying again would only double the wait.
            Failure {
                unsent: Some(request),
                ..
            } if reused => request,
            Failure {
                replay: Some(head),
                error,
                ..
            } if unprocessed_h2(&error) => Request::from_parts(head, UpstreamBody::empty()),
            failure => return Err(failure.into()),
        };
        self.resending();
        Ok(again)
    }

    /// Sends `request` a second time, on a new connection.
    async fn resend(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
        deadline: Instant,
    ) -> Outcome {
        let attempt = async {
            let mut queued = false;
            let fresh = self.open(&mut queued).await?.checkout();
            self.send_on(fresh, request, deadline)
                .await
                .map_err(SendError::from)
        };
        match tokio::time::timeout_at(deadline.into(), attempt).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout),
        }
    }

    fn local(&self) -> &RefCell<Idle> {
        self.idle.get_or(|| RefCell::new(Idle::default()))
    }

    /// A usable connection this thread already has, if any.
    fn take_idle(&self) -> Option<Checkout> {
        let mut idle = self.local().borrow_mut();
        if !idle.h2.is_empty() {
            idle.h2.retain(H2Conn::usable);
            let free = idle.h2.iter().find(|conn| conn.usage.has_room());
            if let Some(conn) = free {
                return Some(Checkout {
                    sender: Sender::H2(conn.sender.clone()),
                    busy: Busy::new(conn.usage.clone()),
                    reused: true,
                });
            }
        }
        let now = clock::now();
        while let Some(conn) = idle.h1.pop_back() {
            let idle_for = now.saturating_duration_since(conn.since);
            if idle_for >= self.settings.keepalive {
                // Everything below it has been idle longer still.
                idle.h1.clear();
                break;
            }
            if conn.sender.is_ready() {
                return Some(Checkout {
                    sender: Sender::H1(conn.sender),
                    busy: Busy::new(conn.usage),
                    reused: true,
                });
            }
            // Closed by the upstream meanwhile: its task has ended; let it go.
        }
        None
    }

    /// A connection for a request that found none idle: the thread's HTTP/2 connection
    /// being opened, or a new one.
    async fn checkout(self: &Arc<Self>, queued: &mut bool) -> Result<Checkout, SendError> {
        let expects_h2 = (!self.tls && self.settings.http2) || self.h2_seen.load(Ordering::Relaxed);
        if expects_h2 {
            return self.checkout_h2(queued).await;
        }
        // An idle connection of the requests without a body serves this one as well.
        if let Some(conn) = self.take_bare() {
            return Ok(self.adopt(conn).await?.checkout());
        }
        Ok(self.open(queued).await?.checkout())
    }

    /// The thread's new HTTP/2 connection: opened by the first request that needs it, while
    /// the others wait for it (one handshake, not one per waiting request).
    async fn checkout_h2(self: &Arc<Self>, queued: &mut bool) -> Result<Checkout, SendError> {
        let cell = {
            let mut idle = self.local().borrow_mut();
            let stale = idle
                .h2_opening
                .as_ref()
                .and_then(|cell| cell.get())
                .is_some_and(|conn| !conn.usable() || !conn.usage.has_room());
            if stale {
                idle.h2_opening = None;
            }
            idle.h2_opening.get_or_insert_with(Default::default).clone()
        };
        let mut other = None;
        let mut failed = None;
        let opened = cell
            .get_or_try_init(|| async {
                match self.open(queued).await {
                    Ok(Opened::H2(conn)) => Ok(conn),
                    Ok(h1) => {
                        other = Some(h1);
                        Err(())
                    }
                    Err(err) => {
                        failed = Some(err);
                        Err(())
                    }
                }
            })
            .await;
        if let Ok(conn) = opened {
            let mut idle = self.local().borrow_mut();
            if idle
                .h2_opening
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                idle.h2_opening = None;
            }
            if !idle.h2.iter().any(|c| Arc::ptr_eq(&c.usage, &conn.usage)) {
                idle.h2.push(conn.clone());
            }
            return Ok(Opened::H2(conn.clone()).checkout());
        }
        match (other, failed) {
            // ALPN picked HTTP/1.1 after all: that connection is this request's alone.
            (Some(opened), _) => Ok(opened.checkout()),
            (_, Some(err)) => Err(err),
            (None, None) => Err(SendError::Timeout),
        }
    }

    /// A new connection (or one handed over while waiting under `max_connections`).
    async fn open(self: &Arc<Self>, queued: &mut bool) -> Result<Opened, SendError> {
        let permit = match self.wait_for_room(queued).await {
            Got::Permit(permit) => permit,
            Got::Conn(Spare::Hyper(conn)) => return Ok(Opened::H1(conn.sender, conn.usage, true)),
            Got::Conn(Spare::Bare(conn)) => return self.adopt(conn).await,
        };
        let opened = self.connect(permit).await?;
        if let Opened::H2(conn) = &opened {
            self.local().borrow_mut().h2.push(conn.clone());
        }
        Ok(opened)
    }

    /// Room under `max_connections` for a new connection, or a connection handed over. Idle
    /// sockets without hyper's client hold places no task watches: when none is free, those
    /// of this thread and those the upstream closed give theirs back first.
    async fn wait_for_room(&self, queued: &mut bool) -> Got {
        if !self.limit.has_room() {
            self.close_idle_bare();
        }
        self.limit.wait(queued).await
    }

    /// A new socket to the upstream (TCP, and TLS when the upstream is `https`).
    async fn dial(
        &self,
    ) -> Result<hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>, SendError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)
    }

    async fn connect(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Result<Opened, SendError> {
        let io = self.dial().await?;
        // Over TLS, what ALPN picked; in plain text, what the configuration says.
        let h2 = if self.tls {
            io.connected().is_negotiated_h2()
        } else {
            self.settings.http2
        };
        if h2 {
            if self.tls {
                self.h2_seen.store(true, Ordering::Relaxed);
            }
            let usage = Arc::new(Usage::default());
            let io = TokioIo::new(Streams::new(TokioIo::new(io), usage.clone()));
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_STREAM_WINDOW * MAX_STREAMS)
                .adaptive_window(false)
                .keep_alive_interval(H2_PING_EVERY)
                .keep_alive_timeout(H2_PING_TIMEOUT)
                .handshake(io)
                .await
                .map_err(|err| SendError::Connect(Box::new(err)))?;
            let task = tokio::spawn(drive(
                connection,
                usage.clone(),
                self.settings.keepalive,
                permit,
            ));
            let _ = usage.task.set(task.abort_handle());
            Ok(Opened::H2(H2Conn { sender, usage }))
        } else {
            self.handshake_h1(io, permit, false).await
        }
    }

    /// An idle connection of the requests without a body, taken over by hyper's client.
    async fn adopt(self: &Arc<Self>, conn: bare::Bare) -> Result<Opened, SendError> {
        let (io, permit) = conn.into_parts();
        let io = hyper_rustls::MaybeHttpsStream::Http(TokioIo::new(io));
        self.handshake_h1(io, permit, true).await
    }

    /// hyper's HTTP/1.1 client on `io`, its connection driven by a task of its own.
    async fn handshake_h1(
        self: &Arc<Self>,
        io: hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
        permit: OwnedSemaphorePermit,
        reused: bool,
    ) -> Result<Opened, SendError> {
        let usage = Arc::new(Usage::default());
        let io = Wire::new(io, usage.clone());
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(self.settings.max_buf_size)
            .handshake(io)
            .await
            .map_err(|err| SendError::Connect(Box::new(err)))?;
        let task = tokio::spawn(drive(
            connection.with_upgrades(),
            usage.clone(),
            self.settings.keepalive,
            permit,
        ));
        let _ = usage.task.set(task.abort_handle());
        Ok(Opened::H1(sender, usage, reused))
    }

    fn check_in(&self, sender: H1, usage: Arc<Usage>, now: Instant) {
        let conn = IdleConn {
            sender,
            usage,
            since: now,
        };
        // A request waiting under `max_connections` takes it first, whatever its thread.
        let Some(Spare::Hyper(conn)) = self.limit.offer(Spare::Hyper(conn)) else {
            return;
        };
        let mut idle = self.local().borrow_mut();
        if idle.h1.len() >= self.max_idle {
            idle.h1.pop_front();
        }
        idle.h1.push_back(conn);
    }

    /// Sends on `checkout`; on failure, the error and what could be sent again. On HTTP/1.1
    /// the connection's task closes the connection if no response head has come by
    /// `answer_by` (the failure is then `late`); HTTP/2's caller keeps its own deadline.
    async fn send_on(
        self: &Arc<Self>,
        checkout: Checkout,
        mut request: Request<UpstreamBody>,
        answer_by: Instant,
    ) -> Result<Response<PooledBody>, Failure> {
        let Checkout { sender, busy, .. } = checkout;
        match sender {
            Sender::H1(mut sender) => {
                self.prepare_h1(&mut request, &busy, answer_by);
                let sent = sender.try_send_request(request).await;
                self.answered_h1(sent, sender, busy)
            }
            Sender::H2(mut sender) => {
                // HTTP/2 carries scheme and host in the request itself: `:authority` is the
                // host the client asked for, as `Host` is on HTTP/1.1, and no `host` header
                // goes beside it.
                let authority = request
                    .headers_mut()
                    .remove(header::HOST)
                    .and_then(|host| Authority::try_from(host.as_bytes()).ok())
                    .unwrap_or_else(|| self.authority.clone());
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(authority);
                parts.path_and_query = request.uri().path_and_query().cloned();
                if let Ok(uri) = Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
                let replay = request.body().is_end_stream().then(|| head_of(&request));
                let sent = sender.try_send_request(request).await;
                self.answered(sent, None, busy, replay)
            }
        }
    }

    /// Readies `request` for an HTTP/1.1 connection: its host in a `Host` header, and the
    /// connection's task told when its answer is due (`answer_by`) and whether a body
    /// follows the head.
    fn prepare_h1(&self, request: &mut Request<UpstreamBody>, busy: &Busy, answer_by: Instant) {
        self.set_host(request);
        if let Some(usage) = busy.usage() {
            if request.body().is_end_stream() {
                usage.exchange.store(0, Ordering::Relaxed);
            } else {
                usage.exchange.store(OPEN, Ordering::Relaxed);
                request.body_mut().sent_on = Some(usage.clone());
            }
            let due = clock::millis(answer_by).max(1);
            usage.heard.store(false, Ordering::Relaxed);
            usage.answer_by.store(due, Ordering::Relaxed);
        }
    }

    /// Puts the request's host in a `Host` header, its target in origin form.
    fn set_host(&self, request: &mut Request<UpstreamBody>) {
        // A request first meant for HTTP/2 carries its host in the target.
        if let Some(authority) = request.uri().authority() {
            let host = HeaderValue::from_str(authority.as_str()).ok();
            let target = request.uri().path_and_query().cloned();
            if let (Some(host), Some(target)) = (host, target) {
                request.headers_mut().insert(header::HOST, host);
                *request.uri_mut() = Uri::from(target);
            }
        }
        if !request.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
        }
    }

    /// What an HTTP/1.1 exchange readied by [`Inner::prepare_h1`] came to (as [`Inner::answered`]).
    #[allow(clippy::result_large_err)]
    fn answered_h1(
        self: &Arc<Self>,
        sent: Sent,
        sender: H1,
        busy: Busy,
    ) -> Result<Response<PooledBody>, Failure> {
        // (A request dropped while it waits leaves its deadline behind: its connection is
        // not reused, and closing it then costs nothing.)
        let late = match busy.usage() {
            Some(usage) => {
                usage.answer_by.store(0, Ordering::Relaxed);
                sent.is_err() && usage.answer_late.load(Ordering::Relaxed)
            }
            None => false,
        };
        // A `101` hands the connection to a tunnel: never back to the pool.
        let reusable = sent
            .as_ref()
            .is_ok_and(|response| response.status() != StatusCode::SWITCHING_PROTOCOLS);
        self.answered(sent, reusable.then_some(sender), busy, None)
            .map_err(|failure| Failure { late, ..failure })
    }

    /// What one attempt on a connection came to: the response, holding the connection's
    /// lease (`h1`: the HTTP/1.1 connection, if it may carry another request), or the failure
    /// with the request when hyper handed it back unsent (which makes the error large; it
    /// is returned on failures only, as `send_on`'s is).
    #[allow(clippy::result_large_err)]
    fn answered(
        self: &Arc<Self>,
        sent: Sent,
        h1: Option<H1>,
        busy: Busy,
        replay: Option<http::request::Parts>,
    ) -> Result<Response<PooledBody>, Failure> {
        match sent {
            Ok(response) => Ok(response.map(|body| {
                PooledBody::hyper(
                    body,
                    Lease {
                        pool: self.clone(),
                        h1,
                        busy,
                    },
                )
            })),
            Err(mut err) => {
                drop(busy);
                let unsent = err.take_message();
                Err(Failure {
                    error: err.into_error(),
                    unsent,
                    late: false,
                    replay,
                })
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request on its way ([`Pool::send`]): waiting for its answer on an HTTP/1.1
    /// connection, or anything else, boxed.
    #[must_use = "the request is already handed to a connection: dropping this cancels it and closes the connection"]
    pub struct Sending<'a, F> {
        inner: &'a Arc<Inner>,
        deadline: Instant,
        #[pin]
        state: State<'a, F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<'a, F> {
        /// Sent on an idle HTTP/1.1 connection; hyper's answer awaited.
        H1 {
            #[pin]
            sent: F,
            // Until the answer comes.
            on: Option<(H1, Busy)>,
            reused: bool,
        },
        /// Sent on an idle connection without hyper's client ([`bare`]).
        Bare {
            exchange: bare::Exchange,
        },
        /// Connecting, HTTP/2, or a second attempt.
        Boxed {
            sending: Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>,
        },
    }
}

impl<'a, F: Future<Output = Sent>> Future for Sending<'a, F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut this = self.project();
        let inner: &'a Arc<Inner> = this.inner;
        loop {
            let again = match this.state.as_mut().project() {
                StateProj::Boxed { sending } => return sending.as_mut().poll(cx),
                StateProj::Bare { exchange } => {
                    let failed = match ready!(exchange.poll(cx)) {
                        Ok(response) => return Poll::Ready(Ok(response.map(PooledBody::bare))),
                        Err(failed) => failed,
                    };
                    match inner.resendable_bare(failed) {
                        Ok(again) => again,
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
                StateProj::H1 { sent, on, reused } => {
                    let sent = ready!(sent.poll(cx));
                    let (sender, busy) = on
                        .take()
                        .expect("a request's answer is polled until ready, once");
                    let failure = match inner.answered_h1(sent, sender, busy) {
                        Ok(response) => return Poll::Ready(Ok(response)),
                        Err(failure) => failure,
                    };
                    match inner.resendable(failure, *reused) {
                        Ok(again) => again,
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
            };
            let sending = Box::pin(inner.resend(again, *this.deadline));
            this.state.set(State::Boxed { sending });
        }
    }
}

/// A copy of a request's head, to send it again.
fn head_of<B>(request: &Request<B>) -> http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = request.method().clone();
    parts.uri = request.uri().clone();
    parts.version = request.version();
    parts.headers = request.headers().clone();
    parts
}

/// Whether an HTTP/2 upstream said it did not process the stream (RFC 9113 §8.7): it
/// refused it (`REFUSED_STREAM`), or a graceful `GOAWAY` named a lower last stream. (A
/// `GOAWAY` with an error code may be reported to streams it had processed too.)
fn unprocessed_h2(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && match h2.reason() {
                    Some(h2::Reason::REFUSED_STREAM) => h2.is_reset(),
                    Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                    _ => false,
                };
        }
        source = cause.source();
    }
    false
}

/// Runs a connection until it ends, until it has been unused for `keepalive`, or (HTTP/1.1)
/// until the request on it has waited past its `answer_by` for a response head; holds its
/// place under `max_connections` until then.
///
/// One timer serves both deadlines, and it is moved only when a request's deadline comes
/// before the time it is set for: requests follow one another with later deadlines each, so
/// the timer is reset about once per `upstream_timeout`, not once per request.
async fn drive<F>(
    connection: F,
    usage: Arc<Usage>,
    keepalive: Duration,
    _permit: OwnedSemaphorePermit,
) where
    F: std::future::Future<Output = hyper::Result<()>>,
{
    // The head of a late answer may have been read in the very poll in which the deadline
    // is found passed, before its request has run to take the deadline down: an upstream
    // heard from gets this much longer, once per request.
    const GRACE: Duration = Duration::from_millis(10);
    let mut connection = std::pin::pin!(connection);
    let mut timer = std::pin::pin!(clock::Alarm::until(Instant::now() + keepalive));
    // The deadline that was given its grace.
    let mut graced = 0;
    poll_fn(|cx| {
        if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
            if let Err(err) = ended {
                debug!(error = %err, "upstream connection ended");
            }
            return Poll::Ready(());
        }
        let answer_by = usage.answer_by.load(Ordering::Relaxed);
        // (Not while that deadline has its grace: a body segment waking this task before
        // the request has taken the deadline down would otherwise cut the grace short.)
        if answer_by != 0 && answer_by != graced {
            let due = clock::instant(answer_by);
            if due < timer.deadline() {
                timer.as_mut().reset(due);
            }
        }
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let answer_by = usage.answer_by.load(Ordering::Relaxed);
            if answer_by != 0 && answer_by <= clock::millis(now) {
                if graced != answer_by && usage.heard.load(Ordering::Relaxed) {
                    graced = answer_by;
                    timer.as_mut().reset(now + GRACE);
                    continue;
                }
                debug!("no response head from the upstream in time; closing its connection");
                usage.answer_late.store(true, Ordering::Relaxed);
                return Poll::Ready(());
            }
            let idle_until = clock::instant(usage.last_used.load(Ordering::Relaxed)) + keepalive;
            if usage.in_flight.load(Ordering::Relaxed) == 0 && idle_until <= now {
                debug!("closing an idle upstream connection");
                return Poll::Ready(());
            }
            let mut next = if idle_until > now {
                idle_until
            } else {
                now + keepalive
            };
            if answer_by != 0 {
                // Later than `now` (checked above), so the timer cannot fire at once again.
                next = next.min(clock::instant(answer_by));
            }
            timer.as_mut().reset(next);
        }
        Poll::Pending
    })
    .await
}

/// The connection a response came on, given back when its body has been read.
struct Lease {
    pool: Arc<Inner>,
    /// The HTTP/1.1 connection, if it may carry another request once this one is done.
    h1: Option<H1>,
    busy: Busy,
}

impl Lease {
    fn release(self, complete: bool) {
        let Lease { pool, h1, busy } = self;
        let now = clock::now();
        let Some(usage) = busy.end(now) else { return };
        let Some(sender) = h1 else { return };
        if usage.exchange.load(Ordering::Acquire) != 0 {
            // The upstream answered before it had the whole request (or the body never
            // ended): whatever it makes of the rest, nothing else goes on this connection.
            usage.close();
            return;
        }
        // A response not read to the end leaves the rest of it on the connection: it cannot
        // serve another request, and hyper closes it once dropped.
        if !complete {
            return;
        }
        if sender.is_ready() {
            pool.check_in(sender, usage, now);
        } else if !sender.is_closed() {
            // Both sides are done, but the connection's task (maybe on another thread) has
            // not yet seen the end of the exchange: return it once it has. (Outside a
            // runtime, as when one shuts down, the connection is simply let go.)
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let mut sender = sender;
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.check_in(sender, usage, Instant::now());
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
