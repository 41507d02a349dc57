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
//!   `server.idle_timeout` (PINGs and SETTINGS are not requests);
//! - a request whose response has started, `server.idle_timeout` without progress: no body
//!   frame passed on either way (a client that stopped reading, or stopped sending a body the
//!   upstream waits for; an upstream that stopped sending), as nginx's `send_timeout` and
//!   `client_body_timeout`. Progress is counted per connection ([`crate::Progress`]): by the
//!   response bodies here and by the request bodies going upstream. Before its response
//!   starts a request is bounded by its own deadlines (`server.upstream_timeout`,
//!   `backend.timeout`, the login body's).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{clock, ConnInfo};

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
    /// Requests whose response head has been handed to hyper (their body not yet done).
    responding: AtomicU32,
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
    /// The connection's requests count their progress there.
    conn: Arc<ConnInfo>,
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
    /// Responses under way moved nothing for the idle timeout.
    Stalled,
}

/// What the connection's task last saw of its requests' progress.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    seen: u64,
    moved_at: Instant,
}

impl Stall {
    pub fn new(now: Instant) -> Stall {
        Stall {
            seen: 0,
            moved_at: now,
        }
    }
}

impl Activity {
    pub fn new(now: Instant, first_wait: Duration, conn: Arc<ConnInfo>) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            responding: AtomicU32::new(0),
            served: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            idle_since: AtomicU64::new(clock::millis(now)),
            head_started: AtomicU64::new(NONE),
            changed: AtomicBool::new(false),
            first_wait,
            conn,
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
        InFlight {
            activity: self.clone(),
            responding: false,
        }
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
    /// `stall` is what the caller saw of its requests' progress at its last look.
    pub fn check(
        &self,
        limits: &Limits,
        now: Instant,
        stall: &mut Stall,
    ) -> Result<Instant, Expired> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Progress is sampled four times per idle timeout: a stall ends the connection
            // between one and one and a quarter idle timeouts after the last frame.
            let step = (limits.idle / 4).max(Duration::from_millis(1));
            if self.responding.load(Ordering::Relaxed) == 0 {
                // No response under way: the requests have their own deadlines.
                stall.moved_at = now;
            } else {
                let count = self.conn.progress.count();
                if count != stall.seen {
                    stall.seen = count;
                    stall.moved_at = now;
                } else if now.saturating_duration_since(stall.moved_at) >= limits.idle {
                    return Err(Expired::Stalled);
                }
            }
            return Ok(now + step);
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
    /// closes it once it has been quiet past the limit that applies. An idle HTTP/2
    /// connection is first shut down gracefully (GOAWAY), with the header timeout to finish;
    /// requests still in flight then keep it as long as they move.
    pub struct Supervised<C, F> {
        #[pin]
        connection: C,
        #[pin]
        check: tokio::time::Sleep,
        graceful: F,
        activity: Arc<Activity>,
        limits: Limits,
        stall: Stall,
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
        let mut stall = Stall::new(now);
        let first = activity.check(&limits, now, &mut stall).unwrap_or(now);
        Supervised {
            connection,
            check: tokio::time::sleep_until(first.into()),
            graceful,
            activity,
            limits,
            stall,
            stopping: false,
            closing: false,
        }
    }

    /// Server shutdown: in-flight requests finish, nothing new starts. An HTTP/1.1 connection
    /// with no request under way (none yet, or between two) is closed at once: hyper's
    /// graceful shutdown would wait for a first request that may never come.
    pub fn shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        if !*this.stopping {
            *this.stopping = true;
            (this.graceful)(this.connection);
            let activity = &this.activity;
            let quiet = !activity.http2.load(Ordering::Relaxed)
                && activity.in_flight.load(Ordering::Relaxed) == 0
                && activity.head_started.load(Ordering::Relaxed) == NONE;
            if quiet {
                *this.closing = true;
                this.check.reset(Instant::now().into());
            }
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
                let next = this
                    .activity
                    .check(this.limits, now, this.stall)
                    .unwrap_or(now);
                if next < this.check.deadline().into_std() {
                    this.check.as_mut().reset(next.into());
                }
            }
            if this.check.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            // A graceful close has had its time; requests still in flight keep the
            // connection under the in-flight rule.
            if *this.closing && this.activity.in_flight.load(Ordering::Relaxed) == 0 {
                return Poll::Ready(Ok(Some(Expired::Idle)));
            }
            match this.activity.check(this.limits, now, this.stall) {
                Ok(next) => this.check.as_mut().reset(next.into()),
                // HTTP/2 says GOAWAY first. An HTTP/1.1 connection is only ever idle before
                // its first request, where hyper's graceful shutdown would wait for one.
                Err(Expired::Idle)
                    if !*this.stopping && this.activity.http2.load(Ordering::Relaxed) =>
                {
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
pub struct InFlight {
    activity: Arc<Activity>,
    /// Its response head has been handed to hyper.
    responding: bool,
}

impl InFlight {
    fn respond(&mut self) {
        if !self.responding {
            self.responding = true;
            self.activity.responding.fetch_add(1, Ordering::Relaxed);
            self.activity.conn.progress.note();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        if self.responding {
            activity.responding.fetch_sub(1, Ordering::Relaxed);
        }
        activity
            .idle_since
            .store(clock::millis(Instant::now()), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body under way: each frame it passes on is progress, and it ends its
    /// request's [`InFlight`] when it is dropped.
    pub struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B> Tracked<B> {
    pub fn new(body: B, mut in_flight: InFlight) -> Tracked<B> {
        in_flight.respond();
        Tracked { body, in_flight }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            this.in_flight.activity.conn.progress.note();
        }
        polled
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

    fn activity(start: Instant, first_wait: Duration) -> Arc<Activity> {
        let addr = "127.0.0.1:1".parse().expect("address");
        Activity::new(
            start,
            first_wait,
            Arc::new(ConnInfo::new(addr, addr, false)),
        )
    }

    /// `activity.check` at `now` with a fresh look at progress.
    fn check(activity: &Activity, now: Instant) -> Result<Instant, Expired> {
        activity.check(&LIMITS, now, &mut Stall::new(now))
    }

    #[test]
    fn each_state_has_its_limit() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // A fresh plain connection: the header timeout.
        let plain = activity(start, LIMITS.header_read);
        assert!(check(&plain, at(9)).is_ok());
        assert_eq!(check(&plain, at(11)), Err(Expired::Idle));
        // A fresh TLS connection: the idle timeout.
        let tls = activity(start, LIMITS.idle);
        assert!(check(&tls, at(59)).is_ok());
        assert_eq!(check(&tls, at(61)), Err(Expired::Idle));
        // Busy, no response yet: never expired (the request has its own deadlines).
        let busy = activity(start, LIMITS.header_read);
        let request = busy.begin();
        assert!(check(&busy, at(1000)).is_ok());
        drop(request);
        // After a response: keep-alive for HTTP/1.1, measured from the response's end.
        let now = Instant::now();
        assert!(check(&busy, now + Duration::from_secs(74)).is_ok());
        assert_eq!(
            check(&busy, now + Duration::from_secs(76)),
            Err(Expired::KeepAlive)
        );
        // HTTP/2: the idle timeout.
        busy.set_http2();
        assert_eq!(
            check(&busy, now + Duration::from_secs(61)),
            Err(Expired::Idle)
        );
    }

    #[test]
    fn a_started_head_has_the_header_timeout() {
        let start = Instant::now();
        let activity = activity(start, LIMITS.idle);
        drop(activity.begin());
        activity.bytes_arrived();
        let now = Instant::now();
        assert!(check(&activity, now + Duration::from_secs(9)).is_ok());
        assert_eq!(
            check(&activity, now + Duration::from_secs(11)),
            Err(Expired::Head)
        );
    }

    #[test]
    fn a_response_that_stops_moving_expires_after_the_idle_timeout() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let activity = activity(start, LIMITS.header_read);
        let mut stall = Stall::new(start);
        let mut request = activity.begin();
        // Waiting for its response: no stall, however long.
        assert!(activity.check(&LIMITS, at(200), &mut stall).is_ok());
        request.respond();
        // Sampled every quarter of the idle timeout.
        assert_eq!(activity.check(&LIMITS, at(201), &mut stall), Ok(at(216)));
        activity.conn.progress.note();
        assert!(activity.check(&LIMITS, at(230), &mut stall).is_ok());
        // Nothing moved since 230.
        assert!(activity.check(&LIMITS, at(289), &mut stall).is_ok());
        assert_eq!(
            activity.check(&LIMITS, at(290), &mut stall),
            Err(Expired::Stalled)
        );
        // Done: the keep-alive rule again.
        drop(request);
        let now = Instant::now();
        assert!(activity.check(&LIMITS, now, &mut stall).is_ok());
    }
}
