//! Request-path normalization: the one place that decides what path a request is for.
//!
//! Rules match the normalized path and exactly that path goes upstream, so a request can never
//! be matched as one path and served as another. Normalization gives every path one
//! spelling — characters allowed plain in a path (RFC 3986 `pchar`) are decoded once, all
//! others are escaped with upper-case hex — resolves dot segments as RFC 3986 §5.2.4 does (an
//! empty segment counts: `/a//../b` is `/a/b`, as WHATWG URL parsers read it too) and then
//! merges `//`. Anything whose meaning differs between servers — an encoded `/` or `\`, a raw
//! `\`, `;` path parameters, NUL and other control bytes, invalid UTF-8, a raw `#` — is
//! refused rather than guessed at.
//!
//! [`normalize`] is for a request the proxy forwards itself: what it decided on is what the
//! upstream gets. [`normal`] is for a request someone else forwards as it was sent (forward
//! auth): a path that only means the decided one after dot segments are resolved or `//`
//! merged is refused, since the upstream may read the raw path another way.

use std::fmt;

/// Why a path was refused. Every variant becomes a `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotOriginForm,
    EncodedSlash,
    Backslash,
    Control,
    PathParameter,
    BadEscape,
    InvalidUtf8,
    AmbiguousSegment,
    Fragment,
    NotNormal,
}

impl PathError {
    /// What is wrong, in words fit for a client.
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "the request target must be a path",
            PathError::EncodedSlash => "encoded slash or backslash in the path",
            PathError::Backslash => "backslash in the path",
            PathError::Control => "control character or space in the path",
            PathError::PathParameter => "path parameters (;) are not accepted",
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::InvalidUtf8 => "the path is not valid UTF-8",
            PathError::AmbiguousSegment => "a path segment ends with a dot or a space",
            PathError::Fragment => "a fragment (#) in the request target",
            PathError::NotNormal => "dot segments (. or ..) or empty segments (//) in the path",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

/// Returns the normalized form of `raw`, the path component of a request target (no query,
/// no fragment: a raw `#` is refused).
///
/// The result starts with `/`, has no empty, `.` or `..` segments, keeps a trailing `/`, and
/// writes `pchar` characters plain and every other byte escaped (with upper-case hex digits).
/// Normalizing a normalized path returns it unchanged.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let spelled = spelling(raw)?;
    let normalized = remove_dot_segments(&spelled);
    refuse_ambiguous_segments(&normalized)?;
    Ok(normalized)
}

/// `raw` in its one spelling, if it is already normal: no `.` or `..` segment (written plain or
/// as `%2e`) and no empty segment but a trailing `/`; else [`PathError::NotNormal`]. For paths
/// the proxy decides on but does not forward itself (forward auth), where the upstream gets
/// `raw` as the client sent it and may resolve it differently (RFC 3986, WHATWG URL, or not at
/// all, as routers matching the raw path do).
pub fn normal(raw: &str) -> Result<String, PathError> {
    let spelled = spelling(raw)?;
    if remove_dot_segments(&spelled) != spelled {
        return Err(PathError::NotNormal);
    }
    refuse_ambiguous_segments(&spelled)?;
    Ok(spelled)
}

fn spelling(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    canonical_bytes(raw.as_bytes())
}

/// Some servers trim a trailing dot or space from a segment (`/admin.` or `/admin%20` served
/// as `/admin`): such a segment has two meanings, so it is refused.
fn refuse_ambiguous_segments(path: &str) -> Result<(), PathError> {
    if path
        .split('/')
        .any(|segment| segment.ends_with('.') || segment.ends_with("%20"))
    {
        return Err(PathError::AmbiguousSegment);
    }
    Ok(())
}

/// Whether `raw` is already in the form [`normalize`] gives, so that normalizing it would
/// return it unchanged: a `/`, then segments of plain `pchar` characters (no `%` escape at all)
/// separated by single `/`s, none of them ending with `.` (which covers `.` and `..`). One pass
/// over the bytes and no allocation: the path of nearly every request takes it. Conservative:
/// `false` sends a path to [`normalize`], which decides.
pub fn is_normal_form(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    // `previous` is the byte before the current one; a segment ends at a `/` or at the end.
    let mut previous = b'/';
    for &byte in &bytes[1..] {
        if byte == b'/' {
            if previous == b'/' || previous == b'.' {
                return false;
            }
        } else if !is_pchar(byte) {
            return false;
        }
        previous = byte;
    }
    previous != b'.'
}

/// `path` without one trailing `/` (the root stays `/`): rules and the proxy's own endpoints
/// treat `/admin/` as `/admin`.
pub fn without_trailing_slash(path: &str) -> &str {
    path.strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path)
}

/// Gives the path its one spelling and rejects every ambiguous byte.
fn canonical_bytes(raw: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    // Every byte the path stands for, escapes decoded, to check that the whole is UTF-8.
    let mut utf8_check = Vec::new();
    let mut needs_utf8_check = false;
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        match byte {
            b'%' => {
                let (hi, lo) = match (raw.get(i + 1), raw.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => (hex(hi), hex(lo)),
                    _ => return Err(PathError::BadEscape),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let value = hi << 4 | lo;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    0..=0x1f | 0x7f => return Err(PathError::Control),
                    b';' => return Err(PathError::PathParameter),
                    _ if is_pchar(value) => out.push(char::from(value)),
                    _ => push_escaped(&mut out, value),
                }
                if value >= 0x80 {
                    needs_utf8_check = true;
                }
                utf8_check.push(value);
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            // `http::Uri` cuts a fragment off before the path is seen; anywhere else a raw `#`
            // is read as the start of one by some and as part of the path by others.
            b'#' => return Err(PathError::Fragment),
            0..=0x20 | 0x7f => return Err(PathError::Control),
            0x80..=0xff => return Err(PathError::InvalidUtf8),
            _ => {
                // A character that has to be escaped in a path (`"`, `{`, `|`, …) is written
                // escaped, so that it has one spelling whichever way the client sent it.
                if byte == b'/' || is_pchar(byte) {
                    out.push(char::from(byte));
                } else {
                    push_escaped(&mut out, byte);
                }
                utf8_check.push(byte);
                i += 1;
            }
        }
    }
    if needs_utf8_check && std::str::from_utf8(&utf8_check).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(out)
}

/// RFC 3986 §5.2.4, then merging of empty segments: `/a/./b/../c//d` → `/a/c/d`. An empty
/// segment is a segment while dot segments are resolved (`/a//../b` → `/a/b`, not `/b`), as
/// the RFC and WHATWG URL parsers (browsers, Node) have it.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in segments.iter().filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.last() == Some(&"") || out.is_empty() {
        out.push('/');
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 `pchar` without `;` (refused): unreserved, sub-delims, `:` and `@`. These are
/// always written plain; every other byte is always escaped. So a path has one spelling.
fn is_pchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn push_escaped(out: &mut String, byte: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(byte & 0xf)]));
}

#[cfg(test)]
mod tests;
