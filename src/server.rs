//! Sockets: the accept loop, TLS handshakes, the HTTP/1.1 + HTTP/2 connection builder, limits
//! on connections and headers, and graceful shutdown. Knows nothing of authentication.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::body::{self, Body, RequestBody};
use crate::config::Server;
use crate::handler::{self, Door};
use crate::live::Live;
use crate::{telemetry, ConnInfo};

mod activity;
mod lane;

use activity::{Activity, Ended, Expired, Limits, Supervised, Tracked, Watched};
use lane::Lane;
pub use lane::{take_plain_head, Recall};

/// A shutdown signal every accept loop can wait on.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal that fires when `trigger` completes.
    pub fn new(trigger: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            trigger.await;
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Whether the signal has changed since this copy last looked (an atomic load): a
    /// poller that has registered with [`Shutdown::wait`] need poll it again only then.
    fn changed(&self) -> bool {
        self.0.has_changed().unwrap_or(true)
    }
}

/// Serves `listener` as `door` until `shutdown`, then lets in-flight requests finish within
/// the grace period. TLS (`server.tls`) applies to the public door only; the forward-auth
/// listener is for the ingress, on a private network. Every listener takes its connections'
/// places from the one `slots` (`server.max_connections` counts them all).
///
/// Connection limits and timeouts are read once, at start-up; TLS certificates and everything
/// per request come from the live configuration, so a reload renews them.
pub async fn serve(
    live: Arc<Live>,
    listener: TcpListener,
    mut shutdown: Shutdown,
    door: Door,
    slots: Arc<Semaphore>,
) -> io::Result<()> {
    let app = live.app();
    let settings = &app.config.server;
    let builders = Arc::new(connection_builders(settings, door));
    let limits = Limits {
        header_read: settings.header_read_timeout,
        keepalive: settings.keepalive_timeout,
        idle: settings.idle_timeout,
    };
    let grace = settings.shutdown_grace;
    let local = listener.local_addr()?;
    let terminates_tls = door == Door::Proxy && app.tls.is_some();
    info!(address = %local, tls = terminates_tls, mode = door.mode(), "listening");
    drop(app);
    // Every connection's task holds a receiver; all of them gone means all connections are.
    let (drained, draining) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "connection refused: server.max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = match door {
            Door::Proxy => live.app().tls.clone(),
            Door::ForwardAuth => None,
        };
        // The slot is released when the last holder of the `ConnInfo` is gone: the
        // connection's task, its requests, and a WebSocket tunnel that outlives them.
        let conn =
            Arc::new(ConnInfo::new(peer, local, tls.is_some()).serving(slot, shutdown.clone()));
        let live = live.clone();
        let builders = builders.clone();
        let draining = draining.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _draining = draining;
            telemetry::connection_opened();
            match tls {
                None => {
                    // As for a slow head: the first bytes within the header timeout; and
                    // nothing to wait for once the server shuts down.
                    let sniffed = tokio::select! {
                        sniffed = tokio::time::timeout(limits.header_read, sniff_http2(&stream)) => sniffed,
                        () = shutdown.wait() => Ok(Ok(None)),
                    };
                    match sniffed {
                        Ok(Ok(Some(http2))) => {
                            let activity =
                                Activity::new(Instant::now(), limits.header_read, conn.clone());
                            serve_connection(
                                live, conn, &builders, stream, http2, activity, limits, shutdown,
                                door,
                            )
                            .await;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            debug!(%peer, "connection closed: nothing sent within the header timeout")
                        }
                    }
                }
                // Boxed: the TLS state would otherwise be part of every connection's task,
                // TLS or not (each idle connection costs its task's size in memory).
                Some(acceptor) => {
                    Box::pin(async move {
                        let handshake =
                            tokio::time::timeout(limits.header_read, acceptor.accept(stream));
                        let handshake = tokio::select! {
                            handshake = handshake => handshake,
                            () = shutdown.wait() => return,
                        };
                        match handshake {
                            Ok(Ok(stream)) => {
                                // A handshake paid for may wait for its first request as
                                // long as any idle connection (browsers open them ahead).
                                let activity =
                                    Activity::new(Instant::now(), limits.idle, conn.clone());
                                let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve_connection(
                                    live, conn, &builders, stream, http2, activity, limits,
                                    shutdown, door,
                                )
                                .await;
                            }
                            Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
            telemetry::connection_closed();
        });
    }
    drop(listener);
    drop(draining);
    tokio::select! {
        () = drained.closed() => info!(address = %local, "all connections closed"),
        () = tokio::time::sleep(grace) => warn!(address = %local, "shutdown grace period over; closing remaining connections"),
    }
    Ok(())
}

/// Serves one connection until it ends, it has been quiet past its limit
/// ([`Activity::check`]), or shutdown (then gracefully: in-flight requests finish).
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    live: Arc<Live>,
    conn: Arc<ConnInfo>,
    builders: &Builders,
    stream: S,
    http2: bool,
    activity: Arc<Activity>,
    limits: Limits,
    mut shutdown: Shutdown,
    door: Door,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let requests = activity.clone();
    let answers = conn.clone();
    // One request's answer, for hyper's service and the lane alike.
    let answer = move |request: http::Request<RequestBody>| {
        // Each request keeps the configuration it started with, whatever reloads meanwhile.
        let app = live.app();
        let in_flight = requests.begin();
        // Boxed where it is made (`guarded`), so that the several-KiB future is copied once,
        // and so that hyper's per-connection slot for the service's future stays small.
        let handling = handler::guarded(handler::handle(app, answers.clone(), request, door));
        Answer {
            handling,
            in_flight: Some(in_flight),
        }
    };
    let io = Watched::new(stream, activity.clone());
    let ended = if http2 {
        activity.set_http2();
        // Boxed: an HTTP/2 connection's state is larger, and every HTTP/1.1 connection's task
        // would otherwise make room for it.
        let service = hyper_service(answer, activity.clone());
        let mut connection = Box::pin(builders.http2.serve_connection(TokioIo::new(io), service));
        supervise(
            Supervised::new(&mut connection, activity, limits, false),
            &mut shutdown,
        )
        .await
        .map(|ended| match ended {
            Ended::Expired(why) => Some(why),
            Ended::Done | Ended::Parked => None,
        })
    } else {
        serve_http1(&conn, builders, io, answer, activity, limits, shutdown).await
    };
    // A tunnel still waiting for this connection (its `101` never went out whole) is told it
    // will not come: the waiting end lives in the `ConnInfo` the tunnel itself holds.
    drop(conn.take_upgrade());
    match ended {
        Ok(None) => {}
        Ok(Some(why)) => debug!(%peer, ?why, "closed a quiet connection"),
        Err(err) => debug!(%peer, error = %err, "connection ended with an error"),
    }
}

/// Serves an HTTP/1.1 connection: first by the lane ([`lane`]), which answers the plain
/// requests (no body, nothing that changes the connection) itself; at the first request it
/// does not take, hyper serves the connection from that request's first byte on.
///
/// hyper holds about 20 KiB per connection (its read and write buffers, parser and
/// dispatcher), idle or not; a connection idle between requests for [`activity::PARK_AFTER`]
/// is taken back (from hyper or the lane, between two requests, every response flushed), and
/// only its socket is kept until the client sends again, as nginx keeps only a socket for an
/// idle keep-alive connection. Then the lane serves it anew, reading first whatever was read
/// ahead (a pipelined request's first bytes).
///
/// hyper's own upgrade support needs a connection that cannot be taken back; so a `101` is
/// seen through here too: the connection, done once the `101` is sent, is handed to the
/// request that answered it ([`ConnInfo::on_upgrade`]).
async fn serve_http1<S, F, A>(
    conn: &ConnInfo,
    builders: &Builders,
    mut io: Watched<S>,
    answer: F,
    activity: Arc<Activity>,
    limits: Limits,
    mut shutdown: Shutdown,
) -> hyper::Result<Option<Expired>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(http::Request<RequestBody>) -> A + Clone + Unpin + Send + 'static,
    A: Future<Output = Result<http::Response<Tracked<Body>>, Infallible>> + Unpin + Send + 'static,
{
    let mut by_lane = true;
    loop {
        let ended = if by_lane {
            let mut lane = Lane::new(io, answer.clone(), builders.max_head);
            let ended = supervise(
                Supervised::new(&mut lane, activity.clone(), limits, true),
                &mut shutdown,
            )
            .await?;
            let (back, unread, outcome) = lane.into_parts();
            io = back;
            io.replay(&unread);
            if ended == Ended::Done && outcome == Some(lane::Outcome::HandOver) {
                by_lane = false;
                continue;
            }
            ended
        } else {
            // Boxed, and gone with this block: a parked connection's task holds nothing of
            // hyper (its state, read buffer included, is freed here, not at the end of the turn).
            let mut connection = Box::new(Http1 {
                connection: builders.http1.serve_connection(
                    TokioIo::new(io),
                    hyper_service(answer.clone(), activity.clone()),
                ),
                activity: activity.clone(),
            });
            let ended = supervise(
                Supervised::new(&mut *connection, activity.clone(), limits, true),
                &mut shutdown,
            )
            .await?;
            let parts = connection.connection.into_parts();
            io = parts.io.into_inner();
            io.replay(&parts.read_buf);
            ended
        };
        match ended {
            Ended::Expired(why) => return Ok(Some(why)),
            Ended::Parked if !activity.abandoned() => {
                telemetry::connection_parked(true);
                let parked = park(&mut io, &activity, limits, &mut shutdown).await;
                telemetry::connection_parked(false);
                if let Err(why) = parked {
                    return Ok(why);
                }
                by_lane = true;
            }
            // Done, or parked with a body left part-way after the parking began (what follows
            // may be the rest of it, never a request): closed.
            Ended::Done | Ended::Parked => {
                if activity.upgraded() {
                    if let Some(handover) = conn.take_upgrade() {
                        let _ = handover.send(Box::new(io));
                        return Ok(None);
                    }
                }
                // As hyper would have: the last response flushed ([`Http1`]), our side closed.
                let _ = tokio::time::timeout(limits.header_read, io.shutdown()).await;
                return Ok(None);
            }
        }
    }
}

/// hyper's service over a request's `answer`; a request's body is watched to its end by
/// the connection's `activity` (a connection is parked only when none is left part-way).
fn hyper_service<F, A>(
    answer: F,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Tracked<Body>>,
    Error = Infallible,
    Future = A,
> + Unpin
where
    F: Fn(http::Request<RequestBody>) -> A + Unpin,
    A: Future<Output = Result<http::Response<Tracked<Body>>, Infallible>>,
{
    service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let watch =
            (!http_body::Body::is_end_stream(request.body())).then(|| activity.watch_body());
        answer(request.map(|incoming| RequestBody::Hyper(incoming, watch)))
    })
}

/// An HTTP/1.1 connection, served without shutting its socket down when done. Done means
/// done *and flushed*: hyper reports a connection done once nothing more is to be written,
/// which may be before its write buffer has reached the socket (a client reading slowly),
/// and that buffer is gone with the connection; polled again, it goes on flushing.
struct Http1<C> {
    connection: C,
    activity: Arc<Activity>,
}

impl<I, Svc> activity::Serving for Http1<http1::Connection<I, Svc>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    Svc: hyper::service::HttpService<hyper::body::Incoming, ResBody = Tracked<Body>> + Unpin,
    Svc::Future: Unpin,
{
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        std::task::ready!(self.connection.poll_without_shutdown(cx))?;
        if self.activity.flushed() {
            Poll::Ready(Ok(()))
        } else {
            // The write that could not finish has asked to be woken when the socket can take
            // more; hyper flushes the rest when polled then.
            Poll::Pending
        }
    }

    fn graceful(&mut self) {
        Pin::new(&mut self.connection).graceful_shutdown();
    }
}

impl<I, Svc, E> activity::Serving for Pin<Box<http2::Connection<I, Svc, E>>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    Svc: hyper::service::HttpService<hyper::body::Incoming, ResBody = Tracked<Body>>,
    E: hyper::rt::bounds::Http2ServerConnExec<Svc::Future, Tracked<Body>>,
{
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.as_mut().poll(cx)
    }

    fn graceful(&mut self) {
        self.as_mut().graceful_shutdown();
    }
}

/// Holds a parked connection's socket until the client sends again (`Ok`: serve it anew,
/// the byte that woke it replayed first), or it ends: closed by the client, past the
/// keep-alive limit, or at shutdown (`Err`, with the limit that closed it if one did).
async fn park<S>(
    io: &mut Watched<S>,
    activity: &Activity,
    limits: Limits,
    shutdown: &mut Shutdown,
) -> Result<(), Option<Expired>>
where
    S: AsyncRead + Unpin,
{
    if io.has_replay() {
        // hyper gave back part of a head: serve it without waiting.
        return Ok(());
    }
    let now = Instant::now();
    let until = activity
        .check(&limits, now, &mut activity::Stall::new(now))
        .map_err(Some)?;
    // One byte: a read needs somewhere to put what arrives, and a parked connection should
    // hold no buffer. TLS too: it may hold decrypted bytes no socket readiness would show.
    let mut byte = [0u8; 1];
    tokio::select! {
        read = io.read(&mut byte) => match read {
            Ok(1) => {
                io.replay(&byte);
                Ok(())
            }
            _ => Err(None),
        },
        () = tokio::time::sleep_until(until.into()) => Err(Some(Expired::KeepAlive)),
        () = shutdown.wait() => Err(None),
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way to hyper: the response body is tracked until done, and
    /// a `101` tells the connection that it is to be handed over once hyper is done with it.
    struct Answer<F> {
        handling: handler::Guarded<F>,
        in_flight: Option<activity::InFlight>,
    }
}

impl<F: Future<Output = http::Response<Body>>> Future for Answer<F> {
    type Output = Result<http::Response<Tracked<Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(Pin::new(this.handling).poll(cx));
        let in_flight = this
            .in_flight
            .take()
            .expect("an answer is polled until ready, once");
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            in_flight.upgrading();
        }
        Poll::Ready(Ok(response.map(|body| Tracked::new(body, in_flight))))
    }
}

/// Runs a supervised connection to its end, shutting it down gracefully on `shutdown`.
///
/// The shutdown signal is polled once, which leaves the task's waker with it, and after
/// that only when it has changed: a connection's task wakes several times per request, and
/// every wake-up would otherwise poll the signal too.
async fn supervise<C: activity::Serving>(
    supervised: Supervised<'_, C>,
    shutdown: &mut Shutdown,
) -> hyper::Result<Ended> {
    let mut supervised = std::pin::pin!(supervised);
    let mut signal = shutdown.clone();
    let mut stopping = std::pin::pin!(signal.wait());
    let mut look = true;
    let mut stopped = false;
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(ended) = supervised.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        if stopped || !(look || shutdown.changed()) {
            return Poll::Pending;
        }
        look = false;
        if stopping.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        stopped = true;
        supervised.as_mut().shutdown();
    })
    .await
}

/// The HTTP/1.1 and HTTP/2 connection builders with the configured limits. Each connection
/// gets the one its protocol needs (ALPN under TLS, the client's first bytes in plain text),
/// not hyper-util's auto builder: sniffing inside hyper-util hands hyper a 24-byte prefix
/// first, which makes hyper regrow its read buffer to 16 KiB on every connection.
struct Builders {
    http1: http1::Builder,
    /// The longest request head the lane reads before handing the connection to hyper,
    /// which refuses it (`431`) as it always has.
    max_head: usize,
    http2: http2::Builder<TokioExecutor>,
}

fn connection_builders(settings: &Server, door: Door) -> Builders {
    // An ingress's subrequest carries the client's headers plus its own, and nginx turns a
    // `431` into a `500` for the client: that door takes as many as nginx does (its default
    // `large_client_header_buffers` hold 32 KiB).
    let (max_buf, max_headers) = match door {
        Door::Proxy => (settings.max_header_size, 128),
        Door::ForwardAuth => (settings.max_header_size.max(64 << 10), 1024),
    };
    let mut http1 = http1::Builder::new();
    http1
        // hyper's header timer would also close connections idle between requests: the
        // connection's own `Activity` applies the header, keep-alive and idle limits.
        .header_read_timeout(None)
        .max_buf_size(max_buf)
        .max_headers(max_headers);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    Builders {
        http1,
        max_head: max_buf,
        http2,
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plain connection opens with the HTTP/2 preface (h2c by prior knowledge), read
/// with `MSG_PEEK` so that hyper reads the bytes itself. Waits for the first bytes; `None`
/// when the peer closed first.
///
/// Three bytes decide: `PRI` begins no HTTP/1.1 request (the method is reserved for the
/// preface, RFC 9113 §3.4), and hyper's HTTP/2 server checks the rest of the preface itself.
/// Fewer bytes that could still be a preface (`P`, `PR`) are peeked again after a pause that
/// doubles each time: peeking returns at once while those bytes sit there, so a client that
/// sends them and waits must not make the proxy spin (the caller's deadline bounds the wait).
async fn sniff_http2(stream: &TcpStream) -> io::Result<Option<bool>> {
    const DECIDES: usize = 3;
    let mut buf = [0u8; DECIDES];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == DECIDES {
            return Ok(Some(true));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Serves a small internal HTTP/1.1 service (the admin listener, the HTTPS redirect, the
/// demo's servers) on `listener` until `shutdown`: no TLS, a 10 s header-read timeout. Each
/// request carries its peer's address as a `SocketAddr` extension.
pub async fn serve_small<F, Fut>(listener: TcpListener, mut shutdown: Option<Shutdown>, respond: F)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Body>> + Send + 'static,
{
    loop {
        let accepted = match &mut shutdown {
            Some(shutdown) => tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.wait() => return,
            },
            None => listener.accept().await,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let peer = std::net::SocketAddr::new(crate::unmapped(peer.ip()), peer.port());
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                let answer = respond(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The plain-HTTP listener of `server.redirect_http`: every request gets a permanent redirect
/// to the same host and target over HTTPS. Nothing is proxied here.
pub async fn redirect_to_https(
    live: Arc<Live>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> io::Result<()> {
    let https_port = live
        .app()
        .config
        .server
        .listen
        .first()
        .map_or(443, |a| a.port());
    info!(address = %listener.local_addr()?, "redirecting plain HTTP to HTTPS");
    serve_small(listener, Some(shutdown), move |request| {
        let app = live.app();
        std::future::ready(https_redirect(&request, https_port, &app.served_names))
    })
    .await;
    Ok(())
}

/// The permanent redirect to `https://` for one plain-HTTP request, or `400` when its `Host`
/// is not a name the server answers for: reflecting any `Host` would let a forged one send
/// the browser to another site (the redirect is cacheable).
fn https_redirect<B>(
    request: &http::Request<B>,
    https_port: u16,
    served: &[String],
) -> http::Response<Body> {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .filter(|authority| {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            crate::tls::is_served(host, served)
        });
    let mut response = http::Response::new(body::empty());
    let Some(host) = host else {
        *response.status_mut() = http::StatusCode::BAD_REQUEST;
        return response;
    };
    let authority = match https_port {
        443 => host.host().to_owned(),
        port => format!("{}:{port}", host.host()),
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    *response.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(location) = http::HeaderValue::try_from(format!("https://{authority}{target}")) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    response
}
