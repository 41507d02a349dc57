//! Portcullis: an authenticating reverse proxy for sites whose backend issues JWTs.
//!
//! It intercepts login and logout, keeps the backend's tokens in HttpOnly cookies, guards
//! protected paths, injects `Authorization: Bearer` into what it forwards and renews expired
//! tokens — the "backend-for-frontend" code every team otherwise writes by hand.
//!
//! # Layout
//! - [`config`]: loading and validating configuration (the only user of figment).
//! - [`server`]: sockets, TLS, HTTP/1.1 + HTTP/2 connections, limits, graceful shutdown.
//! - [`live`]: the current configuration and hot reload.
//! - [`handler`]: the per-request pipeline, phase by phase, for both front doors.
//! - [`view`]: the request as the proxy sees it (origin, host, normalized path, client).
//! - [`forward_auth`]: the second front door: an ingress's subrequests, read and answered.
//! - [`path`]: request-path normalization; [`rules`]: which rule a host and path belong to.
//! - [`auth`]: token verification, admission and the `Permit`; only `auth/jwt/` names josekit.
//! - [`upstream`]: the pooled client, header rewriting and forwarding.
//! - [`error`]: the one error type and its one mapping to responses; [`response`]: the
//!   redirects and JSON answers the proxy writes itself.
//! - [`cookie_header`]: reading the request's `Cookie` header and stripping the proxy's cookies.
//! - [`single_flight`]: one call per key however many callers want it at once.
//! - [`cluster`]: state shared by every instance (revocations, counters, one refresh per
//!   token) through Redis, with local state as the fallback.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `POST /reload`, `POST /sessions/revoke`
//!   on a separate listener.
//! - [`telemetry`]: metric names and the Prometheus recorder.
//! - [`explain`]: `portcullis explain`, the pipeline's decisions for one request, step by step.
//! - [`lint`]: `portcullis check`'s warnings about valid but risky configurations.
//! - [`demo`]: the embedded demo backend and site (`portcullis demo`).

// No unsafe code in the proxy itself (the only `unsafe` of the project is the binary's
// allocator shim, src/allocator.rs).
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cookie_header;
pub mod demo;
pub mod error;
pub mod explain;
pub mod forward_auth;
pub mod handler;
pub mod headers;
pub mod lint;
pub mod live;
pub mod path;
pub mod response;
pub mod rules;
pub mod server;
pub mod single_flight;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use handler::App;

/// Facts about the downstream connection a request arrived on, and what its requests tell the
/// server about it.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The peer's IP address as an `X-Forwarded-For` entry, rendered once per connection
    /// rather than on every request.
    pub peer_ip: http::HeaderValue,
    /// The connection's place under `server.max_connections`, given back when the last holder
    /// of this `ConnInfo` lets go: the connection's task, its requests, a WebSocket tunnel
    /// spliced onto it.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Body frames passed on by the connection's requests, in either direction.
    pub progress: Progress,
    /// The server's shutdown signal, which also ends a WebSocket tunnel spliced onto the
    /// connection (none outside a server, as in `explain`).
    pub shutdown: Option<server::Shutdown>,
    /// Where the server hands the connection over once a `101` has been sent on it.
    upgrade: UpgradeSlot,
}

#[derive(Default)]
struct UpgradeSlot(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Upgraded>>>);

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpgradeSlot")
    }
}

/// A downstream HTTP/1.1 connection after `101 Switching Protocols`: the socket, with any
/// bytes the client sent after its request head first.
pub type Upgraded = Box<dyn UpgradedIo>;

/// What a WebSocket tunnel needs of the downstream connection it takes over.
pub trait UpgradedIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// How much a connection's requests have moved: every body frame passed on, either way, counts
/// one. The server closes a connection whose responses have moved nothing for
/// `server.idle_timeout` (a client that stopped reading, or stopped sending a body the
/// upstream waits for; an upstream that stopped sending).
#[derive(Debug, Default)]
pub struct Progress(std::sync::atomic::AtomicU64);

impl Progress {
    /// One more frame passed on.
    pub fn note(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The count so far; only its changes mean anything.
    pub fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ConnInfo {
    /// Facts about a connection from `peer`. An IPv4 client reaching a dual-stack (`[::]`)
    /// listener arrives as `::ffff:a.b.c.d`; it is recorded as the IPv4 address it is, once,
    /// here, so that limits, logs and `X-Forwarded-For` all see one client per address (and
    /// never every IPv4 client as one IPv6 /64).
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> ConnInfo {
        let peer = SocketAddr::new(unmapped(peer.ip()), peer.port());
        let peer_ip = http::HeaderValue::try_from(peer.ip().to_string())
            .expect("an IP address is header-safe text");
        ConnInfo {
            peer,
            local,
            tls,
            peer_ip,
            _slot: None,
            progress: Progress::default(),
            shutdown: None,
            upgrade: UpgradeSlot::default(),
        }
    }

    /// The connection as it will be once the `101` the caller is about to answer with has
    /// been sent (the server serves HTTP/1.1 without hyper's upgrade support, so that it can
    /// take idle connections back from hyper; it hands upgraded ones over here).
    pub fn on_upgrade(&self) -> tokio::sync::oneshot::Receiver<Upgraded> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.upgrade.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// The waiting end of [`ConnInfo::on_upgrade`], for the server to hand the connection to.
    pub fn take_upgrade(&self) -> Option<tokio::sync::oneshot::Sender<Upgraded>> {
        self.upgrade
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The same connection as a server serves it: holding `slot` for as long as anything uses
    /// it, and told of `shutdown`.
    pub fn serving(
        self,
        slot: tokio::sync::OwnedSemaphorePermit,
        shutdown: server::Shutdown,
    ) -> ConnInfo {
        ConnInfo {
            _slot: Some(slot),
            shutdown: Some(shutdown),
            ..self
        }
    }
}

/// `ip`, or the IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for.
pub fn unmapped(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// The sockets to serve on, bound by the caller.
#[derive(Default)]
pub struct Listeners {
    pub main: Vec<TcpListener>,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /reload`.
    pub admin: Option<TcpListener>,
    /// A plain-HTTP listener that only redirects to HTTPS (`server.redirect_http`).
    pub redirect_http: Option<TcpListener>,
    /// The forward-auth listener (`forward_auth.listen`): an ingress's auth subrequests.
    pub forward_auth: Option<TcpListener>,
    /// The configuration file, re-read on reload (SIGHUP or `POST /reload`).
    pub config_path: Option<PathBuf>,
}

/// Serves `config` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listeners = Listeners {
        main: vec![listener],
        ..Listeners::default()
    };
    run_all(config, listeners, shutdown).await
}

/// Serves `config` on every listener until `shutdown` completes.
pub async fn run_all(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    telemetry::handle();
    // Shared state lives as long as the process: reloads keep its revocations and counters.
    let cluster =
        Arc::new(cluster::Cluster::new(config.cluster.as_ref()).map_err(Error::Internal)?);
    let app = App::with_cluster(config, Arc::clone(&cluster))?;
    let live = Arc::new(live::Live::new(app, listeners.config_path));
    let shutdown = server::Shutdown::new(shutdown);
    if cluster.is_shared() {
        let mut until = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cluster.maintain() => {}
                () = until.wait() => {}
            }
        });
    }
    let mut upkeep_until = shutdown.clone();
    tokio::spawn(telemetry::upkeep(async move { upkeep_until.wait().await }));
    if let Some(admin) = listeners.admin {
        tokio::spawn(admin::serve(live.clone(), admin, shutdown.clone()));
    }
    #[cfg(unix)]
    if live.has_source() {
        tokio::spawn(reload_on_sighup(live.clone(), shutdown.clone()));
    }
    if let Some(redirect) = listeners.redirect_http {
        tokio::spawn(server::redirect_to_https(
            live.clone(),
            redirect,
            shutdown.clone(),
        ));
    }
    let doors = listeners
        .main
        .into_iter()
        .map(|listener| (listener, handler::Door::Proxy))
        .chain(
            listeners
                .forward_auth
                .map(|listener| (listener, handler::Door::ForwardAuth)),
        );
    // One cap for every listener: `server.max_connections` is what the process holds open.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        live.app().config.server.max_connections,
    ));
    let servers: Vec<_> = doors
        .map(|(listener, door)| {
            tokio::spawn(server::serve(
                live.clone(),
                listener,
                shutdown.clone(),
                door,
                slots.clone(),
            ))
        })
        .collect();
    let mut result = Ok(());
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = Err(Error::Internal(format!("listener failed: {err}"))),
            Err(err) => result = Err(Error::Internal(format!("listener task failed: {err}"))),
        }
    }
    live.stop();
    result
}

/// Reloads the configuration on every SIGHUP until shutdown.
#[cfg(unix)]
async fn reload_on_sighup(live: Arc<live::Live>, mut shutdown: server::Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /reload on the admin listener");
        return;
    };
    loop {
        tokio::select! {
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = live.reload().await;
            }
            () = shutdown.wait() => return,
        }
    }
}
