//! The optional admin listener, kept off the main port: liveness and readiness for
//! orchestrators, Prometheus metrics, and `POST /reload`.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tracing::info;

use crate::body::{self, Body};
use crate::live::Live;
use crate::server::Shutdown;

/// Serves `/healthz` (the process is up), `/readyz` (keys are loaded, requests can be admitted),
/// `/metrics` (Prometheus text) and `POST /reload` (re-read the configuration file).
pub async fn serve(
    live: Arc<Live>,
    listener: TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    info!(address = %listener.local_addr()?, "admin listening");
    crate::server::serve_small(listener, Some(shutdown), move |request| {
        let live = live.clone();
        async move { respond(&live, &request).await }
    })
    .await;
    Ok(())
}

async fn respond(live: &Live, request: &Request<Incoming>) -> Response<Body> {
    let (status, text) = match (request.method(), request.uri().path()) {
        (_, "/healthz") => (StatusCode::OK, "ok\n".to_owned()),
        (_, "/readyz") => match live.app().auth.readiness() {
            Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
            Err(missing) => (StatusCode::SERVICE_UNAVAILABLE, format!("{missing}\n")),
        },
        (_, "/metrics") => {
            let text = crate::telemetry::handle()
                .map(|h| h.render())
                .unwrap_or_default();
            let mut response = Response::new(body::full(text));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        (&Method::GET, "/explain")
            if live.app().config.admin.as_ref().is_some_and(|a| a.explain) =>
        {
            return explain(live, request.uri().query().unwrap_or(""));
        }
        (&Method::POST, "/reload") => match live.reload().await {
            Ok(()) => (StatusCode::OK, "reloaded\n".to_owned()),
            Err(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("reload refused: {problems}\n"),
            ),
        },
        (_, "/reload") => (StatusCode::METHOD_NOT_ALLOWED, "POST /reload\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response
}

/// `GET /explain?method=GET&url=/path&cookie=k%3Dv&header=Name%3A%20value[&forward_auth=1]`:
/// the JSON of `portcullis explain` for that request, under the live configuration.
fn explain(live: &Live, query: &str) -> Response<Body> {
    let mut method = "GET".to_owned();
    let (mut url, mut cookie, mut headers) = (None, None, Vec::new());
    let mut forward_auth = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "method" => method = value.into_owned(),
            "url" => url = Some(value.into_owned()),
            "cookie" => cookie = Some(value.into_owned()),
            "header" => headers.push(value.into_owned()),
            "forward_auth" => forward_auth = matches!(value.as_ref(), "1" | "true"),
            _ => {}
        }
    }
    let app = live.app();
    let result = match &url {
        None => Err("the url parameter is required".to_owned()),
        Some(url) => {
            let request = crate::explain::Request {
                method: &method,
                url,
                cookies: cookie.as_deref(),
                headers: &headers,
                forward_auth,
            };
            crate::explain::explain(&app.config, &request, crate::auth::now())
        }
    };
    let (status, value) = match result {
        Ok(explanation) => (
            StatusCode::OK,
            serde_json::to_value(&explanation).unwrap_or_default(),
        ),
        Err(message) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "bad_request", "message": message }),
        ),
    };
    let mut response = Response::new(body::json(&value));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
