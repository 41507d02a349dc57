//! Forward auth: the second front door into the pipeline. An ingress that already proxies the
//! site (nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`
//! HTTP) asks `forward_auth.listen` about each request; this module reads the original request
//! from what the ingress sent ([`view`]) and turns the pipeline's decision into the answer the
//! ingress understands ([`answer`]). Normalizing, routing and admitting are the pipeline's own
//! phases (`handler.rs`), exactly as in proxy mode.
//!
//! An allowed request gets `200` with the headers the upstream should get; a refused one `401`
//! (with `WWW-Authenticate`) or `403`, or a `302` to the login page for a page navigation when
//! the ingress relays redirects (`X-Forwarded-Uri`: Traefik, Caddy). nginx turns any answer
//! but 2xx/401/403 into a 500 for the client, so a request asked with `X-Original-URI` only
//! ever gets those three. Every `Set-Cookie` of an answer is also given on its own in
//! `X-Auth-Set-Cookie-Access` / `X-Auth-Set-Cookie-Refresh`, because the ingresses' stock
//! mechanisms drop all but one `Set-Cookie` (nginx) or all of them (Caddy).

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::auth::{Admission, Permit};
use crate::body::{self, Body};
use crate::config::{Config, Session};
use crate::error::Error;
use crate::upstream;
use crate::view::{self, Host, RequestView, Scheme};
use crate::ConnInfo;

const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// The signed-in user's `sub` and `email`, for upstreams that read oauth2-proxy's headers.
pub const X_AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
pub const X_AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
/// Each renewed (or cleared) session cookie, as a complete `Set-Cookie` value.
pub const X_AUTH_SET_COOKIE_ACCESS: HeaderName =
    HeaderName::from_static("x-auth-set-cookie-access");
pub const X_AUTH_SET_COOKIE_REFRESH: HeaderName =
    HeaderName::from_static("x-auth-set-cookie-refresh");
/// On a `401` for a page navigation that the ingress cannot redirect itself (nginx): where
/// the login page is, with the original path as its return parameter, for the ingress's
/// `error_page` to redirect to.
pub const X_AUTH_REDIRECT: HeaderName = HeaderName::from_static("x-auth-redirect");
/// Envoy removes the request headers named here before forwarding an allowed request.
const X_ENVOY_AUTH_HEADERS_TO_REMOVE: HeaderName =
    HeaderName::from_static("x-envoy-auth-headers-to-remove");

/// How the ingress describes the original request, which also decides how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// `X-Forwarded-Method/-Proto/-Host/-Uri` (Traefik, Caddy). Redirects are relayed.
    Forwarded,
    /// `X-Original-URI` (or ingress-nginx's `X-Original-URL`) and `X-Original-Method`
    /// (nginx). Only 200, 401 and 403 may be answered.
    Original,
    /// The request itself, below `forward_auth.path_prefix` (Envoy `ext_authz` HTTP).
    Direct,
}

impl Ingress {
    /// Which convention `headers` follow. Both conventions at once is refused: an ingress sets
    /// its own header but passes the client's others through, so the second one would be the
    /// client's word.
    pub fn detect(headers: &HeaderMap) -> Result<Ingress, Error> {
        let forwarded = headers.contains_key(X_FORWARDED_URI);
        let original = headers.contains_key(X_ORIGINAL_URI) || headers.contains_key(X_ORIGINAL_URL);
        match (forwarded, original) {
            (true, true) => Err(Error::BadRequest(
                "both X-Forwarded-Uri and X-Original-URI: the original request is ambiguous",
            )),
            (true, false) => Ok(Ingress::Forwarded),
            (false, true) => Ok(Ingress::Original),
            (false, false) => Ok(Ingress::Direct),
        }
    }

    /// Whether the ingress relays a `302` to the client (nginx would turn it into a 500).
    pub fn relays_redirects(self) -> bool {
        self == Ingress::Forwarded
    }

    pub fn name(self) -> &'static str {
        match self {
            Ingress::Forwarded => "X-Forwarded-Uri (Traefik, Caddy)",
            Ingress::Original => "X-Original-URI (nginx)",
            Ingress::Direct => "the request itself (Envoy)",
        }
    }
}

/// The pipeline's decision about an asked request.
pub enum Decision {
    /// The rules and admission decided.
    Admitted(Admission),
    /// A path of the proxy's own (login, logout, `/auth/me`): the ingress sends those to
    /// `server.listen`, so it may let them through untouched.
    OwnEndpoint,
}

/// The original request as the ingress describes it, normalized into the pipeline's view. The
/// ingress is trusted for `X-Forwarded-For/-Proto/-Host` (it is the peer), whatever
/// `server.trusted_proxies` says.
pub fn view<'r>(
    parts: &'r Parts,
    conn: &ConnInfo,
    config: &Config,
    ingress: Ingress,
    path_slot: &'r mut Option<String>,
) -> Result<RequestView<'r>, Error> {
    let headers = &parts.headers;
    let text = |name: &HeaderName, what: &'static str| -> Result<Option<&'r str>, Error> {
        match headers.get(name) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(Some)
                .map_err(|_| Error::BadRequest(what)),
        }
    };
    let mut scheme = None;
    let mut host = None;
    let (method, raw_target): (Option<&str>, Cow<'r, str>) = match ingress {
        Ingress::Forwarded => (
            text(&X_FORWARDED_METHOD, "malformed X-Forwarded-Method")?,
            Cow::Borrowed(text(&X_FORWARDED_URI, "malformed X-Forwarded-Uri")?.unwrap_or("/")),
        ),
        Ingress::Original => {
            let method = text(&X_ORIGINAL_METHOD, "malformed X-Original-Method")?;
            match text(&X_ORIGINAL_URI, "malformed X-Original-URI")? {
                Some(uri) => (method, Cow::Borrowed(uri)),
                None => {
                    // ingress-nginx sends the whole URL: scheme://host/path?query.
                    let url = text(&X_ORIGINAL_URL, "malformed X-Original-URL")?.unwrap_or("");
                    let uri: http::Uri = url
                        .parse()
                        .map_err(|_| Error::BadRequest("malformed X-Original-URL"))?;
                    scheme = uri.scheme_str().and_then(Scheme::parse);
                    if let Some(authority) = uri.authority() {
                        let value = HeaderValue::from_str(authority.as_str())
                            .map_err(|_| Error::BadRequest("malformed X-Original-URL"))?;
                        host = Some(Host::parse(value).map_err(Error::BadRequest)?);
                    }
                    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
                    (method, Cow::Owned(target.to_owned()))
                }
            }
        }
        Ingress::Direct => {
            let own = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let prefix = config
                .forward_auth
                .as_ref()
                .map_or("", |f| f.path_prefix.as_str());
            let rest = own.strip_prefix(prefix).ok_or(Error::NotFound)?;
            let target = match rest.as_bytes().first() {
                None => Cow::Borrowed("/"),
                Some(b'/') => Cow::Borrowed(rest),
                Some(b'?') => Cow::Owned(format!("/{rest}")),
                // `/authzfoo` is not below `/authz`.
                Some(_) => return Err(Error::NotFound),
            };
            (None, target)
        }
    };
    let method = match method {
        Some(text) => Method::from_bytes(text.trim().as_bytes())
            .map_err(|_| Error::BadRequest("malformed original method"))?,
        None => parts.method.clone(),
    };
    let (path, target) = match raw_target {
        Cow::Borrowed(raw) => view::normalize(raw, path_slot)?,
        Cow::Owned(raw) => {
            let (path, target) = view::normalize(&raw, path_slot)?;
            (path, Cow::Owned(target.into_owned()))
        }
    };
    let host = match view::forwarded_host(headers)? {
        Some(forwarded) => forwarded,
        None => match host {
            Some(host) => host,
            None => view::authority(parts)?,
        },
    };
    let scheme = view::forwarded_proto(headers)
        .or(scheme)
        .unwrap_or(Scheme::Http);
    Ok(RequestView {
        method,
        scheme,
        host,
        path,
        target,
        headers,
        client_ip: view::forwarded_client(conn.peer.ip(), headers, &config.server.trusted_proxies),
        trusted_peer: true,
    })
}

/// What a refusal becomes for `ingress`: a path no rule takes is refused (403) rather than
/// "not found"; nginx gets only 401 or 403 (a login redirect or a backend outage becomes
/// 401, any other client error 403); other ingresses get no redirect unless they relay it.
pub fn refusal(ingress: Ingress, err: Error) -> Error {
    let err = match err {
        Error::NotFound => Error::Forbidden("no rule matches the path"),
        Error::Unauthenticated {
            reason,
            login: Some(_),
            clear_cookies,
        } if !ingress.relays_redirects() => Error::Unauthenticated {
            reason,
            login: None,
            clear_cookies,
        },
        err => err,
    };
    if ingress != Ingress::Original {
        return err;
    }
    match err.status().as_u16() {
        401 | 403 => err,
        400..=499 => Error::Forbidden("the request cannot be authorized"),
        _ => Error::Unauthenticated {
            reason: err.to_string(),
            login: None,
            clear_cookies: Vec::new(),
        },
    }
}

/// The answer to the ingress. `renewed` are the cookies a renewal on the way produced, which
/// every answer carries, refusals included (the backend has already spent the old refresh
/// token); `asked` are the headers of the subrequest (the client's, as the ingress passed them
/// on).
pub fn answer(
    ingress: Ingress,
    decision: Result<Decision, Error>,
    renewed: Vec<HeaderValue>,
    asked: &HeaderMap,
    config: &Config,
) -> Response<Body> {
    let mut response = match decision {
        Ok(Decision::OwnEndpoint) => allowed(None, asked, config, ingress),
        Ok(Decision::Admitted(Admission::Forward(permit))) => {
            allowed(Some(&permit), asked, config, ingress)
        }
        Ok(Decision::Admitted(Admission::Redirect(location))) if ingress.relays_redirects() => {
            crate::response::redirect(StatusCode::FOUND, &location)
        }
        // A signed-in user on a `guest` page: the page is public, let it through.
        Ok(Decision::Admitted(Admission::Redirect(_))) => allowed(None, asked, config, ingress),
        Err(err) => {
            let login = match &err {
                Error::Unauthenticated {
                    login: Some(login), ..
                } if !ingress.relays_redirects() => HeaderValue::try_from(login.as_str()).ok(),
                _ => None,
            };
            let mut response = refusal(ingress, err).into_response();
            if let Some(login) = login {
                response.headers_mut().insert(X_AUTH_REDIRECT, login);
            }
            response
        }
    };
    for cookie in renewed {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    mirror_cookies(response.headers_mut(), &config.session);
    // The answer may carry a bearer token: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `200` with what the upstream request should carry: `Authorization`, the rule's identity
/// headers, `X-Auth-Request-User`/`-Email`, the client's `Cookie` without the proxy's own
/// cookies.
fn allowed(
    permit: Option<&Permit>,
    asked: &HeaderMap,
    config: &Config,
    ingress: Ingress,
) -> Response<Body> {
    let mut response = Response::new(body::empty());
    let headers = response.headers_mut();
    if let Some(permit) = permit {
        permit.apply(headers);
        if permit.is_authenticated() {
            for (name, claim) in [
                (X_AUTH_REQUEST_USER, "sub"),
                (X_AUTH_REQUEST_EMAIL, "email"),
            ] {
                if let Some(value) = permit.claim_header(claim) {
                    headers.insert(name, value);
                }
            }
        }
    }
    // On a public rule the client's own `Authorization` goes upstream as in proxy mode; an
    // ingress that replaces the header with the answer's would otherwise drop it.
    if !headers.contains_key(header::AUTHORIZATION) {
        if let Some(own) = asked.get(header::AUTHORIZATION) {
            headers.insert(header::AUTHORIZATION, own.clone());
        }
    }
    let session = &config.session;
    let mut cookie = HeaderMap::new();
    for line in asked.get_all(header::COOKIE) {
        cookie.append(header::COOKIE, line.clone());
    }
    crate::cookie_header::strip(
        &mut cookie,
        &[&session.access_cookie, &session.refresh_cookie],
    );
    if let Some(rest) = cookie.remove(header::COOKIE) {
        headers.insert(header::COOKIE, rest);
    }
    if ingress == Ingress::Direct {
        envoy_removals(headers, asked, config);
    }
    response
}

/// Envoy only overwrites the headers an answer sets: every identity header the client sent
/// and the answer does not set is named for removal (as is `Cookie`, when nothing of it is
/// left for the upstream).
fn envoy_removals(headers: &mut HeaderMap, asked: &HeaderMap, config: &Config) {
    let configured: Vec<HeaderName> = config
        .rules
        .iter()
        .flat_map(|rule| rule.headers.iter().map(|(name, _)| name.clone()))
        .collect();
    let mut remove: Vec<&str> = asked
        .keys()
        .filter(|name| {
            let name = name.as_str();
            upstream::is_identity_header(name, &configured)
                && !name.starts_with("x-forwarded-")
                && !matches!(name, "forwarded" | "x-request-id" | "x-real-ip")
        })
        .filter(|name| !headers.contains_key(*name))
        .map(HeaderName::as_str)
        .collect();
    if asked.contains_key(header::COOKIE) && !headers.contains_key(header::COOKIE) {
        remove.push("cookie");
    }
    if !remove.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&remove.join(", ")) {
            headers.insert(X_ENVOY_AUTH_HEADERS_TO_REMOVE, value);
        }
    }
}

/// Copies each session cookie the answer sets into its own `X-Auth-Set-Cookie-*` header.
fn mirror_cookies(headers: &mut HeaderMap, session: &Session) {
    let mut mirrored = Vec::new();
    for cookie in headers.get_all(header::SET_COOKIE) {
        let name = cookie
            .as_bytes()
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if name == session.access_cookie.as_bytes() {
            mirrored.push((X_AUTH_SET_COOKIE_ACCESS, cookie.clone()));
        } else if name == session.refresh_cookie.as_bytes() {
            mirrored.push((X_AUTH_SET_COOKIE_REFRESH, cookie.clone()));
        }
    }
    for (name, value) in mirrored {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests;
