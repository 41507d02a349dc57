//! The server's own HTTP/1.1 for the plain request: a request that declares no body, in
//! origin form, with nothing that changes the connection (no `Upgrade`, no `Expect`), is read
//! and answered here; anything else is handed to hyper, untouched, with every byte read so
//! far, and hyper serves the connection from then on (until it is parked: see
//! `server::serve_http1`). Nearly every page load and API read is a plain request, and
//! answering it here costs no hop through hyper's dispatcher and no second copy of the
//! head: the request's future runs in the connection's own poll, and the response is written
//! as its body comes (docs/performance.md, "Ninth pass").
//!
//! What the lane takes it reads with the parser hyper uses (httparse, strict: no whitespace
//! before a colon, no folded lines, one space between the parts of the request line) and
//! builds with the same `http` types, so the handler sees what hyper would have given it.
//! What it does not take — a malformed or oversized head, HTTP/1.0, a body of any length
//! but zero, `Transfer-Encoding`, a WebSocket handshake, `CONNECT`, absolute or asterisk
//! form — hyper answers exactly as before, `400` and `431` included: no request is judged
//! by two readers, and no request framing is decided here but "no body".
//!
//! The response is framed as hyper frames it: no body after `HEAD`, `204` or `304` (a `204`
//! keeps no length); `Content-Length` as the response declares it, or as its body knows it;
//! otherwise chunked. A body that ends before its declared length, goes past it or fails
//! ends the connection, as it would under hyper: the client sees a truncated answer, never
//! a second one. `Connection: close` from the client, or graceful shutdown, closes the
//! connection after the answer, with `connection: close` written where the head is still
//! to go.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as HttpBody;
use tokio::io::{AsyncRead, AsyncWrite};

use super::activity::{Serving, Tracked, Watched};
use crate::body::{Body, RequestBody};
use crate::headers::{decimal, lists};

/// The room made before each read of a request head: most heads fit (a browser's is 0.5-2
/// KiB); a longer one grows the buffer up to the head limit.
const READ_CHUNK: usize = 4 << 10;
/// Headers parsed on the stack. A request with more goes to hyper, which takes as many as
/// the door allows.
const MAX_HEADERS: usize = 64;
/// Response bytes gathered before they are written; a body frame that is ready is added to
/// the head or the frames before it, so a small answer is one write.
const WRITE_BATCH: usize = 64 << 10;
/// Header values of at least this many bytes are remembered from one request to the next
/// ([`Recall`]); a shorter one costs less to check than to look up.
const RECALL_MIN: usize = 32;
/// At most this many values are remembered: a browser's long ones (`Cookie`, `User-Agent`,
/// `Accept`, `Accept-Language`, `sec-ch-ua`, `Referer`) and a few more.
const RECALL_MAX: usize = 8;

/// Why a lane stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The connection is over: the client closed it or asked to, a write failed, a response
    /// body broke its framing, or the server shuts down.
    Close,
    /// A request the lane does not take: hyper serves the connection from its first byte.
    HandOver,
}

/// One HTTP/1.1 connection served by the lane. `answer` turns a request into its answer's
/// future (the same function hyper's service calls).
pub struct Lane<S, F, A> {
    io: Watched<S>,
    /// Bytes read and not yet taken: a partial head, or pipelined requests.
    read: BytesMut,
    /// Response bytes not yet written.
    out: BytesMut,
    answer: F,
    state: State<A>,
    max_head: usize,
    graceful: bool,
    recall: Recall,
}

enum State<A> {
    Reading,
    Answering {
        answer: A,
        /// The request is a `HEAD`.
        is_head: bool,
        close: bool,
    },
    Writing {
        body: Tracked<Body>,
        framing: Framing,
        close: bool,
    },
    Flushing {
        close: bool,
    },
    Done(Outcome),
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// None is written (`HEAD`, `204`, `304`); the body is still read to its end, which
    /// gives a pooled upstream connection back.
    Discard,
    /// `Content-Length`: the bytes still owed.
    Length(u64),
    Chunked,
}

impl<S, F, A> Lane<S, F, A>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RequestBody>) -> A,
    A: Future<Output = Result<Response<Tracked<Body>>, Infallible>> + Unpin,
{
    /// A lane over `io`, taking heads of at most `max_head` bytes (longer ones go to hyper,
    /// which refuses them with `431`).
    pub fn new(io: Watched<S>, answer: F, max_head: usize) -> Self {
        Lane {
            io,
            read: BytesMut::new(),
            out: BytesMut::new(),
            answer,
            state: State::Reading,
            max_head,
            graceful: false,
            recall: Recall::default(),
        }
    }

    /// The socket, what was read from it and not taken (to replay to whoever serves it
    /// next), and why the lane stopped (`None`: it was stopped, parked or past a limit).
    pub fn into_parts(self) -> (Watched<S>, BytesMut, Option<Outcome>) {
        let outcome = match self.state {
            State::Done(outcome) => Some(outcome),
            _ => None,
        };
        (self.io, self.read, outcome)
    }

    fn end(&mut self, outcome: Outcome) -> Poll<()> {
        self.state = State::Done(outcome);
        Poll::Ready(())
    }

    /// Reads what the socket has into `read`'s spare room (not zeroed first).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// While a request is answered: `Pending`, unless the client has closed the connection
    /// (or it failed), which ends it, the request's future and body dropped, as hyper does
    /// without half-close support. A read finds nothing to do, and makes no system call,
    /// until the socket has something to read. Once the client has sent more (the next
    /// request), nothing more is read until that is taken, as under hyper: pipelined
    /// requests followed by a close are answered up to the close, and read-ahead stays
    /// bounded.
    fn pending_unless_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.read.is_empty() {
            if let Poll::Ready(Ok(0) | Err(_)) = self.poll_fill(cx) {
                return self.end(Outcome::Close);
            }
        }
        Poll::Pending
    }

    fn poll_lane(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Reading => {
                    if !self.read.is_empty() {
                        match take_head(&mut self.read, self.max_head, &mut self.recall) {
                            Head::Request { request, close } => {
                                let is_head = request.method() == Method::HEAD;
                                let close = close || self.graceful;
                                self.state = State::Answering {
                                    answer: (self.answer)(request),
                                    is_head,
                                    close,
                                };
                                continue;
                            }
                            Head::Partial => {}
                            Head::NotOurs => return self.end(Outcome::HandOver),
                        }
                    }
                    if self.graceful {
                        return self.end(Outcome::Close);
                    }
                    match ready!(self.poll_fill(cx)) {
                        Ok(0) | Err(_) => return self.end(Outcome::Close),
                        Ok(_) => {}
                    }
                }
                State::Answering {
                    answer,
                    is_head,
                    close,
                } => {
                    let Poll::Ready(Ok(response)) = Pin::new(answer).poll(cx) else {
                        return self.pending_unless_gone(cx);
                    };
                    // `graceful` sets `close` in this state: no need to look at it again.
                    let (is_head, mut close) = (*is_head, *close);
                    let (parts, body) = response.into_parts();
                    let framing = encode_head(&mut self.out, parts, &body, is_head, &mut close);
                    self.state = State::Writing {
                        body,
                        framing,
                        close,
                    };
                }
                State::Writing {
                    body,
                    framing,
                    close,
                } => {
                    let close = *close;
                    match poll_body(&mut self.io, &mut self.out, body, framing, cx) {
                        Poll::Ready(Ok(())) => self.state = State::Flushing { close },
                        Poll::Ready(Err(())) => {
                            // What is gathered goes out if the socket takes it now: the
                            // client sees the answer cut short, then the close.
                            let _ = poll_write_out(&mut self.io, &mut self.out, cx);
                            return self.end(Outcome::Close);
                        }
                        Poll::Pending => return self.pending_unless_gone(cx),
                    }
                }
                State::Flushing { close } => {
                    let close = *close;
                    if ready!(poll_write_out(&mut self.io, &mut self.out, cx)).is_err()
                        || ready!(Pin::new(&mut self.io).poll_flush(cx)).is_err()
                    {
                        return self.end(Outcome::Close);
                    }
                    if close {
                        return self.end(Outcome::Close);
                    }
                    if self.out.capacity() > WRITE_BATCH {
                        // A long answer's batch is not kept for the next one.
                        self.out = BytesMut::new();
                    }
                    self.state = State::Reading;
                }
                State::Done(_) => return Poll::Ready(()),
            }
        }
    }
}

impl<S, F, A> Serving for Lane<S, F, A>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<RequestBody>) -> A,
    A: Future<Output = Result<Response<Tracked<Body>>, Infallible>> + Unpin,
{
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.poll_lane(cx).map(Ok)
    }

    /// Finishes the request under way, if any, and closes after it; a connection between
    /// requests stops at its next poll (the supervisor polls it at once).
    fn graceful(&mut self) {
        self.graceful = true;
        match &mut self.state {
            State::Answering { close, .. }
            | State::Writing { close, .. }
            | State::Flushing { close } => *close = true,
            State::Reading | State::Done(_) => {}
        }
    }
}

/// What the bytes read so far hold. (Returned once per request and moved into the request's
/// future at once: not worth a box.)
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A whole plain request, taken out of the buffer; `close`: the client asked to close
    /// after it.
    Request {
        request: Request<RequestBody>,
        close: bool,
    },
    /// The start of a head that may still be one the lane takes.
    Partial,
    /// Something for hyper: left in the buffer as it is.
    NotOurs,
}

/// The lane's reading of the first request in `read` (for the fuzz target): the request and
/// whether the client asked to close, taken out of `read`; `None` when the lane does not take
/// it, or not yet, with `read` left as it was.
pub fn take_plain_head(
    read: &mut BytesMut,
    max_head: usize,
    recall: &mut Recall,
) -> Option<(Request<RequestBody>, bool)> {
    match take_head(read, max_head, recall) {
        Head::Request { request, close } => Some((request, close)),
        Head::Partial | Head::NotOurs => None,
    }
}

/// The long header values of a connection's last request, each checked once. A client sends
/// the same `Cookie`, `User-Agent` and `Accept` lines on every request of a connection, and
/// `HeaderValue` checks a value byte by byte: for a session cookie of a few hundred bytes that
/// costs more than the rest of the head's reading. A value equal, byte for byte, to one
/// remembered is that value again (a reference count, no check); one not remembered is
/// checked and copied out of the head, so that remembering it keeps no read buffer alive.
/// Per connection, never shared: nothing of one client's head is compared with another's.
/// Gone when the connection parks, with the rest of the lane.
#[derive(Default)]
pub struct Recall {
    values: Vec<HeaderValue>,
}

impl Recall {
    /// The value at `span` of `head` (`None`: not a valid value). A short one is checked and
    /// shares the head; a long one is the one remembered if there is one, else checked and
    /// copied.
    fn value(&self, head: &Bytes, span: Span) -> Option<HeaderValue> {
        let bytes = &head[span.start..span.end];
        if bytes.len() < RECALL_MIN {
            return HeaderValue::from_maybe_shared(head.slice(span.start..span.end)).ok();
        }
        match self.values.iter().find(|known| known.as_bytes() == bytes) {
            Some(known) => Some(known.clone()),
            None => HeaderValue::from_bytes(bytes).ok(),
        }
    }

    /// Remembers the long values of `headers` (the request just read), in place of the last
    /// request's.
    fn keep(&mut self, headers: &HeaderMap) {
        self.values.clear();
        let long = headers.values().filter(|value| value.len() >= RECALL_MIN);
        self.values.extend(long.take(RECALL_MAX).cloned());
    }
}

/// Where a head's parts are in the buffer.
#[derive(Clone, Copy, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span {
            start,
            end: start + part.len(),
        }
    }
}

/// Takes the first request out of `read` if it is a plain one: HTTP/1.1, origin form, not
/// `CONNECT`, no body (no `Content-Length` but `0`, no `Transfer-Encoding`), no `Upgrade`,
/// no `Expect`, at most [`MAX_HEADERS`] headers in at most `max_head` bytes.
fn take_head(read: &mut BytesMut, max_head: usize, recall: &mut Recall) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut spans = [(Span::default(), Span::default()); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(read) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if read.len() < max_head => return Head::Partial,
        _ => return Head::NotOurs,
    };
    let (Some(1), Some(method), Some(path)) = (parsed.version, parsed.method, parsed.path) else {
        return Head::NotOurs;
    };
    if !path.starts_with('/') {
        return Head::NotOurs;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::NotOurs;
    };
    if method == Method::CONNECT {
        return Head::NotOurs;
    }
    let (mut close, mut declared_empty) = (false, false);
    for (field, span) in parsed.headers.iter().zip(spans.iter_mut()) {
        let (name, value) = (field.name, field.value);
        if name.eq_ignore_ascii_case("content-length") {
            // One `Content-Length: 0`: hyper folds repeated ones into one, and an upstream
            // may refuse a repeated one; those are hyper's.
            if value != b"0" || declared_empty {
                return Head::NotOurs;
            }
            declared_empty = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Head::NotOurs;
        } else if name.eq_ignore_ascii_case("connection") {
            if lists(value, b"upgrade") {
                return Head::NotOurs;
            }
            close |= lists(value, b"close");
        }
        *span = (Span::of(read, name.as_bytes()), Span::of(read, value));
    }
    let count = parsed.headers.len();
    let path = Span::of(read, path.as_bytes());

    // The head is shared, not copied: the target and every value point into it, as hyper's do.
    let head = read.split_to(len).freeze();
    let built = (|| {
        let uri = Uri::from_maybe_shared(head.slice(path.start..path.end)).ok()?;
        // Room for what the proxy adds on the way up (`Authorization`, `X-Forwarded-*`, …).
        let mut map = HeaderMap::with_capacity(count + 8);
        for (name, value) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[name.start..name.end]).ok()?;
            map.append(name, recall.value(&head, *value)?);
        }
        recall.keep(&map);
        Some((uri, map))
    })();
    let Some((uri, map)) = built else {
        // A target httparse takes and `http` refuses (bytes that are not UTF-8): hyper gets
        // the head back, whole, and answers it as it always has.
        let mut whole = BytesMut::with_capacity(head.len() + read.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(read);
        *read = whole;
        return Head::NotOurs;
    };
    let mut request = Request::new(RequestBody::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Head::Request { request, close }
}

/// Writes the status line and headers of `parts` into `out` and decides the body's framing
/// (`is_head`: the request was a `HEAD`). `close` says whether the connection ends after this
/// answer; a response that asks for that sets it, and when set, the head says so.
fn encode_head(
    out: &mut BytesMut,
    parts: http::response::Parts,
    body: &Tracked<Body>,
    is_head: bool,
    close: &mut bool,
) -> Framing {
    let http::response::Parts {
        mut status,
        mut headers,
        ..
    } = parts;
    let mut discard =
        is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if status.is_informational() {
        // Only a `101` ends a request with a 1xx, and upgrades are hyper's: an answer gone
        // wrong, and the connection ends after it.
        discard = true;
        *close = true;
        status = StatusCode::BAD_GATEWAY;
        headers.clear();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    // One pass over the names the framing depends on; a removal only where one is due.
    let mut length = Length::Absent;
    let (mut chunked, mut dated) = (false, false);
    for (name, value) in &headers {
        if name == header::CONTENT_LENGTH {
            length = length.and(value);
        } else if name == header::TRANSFER_ENCODING {
            chunked = true;
        } else if name == header::DATE {
            dated = true;
        } else if name == header::CONNECTION {
            *close |= lists(value.as_bytes(), b"close");
        }
    }
    if chunked {
        headers.remove(header::TRANSFER_ENCODING);
    }
    let declared = match length {
        Length::Absent => None,
        Length::Declared(length) if status != StatusCode::NO_CONTENT => Some(length),
        Length::Declared(_) | Length::Invalid => {
            headers.remove(header::CONTENT_LENGTH);
            None
        }
    };
    let framing = if discard {
        if is_head && declared.is_none() {
            if let Some(length) = body.size_hint().exact().filter(|&n| n > 0) {
                set_length(&mut headers, length);
            }
        }
        Framing::Discard
    } else if let Some(length) = declared {
        Framing::Length(length)
    } else if let Some(length) = body.size_hint().exact() {
        set_length(&mut headers, length);
        Framing::Length(length)
    } else {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Framing::Chunked
    };
    if *close {
        // The connection's own options are this hop's alone: they say it closes.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    out.reserve(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    if !dated {
        out.extend_from_slice(b"date: ");
        date::put(out);
        out.extend_from_slice(b"\r\n");
    }
    crate::headers::put_fields(out, &headers);
    out.extend_from_slice(b"\r\n");
    framing
}

/// A response's own `Content-Length`, as its values are met: one value of digits only (or
/// several equal ones). Anything else is removed and the length taken from the body.
#[derive(Clone, Copy)]
enum Length {
    Absent,
    Declared(u64),
    Invalid,
}

impl Length {
    fn and(self, value: &HeaderValue) -> Length {
        match (self, decimal(value.as_bytes())) {
            (Length::Absent, Some(length)) => Length::Declared(length),
            (Length::Declared(before), Some(length)) if before == length => self,
            _ => Length::Invalid,
        }
    }
}

fn set_length(headers: &mut HeaderMap, length: u64) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

/// Moves the body into `out` frame by frame as `framing` says, writing whenever the batch is
/// full or the body has nothing ready. `Ok` once the body has ended (its last bytes may still
/// be in `out`); `Err` when the connection is to end: a failed write, a failed body, or a
/// body longer or shorter than its declared length.
fn poll_body<S: AsyncWrite + Unpin>(
    io: &mut Watched<S>,
    out: &mut BytesMut,
    body: &mut Tracked<Body>,
    framing: &mut Framing,
    cx: &mut Context<'_>,
) -> Poll<Result<(), ()>> {
    loop {
        if out.len() >= WRITE_BATCH && ready!(poll_write_out(io, out, cx)).is_err() {
            return Poll::Ready(Err(()));
        }
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers: an HTTP/1.1 client gets none it did not ask for.
                    continue;
                };
                match framing {
                    Framing::Discard => {}
                    Framing::Length(owed) => {
                        let len = data.len() as u64;
                        if len > *owed {
                            return Poll::Ready(Err(()));
                        }
                        *owed -= len;
                        out.extend_from_slice(&data);
                    }
                    Framing::Chunked => {
                        if !data.is_empty() {
                            let _ = write!(out, "{:x}\r\n", data.len());
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(())),
            Poll::Ready(None) => {
                return Poll::Ready(match framing {
                    Framing::Length(owed) if *owed > 0 => Err(()),
                    Framing::Chunked => {
                        out.extend_from_slice(b"0\r\n\r\n");
                        Ok(())
                    }
                    _ => Ok(()),
                });
            }
            Poll::Pending => {
                // What is gathered goes out while the body waits for more, and is flushed
                // (TLS may hold written bytes until then; a plain socket's flush is free),
                // however long the body's next frame takes.
                match poll_write_out(io, out, cx) {
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                    Poll::Ready(Ok(())) => {
                        if let Poll::Ready(Err(_)) = Pin::new(&mut *io).poll_flush(cx) {
                            return Poll::Ready(Err(()));
                        }
                    }
                    Poll::Pending => {}
                }
                return Poll::Pending;
            }
        }
    }
}

/// Writes all of `out`.
fn poll_write_out<S: AsyncWrite + Unpin>(
    io: &mut Watched<S>,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        let written = ready!(Pin::new(&mut *io).poll_write(cx, out))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.advance(written);
    }
    Poll::Ready(Ok(()))
}

/// The `Date` of a response, formatted once a second per thread, at the second of the
/// connection's wake-up (`clock::unix_seconds`: no clock read of its own).
mod date {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::BytesMut;

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub fn put(out: &mut BytesMut) {
        let second = crate::clock::unix_seconds();
        NOW.with_borrow_mut(|(at, text)| {
            if *at != second {
                *at = second;
                *text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            }
            out.extend_from_slice(text.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests;
