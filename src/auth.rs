//! Authentication and authorization: the only code that decides whether a request may go
//! upstream, and the only code that can say so.
//!
//! [`Authenticator::admit`] turns a routed request into an [`Admission`]. Forwarding needs a
//! [`Permit`], and a `Permit` can only be constructed in this module, so a request that was
//! not admitted cannot reach an upstream by construction.

pub mod backend;
pub mod cookies;
pub mod csrf;
pub mod jwks;
pub mod jwt;
pub mod login;
pub mod refresh;
mod revoke;
pub mod session_check;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::body::Body;
use crate::cluster::{Cluster, Revoked};
use crate::config::{Config, Session, TokenSources};
use crate::error::Error;
use crate::rules::{Auth, OnUnauthenticated, Rule};
use crate::upstream::HttpClient;
use crate::view::RequestView;
use backend::{BackendClient, Tokens};
use jwks::Jwks;
use jwt::{Claims, KeySet, Policy, Rejection, Verifier};
use refresh::{RefreshFailure, Refresher};
use session_check::SessionCheck;

/// Proof that a request was admitted, and what admitting it adds to the upstream request.
/// Only this module can construct one. (Renewed cookies are not part of it: they go out with
/// whatever response the request gets, admitted or not; see [`Authenticator::admit`].)
#[derive(Debug)]
pub struct Permit {
    /// `Authorization` for the upstream; `None` leaves the client's header as it is (public rules).
    authorization: Option<HeaderValue>,
    /// Identity headers filled from verified claims.
    identity: Vec<(HeaderName, HeaderValue)>,
    /// The verified claims (`required` rules).
    claims: Option<Arc<Claims>>,
}

impl Permit {
    fn public() -> Permit {
        Permit {
            authorization: None,
            identity: Vec::new(),
            claims: None,
        }
    }

    /// A permit carrying `authorization`, for unit tests of the header rewrite.
    #[cfg(test)]
    pub(crate) fn for_tests(authorization: Option<&'static str>) -> Permit {
        Permit {
            authorization: authorization.map(HeaderValue::from_static),
            identity: vec![(
                HeaderName::from_static("x-user-id"),
                HeaderValue::from_static("42"),
            )],
            claims: None,
        }
    }

    /// Writes the permit's headers into the upstream request. Runs after every client header
    /// that could forge or remove them has been stripped.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        for (name, value) in &self.identity {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Adjusts the upstream's response to a request the proxy authenticated. A shared cache
    /// must not hand a response to an `Authorization` request to anyone else unless it says
    /// `public`, `s-maxage` or `must-revalidate` (RFC 9111 §3.5); behind the proxy the cache
    /// only ever sees a cookie, so the proxy says `private` in the upstream's stead.
    pub fn apply_to_response(&self, headers: &mut HeaderMap) {
        if self.authorization.is_some() {
            crate::response::keep_from_shared_caches(headers);
        }
    }

    /// Whether the permit carries a bearer token (a `required` rule admitted it).
    pub fn is_authenticated(&self) -> bool {
        self.authorization.is_some()
    }

    /// A verified claim as a header value (strings as they are, other JSON as its text).
    pub fn claim_header(&self, claim: &str) -> Option<HeaderValue> {
        claim_value(self.claims.as_ref()?, claim)
    }
}

/// `claim` of `claims` as a header value; `None` when absent, null or not header-safe.
fn claim_value(claims: &Claims, claim: &str) -> Option<HeaderValue> {
    match claims.get(claim)? {
        serde_json::Value::String(s) => HeaderValue::try_from(s.as_str()).ok(),
        serde_json::Value::Null => None,
        other => HeaderValue::try_from(other.to_string()).ok(),
    }
}

/// What to do with a routed request.
#[derive(Debug)]
pub enum Admission {
    Forward(Permit),
    /// A signed-in user on a `guest` rule: send them here instead.
    Redirect(String),
}

/// Where a request's access token comes from (`jwt.from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'h> {
    /// The client's own `Authorization: Bearer` token: verified, never renewed, not subject
    /// to the CSRF guard.
    Header(&'h str),
    /// The access cookie (and the refresh cookie to renew it).
    Cookie,
    /// Nothing this configuration reads.
    Nothing,
}

/// Where a request's token is read from, per `jwt.from`: the client's own
/// `Authorization: Bearer` when that is allowed and present, else the cookie.
pub fn credential(from: TokenSources, headers: &HeaderMap) -> Credential<'_> {
    if from.authorization {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        if let Some(first) = values.next() {
            // `Bearer <token>`, the scheme in any case (RFC 9110 §11.1); `Bearer` alone is a
            // bearer credential without a token, which fails verification.
            let bearer = first.to_str().ok().and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
            match (bearer, values.next()) {
                // Two Authorization headers are ambiguous: an empty token fails verification.
                (Some(_), Some(_)) => return Credential::Header(""),
                (Some(token), None) => return Credential::Header(token.trim()),
                // Another scheme (Basic) is not a token for the proxy; it is replaced.
                (None, _) => {}
            }
        }
    }
    if from.cookie {
        Credential::Cookie
    } else {
        Credential::Nothing
    }
}

/// The CSRF guard's verdict on a request for a `required` route, and the site origin it was
/// compared with. Only an unsafe request that the session cookies would authenticate is
/// checked: one carrying its own bearer token, or no session at all, has nothing a forger
/// could borrow.
pub fn csrf_verdict(
    session: &Session,
    from: TokenSources,
    request: &RequestView<'_>,
) -> (csrf::Verdict, Option<csrf::Origin>) {
    if !session.csrf {
        return (csrf::Verdict::Pass("session.csrf = \"off\""), None);
    }
    if !csrf::is_unsafe(&request.method) {
        return (csrf::Verdict::Pass("a safe method"), None);
    }
    let has_session = cookies::find(request.headers, &session.access_cookie).is_some()
        || cookies::find(request.headers, &session.refresh_cookie).is_some();
    if credential(from, request.headers) != Credential::Cookie || !has_session {
        return (
            csrf::Verdict::Pass("not authenticated by the session cookies"),
            None,
        );
    }
    let site = csrf::Origin::of_view(request);
    let verdict = csrf::check(request.headers, site.as_ref(), &session.allowed_origins);
    (verdict, site)
}

/// A verified session: the access token's claims (which hold the token, [`Claims::token`]),
/// plus cookies to set if it was renewed.
#[derive(Debug)]
pub struct Verified {
    pub claims: Arc<Claims>,
    pub set_cookies: Vec<HeaderValue>,
}

/// Whether a request is a top-level page navigation (redirect to login) rather than an API
/// call (401): `Sec-Fetch-Mode: navigate`, or `Accept` with `text/html` and no `X-Requested-With`.
pub fn is_navigation(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(mode) = text("sec-fetch-mode") {
        return mode.eq_ignore_ascii_case("navigate");
    }
    if headers.contains_key("x-requested-with") {
        return false;
    }
    text("accept").is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// Whether an unauthenticated request on `rule` is sent to the login page (`true`) or gets
/// `401` (`false`).
pub fn redirects_to_login(rule: &Rule, headers: &HeaderMap) -> bool {
    match rule.on_unauthenticated {
        OnUnauthenticated::Redirect => true,
        OnUnauthenticated::Status => false,
        OnUnauthenticated::Auto => is_navigation(headers),
    }
}

/// The login page with `target` (normalized path and query) as its return parameter.
pub fn login_redirect(login: &crate::config::Login, target: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("{}?{}={encoded}", login.path, login.return_param)
}

/// Unix seconds now.
pub use crate::clock::unix_seconds as now;

/// Why a request could not be authenticated.
#[derive(Debug)]
pub enum Failure {
    /// No usable token (missing, forged, expired without a refresh cookie, …).
    Invalid(Rejection),
    /// The backend refused the refresh token: the session is over, clear its cookies.
    RefreshRejected,
    /// The backend could not be asked to refresh; the session may still be good.
    BackendDown(Error),
    /// The token (or its refresh token, or its subject) was revoked: clear its cookies.
    Revoked(Revoked),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Invalid(rejection) => write!(f, "{rejection}"),
            Failure::RefreshRejected => f.write_str("refresh token rejected by the backend"),
            Failure::BackendDown(err) => write!(f, "refresh impossible: {err}"),
            Failure::Revoked(why) => write!(f, "{why}"),
        }
    }
}

/// The request-time side of authentication: verifies tokens, renews them, admits requests,
/// and serves the proxy's own login, logout and "who am I" endpoints.
pub struct Authenticator {
    verifier: Verifier,
    /// Where more keys come from, when `jwt.jwks_url` is set.
    jwks: Option<Jwks>,
    session: Session,
    login: crate::config::Login,
    logout: crate::config::Logout,
    backend: Option<Arc<BackendClient>>,
    refresher: Option<Refresher>,
    /// `backend.session_check`: the backend's word on a session.
    session_check: Option<SessionCheck>,
    /// Revocations and counters, shared with other instances under `[cluster]`; outlives
    /// this `Authenticator` across reloads.
    cluster: Arc<Cluster>,
    from: TokenSources,
    /// How long a login body may take to arrive (`server.header_read_timeout`: it is as
    /// small as a head, and a connection waiting for it is held by nothing else).
    login_body_within: std::time::Duration,
}

impl Authenticator {
    pub fn new(
        config: &Config,
        client: HttpClient,
        cluster: Arc<Cluster>,
    ) -> Result<Authenticator, Error> {
        let keys = KeySet::build(&config.jwt.algorithms, &config.jwt.keys)
            .map_err(|err| Error::Internal(format!("jwt keys: {err}")))?;
        let policy = policy(config);
        let jwks = Jwks::new(&config.jwt, client.clone());
        let backend = config
            .backend
            .clone()
            .map(|backend| Arc::new(BackendClient::new(client, backend)));
        let refresher = backend.as_ref().and_then(|backend| {
            let uri = backend.config.refresh.clone()?;
            Some(Refresher::new(
                backend.clone(),
                uri,
                config.session.access_cookie.clone(),
                Arc::clone(&cluster),
                config.session.refreshes_per_minute,
            ))
        });
        // A revocation may need to last as long as a refresh cookie (plus leeway).
        cluster.revocations().saw_lifetime(
            config
                .session
                .refresh_max_age
                .saturating_add(config.jwt.leeway)
                .as_secs(),
        );
        let session_check = backend.as_ref().and_then(|backend| {
            let uri = backend.config.session_check.as_ref()?;
            Some(SessionCheck::new(
                backend.clone(),
                uri,
                &config.session,
                Arc::clone(&cluster),
            ))
        });
        Ok(Authenticator {
            verifier: Verifier::new(keys, policy),
            jwks,
            session: config.session.clone(),
            login: config.login.clone(),
            logout: config.logout.clone(),
            backend,
            refresher,
            session_check,
            cluster,
            from: config.jwt.from,
            login_body_within: config.server.header_read_timeout,
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The shared state this authenticator revokes and counts in.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Whether requests can be admitted: some verification key is loaded and, when
    /// `jwt.jwks_url` is set, its keys have been fetched at least once. `Err` says what is
    /// missing, for `/readyz`.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.jwks.as_ref().is_some_and(|jwks| !jwks.loaded()) {
            return Err("keys from jwt.jwks_url not loaded yet");
        }
        if self.verifier.keys().is_empty() {
            return Err("no verification keys loaded");
        }
        Ok(())
    }

    /// Keeps the JWKS keys fresh (fetch now, then every `jwt.jwks_refresh`). Never returns
    /// when `jwt.jwks_url` is set; returns at once otherwise. The caller drops it at shutdown.
    pub async fn maintain_keys(&self) {
        if let Some(jwks) = &self.jwks {
            jwks.maintain(&self.verifier).await;
        }
    }

    /// [`Verifier::verify`], plus one JWKS refetch (rate-limited) and one more attempt when no
    /// configured key matches the token: the backend may have rotated to a new `kid`.
    async fn verify(&self, token: &str) -> Result<Arc<Claims>, Rejection> {
        let generation = self.jwks.as_ref().map(Jwks::generation);
        match (self.verifier.verify(token, now()), &self.jwks, generation) {
            (Err(Rejection::UnknownKey), Some(jwks), Some(seen)) => {
                // Boxed, as every rare path that calls out: the request's future stays small.
                if Box::pin(jwks.refetch_for_unknown_key(&self.verifier, seen)).await {
                    self.verifier.verify(token, now())
                } else {
                    Err(Rejection::UnknownKey)
                }
            }
            (result, _, _) => result,
        }
    }

    /// Decides whether the request routed to `rule` may go upstream. The view's `target` (the
    /// normalized path with the original query) is the return path after login.
    ///
    /// A renewal spends the refresh token at the backend, so its cookies are handed to
    /// `renewed` as soon as it succeeds, whatever is decided next: the caller sends them with
    /// every response to this request (a `403`, an upstream `502`), or the browser would keep
    /// a refresh token that no longer works.
    pub async fn admit(
        &self,
        rule: &Rule,
        request: &RequestView<'_>,
        renewed: &mut Vec<HeaderValue>,
    ) -> Result<Admission, Error> {
        match rule.auth {
            Auth::Public => Ok(Admission::Forward(Permit::public())),
            // Only a token that is valid as it stands counts as signed in here. Renewing one
            // would spend the refresh token on a redirect that cannot carry the new cookies;
            // the page redirected to renews it properly.
            Auth::Guest if self.has_valid_token(request.headers) => {
                Ok(Admission::Redirect(self.login.success_redirect.clone()))
            }
            Auth::Guest => Ok(Admission::Forward(Permit::public())),
            Auth::Required => {
                if let csrf::Verdict::Refuse(reason) = self.csrf(request) {
                    return Err(Error::Csrf(reason));
                }
                let mut verified = match self
                    .authenticate_request(request.headers, request.client_ip)
                    .await
                {
                    Ok(verified) => verified,
                    Err(failure) => return Err(self.refuse(rule, request, failure)),
                };
                *renewed = std::mem::take(&mut verified.set_cookies);
                for (claim, allowed) in &rule.claims {
                    if !verified.claims.satisfies(claim, allowed) {
                        return Err(Error::Forbidden(
                            "the signed-in user may not access this resource",
                        ));
                    }
                }
                let identity = rule
                    .headers
                    .iter()
                    .filter_map(|(name, claim)| {
                        Some((name.clone(), claim_value(&verified.claims, claim)?))
                    })
                    .collect();
                Ok(Admission::Forward(Permit {
                    // Made once, when the token was verified (a cache hit copies nothing).
                    authorization: Some(verified.claims.bearer().clone()),
                    identity,
                    claims: Some(verified.claims),
                }))
            }
        }
    }

    /// [`csrf_verdict`] for a request, logged when it refuses.
    fn csrf(&self, request: &RequestView<'_>) -> csrf::Verdict {
        let (verdict, site) = csrf_verdict(&self.session, self.from, request);
        if let csrf::Verdict::Refuse(reason) = verdict {
            // Origins are public; saying both tells an operator behind a TLS-terminating proxy
            // what is missing (server.trusted_proxies, or session.allowed_origins).
            let origin = request.headers.get("origin").and_then(|v| v.to_str().ok());
            tracing::info!(
                reason,
                origin = origin.unwrap_or("-"),
                site = %site.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                "refusing an unsafe cookie-authenticated request from another origin"
            );
        }
        verdict
    }

    fn credential<'h>(&self, headers: &'h HeaderMap) -> Credential<'h> {
        credential(self.from, headers)
    }

    /// Authenticates a request by the credential `jwt.from` picks for it.
    async fn authenticate_request(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Verified, Failure> {
        match self.credential(headers) {
            Credential::Header(token) => match self.verify(token).await {
                Ok(claims) => {
                    // A client's own bearer token is revoked and checked like a cookie's.
                    self.check_revoked(token, &claims, now())?;
                    self.confirm_session(token, &claims, None, client).await?;
                    Ok(Verified {
                        claims,
                        set_cookies: Vec::new(),
                    })
                }
                Err(rejection) => Err(Failure::Invalid(rejection)),
            },
            Credential::Cookie => self.authenticate(headers, client).await,
            Credential::Nothing => Err(Failure::Invalid(Rejection::Malformed("no token"))),
        }
    }

    /// Whether the request's access cookie holds a token that verifies now, without renewal.
    fn has_valid_token(&self, headers: &HeaderMap) -> bool {
        let now = now();
        cookies::find(headers, &self.session.access_cookie).is_some_and(|token| {
            self.verifier
                .verify(token, now)
                .is_ok_and(|claims| self.check_revoked(token, &claims, now).is_ok())
        })
    }

    /// Verifies the access cookie of a request, renewing it through the backend when it has
    /// expired (or expires within `session.refresh_ahead`) and a refresh cookie is present.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Result<Verified, Failure> {
        let now = now();
        let (access, refresh) = match self.refresher {
            Some(_) => cookies::find_both(
                headers,
                &self.session.access_cookie,
                &self.session.refresh_cookie,
            ),
            None => (cookies::find(headers, &self.session.access_cookie), None),
        };
        let verdict = match access {
            Some(token) => Some((token, self.verify(token).await)),
            None => None,
        };
        match (verdict, refresh) {
            (Some((token, Ok(claims))), refresh) => {
                self.check_revoked(token, &claims, now)?;
                let expiring =
                    claims.exp() < now.saturating_add(self.session.refresh_ahead.as_secs());
                if let (true, Some(refresh)) = (expiring, refresh) {
                    // Renewal ahead of expiry is best effort: the current token is still good.
                    if let Ok(renewed) = Box::pin(self.renew(refresh, client)).await {
                        return Ok(renewed);
                    }
                }
                self.confirm_session(token, &claims, refresh, client)
                    .await?;
                Ok(Verified {
                    claims,
                    set_cookies: Vec::new(),
                })
            }
            // Expired (and otherwise genuine), or gone because its cookie lapsed: renew.
            (Some((token, Err(rejection))), Some(refresh)) if rejection.is_expired_only() => {
                // A revoked token stays revoked after it expires: it cannot be renewed.
                if !self.cluster.revocations().is_empty() {
                    if let Ok(claims) = self.verifier.verify_ignoring_exp(token, now) {
                        self.check_revoked(token, &claims, now)?;
                    }
                }
                Box::pin(self.renew(refresh, client)).await
            }
            (None, Some(refresh)) => Box::pin(self.renew(refresh, client)).await,
            (Some((_, Err(rejection))), _) => Err(Failure::Invalid(rejection)),
            (None, None) => Err(Failure::Invalid(Rejection::Malformed("no token"))),
        }
    }

    async fn renew(&self, refresh_token: &str, client: IpAddr) -> Result<Verified, Failure> {
        let Some(refresher) = &self.refresher else {
            return Err(Failure::Invalid(Rejection::Expired));
        };
        self.check_refresh_revoked(refresh_token, now())?;
        let tokens =
            refresher
                .refresh(refresh_token, client)
                .await
                .map_err(|failure| match failure {
                    RefreshFailure::Rejected => Failure::RefreshRejected,
                    unavailable => Failure::BackendDown(unavailable.into_error()),
                })?;
        let claims = self.verify(&tokens.access).await.map_err(|rejection| {
            Failure::BackendDown(Error::BackendUnavailable(format!(
                "refreshed token does not verify: {rejection}"
            )))
        })?;
        // Issued in the very second its subject was revoked (or renewed with a refresh token
        // that cannot show it was issued after that): still refused, and no cookies set.
        self.check_revoked(&tokens.access, &claims, now())?;
        self.check_renewed(refresh_token, &claims, now())?;
        let set_cookies = self
            .session_cookies_for_refresh(&tokens)
            .map_err(Failure::BackendDown)?;
        Ok(Verified {
            claims,
            set_cookies,
        })
    }

    /// Cookies after a refresh: the refresh cookie is replaced only when a new one was issued.
    fn session_cookies_for_refresh(&self, tokens: &Tokens) -> Result<Vec<HeaderValue>, Error> {
        let mut set = self.session_cookies(tokens)?;
        if tokens.refresh.is_none() {
            set.pop();
        }
        Ok(set)
    }

    /// `Set-Cookie` values that expire both session cookies.
    fn cleared_session(&self) -> Vec<HeaderValue> {
        [&self.session.access_cookie, &self.session.refresh_cookie]
            .into_iter()
            .map(|name| cookies::clear(&self.session, name))
            .collect()
    }

    /// The refusal for an unauthenticated request on `rule`: a redirect to the login page for
    /// page navigations, `401` for API calls.
    fn refuse(&self, rule: &Rule, request: &RequestView<'_>, failure: Failure) -> Error {
        let navigation = redirects_to_login(rule, request.headers);
        let clear_cookies = match &failure {
            Failure::RefreshRejected | Failure::Revoked(_) => self.cleared_session(),
            Failure::BackendDown(_) if !navigation => {
                // An API call cannot be sent to log in; say the backend is the problem.
                let Failure::BackendDown(err) = failure else {
                    unreachable!("matched above")
                };
                return err;
            }
            _ => Vec::new(),
        };
        let login = navigation.then(|| login_redirect(&self.login, &request.target));
        Error::Unauthenticated {
            reason: failure.to_string(),
            login,
            clear_cookies,
        }
    }

    /// `GET session.me_path`: the verified claims, or the backend's profile when configured.
    /// Renewed cookies are handed to `renewed`, as in [`Authenticator::admit`].
    pub async fn me(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        renewed: &mut Vec<HeaderValue>,
    ) -> Result<http::Response<Body>, Error> {
        let mut verified = self
            .authenticate_request(headers, client)
            .await
            .map_err(|failure| {
                let clear_cookies = match failure {
                    Failure::RefreshRejected | Failure::Revoked(_) => self.cleared_session(),
                    // The session may be fine; say the backend is the problem (502/504).
                    Failure::BackendDown(err) => return err,
                    Failure::Invalid(_) => Vec::new(),
                };
                Error::Unauthenticated {
                    reason: failure.to_string(),
                    login: None,
                    clear_cookies,
                }
            })?;
        *renewed = std::mem::take(&mut verified.set_cookies);
        let profile = match (
            &self.backend,
            self.backend
                .as_ref()
                .and_then(|b| b.config.profile.as_ref()),
        ) {
            (Some(backend), Some(uri)) => {
                let answer = backend.get(uri, Some(verified.claims.token())).await?;
                if !answer.status.is_success() {
                    return Err(Error::BackendUnavailable(format!(
                        "profile answered {}",
                        answer.status
                    )));
                }
                serde_json::from_slice::<serde_json::Value>(&answer.body)
                    .map_err(|_| Error::BackendUnavailable("profile answer is not JSON".into()))?
            }
            _ => serde_json::Value::Object(verified.claims.as_json().clone()),
        };
        let mut response = http::Response::new(crate::body::json(&profile));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
}

/// The claim policy every access token is held to, from `[jwt]`.
pub fn policy(config: &Config) -> Policy {
    Policy {
        algorithms: config.jwt.algorithms.clone(),
        issuer: config.jwt.issuer.clone(),
        audience: config.jwt.audience.clone(),
        leeway_secs: config.jwt.leeway.as_secs(),
        required_claims: config.jwt.claims.clone(),
        cache_entries: config.jwt.cache,
    }
}

/// Whose token it is, for subject revocations.
pub use crate::cluster::revocations::subject;
