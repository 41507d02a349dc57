//! A raw TCP client for what a well-behaved HTTP client cannot send: smuggling attempts
//! (`Content-Length` + `Transfer-Encoding`), malformed request lines, absolute-form
//! targets, pipelining, and slowloris connections that never finish their headers.
//!
//! ```ignore
//! let reply = raw::send(proxy.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", secs(2)).await;
//! assert_eq!(raw::status_codes(&reply), [200]);
//! ```

use std::{io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// Connects to `addr`, writes `bytes` exactly, and returns everything read until the peer
/// closes, resets, or `timeout` passes (lossy UTF-8). The write side stays open, so the
/// server cannot mistake a half-close for the end of the request.
pub async fn send(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> String {
    let mut conn = connect(addr).await;
    // A server may answer and close before taking every byte (e.g. a 400 on the first
    // line); what it said is still worth reading, so a failed write is not fatal.
    let _ = conn.write(bytes).await;
    conn.read_until_close(timeout).await
}

/// [`send`] from the local address `from` (any of 127.0.0.0/8 on loopback): a client with an
/// address of its own, as the proxy or an ingress in front of it sees it.
pub async fn send_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("binding {from}: {e}"));
    let stream = socket
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr} from {from}: {e}"));
    let mut conn = RawConn {
        stream,
        pending: Vec::new(),
    };
    let _ = conn.write(bytes).await;
    conn.read_until_close(timeout).await
}

/// The status code of every response in `text`, in order: two codes from one request
/// means the server saw two requests. Responses are walked by their framing
/// (`Content-Length`, chunked, none for 1xx/204/304), so a body that contains
/// `HTTP/1.1 200` is not miscounted. A body that *starts* with `HTTP/1.` is taken for the
/// next response, which is what a `HEAD` answer (length but no body) looks like.
pub fn status_codes(text: &str) -> Vec<u16> {
    let mut codes = Vec::new();
    let mut rest = text.as_bytes();
    while let Some(start) = find(rest, b"HTTP/1.") {
        rest = &rest[start..];
        let code = rest
            .get(9..12)
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse().ok());
        let Some(code) = code else {
            // Not a status line after all; look further.
            rest = &rest[1..];
            continue;
        };
        codes.push(code);
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]);
        let body = &rest[head_end + 4..];
        rest = match body_len(&head, code, body) {
            Some(len) => body.get(len..).unwrap_or_default(),
            // Unknown framing: the body runs to the close, but keep looking so nothing
            // after it goes unseen.
            None => body,
        };
    }
    codes
}

/// How many bytes of `body` belong to the response with `head` and status `code`.
fn body_len(head: &str, code: u16, body: &[u8]) -> Option<usize> {
    // A response to HEAD carries Content-Length but no body: the next thing is a head.
    if matches!(code, 100..=199 | 204 | 304) || body.starts_with(b"HTTP/1.") {
        return Some(0);
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        return chunked_len(body);
    }
    header("content-length").and_then(|len| len.parse().ok())
}

/// The length of a complete chunked body at the start of `body`, trailers included.
fn chunked_len(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(body.get(at..)?, b"\r\n")?;
        let size_line = std::str::from_utf8(&body[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let trailers = body.get(at..)?;
            if trailers.starts_with(b"\r\n") {
                return Some(at + 2);
            }
            return Some(at + find(trailers, b"\r\n\r\n")? + 4);
        }
        at = at.checked_add(size)?.checked_add(2)?;
    }
}

/// Opens a TCP connection to `addr`; panics when it is refused.
pub async fn connect(addr: SocketAddr) -> RawConn {
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    RawConn {
        stream,
        pending: Vec::new(),
    }
}

/// An open connection, read and written by hand.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read past what an earlier `read_until`/`read_exact` returned.
    pending: Vec<u8>,
}

impl RawConn {
    /// Writes `bytes` exactly. Errs once the server has closed the connection, which is
    /// what a slowloris test waits for.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads until `needle` appears (e.g. `b"\r\n\r\n"` for a response head) and returns
    /// everything up to and including it; later bytes stay for the next read. Panics with
    /// what was read if the connection closes or `timeout` passes first.
    pub async fn read_until(&mut self, needle: &[u8], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = find(&self.pending, needle) {
                let rest = self.pending.split_off(at + needle.len());
                let found = std::mem::replace(&mut self.pending, rest);
                return String::from_utf8_lossy(&found).into_owned();
            }
            if !self.fill(deadline).await {
                panic!(
                    "{:?} not seen within {timeout:?}; read {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.pending)
                );
            }
        }
    }

    /// Reads exactly `n` bytes; panics with what was read if the connection closes or
    /// `timeout` passes first.
    pub async fn read_exact(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.pending.len() < n {
            if !self.fill(deadline).await {
                panic!(
                    "{n} bytes not read within {timeout:?}; read {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
            }
        }
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Everything until the peer closes or `timeout` passes (lossy UTF-8).
    pub async fn read_until_close(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while self.fill(deadline).await {}
        let all = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&all).into_owned()
    }

    /// Whether the peer closes (or resets) the connection within `timeout`. Data read in
    /// the meantime is discarded.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_elapsed) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The socket itself, for anything else.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Reads once into `pending`; false on close, reset or deadline.
    async fn fill(&mut self, deadline: Instant) -> bool {
        let mut buf = [0u8; 8192];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                self.pending.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `request` over a fresh HTTP/2 (h2c, prior knowledge) connection with the `h2`
/// crate, which writes pseudo-headers and headers exactly as given: a `host` header beside
/// `:authority`, userinfo in `:authority`, or no `:authority` at all (a request whose version
/// says HTTP/1.1 is sent with `:scheme http` and no authority). Returns the status.
pub async fn h2(addr: SocketAddr, request: http::Request<()>) -> u16 {
    let tcp = TcpStream::connect(addr).await.expect("connecting for h2");
    let (client, connection) = ::h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let (response, _) = client
        .send_request(request, true)
        .expect("the h2 client accepts the request");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an h2 answer within 10 s")
        .expect("an h2 response");
    response.status().as_u16()
}
