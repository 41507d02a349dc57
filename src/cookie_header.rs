//! The request's `Cookie` header: finding a cookie and stripping the proxy's own before a
//! request goes upstream.
//!
//! Cookie headers are parsed by hand, borrowing from the request: this runs on every request
//! and must not allocate. Lines are split as bytes, so a cookie that is not ASCII hides nothing
//! else on its line.

use http::header::{Entry, HeaderMap, HeaderValue, COOKIE};

/// Iterates over `(name, value)` pairs of every `Cookie` header, in order. Lines are split
/// as bytes, so a cookie whose value is not ASCII (a site's own `lang=café`) hides nothing
/// else on its line; a pair that is not UTF-8 is skipped.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    raw_pairs(headers).filter_map(|(name, value)| {
        Some((
            std::str::from_utf8(name).ok()?,
            std::str::from_utf8(value).ok()?,
        ))
    })
}

/// Every `name=value` pair of every `Cookie` header as bytes: trimmed, quotes removed from the
/// value. Pairs without `=` are skipped.
fn raw_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|line| pieces(line.as_bytes()))
        .filter_map(|pair| {
            let eq = memchr::memchr(b'=', pair)?;
            let value = pair[eq + 1..].trim_ascii();
            let value = value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value);
            Some((pair[..eq].trim_ascii(), value))
        })
}

/// The first cookie called `name`, if it has a non-empty UTF-8 value.
pub fn find<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    raw_pairs(headers)
        .find(|(n, _)| *n == name.as_bytes())
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
        .filter(|value| !value.is_empty())
}

/// The first cookies called `first` and `second` (see [`find`]), in one pass over the lines.
pub fn find_both<'h>(
    headers: &'h HeaderMap,
    first: &str,
    second: &str,
) -> (Option<&'h str>, Option<&'h str>) {
    let (mut a, mut b) = (None, None);
    for (name, value) in raw_pairs(headers) {
        if a.is_none() && name == first.as_bytes() {
            a = Some(value);
        } else if b.is_none() && name == second.as_bytes() {
            b = Some(value);
        }
        if a.is_some() && b.is_some() {
            break;
        }
    }
    let usable = |value: Option<&'h [u8]>| {
        value
            .and_then(|value| std::str::from_utf8(value).ok())
            .filter(|value| !value.is_empty())
    };
    (usable(a), usable(b))
}

/// Rewrites the `Cookie` headers into one line without the cookies in `names`; drops the
/// header if none remain. Works on bytes, so that no line is passed on whole (with the proxy's cookies in it)
/// just because another cookie on it is not ASCII.
pub fn strip(headers: &mut HeaderMap, names: &[&str]) {
    let ours = |name: &[u8]| names.iter().any(|n| n.as_bytes() == name);
    // One lookup: the lines are walked, replaced or removed through the entry it found.
    let Entry::Occupied(mut lines) = headers.entry(COOKIE) else {
        return;
    };
    let (mut any_ours, mut any_other) = (false, false);
    for pair in lines.iter().flat_map(|line| pieces(line.as_bytes())) {
        let pair = pair.trim_ascii();
        if ours(pair_name(pair)) {
            any_ours = true;
        } else if !pair.is_empty() {
            any_other = true;
        }
    }
    // HTTP/2 clients send one cookie per header field; an HTTP/1.1 upstream expects them in
    // one line (RFC 9113 §8.2.3), so several lines are always joined.
    if !any_ours && lines.iter().nth(1).is_none() {
        return;
    }
    // Only the proxy's cookies (an API client's request): nothing to join.
    if !any_other {
        lines.remove_entry_mult();
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for line in lines.iter() {
        for pair in pieces(line.as_bytes()) {
            let pair = pair.trim_ascii();
            if pair.is_empty() || ours(pair_name(pair)) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    // Not empty (`any_other`). The bytes came from header values and only `; ` was added, so
    // this cannot fail; an insert replaces every line.
    match HeaderValue::from_bytes(&kept) {
        Ok(value) => {
            lines.insert(value);
        }
        Err(_) => {
            lines.remove_entry_mult();
        }
    }
}

/// The `;`-separated pieces of one `Cookie` line. Found with `memchr`: a line holds a token
/// of several hundred bytes, and this runs on every request.
fn pieces(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b';', current) {
            Some(at) => {
                rest = Some(&current[at + 1..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The name of one `name=value` pair (the whole pair when it has no `=`), trimmed.
fn pair_name(pair: &[u8]) -> &[u8] {
    memchr::memchr(b'=', pair)
        .map_or(pair, |eq| &pair[..eq])
        .trim_ascii()
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
    fn finding_both_agrees_with_finding_each() {
        let lines: [&[&str]; 5] = [
            &[
                "theme=dark; access_token=abc; access_token=def",
                "refresh_token=\"r1\"",
            ],
            &["refresh_token=r; access_token=a"],
            &["access_token=; refresh_token=r; access_token=late"],
            &["refresh_token=r1; refresh_token=r2"],
            &["theme=dark"],
        ];
        for line in lines {
            let map = headers(line);
            assert_eq!(
                find_both(&map, "access_token", "refresh_token"),
                (find(&map, "access_token"), find(&map, "refresh_token")),
                "{line:?}"
            );
        }
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
        // HTTP/2 sends one cookie per field: joined into one line even when none is ours.
        let mut split = headers(&["a=1", "b=2"]);
        strip(&mut split, &["access_token"]);
        assert_eq!(split.get_all(COOKIE).iter().count(), 1);
        assert_eq!(
            split.get(COOKIE).map(|v| v.to_str().expect("ascii")),
            Some("a=1; b=2")
        );
    }

    #[test]
    fn a_non_ascii_cookie_hides_nothing_else_on_its_line() {
        let line = HeaderValue::from_bytes("lang=café; access_token=abc; x=\u{ff}".as_bytes())
            .expect("obs-text is a valid header value");
        let mut map = HeaderMap::new();
        map.append(COOKIE, line);
        map.append(
            COOKIE,
            HeaderValue::from_static("refresh_token=r; theme=dark"),
        );
        assert_eq!(find(&map, "access_token"), Some("abc"));
        assert_eq!(find(&map, "refresh_token"), Some("r"));
        assert_eq!(find(&map, "lang"), Some("café"));
        strip(&mut map, &["access_token", "refresh_token"]);
        assert_eq!(
            map.get(COOKIE).map(HeaderValue::as_bytes),
            Some("lang=café; x=\u{ff}; theme=dark".as_bytes())
        );
    }
}
