//! Portcullis: an authenticating reverse proxy for sites whose backend issues JWTs.
//!
//! It intercepts login and logout, keeps the backend's tokens in HttpOnly cookies, guards
//! protected paths, injects `Authorization: Bearer` into what it forwards and renews expired
//! tokens — the "backend-for-frontend" code every team otherwise writes by hand.
//!
//! # Layout
//! - [`config`]: loading and validating configuration (the only user of figment).
//! - [`server`]: sockets, TLS, HTTP/1.1 + HTTP/2 connections, limits, graceful shutdown.
//! - [`handler`]: the per-request pipeline, phase by phase.
//! - [`path`]: request-path normalization; [`rules`]: which rule a path belongs to.
//! - [`auth`]: token verification, admission and the `Permit`; `auth/jwt.rs` alone names josekit.
//! - [`upstream`]: the pooled client, header rewriting and forwarding.
//! - [`error`]: the one error type and its one mapping to responses.
//! - [`admin`]: `/healthz` and `/readyz` on a separate listener.

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod handler;
pub mod path;
pub mod rules;
pub mod server;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use handler::App;

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// Serves `config` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_all(config, vec![listener], None, shutdown).await
}

/// Serves `config` on every listener (and the admin listener, if given) until `shutdown`.
pub async fn run_all(
    config: Config,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let tls = match &config.server.tls {
        Some(files) => Some(tls::acceptor(files).map_err(Error::Internal)?),
        None => None,
    };
    let app = Arc::new(App::new(config)?);
    let shutdown = server::Shutdown::new(shutdown);
    // JWKS fetching lives exactly as long as serving: it stops at shutdown, and the guard
    // aborts it if this function returns (or is dropped) any other way.
    let _keys = AbortOnDrop(tokio::spawn({
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = app.auth.maintain_keys() => {}
                () = shutdown.wait() => {}
            }
        }
    }));
    if let Some(admin) = admin {
        tokio::spawn(admin::serve(app.clone(), admin, shutdown.clone()));
    }
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(server::serve(
                app.clone(),
                listener,
                tls.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(Error::Internal(format!("listener failed: {err}"))),
            Err(err) => return Err(Error::Internal(format!("listener task failed: {err}"))),
        }
    }
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
