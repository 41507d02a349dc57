//! The proxy's own endpoints for the credential exchange: `POST login.path` and `logout.path`.
//!
//! Login takes the submitted form or JSON, sends exactly the configured fields to the backend,
//! verifies the access token it answers with *before* setting anything, and sets the cookies.
//! Around it: login-CSRF refusal, a per-IP attempt limit, and a return path that can only ever
//! be a same-site relative path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use http::header::{
    HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, REFERER, RETRY_AFTER, SET_COOKIE,
};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tracing::{info, warn};

use super::backend::{self, Tokens};
use super::cookies;
use super::csrf::Origin;
use super::Authenticator;
use crate::body::{Body, RequestBody};
use crate::error::Error;
use crate::response::{self, redirect};

/// The largest login form or JSON body read.
const MAX_LOGIN_BODY: usize = 16 << 10;

/// How a login request was submitted, which decides how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Form,
    Json,
}

/// Whether a login or logout comes from another site: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` that is neither `site` (the origin the request reached the proxy at: scheme, host
/// and port, compared as [`csrf`](super::csrf) compares them) nor one of `allowed`
/// (`session.allowed_origins`). `Origin: null` and anything that is not an http(s) origin
/// count as another site; a request with neither header (not a browser) does not.
pub fn is_cross_site(headers: &HeaderMap, site: Option<&Origin>, allowed: &[Origin]) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site").is_some_and(|site| site.trim().eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    match headers.get("origin") {
        None => false,
        Some(origin) => match origin.to_str().ok().and_then(|o| Origin::parse(o.trim())) {
            Some(origin) => site != Some(&origin) && !allowed.contains(&origin),
            None => true,
        },
    }
}

/// Logs a refused cross-site login or logout with both origins (they are public): an `Origin`
/// of `https://host` against a site of `http://host` tells an operator behind a
/// TLS-terminating proxy that it is missing from `server.trusted_proxies`.
fn refused_cross_site(what: &str, headers: &HeaderMap, site: Option<&Origin>, client_ip: IpAddr) {
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    warn!(
        %client_ip,
        origin = origin.unwrap_or("-"),
        sec_fetch_site = fetch_site.unwrap_or("-"),
        site = %site.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        "{what} refused: cross-site request"
    );
}

/// The return path if it is a same-site relative path, else `None`.
///
/// The value itself must be a plain path: `/`, then no second `/` or `\` (browsers read
/// `/\x` as `//x`), no backslash, space or control character anywhere. The prefix is checked
/// after dot segments are removed as a browser resolves them (RFC 3986 §5.2.4), so `/.//x`
/// and `/a/..//x` are `//x` too. Browsers and servers differ in how often they decode, so it
/// is checked once more after another round of percent-decoding: the prefix again
/// (`/%2f%2fevil.com`, `/%2e//evil.com`), and no control characters, which browsers strip
/// (`/%09/evil.com`) or which split headers (`%0d%0a`). An encoded space or backslash further
/// on (`/search?q=a%20b`) stays: it cannot lead off the site.
pub fn safe_return_path(candidate: &str) -> Option<&str> {
    fn same_site_prefix(path: &[u8]) -> bool {
        let end = path
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(path.len());
        let resolved = remove_dot_segments(&path[..end]);
        path.first() == Some(&b'/')
            && resolved.first() == Some(&b'/')
            && !matches!(path.get(1), Some(b'/' | b'\\'))
            && !matches!(resolved.get(1), Some(b'/' | b'\\'))
    }
    let literal = candidate.as_bytes();
    let plain = same_site_prefix(literal)
        && candidate.len() <= 2048
        && !literal
            .iter()
            .any(|&b| b == b'\\' || b == b' ' || b.is_ascii_control());
    if !plain {
        return None;
    }
    let decoded = percent_decode(literal);
    (same_site_prefix(&decoded) && !decoded.iter().any(u8::is_ascii_control)).then_some(candidate)
}

/// RFC 3986 §5.2.4 "remove dot segments", exactly (empty segments are kept: `//` is what the
/// caller looks for). `%2e` is read as `.`, as browsers do in paths.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let dot = |segment: &[u8]| segment == b"." || segment.eq_ignore_ascii_case(b"%2e");
    let dots = |segment: &[u8]| {
        let text = segment.to_ascii_lowercase();
        matches!(&text[..], b".." | b".%2e" | b"%2e." | b"%2e%2e")
    };
    let mut output: Vec<u8> = Vec::with_capacity(path.len());
    // Segments after the first `/`, each with its leading `/` dropped.
    let mut input = path;
    let relative = input.first() != Some(&b'/');
    if !relative {
        input = &input[1..];
    }
    let mut segments = input.split(|&b| b == b'/').peekable();
    let mut first = true;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if dot(segment) || dots(segment) {
            if dots(segment) {
                // Drop the last output segment and its `/`.
                let cut = output.iter().rposition(|&b| b == b'/').unwrap_or(0);
                output.truncate(cut);
            }
            if last {
                output.push(b'/');
            }
            continue;
        }
        if !(first && relative) {
            output.push(b'/');
        }
        output.extend_from_slice(segment);
        first = false;
    }
    output
}

/// A validated return path as a `Location` value: bytes outside visible ASCII (non-ASCII
/// characters the query decoding produced) are percent-encoded, since a header value holding
/// them would be refused or read differently by each browser.
fn location_safe(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_graphic() {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(hi), Some(lo)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The submitted fields of a login body: every form pair, or every string/number member of a
/// JSON object (a repeated form field counts once, its first value; other JSON values are ignored).
pub fn parse_credentials(style: Style, body: &[u8]) -> Result<HashMap<String, String>, Error> {
    match style {
        Style::Form => {
            let mut fields = HashMap::new();
            for (key, value) in form_urlencoded::parse(body) {
                fields
                    .entry(key.into_owned())
                    .or_insert_with(|| value.into_owned());
            }
            Ok(fields)
        }
        Style::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Number(n) => Some((k, n.to_string())),
                    _ => None,
                })
                .collect()),
            _ => Err(Error::BadRequest("the login body must be a JSON object")),
        },
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Whether the client wants a JSON answer rather than a redirect.
fn wants_json(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let content_type = text(CONTENT_TYPE);
    let accept = text(ACCEPT);
    content_type.starts_with("application/json")
        || (accept.contains("application/json") && !accept.contains("text/html"))
}

impl Authenticator {
    /// `POST login.path`. `site` is the origin the request reached the proxy at (what an
    /// `Origin` must name, unless it is in `session.allowed_origins`).
    pub async fn login(
        &self,
        request: http::Request<RequestBody>,
        client_ip: IpAddr,
        site: Option<&Origin>,
    ) -> Result<Response<Body>, Error> {
        let Some(backend) = &self.backend else {
            return Err(Error::NotFound);
        };
        let (parts, body) = request.into_parts();
        if is_cross_site(&parts.headers, site, &self.session.allowed_origins) {
            refused_cross_site("login", &parts.headers, site, client_ip);
            return Err(Error::Forbidden("cross-site login request"));
        }
        let limit = self.login.attempts_per_minute;
        if limit > 0 {
            // Counted across every instance with [cluster]; locally otherwise.
            let count = self
                .cluster
                .hit("login", &crate::cluster::client_key(client_ip))
                .await;
            if count.events > limit {
                warn!(%client_ip, "login refused: too many attempts");
                crate::telemetry::auth("login_rate_limited");
                return Err(Error::TooManyRequests {
                    retry_after: count.resets_in.as_secs().max(1),
                });
            }
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let style = match content_type.as_str() {
            "application/x-www-form-urlencoded" => Style::Form,
            "application/json" => Style::Json,
            t if t.starts_with("application/") && t.ends_with("+json") => Style::Json,
            _ => return Err(Error::UnsupportedMediaType),
        };
        let collected = Limited::new(body, MAX_LOGIN_BODY).collect();
        let body = tokio::time::timeout(self.login_body_within, collected)
            .await
            .map_err(|_| Error::RequestTimeout)?
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    Error::PayloadTooLarge
                } else {
                    Error::BadRequest("the request body could not be read")
                }
            })?
            .to_bytes();
        let submitted = parse_credentials(style, &body)?;
        let return_to = query_param(parts.uri.query(), &self.login.return_param)
            .or_else(|| {
                // A login form that posts to a URL without `next` still came from a page that had it.
                let referer = parts.headers.get(REFERER)?.to_str().ok()?;
                let uri: http::Uri = referer.parse().ok()?;
                let same_origin = site.is_some() && site == Origin::of_url(&uri).as_ref();
                same_origin
                    .then(|| query_param(uri.query(), &self.login.return_param))
                    .flatten()
            })
            .and_then(|candidate| safe_return_path(&candidate).map(location_safe));

        let mut fields = Vec::with_capacity(self.login.fields.len());
        for (backend_field, submitted_field) in &self.login.fields {
            match submitted.get(submitted_field) {
                Some(value) => fields.push((backend_field.as_str(), value.as_str())),
                None => return Ok(self.login_failed(style, "missing field")),
            }
        }
        let answer = backend.post(&backend.config.login, &fields, None).await?;
        let status = answer.status;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let mut response = Error::TooManyRequests { retry_after: 60 }.into_response();
            if let Some(retry_after) = answer.headers.get(RETRY_AFTER) {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, retry_after.clone());
            }
            return Ok(response);
        }
        // How backends say "wrong password". A 404 is not among them: a mistyped
        // backend.login must look like an outage (502), not like a user's mistake.
        if matches!(status.as_u16(), 400 | 401 | 403 | 422) {
            info!(%client_ip, status = status.as_u16(), "login failed: credentials refused by the backend");
            crate::telemetry::auth("login_failed");
            return Ok(self.login_failed(style, "invalid credentials"));
        }
        if !status.is_success() {
            return Err(Error::BackendUnavailable(format!(
                "login answered {status}"
            )));
        }
        let tokens = backend.tokens(&answer, &self.session.access_cookie)?;
        let set_cookies = self.session_cookies(&tokens)?;
        info!(%client_ip, "login succeeded");
        crate::telemetry::auth("login_ok");
        let mut response = match style {
            Style::Form => {
                let target = return_to.as_deref().unwrap_or(&self.login.success_redirect);
                redirect(StatusCode::SEE_OTHER, target)
            }
            Style::Json => response::json(StatusCode::OK, &serde_json::json!({ "ok": true })),
        };
        for cookie in set_cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        Ok(response)
    }

    fn login_failed(&self, style: Style, _why: &str) -> Response<Body> {
        match style {
            Style::Form => redirect(StatusCode::SEE_OTHER, &self.login.failure_redirect),
            Style::Json => response::json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "invalid_credentials" }),
            ),
        }
    }

    /// Verifies the backend's access token and renders both cookies. Every login and refresh
    /// sets both, replacing whatever the browser had (no session fixation).
    pub(super) fn session_cookies(&self, tokens: &Tokens) -> Result<Vec<HeaderValue>, Error> {
        let now = super::now();
        let claims = self
            .verifier
            .verify(&tokens.access, now)
            .map_err(|rejection| {
                Error::BackendUnavailable(format!(
                    "the backend's access token does not verify: {rejection}"
                ))
            })?;
        // `exp` is required and verified, so it always gives a lifetime (at least a second,
        // for a token accepted within the leeway: a cookie without one would never lapse).
        let lifetime = Duration::from_secs(
            tokens
                .expires_in
                .unwrap_or(claims.exp().saturating_sub(now)),
        )
        .max(Duration::from_secs(1));
        self.issued(&tokens.access, &claims, tokens.refresh.as_deref(), now);
        if lifetime <= self.session.refresh_ahead {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                warn!(
                    token_lifetime_secs = lifetime.as_secs(),
                    refresh_ahead_secs = self.session.refresh_ahead.as_secs(),
                    "the backend's access tokens live no longer than session.refresh_ahead: every request will renew them; lower session.refresh_ahead"
                );
            });
        }
        let mut set = Vec::with_capacity(2);
        let cookie_error = |name: &str, err: cookies::CookieError| {
            warn!(cookie = name, error = %err, "refusing to set a cookie from the backend's answer");
            Error::BackendUnavailable(format!("cannot set cookie {name}: {err}"))
        };
        match &tokens.relayed_cookie {
            Some(relayed) if relayed.len() > cookies::MAX_COOKIE_BYTES => {
                return Err(cookie_error(
                    &self.session.access_cookie,
                    cookies::CookieError::TooLarge,
                ))
            }
            Some(relayed) => set.push(relayed.clone()),
            None => set.push(
                cookies::set(
                    &self.session,
                    &self.session.access_cookie,
                    &tokens.access,
                    lifetime,
                )
                .map_err(|err| cookie_error(&self.session.access_cookie, err))?,
            ),
        }
        match &tokens.refresh {
            Some(refresh) => {
                let lifetime = backend::unverified_exp(refresh)
                    .map_or(self.session.refresh_max_age, |exp| {
                        Duration::from_secs(exp.saturating_sub(now).max(1))
                    });
                set.push(
                    cookies::set(
                        &self.session,
                        &self.session.refresh_cookie,
                        refresh,
                        lifetime,
                    )
                    .map_err(|err| cookie_error(&self.session.refresh_cookie, err))?,
                );
            }
            None => set.push(cookies::clear(&self.session, &self.session.refresh_cookie)),
        }
        Ok(set)
    }

    /// `logout.path`, GET or POST: expire both cookies, tell the backend, redirect.
    pub async fn logout(
        &self,
        request: http::Request<RequestBody>,
        site: Option<&Origin>,
        client_ip: IpAddr,
    ) -> Result<Response<Body>, Error> {
        let (parts, _) = request.into_parts();
        if parts.method == http::Method::POST
            && is_cross_site(&parts.headers, site, &self.session.allowed_origins)
        {
            refused_cross_site("logout", &parts.headers, site, client_ip);
            return Err(Error::Forbidden("cross-site logout request"));
        }
        // The session ends here, not when its tokens expire: a copied cookie replayed after
        // the logout is refused, on every instance with [cluster].
        self.revoke_session(
            cookies::find(&parts.headers, &self.session.access_cookie),
            cookies::find(&parts.headers, &self.session.refresh_cookie),
            client_ip,
        )
        .await;
        if let (Some(backend), Some(uri)) = (
            &self.backend,
            self.backend.as_ref().and_then(|b| b.config.logout.clone()),
        ) {
            let access =
                cookies::find(&parts.headers, &self.session.access_cookie).map(str::to_owned);
            let refresh =
                cookies::find(&parts.headers, &self.session.refresh_cookie).map(str::to_owned);
            if access.is_some() || refresh.is_some() {
                let backend = backend.clone();
                // The user is signed out whatever the backend says; never make them wait for it.
                tokio::spawn(async move {
                    let field = backend.config.refresh_field.clone();
                    let fields: Vec<(&str, &str)> = refresh
                        .iter()
                        .map(|r| (field.as_str(), r.as_str()))
                        .collect();
                    match backend.post(&uri, &fields, access.as_deref()).await {
                        Ok(answer) if answer.status.is_success() => info!("backend told of logout"),
                        Ok(answer) => warn!(
                            status = answer.status.as_u16(),
                            "backend logout call refused"
                        ),
                        Err(err) => warn!(error = %err, "backend logout call failed"),
                    }
                });
            }
        }
        let mut response = if wants_json(&parts.headers) {
            response::json(StatusCode::OK, &serde_json::json!({ "ok": true }))
        } else {
            redirect(StatusCode::SEE_OTHER, &self.logout.redirect)
        };
        for cookie in self.cleared_session() {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths() {
        let good = [
            "/dashboard",
            "/x?y=1",
            "/a/b#c",
            "/search?q=http://x",
            "/search?q=a%20b",
            "/a%5Cb",
            "/caf\u{e9}",
            "/caf%E9",
        ];
        for path in good {
            assert_eq!(safe_return_path(path), Some(path), "{path}");
        }
        let bad = [
            "//evil.com",
            "/\\evil.com",
            "/%09/evil.com",
            "/\t/evil.com",
            "/%2f%2fevil.com",
            "/%2F%2Fevil.com",
            "/%5cevil.com",
            "https:evil.com",
            "https://evil.com",
            "javascript:alert(1)",
            "/x%0d%0aSet-Cookie:a=b",
            "/x\r\nLocation: //evil.com",
            "evil.com",
            "",
            "/%00",
            "/%5C%5Cevil.com",
            "/x%7f",
            "/ evil",
            // Dot segments resolved as a browser does.
            "/.//evil.com",
            "/./\\evil.com",
            "/a/..//evil.com",
            "/..//evil.com",
            "/%2e//evil.com",
            "/%2E%2E//evil.com",
            "/.%2e//evil.com",
            "/x/%2e%2e//evil.com",
            "/./%5cevil.com",
            "/.%2f/evil.com",
            "/%2e%2f/evil.com",
            "/.%3f/..//evil.com",
        ];
        for path in bad {
            assert_eq!(safe_return_path(path), None, "{path:?}");
        }
        // Dot segments that stay on the site are fine.
        for path in ["/a/../b", "/./dashboard", "/a/./b?next=//x", "/a/..", "/.."] {
            assert_eq!(safe_return_path(path), Some(path), "{path:?}");
        }
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        for (input, output) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/./a", "/a"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/.//x", "//x"),
            ("/a/..//x", "//x"),
            ("/a//b/../c", "/a//c"),
            ("/%2E/b", "/b"),
            ("/a/b/.", "/a/b/"),
            ("/", "/"),
        ] {
            assert_eq!(
                String::from_utf8(remove_dot_segments(input.as_bytes())).expect("utf8"),
                output,
                "{input}"
            );
        }
    }

    #[test]
    fn cross_site_detection() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        let site = Origin::parse("http://site.example:8080");
        let site = site.as_ref();
        let allowed = [Origin::parse("https://admin.example").expect("origin")];
        let cross =
            |pairs: &[(&'static str, &'static str)]| is_cross_site(&headers(pairs), site, &allowed);
        assert!(!cross(&[]));
        assert!(!cross(&[("origin", "http://site.example:8080")]));
        assert!(!cross(&[("origin", "HTTP://Site.Example:8080")]));
        assert!(!cross(&[("origin", "https://admin.example")]));
        assert!(cross(&[("origin", "http://evil.example")]));
        // The same host over the other scheme, or on another port, is another origin.
        assert!(cross(&[("origin", "https://site.example:8080")]));
        assert!(cross(&[("origin", "http://site.example")]));
        assert!(cross(&[("origin", "http://admin.example")]));
        assert!(cross(&[("origin", "null")]));
        assert!(cross(&[("origin", "site.example:8080")]));
        assert!(cross(&[("sec-fetch-site", "cross-site")]));
        assert!(!cross(&[("sec-fetch-site", "same-origin")]));
        // No usable site: only an allowed origin is this side.
        assert!(is_cross_site(
            &headers(&[("origin", "http://site.example:8080")]),
            None,
            &[]
        ));
    }
}
