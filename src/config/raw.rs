//! The configuration file as written: serde structs that mirror the TOML/YAML keys one to one.
//!
//! Nothing here is checked beyond its JSON/TOML type: durations, sizes, URLs and names stay
//! strings so that `Config::validate` can report every problem with its key path at once.
//! Every struct denies unknown fields, so a misspelt key is an error, never silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One value or a list of them (`listen = "a"` or `listen = ["a", "b"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// A duration or size: a string such as `"30s"` / `"10MiB"`, or a bare number (seconds / bytes),
/// which is what environment overrides like `PORTCULLIS_SERVER__MAX_BODY=1024` produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    Number(u64),
    Text(String),
}

/// A claim requirement value: `role = "admin"` or `role = ["admin", "owner"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Allowed {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub admin: Option<RawAdmin>,
    pub forward_auth: Option<RawForwardAuth>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub backend: Option<RawBackend>,
    #[serde(default)]
    pub login: RawLogin,
    #[serde(default)]
    pub logout: RawLogout,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub jwt: RawJwt,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub log: RawLog,
    pub cluster: Option<RawCluster>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<OneOrMany<String>>,
    pub tls: Option<RawTls>,
    pub redirect_http: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_body: Option<Quantity>,
    pub max_header_size: Option<Quantity>,
    pub header_read_timeout: Option<Quantity>,
    pub keepalive_timeout: Option<Quantity>,
    pub idle_timeout: Option<Quantity>,
    pub upstream_timeout: Option<Quantity>,
    pub connect_timeout: Option<Quantity>,
    pub max_connections: Option<u64>,
    pub shutdown_grace: Option<Quantity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    /// More certificates, chosen by the name the client asks for (SNI).
    pub sni: Option<Vec<RawSniCert>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniCert {
    pub names: Vec<String>,
    pub cert: String,
    pub key: String,
}

/// An upstream: a URL, or a table with TLS and protocol settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawUpstream {
    Url(String),
    Table(RawUpstreamTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTable {
    pub url: String,
    /// PEM CA certificates trusted for this upstream instead of the public roots.
    pub ca_file: Option<String>,
    /// A client certificate chain and key presented to the upstream (mutual TLS).
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Speak HTTP/2: negotiated by ALPN over https, prior knowledge (h2c) over http.
    pub http2: Option<bool>,
    /// How long a connection to it stays open unused (below the upstream's own keep-alive).
    pub keepalive_timeout: Option<Quantity>,
    /// Connections to it open at once; requests beyond wait for one, then get `503`.
    pub max_connections: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub explain: Option<bool>,
    /// A bearer token that `POST /reload` (and the other state-changing admin endpoints)
    /// must carry; without one they only answer loopback peers.
    pub token: Option<String>,
}

/// `[forward_auth]`: answer an ingress's auth subrequests on a listener of their own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForwardAuth {
    pub listen: String,
    /// Stripped from the path of a request that describes itself (Envoy's `path_prefix`).
    pub path_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub login: Option<String>,
    pub refresh: Option<String>,
    pub logout: Option<String>,
    pub profile: Option<String>,
    pub format: Option<String>,
    pub refresh_field: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<String>,
    pub timeout: Option<Quantity>,
    /// PEM CA certificates trusted for the backend instead of the public roots.
    pub ca_file: Option<String>,
    pub session_check: Option<String>,
    pub session_check_format: Option<String>,
}

/// `login.fields`: a list of names copied as they are, or a table `backend_field = "submitted_field"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawFields {
    Same(Vec<String>),
    Renamed(BTreeMap<String, String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub path: Option<String>,
    pub fields: Option<RawFields>,
    pub success_redirect: Option<String>,
    pub failure_redirect: Option<String>,
    pub return_param: Option<String>,
    pub attempts_per_minute: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogout {
    pub path: Option<String>,
    pub redirect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub access_cookie: Option<String>,
    pub refresh_cookie: Option<String>,
    pub secure: Option<bool>,
    pub same_site: Option<String>,
    pub domain: Option<String>,
    pub refresh_ahead: Option<Quantity>,
    pub refresh_max_age: Option<Quantity>,
    pub me_path: Option<String>,
    pub refreshes_per_minute: Option<u64>,
    pub check_every: Option<Quantity>,
    pub check_fail: Option<String>,
    pub csrf: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub algorithms: Option<Vec<String>>,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub public_key_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<Quantity>,
    pub jwks_file: Option<String>,
    pub kid: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<OneOrMany<String>>,
    pub leeway: Option<Quantity>,
    pub claims: Option<BTreeMap<String, Allowed>>,
    pub cache: Option<u64>,
    pub from: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    pub auth: Option<String>,
    pub upstream: Option<String>,
    pub on_unauthenticated: Option<String>,
    pub claims: Option<BTreeMap<String, Allowed>>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[cluster]`: state shared by every instance through Redis.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<Quantity>,
    /// PEM CA certificates trusted for `rediss://` instead of the public roots.
    pub ca_file: Option<String>,
}
