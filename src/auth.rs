//! Authentication and authorization: the only code that decides whether a request may go
//! upstream, and the only code that can say so.
//!
//! [`Authenticator::admit`] turns a routed request into an [`Admission`]. Forwarding needs a
//! [`Permit`], and a `Permit` can only be constructed in this module, so a request that was
//! not admitted cannot reach an upstream by construction.

pub mod cookies;
pub mod jwt;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::config::{Config, Session};
use crate::error::Error;
use crate::rules::{Auth, OnUnauthenticated, Rule};
use jwt::{Claims, KeySet, Policy, Rejection, Verifier};

/// Proof that a request was admitted, and what admitting it adds to the upstream request and
/// to the downstream response. Only this module can construct one.
#[derive(Debug)]
pub struct Permit {
    /// `Authorization` for the upstream; `None` leaves the client's header as it is (public rules).
    authorization: Option<HeaderValue>,
    /// Identity headers filled from verified claims.
    identity: Vec<(HeaderName, HeaderValue)>,
    /// `Set-Cookie` values for the response (renewed tokens).
    set_cookies: Vec<HeaderValue>,
}

impl Permit {
    fn public() -> Permit {
        Permit {
            authorization: None,
            identity: Vec::new(),
            set_cookies: Vec::new(),
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
            set_cookies: Vec::new(),
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

    /// Adds the permit's cookies to the downstream response.
    pub fn apply_to_response(&self, headers: &mut HeaderMap) {
        for cookie in &self.set_cookies {
            headers.append(header::SET_COOKIE, cookie.clone());
        }
    }
}

/// What to do with a routed request.
#[derive(Debug)]
pub enum Admission {
    Forward(Permit),
    /// A signed-in user on a `guest` rule: send them here instead.
    Redirect(String),
}

/// A verified session: the access token and its claims, plus cookies to set if it was renewed.
#[derive(Debug)]
pub struct Verified {
    pub token: String,
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

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The request-time side of authentication: verifies tokens and admits requests.
pub struct Authenticator {
    verifier: Verifier,
    session: Session,
    login_path: String,
    return_param: String,
    success_redirect: String,
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Authenticator, Error> {
        let keys = KeySet::build(&config.jwt.algorithms, &config.jwt.keys)
            .map_err(|err| Error::Internal(format!("jwt keys: {err}")))?;
        let policy = Policy {
            algorithms: config.jwt.algorithms.clone(),
            issuer: config.jwt.issuer.clone(),
            audience: config.jwt.audience.clone(),
            leeway_secs: config.jwt.leeway.as_secs(),
            required_claims: config.jwt.claims.clone(),
            cache_entries: config.jwt.cache,
        };
        Ok(Authenticator {
            verifier: Verifier::new(keys, policy),
            session: config.session.clone(),
            login_path: config.login.path.clone(),
            return_param: config.login.return_param.clone(),
            success_redirect: config.login.success_redirect.clone(),
        })
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Decides whether the request routed to `rule` may go upstream. `target` is the
    /// normalized path with the original query, used as the return path after login.
    pub async fn admit(
        &self,
        rule: &Rule,
        request: &Parts,
        target: &str,
    ) -> Result<Admission, Error> {
        match rule.auth {
            Auth::Public => Ok(Admission::Forward(Permit::public())),
            Auth::Guest => match self.authenticate(&request.headers).await {
                Ok(_) => Ok(Admission::Redirect(self.success_redirect.clone())),
                Err(_) => Ok(Admission::Forward(Permit::public())),
            },
            Auth::Required => {
                let verified = match self.authenticate(&request.headers).await {
                    Ok(verified) => verified,
                    Err(reason) => return Err(self.refuse(rule, request, target, reason)),
                };
                for (claim, allowed) in &rule.claims {
                    if !verified.claims.satisfies(claim, allowed) {
                        return Err(Error::Forbidden(
                            "the signed-in user may not access this resource",
                        ));
                    }
                }
                let authorization = HeaderValue::try_from(format!("Bearer {}", verified.token))
                    .map_err(|_| Error::Internal("verified token is not header-safe".to_owned()))?;
                let identity = rule
                    .headers
                    .iter()
                    .filter_map(|(name, claim)| {
                        let value = match verified.claims.get(claim)? {
                            serde_json::Value::String(s) => {
                                HeaderValue::try_from(s.as_str()).ok()?
                            }
                            serde_json::Value::Null => return None,
                            other => HeaderValue::try_from(other.to_string()).ok()?,
                        };
                        Some((name.clone(), value))
                    })
                    .collect();
                Ok(Admission::Forward(Permit {
                    authorization: Some(authorization),
                    identity,
                    set_cookies: verified.set_cookies,
                }))
            }
        }
    }

    /// Verifies the access cookie of a request.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Verified, Rejection> {
        let token = cookies::find(headers, &self.session.access_cookie)
            .ok_or(Rejection::Malformed("no token"))?;
        let claims = self.verifier.verify(token, now())?;
        Ok(Verified {
            token: token.to_owned(),
            claims,
            set_cookies: Vec::new(),
        })
    }

    /// The refusal for an unauthenticated request on `rule`: a redirect to the login page for
    /// page navigations, `401` for API calls.
    fn refuse(&self, rule: &Rule, request: &Parts, target: &str, reason: Rejection) -> Error {
        let redirect = match rule.on_unauthenticated {
            OnUnauthenticated::Redirect => true,
            OnUnauthenticated::Status => false,
            OnUnauthenticated::Auto => is_navigation(&request.headers),
        };
        let login = redirect.then(|| {
            let encoded: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
            format!("{}?{}={encoded}", self.login_path, self.return_param)
        });
        Error::Unauthenticated {
            reason: reason.to_string(),
            login,
            clear_cookies: Vec::new(),
        }
    }
}
