//! The one error type of the request pipeline and the one place errors become responses.
//!
//! Each variant records whose fault it was: the client's (4xx), the upstream's or backend's
//! (502/504) or ours (500). Clients get a short JSON body with a stable `error` code; details
//! go to the log, never into the response, and never a token.

use bytes::Bytes;
use http::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// Whose fault an error is; decides the status class and the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("no rule matches the path")]
    NotFound,
    #[error("request body larger than server.max_body")]
    PayloadTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// A body the proxy reads itself (a login) did not arrive within its deadline.
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// An unsafe request authenticated by the cookie that does not come from this site.
    #[error("cross-site request refused: {0}")]
    Csrf(&'static str),
    /// No valid token on a `required` route. `login` is the redirect target for page requests;
    /// `None` answers `401`.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        reason: String,
        login: Option<String>,
        clear_cookies: Vec<HeaderValue>,
    },
    #[error("too many requests")]
    TooManyRequests { retry_after: u64 },
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// Every connection `upstreams.<name>.max_connections` allows stayed busy.
    #[error("upstream busy: {0}")]
    UpstreamBusy(String),
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    #[error("backend timed out")]
    BackendTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn source_of_fault(&self) -> Source {
        match self {
            Error::UpstreamUnavailable(_)
            | Error::UpstreamTimeout
            | Error::UpstreamBusy(_)
            | Error::BackendUnavailable(_)
            | Error::BackendTimeout => Source::Upstream,
            Error::Internal(_) => Source::Internal,
            _ => Source::Client,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::Forbidden(_) | Error::Csrf(_) => StatusCode::FORBIDDEN,
            Error::Unauthenticated { login: Some(_), .. } => StatusCode::FOUND,
            Error::Unauthenticated { login: None, .. } => StatusCode::UNAUTHORIZED,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::UpstreamUnavailable(_) | Error::BackendUnavailable(_) => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout | Error::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::UpstreamBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::NotFound => "not_found",
            Error::PayloadTooLarge => "payload_too_large",
            Error::HeadersTooLarge => "headers_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::RequestTimeout => "request_timeout",
            Error::Forbidden(_) => "forbidden",
            Error::Csrf(_) => "csrf",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::UpstreamUnavailable(_) => "upstream_unavailable",
            Error::UpstreamTimeout => "upstream_timeout",
            Error::UpstreamBusy(_) => "upstream_busy",
            Error::BackendUnavailable(_) => "backend_unavailable",
            // The contract names one code for every backend failure; the status (504) and
            // the message tell a timeout apart.
            Error::BackendTimeout => "backend_unavailable",
            Error::Internal(_) => "internal_error",
        }
    }

    /// A short message safe to show a client: it never carries upstream details or tokens.
    fn public_message(&self) -> &'static str {
        match self {
            Error::BadRequest(reason) => reason,
            Error::Forbidden(reason) => reason,
            Error::Csrf(_) => "cross-site request refused",
            Error::MethodNotAllowed => "method not allowed",
            Error::NotFound => "not found",
            Error::PayloadTooLarge => "request body too large",
            Error::HeadersTooLarge => "request headers too large",
            Error::UnsupportedMediaType => "unsupported content type",
            Error::RequestTimeout => "the request body did not arrive in time",
            Error::Unauthenticated { .. } => "sign-in required",
            Error::TooManyRequests { .. } => "too many requests, try again later",
            Error::UpstreamUnavailable(_) => "the upstream service is unavailable",
            Error::UpstreamTimeout => "the upstream service did not answer in time",
            Error::UpstreamBusy(_) => "the upstream service is busy, try again later",
            Error::BackendUnavailable(_) => "the authentication service is unavailable",
            Error::BackendTimeout => "the authentication service did not answer in time",
            Error::Internal(_) => "internal error",
        }
    }

    /// The one error-to-response mapping.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut response = if let Error::Unauthenticated {
            login: Some(location),
            ..
        } = &self
        {
            let mut response = Response::new(body::empty());
            match HeaderValue::try_from(location.as_str()) {
                Ok(value) => {
                    response.headers_mut().insert(LOCATION, value);
                }
                Err(_) => {
                    // The location is built from a normalized path; this cannot happen, but a
                    // redirect without a target must not be sent.
                    return Error::Internal("unencodable login redirect".to_owned())
                        .into_response();
                }
            }
            response
        } else {
            let json =
                serde_json::json!({ "error": self.code(), "message": self.public_message() });
            let mut response = Response::new(body::full(Bytes::from(json.to_string())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Error::Unauthenticated {
                login,
                clear_cookies,
                ..
            } => {
                if login.is_none() {
                    headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                for cookie in clear_cookies {
                    headers.append(http::header::SET_COOKIE, cookie);
                }
            }
            Error::TooManyRequests { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
            }
            // The rest of the body may still come: the connection cannot carry another request.
            Error::RequestTimeout => {
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests;
