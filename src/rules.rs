//! Routing rules: which rule a request's host and normalized path belong to. Pure and
//! allocation-free per request.
//!
//! Patterns use Next.js matcher syntax (`/x/:path*`, `/x/:path+`, `/x/:id`, `/x/:id?`) or globs
//! (`/x/**`, `/x/*`), with `/` as the only separator. Rules are tried in configuration order and
//! the first match wins. Matching ignores one trailing `/`, so `/admin/` is guarded exactly like
//! `/admin`; literals are spelt the way paths are normalized; `required` rules ignore ASCII case.
//! A rule's optional host is exact or `*.example.com` (one or more labels), compared without
//! regard to ASCII case, port or one trailing dot; a rule without one takes any host.

use std::fmt;

use http::HeaderName;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone; the request is forwarded as it is.
    Public,
    /// A verified access token, or the request is refused.
    Required,
    /// Only signed-out users: a signed-in user is sent to `login.success_redirect`.
    Guest,
}

/// What a `required` rule answers a request without a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnauthenticated {
    /// `302` to the login page.
    Redirect,
    /// `401` JSON.
    Status,
    /// Redirect for top-level navigations, `401` for everything else.
    Auto,
}

/// A compiled `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Position in the configuration (`routes[index]`), for logs and `explain`.
    pub index: usize,
    /// The host the rule is restricted to; `None` takes any host.
    pub host: Option<HostPattern>,
    pub pattern: Pattern,
    pub auth: Auth,
    pub on_unauthenticated: OnUnauthenticated,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Claims a verified token must also satisfy: `(claim, allowed values)`.
    pub claims: Vec<(String, Vec<String>)>,
    /// Upstream headers filled from verified claims: `(header, claim)`.
    pub headers: Vec<(HeaderName, String)>,
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Exactly this text.
    Literal(String),
    /// Any one non-empty segment (`:id`, `*`).
    One,
    /// Zero or one segment (`:id?`).
    Optional,
    /// Any number of segments, at least `min` (`:path*`, `**` → 0; `:path+` → 1).
    Rest { min: usize },
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Pattern, String> {
        if !source.starts_with('/') {
            return Err("a pattern starts with /".to_owned());
        }
        let mut segments = Vec::new();
        let body = crate::path::without_trailing_slash(source);
        let parts: Vec<&str> = if body == "/" {
            Vec::new()
        } else {
            body[1..].split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let segment = if let Some(name) = part.strip_prefix(':') {
                let (name, segment) = match name.as_bytes().last() {
                    Some(b'*') => (&name[..name.len() - 1], Segment::Rest { min: 0 }),
                    Some(b'+') => (&name[..name.len() - 1], Segment::Rest { min: 1 }),
                    Some(b'?') => (&name[..name.len() - 1], Segment::Optional),
                    _ => (name, Segment::One),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "{part:?} is not a parameter like :id, :path* or :path+"
                    ));
                }
                segment
            } else if *part == "**" {
                Segment::Rest { min: 0 }
            } else if *part == "*" {
                Segment::One
            } else if part.is_empty() {
                return Err("empty segment (//) in pattern".to_owned());
            } else if part.contains(['*', '?', '(', ')', '{', '}']) {
                return Err(format!(
                    "{part:?}: wildcards and parameters must be a whole segment"
                ));
            } else if *part == "." || *part == ".." {
                return Err("dot segments are not allowed in a pattern".to_owned());
            } else {
                // A literal is spelt the way request paths are normalized (`%40` → `@`,
                // `é` → `%C3%A9`), or it could never match the path it names.
                let canonical =
                    crate::path::normalize(&percent_encode_non_ascii(&format!("/{part}")))
                        .map_err(|err| format!("{part:?}: {err}"))?;
                let canonical = canonical.strip_prefix('/').unwrap_or(&canonical);
                if canonical.is_empty() || canonical.contains('/') {
                    return Err(format!("{part:?} is not a single path segment"));
                }
                Segment::Literal(canonical.to_owned())
            };
            if matches!(segment, Segment::Rest { .. } | Segment::Optional) && !last {
                return Err(format!("{part:?} may only be the last segment"));
            }
            segments.push(segment);
        }
        Ok(Pattern {
            source: source.to_owned(),
            segments,
        })
    }

    /// Whether the normalized `path` matches. One trailing `/` is ignored.
    pub fn matches(&self, path: &str) -> bool {
        self.matches_with(path, false)
    }

    /// Like [`Pattern::matches`], comparing literal segments without regard to ASCII case
    /// when `ignore_case` is set.
    pub fn matches_with(&self, path: &str, ignore_case: bool) -> bool {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let mut parts = segments(trimmed);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => {
                    let same = |part: &str| {
                        if ignore_case {
                            part.eq_ignore_ascii_case(text)
                        } else {
                            part == text
                        }
                    };
                    if !parts.next().is_some_and(same) {
                        return false;
                    }
                }
                Segment::One => match parts.next() {
                    Some(part) if !part.is_empty() => {}
                    _ => return false,
                },
                Segment::Optional => {
                    return parts.next().is_none_or(|p| !p.is_empty()) && parts.next().is_none()
                }
                Segment::Rest { min: 0 } => return true,
                Segment::Rest { min } => return parts.filter(|p| !p.is_empty()).count() >= *min,
            }
        }
        parts.next().is_none()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether every path this pattern matches is also matched by `self` (used by the linter
    /// to find rules that an earlier rule shadows). Conservative: `false` when unsure.
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut theirs = other.segments.iter();
        for ours in &self.segments {
            match ours {
                Segment::Rest { min: 0 } => return true,
                Segment::Rest { min } => {
                    let rest: Vec<&Segment> = theirs.collect();
                    return rest.len() >= *min
                        && !rest
                            .iter()
                            .any(|s| matches!(s, Segment::Optional | Segment::Rest { min: 0 }));
                }
                Segment::One => match theirs.next() {
                    Some(Segment::Literal(_) | Segment::One) => {}
                    _ => return false,
                },
                Segment::Optional => {
                    return matches!(
                        theirs.next(),
                        None | Some(Segment::Literal(_) | Segment::One | Segment::Optional)
                    ) && theirs.next().is_none()
                }
                Segment::Literal(text) => match theirs.next() {
                    Some(Segment::Literal(t)) if t == text => {}
                    _ => return false,
                },
            }
        }
        theirs.next().is_none()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A rule's host: exactly one name, or every name under a domain (`*.example.com` takes
/// `a.example.com` and `a.b.example.com`, not `example.com`). Stored lower-case, without a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix with its leading dot: `.example.com`.
    Subdomains(String),
}

impl HostPattern {
    /// Compiles `app.example.com` or `*.example.com`; the error says what is wrong.
    pub fn parse(source: &str) -> Result<HostPattern, String> {
        let lower = source.to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        let is_ip = name.parse::<std::net::IpAddr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        let is_name = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !(is_name || is_ip && !wildcard) {
            return Err(format!(
                "{source:?} is not a host name like \"app.example.com\" or \"*.example.com\" (no port, no scheme)"
            ));
        }
        Ok(if wildcard {
            HostPattern::Subdomains(format!(".{name}"))
        } else if let Ok(std::net::IpAddr::V6(v6)) = name.parse::<std::net::IpAddr>() {
            HostPattern::Exact(format!("[{v6}]"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether `host` (a request's host without its port or trailing dot, any case) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            // An IPv6 literal has many spellings (`[::1]`, `[0::1]`): compare addresses.
            HostPattern::Exact(name) if name.starts_with('[') => {
                let address = |text: &str| {
                    text.strip_prefix('[')?
                        .strip_suffix(']')?
                        .parse::<std::net::Ipv6Addr>()
                        .ok()
                };
                address(host).is_some() && address(host) == address(name)
            }
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Whether every host `other` matches is also matched by `self`.
    pub fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(_), HostPattern::Subdomains(_)) => false,
            (HostPattern::Subdomains(_), HostPattern::Exact(name)) => self.matches(name),
            (HostPattern::Subdomains(a), HostPattern::Subdomains(b)) => b.ends_with(a.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl Rule {
    /// Whether this rule takes the normalized `path` on `host` (as [`crate::view::Host::matchable`]
    /// gives it). A `required` rule ignores ASCII case: many upstreams route `/Admin` like
    /// `/admin` (Express and ASP.NET by default), so a guard that only knew one spelling could
    /// be walked around.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(host))
            && self.pattern.matches_with(path, self.auth == Auth::Required)
    }

    /// Whether every request `other` takes is also taken by `self` (so a later `other` never
    /// matches). Conservative: `false` when unsure.
    pub fn covers(&self, other: &Rule) -> bool {
        let hosts = match (&self.host, &other.host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(ours), Some(theirs)) => ours.covers(theirs),
        };
        hosts && self.pattern.covers(&other.pattern)
    }
}

/// The first rule that takes the normalized `path` on `host`.
pub fn route<'r>(rules: &'r [Rule], host: &str, path: &str) -> Option<&'r Rule> {
    rules.iter().find(|rule| rule.matches(host, path))
}

/// What `path.split('/').skip(1)` yields, found byte by byte: request paths are short, and a
/// plain loop is several times cheaper here than the general string search behind `split`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path
        .bytes()
        .position(|b| b == b'/')
        .map(|first| &path[first + 1..]);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.bytes().position(|b| b == b'/') {
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

/// Escapes non-ASCII characters so a pattern written with `é` normalizes like a request.
fn percent_encode_non_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
