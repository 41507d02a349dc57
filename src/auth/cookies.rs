//! Writing `Set-Cookie` values for the proxy's cookies (reading the request's `Cookie` header
//! is [`crate::cookie_header`]'s job, below both auth and upstream).
//!
//! Values written are checked for characters a cookie cannot carry and for the 4096-byte limit
//! browsers enforce, since a cookie the browser silently drops would leave the user signed out
//! with no error anywhere.

use std::time::Duration;

use http::header::HeaderValue;

use crate::config::{SameSite, Session};
pub use crate::cookie_header::{find, find_both, pairs};

/// Browsers drop a cookie whose name, value and attributes pass 4096 bytes.
pub const MAX_COOKIE_BYTES: usize = 4096;

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
