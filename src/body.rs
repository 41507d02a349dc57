//! The body type used on both sides of the proxy and small constructors for it.

use std::sync::Arc;

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

/// Told once when a request body it watches ends: read to its end (`whole`), or failed or
/// dropped before it (hyper may then have stopped reading the body part-way, and the next
/// bytes on its connection may be the rest of it).
pub trait BodyWatch: Send + Sync {
    fn body_ended(&self, whole: bool);
}

/// A request's body as the proxy received it: hyper's (with whoever watches it end), or none
/// at all (a request the server's own HTTP/1.1 reader took, which takes only requests that
/// declare no body).
pub enum RequestBody {
    Hyper(hyper::body::Incoming, Option<Arc<dyn BodyWatch>>),
    Empty,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestBody::Hyper(body, _) => f.debug_tuple("Hyper").field(body).finish(),
            RequestBody::Empty => f.write_str("Empty"),
        }
    }
}

fn tell(watch: &mut Option<Arc<dyn BodyWatch>>, whole: bool) {
    if let Some(watch) = watch.take() {
        watch.body_ended(whole);
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let RequestBody::Hyper(_, watch) = self {
            tell(watch, false);
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        match self.get_mut() {
            RequestBody::Hyper(body, watch) => {
                let polled = std::pin::Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    // Whoever reads it stops at `is_end_stream` without polling for the end.
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => tell(watch, true),
                    Poll::Ready(None) => tell(watch, true),
                    Poll::Ready(Some(Err(_))) => tell(watch, false),
                    _ => {}
                }
                polled
            }
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body, _) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Hyper(body, _) => body.size_hint(),
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}
