//! Plumbing shared by the test servers (`upstream`, `backend`): bind `127.0.0.1:0`, serve
//! HTTP/1.1 and h2c with hyper-util's auto builder (upgrades allowed), and stop every
//! connection when the owning handle is stopped or dropped. Also small body and response
//! helpers and a [`Counter`] that tests can wait on instead of sleeping.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Frame, Incoming, SizeHint},
    service::service_fn,
    Request, Response,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::watch};

/// The response body type of every test server.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// How long `wait_for_*` helpers wait before failing the test instead of hanging it.
pub(crate) const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// A running server. Stopping (or dropping) it closes the listener and every open
/// connection, including upgraded ones, so a stopped server refuses new connections.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves `handler` on every connection until stopped.
    pub(crate) async fn start<H, F>(handler: H) -> Server
    where
        H: Fn(Request<Incoming>, StopSignal) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0 for a test server");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::new(handler), stopped));
        Server { addr, stop }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and all connections. Idempotent.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Handed to the request handler so that tasks it spawns (upgraded connections) can end
/// with the server: pass it to [`until_stopped`].
pub(crate) type StopSignal = watch::Receiver<bool>;

/// Resolves once the server owning `stopped` has been stopped or dropped.
pub(crate) async fn until_stopped(mut stopped: StopSignal) {
    // An error means the sender is gone, which also means "stopped".
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

async fn accept_loop<H, F>(listener: TcpListener, handler: Arc<H>, stopped: StopSignal)
where
    H: Fn(Request<Incoming>, StopSignal) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            () = until_stopped(stopped.clone()) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                // Transient accept errors (e.g. a connection reset before accept) are not
                // the test's concern; keep serving.
                Err(_) => continue,
            },
        };
        let handler = Arc::clone(&handler);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let signal = stopped.clone();
            let service = service_fn(move |request| {
                let response = (*handler)(request, signal.clone());
                async move { Ok::<_, Infallible>(response.await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // Real sites take more headers than hyper's default 100 (nginx has no limit).
            builder.http1().max_headers(1024);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                // Connection errors (client went away, malformed request) end the connection;
                // hyper has already answered what it could.
                _ = connection => {}
                () = until_stopped(stopped) => {}
            }
        });
    }
}

/// A whole body from bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with `status`, `content-type: application/json` and `value` as its body.
pub(crate) fn json_response(status: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .expect("a valid status and static header make a valid response")
}

/// A generated body: `prefix`, then `len` filler bytes produced chunk by chunk, so even a
/// body of gigabytes costs one 64 KiB buffer. `exact_length` decides whether hyper learns
/// the size up front (it then sends `Content-Length`) or has to use chunked framing.
#[derive(Debug)]
pub(crate) struct FillBody {
    prefix: Option<Bytes>,
    remaining: u64,
    chunk: Bytes,
    exact_length: bool,
}

impl FillBody {
    pub(crate) const CHUNK: usize = 64 * 1024;

    pub(crate) fn new(prefix: impl Into<Bytes>, len: u64, filler: u8, exact_length: bool) -> Self {
        let prefix: Bytes = prefix.into();
        FillBody {
            prefix: (!prefix.is_empty()).then_some(prefix),
            remaining: len,
            chunk: Bytes::from(vec![filler; Self::CHUNK]),
            exact_length,
        }
    }

    pub(crate) fn boxed(self) -> Body {
        BodyExt::boxed(self)
    }
}

impl hyper::body::Body for FillBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(this.remaining).map_or(Self::CHUNK, |r| r.min(Self::CHUNK));
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.remaining + self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        if self.exact_length {
            SizeHint::with_exact(len)
        } else {
            SizeHint::default()
        }
    }
}

/// A monotonically increasing count that tests can read or wait on.
#[derive(Debug)]
pub(crate) struct Counter(watch::Sender<u64>);

impl Default for Counter {
    fn default() -> Self {
        Counter(watch::channel(0).0)
    }
}

impl Counter {
    pub(crate) fn increment(&self) {
        self.0.send_modify(|count| *count += 1);
    }

    pub(crate) fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// Waits until the count reaches `n`; panics after [`WAIT_LIMIT`] so a test fails
    /// with a message instead of hanging. `what` names the count in that message.
    pub(crate) async fn wait_for(&self, n: u64, what: &str) {
        let mut changes = self.0.subscribe();
        let reached = tokio::time::timeout(WAIT_LIMIT, changes.wait_for(|count| *count >= n))
            .await
            .is_ok();
        assert!(
            reached,
            "waited {WAIT_LIMIT:?} for {n} {what}, saw {}",
            self.get()
        );
    }
}
