//! Validation: from the file as written ([`RawConfig`]) to a [`Config`] whose every value is
//! checked and typed. Every problem is collected with its key path, never just the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::HeaderName;
use http::Uri;
use ipnet::IpNet;

use super::raw::{self, Allowed, RawConfig, RawFields, RawRoute};
use super::*;
use crate::auth::jwt::{Alg, KeyMaterial};
use crate::rules::{HostPattern, Pattern};

/// Checks every value of `raw`, reads key files (relative to `base`), and reports every
/// problem found rather than the first.
pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config, Problems> {
    let mut v = Validator {
        problems: Problems::default(),
        base,
    };
    let server = v.server(raw.server);
    let admin = raw.admin.and_then(|admin| {
        let token = admin.token.filter(|t| !t.is_empty());
        if token.as_ref().is_some_and(|t| t.len() < 16) {
            v.problem("admin.token", "must be at least 16 characters");
        }
        v.socket_addr("admin.listen", &admin.listen)
            .map(|listen| Admin {
                listen,
                explain: admin.explain.unwrap_or(false),
                token,
            })
    });
    let forward_auth = raw.forward_auth.and_then(|f| v.forward_auth(f));
    let upstreams = v.upstreams(&raw.upstreams, server.max_connections);
    let backend = raw.backend.and_then(|b| v.backend(b));
    let login = v.login(raw.login);
    let logout = v.logout(raw.logout);
    let session = v.session(raw.session, server.tls.is_some());
    let jwt = v.jwt(raw.jwt);
    let rules = v.rules(raw.routes, &upstreams);
    let log = v.log(raw.log);
    let cluster = raw.cluster.and_then(|c| v.cluster(c));
    v.cross_checks(&login, &logout, &session);
    v.listeners(&server, admin.as_ref(), forward_auth.as_ref());
    if !v.problems.0.is_empty() {
        return Err(v.problems);
    }
    Ok(Config {
        server,
        admin,
        forward_auth,
        upstreams,
        backend,
        login,
        logout,
        session,
        jwt,
        rules,
        log,
        cluster,
    })
}

/// The longest timeout accepted (deadlines are instants; a longer one would overflow).
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 86_400);
/// The most connections any cap accepts (the connection semaphore panics far above it).
const MAX_CONNECTIONS: u64 = 10_000_000;

struct Validator<'a> {
    problems: Problems,
    base: &'a Path,
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(path, message);
    }

    fn duration(
        &mut self,
        path: &str,
        value: Option<raw::Quantity>,
        default: Duration,
    ) -> Duration {
        match value.map(|q| units::duration(&q)) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.problem(path, message);
                default
            }
        }
    }

    /// A duration that bounds a wait: zero would fail every request (or spin), so it is refused.
    /// (A year at most: deadlines are instants, and a bigger one would overflow.)
    fn timeout(&mut self, path: &str, value: Option<raw::Quantity>, default: Duration) -> Duration {
        let timeout = self.duration(path, value, default);
        if timeout.is_zero() {
            self.problem(
                path,
                "must be more than 0s: a zero timeout fails every request",
            );
            return default;
        }
        if timeout > MAX_TIMEOUT {
            self.problem(path, "must be at most 365d");
            return default;
        }
        timeout
    }

    /// A count of connections: at least one, and no more than a process could hold.
    fn connections(&mut self, path: &str, value: Option<u64>, default: usize) -> usize {
        match value {
            None => default,
            Some(0) => {
                self.problem(path, "must be at least 1");
                default
            }
            Some(n) if n > MAX_CONNECTIONS => {
                self.problem(path, format!("must be at most {MAX_CONNECTIONS}"));
                default
            }
            Some(n) => usize::try_from(n).unwrap_or(default),
        }
    }

    fn size(&mut self, path: &str, value: Option<raw::Quantity>, default: u64) -> u64 {
        match value.map(|q| units::size(&q)) {
            None => default,
            Some(Ok(n)) => n,
            Some(Err(message)) => {
                self.problem(path, message);
                default
            }
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    path,
                    format!("{text:?} is not an address like \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    /// A site path: starts with `/`, no scheme or host, no spaces or control characters.
    fn site_path(&mut self, path: &str, value: Option<String>, default: &str) -> String {
        let value = value.unwrap_or_else(|| default.to_owned());
        if !value.starts_with('/')
            || value.starts_with("//")
            || value.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\')
        {
            self.problem(
                path,
                format!("{value:?} must be a path on this site, like \"/login\""),
            );
        }
        value
    }

    fn file(&mut self, path: &str, file: &str) -> Option<Vec<u8>> {
        let full = self.base.join(file);
        match std::fs::read(&full) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                self.problem(path, format!("cannot read {}: {err}", full.display()));
                None
            }
        }
    }

    fn url(&mut self, path: &str, text: &str) -> Option<Uri> {
        let uri: Uri = match text.parse() {
            Ok(uri) => uri,
            Err(_) => {
                self.problem(path, format!("{text:?} is not a URL"));
                return None;
            }
        };
        match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => Some(uri),
            _ => {
                self.problem(
                    path,
                    format!("{text:?} must be an absolute http:// or https:// URL"),
                );
                None
            }
        }
    }

    fn server(&mut self, raw: raw::RawServer) -> Server {
        let listen_texts = raw
            .listen
            .map(raw::OneOrMany::into_vec)
            .unwrap_or_else(|| vec!["127.0.0.1:8080".to_owned()]);
        if listen_texts.is_empty() {
            self.problem("server.listen", "needs at least one address");
        }
        let listen = listen_texts
            .iter()
            .enumerate()
            .filter_map(|(i, text)| self.socket_addr(&format!("server.listen[{i}]"), text))
            .collect();
        let tls = raw.tls.map(|tls| TlsFiles {
            cert: self.base.join(tls.cert),
            key: self.base.join(tls.key),
            sni: tls
                .sni
                .unwrap_or_default()
                .into_iter()
                .map(|entry| {
                    (
                        entry.names,
                        self.base.join(entry.cert),
                        self.base.join(entry.key),
                    )
                })
                .collect(),
        });
        if let Some(files) = &tls {
            // The files must be there; whether they hold a usable certificate and key is
            // decided where TLS is built (`App::new`, and `portcullis check`), so a start, a
            // reload and a check all refuse a bad one, and configuration knows nothing of TLS.
            let mut paths = vec![
                ("server.tls.cert", &files.cert),
                ("server.tls.key", &files.key),
            ];
            for (_, cert, key) in &files.sni {
                paths.push(("server.tls.sni", cert));
                paths.push(("server.tls.sni", key));
            }
            for (path, file) in paths {
                if let Err(err) = std::fs::metadata(file) {
                    self.problem(path, format!("cannot read {}: {err}", file.display()));
                }
            }
        }
        let redirect_http = raw
            .redirect_http
            .and_then(|text| self.socket_addr("server.redirect_http", &text));
        if redirect_http.is_some() && tls.is_none() {
            self.problem(
                "server.redirect_http",
                "redirects to HTTPS, so it needs server.tls",
            );
        }
        let hosts = raw
            .hosts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, host)| {
                let name = host.strip_prefix("*.").unwrap_or(&host);
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if valid || host.parse::<std::net::IpAddr>().is_ok() {
                    Some(host.to_ascii_lowercase())
                } else {
                    self.problem(
                        format!("server.hosts[{i}]"),
                        format!("{host:?} is not a host name (\"app.example.com\", \"*.example.com\") or an IP address"),
                    );
                    None
                }
            })
            .collect();
        let trusted_proxies = raw
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, text)| match parse_cidr(text) {
                Some(net) => Some(net),
                None => {
                    self.problem(
                        format!("server.trusted_proxies[{i}]"),
                        format!("{text:?} is not a CIDR like \"10.0.0.0/8\" or an IP address"),
                    );
                    None
                }
            })
            .collect();
        let max_body = self.size("server.max_body", raw.max_body, 10 << 20);
        let max_header_size = self.size("server.max_header_size", raw.max_header_size, 32 << 10);
        if !(8 << 10..=1 << 20).contains(&max_header_size) {
            self.problem("server.max_header_size", "must be between 8KiB and 1MiB");
        }
        let max_connections =
            self.connections("server.max_connections", raw.max_connections, 10_000);
        Server {
            listen,
            tls,
            redirect_http,
            hosts,
            trusted_proxies,
            max_body,
            max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
            header_read_timeout: self.timeout(
                "server.header_read_timeout",
                raw.header_read_timeout,
                Duration::from_secs(10),
            ),
            keepalive_timeout: self.timeout(
                "server.keepalive_timeout",
                raw.keepalive_timeout,
                Duration::from_secs(75),
            ),
            idle_timeout: self.timeout(
                "server.idle_timeout",
                raw.idle_timeout,
                Duration::from_secs(60),
            ),
            upstream_timeout: self.timeout(
                "server.upstream_timeout",
                raw.upstream_timeout,
                Duration::from_secs(60),
            ),
            connect_timeout: self.timeout(
                "server.connect_timeout",
                raw.connect_timeout,
                Duration::from_secs(5),
            ),
            max_connections,
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                raw.shutdown_grace,
                Duration::from_secs(30),
            ),
        }
    }

    fn forward_auth(&mut self, raw: raw::RawForwardAuth) -> Option<ForwardAuth> {
        let listen = self.socket_addr("forward_auth.listen", &raw.listen);
        let path_prefix = raw.path_prefix.unwrap_or_default();
        let well_formed = path_prefix.is_empty()
            || (path_prefix.starts_with('/')
                && !path_prefix.ends_with('/')
                && crate::path::normalize(&path_prefix).is_ok_and(|p| p == path_prefix));
        if !well_formed {
            self.problem(
                "forward_auth.path_prefix",
                format!("{path_prefix:?} must be empty or a normalized path like \"/authz\" (no trailing /)"),
            );
        }
        Some(ForwardAuth {
            listen: listen?,
            path_prefix,
        })
    }

    /// `max_connections` (the server's) is each upstream's default cap: no more connections
    /// to an upstream than clients, whatever the number of HTTP/2 streams each one opens.
    fn upstreams(
        &mut self,
        raw: &BTreeMap<String, raw::RawUpstream>,
        max_connections: usize,
    ) -> Vec<Upstream> {
        let mut upstreams = Vec::new();
        for (name, entry) in raw {
            let path = format!("upstreams.{name}");
            let table = match entry.clone() {
                raw::RawUpstream::Url(url) => raw::RawUpstreamTable {
                    url,
                    ca_file: None,
                    client_cert: None,
                    client_key: None,
                    http2: None,
                    keepalive_timeout: None,
                    max_connections: None,
                },
                raw::RawUpstream::Table(table) => table,
            };
            let text = &table.url;
            let Some(uri) = self.url(&path, text) else {
                continue;
            };
            if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                self.problem(
                    &path,
                    format!("{text:?}: an upstream is scheme and host only; a path prefix is not supported"),
                );
                continue;
            }
            let client = self.client_tls(
                &path,
                table.ca_file,
                table.client_cert,
                table.client_key,
                table.http2,
            );
            let keepalive_timeout = self.timeout(
                &format!("{path}.keepalive_timeout"),
                table.keepalive_timeout,
                Duration::from_secs(4),
            );
            let max_connections = self.connections(
                &format!("{path}.max_connections"),
                table.max_connections,
                max_connections,
            );
            let parts = uri.into_parts();
            if let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) {
                upstreams.push(Upstream {
                    name: name.clone(),
                    scheme,
                    authority,
                    client,
                    keepalive_timeout,
                    max_connections,
                });
            }
        }
        upstreams
    }

    fn client_tls(
        &mut self,
        path: &str,
        ca_file: Option<String>,
        client_cert: Option<String>,
        client_key: Option<String>,
        http2: Option<bool>,
    ) -> ClientTls {
        let ca_pem = ca_file.and_then(|file| self.file(&format!("{path}.ca_file"), &file));
        let client_pem = match (client_cert, client_key) {
            (Some(cert), Some(key)) => {
                let cert = self.file(&format!("{path}.client_cert"), &cert);
                let key = self.file(&format!("{path}.client_key"), &key);
                cert.zip(key)
            }
            (None, None) => None,
            _ => {
                self.problem(path, "client_cert and client_key go together");
                None
            }
        };
        // Whether the PEM holds usable certificates and keys is decided where TLS is built
        // (`App::new`, `portcullis check`: `tls::problems`).
        ClientTls {
            ca_pem,
            client_pem,
            http2: http2.unwrap_or(false),
        }
    }

    fn backend(&mut self, raw: raw::RawBackend) -> Option<Backend> {
        let login = match raw.login {
            Some(text) => self.url("backend.login", &text),
            None => {
                self.problem("backend.login", "is required when [backend] is present");
                None
            }
        };
        let refresh = raw.refresh.and_then(|t| self.url("backend.refresh", &t));
        let logout = raw.logout.and_then(|t| self.url("backend.logout", &t));
        let profile = raw.profile.and_then(|t| self.url("backend.profile", &t));
        let format = match raw.format.as_deref() {
            None | Some("json") => BodyFormat::Json,
            Some("form") => BodyFormat::Form,
            Some(other) => {
                self.problem(
                    "backend.format",
                    format!("{other:?} is not one of: json, form"),
                );
                BodyFormat::Json
            }
        };
        let mut pointers = |key: &str, value: Option<String>, defaults: &[&str]| match value {
            Some(pointer) if pointer.starts_with('/') => vec![pointer],
            Some(pointer) => {
                self.problem(
                    format!("backend.{key}"),
                    format!("{pointer:?} is not a JSON pointer (it starts with \"/\", e.g. \"/data/token\")"),
                );
                Vec::new()
            }
            None => defaults.iter().map(|s| (*s).to_owned()).collect(),
        };
        let access_token = pointers(
            "access_token",
            raw.access_token,
            &["/access_token", "/accessToken", "/token", "/access"],
        );
        let refresh_token = pointers(
            "refresh_token",
            raw.refresh_token,
            &["/refresh_token", "/refreshToken", "/refresh"],
        );
        let expires_in = pointers("expires_in", raw.expires_in, &["/expires_in", "/expiresIn"]);
        let refresh_field = raw
            .refresh_field
            .unwrap_or_else(|| "refresh_token".to_owned());
        if refresh_field.is_empty() {
            self.problem("backend.refresh_field", "must not be empty");
        }
        let timeout = self.timeout("backend.timeout", raw.timeout, Duration::from_secs(10));
        let client = self.client_tls("backend", raw.ca_file, None, None, None);
        let session_check = raw
            .session_check
            .and_then(|t| self.url("backend.session_check", &t));
        let session_check_format = match raw.session_check_format.as_deref() {
            None | Some("bearer") => CheckFormat::Bearer,
            Some("introspection") => CheckFormat::Introspection,
            Some(other) => {
                self.problem(
                    "backend.session_check_format",
                    format!("{other:?} is not one of: bearer, introspection"),
                );
                CheckFormat::Bearer
            }
        };
        Some(Backend {
            login: login?,
            refresh,
            logout,
            profile,
            format,
            refresh_field,
            access_token,
            refresh_token,
            expires_in,
            timeout,
            client,
            session_check,
            session_check_format,
        })
    }

    fn login(&mut self, raw: raw::RawLogin) -> Login {
        let path = self.site_path("login.path", raw.path, "/login");
        let fields = match raw.fields {
            None => vec![
                ("email".to_owned(), "email".to_owned()),
                ("password".to_owned(), "password".to_owned()),
            ],
            Some(RawFields::Same(names)) => names.into_iter().map(|n| (n.clone(), n)).collect(),
            Some(RawFields::Renamed(map)) => map.into_iter().collect(),
        };
        if fields.is_empty() {
            self.problem("login.fields", "needs at least one field");
        }
        for (backend, submitted) in &fields {
            if backend.is_empty() || submitted.is_empty() {
                self.problem("login.fields", "field names must not be empty");
            }
        }
        let success_redirect = self.site_path("login.success_redirect", raw.success_redirect, "/");
        let failure_redirect = self.site_path(
            "login.failure_redirect",
            raw.failure_redirect,
            "/login?error=wrong_credentials",
        );
        let return_param = raw.return_param.unwrap_or_else(|| "next".to_owned());
        if return_param.is_empty() || !return_param.bytes().all(is_token_byte) {
            self.problem(
                "login.return_param",
                format!("{return_param:?} is not a query parameter name"),
            );
        }
        let attempts = raw.attempts_per_minute.unwrap_or(10);
        let attempts_per_minute = u32::try_from(attempts).unwrap_or_else(|_| {
            self.problem("login.attempts_per_minute", "is too large");
            0
        });
        Login {
            path,
            fields,
            success_redirect,
            failure_redirect,
            return_param,
            attempts_per_minute,
        }
    }

    fn logout(&mut self, raw: raw::RawLogout) -> Logout {
        Logout {
            path: self.site_path("logout.path", raw.path, "/logout"),
            redirect: self.site_path("logout.redirect", raw.redirect, "/login"),
        }
    }

    fn session(&mut self, raw: raw::RawSession, tls: bool) -> Session {
        let mut cookie_name = |key: &str, value: Option<String>, default: &str| {
            let name = value.unwrap_or_else(|| default.to_owned());
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                self.problem(
                    format!("session.{key}"),
                    format!("{name:?} is not a valid cookie name"),
                );
            }
            name
        };
        let access_cookie = cookie_name("access_cookie", raw.access_cookie, "access_token");
        let refresh_cookie = cookie_name("refresh_cookie", raw.refresh_cookie, "refresh_token");
        if access_cookie == refresh_cookie {
            self.problem(
                "session.refresh_cookie",
                "must differ from session.access_cookie",
            );
        }
        let same_site = match raw
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("strict") => SameSite::Strict,
            Some("lax") => SameSite::Lax,
            Some("none") => SameSite::None,
            Some(other) => {
                self.problem(
                    "session.same_site",
                    format!("{other:?} is not one of: strict, lax, none"),
                );
                SameSite::Strict
            }
        };
        // Secure cookies are the default: browsers accept them on plain http://localhost too.
        let secure = raw.secure.unwrap_or(true);
        let _ = tls;
        if same_site == SameSite::None && !secure {
            self.problem(
                "session.same_site",
                "\"none\" requires secure = true (browsers refuse such cookies)",
            );
        }
        let domain = raw.domain.filter(|d| !d.is_empty());
        if let Some(domain) = &domain {
            if !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                self.problem("session.domain", format!("{domain:?} is not a domain name"));
            } else if is_public_suffix(domain) {
                self.problem(
                    "session.domain",
                    format!(
                        "{domain:?} is a public suffix: browsers refuse cookies for it, so no one could sign in; name your own domain (e.g. \"example.{domain}\")"
                    ),
                );
            }
            for (key, name) in [
                ("access_cookie", &access_cookie),
                ("refresh_cookie", &refresh_cookie),
            ] {
                if name.starts_with("__Host-") {
                    self.problem(
                        format!("session.{key}"),
                        "a __Host- cookie cannot have a domain",
                    );
                }
            }
        }
        let check_every = self.duration(
            "session.check_every",
            raw.check_every,
            Duration::from_secs(60),
        );
        if check_every.is_zero() {
            self.problem("session.check_every", "must be longer than 0s");
        }
        let check_fail = match raw.check_fail.as_deref() {
            None | Some("open") => CheckFail::Open,
            Some("closed") => CheckFail::Closed,
            Some(other) => {
                self.problem(
                    "session.check_fail",
                    format!("{other:?} is not one of: open, closed"),
                );
                CheckFail::Open
            }
        };
        Session {
            access_cookie,
            refresh_cookie,
            secure,
            same_site,
            domain,
            refresh_ahead: self.duration(
                "session.refresh_ahead",
                raw.refresh_ahead,
                Duration::from_secs(60),
            ),
            refresh_max_age: self.duration(
                "session.refresh_max_age",
                raw.refresh_max_age,
                Duration::from_secs(7 * 86_400),
            ),
            me_path: self.site_path("session.me_path", raw.me_path, "/auth/me"),
            refreshes_per_minute: u32::try_from(raw.refreshes_per_minute.unwrap_or(120))
                .unwrap_or_else(|_| {
                    self.problem("session.refreshes_per_minute", "is too large");
                    0
                }),
            check_every,
            check_fail,
            csrf: match raw.csrf.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("origin") => true,
                Some("off") => false,
                Some(other) => {
                    self.problem(
                        "session.csrf",
                        format!("{other:?} is not one of: origin, off"),
                    );
                    true
                }
            },
            allowed_origins: raw
                .allowed_origins
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(i, text)| match Origin::parse(text) {
                    Some(origin) => Some(origin),
                    None => {
                        self.problem(
                            format!("session.allowed_origins[{i}]"),
                            format!("{text:?} is not an origin like \"https://app.example.com\" (scheme, host, optional port; no path)"),
                        );
                        None
                    }
                })
                .collect(),
        }
    }

    fn cluster(&mut self, raw: raw::RawCluster) -> Option<Cluster> {
        let Some(redis) = raw.redis.filter(|r| !r.is_empty()) else {
            self.problem(
                "cluster.redis",
                "is required when [cluster] is present (redis://host:6379/0 or rediss://…)",
            );
            return None;
        };
        // Checked without naming the URL in the message: it may carry a password.
        let well_formed = redis.parse::<Uri>().ok().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("redis" | "rediss"))
                && uri.host().is_some_and(|h| !h.is_empty())
                && uri
                    .path()
                    .trim_start_matches('/')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                && uri.query().is_none()
        });
        if !well_formed {
            self.problem(
                "cluster.redis",
                "is not a URL like redis://[user:password@]host[:port][/db] or rediss://…",
            );
        }
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "portcullis:".to_owned());
        if key_prefix.len() > 64 || !key_prefix.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                "cluster.key_prefix",
                "must be at most 64 visible ASCII characters (no spaces)",
            );
        }
        let timeout = self.duration("cluster.timeout", raw.timeout, Duration::from_millis(250));
        if timeout.is_zero() || timeout > Duration::from_secs(10) {
            self.problem("cluster.timeout", "must be between 1ms and 10s");
        }
        let ca_pem = raw
            .ca_file
            .and_then(|file| self.file("cluster.ca_file", &file));
        if ca_pem.is_some() && !redis.starts_with("rediss://") {
            self.problem("cluster.ca_file", "only applies to a rediss:// URL");
        }
        well_formed.then_some(Cluster {
            redis,
            key_prefix,
            timeout,
            ca_pem,
        })
    }

    fn jwt(&mut self, raw: raw::RawJwt) -> Jwt {
        let names = raw.algorithms.unwrap_or_else(|| vec!["HS256".to_owned()]);
        if names.is_empty() {
            self.problem("jwt.algorithms", "needs at least one algorithm");
        }
        let mut algorithms = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match name.parse::<Alg>() {
                Ok(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Ok(_) => {}
                Err(_) => self.problem(
                    format!("jwt.algorithms[{i}]"),
                    format!("{name:?} is not a supported algorithm (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA)"),
                ),
            }
        }
        let secret = match (raw.secret, raw.secret_file) {
            (Some(_), Some(_)) => {
                self.problem(
                    "jwt.secret_file",
                    "set jwt.secret or jwt.secret_file, not both",
                );
                None
            }
            (Some(secret), None) => Some(secret.into_bytes()),
            (None, Some(file)) => self
                .file("jwt.secret_file", &file)
                .map(trim_trailing_newline),
            (None, None) => None,
        };
        let public_key_pem = raw
            .public_key_file
            .and_then(|file| self.file("jwt.public_key_file", &file));
        let jwks_json = raw
            .jwks_file
            .and_then(|file| self.file("jwt.jwks_file", &file));
        let jwks_url = raw
            .jwks_url
            .and_then(|text| self.url("jwt.jwks_url", &text));
        if raw.kid.is_some() && secret.is_none() && public_key_pem.is_none() {
            self.problem(
                "jwt.kid",
                "names the kid of jwt.secret or jwt.public_key_file, and neither is set",
            );
        }
        let keys = KeyMaterial {
            secret,
            public_key_pem,
            jwks_json,
            kid: raw.kid.filter(|kid| !kid.is_empty()),
        };
        let has_hmac = algorithms.iter().any(|a| a.is_hmac());
        let has_public = algorithms.iter().any(|a| !a.is_hmac());
        if keys.secret.is_none()
            && keys.public_key_pem.is_none()
            && keys.jwks_json.is_none()
            && jwks_url.is_none()
        {
            self.problem(
                "jwt.secret",
                "no verification key: set jwt.secret (or PORTCULLIS_JWT__SECRET), secret_file, public_key_file, jwks_file or jwks_url",
            );
        } else if has_hmac && keys.secret.is_none() && !has_public {
            self.problem(
                "jwt.secret",
                "HS* algorithms need jwt.secret or jwt.secret_file",
            );
        }
        if let Some(secret) = &keys.secret {
            if secret.len() < 32 {
                self.problem(
                    "jwt.secret",
                    format!(
                        "is {} bytes; an HMAC secret needs at least 32",
                        secret.len()
                    ),
                );
            }
            if !has_hmac {
                self.problem(
                    "jwt.secret",
                    "is set but jwt.algorithms lists no HS* algorithm",
                );
            }
        }
        // Build the key set once here so that a key that cannot be used fails the boot.
        if self.problems.0.iter().all(|p| !p.path.starts_with("jwt.")) {
            if let Err(err) = crate::auth::jwt::KeySet::build(&algorithms, &keys) {
                self.problem("jwt", err.to_string());
            }
        }
        let audience = raw
            .audience
            .map(raw::OneOrMany::into_vec)
            .unwrap_or_default();
        let claims = self.claims("jwt.claims", raw.claims);
        let cache = raw.cache.unwrap_or(10_000);
        let jwks_refresh = self.duration(
            "jwt.jwks_refresh",
            raw.jwks_refresh,
            Duration::from_secs(300),
        );
        if jwks_refresh.is_zero() {
            self.problem("jwt.jwks_refresh", "must be longer than 0s");
        }
        Jwt {
            algorithms,
            keys,
            jwks_url,
            jwks_refresh,
            issuer: raw.issuer,
            audience,
            leeway: self.duration("jwt.leeway", raw.leeway, Duration::from_secs(30)),
            claims,
            cache: usize::try_from(cache).unwrap_or(usize::MAX),
            from: self.token_sources(raw.from),
        }
    }

    fn token_sources(&mut self, raw: Option<Vec<String>>) -> TokenSources {
        let Some(names) = raw else {
            return TokenSources::default();
        };
        let mut sources = TokenSources {
            cookie: false,
            authorization: false,
        };
        for (i, name) in names.iter().enumerate() {
            match name.to_ascii_lowercase().as_str() {
                "cookie" => sources.cookie = true,
                "authorization" => sources.authorization = true,
                _ => self.problem(
                    format!("jwt.from[{i}]"),
                    format!("{name:?} is not one of: cookie, authorization"),
                ),
            }
        }
        if names.is_empty() {
            self.problem("jwt.from", "needs at least one of: cookie, authorization");
        }
        sources
    }

    fn claims(
        &mut self,
        path: &str,
        raw: Option<BTreeMap<String, Allowed>>,
    ) -> Vec<(String, Vec<String>)> {
        let mut claims = Vec::new();
        for (name, allowed) in raw.unwrap_or_default() {
            let values = match allowed {
                Allowed::One(value) => vec![value],
                Allowed::Many(values) => values,
            };
            if values.is_empty() {
                self.problem(format!("{path}.{name}"), "needs at least one allowed value");
            }
            claims.push((name, values));
        }
        claims
    }

    fn rules(&mut self, raw: Vec<RawRoute>, upstreams: &[Upstream]) -> Vec<Rule> {
        if raw.is_empty() {
            self.problem("routes", "needs at least one [[routes]] entry");
        }
        let mut rules = Vec::new();
        for (i, route) in raw.into_iter().enumerate() {
            let at = |key: &str| format!("routes[{i}].{key}");
            let pattern = match route.path {
                None => {
                    self.problem(at("path"), "is required");
                    None
                }
                Some(text) => match Pattern::parse(&text) {
                    Ok(pattern) => Some(pattern),
                    Err(message) => {
                        self.problem(at("path"), format!("{text:?}: {message}"));
                        None
                    }
                },
            };
            let host = route.host.and_then(|text| match HostPattern::parse(&text) {
                Ok(host) => Some(host),
                Err(message) => {
                    self.problem(at("host"), message);
                    None
                }
            });
            let auth = match route.auth.as_deref() {
                None | Some("public") => crate::rules::Auth::Public,
                Some("required") => crate::rules::Auth::Required,
                Some("guest") => crate::rules::Auth::Guest,
                Some(other) => {
                    self.problem(
                        at("auth"),
                        format!("{other:?} is not one of: public, required, guest"),
                    );
                    crate::rules::Auth::Public
                }
            };
            let on_unauthenticated = match route.on_unauthenticated.as_deref() {
                None | Some("auto") => crate::rules::OnUnauthenticated::Auto,
                Some("redirect") => crate::rules::OnUnauthenticated::Redirect,
                Some("status") => crate::rules::OnUnauthenticated::Status,
                Some(other) => {
                    self.problem(
                        at("on_unauthenticated"),
                        format!("{other:?} is not one of: redirect, status, auto"),
                    );
                    crate::rules::OnUnauthenticated::Auto
                }
            };
            let upstream = match route.upstream {
                None => {
                    self.problem(at("upstream"), "is required");
                    None
                }
                Some(name) => match upstreams.iter().position(|u| u.name == name) {
                    Some(index) => Some(index),
                    None => {
                        let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                        self.problem(
                            at("upstream"),
                            format!("no upstream named {name:?} (known: {})", known.join(", ")),
                        );
                        None
                    }
                },
            };
            let claims = self.claims(&at("claims"), route.claims);
            if !claims.is_empty() && auth != crate::rules::Auth::Required {
                self.problem(
                    at("claims"),
                    "only applies to routes with auth = \"required\"",
                );
            }
            let mut headers = Vec::new();
            for (name, claim) in route.headers.unwrap_or_default() {
                match HeaderName::try_from(name.as_str()) {
                    // nginx and gunicorn drop header names with `_` by default, so the
                    // application would only ever see a client's forged `-` spelling.
                    Ok(_) if name.contains('_') => self.problem(
                        at("headers"),
                        format!(
                            "{name:?} contains `_`: many servers (nginx, gunicorn) drop such headers; write {:?}",
                            name.replace('_', "-")
                        ),
                    ),
                    Ok(header) if !crate::headers::is_reserved_header(&header) => {
                        headers.push((header, claim))
                    }
                    Ok(_) => self.problem(
                        at("headers"),
                        format!("{name:?} is a header the proxy manages itself"),
                    ),
                    Err(_) => self.problem(at("headers"), format!("{name:?} is not a header name")),
                }
            }
            if !headers.is_empty() && auth != crate::rules::Auth::Required {
                self.problem(
                    at("headers"),
                    "only applies to routes with auth = \"required\"",
                );
            }
            if let (Some(pattern), Some(upstream)) = (pattern, upstream) {
                rules.push(Rule {
                    index: i,
                    host,
                    pattern,
                    auth,
                    on_unauthenticated,
                    upstream,
                    claims,
                    headers,
                });
            }
        }
        rules
    }

    fn log(&mut self, raw: raw::RawLog) -> Log {
        let format = match raw.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem("log.format", format!("{other:?} is not one of: text, json"));
                LogFormat::Text
            }
        };
        let level = raw.level.unwrap_or_else(|| "info".to_owned());
        if level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            self.problem(
                "log.level",
                format!(
                    "{level:?} is not a log level or filter (e.g. \"info\", \"portcullis=debug\")"
                ),
            );
        }
        Log { format, level }
    }

    /// The forward-auth listener answers with bearer tokens, so it may share an address with
    /// no other listener (least of all the public one).
    fn listeners(
        &mut self,
        server: &Server,
        admin: Option<&Admin>,
        forward_auth: Option<&ForwardAuth>,
    ) {
        let Some(forward_auth) = forward_auth else {
            return;
        };
        // Port 0 asks the system for a free port: never the same one twice.
        let clash = |other: &SocketAddr| {
            other.port() != 0
                && other.port() == forward_auth.listen.port()
                && (other.ip() == forward_auth.listen.ip()
                    || other.ip().is_unspecified()
                    || forward_auth.listen.ip().is_unspecified())
        };
        if server
            .listen
            .iter()
            .chain(server.redirect_http.iter())
            .any(clash)
        {
            self.problem(
                "forward_auth.listen",
                "must differ from server.listen and server.redirect_http (its answers carry bearer tokens)",
            );
        }
        if admin.is_some_and(|admin| clash(&admin.listen)) {
            self.problem("forward_auth.listen", "must differ from admin.listen");
        }
    }

    fn cross_checks(&mut self, login: &Login, logout: &Logout, session: &Session) {
        let own = [
            ("login.path", &login.path),
            ("logout.path", &logout.path),
            ("session.me_path", &session.me_path),
        ];
        for (i, (key, path)) in own.iter().enumerate() {
            if path.contains('?') {
                self.problem(*key, "must not contain a query");
            }
            for (other_key, other) in &own[i + 1..] {
                if path == other {
                    self.problem(*other_key, format!("is the same path as {key}"));
                }
            }
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_trailing_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Whether `domain` (a leading `.` ignored) is on the public suffix list (`com`, `co.uk`,
/// `github.io`): a domain under which anyone can register names, for which browsers refuse
/// to set cookies. Names the list does not know (`localhost`, an intranet's `corp`) are not.
fn is_public_suffix(domain: &str) -> bool {
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    let bytes = domain.as_bytes();
    psl::domain(bytes).is_none() && psl::suffix(bytes).is_some_and(|suffix| suffix.is_known())
}
