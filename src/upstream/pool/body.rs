//! The bodies that cross the pool: a request's going up ([`UpstreamBody`]) and a response's
//! coming down ([`PooledBody`]).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;

use super::bare::BareBody;
use super::{Lease, Usage, OPEN};
use crate::body::{BoxError, RequestBody};
use crate::ConnInfo;

/// The body of a request going upstream: the client's, capped at `server.max_body`, or none
/// (a request sent again).
pub struct UpstreamBody {
    inner: Option<Limited<RequestBody>>,
    /// The downstream connection, which counts every frame passed on as progress.
    conn: Option<Arc<ConnInfo>>,
    /// The HTTP/1.1 connection it goes out on, told once it has been handed over whole.
    pub(super) sent_on: Option<Arc<Usage>>,
}

impl UpstreamBody {
    /// `body`, coming from a request on `conn`.
    pub fn new(body: Limited<RequestBody>, conn: &Arc<ConnInfo>) -> UpstreamBody {
        let conn = (!body.is_end_stream()).then(|| conn.clone());
        UpstreamBody {
            inner: Some(body),
            conn,
            sent_on: None,
        }
    }

    pub(super) fn empty() -> UpstreamBody {
        UpstreamBody {
            inner: None,
            conn: None,
            sent_on: None,
        }
    }

    /// The whole body has been handed to hyper.
    fn finished(&mut self) {
        if let Some(usage) = self.sent_on.take() {
            usage.exchange.fetch_and(!OPEN, Ordering::Release);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(body) = &mut this.inner else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(conn) = &this.conn {
                    conn.progress.note();
                }
                // hyper asks `is_end_stream` after each frame and stops at `true` without
                // polling for the end: the last frame is the end.
                if body.is_end_stream() {
                    this.finished();
                }
            }
            Poll::Ready(None) => this.finished(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint())
    }
}

/// An upstream response body; its end gives the connection back to the pool.
pub struct PooledBody(Source);

enum Source {
    /// From hyper's client; the lease gives its connection back (taken when it has).
    Hyper(Incoming, Option<Lease>),
    /// Read by the pool itself, which gives the connection back ([`BareBody`]).
    Bare(BareBody),
}

impl PooledBody {
    pub(super) fn hyper(body: Incoming, lease: Lease) -> PooledBody {
        PooledBody(Source::Hyper(body, Some(lease)))
    }

    pub(super) fn bare(body: BareBody) -> PooledBody {
        PooledBody(Source::Bare(body))
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Source::Hyper(body, lease) = &mut self.0 {
            if let Some(lease) = lease.take() {
                lease.release(body.is_end_stream());
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Source::Bare(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|err| Box::new(err) as BoxError),
            Source::Hyper(body, lease) => {
                let frame = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None) = frame {
                    if let Some(lease) = lease.take() {
                        lease.release(true);
                    }
                }
                frame.map_err(|err| Box::new(err) as BoxError)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Hyper(body, _) => body.is_end_stream(),
            Source::Bare(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Source::Hyper(body, _) => body.size_hint(),
            Source::Bare(body) => body.size_hint(),
        }
    }
}
