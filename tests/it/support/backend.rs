//! The fake backend: the credential service Portcullis sends logins to. It checks
//! passwords, issues real tokens signed with a [`TestKey`], refreshes and revokes them, and
//! counts every call, so tests prove both what the proxy did and what it asked for.
//!
//! ```ignore
//! let key = TestKey::new("RS256");
//! let backend = support::backend(&key).shape(Shape::SimpleJwt).refresh_field("refresh").run().await;
//! // proxy config: key.jwt_toml() + backend.backend_toml() + ...
//! assert_eq!(backend.logins(), 1);
//! ```
//!
//! Endpoints (anything else is `404`, a wrong method `405`):
//!
//! | endpoint | does |
//! |---|---|
//! | `POST /auth/login` | credentials as JSON or a form ([`Format`]) → tokens in the [`Shape`]'s JSON; wrong ones → `401 {"detail":"wrong"}` ([`BackendBuilder::reject_status`]) |
//! | `POST /auth/refresh` | `{"<refresh_field>": token}` → a new access token, and a new refresh token when rotating (the old one is then revoked) |
//! | `POST /auth/logout` | records `Authorization`; revokes that bearer token and any refresh token in the body |
//! | `GET /auth/profile` | bearer access token → `{"email", "name", "sub"}` |
//! | `GET /auth/session` | session check: bearer access token of a user whose sessions were not ended → `200`, else `401` |
//! | `POST /auth/introspect` | RFC 7662: form `token=…` → `{"active": bool}` (`401` without the client's Basic credentials `portcullis:s3cret`) |
//! | `GET /.well-known/jwks.json` | the key's JWKS, replaceable with [`Backend::set_jwks`] |
//! | `/api/*` (any method) | a protected API: bearer access token → `{"user": sub, "method", "path"}`, else `401` |
//!
//! Access tokens carry `sub` and `email` (both the login name), `iat`, `exp`, a unique `jti`,
//! `iss`/`aud` when configured, `token_type: "access"` in the SimpleJWT shape, and the
//! user's extra claims. Refresh tokens carry `sub`, `iat`, `exp`, `jti`, `iss`/`aud`,
//! `typ: "refresh"` and `token_type: "refresh"`. Bearer checks (profile, API) verify the
//! signature, `exp`, `iss`/`aud` when configured, that the token is no refresh token, and
//! that it was not revoked.
//!
//! [`Fault`]s change only the login and refresh answers (except `Down`, which takes the
//! whole backend away).

mod endpoints;
mod tokens;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Map, Value};
use tokio::net::TcpSocket;

use super::{
    keys::TestKey,
    serve::{Counter, Server},
};

/// The user that exists when no [`BackendBuilder::user`] is configured.
pub const DEFAULT_USER: &str = "alice@example.com";
/// [`DEFAULT_USER`]'s password.
pub const DEFAULT_PASSWORD: &str = "secret";

/// Request bodies larger than this get `413`.
const BODY_LIMIT: usize = 1024 * 1024;

/// The JSON the backend answers a login or refresh with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{"access_token", "refresh_token", "token_type": "bearer", "expires_in"}` (OAuth2 style).
    AccessRefresh,
    /// `{"token"}`, no refresh token.
    Token,
    /// `{"accessToken", "refreshToken", "expiresIn", "user": {"email"}}` (json-server-auth style).
    CamelCase,
    /// `{"access", "refresh"}` (Django REST framework SimpleJWT); access tokens carry
    /// `token_type: "access"`.
    SimpleJwt,
}

/// How the backend expects login and refresh bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json` object.
    Json,
    /// `application/x-www-form-urlencoded` (OAuth2 password style, FastAPI Users).
    Form,
}

/// Misbehaviour of the login and refresh endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing listens: the backend's port refuses connections (all endpoints).
    Down,
    /// Answers normally after this long (the call is counted on arrival).
    Slow(Duration),
    /// `200 text/html`.
    Html,
    /// `200` with an empty body.
    Empty,
    /// `200 {"ok":true}`: JSON without a token.
    NoToken,
    /// Correct credentials get well-formed tokens signed with a different key.
    BadToken,
    /// `200 application/json` streaming this many bytes (`{"access_token":"aaaa…`), chunked,
    /// without `Content-Length`.
    Huge(u64),
    /// This status with `{"detail":"backend fault"}`; `429` and `503` add `Retry-After: 30`.
    Status(u16),
    /// Normal answer plus `Set-Cookie: access_token=<token>; HttpOnly; Path=/`.
    SetCookie,
    /// Correct credentials get an access token with `; Path=/ evil` appended (a `;` and a
    /// space: unsafe in a cookie).
    WeirdToken,
    /// Correct credentials get a valid access token over 6 KiB (too big for a cookie).
    LongToken,
}

/// Starts configuring a backend that signs with `key`.
pub fn backend(key: &TestKey) -> BackendBuilder {
    BackendBuilder {
        key: key.clone(),
        shape: Shape::AccessRefresh,
        format: Format::Json,
        users: Vec::new(),
        user_field: "email".to_owned(),
        password_field: "password".to_owned(),
        access_ttl: 900,
        refresh_ttl: 7 * 24 * 3600,
        fault: None,
        reject_status: 401,
        refresh_field: "refresh_token".to_owned(),
        rotate_refresh: true,
        issuer: None,
        audience: None,
        refresh_delay: None,
        opaque_refresh: false,
        clock_ahead: 0,
    }
}

/// Backend settings; see the module docs for what each changes.
#[derive(Clone, Debug)]
pub struct BackendBuilder {
    key: TestKey,
    shape: Shape,
    format: Format,
    users: Vec<User>,
    user_field: String,
    password_field: String,
    access_ttl: i64,
    refresh_ttl: i64,
    fault: Option<Fault>,
    reject_status: u16,
    refresh_field: String,
    rotate_refresh: bool,
    issuer: Option<String>,
    audience: Option<String>,
    refresh_delay: Option<Duration>,
    opaque_refresh: bool,
    clock_ahead: i64,
}

#[derive(Clone, Debug)]
struct User {
    login: String,
    password: String,
    claims: Map<String, Value>,
}

impl BackendBuilder {
    /// The answer's JSON shape (default [`Shape::AccessRefresh`]).
    pub fn shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    /// The expected login/refresh body format (default [`Format::Json`]). A body of the
    /// other type gets `422`.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Adds a user. Without any, [`DEFAULT_USER`]/[`DEFAULT_PASSWORD`] exists.
    pub fn user(self, login: &str, password: &str) -> Self {
        self.user_with_claims(login, password, json!({}))
    }

    /// Adds a user whose access tokens also carry `claims` (e.g. `{"role": "admin"}`;
    /// a `name` claim also names them in the profile).
    pub fn user_with_claims(mut self, login: &str, password: &str, claims: Value) -> Self {
        let Value::Object(claims) = claims else {
            panic!("user claims must be a JSON object, got {claims}");
        };
        self.users.push(User {
            login: login.to_owned(),
            password: password.to_owned(),
            claims,
        });
        self
    }

    /// The body fields holding the login name and password (default `email`, `password`).
    pub fn login_fields(mut self, user_field: &str, password_field: &str) -> Self {
        user_field.clone_into(&mut self.user_field);
        password_field.clone_into(&mut self.password_field);
        self
    }

    /// Access token lifetime in seconds (default 900; negative issues expired tokens).
    pub fn access_ttl(mut self, secs: i64) -> Self {
        self.access_ttl = secs;
        self
    }

    /// Refresh token lifetime in seconds (default 7 days; negative issues expired ones,
    /// which the refresh endpoint then rejects).
    pub fn refresh_ttl(mut self, secs: i64) -> Self {
        self.refresh_ttl = secs;
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The status for wrong credentials (default 401; DRF says 400 or 401, FastAPI 400,
    /// validation errors 422), always with `{"detail":"wrong"}`.
    pub fn reject_status(mut self, status: u16) -> Self {
        self.reject_status = status;
        self
    }

    /// The refresh body's field (default `refresh_token`; SimpleJWT uses `refresh`).
    pub fn refresh_field(mut self, field: &str) -> Self {
        field.clone_into(&mut self.refresh_field);
        self
    }

    /// Whether a refresh also issues a new refresh token and revokes the old one
    /// (default true).
    pub fn rotate_refresh(mut self, rotate: bool) -> Self {
        self.rotate_refresh = rotate;
        self
    }

    /// Puts `iss` in issued tokens and requires it of bearer tokens.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// Puts `aud` in issued tokens and requires it of bearer tokens.
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Holds every refresh answer back this long, so concurrent refreshes overlap
    /// (single-flight tests).
    pub fn refresh_delay(mut self, delay: Duration) -> Self {
        self.refresh_delay = Some(delay);
        self
    }

    /// Issues refresh tokens that are random strings rather than JWTs (nothing to read in
    /// them: no `sub`, no `iat`, no `exp`).
    pub fn opaque_refresh(mut self) -> Self {
        self.opaque_refresh = true;
        self
    }

    /// The backend's clock runs this many seconds ahead: `iat` and `exp` of what it issues
    /// are that much later.
    pub fn clock_ahead(mut self, secs: i64) -> Self {
        self.clock_ahead = secs;
        self
    }

    /// Starts the backend on `127.0.0.1:0` (or, with [`Fault::Down`], reserves a port
    /// that refuses connections).
    pub async fn run(mut self) -> Backend {
        if self.users.is_empty() {
            self = self.user(DEFAULT_USER, DEFAULT_PASSWORD);
        }
        let foreign_key =
            (self.fault == Some(Fault::BadToken)).then(|| TestKey::new(self.key.alg()));
        let state = Arc::new(State {
            signing_key: Mutex::new(self.key.clone()),
            known_keys: Mutex::new(vec![self.key.clone()]),
            jwks: Mutex::new(self.key.jwks()),
            foreign_key,
            settings: self,
            grants: Mutex::default(),
            revoked_access: Mutex::default(),
            ended: Mutex::default(),
            check_status: Mutex::default(),
            check_delay: Mutex::default(),
            session_checks: Counter::default(),
            logins: Counter::default(),
            refreshes: Counter::default(),
            logouts: Counter::default(),
            profiles: Counter::default(),
            jwks_fetches: Counter::default(),
            api_calls: Counter::default(),
            last_login_body: Mutex::default(),
            last_login_content_type: Mutex::default(),
            last_refresh_body: Mutex::default(),
            last_logout_authorization: Mutex::default(),
        });

        let (addr, server, refusing) = if state.settings.fault == Some(Fault::Down) {
            // A bound socket that never listens: connections to it are refused, and the
            // port stays ours so no other test's server can appear there.
            let socket = TcpSocket::new_v4().expect("creating a TCP socket");
            socket
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("binding 127.0.0.1:0");
            let addr = socket.local_addr().expect("a bound socket has an address");
            (addr, None, Some(socket))
        } else {
            let server = Server::start({
                let state = Arc::clone(&state);
                move |request, _stopped| endpoints::handle(Arc::clone(&state), request)
            })
            .await;
            (server.addr(), Some(server), None)
        };
        Backend {
            inner: Arc::new(Inner {
                addr,
                _server: server,
                _refusing: refusing,
                state,
            }),
        }
    }
}

/// A running backend. Clones share it; it stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Backend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    _server: Option<Server>,
    _refusing: Option<TcpSocket>,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    settings: BackendBuilder,
    /// Signs new tokens; [`Backend::rotate_key`] replaces it.
    signing_key: Mutex<TestKey>,
    /// Every key that ever signed here: bearer checks accept any of them.
    known_keys: Mutex<Vec<TestKey>>,
    jwks: Mutex<Value>,
    /// Signs the tokens of [`Fault::BadToken`].
    foreign_key: Option<TestKey>,
    /// Refresh tokens issued here, by token.
    grants: Mutex<HashMap<String, Grant>>,
    revoked_access: Mutex<HashSet<String>>,
    /// Users whose sessions [`Backend::end_sessions`] ended (blocked accounts).
    ended: Mutex<HashSet<String>>,
    /// The status the session check and introspection answer instead, when set.
    check_status: Mutex<Option<u16>>,
    /// How long the session check and introspection take, when set.
    check_delay: Mutex<Option<Duration>>,
    session_checks: Counter,
    logins: Counter,
    refreshes: Counter,
    logouts: Counter,
    profiles: Counter,
    jwks_fetches: Counter,
    api_calls: Counter,
    last_login_body: Mutex<Option<String>>,
    last_login_content_type: Mutex<Option<String>>,
    last_refresh_body: Mutex<Option<String>>,
    last_logout_authorization: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Grant {
    login: String,
    exp: i64,
    revoked: bool,
}

/// Tokens from one login or refresh.
#[derive(Clone, Debug)]
struct Issued {
    login: String,
    access: String,
    refresh: Option<String>,
}

impl Backend {
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn login_url(&self) -> String {
        format!("{}/auth/login", self.url())
    }

    pub fn refresh_url(&self) -> String {
        format!("{}/auth/refresh", self.url())
    }

    pub fn logout_url(&self) -> String {
        format!("{}/auth/logout", self.url())
    }

    pub fn profile_url(&self) -> String {
        format!("{}/auth/profile", self.url())
    }

    pub fn session_url(&self) -> String {
        format!("{}/auth/session", self.url())
    }

    /// The introspection endpoint, with the client credentials it requires in the URL.
    pub fn introspect_url(&self) -> String {
        format!("http://portcullis:s3cret@{}/auth/introspect", self.addr())
    }

    /// Ends every session of `login` (a blocked account): bearer checks, the session check
    /// and introspection refuse its tokens from now on.
    pub fn end_sessions(&self, login: &str) {
        lock(&self.inner.state.ended).insert(login.to_owned());
    }

    /// Makes the session check and introspection answer `status` (`None`: normal answers).
    pub fn set_check_status(&self, status: Option<u16>) {
        *lock(&self.inner.state.check_status) = status;
    }

    /// Makes the session check and introspection take `delay` before answering.
    pub fn set_check_delay(&self, delay: Option<Duration>) {
        *lock(&self.inner.state.check_delay) = delay;
    }

    /// Calls to `/auth/session` and `/auth/introspect`.
    pub fn session_checks(&self) -> u64 {
        self.inner.state.session_checks.get()
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url())
    }

    /// The `[backend]` section for this backend: `login`, `refresh`, `logout`, `format`,
    /// `refresh_field`. Add `profile = "<profile_url()>"` to back `/auth/me` with it.
    pub fn backend_toml(&self) -> String {
        let settings = &self.inner.state.settings;
        let format = match settings.format {
            Format::Json => "json",
            Format::Form => "form",
        };
        format!(
            "[backend]\nlogin = {}\nrefresh = {}\nlogout = {}\nformat = {}\nrefresh_field = {}\n",
            Value::from(self.login_url()),
            Value::from(self.refresh_url()),
            Value::from(self.logout_url()),
            Value::from(format),
            Value::from(settings.refresh_field.as_str()),
        )
    }

    pub fn logins(&self) -> u64 {
        self.inner.state.logins.get()
    }

    pub fn refreshes(&self) -> u64 {
        self.inner.state.refreshes.get()
    }

    pub fn logouts(&self) -> u64 {
        self.inner.state.logouts.get()
    }

    pub fn profiles(&self) -> u64 {
        self.inner.state.profiles.get()
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.inner.state.jwks_fetches.get()
    }

    /// Calls to `/api/*`, authorized or not.
    pub fn api_calls(&self) -> u64 {
        self.inner.state.api_calls.get()
    }

    /// Waits until `n` logins have arrived (panics after 10 s).
    pub async fn wait_for_logins(&self, n: u64) {
        self.inner.state.logins.wait_for(n, "backend logins").await;
    }

    /// Waits until `n` refresh calls have arrived (panics after 10 s).
    pub async fn wait_for_refreshes(&self, n: u64) {
        self.inner
            .state
            .refreshes
            .wait_for(n, "backend refreshes")
            .await;
    }

    /// Waits until `n` logout calls have arrived (panics after 10 s): the proxy tells the
    /// backend of a logout without making the user wait for it.
    pub async fn wait_for_logouts(&self, n: u64) {
        self.inner
            .state
            .logouts
            .wait_for(n, "backend logouts")
            .await;
    }

    /// Waits until `n` JWKS fetches have arrived (panics after 10 s).
    pub async fn wait_for_jwks_fetches(&self, n: u64) {
        self.inner
            .state
            .jwks_fetches
            .wait_for(n, "JWKS fetches")
            .await;
    }

    /// The `Authorization` header of the last logout call (`None` if it had none).
    pub fn last_logout_authorization(&self) -> Option<String> {
        lock(&self.inner.state.last_logout_authorization).clone()
    }

    /// The raw body of the last login call.
    pub fn last_login_body(&self) -> Option<String> {
        lock(&self.inner.state.last_login_body).clone()
    }

    /// The `Content-Type` of the last login call.
    pub fn last_login_content_type(&self) -> Option<String> {
        lock(&self.inner.state.last_login_content_type).clone()
    }

    /// The raw body of the last refresh call.
    pub fn last_refresh_body(&self) -> Option<String> {
        lock(&self.inner.state.last_refresh_body).clone()
    }

    /// Replaces what `/.well-known/jwks.json` serves.
    pub fn set_jwks(&self, jwks: Value) {
        *lock(&self.inner.state.jwks) = jwks;
    }

    /// Key rotation: `key` signs from now on, bearer checks accept old and new keys, and
    /// the JWKS lists both (new first).
    pub fn rotate_key(&self, key: &TestKey) {
        let state = &self.inner.state;
        let old = std::mem::replace(&mut *lock(&state.signing_key), key.clone());
        lock(&state.known_keys).push(key.clone());
        self.set_jwks(json!({ "keys": [key.jwk(), old.jwk()] }));
    }

    /// An access token for `login` as a login would issue it, but valid for `ttl_secs`
    /// (negative: already expired). Not counted as a login.
    pub fn mint_access(&self, login: &str, ttl_secs: i64) -> String {
        let state = &self.inner.state;
        let key = lock(&state.signing_key).clone();
        key.sign(Value::Object(state.access_claims(login, ttl_secs)))
    }

    /// A refresh token for `login` that the refresh endpoint accepts.
    pub fn mint_refresh(&self, login: &str) -> String {
        let state = &self.inner.state;
        let key = lock(&state.signing_key).clone();
        state.issue_refresh(&key, login)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("a test server lock is never poisoned: no code panics holding it")
}
