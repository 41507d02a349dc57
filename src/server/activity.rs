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

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::BodyWatch;
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
    /// A request has been answered `101`: the connection is to be handed over to it.
    upgraded: AtomicBool,
    /// Bytes have been written to the socket since it was last flushed: the HTTP/1.1
    /// connection may still hold part of a response in its write buffer.
    unflushed: AtomicBool,
    /// When the connection last became idle (`clock::millis`): opened, or a response ended.
    idle_since: AtomicU64,
    /// Request bodies hyper is reading, not yet at their end.
    bodies_open: AtomicU32,
    /// A request body was dropped or failed before its end since the last request began:
    /// hyper may have stopped reading it part-way, so the connection's next bytes may be the
    /// rest of it, and it is not parked (a new request head means hyper is past that body).
    abandoned: AtomicBool,
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
            upgraded: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            idle_since: AtomicU64::new(clock::millis(now)),
            bodies_open: AtomicU32::new(0),
            abandoned: AtomicBool::new(false),
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
        self.abandoned.store(false, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        InFlight {
            activity: self.clone(),
            responding: false,
        }
    }

    /// A request body hyper reads has begun: the watch to give it, which counts it until
    /// its end is told ([`BodyWatch::body_ended`]).
    pub fn watch_body(self: &Arc<Self>) -> Arc<dyn BodyWatch> {
        self.bodies_open.fetch_add(1, Ordering::Relaxed);
        self.clone()
    }

    /// Whether a request body was left before its end since the last request began.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Whether a request was answered `101 Switching Protocols`.
    pub fn upgraded(&self) -> bool {
        self.upgraded.load(Ordering::Relaxed)
    }

    /// No request under way and no head begun since the last one ended.
    fn between_requests(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
    }

    fn bytes_arrived(&self) {
        if self.between_requests() {
            self.head_started
                .store(clock::millis(clock::now()), Ordering::Relaxed);
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether an HTTP/1.1 connection can be parked at `now`: it has served a request, has
    /// none under way, has flushed every response (hyper lets go of its write buffer with the
    /// connection), has read nothing since its last response ended, and has been idle for
    /// [`PARK_AFTER`].
    fn parkable(&self, now: Instant) -> bool {
        self.served.load(Ordering::Relaxed)
            && self.quiet()
            && clock::instant(self.idle_since.load(Ordering::Relaxed)) + PARK_AFTER <= now
    }

    /// No request under way, no head begun, every response flushed, and every request body
    /// read to its end (a body still being read, or one left part-way, may have bytes to come
    /// that are no request).
    fn quiet(&self) -> bool {
        self.between_requests()
            && !self.unflushed.load(Ordering::Relaxed)
            && self.bodies_open.load(Ordering::Relaxed) == 0
            && !self.abandoned()
    }

    /// Whether everything written to the socket has been flushed.
    pub fn flushed(&self) -> bool {
        !self.unflushed.load(Ordering::Relaxed)
    }

    /// When to look again whether the connection can be parked, `None` before its first
    /// request (which nothing but a request ends). Quiet: when it will have been idle for
    /// [`PARK_AFTER`]. Otherwise [`PARK_AFTER`] from now: while requests follow each other
    /// the timer is then only ever moved later, which costs tokio nothing. Whenever the
    /// connection cannot be parked at `now`, the look is later than `now`.
    fn park_look(&self, now: Instant) -> Option<Instant> {
        if !self.served.load(Ordering::Relaxed) {
            return None;
        }
        Some(if self.quiet() {
            clock::instant(self.idle_since.load(Ordering::Relaxed)) + PARK_AFTER
        } else {
            now + PARK_AFTER
        })
    }

    /// When to look at the connection again: at once if it is past its limit at `now`, else
    /// at the next limit or (`parks`) the next parking look, whichever comes first.
    fn next_look(&self, limits: &Limits, now: Instant, stall: &mut Stall, parks: bool) -> Instant {
        let next = self.check(limits, now, stall).unwrap_or(now);
        match self.park_look(now).filter(|_| parks) {
            Some(look) => next.min(look),
            None => next,
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

/// How long an HTTP/1.1 connection stays idle between requests before its hyper state (read
/// and write buffers, parser, dispatcher) is given back and only the socket is kept: see
/// [`Ended::Parked`]. Short enough that a browser's pause between page loads parks, long
/// enough that a client sending request after request (keep-alive under load) never pays
/// for parking and resuming.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// A served connection, as [`Supervised`] drives it.
pub trait Serving {
    /// Serves until the connection is done (for HTTP/1.1: without shutting the socket down,
    /// so that it can be taken back from hyper).
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;
    /// Finishes what is under way and accepts nothing new.
    fn graceful(&mut self);
}

/// How a supervised connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its protocol is done (closed by the client, `Connection: close`, shutdown, a `101`).
    Done,
    /// A limit closed it.
    Expired(Expired),
    /// An HTTP/1.1 connection idle for [`PARK_AFTER`] was taken back from hyper, which gave
    /// it back between two requests: the caller keeps the socket until the client sends
    /// again (or the keep-alive limit ends it), then serves it anew. An idle connection then
    /// costs its socket and a small task rather than hyper's buffers (about 20 KiB each).
    Parked,
}

pin_project_lite::pin_project! {
    /// A connection held to its [`Limits`]: it ends when the connection ends, or closes it
    /// once it has been quiet past the limit that applies. An idle HTTP/2 connection is first
    /// shut down gracefully (GOAWAY), with the header timeout to finish; requests still in
    /// flight then keep it as long as they move. An HTTP/1.1 connection (`parks`) is parked
    /// once idle for [`PARK_AFTER`].
    pub struct Supervised<'a, C> {
        connection: &'a mut C,
        #[pin]
        check: clock::Alarm,
        activity: Arc<Activity>,
        limits: Limits,
        stall: Stall,
        parks: bool,
        parking: bool,
        stopping: bool,
        closing: bool,
    }
}

impl<'a, C: Serving> Supervised<'a, C> {
    pub fn new(
        connection: &'a mut C,
        activity: Arc<Activity>,
        limits: Limits,
        parks: bool,
    ) -> Self {
        let now = Instant::now();
        let mut stall = Stall::new(now);
        let first = activity.next_look(&limits, now, &mut stall, parks);
        Supervised {
            connection,
            check: clock::Alarm::until(first),
            activity,
            limits,
            stall,
            parks,
            parking: false,
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
            this.connection.graceful();
            let activity = &this.activity;
            let quiet = !activity.http2.load(Ordering::Relaxed) && activity.between_requests();
            if quiet {
                *this.closing = true;
                this.check.reset(Instant::now());
            }
        }
    }
}

impl<C: Serving> std::future::Future for Supervised<'_, C> {
    type Output = hyper::Result<Ended>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Everything this wake-up does (hyper's reads and writes, the requests it polls)
        // happens at one time: the clock is read once.
        let _moment = clock::moment();
        let mut this = self.project();
        loop {
            if let Poll::Ready(ended) = this.connection.poll_serve(cx) {
                let how = if *this.parking {
                    Ended::Parked
                } else {
                    Ended::Done
                };
                return Poll::Ready(ended.map(|()| how));
            }
            // Reading may have started a head (or revealed HTTP/2): its deadline may come
            // before the one the timer is set for. (A head read whole in one go has already
            // become a request, which needs no earlier look.)
            if this.activity.changed.swap(false, Ordering::Relaxed) && !*this.closing {
                let now = clock::now();
                let next = this
                    .activity
                    .next_look(this.limits, now, this.stall, *this.parks);
                if next < this.check.deadline() {
                    this.check.as_mut().reset(next);
                }
            }
            if this.check.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The clock itself, not the moment's time: a deadline that has come must be
            // judged by a time past it, or resetting the timer to it would spin here.
            let now = Instant::now();
            // A graceful close has had its time; requests still in flight keep the
            // connection under the in-flight rule.
            if *this.closing && this.activity.in_flight.load(Ordering::Relaxed) == 0 {
                return Poll::Ready(Ok(Ended::Expired(Expired::Idle)));
            }
            match this.activity.check(this.limits, now, this.stall) {
                Ok(mut next) => {
                    if *this.parks && !*this.stopping && !*this.parking {
                        if this.activity.parkable(now) {
                            // hyper is between two requests (every response flushed, nothing
                            // read since the last one ended): its graceful shutdown closes it
                            // at once, with no `Connection: close` to anyone.
                            *this.parking = true;
                            this.connection.graceful();
                            continue;
                        }
                        if let Some(look) = this.activity.park_look(now) {
                            next = next.min(look);
                        }
                    }
                    this.check.as_mut().reset(next);
                }
                // HTTP/2 says GOAWAY first. An HTTP/1.1 connection is only ever idle before
                // its first request, where hyper's graceful shutdown would wait for one.
                Err(Expired::Idle)
                    if !*this.stopping && this.activity.http2.load(Ordering::Relaxed) =>
                {
                    *this.stopping = true;
                    *this.closing = true;
                    this.connection.graceful();
                    this.check.as_mut().reset(now + this.limits.header_read);
                }
                Err(why) => return Poll::Ready(Ok(Ended::Expired(why))),
            }
        }
    }
}

impl BodyWatch for Activity {
    fn body_ended(&self, whole: bool) {
        if !whole {
            self.abandoned.store(true, Ordering::Relaxed);
        }
        self.bodies_open.fetch_sub(1, Ordering::Relaxed);
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
    /// The request is answered `101 Switching Protocols`.
    pub fn upgrading(&self) {
        self.activity.upgraded.store(true, Ordering::Relaxed);
    }

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
            .store(clock::millis(clock::now()), Ordering::Relaxed);
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
    /// A downstream socket that tells its [`Activity`] when bytes arrive. Bytes read from it
    /// but not consumed (what hyper had buffered when a connection was taken back from it)
    /// are replayed first.
    pub struct Watched<S> {
        #[pin]
        inner: S,
        activity: Arc<Activity>,
        replay: Bytes,
    }
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched {
            inner,
            activity,
            replay: Bytes::new(),
        }
    }

    /// Whether bytes are waiting to be read again.
    pub fn has_replay(&self) -> bool {
        !self.replay.is_empty()
    }

    /// Reads `bytes` again, before anything else the socket brings and before whatever is
    /// still to be replayed: every caller gives back bytes it read from here earlier than
    /// those (a reader that stopped part-way through a longer replay hands back the part it
    /// took). They are copied: what hyper gives back is a view of its whole read buffer, which
    /// would stay allocated.
    pub fn replay(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut joined = BytesMut::with_capacity(bytes.len() + self.replay.len());
        joined.extend_from_slice(bytes);
        joined.extend_from_slice(&self.replay);
        self.replay = joined.freeze();
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            this.activity.bytes_arrived();
            return Poll::Ready(Ok(()));
        }
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
        let this = self.project();
        this.activity.unflushed.store(true, Ordering::Relaxed);
        this.inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.activity.unflushed.store(true, Ordering::Relaxed);
        this.inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes the socket once its own write buffer is empty (and a TLS stream its own
    /// buffer here): after that, nothing of a response is left to lose.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.inner.poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            this.activity.unflushed.store(false, Ordering::Relaxed);
        }
        polled
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
    fn an_http1_connection_parks_once_quiet_between_requests() {
        let start = Instant::now();
        let activity = activity(start, LIMITS.header_read);
        // Before its first request: hyper would wait for one, not let go; and no look, so a
        // silent TLS connection does not wake its task until its idle timeout.
        assert!(!activity.parkable(start + Duration::from_secs(5)));
        assert_eq!(activity.park_look(start + Duration::from_secs(5)), None);
        let request = activity.begin();
        let busy = Instant::now();
        assert!(!activity.parkable(busy + Duration::from_secs(5)));
        // While busy, looked at again a parking delay later.
        assert_eq!(activity.park_look(busy), Some(busy + PARK_AFTER));
        drop(request);
        let idle = Instant::now();
        assert!(!activity.parkable(idle));
        let look = activity.park_look(idle).expect("a look");
        assert!(look > idle && look <= idle + PARK_AFTER);
        assert!(activity.parkable(idle + PARK_AFTER + Duration::from_millis(2)));
        // Part of a response still unflushed: not parked, and looked at again later.
        activity.unflushed.store(true, Ordering::Relaxed);
        let later = idle + Duration::from_secs(5);
        assert!(!activity.parkable(later));
        assert_eq!(activity.park_look(later), Some(later + PARK_AFTER));
        activity.unflushed.store(false, Ordering::Relaxed);
        // A head begun: hyper holds part of it, and the header timeout runs instead.
        activity.bytes_arrived();
        assert!(!activity.parkable(idle + Duration::from_secs(5)));
    }

    /// A request body still being read, or one left before its end, keeps the connection
    /// from being parked: the bytes that follow may be the rest of that body, which parking
    /// would read as a new request. A new request (hyper past the body) parks again.
    #[test]
    fn a_body_not_read_to_its_end_keeps_the_connection_from_parking() {
        let activity = activity(Instant::now(), LIMITS.header_read);
        let later = || Instant::now() + PARK_AFTER + Duration::from_secs(1);
        drop(activity.begin());
        assert!(activity.parkable(later()));
        let watch = activity.watch_body();
        assert!(!activity.parkable(later()), "a body still being read");
        watch.body_ended(true);
        assert!(activity.parkable(later()), "read to its end");
        activity.watch_body().body_ended(false);
        assert!(!activity.parkable(later()), "left part-way");
        assert!(activity.abandoned());
        drop(activity.begin());
        assert!(
            activity.parkable(later()),
            "a new request: hyper is past that body"
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
