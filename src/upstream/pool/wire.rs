//! The sockets under pooled connections, watched for what hyper does not tell: on HTTP/1.1,
//! an upstream that speaks before it has the whole request ([`Wire`]); on HTTP/2, how many
//! streams the upstream allows at once ([`Streams`]).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Usage, EARLY, MAX_STREAMS, OPEN};

pin_project_lite::pin_project! {
    /// The socket of an HTTP/1.1 upstream connection. Anything read from it while a request
    /// body is still going out marks the exchange: the upstream answered (or closed) before
    /// it had the whole request, so it may take the rest of the body for a request of its
    /// own, and the connection must not carry another one. Reading and handing over the
    /// body both happen in the connection's task, so their order is exact. A read while a
    /// response head is awaited is noted too (`Usage::heard`, see `drive`).
    pub(super) struct Wire<T> {
        #[pin]
        io: T,
        usage: Arc<Usage>,
    }
}

impl<T> Wire<T> {
    pub(super) fn new(io: T, usage: Arc<Usage>) -> Wire<T> {
        Wire { io, usage }
    }
}

impl<T: hyper::rt::Read> hyper::rt::Read for Wire<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let polled = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if this.usage.answer_by.load(Ordering::Relaxed) != 0 {
                this.usage.heard.store(true, Ordering::Relaxed);
            }
            let exchange = &this.usage.exchange;
            if exchange.load(Ordering::Relaxed) & OPEN != 0 {
                exchange.fetch_or(EARLY, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<T: hyper::rt::Write> hyper::rt::Write for Wire<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

pin_project_lite::pin_project! {
    /// The socket of an HTTP/2 upstream connection, whose frame headers are followed as they
    /// are read, to learn the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` (hyper keeps it
    /// to itself). A request beyond it would wait in hyper's queue; the pool opens another
    /// connection instead. Only frame headers and `SETTINGS` payloads are looked at.
    pub(super) struct Streams<T> {
        #[pin]
        io: T,
        usage: Arc<Usage>,
        head: [u8; 9],
        head_len: usize,
        // Payload bytes of the current frame still to come.
        left: usize,
        settings: bool,
        entry: [u8; 6],
        entry_len: usize,
    }
}

impl<T> Streams<T> {
    pub(super) fn new(io: T, usage: Arc<Usage>) -> Streams<T> {
        Streams {
            io,
            usage,
            head: [0; 9],
            head_len: 0,
            left: 0,
            settings: false,
            entry: [0; 6],
            entry_len: 0,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Streams<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        let mut bytes = &buf.filled()[before..];
        while !bytes.is_empty() {
            if *this.left == 0 {
                let take = (9 - *this.head_len).min(bytes.len());
                this.head[*this.head_len..*this.head_len + take].copy_from_slice(&bytes[..take]);
                *this.head_len += take;
                bytes = &bytes[take..];
                if *this.head_len == 9 {
                    let head = *this.head;
                    *this.head_len = 0;
                    *this.left = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    *this.settings = head[3] == SETTINGS && head[4] & ACK == 0;
                    *this.entry_len = 0;
                }
                continue;
            }
            let take = (*this.left).min(bytes.len());
            if *this.settings {
                for &byte in &bytes[..take] {
                    this.entry[*this.entry_len] = byte;
                    *this.entry_len += 1;
                    if *this.entry_len == 6 {
                        *this.entry_len = 0;
                        let entry = *this.entry;
                        if u16::from_be_bytes([entry[0], entry[1]]) == MAX_CONCURRENT_STREAMS {
                            let max = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                            this.usage
                                .max_streams
                                .store(max.clamp(1, MAX_STREAMS), Ordering::Relaxed);
                        }
                    }
                }
            }
            *this.left -= take;
            bytes = &bytes[take..];
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Streams<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}
