//! Configuration: the only user of figment.
//!
//! Loading happens in two steps. figment merges the file (TOML or YAML) with `PORTCULLIS_*`
//! environment overrides into a [`raw::RawConfig`] that mirrors the file; [`Config::validate`]
//! then turns it into a [`Config`] whose every value is checked and typed, collecting *every*
//! problem with its key path so an operator fixes a config in one pass (`config/validate.rs`). Key and secret files
//! are read here, at start-up: a bad key fails the boot, never the first request.

pub mod raw;
mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format as _, Toml, Yaml};
use figment::Figment;
use http::Uri;
use ipnet::IpNet;

use crate::auth::csrf::Origin;
use crate::auth::jwt::{Alg, KeyMaterial};
use crate::rules::Rule;
use raw::RawConfig;

/// The environment prefix of configuration overrides: `PORTCULLIS_JWT__SECRET` sets `jwt.secret`.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// A validated configuration. Every field is usable as it is.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub admin: Option<Admin>,
    pub forward_auth: Option<ForwardAuth>,
    pub upstreams: Vec<Upstream>,
    pub backend: Option<Backend>,
    pub login: Login,
    pub logout: Logout,
    pub session: Session,
    pub jwt: Jwt,
    pub rules: Vec<Rule>,
    pub log: Log,
    /// `[cluster]`: shared state through Redis; `None` keeps every instance to itself.
    pub cluster: Option<Cluster>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<TlsFiles>,
    /// A plain-HTTP address that only redirects to HTTPS.
    pub redirect_http: Option<SocketAddr>,
    /// The host names the server answers for (lower-case; `*.example.com` stands for one
    /// label). The HTTPS redirect goes only to these, or to the certificates' names when empty.
    pub hosts: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body: u64,
    /// The cap on a request's header section (request line included); larger ones get 431.
    pub max_header_size: usize,
    /// Time to send a request head, from its first byte (and a TLS handshake, and the first
    /// byte of a new plain connection).
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.1 connection may sit idle between requests.
    pub keepalive_timeout: Duration,
    /// How long an HTTP/2 connection without requests (PINGs aside), or a TLS connection that
    /// has sent nothing since its handshake, stays open.
    pub idle_timeout: Duration,
    /// How long the upstream may take to start its response before the client gets 504.
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `(names, cert, key)`: certificates chosen by SNI; the default one serves other names.
    pub sni: Vec<(Vec<String>, PathBuf, PathBuf)>,
}

/// How the proxy's client connects to an upstream or the backend.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificates to trust instead of the public (webpki) roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key for mutual TLS.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Serve `GET /explain?method=&url=` (off by default: it reveals the rule set).
    pub explain: bool,
    /// The bearer token state-changing admin endpoints (`POST /reload`) require; without
    /// one, they answer only peers on the loopback interface.
    pub token: Option<String>,
}

/// `[forward_auth]`: where an ingress asks whether a request may go through.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    pub listen: SocketAddr,
    /// Removed from the path of a request without `X-Forwarded-Uri`/`X-Original-URI` (Envoy
    /// `ext_authz`): `""` or a path like `/authz`, without a trailing `/`.
    pub path_prefix: String,
}

/// A named upstream: where routed requests go. Only scheme and authority are kept.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub client: ClientTls,
    /// How long a pooled connection may sit unused before the proxy closes it: below the
    /// upstream's own keep-alive timeout, so that a request never meets a connection the
    /// upstream is closing.
    pub keepalive_timeout: Duration,
    /// Connections to this upstream open at once (idle ones included).
    pub max_connections: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
}

/// The credential service: where passwords are exchanged for tokens.
#[derive(Debug, Clone)]
pub struct Backend {
    pub login: Uri,
    pub refresh: Option<Uri>,
    pub logout: Option<Uri>,
    pub profile: Option<Uri>,
    pub format: BodyFormat,
    pub refresh_field: String,
    /// JSON pointers tried in order to find each value in a login or refresh answer.
    pub access_token: Vec<String>,
    pub refresh_token: Vec<String>,
    pub expires_in: Vec<String>,
    pub timeout: Duration,
    pub client: ClientTls,
    /// Where a verified token is confirmed with the backend (`backend.session_check`).
    pub session_check: Option<Uri>,
    pub session_check_format: CheckFormat,
}

/// How `backend.session_check` is asked about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFormat {
    /// `GET` with `Authorization: Bearer <token>`: 2xx valid, 401/403 ended.
    Bearer,
    /// RFC 7662: `POST token=<token>`, answered `{"active": true|false}`.
    Introspection,
}

/// What a token the backend never confirmed gets when the backend cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFail {
    Open,
    Closed,
}

/// `[cluster]`: Redis (or Valkey) holding what every instance shares.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `redis://` or `rediss://` URL, credentials included: never logged as it is.
    pub redis: String,
    pub key_prefix: String,
    /// Deadline of each Redis call; past it the instance carries on with local state.
    pub timeout: Duration,
    /// PEM CA certificates trusted for `rediss://` instead of the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Cluster {
    /// The Redis URL without its credentials, for logs.
    pub fn redis_redacted(&self) -> String {
        match self.redis.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.redis.clone(),
            },
            None => "<redis url>".to_owned(),
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.redis_redacted())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Login {
    pub path: String,
    /// `(backend field, submitted field)` pairs, in configuration order.
    pub fields: Vec<(String, String)>,
    pub success_redirect: String,
    pub failure_redirect: String,
    pub return_param: String,
    /// Login POSTs allowed per client IP per minute; 0 disables the limit.
    pub attempts_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct Logout {
    pub path: String,
    pub redirect: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub access_cookie: String,
    pub refresh_cookie: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
    pub refresh_ahead: Duration,
    /// Lifetime of the refresh cookie when the refresh token carries no readable `exp`.
    pub refresh_max_age: Duration,
    pub me_path: String,
    /// Refreshes that start a backend call, per client IP per minute; 0 disables the budget.
    pub refreshes_per_minute: u32,
    /// With `backend.session_check`: how long the backend's answer about a token is kept.
    pub check_every: Duration,
    pub check_fail: CheckFail,
    /// `session.csrf = "origin"`: unsafe requests on `required` routes authenticated by the
    /// cookie must come from this site's origin or `allowed_origins`.
    pub csrf: bool,
    pub allowed_origins: Vec<Origin>,
}

#[derive(Debug, Clone)]
pub struct Jwt {
    pub algorithms: Vec<Alg>,
    pub keys: KeyMaterial,
    pub jwks_url: Option<Uri>,
    /// How often keys are fetched again from `jwks_url` (default 5 minutes).
    pub jwks_refresh: Duration,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: Duration,
    pub claims: Vec<(String, Vec<String>)>,
    /// Entries in the verified-token cache; 0 turns it off.
    pub cache: usize,
    /// Where `required` routes read the access token from.
    pub from: TokenSources,
}

/// `jwt.from`: the places a request's access token is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSources {
    /// The access cookie (renewed with the refresh cookie when it expires).
    pub cookie: bool,
    /// The client's own `Authorization: Bearer` (a mobile app, a script): verified like the
    /// cookie, never renewed, and exempt from the CSRF guard, since a browser never attaches
    /// it on its own.
    pub authorization: bool,
}

impl Default for TokenSources {
    fn default() -> TokenSources {
        TokenSources {
            cookie: true,
            authorization: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// Every problem found in a configuration, each with its key path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn from_figment(error: figment::Error) -> Problems {
        let mut problems = Problems::default();
        for error in error {
            let mut path = error.path.join(".");
            // figment names the profile first ("default.server"); operators never write it.
            if let Some(rest) = path.strip_prefix("default.") {
                path = rest.to_owned();
            } else if path == "default" {
                path.clear();
            }
            problems.push(path, error.kind.to_string());
        }
        problems
    }
}

impl Config {
    /// Loads `path` (TOML, or YAML for `.yaml`/`.yml`) with `PORTCULLIS_*` overrides applied.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        if !path.exists() {
            return Err(Problems(vec![Problem {
                path: String::new(),
                message: format!("config file {} does not exist", path.display()),
            }]));
        }
        let file = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Figment::from(Yaml::file_exact(path)),
            _ => Figment::from(Toml::file_exact(path)),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_figment(file.merge(env_overrides()), base)
    }

    /// Parses TOML text without environment overrides; relative file paths resolve against
    /// the current directory. Used by tests and the embedded demo.
    pub fn from_toml_str(text: &str) -> Result<Config, Problems> {
        Self::from_figment(Figment::from(Toml::string(text)), Path::new("."))
    }

    fn from_figment(figment: Figment, base: &Path) -> Result<Config, Problems> {
        let raw: RawConfig = figment.extract().map_err(Problems::from_figment)?;
        Self::validate(raw, base)
    }

    /// Checks every value of `raw`, reads key files (relative to `base`), and reports every
    /// problem found rather than the first.
    pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, Problems> {
        validate::validate(raw, base)
    }

    pub fn upstream(&self, index: usize) -> &Upstream {
        &self.upstreams[index]
    }

    /// Every header name a rule fills from claims, sorted, once each: clients may never send
    /// these.
    pub fn claim_headers(&self) -> Vec<http::HeaderName> {
        let mut names: Vec<http::HeaderName> = self
            .rules
            .iter()
            .flat_map(|rule| rule.headers.iter().map(|(name, _)| name.clone()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        names
    }
}

/// `PORTCULLIS_A__B=value` sets `a.b`. `PORTCULLIS_CONFIG` names the file and is not a key.
fn env_overrides() -> Env {
    Env::prefixed(ENV_PREFIX).ignore(&["config"]).split("__")
}

#[cfg(test)]
mod tests;
