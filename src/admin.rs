//! The optional admin listener: liveness and readiness for orchestrators, kept off the main port.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::info;

use crate::body::{self, Body};
use crate::handler::App;
use crate::server::Shutdown;

/// Serves `/healthz` (the process is up) and `/readyz` (keys are loaded, requests can be admitted).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    info!(address = %listener.local_addr()?, "admin listening");
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            () = shutdown.wait() => return Ok(()),
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(respond(&app, &request)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(app: &App, request: &Request<Incoming>) -> Response<Body> {
    let (status, text) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match app.auth.readiness() {
            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
            Err(missing) => (StatusCode::SERVICE_UNAVAILABLE, format!("{missing}\n")),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response
}
