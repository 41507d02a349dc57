//! The backend's HTTP side: routing, the endpoints, faults, and body and header parsing.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, Request, Response};
use serde_json::{json, Map, Value};

use super::{lock, Fault, Format, Issued, Shape, State, BODY_LIMIT};
use crate::support::{
    keys,
    serve::{self, Body, FillBody},
};

pub(super) async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    match (method.as_str(), path.as_str()) {
        ("POST", "/auth/login") => login(&state, request).await,
        ("POST", "/auth/refresh") => refresh(&state, request).await,
        ("POST", "/auth/logout") => logout(&state, request).await,
        ("GET", "/auth/profile") => profile(&state, request.headers()),
        ("GET", "/auth/session") => session_check(&state, request.headers()).await,
        ("POST", "/auth/introspect") => introspect(&state, request).await,
        ("GET", "/.well-known/jwks.json") => {
            state.jwks_fetches.increment();
            let jwks = lock(&state.jwks).clone();
            serve::json_response(200, &jwks)
        }
        (_, "/auth/login" | "/auth/refresh" | "/auth/logout" | "/auth/profile")
        | (_, "/auth/session" | "/auth/introspect")
        | (_, "/.well-known/jwks.json") => detail(405, "method not allowed"),
        (_, p) if p == "/api" || p.starts_with("/api/") => {
            state.api_calls.increment();
            match state.authorize(request.headers()) {
                Ok(claims) => serve::json_response(
                    200,
                    &json!({
                        "user": claims.get("sub"),
                        "method": method,
                        "path": request.uri().path_and_query().map(|p| p.as_str()),
                    }),
                ),
                Err(rejection) => rejection.into_response(),
            }
        }
        _ => detail(404, "not found"),
    }
}

async fn login(state: &State, request: Request<Incoming>) -> Response<Body> {
    state.logins.increment();
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    *lock(&state.last_login_body) = Some(String::from_utf8_lossy(&body).into_owned());
    *lock(&state.last_login_content_type) = header_text(&parts.headers, "content-type");
    if let Some(response) = state.fault_answer().await {
        return response;
    }
    let fields = match state.parse_fields(&parts.headers, &body) {
        Ok(fields) => fields,
        Err(rejection) => return rejection.into_response(),
    };
    let settings = &state.settings;
    let user = settings.users.iter().find(|user| {
        fields.get(&settings.user_field) == Some(&user.login)
            && fields.get(&settings.password_field) == Some(&user.password)
    });
    match user {
        Some(user) => state.token_answer(&state.issue(&user.login, true)),
        None => detail(settings.reject_status, "wrong"),
    }
}

async fn refresh(state: &State, request: Request<Incoming>) -> Response<Body> {
    state.refreshes.increment();
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    *lock(&state.last_refresh_body) = Some(String::from_utf8_lossy(&body).into_owned());
    if let Some(delay) = state.settings.refresh_delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(response) = state.fault_answer().await {
        return response;
    }
    let fields = match state.parse_fields(&parts.headers, &body) {
        Ok(fields) => fields,
        Err(rejection) => return rejection.into_response(),
    };
    let Some(token) = fields.get(&state.settings.refresh_field) else {
        return detail(400, "refresh token missing");
    };
    let rotate = state.settings.rotate_refresh;
    let login = {
        let mut grants = lock(&state.grants);
        match grants.get_mut(token) {
            Some(grant) if !grant.revoked && grant.exp > keys::now() => {
                grant.revoked = rotate;
                grant.login.clone()
            }
            _ => return detail(401, "invalid refresh token"),
        }
    };
    state.token_answer(&state.issue(&login, rotate))
}

async fn logout(state: &State, request: Request<Incoming>) -> Response<Body> {
    state.logouts.increment();
    let (parts, body) = request.into_parts();
    let authorization = header_text(&parts.headers, "authorization");
    if let Some(token) = authorization.as_deref().and_then(bearer) {
        lock(&state.revoked_access).insert(token.to_owned());
    }
    *lock(&state.last_logout_authorization) = authorization;
    // Logout is lenient about its body: whatever format, a refresh token in it is revoked.
    let body = read_body(body).await.unwrap_or_default();
    let content_type = header_text(&parts.headers, "content-type").unwrap_or_default();
    let fields = if content_type.starts_with("application/x-www-form-urlencoded") {
        form_fields(&body)
    } else {
        json_fields(&body).unwrap_or_default()
    };
    if let Some(token) = fields.get(&state.settings.refresh_field) {
        if let Some(grant) = lock(&state.grants).get_mut(token) {
            grant.revoked = true;
        }
    }
    serve::json_response(200, &json!({ "detail": "logged out" }))
}

fn profile(state: &State, headers: &HeaderMap) -> Response<Body> {
    state.profiles.increment();
    let claims = match state.authorize(headers) {
        Ok(claims) => claims,
        Err(rejection) => return rejection.into_response(),
    };
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = match claims.get("name").and_then(Value::as_str) {
        Some(name) => name.to_owned(),
        None => email.split('@').next().unwrap_or_default().to_owned(),
    };
    serve::json_response(
        200,
        &json!({ "email": email, "name": name, "sub": claims.get("sub") }),
    )
}

fn check_delay(state: &State) -> Option<std::time::Duration> {
    *lock(&state.check_delay)
}

async fn session_check(state: &State, headers: &HeaderMap) -> Response<Body> {
    state.session_checks.increment();
    if let Some(delay) = check_delay(state) {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = *lock(&state.check_status) {
        return detail(status, "session check fault");
    }
    match state.authorize(headers) {
        Ok(_) => serve::json_response(200, &json!({ "active": true })),
        Err(rejection) => rejection.into_response(),
    }
}

async fn introspect(state: &State, request: Request<Incoming>) -> Response<Body> {
    state.session_checks.increment();
    if let Some(delay) = check_delay(state) {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = *lock(&state.check_status) {
        return detail(status, "introspection fault");
    }
    let (parts, body) = request.into_parts();
    // base64("portcullis:s3cret")
    if header_text(&parts.headers, "authorization").as_deref()
        != Some("Basic cG9ydGN1bGxpczpzM2NyZXQ=")
    {
        return detail(401, "introspection needs the client's credentials");
    }
    let body = read_body(body).await.unwrap_or_default();
    let fields = form_fields(&body);
    let Some(token) = fields.get("token") else {
        return detail(400, "token missing");
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert("authorization", value);
    }
    let active = state.authorize(&headers).is_ok();
    serve::json_response(200, &json!({ "active": active }))
}

impl State {
    /// The answer a fault replaces login/refresh with, after any [`Fault::Slow`] delay.
    async fn fault_answer(&self) -> Option<Response<Body>> {
        let response = match self.settings.fault.as_ref()? {
            Fault::Slow(delay) => {
                tokio::time::sleep(*delay).await;
                return None;
            }
            Fault::Html => Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .body(serve::full(
                    "<!doctype html><html><body><h1>Welcome back</h1></body></html>",
                )),
            Fault::Empty => Response::builder()
                .header("content-type", "application/json")
                .body(serve::full(Bytes::new())),
            Fault::NoToken => return Some(serve::json_response(200, &json!({ "ok": true }))),
            Fault::Huge(len) => {
                let prefix = Bytes::from_static(b"{\"access_token\":\"");
                let filler = len.saturating_sub(prefix.len() as u64);
                Response::builder()
                    .header("content-type", "application/json")
                    .body(FillBody::new(prefix, filler, b'a', false).boxed())
            }
            Fault::Status(status) => {
                let mut response = detail(*status, "backend fault");
                if matches!(status, 429 | 503) {
                    response
                        .headers_mut()
                        .insert("retry-after", HeaderValue::from_static("30"));
                }
                return Some(response);
            }
            Fault::Down
            | Fault::BadToken
            | Fault::SetCookie
            | Fault::WeirdToken
            | Fault::LongToken => return None,
        };
        Some(response.expect("static headers make a valid response"))
    }

    /// Login/refresh fields from a body in the configured format; `422` otherwise.
    fn parse_fields(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<HashMap<String, String>, Rejection> {
        let content_type = header_text(headers, "content-type").unwrap_or_default();
        let fields = match self.settings.format {
            Format::Json if content_type.starts_with("application/json") => json_fields(body),
            Format::Form if content_type.starts_with("application/x-www-form-urlencoded") => {
                Some(form_fields(body))
            }
            _ => None,
        };
        fields.ok_or_else(|| {
            let expected = match self.settings.format {
                Format::Json => "expected a JSON object body",
                Format::Form => "expected an application/x-www-form-urlencoded body",
            };
            Rejection::new(422, expected)
        })
    }

    /// The login/refresh success answer in the configured shape.
    fn token_answer(&self, issued: &Issued) -> Response<Body> {
        let ttl = self.settings.access_ttl;
        let mut body = match self.settings.shape {
            Shape::AccessRefresh => json!({
                "access_token": issued.access,
                "token_type": "bearer",
                "expires_in": ttl,
                "refresh_token": issued.refresh,
            }),
            Shape::Token => json!({ "token": issued.access }),
            Shape::CamelCase => json!({
                "accessToken": issued.access,
                "refreshToken": issued.refresh,
                "expiresIn": ttl,
                "user": { "email": issued.login },
            }),
            Shape::SimpleJwt => json!({ "access": issued.access, "refresh": issued.refresh }),
        };
        // A refresh without rotation has no new refresh token: leave the key out rather
        // than send `null`, as real backends do.
        if let Value::Object(fields) = &mut body {
            fields.retain(|_, value| !value.is_null());
        }
        let mut response = serve::json_response(200, &body);
        if self.settings.fault == Some(Fault::SetCookie) {
            let cookie = format!("access_token={}; HttpOnly; Path=/", issued.access);
            response.headers_mut().append(
                "set-cookie",
                HeaderValue::from_str(&cookie).expect("a JWT is a valid header value"),
            );
        }
        response
    }

    /// The claims of the request's valid bearer access token, or the `401` to send.
    fn authorize(&self, headers: &HeaderMap) -> Result<Map<String, Value>, Rejection> {
        let unauthorized = |why: &str| Rejection {
            bearer_challenge: true,
            ..Rejection::new(401, why)
        };
        let values: Vec<_> = headers.get_all("authorization").iter().collect();
        let [value] = values[..] else {
            return Err(unauthorized("expected exactly one Authorization header"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(bearer)
            .ok_or_else(|| unauthorized("expected a Bearer token"))?;
        if lock(&self.revoked_access).contains(token) {
            return Err(unauthorized("token revoked"));
        }
        let claims = self
            .verify_access(token)
            .map_err(|why| unauthorized(&why))?;
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if lock(&self.ended).contains(user) {
            return Err(unauthorized("the account's sessions were ended"));
        }
        Ok(claims)
    }
}

/// `{"detail": text}` with `status`, the FastAPI/DRF error shape.
fn detail(status: u16, text: &str) -> Response<Body> {
    serve::json_response(status, &json!({ "detail": text }))
}

async fn read_body(body: Incoming) -> Result<Bytes, Rejection> {
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(Rejection::new(413, "body too large or broken")),
    }
}

/// A refusal, kept small until it becomes a response.
#[derive(Debug)]
struct Rejection {
    status: u16,
    detail: String,
    /// Adds `WWW-Authenticate: Bearer`.
    bearer_challenge: bool,
}

impl Rejection {
    fn new(status: u16, detail: &str) -> Rejection {
        Rejection {
            status,
            detail: detail.to_owned(),
            bearer_challenge: false,
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut response = detail(self.status, &self.detail);
        if self.bearer_challenge {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A JSON object's fields; strings as they are, other values as JSON text.
fn json_fields(body: &[u8]) -> Option<HashMap<String, String>> {
    let Ok(Value::Object(object)) = serde_json::from_slice(body) else {
        return None;
    };
    Some(
        object
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect(),
    )
}

fn form_fields(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}
