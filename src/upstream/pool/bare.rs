//! HTTP/1.1 without hyper's client, for requests without a body to a plain-text upstream
//! (nearly every page load and API read): the request's own future writes the head (at once,
//! or at the end of the scheduler's turn where writing at once would put proxy and upstream in
//! lockstep, [`pace`]) and reads the answer's, and the response body reads the rest, so an
//! answer takes no hop through a connection task and no channel (docs/performance.md,
//! "Seventh pass"). Requests with a body, WebSocket handshakes, TLS and HTTP/2 stay on hyper's
//! client, which takes over an idle connection of this kind when it has none of its own.
//!
//! The answer is read as RFC 9112 says (§6.3) and nothing looser: no body after `HEAD`, `204`
//! or `304`; `Transfer-Encoding` before `Content-Length` (and then the connection is not
//! reused); conflicting or malformed lengths refused; chunked framing with CRLF only and
//! bounded lines (a chunked body's trailers are read and dropped, as an HTTP/1.1 client
//! gets none without asking with `TE: trailers`); an answer without a length read to the
//! close. A connection goes back to its
//! thread's stack only after a clean exchange: the answer read to its end, nothing after it,
//! and neither side asking to close.
//!
//! An idle connection has no task: it waits in its thread's stack, and a look at its socket's
//! readiness when it is taken (no system call unless something arrived) tells whether the
//! upstream closed it meanwhile. One sweeper task per thread closes those idle past the
//! upstream's `keepalive_timeout`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::limit::Spare;
use super::{Inner, UpstreamBody};
use crate::clock;
use crate::headers::{decimal, lists};

pub(super) mod pace;

/// Header fields a response head may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer before each read (a read may fill more of it when it has more).
const READ_CHUNK: usize = 8 << 10;
/// A chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1 << 10;
/// The trailer section of a chunked body, which is read and dropped.
const MAX_TRAILERS: usize = 16 << 10;
/// Interim (`1xx`) answers skipped before the final one.
const MAX_INTERIM: u8 = 8;

/// Why an exchange failed.
#[derive(Debug)]
pub enum BareError {
    Io(io::Error),
    /// The upstream closed the connection before its answer was whole.
    Closed,
    /// The upstream's answer is not HTTP/1.1 as RFC 9112 has it.
    Malformed(&'static str),
    /// The response head did not fit the connection's buffer.
    HeadTooLarge,
}

impl fmt::Display for BareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BareError::Io(err) => write!(f, "{err}"),
            BareError::Closed => f.write_str("the upstream closed the connection mid-answer"),
            BareError::Malformed(what) => write!(f, "malformed answer: {what}"),
            BareError::HeadTooLarge => f.write_str("the response head is too large"),
        }
    }
}

impl std::error::Error for BareError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BareError::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// An HTTP/1.1 connection to a plain-text upstream, and its place under `max_connections`.
pub(super) struct Bare {
    io: TcpStream,
    /// Read but not yet consumed; empty between exchanges.
    buf: BytesMut,
    /// The response head's deadline. Requests follow one another with later deadlines, so it
    /// is moved only when one comes before the time it is set for, or after it went off.
    alarm: Pin<Box<clock::Alarm>>,
    /// Idle since.
    since: Instant,
    /// It carried an exchange before.
    pub(super) reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl Bare {
    pub(super) fn new(io: TcpStream, permit: OwnedSemaphorePermit, deadline: Instant) -> Bare {
        Bare {
            io,
            buf: BytesMut::new(),
            alarm: Box::pin(clock::Alarm::until(deadline)),
            since: clock::now(),
            reused: false,
            _permit: permit,
        }
    }

    /// Whether an idle connection can carry a request: nothing arrived on it since its last
    /// answer (the upstream's close, or anything else).
    pub(super) fn alive(&mut self) -> bool {
        // No system call unless the socket was seen readable since its last answer (and
        // nothing taken from the task's budget, which could make a dead socket look alive).
        matches!(
            self.io.try_read(&mut [0u8; 1]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock
        )
    }

    /// The socket and its place, for hyper's client to take over (between exchanges, when
    /// nothing is buffered).
    pub(super) fn into_parts(self) -> (TcpStream, OwnedSemaphorePermit) {
        debug_assert!(self.buf.is_empty());
        (self.io, self._permit)
    }

    /// Reads what the socket has into `buf`; `Ready(Ok(0))` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Into the buffer's spare room as it is, not zeroed first.
        self.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// `Ready` once `deadline` has passed.
    fn poll_deadline(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.alarm.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // It went off for an earlier deadline, or while the connection was idle.
            self.alarm.as_mut().reset(deadline);
        }
    }
}

/// The idle connections of one thread, the most recently used last.
#[derive(Default)]
pub(super) struct Stack {
    conns: VecDeque<Bare>,
    /// A sweeper task runs for this stack.
    swept: bool,
}

pub(super) type Idle = Mutex<Stack>;

/// Whether `request` takes this path: no body, no upgrade, a method that never has one.
pub(super) fn eligible(request: &Request<UpstreamBody>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) && request.body().is_end_stream()
        && !request.headers().contains_key(header::UPGRADE)
}

/// The head of `request` (origin form, its `Host` set) as it goes out.
pub(super) fn head_of(request: &Request<UpstreamBody>) -> Vec<u8> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str());
    let headers = request.headers();
    let size = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>();
    let mut head = Vec::with_capacity(request.method().as_str().len() + target.len() + size + 16);
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    crate::headers::put_fields(&mut head, headers);
    head.extend_from_slice(b"\r\n");
    head
}

impl Inner {
    /// An idle connection of this thread that the upstream has not closed, if any.
    pub(super) fn take_bare(&self) -> Option<Bare> {
        let idle = self.bare.get()?;
        let mut stack = idle.lock().ok()?;
        let now = clock::now();
        while let Some(mut conn) = stack.conns.pop_back() {
            if now.saturating_duration_since(conn.since) >= self.settings.keepalive {
                // Everything below it has been idle longer still.
                stack.conns.clear();
                break;
            }
            if conn.alive() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Idle connections this thread holds.
    pub(super) fn bare_idle_here(&self) -> usize {
        self.bare
            .get()
            .and_then(|idle| idle.lock().ok().map(|stack| stack.conns.len()))
            .unwrap_or(0)
    }

    /// Gives back places under `max_connections` for a request that found none free: this
    /// thread's idle connections close, and every thread's that the upstream closed.
    pub(super) fn close_idle_bare(&self) {
        let here = self.bare.get();
        for idle in self.bare.iter() {
            let Ok(mut stack) = idle.lock() else { continue };
            if here.is_some_and(|here| Arc::ptr_eq(here, idle)) {
                stack.conns.clear();
            } else {
                stack.conns.retain_mut(Bare::alive);
            }
        }
    }

    /// Keeps a connection whose exchange ended cleanly for the next request of this thread,
    /// or hands it to a request waiting under `max_connections`, whatever its thread.
    fn check_in_bare(&self, mut conn: Bare) {
        conn.since = clock::now();
        let Some(Spare::Bare(conn)) = self.limit.offer(Spare::Bare(conn)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let idle = self.bare.get_or(Default::default);
        let Ok(mut stack) = idle.lock() else { return };
        if stack.conns.len() >= self.max_idle {
            stack.conns.pop_front();
        }
        stack.conns.push_back(conn);
        if !stack.swept {
            stack.swept = true;
            runtime.spawn(sweep(Arc::downgrade(idle), self.settings.keepalive));
        }
    }
}

/// Closes the connections of `idle` that were idle for `keepalive`, until it is empty (then
/// the next check-in starts another sweeper) or its pool is gone.
async fn sweep(idle: Weak<Idle>, keepalive: Duration) {
    loop {
        let next = {
            let Some(idle) = idle.upgrade() else { return };
            let Ok(mut stack) = idle.lock() else { return };
            let now = Instant::now();
            while stack
                .conns
                .front()
                .is_some_and(|conn| now.saturating_duration_since(conn.since) >= keepalive)
            {
                stack.conns.pop_front();
            }
            match stack.conns.front() {
                Some(oldest) => oldest.since + keepalive,
                None => {
                    stack.swept = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

/// How the rest of an answer is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes more.
    Length(u64),
    Chunked(Chunk),
    /// Everything until the upstream closes.
    Close,
    /// Read whole.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data more.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section, this many bytes of it read.
    Trailers(usize),
}

/// A response head read off the wire.
#[derive(Debug)]
enum Parsed {
    /// Not all there yet.
    Partial,
    /// An interim `1xx` of this many bytes, to skip.
    Interim(usize),
    /// A final response head of this many bytes.
    Head(usize, Response<()>, Framing, bool),
}

/// Reads the response head at the start of `buf` (an answer to a `HEAD` if `head_request`).
fn parse(buf: &[u8], head_request: bool) -> Result<Parsed, BareError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut fields);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(BareError::Malformed("more than 100 header fields"))
        }
        Err(_) => return Err(BareError::Malformed("not an HTTP/1.1 response head")),
    };
    let status = head
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(BareError::Malformed("the status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(BareError::Malformed(
                "101 to a request that asked no upgrade",
            ));
        }
        return Ok(Parsed::Interim(len));
    }
    let version = match head.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut close = version == Version::HTTP_10;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for field in head.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| BareError::Malformed("a header field name"))?;
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| BareError::Malformed("a header field value"))?;
        if name == header::TRANSFER_ENCODING {
            // The last coding of the last field is what frames the body.
            let last = field
                .value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            for part in field.value.split(|b| *b == b',') {
                let n = decimal(part.trim_ascii()).ok_or(BareError::Malformed(
                    "a Content-Length that is not a length",
                ))?;
                if length.is_some_and(|seen| seen != n) {
                    return Err(BareError::Malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
        } else if name == header::CONNECTION {
            close |= lists(field.value, b"close");
        }
        headers.append(name, value);
    }
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Length(0)
        } else if let Some(chunked) = chunked {
            // Both framings at once is how requests are smuggled: read by the one that wins,
            // and never reuse the connection (RFC 9112 §6.3).
            close |= length.is_some();
            if chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                close = true;
                Framing::Close
            }
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            close = true;
            Framing::Close
        };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Head(len, response, framing, !close))
}

/// What decoding the buffered bytes came to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body is whole.
    Done,
}

/// Takes the next piece of the body out of `buf`, as `framing` delimits it.
fn decode(buf: &mut BytesMut, framing: &mut Framing) -> Result<Step, BareError> {
    loop {
        match framing {
            Framing::Done | Framing::Length(0) => {
                *framing = Framing::Done;
                return Ok(Step::Done);
            }
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                *left -= take as u64;
                return Ok(Step::Data(buf.split_to(take).freeze()));
            }
            Framing::Close => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Data(left)) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                *left -= take as u64;
                if *left == 0 {
                    *framing = Framing::Chunked(Chunk::DataEnd);
                }
                return Ok(Step::Data(buf.split_to(take).freeze()));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(BareError::Malformed("chunk data longer than its size"));
                }
                buf.advance(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(end) = line_end(buf, MAX_CHUNK_LINE)? else {
                    return Ok(Step::More);
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Trailers(read)) => {
                let Some(end) = line_end(buf, MAX_TRAILERS.saturating_sub(*read))? else {
                    return Ok(Step::More);
                };
                buf.advance(end + 2);
                if end == 0 {
                    *framing = Framing::Done;
                } else {
                    *read += end + 2;
                    if *read > MAX_TRAILERS {
                        return Err(BareError::Malformed("a trailer section too long"));
                    }
                }
            }
        }
    }
}

/// Where the CRLF ending the line at the start of `buf` is, if it has come, within `max`
/// bytes. A lone CR or LF is refused: lines end one way only.
fn line_end(buf: &[u8], max: usize) -> Result<Option<usize>, BareError> {
    let window = &buf[..buf.len().min(max.saturating_add(1))];
    match window.iter().position(|b| *b == b'\r' || *b == b'\n') {
        Some(at) if window[at] == b'\n' => Err(BareError::Malformed("a line ending in LF alone")),
        Some(at) if at + 1 < buf.len() => {
            if buf[at + 1] == b'\n' {
                Ok(Some(at))
            } else {
                Err(BareError::Malformed("a line ending in CR alone"))
            }
        }
        Some(_) => Ok(None),
        None if buf.len() > max => Err(BareError::Malformed("a line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line: hex digits, then nothing or extensions (`;…`), which are
/// ignored.
fn chunk_size(line: &[u8]) -> Result<u64, BareError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(BareError::Malformed("a chunk size"));
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(BareError::Malformed("a chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits]).expect("hex digits are ASCII");
    u64::from_str_radix(text, 16).map_err(|_| BareError::Malformed("a chunk size"))
}

/// One request on a connection, until its response head: written, then read.
pub(super) struct Exchange {
    conn: Option<Bare>,
    /// The request, kept to be sent again should the connection turn out closed before a
    /// byte of it went out.
    request: Option<Request<UpstreamBody>>,
    head: Vec<u8>,
    written: usize,
    /// The head waits for the end of the scheduler's turn (see [`pace`]).
    wait_turn: bool,
    /// Interim answers skipped so far.
    interim: u8,
    deadline: Instant,
    head_request: bool,
    pool: Arc<Inner>,
}

/// Why an exchange gave no response head, and the request when it provably never left.
pub(super) struct Failed {
    pub(super) error: BareError,
    pub(super) late: bool,
    pub(super) unsent: Option<Request<UpstreamBody>>,
}

impl Exchange {
    pub(super) fn new(
        mut conn: Bare,
        mut request: Request<UpstreamBody>,
        deadline: Instant,
        pool: Arc<Inner>,
    ) -> Exchange {
        pool.set_host(&mut request);
        if conn.alarm.deadline() > deadline {
            conn.alarm.as_mut().reset(deadline);
        } else {
            // Another task may have armed it.
            conn.alarm.as_mut().rearm();
        }
        Exchange {
            head: head_of(&request),
            head_request: request.method() == Method::HEAD,
            request: Some(request),
            conn: Some(conn),
            written: 0,
            wait_turn: !pace::at_once(),
            interim: 0,
            deadline,
            pool,
        }
    }

    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<BareBody>, Failed>> {
        let (error, late) = match std::task::ready!(self.step(cx)) {
            Ok((response, framing, keep_alive)) => {
                let body = BareBody {
                    conn: self.conn.take(),
                    framing,
                    keep_alive,
                    pool: self.pool.clone(),
                };
                return Poll::Ready(Ok(response.map(|()| body)));
            }
            Err(failed) => failed,
        };
        // The connection closes with the failure.
        let reused = self.conn.take().is_some_and(|conn| conn.reused);
        let unsent = (self.written == 0 && reused && !late)
            .then(|| self.request.take())
            .flatten();
        Poll::Ready(Err(Failed {
            error,
            late,
            unsent,
        }))
    }

    /// Writes the request head, then reads until the response head; the error says whether
    /// the deadline passed.
    #[allow(clippy::type_complexity)]
    fn step(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Response<()>, Framing, bool), (BareError, bool)>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err((BareError::Closed, false)));
        };
        if self.wait_turn {
            // Woken at once, the task runs again after the tasks already ready.
            self.wait_turn = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while self.written < self.head.len() {
            match Pin::new(&mut conn.io).poll_write(cx, &self.head[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((
                        BareError::Io(io::ErrorKind::WriteZero.into()),
                        false,
                    )))
                }
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(err)) => return Poll::Ready(Err((BareError::Io(err), false))),
                Poll::Pending => {
                    if conn.poll_deadline(self.deadline, cx).is_ready() {
                        return Poll::Ready(Err((BareError::Closed, true)));
                    }
                    return Poll::Pending;
                }
            }
        }
        loop {
            match parse(&conn.buf, self.head_request) {
                Err(err) => return Poll::Ready(Err((err, false))),
                Ok(Parsed::Interim(len)) => {
                    conn.buf.advance(len);
                    self.interim += 1;
                    if self.interim > MAX_INTERIM {
                        return Poll::Ready(Err((
                            BareError::Malformed("more than 8 interim answers"),
                            false,
                        )));
                    }
                    continue;
                }
                Ok(Parsed::Head(len, response, framing, keep_alive)) => {
                    conn.buf.advance(len);
                    return Poll::Ready(Ok((response, framing, keep_alive)));
                }
                Ok(Parsed::Partial) if conn.buf.len() >= self.pool.settings.max_buf_size => {
                    return Poll::Ready(Err((BareError::HeadTooLarge, false)))
                }
                // A head arriving piece by piece, every piece read at once: the timer is only
                // looked at when a read waits, so the deadline is looked at here too.
                Ok(Parsed::Partial) if !conn.buf.is_empty() && Instant::now() >= self.deadline => {
                    return Poll::Ready(Err((BareError::Closed, true)));
                }
                Ok(Parsed::Partial) => {}
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err((BareError::Closed, false))),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err((BareError::Io(err), false))),
                Poll::Pending => {
                    if conn.poll_deadline(self.deadline, cx).is_ready() {
                        return Poll::Ready(Err((BareError::Closed, true)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The rest of an answer, read from the connection as the client takes it; its end gives
/// the connection back to its thread's stack if the exchange was clean.
pub struct BareBody {
    conn: Option<Bare>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<Inner>,
}

impl BareBody {
    /// Lets the connection go: back to its thread's stack if the exchange was clean.
    fn release(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.is_end_stream() && self.keep_alive && conn.buf.is_empty() {
            self.pool.check_in_bare(conn);
        }
    }
}

impl Drop for BareBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl HttpBody for BareBody {
    type Data = Bytes;
    type Error = BareError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BareError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match decode(&mut conn.buf, &mut this.framing) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Step::Done) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(err) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BareError::Closed)));
                }
                Ok(_) => {}
                Err(err) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BareError::Io(err))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
