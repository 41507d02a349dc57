//! `portcullis check` beyond validation: configurations that are valid but probably not what
//! the operator meant. Each finding is a warning; `check --strict` fails on any.

use std::net::{SocketAddr, ToSocketAddrs};

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
mod tests {
    use super::*;

    fn config(extra: &str, routes: &str) -> Config {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:18999\"\n[upstreams]\napp = \"http://127.0.0.1:3000\"\nself = \"http://127.0.0.1:18999\"\n[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n{extra}\n{routes}"
        );
        Config::from_toml_str(&text).expect("valid config")
    }

    fn paths(warnings: &[Warning]) -> Vec<&str> {
        warnings.iter().map(|w| w.path.as_str()).collect()
    }

    #[test]
    fn finds_shadowed_and_unprotected_rules() {
        let routes = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n[[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nupstream = \"app\"\n";
        let warnings = lint(&config("", routes));
        let shadowed = warnings
            .iter()
            .find(|w| w.path == "routes[1]")
            .expect("routes[1] flagged");
        assert!(shadowed.message.contains("NOT protected"), "{shadowed}");
        assert!(paths(&warnings).contains(&"upstreams.self"));
    }

    #[test]
    fn a_clean_config_has_no_findings() {
        let routes = "[[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
        let text = format!("[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\n{routes}");
        assert_eq!(
            lint(&Config::from_toml_str(&text).expect("valid")),
            Vec::new()
        );
    }

    #[test]
    fn weak_settings_are_flagged() {
        let routes = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
        let text = format!(
            "[server]\ntrusted_proxies = [\"0.0.0.0/0\"]\n[upstreams]\napp = \"http://127.0.0.1:3000\"\n[session]\nsame_site = \"none\"\n[jwt]\nsecret = \"abababababababababababababababab\"\n{routes}"
        );
        let warnings = lint(&Config::from_toml_str(&text).expect("valid"));
        for path in [
            "routes",
            "session.same_site",
            "jwt.secret",
            "server.trusted_proxies[0]",
        ] {
            assert!(
                paths(&warnings).contains(&path),
                "{path} not flagged: {warnings:?}"
            );
        }
    }

    /// One configuration per warning: each adds exactly the finding it is about to a clean base.
    #[test]
    fn one_finding_per_warning() {
        let dir = std::env::temp_dir().join(format!("portcullis-lint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        std::fs::write(dir.join("c.pem"), cert.cert.pem()).expect("write cert");
        std::fs::write(dir.join("k.pem"), cert.key_pair.serialize_pem()).expect("write key");
        let tls = format!(
            "tls = {{ cert = {:?}, key = {:?} }}\n",
            dir.join("c.pem").display().to_string(),
            dir.join("k.pem").display().to_string()
        );
        let base = |server: &str, session: &str, jwt: &str, routes: &str| {
            format!(
                "[server]\nlisten = \"127.0.0.1:18998\"\n{server}\n[upstreams]\napp = \"http://127.0.0.1:3000\"\n[session]\n{session}\n[jwt]\n{jwt}\n{routes}"
            )
        };
        let secret = "secret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"";
        let guarded = "[[routes]]\npath = \"/app/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
        let cases: Vec<(&str, String)> = vec![
            ("routes[1]", base("", "", secret, "[[routes]]\npath = \"/a/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/a/b\"\nauth = \"required\"\nupstream = \"app\"\n")),
            ("routes", base("", "", secret, "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n")),
            ("session.secure", base(&tls, "secure = false", secret, guarded)),
            ("session.same_site", base("", "same_site = \"none\"", secret, guarded)),
            ("jwt.secret", base("", "", "secret = \"passwordpasswordpasswordpassword\"", guarded)),
            ("server.trusted_proxies[0]", base("trusted_proxies = [\"::/0\"]", "", secret, guarded)),
            ("upstreams.app", base("", "", secret, guarded).replace("127.0.0.1:3000", "127.0.0.1:18998")),
            ("forward_auth.listen", base("", "", secret, guarded).replace("[upstreams]", "[forward_auth]\nlisten = \"0.0.0.0:18997\"\n[upstreams]")),
            // A host rule behind a rule for every subdomain, and one behind a rule without host.
            ("routes[1]", base("", "", secret, "[[routes]]\nhost = \"*.example.com\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\nhost = \"Admin.example.com\"\npath = \"/x\"\nauth = \"required\"\nupstream = \"app\"\n")),
            ("routes[1]", base("", "", secret, "[[routes]]\npath = \"/a/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\nhost = \"admin.example.com\"\npath = \"/a/b\"\nauth = \"required\"\nupstream = \"app\"\n")),
        ];
        for (path, text) in cases {
            let config = Config::from_toml_str(&text).unwrap_or_else(|p| panic!("{path}: {p}"));
            let warnings = lint(&config);
            assert_eq!(paths(&warnings), vec![path], "{path}: {warnings:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn host_rules_shadow_only_what_they_cover() {
        let routes = "[[routes]]\nhost = \"app.example.com\"\npath = \"/:path*\"\nupstream = \"app\"\n[[routes]]\nhost = \"admin.example.com\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n";
        let text = format!("[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\n{routes}");
        assert_eq!(
            lint(&Config::from_toml_str(&text).expect("valid")),
            Vec::new()
        );
        let shadowed = routes.replace("host = \"app.example.com\"\n", "");
        let text = format!("[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\n{shadowed}");
        let warnings = lint(&Config::from_toml_str(&text).expect("valid"));
        assert_eq!(paths(&warnings), vec!["routes[1]", "routes[2]"]);
        assert!(
            warnings[0].message.contains("NOT protected"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[0].message.contains("host and path"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn mixed_algorithm_families_are_flagged() {
        let dir =
            std::env::temp_dir().join(format!("portcullis-lint-mixed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("curve"),
        )
        .expect("key");
        std::fs::write(dir.join("es.pem"), key.public_key_to_pem().expect("pem")).expect("write");
        let text = format!(
            "[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"HS256\", \"ES256\"]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\npublic_key_file = {:?}\n[[routes]]\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n",
            dir.join("es.pem").display().to_string()
        );
        let warnings = lint(&Config::from_toml_str(&text).expect("valid"));
        assert_eq!(paths(&warnings), vec!["jwt.algorithms"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entropy() {
        assert!(is_low_entropy(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(is_low_entropy(b"passwordpasswordpasswordpassword"));
        assert!(!is_low_entropy(b"9f8e2b7c41d05a3e6f1c8b92d7e04a5f"));
    }
}
