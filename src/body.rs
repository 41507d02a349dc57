//! The body type used on both sides of the proxy and small constructors for it.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body: an upstream's answer, a client's upload, or a response we make ourselves.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response body.
pub fn json(value: &serde_json::Value) -> Body {
    full(value.to_string())
}

/// A request's body as the proxy received it: hyper's, or none at all (a request the
/// server's own HTTP/1.1 reader took, which takes only requests that declare no body).
#[derive(Debug)]
pub enum RequestBody {
    Hyper(hyper::body::Incoming),
    Empty,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(body) => std::pin::Pin::new(body).poll_frame(cx),
            RequestBody::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}
