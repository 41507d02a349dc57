//! Forward auth: the second front door into the pipeline. An ingress that already proxies the
//! site (nginx `auth_request`, Traefik `ForwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`
//! HTTP) asks `forward_auth.listen` about each request; this module reads the original request
//! from what the ingress sent ([`view`]) and turns the pipeline's decision into the answer the
//! ingress understands ([`answer`]). Normalizing, routing and admitting are the pipeline's own
//! phases (`handler.rs`), exactly as in proxy mode.
//!
//! The ingress forwards the client's request as it was sent, not what Portcullis decided on,
//! so the view refuses what the upstream could read differently: a path that is not already
//! normal (dot segments, `//`, a `#`), a repeated or missing convention header, an original
//! request without the host the ingress chose, and identity headers from the client (which
//! most ingresses cannot remove by prefix).
//!
//! An allowed request gets `200` with the headers the upstream should get; a refused one `401`
//! (with `WWW-Authenticate`) or `403`, or a `302` to the login page for a page navigation when
//! the ingress relays redirects (`X-Forwarded-Uri`: Traefik, Caddy). nginx turns any answer
//! but 2xx/401/403 into a 500 for the client, so a request asked with `X-Original-URI` only
//! ever gets those three. Each session cookie an answer sets is also given on its own in
//! `X-Auth-Set-Cookie-Access` / `X-Auth-Set-Cookie-Refresh`, because the ingresses' stock
//! mechanisms drop all but one `Set-Cookie` (nginx) or all of them (Caddy) — on an allowed
//! answer, which no ingress shows the client, and to nginx, which never relays an answer's
//! headers; never on a refusal that Traefik, Caddy or Envoy would pass to the browser, where
//! a page's script could read the tokens.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::auth::{Admission, Permit};
use crate::body::{self, Body};
use crate::config::{Config, Session};
use crate::error::Error;
use crate::headers;
use crate::view::{self, Host, PathForm, RequestView, Scheme};
use crate::ConnInfo;

const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
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

    /// Whether the ingress passes a refusal's headers on to the client. nginx answers the
    /// client itself (its recipe adds the renewed cookies); Traefik, Caddy and Envoy relay the
    /// refusal with its headers.
    pub fn relays_refusals(self) -> bool {
        self != Ingress::Original
    }

    pub fn name(self) -> &'static str {
        match self {
            Ingress::Forwarded => "X-Forwarded-Uri (Traefik, Caddy)",
            Ingress::Original => "X-Original-URI (nginx)",
            Ingress::Direct => "the request itself (Envoy)",
        }
    }
}

/// The original request as the ingress describes it, in the pipeline's view. The ingress is
/// believed for `X-Forwarded-For/-Proto/-Host` (it is the peer), whatever
/// `server.trusted_proxies` says; but the path must already be normal (the ingress forwards
/// it as sent), the host must be the one the ingress chose (`X-Forwarded-Host`, or the
/// request's own `Host` for Envoy), and `claim_headers` (with every other identity header)
/// must not come from the client.
pub fn view<'r>(
    parts: &'r Parts,
    conn: &ConnInfo,
    config: &Config,
    ingress: Ingress,
    claim_headers: &[HeaderName],
    path_slot: &'r mut Option<String>,
) -> Result<RequestView<'r>, Error> {
    let headers = &parts.headers;
    refuse_client_identity(headers, claim_headers)?;
    let (method, raw_target, host, scheme) = match ingress {
        Ingress::Forwarded => {
            let method = one(headers, &X_FORWARDED_METHOD, "X-Forwarded-Method")?
                .ok_or(Error::BadRequest("X-Forwarded-Method is missing"))?;
            let target = one(headers, &X_FORWARDED_URI, "X-Forwarded-Uri")?.unwrap_or("");
            let host = forwarded_host(headers)?.ok_or(Error::BadRequest(
                "X-Forwarded-Host is missing: the host the ingress chose is unknown",
            ))?;
            (Some(method), target, host, None)
        }
        Ingress::Original => {
            let method = one(headers, &X_ORIGINAL_METHOD, "X-Original-Method")?
                .ok_or(Error::BadRequest("X-Original-Method is missing"))?;
            let uri = one(headers, &X_ORIGINAL_URI, "X-Original-URI")?;
            // ingress-nginx sends the whole URL: scheme://host/path?query.
            let url = one(headers, &X_ORIGINAL_URL, "X-Original-URL")?
                .map(original_url)
                .transpose()?;
            let target = match (uri, &url) {
                (Some(uri), Some((_, _, target))) if uri != *target => {
                    return Err(Error::BadRequest(
                        "X-Original-URI and X-Original-URL name different requests",
                    ))
                }
                (Some(uri), _) => uri,
                (None, Some((_, _, target))) => target,
                (None, None) => "",
            };
            let (scheme, url_host) = match url {
                Some((scheme, host, _)) => (Some(scheme), Some(host)),
                None => (None, None),
            };
            let host = match forwarded_host(headers)? {
                Some(host) => host,
                None => url_host.ok_or(Error::BadRequest(
                    "X-Forwarded-Host is missing: the host the ingress chose is unknown",
                ))?,
            };
            (Some(method), target, host, scheme)
        }
        Ingress::Direct => {
            let own = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let prefix = config
                .forward_auth
                .as_ref()
                .map_or("", |f| f.path_prefix.as_str());
            let rest = own.strip_prefix(prefix).ok_or(Error::NotFound)?;
            let target = match rest.as_bytes().first() {
                None => "/",
                Some(b'/') => rest,
                // Envoy prefixes a path, which always starts with `/`.
                Some(b'?') => {
                    return Err(Error::BadRequest("no path below forward_auth.path_prefix"))
                }
                // `/authzfoo` is not below `/authz`.
                Some(_) => return Err(Error::NotFound),
            };
            // The check request's own Host is the original one (Envoy copies `:authority`);
            // an X-Forwarded-Host would be the client's.
            (None, target, view::authority(parts)?, None)
        }
    };
    let method = match method {
        Some(text) => Method::from_bytes(text.trim().as_bytes())
            .map_err(|_| Error::BadRequest("malformed original method"))?,
        None => parts.method.clone(),
    };
    if raw_target.contains('#') {
        return Err(Error::BadRequest("a fragment (#) in the original request"));
    }
    let (path, target) = view::normalize(raw_target, path_slot, PathForm::AsSent)?;
    let scheme = match one(headers, &X_FORWARDED_PROTO, "X-Forwarded-Proto")? {
        Some(_) => view::forwarded_proto(headers),
        None => scheme,
    }
    .unwrap_or(Scheme::Http);
    Ok(RequestView {
        method,
        scheme,
        host,
        path,
        target,
        headers,
        client_ip: view::forwarded_client(conn.peer.ip(), headers, &config.server.trusted_proxies),
    })
}

/// The one value of a convention header, if present. Two of them, or one that is not visible
/// ASCII, is refused: the ingress sets its own, so a second one is the client's.
fn one<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    what: &'static str,
) -> Result<Option<&'h str>, Error> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::BadRequest(match what {
            "X-Forwarded-Method" => "more than one X-Forwarded-Method",
            "X-Forwarded-Uri" => "more than one X-Forwarded-Uri",
            "X-Forwarded-Proto" => "more than one X-Forwarded-Proto",
            "X-Original-Method" => "more than one X-Original-Method",
            "X-Original-URI" => "more than one X-Original-URI",
            _ => "more than one X-Original-URL",
        }));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| Error::BadRequest("a malformed original-request header"))
}

/// The host the ingress chose, from `X-Forwarded-Host` (at most one). It is required where
/// nothing else names it: the subrequest's own `Host` is the ingress's idea of where
/// Portcullis is (nginx) or the client's `Host`, which need not be the host the ingress chose
/// its site by (an absolute-form request names another).
fn forwarded_host(headers: &HeaderMap) -> Result<Option<Host>, Error> {
    if headers.get_all(X_FORWARDED_HOST).iter().nth(1).is_some() {
        return Err(Error::BadRequest("more than one X-Forwarded-Host"));
    }
    view::forwarded_host(headers)
}

/// ingress-nginx's `X-Original-URL` (`$scheme://$http_host$request_uri`), read strictly: an
/// `http`/`https` scheme, an authority that is a valid host (no userinfo, no `#` or `?`), and
/// the path beginning right after it. A loose URL parser reads `http://x#/admin` as host `x`,
/// path `/`, while the upstream is sent `/admin`.
fn original_url(url: &str) -> Result<(Scheme, Host, &str), Error> {
    let malformed = Error::BadRequest("malformed X-Original-URL");
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(malformed);
    };
    let Some(scheme) = Scheme::parse(scheme) else {
        return Err(malformed);
    };
    let Some(slash) = rest.find('/') else {
        return Err(malformed);
    };
    let (authority, target) = rest.split_at(slash);
    let host = HeaderValue::from_str(authority)
        .ok()
        .and_then(|value| Host::parse(value).ok());
    match host {
        Some(host) => Ok((scheme, host, target)),
        None => Err(malformed),
    }
}

/// Refuses a subrequest that carries an identity header from the client (`X-User-*`,
/// `X-Auth-*`, `X-Forwarded-User`, `Remote-User`, a claim header, any `_` spelling). In proxy
/// mode such headers are stripped; here the ingress forwards the client's headers itself, and
/// nginx cannot remove headers by prefix, so the request is refused instead. The headers the
/// ingresses themselves set (`X-Forwarded-For/-Proto/-Host/…`, `X-Real-IP`, `X-Request-Id`,
/// ingress-nginx's `X-Auth-Request-Redirect`), always spelt with `-`, are not identities.
fn refuse_client_identity(headers: &HeaderMap, claim_headers: &[HeaderName]) -> Result<(), Error> {
    // oauth2-proxy's identity headers, which no ingress sets in a subrequest.
    const FORWARDED_IDENTITY: [&str; 5] = [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
    ];
    let set_by_ingress = |name: &str| {
        (name.starts_with("x-forwarded-") && !FORWARDED_IDENTITY.contains(&name))
            || matches!(
                name,
                "forwarded"
                    | "x-real-ip"
                    | "x-request-id"
                    | "x-original-uri"
                    | "x-original-url"
                    | "x-auth-request-redirect"
            )
    };
    let forged = headers.keys().any(|name| {
        let name = name.as_str();
        headers::is_identity_header(name, claim_headers) && !set_by_ingress(name)
    });
    if forged {
        return Err(Error::BadRequest(
            "identity headers (X-User-*, X-Auth-*, X-Forwarded-User, Remote-User) may not come from the client",
        ));
    }
    Ok(())
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

/// The answer to the ingress. `asked` are the headers of the subrequest (the client's, as the
/// ingress passed them on); `claim_headers` every header a rule fills from claims. Renewed
/// cookies are added by the pipeline afterwards, then [`mirror_cookies`].
pub fn answer(
    ingress: Ingress,
    decision: Result<Admission, Error>,
    asked: &HeaderMap,
    config: &Config,
    claim_headers: &[HeaderName],
) -> Response<Body> {
    let mut response = match decision {
        Ok(Admission::Forward(permit)) => {
            allowed(Some(&permit), asked, config, claim_headers, ingress)
        }
        Ok(Admission::Redirect(location)) if ingress.relays_redirects() => {
            crate::response::redirect(StatusCode::FOUND, &location)
        }
        // A signed-in user on a `guest` page: the page is public, let it through.
        Ok(Admission::Redirect(_)) => allowed(None, asked, config, claim_headers, ingress),
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
    claim_headers: &[HeaderName],
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
        envoy_removals(headers, claim_headers);
    }
    response
}

/// Envoy only overwrites the upstream headers an answer sets, and sends Portcullis only the
/// client headers its recipe allows: every header Portcullis may set (`X-Auth-Request-User`,
/// `-Email`, each claim header) that this answer does not set is named for removal, whatever
/// the check request carried, and so is `Cookie` when nothing of it is left for the upstream.
fn envoy_removals(headers: &mut HeaderMap, claim_headers: &[HeaderName]) {
    let mut remove: Vec<&str> = Vec::new();
    let mayset = [&X_AUTH_REQUEST_USER, &X_AUTH_REQUEST_EMAIL, &header::COOKIE];
    for name in mayset.into_iter().chain(claim_headers) {
        if !headers.contains_key(name) && !remove.contains(&name.as_str()) {
            remove.push(name.as_str());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&remove.join(", ")) {
        headers.insert(X_ENVOY_AUTH_HEADERS_TO_REMOVE, value);
    }
}

/// Copies each session cookie the answer sets into its own `X-Auth-Set-Cookie-*` header, on
/// an allowed answer (the ingresses copy only the headers their recipe names, and never to
/// the client) and on any answer to nginx (which never relays an answer's headers). A refusal
/// that Traefik, Caddy or Envoy relays gets none: page script can read every response header
/// but `Set-Cookie`, so a token there would defeat `HttpOnly`.
pub fn mirror_cookies(ingress: Ingress, response: &mut Response<Body>, session: &Session) {
    if !response.status().is_success() && ingress.relays_refusals() {
        return;
    }
    let headers = response.headers_mut();
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
