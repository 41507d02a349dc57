//! `portcullis check` beyond validation: configurations that are valid but probably not what
//! the operator meant. Each finding is a warning; `check --strict` fails on any.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Config, SameSite};
use crate::rules::Auth;

/// A finding, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every finding for `config`, in key order.
pub fn lint(config: &Config) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut warn = |path: String, message: String| warnings.push(Warning { path, message });

    for (i, later) in config.rules.iter().enumerate() {
        // Host and path together: a rule is shadowed only when an earlier one takes every
        // host and every path it does.
        if let Some(earlier) = config.rules[..i].iter().find(|e| e.covers(later)) {
            let what = match &earlier.host {
                Some(host) => format!("{host} {}", earlier.pattern),
                None => earlier.pattern.to_string(),
            };
            let span = if later.host.is_some() {
                "host and path"
            } else {
                "path"
            };
            let message = if later.auth == Auth::Required && earlier.auth == Auth::Public {
                format!(
                    "this required rule can never match: public rule routes[{}] ({what}) before it covers every {span} it does, so those paths are NOT protected",
                    earlier.index
                )
            } else {
                format!(
                    "never matches: routes[{}] ({what}) before it covers every {span} it does",
                    earlier.index
                )
            };
            warn(format!("routes[{}]", later.index), message);
        }
    }
    if !config.rules.iter().any(|r| r.auth == Auth::Required) {
        warn(
            "routes".into(),
            "no rule has auth = \"required\": nothing is protected".into(),
        );
    }

    let session = &config.session;
    if !session.secure && config.server.tls.is_some() {
        warn(
            "session.secure".into(),
            "false while TLS is on: the cookies would also be sent over plain HTTP".into(),
        );
    }
    if !session.csrf && session.same_site != SameSite::Strict {
        warn(
            "session.csrf".into(),
            "\"off\" with same_site other than \"strict\": another site can make a visitor's browser send a POST, PUT, PATCH or DELETE that the cookie turns into an authenticated API call".into(),
        );
    }
    if session.same_site == SameSite::None {
        warn(
            "session.same_site".into(),
            "\"none\" sends the session cookies on cross-site requests; prefer \"lax\" or \"strict\"".into(),
        );
    }

    if let Some(secret) = &config.jwt.keys.secret {
        if is_low_entropy(secret) {
            warn(
                "jwt.secret".into(),
                "looks guessable (few distinct characters or a repeated pattern); use e.g. `openssl rand -hex 32`".into(),
            );
        }
    }
    let has_hmac = config.jwt.algorithms.iter().any(|a| a.is_hmac());
    let has_public = config.jwt.algorithms.iter().any(|a| !a.is_hmac());
    if has_hmac && has_public {
        warn(
            "jwt.algorithms".into(),
            "mixes HS* with public-key algorithms for the same issuer: anyone holding the HMAC secret can mint tokens the public keys were meant to vouch for".into(),
        );
    }

    for (i, net) in config.server.trusted_proxies.iter().enumerate() {
        if net.prefix_len() == 0 {
            warn(
                format!("server.trusted_proxies[{i}]"),
                format!("{net} trusts every peer: any client can forge X-Forwarded-For"),
            );
        }
    }
    if !config
        .server
        .trusted_proxies
        .iter()
        .any(|n| n.prefix_len() == 0)
    {
        if let Some(share) = public_share_trusted(&config.server.trusted_proxies) {
            warn(
                "server.trusted_proxies".into(),
                format!("together these trust {share}: any client there can forge X-Forwarded-For; list only your proxies' addresses"),
            );
        }
    }

    if config.jwt.leeway > MAX_LEEWAY {
        warn(
            "jwt.leeway".into(),
            format!(
                "{}s admits tokens that expired that long ago; clock skew needs seconds to a few minutes (RFC 8725)",
                config.jwt.leeway.as_secs()
            ),
        );
    }
    if config.session.refresh_ahead >= LONG_REFRESH_AHEAD {
        warn(
            "session.refresh_ahead".into(),
            format!(
                "{}s: an access token that lives less than this is renewed on every request; access tokens commonly live 5 to 15 minutes",
                config.session.refresh_ahead.as_secs()
            ),
        );
    }
    let public_listener = config
        .server
        .listen
        .iter()
        .any(|addr| !addr.ip().is_loopback());
    if !session.secure && public_listener && config.server.tls.is_none() {
        warn(
            "session.secure".into(),
            "false on a listener other hosts can reach: if TLS ends in front of the proxy, browsers still send the cookies over any plain-HTTP link; keep it true (browsers accept Secure cookies on http://localhost)".into(),
        );
    }
    if let Some(admin) = &config.admin {
        if !admin.listen.ip().is_loopback() && admin.token.is_none() {
            warn(
                "admin.listen".into(),
                format!(
                    "{} is reachable from other hosts: probes and /metrics are open there; POST /reload is refused from them until admin.token is set",
                    admin.listen
                ),
            );
        }
    }
    if let Some(backend) = &config.backend {
        let endpoints = [
            ("backend.login", Some(&backend.login)),
            ("backend.refresh", backend.refresh.as_ref()),
            ("backend.logout", backend.logout.as_ref()),
            ("backend.profile", backend.profile.as_ref()),
        ];
        for (path, uri) in endpoints {
            if let Some(uri) = uri.filter(|uri| is_plain_http_off_host(uri)) {
                warn(
                    path.into(),
                    format!("{uri} is plain HTTP to another host: passwords and tokens would cross the network in clear; use https://"),
                );
            }
        }
    }

    if let Some(forward_auth) = &config.forward_auth {
        if !forward_auth.listen.ip().is_loopback() {
            warn(
                "forward_auth.listen".into(),
                format!(
                    "{} is not a loopback address: its answers carry bearer tokens, so make sure only the ingress can reach it (a private network, a firewall or NetworkPolicy)",
                    forward_auth.listen
                ),
            );
        }
        if config.server.trusted_proxies.is_empty() {
            warn(
                "server.trusted_proxies".into(),
                "empty with [forward_auth]: the ingress sends POST /login and /logout to server.listen, so every client would seem to be the ingress and share one login.attempts_per_minute; list the ingress's address".to_owned(),
            );
        }
    }

    let own: Vec<SocketAddr> = config.server.listen.clone();
    for upstream in &config.upstreams {
        let port =
            upstream
                .authority
                .port_u16()
                .unwrap_or(if upstream.scheme.as_str() == "https" {
                    443
                } else {
                    80
                });
        let resolved: Vec<SocketAddr> = (upstream.authority.host(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        let loops = resolved.iter().any(|addr| {
            own.iter().any(|listen| {
                listen.port() == addr.port()
                    && (listen.ip() == addr.ip() || listen.ip().is_unspecified())
            })
        });
        if loops {
            warn(
                format!("upstreams.{}", upstream.name),
                "resolves to the proxy's own listener: requests would loop".into(),
            );
        }
    }
    warnings
}

/// Past this, a leeway admits tokens that plainly expired.
const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);
/// From this on, `refresh_ahead` outlasts common access-token lifetimes.
const LONG_REFRESH_AHEAD: Duration = Duration::from_secs(15 * 60);

/// Whether `uri` is `http://` to another machine. Loopback names and addresses are this one;
/// a name without a dot (`backend`) is a service on a private container network (a Docker
/// Compose service, a Kubernetes service in the same namespace), which public DNS never
/// resolves, and is let be.
fn is_plain_http_off_host(uri: &http::Uri) -> bool {
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let local = match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || !host.contains('.'),
    };
    uri.scheme_str() == Some("http") && !local
}

/// How much of the public Internet `trusted` covers, said in words, when it is more than any
/// proxy fleet holds: over a /8's worth of public IPv4 addresses, or a /16's worth of IPv6.
/// Private, loopback and link-local ranges do not count: trusting a whole VPC is normal.
fn public_share_trusted(trusted: &[IpNet]) -> Option<String> {
    let nets = IpNet::aggregate(&trusted.to_vec());
    let special: Vec<IpNet> = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ]
    .iter()
    .filter_map(|net| net.parse().ok())
    .collect();
    let size = |net: &IpNet| -> u128 {
        let bits = u32::from(net.max_prefix_len() - net.prefix_len());
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    };
    let (mut v4, mut v6) = (0u128, 0u128);
    for net in &nets {
        let private: u128 = special
            .iter()
            .filter(|s| net.contains(*s) || s.contains(net))
            .map(|s| if s.contains(net) { size(net) } else { size(s) })
            .sum();
        let public = size(net).saturating_sub(private);
        match net {
            IpNet::V4(_) => v4 += public,
            IpNet::V6(_) => v6 = v6.saturating_add(public),
        }
    }
    if v4 >= 1 << 24 {
        Some(format!(
            "{:.0}% of the public IPv4 Internet",
            v4 as f64 / f64::from(u32::MAX) * 100.0
        ))
    } else if v6 >= 1 << 112 {
        Some("more public IPv6 space than a /16".to_owned())
    } else {
        None
    }
}

/// Few distinct bytes, or a short pattern repeated (`abcabcabc…`).
fn is_low_entropy(secret: &[u8]) -> bool {
    let mut seen = [false; 256];
    for &b in secret {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    let repeated = (1..=secret.len() / 2)
        .any(|period| secret.chunks(period).all(|chunk| secret.starts_with(chunk)));
    distinct < 10 || repeated
}

#[cfg(test)]
mod tests;
