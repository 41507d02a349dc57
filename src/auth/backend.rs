//! Calls to the credential service (the backend): login, refresh, logout and profile.
//!
//! Every call has a deadline and reads at most [`MAX_ANSWER`] bytes, so a backend that hangs
//! or streams a huge body costs one bounded request, never a stuck or bloated proxy. Token
//! values never appear in errors or log lines.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, SET_COOKIE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::body;
use crate::config::{Backend, BodyFormat};
use crate::error::Error;
use crate::upstream::HttpClient;

/// The largest backend answer read; anything longer is cut off and treated as garbage.
pub const MAX_ANSWER: usize = 64 << 10;

/// Tokens taken from a login or refresh answer.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub expires_in: Option<u64>,
    /// The backend's own `Set-Cookie` for the access cookie, relayed as it is.
    pub relayed_cookie: Option<HeaderValue>,
}

/// A backend answer, read whole (up to the cap).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct BackendClient {
    client: HttpClient,
    pub config: Backend,
}

impl BackendClient {
    pub fn new(client: HttpClient, config: Backend) -> BackendClient {
        BackendClient { client, config }
    }

    /// POSTs `fields` to `uri` as JSON or form (per `backend.format`), with an optional bearer.
    pub async fn post(
        &self,
        uri: &Uri,
        fields: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> Result<Answer, Error> {
        let (content_type, payload) = match self.config.format {
            BodyFormat::Json => {
                let object: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                    .collect();
                ("application/json", Value::Object(object).to_string())
            }
            BodyFormat::Form => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (k, v) in fields {
                    form.append_pair(k, v);
                }
                ("application/x-www-form-urlencoded", form.finish())
            }
        };
        self.send(
            Method::POST,
            uri,
            Some((content_type, payload)),
            bearer_header(bearer)?,
        )
        .await
    }

    pub async fn get(&self, uri: &Uri, bearer: Option<&str>) -> Result<Answer, Error> {
        self.send(Method::GET, uri, None, bearer_header(bearer)?)
            .await
    }

    /// POSTs `fields` as a form whatever `backend.format` says (RFC 7662 introspection),
    /// with `authorization` as it is (the introspection client's credentials).
    pub async fn post_form(
        &self,
        uri: &Uri,
        fields: &[(&str, &str)],
        authorization: Option<HeaderValue>,
    ) -> Result<Answer, Error> {
        let payload = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                form.append_pair(k, v);
            }
            ("application/x-www-form-urlencoded", form.finish())
        };
        self.send(Method::POST, uri, Some(payload), authorization)
            .await
    }

    async fn send(
        &self,
        method: Method,
        uri: &Uri,
        payload: Option<(&str, String)>,
        authorization: Option<HeaderValue>,
    ) -> Result<Answer, Error> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let body = match payload {
            Some((content_type, payload)) => {
                request = request.header(CONTENT_TYPE, content_type);
                body::full(payload)
            }
            None => body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|err| Error::Internal(format!("building a backend request: {err}")))?;
        let endpoint = uri.path().to_owned();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|err| {
                Error::BackendUnavailable(format!(
                    "{endpoint}: {}",
                    crate::upstream::error_chain(&err)
                ))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|err| {
                    Error::BackendUnavailable(format!("{endpoint}: reading the answer: {err}"))
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::BackendTimeout),
        }
    }

    /// Takes the tokens out of a 2xx login or refresh answer. `access_cookie` names the cookie
    /// whose `Set-Cookie` from the backend is relayed rather than re-issued.
    pub fn tokens(&self, answer: &Answer, access_cookie: &str) -> Result<Tokens, Error> {
        let relayed = answer.headers.get_all(SET_COOKIE).iter().find(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.split_once('='))
                .is_some_and(|(name, _)| name.trim() == access_cookie)
        });
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let find = |pointers: &[String]| -> Option<&Value> {
            let json = json.as_ref()?;
            pointers
                .iter()
                .find_map(|p| json.pointer(p))
                .filter(|v| !v.is_null())
        };
        // A relayed cookie is what the browser will present from now on, so its value is the
        // access token that gets verified, whatever the body says.
        let access = match (
            relayed.and_then(cookie_value),
            find(&self.config.access_token),
        ) {
            (Some(token), _) => token,
            (None, Some(Value::String(token))) if !token.is_empty() => token.clone(),
            (None, Some(_)) => {
                return Err(Error::BackendUnavailable(
                    "the access token in the answer is not a non-empty string".into(),
                ))
            }
            (None, None) if json.is_none() => {
                return Err(Error::BackendUnavailable("the answer is not JSON".into()))
            }
            (None, None) => {
                return Err(Error::BackendUnavailable(
                    "the answer holds no access token".into(),
                ))
            }
        };
        let refresh = match find(&self.config.refresh_token) {
            Some(Value::String(token)) if !token.is_empty() => Some(token.clone()),
            _ => None,
        };
        let expires_in = find(&self.config.expires_in).and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        Ok(Tokens {
            access,
            refresh,
            expires_in,
            relayed_cookie: relayed.cloned(),
        })
    }
}

fn bearer_header(token: Option<&str>) -> Result<Option<HeaderValue>, Error> {
    token
        .map(|token| {
            HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Error::BadRequest("the token cannot be sent in a header"))
        })
        .transpose()
}

fn cookie_value(set_cookie: &HeaderValue) -> Option<String> {
    let text = set_cookie.to_str().ok()?;
    let pair = text.split(';').next()?;
    let (_, value) = pair.split_once('=')?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The `exp` of a JWT read *without* verifying it: used only to pick a cookie lifetime for a
/// refresh token, which the proxy never trusts (the backend verifies it when it is used).
pub fn unverified_exp(token: &str) -> Option<u64> {
    unverified_claims(token)?.get("exp")?.as_u64()
}

/// A JWT's payload read *without* verifying anything: only for facts the proxy does not
/// trust, such as a cookie lifetime or which demo user a backend-issued token names.
pub fn unverified_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
