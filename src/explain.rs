//! `portcullis explain`: what the proxy would do with one request, and why — without sending
//! anything anywhere. It builds the same view of the request as the pipeline (normalized path,
//! host; for `--forward-auth`, read from the ingress's headers as the forward-auth listener
//! reads them), runs the same rule matching, token checks and header rules, and reports each
//! step.

use std::fmt::Write as _;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::auth::{self, cookies, jwt};
use crate::cluster::{Revocations, TokenFacts};
use crate::config::Config;
use crate::error::Error;
use crate::forward_auth::{self, Ingress};
use crate::rules::Auth;
use crate::view::RequestView;
use crate::ConnInfo;
use crate::{headers, path};

/// One request to explain.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    /// `Cookie` header value (`k=v; k2=v2`).
    pub cookies: Option<&'a str>,
    /// Extra headers as `Name: value`.
    pub headers: &'a [String],
    /// The request is an ingress's subrequest to `forward_auth.listen`.
    pub forward_auth: bool,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    /// `proxy`, or `forward_auth` with the ingress convention the headers follow.
    pub mode: String,
    pub method: String,
    pub target: String,
    /// The host rules match (`host[:port]`), or why the request's host is refused.
    pub host: Result<String, String>,
    /// The normalized path, or why the path is refused.
    pub normalized: Result<String, String>,
    pub endpoint: Option<String>,
    pub rules: Vec<RuleTried>,
    pub token: Option<TokenReport>,
    pub refresh: Option<String>,
    /// The CSRF guard's decision, for a `required` rule: `pass: why` or `refuse: why`.
    pub csrf: Option<String>,
    pub action: String,
    pub status: u16,
    pub injected: Vec<String>,
    pub stripped: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RuleTried {
    pub index: usize,
    pub host: Option<String>,
    pub pattern: String,
    pub auth: String,
    pub matched: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenReport {
    /// The access cookie's name, or `Authorization header` for a client's own bearer token.
    pub cookie: String,
    pub length: usize,
    pub checks: Vec<CheckReport>,
    pub valid: bool,
    pub claims: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Explains `request` under `config`, with the clock at `now` (unix seconds), without
/// knowing what was revoked.
pub fn explain(config: &Config, request: &Request<'_>, now: u64) -> Result<Explanation, String> {
    explain_with(config, request, now, None)
}

/// Explains `request`, checking tokens against `revocations` (the running proxy's, or the
/// ones read from Redis) when given.
pub fn explain_with(
    config: &Config,
    request: &Request<'_>,
    now: u64,
    revocations: Option<&Revocations>,
) -> Result<Explanation, String> {
    let mut builder = http::Request::builder()
        .method(
            http::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("{:?} is not a method", request.method))?,
        )
        .uri(request.url);
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|_| format!("{:?} is not a URL or path", request.url))?;
    let mut headers = HeaderMap::new();
    for line in request.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("{line:?} is not `Name: value`"))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value =
            HeaderValue::try_from(value.trim()).map_err(|_| format!("bad value for {name}"))?;
        headers.append(name, value);
    }
    if let Some(cookie) = request.cookies {
        headers.append(
            http::header::COOKIE,
            HeaderValue::try_from(cookie).map_err(|_| "bad cookie text")?,
        );
    }
    // A bare path names no host: take the one the proxy listens on, as a client would.
    if uri.authority().is_none() && !headers.contains_key(http::header::HOST) {
        let listen = config
            .server
            .listen
            .first()
            .map_or_else(|| "localhost".to_owned(), ToString::to_string);
        if let Ok(value) = HeaderValue::try_from(listen) {
            headers.insert(http::header::HOST, value);
        }
    }
    if let Some(all) = builder.headers_mut() {
        *all = headers;
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| format!("{:?} is not a URL or path", request.url))?
        .into_parts();
    let headers = &parts.headers;
    let ingress = if request.forward_auth {
        Some(Ingress::detect(headers).map_err(|err| err.to_string())?)
    } else {
        None
    };
    let mut out = Explanation {
        mode: match ingress {
            None => "proxy".to_owned(),
            Some(ingress) => format!("forward_auth, original request from {}", ingress.name()),
        },
        method: request.method.to_ascii_uppercase(),
        target: request.url.to_owned(),
        host: Err(String::new()),
        normalized: Err(String::new()),
        endpoint: None,
        rules: Vec::new(),
        token: None,
        refresh: None,
        csrf: None,
        action: String::new(),
        status: 0,
        injected: Vec::new(),
        stripped: Vec::new(),
    };
    // An explained request comes from nowhere in particular: an address no proxy list trusts.
    let unspecified = std::net::SocketAddr::from(([192, 0, 2, 1], 0));
    let conn = ConnInfo::new(unspecified, unspecified, uri.scheme_str() == Some("https"));
    let mut slot = None;
    let built = match ingress {
        None => RequestView::proxied(&parts, &conn, &config.server.trusted_proxies, &mut slot),
        Some(ingress) => {
            let claim_headers = config.claim_headers();
            forward_auth::view(&parts, &conn, config, ingress, &claim_headers, &mut slot)
        }
    };
    let status_of = |err: Error| match ingress {
        None => err.status().as_u16(),
        Some(ingress) => forward_auth::refusal(ingress, err).status().as_u16(),
    };
    let view = match built {
        Ok(view) => view,
        Err(err) => {
            let why = err.to_string();
            match slot {
                Some(path) => {
                    out.normalized = Ok(path);
                    out.host = Err(why.clone());
                }
                None => out.normalized = Err(why.clone()),
            }
            out.status = status_of(err);
            out.action = format!("refuse: {} ({why})", out.status);
            return Ok(out);
        }
    };
    out.method = view.method.to_string();
    out.host = Ok(view.host.to_string());
    out.normalized = Ok(view.path.to_owned());
    let normalized = view.path;
    let target = view.target.to_string();

    // The proxy's own endpoints come before any rule; like rules, they ignore one trailing `/`.
    let own_path = path::without_trailing_slash(normalized);
    let own = if own_path == config.login.path && out.method == "POST" && config.backend.is_some() {
        Some((
            "login",
            "exchange the credentials with backend.login; set cookies; 303 or 200",
        ))
    } else if own_path == config.logout.path {
        Some((
            "logout",
            "expire both cookies, tell backend.logout; 303 or 200",
        ))
    } else if own_path == config.session.me_path {
        Some((
            "me",
            "answer the verified claims (or backend.profile) as JSON; 401 without a token",
        ))
    } else {
        None
    };
    if let Some((name, what)) = own {
        out.endpoint = Some(name.to_owned());
        out.action = match ingress {
            None => format!("own endpoint {name}: {what}"),
            Some(_) => format!(
                "refuse: 403 (own endpoint {name}: the ingress sends it to server.listen by its exact path; this spelling would reach the site)"
            ),
        };
        out.status = if ingress.is_some() { 403 } else { 200 };
        return Ok(out);
    }

    let mut matched = None;
    for rule in &config.rules {
        let hit = rule.matches(view.host.matchable(), normalized);
        out.rules.push(RuleTried {
            index: rule.index,
            host: rule.host.as_ref().map(ToString::to_string),
            pattern: rule.pattern.to_string(),
            auth: format!("{:?}", rule.auth).to_lowercase(),
            matched: hit,
        });
        if hit {
            matched = Some(rule);
            break;
        }
    }
    let Some(rule) = matched else {
        out.status = status_of(Error::NotFound);
        out.action = format!("refuse: {} (no rule matches)", out.status);
        return Ok(out);
    };
    let headers = view.headers;

    // The token, checked exactly as verify() does, step by step.
    let verifier = jwt::Verifier::new(
        jwt::KeySet::build(&config.jwt.algorithms, &config.jwt.keys).map_err(|e| e.to_string())?,
        auth::policy(config),
    );
    // Where the token comes from (jwt.from): a client's own bearer token is never renewed.
    let source = auth::credential(config.jwt.from, headers);
    let (access, refresh_cookie, source_name) = match source {
        auth::Credential::Header(token) => (Some(token), None, "Authorization header".to_owned()),
        auth::Credential::Cookie => (
            cookies::find(headers, &config.session.access_cookie),
            cookies::find(headers, &config.session.refresh_cookie),
            config.session.access_cookie.clone(),
        ),
        auth::Credential::Nothing => (None, None, String::new()),
    };
    let mut revoked = None;
    let verdict = access.map(|token| {
        let (checks, result) = verifier.explain(token, now);
        let mut checks: Vec<CheckReport> = checks
            .into_iter()
            .map(|c| CheckReport {
                check: c.name.to_owned(),
                ok: c.ok,
                detail: c.detail,
            })
            .collect();
        // Revocation applies to expired tokens too: a revoked one is never renewed.
        if let Ok(claims) = verifier.verify_ignoring_exp(token, now) {
            let detail = match revocations {
                None => "not checked: revocations live in the running proxy (ask the admin listener's /explain, or set [cluster] to read them from Redis)".to_owned(),
                Some(set) => {
                    revoked = set.check(&TokenFacts::of(token, claims.as_json()), now);
                    match revoked {
                        Some(why) => format!("REVOKED: {why}"),
                        None => "not revoked".to_owned(),
                    }
                }
            };
            checks.push(CheckReport {
                check: "revoked".to_owned(),
                ok: revoked.is_none(),
                detail,
            });
        }
        out.token = Some(TokenReport {
            cookie: source_name,
            length: token.len(),
            checks,
            valid: result.is_ok() && revoked.is_none(),
            claims: result
                .as_ref()
                .ok()
                .map(|c| serde_json::Value::Object(c.as_json().clone())),
        });
        result
    });
    let can_refresh =
        refresh_cookie.is_some() && config.backend.as_ref().is_some_and(|b| b.refresh.is_some());
    let claims = match verdict {
        _ if revoked.is_some() => None,
        Some(Ok(claims)) => {
            if claims.exp() < now.saturating_add(config.session.refresh_ahead.as_secs())
                && can_refresh
            {
                out.refresh = Some(
                    "the token expires within session.refresh_ahead: renewed first (best effort)"
                        .into(),
                );
            }
            Some(claims)
        }
        Some(Err(rejection)) if rejection.is_expired_only() && can_refresh => {
            out.refresh = Some(
                "expired: renewed through backend.refresh, then forwarded with the new token"
                    .into(),
            );
            None
        }
        None if can_refresh => {
            out.refresh = Some(
                "no access cookie: renewed through backend.refresh with the refresh cookie".into(),
            );
            None
        }
        _ => None,
    };

    let upstream = &config.upstream(rule.upstream).name;
    let navigation = auth::redirects_to_login(rule, headers);
    let identity = config.claim_headers();
    if ingress.is_none() {
        out.stripped = stripped_headers(
            headers,
            &identity,
            &[
                &config.session.access_cookie,
                &config.session.refresh_cookie,
            ],
        );
    }
    // What an allowed request becomes: forwarded (proxy mode) or a 200 answer.
    let allow = match ingress {
        None => format!("forward to upstream {upstream:?} as {target}"),
        Some(_) => format!("allow: 200 (the ingress forwards {target})"),
    };
    let redirects = ingress.is_none_or(Ingress::relays_redirects);
    match rule.auth {
        Auth::Public => {
            out.action = allow;
            out.status = 200;
        }
        Auth::Guest if claims.is_some() && redirects => {
            out.action = format!(
                "redirect a signed-in user: 302 to {}",
                config.login.success_redirect
            );
            out.status = 302;
        }
        Auth::Guest if claims.is_some() => {
            out.action = format!("{allow} (a signed-in user; this ingress cannot redirect)");
            out.status = 200;
        }
        Auth::Guest => {
            out.action = format!("{allow} (signed out)");
            out.status = 200;
        }
        Auth::Required if csrf_refused(config, &view, &mut out) => {}
        Auth::Required => match claims {
            None if revoked.is_some() => {
                let (status, refusal) = unauthenticated(ingress, navigation, config, &target);
                out.status = status;
                out.action = format!("refuse a revoked token: clear the cookies, {refusal}");
            }
            None if out.refresh.is_some() => {
                out.action = format!("renew the session, then {allow}");
                out.status = 200;
                out.injected
                    .push("Authorization: Bearer <renewed access token>".into());
                out.injected
                    .push("Set-Cookie on the response: the renewed tokens".into());
                if ingress.is_some() {
                    out.injected.push(
                        "X-Auth-Set-Cookie-Access / X-Auth-Set-Cookie-Refresh: the same cookies"
                            .into(),
                    );
                }
            }
            None => {
                let (status, refusal) = unauthenticated(ingress, navigation, config, &target);
                out.status = status;
                out.action = match status {
                    302 => format!("refuse: {refusal}"),
                    _ => "refuse: 401 Unauthorized (WWW-Authenticate: Bearer)".into(),
                };
            }
            Some(claims) => {
                let missing: Vec<&str> = rule
                    .claims
                    .iter()
                    .filter(|(name, allowed)| !claims.satisfies(name, allowed))
                    .map(|(name, _)| name.as_str())
                    .collect();
                if missing.is_empty() {
                    out.action = allow;
                    out.status = 200;
                    out.injected
                        .push("Authorization: Bearer <the access token>".into());
                    for (header, claim) in &rule.headers {
                        out.injected.push(format!("{header}: <claim {claim}>"));
                    }
                    if ingress.is_some() {
                        out.injected.push("X-Auth-Request-User: <claim sub>".into());
                        out.injected
                            .push("X-Auth-Request-Email: <claim email>".into());
                    }
                } else {
                    out.action = format!(
                        "refuse: 403 Forbidden (claims not satisfied: {})",
                        missing.join(", ")
                    );
                    out.status = 403;
                }
            }
        },
    }
    if out.status == 200 {
        let extra: &[&str] = match ingress {
            None => &[
                "X-Forwarded-For",
                "X-Forwarded-Proto",
                "X-Forwarded-Host",
                "X-Request-Id",
            ],
            Some(_) => &["Cookie: the client's, without the proxy's own cookies"],
        };
        out.injected.extend(extra.iter().map(|h| (*h).to_owned()));
    }
    Ok(out)
}

/// The refusal of a request without a usable token, as its door answers it: the status, and
/// `302 to <login>` or `401 Unauthorized`.
fn unauthenticated(
    ingress: Option<Ingress>,
    navigation: bool,
    config: &Config,
    target: &str,
) -> (u16, String) {
    let refused = Error::Unauthenticated {
        reason: String::new(),
        login: navigation.then(|| auth::login_redirect(&config.login, target)),
        clear_cookies: Vec::new(),
    };
    let refused = match ingress {
        None => refused,
        Some(ingress) => forward_auth::refusal(ingress, refused),
    };
    let status = refused.status().as_u16();
    match refused {
        Error::Unauthenticated {
            login: Some(location),
            ..
        } => (status, format!("302 to {location}")),
        _ => (status, "401 Unauthorized".to_owned()),
    }
}

/// Records the CSRF guard's decision on a request for a `required` rule; `true` (with the
/// action set) when it refuses. It compares with the view's origin: in proxy mode the request
/// is taken as reaching the proxy directly (a relative URL over plain HTTP, an `https://` URL
/// over TLS), so `X-Forwarded-*` headers given here are not believed; in forward auth they are
/// the ingress's.
fn csrf_refused(config: &Config, view: &RequestView<'_>, out: &mut Explanation) -> bool {
    match auth::csrf_verdict(&config.session, config.jwt.from, view).0 {
        auth::csrf::Verdict::Pass(why) => {
            out.csrf = Some(format!("pass: {why}"));
            false
        }
        auth::csrf::Verdict::Refuse(why) => {
            out.csrf = Some(format!("refuse: {why}"));
            out.action =
                "refuse: 403 Forbidden ({\"error\":\"csrf\"}): a cross-site request".into();
            out.status = 403;
            true
        }
    }
}

/// The client headers the upstream request would not carry, by the same predicates the
/// forwarding rewrite uses.
fn stripped_headers(
    headers: &HeaderMap,
    identity: &[HeaderName],
    own_cookies: &[&str],
) -> Vec<String> {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut stripped = Vec::new();
    for name in headers.keys() {
        let text = name.as_str();
        let why = if headers::HOP_BY_HOP.contains(name) {
            Some("hop-by-hop")
        } else if named.iter().any(|n| n == text) {
            Some("named in Connection")
        } else if headers::is_identity_header(text, identity) {
            Some("client-supplied identity header")
        } else if *name == http::header::AUTHORIZATION {
            Some("replaced on required routes")
        } else {
            None
        };
        if let Some(why) = why {
            stripped.push(format!("{name} ({why})"));
        }
    }
    for cookie in own_cookies {
        if cookies::find(headers, cookie).is_some() {
            stripped.push(format!("cookie {cookie} (the proxy's own cookie)"));
        }
    }
    stripped
}

/// The human-readable report.
pub fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "request     {} {}", e.method, e.target);
    let _ = writeln!(out, "mode        {}", e.mode);
    match &e.host {
        Ok(host) => {
            let _ = writeln!(out, "host        {host}");
        }
        Err(why) if !why.is_empty() => {
            let _ = writeln!(out, "host        refused: {why}");
        }
        Err(_) => {}
    }
    match &e.normalized {
        Ok(path) => {
            let _ = writeln!(out, "normalized  {path}");
        }
        Err(why) => {
            let _ = writeln!(out, "normalized  refused: {why}");
        }
    }
    if let Some(endpoint) = &e.endpoint {
        let _ = writeln!(out, "endpoint    {endpoint}");
    }
    for rule in &e.rules {
        let mark = if rule.matched { "match" } else { "no" };
        let host = rule
            .host
            .as_ref()
            .map(|h| format!("{h} "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "rule        routes[{}] {host}{} ({}): {mark}",
            rule.index, rule.pattern, rule.auth
        );
    }
    match &e.token {
        None if e.rules.iter().any(|r| r.matched) => {
            let _ = writeln!(out, "token       none");
        }
        None => {}
        Some(token) => {
            let source = if token.cookie == "Authorization header" {
                token.cookie.clone()
            } else {
                format!("cookie {}", token.cookie)
            };
            let _ = writeln!(out, "token       {source} ({} bytes)", token.length);
            for check in &token.checks {
                let mark = if check.ok { "ok  " } else { "FAIL" };
                let _ = writeln!(out, "  {mark} {:<12} {}", check.check, check.detail);
            }
        }
    }
    if let Some(refresh) = &e.refresh {
        let _ = writeln!(out, "refresh     {refresh}");
    }
    if let Some(csrf) = &e.csrf {
        let _ = writeln!(out, "csrf        {csrf}");
    }
    let _ = writeln!(out, "action      {}", e.action);
    for header in &e.injected {
        let _ = writeln!(out, "inject      {header}");
    }
    for header in &e.stripped {
        let _ = writeln!(out, "strip       {header}");
    }
    out
}
