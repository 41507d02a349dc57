//! Cross-site request forgery on the cookie-to-bearer path.
//!
//! An API that took a bearer token was immune to CSRF: a browser never attaches one on its
//! own. Behind the proxy the same API is opened by a cookie, which a browser does attach to a
//! request another site makes it send. So for the routes it guards the proxy owns CSRF: an
//! unsafe request (`POST`, `PUT`, `PATCH`, `DELETE`) authenticated by the cookie must come from
//! this site. The checks follow OWASP's CSRF cheat sheet: Fetch Metadata first
//! (`Sec-Fetch-Site`), then `Origin` against this site's own origin and
//! `session.allowed_origins`, and a request with neither (not a browser) passes. `SameSite`
//! alone is not enough: a sibling subdomain is the same *site*, `lax`/`none` are supported
//! settings, and older browsers ignore the attribute.

use std::fmt;

use http::header::HeaderMap;
use http::Method;

use crate::view::{Host, RequestView, Scheme};

/// An origin: scheme, host and port, compared exactly (the host without regard to ASCII case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    /// Lower-cased; an IPv6 literal keeps its brackets.
    host: String,
    port: u16,
}

impl Origin {
    /// Parses a serialized origin, `scheme://host[:port]` (what browsers send in `Origin`, and
    /// what `session.allowed_origins` lists). Only `http` and `https` origins exist for this
    /// purpose; anything else (`null`, a path, userinfo, another scheme) is `None`.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, authority) = text.split_once("://")?;
        Origin::from_authority(Scheme::parse(scheme)? == Scheme::Https, authority)
    }

    /// The origin of an absolute http(s) URL (a `Referer`).
    pub fn of_url(url: &http::Uri) -> Option<Origin> {
        let https = Scheme::parse(url.scheme_str()?)? == Scheme::Https;
        Origin::from_authority(https, url.authority()?.as_str())
    }

    /// The origin of a site reached as `https` or not at `authority` (`host[:port]`), read by
    /// the one host parser the request view uses: a DNS name, an IPv4 address or a bracketed
    /// IPv6 address, and a port from 1 to 65535. Anything else is no origin.
    pub fn from_authority(https: bool, authority: &str) -> Option<Origin> {
        let host = http::HeaderValue::from_str(authority)
            .ok()
            .and_then(|value| Host::parse(value).ok())?;
        let port = match host.port() {
            Some(port) => port,
            None if https => 443,
            None => 80,
        };
        Some(Origin {
            https,
            host: host.matchable().to_ascii_lowercase(),
            port,
        })
    }

    /// The origin a request reached the proxy at, as its view says: its scheme and host
    /// (`Host`, HTTP/2 `:authority`; a trusted proxy's `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`, or the ingress's in forward auth). `None` when the host is not one
    /// an origin can name.
    pub fn of_view(view: &RequestView<'_>) -> Option<Origin> {
        Origin::from_authority(view.scheme == Scheme::Https, view.host.as_str())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Whether `method` changes state, so that a forged one does harm: `POST`, `PUT`, `PATCH`,
/// `DELETE` (and any method a server does not define as safe).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The verdict on one request, with the reason the access log and `explain` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass(&'static str),
    Refuse(&'static str),
}

/// Whether an unsafe request authenticated by the cookie comes from this site (`site`, the
/// origin it reached the proxy at) or one of `allowed`.
pub fn check(headers: &HeaderMap, site: Option<&Origin>, allowed: &[Origin]) -> Verdict {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if let Some(fetch_site) = text("sec-fetch-site") {
        // Fetch Metadata decides when the browser sends it: `same-site` is refused too, since
        // a sibling subdomain is the same site but not this origin.
        return match fetch_site.trim().to_ascii_lowercase().as_str() {
            "same-origin" => Verdict::Pass("Sec-Fetch-Site: same-origin"),
            "none" => Verdict::Pass("Sec-Fetch-Site: none (the user's own navigation)"),
            "same-site" => Verdict::Refuse("Sec-Fetch-Site: same-site (another origin)"),
            "cross-site" => Verdict::Refuse("Sec-Fetch-Site: cross-site"),
            _ => Verdict::Refuse("Sec-Fetch-Site with an unknown value"),
        };
    }
    let Some(origin) = text("origin") else {
        return Verdict::Pass("no Origin or Sec-Fetch-Site: not a browser");
    };
    if origin.trim().eq_ignore_ascii_case("null") {
        return Verdict::Refuse("Origin: null (a sandboxed frame or a cross-site redirect)");
    }
    match Origin::parse(origin.trim()) {
        None => Verdict::Refuse("an Origin that is not an http(s) origin"),
        Some(origin) if site == Some(&origin) => Verdict::Pass("Origin is this site's origin"),
        Some(origin) if allowed.contains(&origin) => {
            Verdict::Pass("Origin is in session.allowed_origins")
        }
        Some(_) => Verdict::Refuse("Origin is another origin"),
    }
}

#[cfg(test)]
mod tests;
