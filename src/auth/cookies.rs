//! Reading the proxy's cookies from a request and writing `Set-Cookie` values for them.
//!
//! Cookie headers are parsed by hand, borrowing from the request: this runs on every request
//! and must not allocate. Values written are checked for characters a cookie cannot carry and
//! for the 4096-byte limit browsers enforce, since a cookie the browser silently drops would
//! leave the user signed out with no error anywhere.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, COOKIE};

use crate::config::{SameSite, Session};

/// Browsers drop a cookie whose name, value and attributes pass 4096 bytes.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// Iterates over `(name, value)` pairs of every `Cookie` header, in order.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim(), value))
        })
}

/// The first cookie called `name`, if it has a non-empty value.
pub fn find<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    pairs(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Rewrites the `Cookie` headers without the cookies in `names`; drops the header if none remain.
pub fn strip(headers: &mut HeaderMap, names: &[&str]) {
    if !headers.contains_key(COOKIE) || !pairs(headers).any(|(n, _)| names.contains(&n)) {
        return;
    }
    let kept: Vec<&str> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n).trim();
            !pair.is_empty() && !names.contains(&name)
        })
        .collect();
    let joined = kept.join("; ");
    headers.remove(COOKIE);
    if !joined.is_empty() {
        if let Ok(value) = HeaderValue::try_from(joined) {
            headers.insert(COOKIE, value);
        }
    }
}

/// Why a value could not be set as a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("the token holds characters a cookie cannot carry")]
    BadCharacters,
    #[error("the cookie would exceed {MAX_COOKIE_BYTES} bytes")]
    TooLarge,
}

/// `Set-Cookie` for `name=value` with the session's attributes and `max_age`.
pub fn set(
    session: &Session,
    name: &str,
    value: &str,
    max_age: Duration,
) -> Result<HeaderValue, CookieError> {
    // RFC 6265 cookie-octets, which also excludes `;`, `,`, whitespace, quotes and controls.
    let allowed = |b: u8| {
        b == 0x21
            || (0x23..=0x2b).contains(&b)
            || (0x2d..=0x3a).contains(&b)
            || (0x3c..=0x5b).contains(&b)
            || (0x5d..=0x7e).contains(&b)
    };
    if value.is_empty() || !value.bytes().all(allowed) {
        return Err(CookieError::BadCharacters);
    }
    let line = render(session, name, value, max_age.as_secs());
    if line.len() > MAX_COOKIE_BYTES {
        return Err(CookieError::TooLarge);
    }
    HeaderValue::try_from(line).map_err(|_| CookieError::BadCharacters)
}

/// `Set-Cookie` that expires `name` now, with the same attributes it was set with.
pub fn clear(session: &Session, name: &str) -> HeaderValue {
    HeaderValue::try_from(render(session, name, "", 0))
        .expect("cookie names and domains are validated as header-safe at start-up")
}

fn render(session: &Session, name: &str, value: &str, max_age: u64) -> String {
    let same_site = match session.same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
        SameSite::None => "None",
    };
    let mut line =
        format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}");
    if session.secure {
        line.push_str("; Secure");
    }
    if let Some(domain) = &session.domain {
        line.push_str("; Domain=");
        line.push_str(domain);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(COOKIE, HeaderValue::from_str(line).expect("header"));
        }
        map
    }

    #[test]
    fn finds_the_first_cookie_by_exact_name() {
        let map = headers(&[
            "theme=dark; access_token=abc; access_token=def",
            "refresh_token=\"r1\"",
        ]);
        assert_eq!(find(&map, "access_token"), Some("abc"));
        assert_eq!(find(&map, "refresh_token"), Some("r1"));
        assert_eq!(find(&map, "access"), None);
        assert_eq!(find(&headers(&["access_token="]), "access_token"), None);
    }

    #[test]
    fn strips_only_the_named_cookies() {
        let mut map = headers(&["theme=dark; access_token=abc", "refresh_token=r; lang=en"]);
        strip(&mut map, &["access_token", "refresh_token"]);
        assert_eq!(
            map.get(COOKIE).map(|v| v.to_str().expect("ascii")),
            Some("theme=dark; lang=en")
        );
        let mut only_ours = headers(&["access_token=abc"]);
        strip(&mut only_ours, &["access_token"]);
        assert!(only_ours.get(COOKIE).is_none());
    }
}
