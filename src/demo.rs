//! `portcullis demo`: the embedded default. A demo backend (a credential service issuing real
//! HS256 tokens with short lifetimes, so renewal is visible) and a demo site (plain HTML that
//! knows nothing of tokens) start on loopback, with Portcullis in front of both, configured
//! by the same TOML a user would write.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::auth::jwt::{self, Alg, KeyMaterial, KeySet, Policy, Verifier};
use crate::auth::now;
use crate::body::{self, Body};

/// The demo's users: `(email, password, name, role)`.
pub const USERS: [(&str, &str, &str, &str); 2] = [
    ("demo@portcullis.dev", "portcullis", "Demo User", "user"),
    ("admin@portcullis.dev", "portcullis", "Admin User", "admin"),
];

/// Access tokens live this long, so renewal happens within a minute of signing in.
const ACCESS_TTL: u64 = 60;
const REFRESH_TTL: u64 = 86_400;

/// The configuration Portcullis runs the demo with: the same file a user would write.
pub fn config_text(
    proxy: SocketAddr,
    site: SocketAddr,
    backend: SocketAddr,
    secret: &str,
) -> String {
    format!(
        r#"# Portcullis in front of the embedded demo site and backend.

[server]
listen = "{proxy}"

[upstreams]
site = "http://{site}"                 # the demo site: plain HTML, no token handling
api = "http://{backend}"               # the demo backend's API

[backend]
login = "http://{backend}/auth/login"
refresh = "http://{backend}/auth/refresh"
logout = "http://{backend}/auth/logout"

[login]
fields = ["email", "password"]
success_redirect = "/dashboard"

[session]
secure = false                         # the demo is plain HTTP on loopback; keep true in production
refresh_ahead = "15s"                  # tokens live 60s: watch them renew on the dashboard

[jwt]
algorithms = ["HS256"]
secret = "{secret}"                    # in production: PORTCULLIS_JWT__SECRET or secret_file
leeway = "5s"

[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "site"

[[routes]]
path = "/admin/:path*"
auth = "required"
claims = {{ role = "admin" }}
upstream = "site"

[[routes]]
path = "/api/:path*"
auth = "required"
upstream = "api"

[[routes]]
path = "/login"
auth = "guest"
upstream = "site"

[[routes]]
path = "/:path*"
upstream = "site"
"#
    )
}

/// The demo's servers, bound and running on loopback.
pub struct Demo {
    pub site: SocketAddr,
    pub backend: SocketAddr,
    pub secret: String,
}

impl Demo {
    /// Starts the demo site and backend on ephemeral loopback ports.
    pub async fn start() -> std::io::Result<Demo> {
        let secret = jwt::random_secret();
        let site = TcpListener::bind("127.0.0.1:0").await?;
        let backend = TcpListener::bind("127.0.0.1:0").await?;
        let demo = Demo {
            site: site.local_addr()?,
            backend: backend.local_addr()?,
            secret: secret.clone(),
        };
        tokio::spawn(serve_site(site));
        tokio::spawn(serve_backend(backend, secret));
        Ok(demo)
    }
}

/// Serves the demo site (plain HTML pages) on `listener`.
pub async fn serve_site(listener: TcpListener) {
    serve(listener, Arc::new(|request, _| site_page(request))).await;
}

/// Serves the demo backend on `listener`, signing tokens with `secret`.
pub async fn serve_backend(listener: TcpListener, secret: String) {
    let state = Arc::new(DemoBackend::new(secret));
    serve(
        listener,
        Arc::new(move |request, body| state.answer(request, body)),
    )
    .await;
}

type Handler = Arc<dyn Fn(&http::request::Parts, Bytes) -> Response<Body> + Send + Sync>;

async fn serve(listener: TcpListener, handler: Handler) {
    crate::server::serve_small(listener, None, move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            match Limited::new(body, 64 << 10).collect().await {
                Ok(collected) => handler(&parts, collected.to_bytes()),
                Err(_) => answer(StatusCode::PAYLOAD_TOO_LARGE, json!({"error": "too large"})),
            }
        }
    })
    .await;
}

fn answer(status: StatusCode, value: Value) -> Response<Body> {
    let mut response = Response::new(body::json(&value));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn site_page(request: &http::request::Parts) -> Response<Body> {
    let (content_type, page): (&str, &str) = match request.uri.path() {
        "/" => ("text/html; charset=utf-8", include_str!("demo/index.html")),
        "/login" => ("text/html; charset=utf-8", include_str!("demo/login.html")),
        "/dashboard" | "/dashboard/" => (
            "text/html; charset=utf-8",
            include_str!("demo/dashboard.html"),
        ),
        "/admin" | "/admin/" => ("text/html; charset=utf-8", include_str!("demo/admin.html")),
        "/style.css" => ("text/css", include_str!("demo/style.css")),
        _ => ("text/plain", "not found\n"),
    };
    let mut response = Response::new(body::full(page));
    if content_type == "text/plain" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The demo credential service: checks passwords, issues, renews and revokes tokens, and
/// serves an API that authorizes the bearer token Portcullis injects.
struct DemoBackend {
    secret: String,
    verifier: Verifier,
    live_refresh_tokens: Mutex<HashSet<String>>,
}

impl DemoBackend {
    fn new(secret: String) -> DemoBackend {
        let algorithms = vec![Alg::HS256];
        let keys = KeySet::build(
            &algorithms,
            &KeyMaterial {
                secret: Some(secret.clone().into_bytes()),
                ..KeyMaterial::default()
            },
        )
        .expect("a 64-character secret is a valid HS256 key");
        let policy = Policy {
            algorithms,
            ..Policy::default()
        };
        DemoBackend {
            secret,
            verifier: Verifier::new(keys, policy),
            live_refresh_tokens: Mutex::new(HashSet::new()),
        }
    }

    fn sign(&self, claims: Value) -> String {
        let Value::Object(map) = claims else {
            unreachable!("claims are built as objects")
        };
        jwt::sign_hs256(self.secret.as_bytes(), &map).expect("HS256 signing with a valid key")
    }

    fn issue(&self, email: &str) -> Value {
        let Some((_, _, name, role)) = USERS.iter().find(|u| u.0 == email) else {
            return json!({"error": "unknown user"});
        };
        let now = now();
        let access = self.sign(json!({
            "sub": email, "email": email, "name": name, "role": role,
            "iat": now, "exp": now + ACCESS_TTL,
        }));
        let refresh = self.sign(json!({
            "sub": email, "typ": "refresh", "iat": now, "exp": now + REFRESH_TTL,
            "jti": jwt::random_secret(),
        }));
        self.live_refresh_tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(refresh.clone());
        json!({ "access_token": access, "refresh_token": refresh, "expires_in": ACCESS_TTL })
    }

    fn bearer_claims(&self, request: &http::request::Parts) -> Option<Map<String, Value>> {
        let token = request
            .headers
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        Some(self.verifier.verify(token, now()).ok()?.as_json().clone())
    }

    fn answer(&self, request: &http::request::Parts, body: Bytes) -> Response<Body> {
        let fields: Map<String, Value> = serde_json::from_slice(&body).unwrap_or_default();
        let field = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or("");
        match (&request.method, request.uri.path()) {
            (&Method::POST, "/auth/login") => {
                let known = USERS
                    .iter()
                    .any(|u| u.0 == field("email") && u.1 == field("password"));
                if known {
                    answer(StatusCode::OK, self.issue(field("email")))
                } else {
                    answer(
                        StatusCode::UNAUTHORIZED,
                        json!({"error": "invalid email or password"}),
                    )
                }
            }
            (&Method::POST, "/auth/refresh") => {
                let token = field("refresh_token").to_owned();
                let mut live = self
                    .live_refresh_tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // Rotation: a refresh token works once.
                if !live.remove(&token) {
                    return answer(
                        StatusCode::UNAUTHORIZED,
                        json!({"error": "invalid refresh token"}),
                    );
                }
                drop(live);
                let email = jwt_subject(&token).unwrap_or_default();
                answer(StatusCode::OK, self.issue(&email))
            }
            (&Method::POST, "/auth/logout") => {
                self.live_refresh_tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(field("refresh_token"));
                answer(StatusCode::OK, json!({"ok": true}))
            }
            (&Method::GET, path) if path.starts_with("/api/") => {
                match self.bearer_claims(request) {
                    Some(claims) => answer(
                        StatusCode::OK,
                        json!({
                            "items": ["portcullis", "drawbridge", "moat"],
                            "user": claims.get("email"),
                            "token_expires_in": claims.get("exp").and_then(Value::as_u64).map(|exp| exp.saturating_sub(now())),
                        }),
                    ),
                    None => answer(
                        StatusCode::UNAUTHORIZED,
                        json!({"error": "a valid bearer token is required"}),
                    ),
                }
            }
            _ => answer(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }
}

/// The `sub` of a token this backend issued (its signature was checked by the refresh lookup).
fn jwt_subject(token: &str) -> Option<String> {
    crate::auth::backend::unverified_claims(token)?
        .get("sub")?
        .as_str()
        .map(str::to_owned)
}
