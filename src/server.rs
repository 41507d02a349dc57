//! Sockets: the accept loop, TLS handshakes, the HTTP/1.1 + HTTP/2 connection builder, limits
//! on connections and headers, and graceful shutdown. Knows nothing of authentication.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::body::{self, Body};
use crate::config::Server;
use crate::handler::{self, Door};
use crate::live::Live;
use crate::{telemetry, ConnInfo};

/// A shutdown signal every accept loop can wait on.
#[derive(Clone)]
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
}

/// Serves `listener` as `door` until `shutdown`, then lets in-flight requests finish within
/// the grace period. TLS (`server.tls`) applies to the public door only; the forward-auth
/// listener is for the ingress, on a private network.
///
/// Connection limits and timeouts are read once, at start-up; TLS certificates and everything
/// per request come from the live configuration, so a reload renews them.
pub async fn serve(
    live: Arc<Live>,
    listener: TcpListener,
    mut shutdown: Shutdown,
    door: Door,
) -> io::Result<()> {
    let app = live.app();
    let settings = &app.config.server;
    let builder = Arc::new(connection_builder(settings));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let handshake_timeout = settings.header_read_timeout;
    let grace = settings.shutdown_grace;
    let local = listener.local_addr()?;
    let terminates_tls = door == Door::Proxy && app.tls.is_some();
    info!(address = %local, tls = terminates_tls, mode = door.mode(), "listening");
    drop(app);
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
        let conn = Arc::new(ConnInfo::new(peer, local, tls.is_some()));
        let live = live.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            telemetry::connection_opened();
            match tls {
                // hyper's header timeout starts with the first byte; a connection that never
                // sends one would otherwise hold its slot for ever.
                None => match tokio::time::timeout(handshake_timeout, stream.peek(&mut [0u8; 1]))
                    .await
                {
                    Ok(Ok(1..)) => {
                        serve_connection(live, conn, &builder, stream, watcher, door).await
                    }
                    _ => debug!(%peer, "connection closed: nothing sent within the header timeout"),
                },
                // Boxed: the TLS state would otherwise be part of every connection's task,
                // TLS or not (each idle connection costs its task's size in memory).
                Some(acceptor) => {
                    Box::pin(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                serve_connection(live, conn, &builder, stream, watcher, door).await
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
    tokio::select! {
        () = graceful.shutdown() => info!(address = %local, "all connections closed"),
        () = tokio::time::sleep(grace) => warn!(address = %local, "shutdown grace period over; closing remaining connections"),
    }
    Ok(())
}

async fn serve_connection<S>(
    live: Arc<Live>,
    conn: Arc<ConnInfo>,
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    watcher: hyper_util::server::graceful::Watcher,
    door: Door,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let service = service_fn(move |request| {
        // Each request keeps the configuration it started with, whatever reloads meanwhile.
        let app = live.app();
        let conn = conn.clone();
        // Boxed per request: hyper keeps room for one service future in every connection,
        // busy or idle, and the pipeline's future is several KiB (docs/performance.md).
        let handling = Box::pin(handler::guarded(handler::handle(app, conn, request, door)));
        async move { Ok::<_, Infallible>(handling.await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(err) = watcher.watch(connection.into_owned()).await {
        debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or ALPN under TLS) with the configured limits.
fn connection_builder(settings: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_size)
        .max_headers(128);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_size).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    builder
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
