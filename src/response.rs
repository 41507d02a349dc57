//! Responses the proxy writes itself (redirects and small JSON answers) and what it says to
//! caches about responses, shared by the pipeline, the auth endpoints and forwarding so that
//! none of them reaches into another for it.

use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// A redirect to a same-site path the proxy chose (never one taken from the request as is).
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON answer that no cache may keep.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::json(value));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether a `Cache-Control` directive list (any number of header lines) holds one of `names`.
fn has_directive(headers: &HeaderMap, names: &[&str]) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|directive| directive.split('=').next().unwrap_or("").trim())
        .any(|directive| names.iter().any(|n| directive.eq_ignore_ascii_case(n)))
}

/// Makes an upstream's response to a request the proxy authenticated as uncacheable by shared
/// caches as the `Authorization` header it was sent with would have made it (RFC 9111 §3.5):
/// adds `private` unless the upstream allowed sharing explicitly (`public`, `s-maxage`,
/// `must-revalidate`) or already forbade it (`private`, `no-store`).
pub fn keep_from_shared_caches(headers: &mut HeaderMap) {
    const DECIDED: [&str; 5] = [
        "public",
        "s-maxage",
        "must-revalidate",
        "private",
        "no-store",
    ];
    // Most responses say nothing about caching: one lookup decides that, and adds the header.
    if let http::header::Entry::Vacant(absent) = headers.entry(CACHE_CONTROL) {
        absent.insert(HeaderValue::from_static("private"));
        return;
    }
    if has_directive(headers, &DECIDED) {
        return;
    }
    let existing: Vec<&str> = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if existing.is_empty() {
        HeaderValue::from_static("private")
    } else {
        HeaderValue::try_from(format!("{}, private", existing.join(", ")))
            .unwrap_or(HeaderValue::from_static("private"))
    };
    headers.insert(CACHE_CONTROL, value);
}

/// Whether the response sets (or clears) one of the cookies called `names`.
pub fn sets_cookie(headers: &HeaderMap, names: [&str; 2]) -> bool {
    headers.get_all(SET_COOKIE).iter().any(|line| {
        let line = line.as_bytes();
        names.iter().any(|name| {
            line.strip_prefix(name.as_bytes())
                .is_some_and(|rest| rest.first() == Some(&b'='))
        })
    })
}

/// `Cache-Control: private, no-store`, replacing whatever the response said: a response that
/// carries a session cookie must never be kept by any cache, or one user's token could be
/// handed to another.
pub fn never_cache(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_control(lines: &[&'static str]) -> String {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(CACHE_CONTROL, HeaderValue::from_static(line));
        }
        keep_from_shared_caches(&mut headers);
        let values: Vec<&str> = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect();
        values.join(" | ")
    }

    #[test]
    fn authenticated_responses_stay_out_of_shared_caches() {
        assert_eq!(cache_control(&[]), "private");
        assert_eq!(cache_control(&["max-age=600"]), "max-age=600, private");
        assert_eq!(
            cache_control(&["max-age=600", "no-transform"]),
            "max-age=600, no-transform, private"
        );
        // The upstream's explicit word stands (RFC 9111 §3.5).
        for kept in [
            "public, max-age=600",
            "s-maxage=60",
            "max-age=0, must-revalidate",
            "private, max-age=60",
            "no-store",
            "PUBLIC",
        ] {
            assert_eq!(cache_control(&[kept]), kept);
        }
    }

    #[test]
    fn session_cookies_are_recognised_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("theme=dark; Path=/"));
        assert!(!sets_cookie(&headers, ["access_token", "refresh_token"]));
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("access_token_old=x; Path=/"),
        );
        assert!(!sets_cookie(&headers, ["access_token", "refresh_token"]));
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("refresh_token=; Max-Age=0"),
        );
        assert!(sets_cookie(&headers, ["access_token", "refresh_token"]));
    }
}
