//! What a downstream connection is doing, and when it has been quiet for too long.
//!
//! hyper's own header timer starts as soon as it waits for a request head, so it also closes
//! connections idle between requests, and HTTP/2 has no idle limit at all (a client that
//! answers PINGs keeps its connection for ever). Instead, each connection's task keeps an
//! [`Activity`], fed by the socket ([`Watched`]: bytes arriving) and by the requests
//! ([`InFlight`]: one per request, alive until its response body is done), and closes the
//! connection past whichever limit applies:
//!
//! - a request head started but unfinished: `server.header_read_timeout` from its first byte
//!   (slowloris), as for the first byte of a new plain connection;
//! - HTTP/1.1 between requests: `server.keepalive_timeout`;
//! - HTTP/2 without an open stream, or TLS that has sent nothing since its handshake:
//!   `server.idle_timeout` (PINGs and SETTINGS are not requests).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock;

/// The limits a connection is held to (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub keepalive: Duration,
    pub idle: Duration,
}

const NONE: u64 = u64::MAX;

/// One connection's activity, shared by its task, its socket and its requests.
pub struct Activity {
    in_flight: AtomicU32,
    served: AtomicBool,
    http2: AtomicBool,
    /// When the connection last became idle (`clock::millis`): opened, or a response ended.
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived while idle, or `NONE`.
    head_started: AtomicU64,
    /// Set when a deadline may have moved earlier (a head started, HTTP/2 detected), for the
    /// connection's task to look again.
    changed: AtomicBool,
    /// The limit before the first request: the header timeout for plain connections (as for
    /// a slow head), the idle timeout once a TLS handshake has been paid for.
    first_wait: Duration,
}

/// Why a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request head was not finished in time.
    Head,
    /// An HTTP/1.1 connection idle between requests.
    KeepAlive,
    /// An HTTP/2 connection without requests, or a fresh connection that sent nothing.
    Idle,
}

impl Activity {
    pub fn new(now: Instant, first_wait: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(clock::millis(now)),
            head_started: AtomicU64::new(NONE),
            changed: AtomicBool::new(false),
            first_wait,
        })
    }

    /// The connection speaks HTTP/2 (ALPN, or the prior-knowledge preface).
    pub fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }

    /// A request has been handed to the service; the returned guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started
                .store(clock::millis(Instant::now()), Ordering::Relaxed);
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the connection is past its limit at `now`, or else when to look again.
    pub fn check(&self, limits: &Limits, now: Instant) -> Result<Instant, Expired> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Requests have their own deadlines; look again once they may be over.
            return Ok(now + limits.keepalive.min(limits.idle));
        }
        let http2 = self.http2.load(Ordering::Relaxed);
        let head = self.head_started.load(Ordering::Relaxed);
        let (since, limit, why) = if head != NONE && !http2 {
            (head, limits.header_read, Expired::Head)
        } else if !self.served.load(Ordering::Relaxed) {
            let limit = if http2 { limits.idle } else { self.first_wait };
            (
                self.idle_since.load(Ordering::Relaxed),
                limit,
                Expired::Idle,
            )
        } else if http2 {
            (
                self.idle_since.load(Ordering::Relaxed),
                limits.idle,
                Expired::Idle,
            )
        } else {
            let since = self.idle_since.load(Ordering::Relaxed);
            (since, limits.keepalive, Expired::KeepAlive)
        };
        let deadline = clock::instant(since) + limit;
        if deadline <= now {
            Err(why)
        } else {
            Ok(deadline)
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection future held to its [`Limits`]: it ends when the connection ends, or
    /// closes it once it has been quiet past the limit that applies. An idle connection is
    /// first shut down gracefully (HTTP/2 says GOAWAY), with the header timeout to finish.
    pub struct Supervised<C, F> {
        #[pin]
        connection: C,
        #[pin]
        check: tokio::time::Sleep,
        graceful: F,
        activity: Arc<Activity>,
        limits: Limits,
        stopping: bool,
        closing: bool,
    }
}

impl<C, F> Supervised<C, F>
where
    F: FnMut(Pin<&mut C>),
{
    /// `graceful` starts the connection's graceful shutdown.
    pub fn new(connection: C, graceful: F, activity: Arc<Activity>, limits: Limits) -> Self {
        let now = Instant::now();
        let first = activity.check(&limits, now).unwrap_or(now);
        Supervised {
            connection,
            check: tokio::time::sleep_until(first.into()),
            graceful,
            activity,
            limits,
            stopping: false,
            closing: false,
        }
    }

    /// Server shutdown: in-flight requests finish, nothing new starts.
    pub fn shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        if !*this.stopping {
            *this.stopping = true;
            (this.graceful)(this.connection);
        }
    }
}

impl<C, F, E> std::future::Future for Supervised<C, F>
where
    C: std::future::Future<Output = Result<(), E>>,
    F: FnMut(Pin<&mut C>),
{
    /// `Ok(Some(why))` when a limit closed the connection.
    type Output = Result<Option<Expired>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let Poll::Ready(ended) = this.connection.as_mut().poll(cx) {
                return Poll::Ready(ended.map(|()| None));
            }
            // Reading may have started a head (or revealed HTTP/2): its deadline may come
            // before the one the timer is set for. (A head read whole in one go has already
            // become a request, which needs no earlier look.)
            if this.activity.changed.swap(false, Ordering::Relaxed) && !*this.closing {
                let now = Instant::now();
                let next = this.activity.check(this.limits, now).unwrap_or(now);
                if next < this.check.deadline().into_std() {
                    this.check.as_mut().reset(next.into());
                }
            }
            if this.check.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            match this.activity.check(this.limits, now) {
                _ if *this.closing => return Poll::Ready(Ok(Some(Expired::Idle))),
                Ok(next) => this.check.as_mut().reset(next.into()),
                Err(Expired::Idle) if !*this.stopping => {
                    *this.stopping = true;
                    *this.closing = true;
                    (this.graceful)(this.connection.as_mut());
                    this.check
                        .as_mut()
                        .reset((now + this.limits.header_read).into());
                }
                Err(why) => return Poll::Ready(Ok(Some(why))),
            }
        }
    }
}

/// One request in flight on a connection; dropped with its response body (or with the
/// request's future, if the client goes away first).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(clock::millis(Instant::now()), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's [`InFlight`] when it is dropped.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A downstream socket that tells its [`Activity`] when bytes arrive.
    pub struct Watched<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
    }
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if buf.filled().len() > before {
                this.activity.bytes_arrived();
            }
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read: Duration::from_secs(10),
        keepalive: Duration::from_secs(75),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn each_state_has_its_limit() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // A fresh plain connection: the header timeout.
        let plain = Activity::new(start, LIMITS.header_read);
        assert!(plain.check(&LIMITS, at(9)).is_ok());
        assert_eq!(plain.check(&LIMITS, at(11)), Err(Expired::Idle));
        // A fresh TLS connection: the idle timeout.
        let tls = Activity::new(start, LIMITS.idle);
        assert!(tls.check(&LIMITS, at(59)).is_ok());
        assert_eq!(tls.check(&LIMITS, at(61)), Err(Expired::Idle));
        // Busy: never expired.
        let busy = Activity::new(start, LIMITS.header_read);
        let request = busy.begin();
        assert!(busy.check(&LIMITS, at(1000)).is_ok());
        drop(request);
        // After a response: keep-alive for HTTP/1.1, measured from the response's end.
        let now = Instant::now();
        assert!(busy.check(&LIMITS, now + Duration::from_secs(74)).is_ok());
        assert_eq!(
            busy.check(&LIMITS, now + Duration::from_secs(76)),
            Err(Expired::KeepAlive)
        );
        // HTTP/2: the idle timeout.
        busy.set_http2();
        assert_eq!(
            busy.check(&LIMITS, now + Duration::from_secs(61)),
            Err(Expired::Idle)
        );
    }

    #[test]
    fn a_started_head_has_the_header_timeout() {
        let start = Instant::now();
        let activity = Activity::new(start, LIMITS.idle);
        drop(activity.begin());
        activity.bytes_arrived();
        let now = Instant::now();
        assert!(activity
            .check(&LIMITS, now + Duration::from_secs(9))
            .is_ok());
        assert_eq!(
            activity.check(&LIMITS, now + Duration::from_secs(11)),
            Err(Expired::Head)
        );
    }
}
