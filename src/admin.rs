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
            let text = crate::telemetry::render();
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
        (&Method::POST, "/reload") if !may_change_state(admin_token(live).as_deref(), &request) => (
            StatusCode::FORBIDDEN,
            "refused: set admin.token and send it as a bearer token, or call from the same host\n"
                .to_owned(),
        ),
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
    if !may_change_state(admin_token(live).as_deref(), &request) {
        let mut response = Response::new(body::full(
            "refused: set admin.token and send it as a bearer token, or call from the same host\n",
        ));
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
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
    // `shared`: whether every instance heard of it already (with [cluster]; it still gets
    // there when Redis is back if not), `null` without [cluster].
    let (at, shared) = live.app().auth.revoke_subject(&sub).await;
    answer(
        StatusCode::OK,
        serde_json::json!({ "ok": true, "sub": sub, "revoked_at": at, "shared": shared }),
    )
}

/// The configured `admin.token`, if any.
fn admin_token(live: &Live) -> Option<String> {
    live.app().config.admin.as_ref()?.token.clone()
}

/// Whether `request` may change the proxy's state (`POST /reload`): it carries
/// `Authorization: Bearer <token>`, or, with no token configured, it comes from the loopback
/// interface. Probes (`/healthz`, `/readyz`, `/metrics`) need neither, so the admin listener
/// can face a cluster network without letting that network reconfigure the proxy.
pub fn may_change_state<B>(token: Option<&str>, request: &Request<B>) -> bool {
    match token {
        Some(token) => request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            // Compared in constant time (the length aside).
            .is_some_and(|given| {
                given.len() == token.len() && openssl::memcmp::eq(given, token.as_bytes())
            }),
        None => request
            .extensions()
            .get::<std::net::SocketAddr>()
            .is_some_and(|peer| peer.ip().is_loopback()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, authorization: Option<&str>) -> Request<()> {
        let mut request = Request::post("/reload").body(()).expect("request");
        request
            .extensions_mut()
            .insert(peer.parse::<std::net::SocketAddr>().expect("peer"));
        if let Some(value) = authorization {
            request.headers_mut().insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(value).expect("value"),
            );
        }
        request
    }

    #[test]
    fn state_changes_need_the_token_or_a_loopback_peer() {
        // No token configured: the loopback interface only.
        assert!(may_change_state(None, &request("127.0.0.1:5000", None)));
        assert!(may_change_state(None, &request("[::1]:5000", None)));
        assert!(!may_change_state(None, &request("10.1.2.3:5000", None)));
        assert!(!may_change_state(
            None,
            &request("10.1.2.3:5000", Some("Bearer x"))
        ));
        // A token configured: the token, from anywhere, and nothing without it.
        let token = Some("0123456789abcdef");
        assert!(may_change_state(
            token,
            &request("10.1.2.3:5000", Some("Bearer 0123456789abcdef"))
        ));
        assert!(!may_change_state(token, &request("127.0.0.1:5000", None)));
        assert!(!may_change_state(
            token,
            &request("10.1.2.3:5000", Some("Bearer 0123456789abcdeX"))
        ));
        assert!(!may_change_state(
            token,
            &request("10.1.2.3:5000", Some("Bearer 0123"))
        ));
        assert!(!may_change_state(
            token,
            &request("10.1.2.3:5000", Some("0123456789abcdef"))
        ));
    }
}
