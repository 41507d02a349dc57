//! The optional admin listener, kept off the main port: liveness and readiness for
//! orchestrators, Prometheus metrics, `POST /reload`, and `POST /sessions/revoke` (cut off
//! every session of a subject).
//!
//! `/readyz` does not depend on Redis: a readiness probe that failed on a Redis blip would take
//! every replica out of the load balancer at once, while each of them can serve on its own.

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
        async move { respond(&live, request).await }
    })
    .await;
    Ok(())
}

async fn respond(live: &Live, request: Request<Incoming>) -> Response<Body> {
    if request.method() == Method::POST && request.uri().path() == "/sessions/revoke" {
        return revoke(live, request).await;
    }
    let (status, text) = match (request.method(), request.uri().path()) {
        (_, "/sessions/revoke") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST /sessions/revoke {\"sub\": \"...\"}\n".to_owned(),
        ),
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

/// `POST /sessions/revoke {"sub": "<subject>"}`: every token of that subject issued up to now
/// is refused (and cannot be refreshed), on every instance with `[cluster]`.
async fn revoke(live: &Live, request: Request<Incoming>) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let answer = |status: StatusCode, value: serde_json::Value| {
        let mut response = Response::new(body::json(&value));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let bad = |message: &str| {
        answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "bad_request", "message": message }),
        )
    };
    let body = match http_body_util::Limited::new(request.into_body(), 16 << 10)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return bad("the body must be a JSON object of at most 16 KiB"),
    };
    let sub = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(object)) => match object.get("sub") {
            Some(serde_json::Value::String(sub)) if !sub.is_empty() && sub.len() <= 1024 => {
                sub.clone()
            }
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return bad("\"sub\" must be a non-empty string"),
        },
        _ => return bad("the body must be a JSON object like {\"sub\": \"...\"}"),
    };
    let at = live.app().auth.revoke_subject(&sub);
    answer(
        StatusCode::OK,
        serde_json::json!({ "ok": true, "sub": sub, "revoked_at": at }),
    )
}

/// `GET /explain?method=GET&url=/path&cookie=k%3Dv&header=Name%3A%20value`: the JSON of
/// `portcullis explain` for that request, under the live configuration.
fn explain(live: &Live, query: &str) -> Response<Body> {
    let mut method = "GET".to_owned();
    let (mut url, mut cookie, mut headers) = (None, None, Vec::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "method" => method = value.into_owned(),
            "url" => url = Some(value.into_owned()),
            "cookie" => cookie = Some(value.into_owned()),
            "header" => headers.push(value.into_owned()),
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
            };
            crate::explain::explain_with(
                &app.config,
                &request,
                crate::auth::now(),
                Some(app.auth.cluster().revocations()),
            )
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
