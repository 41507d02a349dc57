//! Routing rules: which rule a normalized path belongs to. Pure and allocation-free per request.
//!
//! Patterns use Next.js matcher syntax (`/x/:path*`, `/x/:path+`, `/x/:id`, `/x/:id?`) or globs
//! (`/x/**`, `/x/*`), with `/` as the only separator. Rules are tried in configuration order and
//! the first match wins. Matching ignores one trailing `/`, so `/admin/` is guarded exactly like
//! `/admin`.

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
        let body = source
            .strip_suffix('/')
            .filter(|s| !s.is_empty())
            .unwrap_or(source);
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
            } else if part.contains(['*', ':', '?', '(', ')', '{', '}', '\\', ';', '%']) {
                return Err(format!(
                    "{part:?}: wildcards and parameters must be a whole segment"
                ));
            } else if *part == "." || *part == ".." {
                return Err("dot segments are not allowed in a pattern".to_owned());
            } else {
                Segment::Literal((*part).to_owned())
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
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let mut parts = trimmed.split('/').skip(1);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => {
                    if parts.next() != Some(text.as_str()) {
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

/// The first rule whose pattern matches the normalized `path`.
pub fn route<'r>(rules: &'r [Rule], path: &str) -> Option<&'r Rule> {
    rules.iter().find(|rule| rule.pattern.matches(path))
}

#[cfg(test)]
mod tests;
