//! An HTTP/1.1 upstream on raw sockets whose every answer the test scripts: answering before
//! it read the body, closing after reading, holding, stalling mid-body, `Connection: close`,
//! `Transfer-Encoding` beside `Content-Length`. It takes requests off each connection's bytes
//! in order, as a sloppy server does (a body it did not read is taken for the next request),
//! and records every request head with the connection it came on.
//!
//! ```ignore
//! let up = scripted(|seen| if seen.line.starts_with("POST /early") {
//!     Answer::Early(ok("early"))
//! } else {
//!     Answer::After(ok(&seen.line))
//! }).await;
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request head the upstream read.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The connection it came on: 0 for the first accepted, and so on.
    pub conn: usize,
    /// The request line, `GET /x HTTP/1.1`.
    pub line: String,
    /// The whole head, as sent.
    pub head: String,
}

/// What the upstream does with one request.
pub enum Answer {
    /// Reads the body (its `Content-Length`), then writes these bytes.
    After(Vec<u8>),
    /// Reads the body, waits this long, then writes these bytes.
    Later(Duration, Vec<u8>),
    /// Writes these bytes without reading the body: what follows on the connection is read
    /// as the next request (a "CL.0" server).
    Early(Vec<u8>),
    /// Writes `first` without reading the body, waits until more bytes arrive (at most
    /// `wait`), then writes `rest`: a response still going out when the body comes.
    EarlyThen {
        first: Vec<u8>,
        rest: Vec<u8>,
        wait: Duration,
    },
    /// Reads the request, waits this long, and closes the connection without an answer.
    CloseAfter(Duration),
    /// Reads the request, writes these bytes, and then does nothing with the connection.
    Stall(Vec<u8>),
}

/// A running scripted upstream.
pub struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `200 OK` with `body` and its length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Starts a scripted upstream on `127.0.0.1:0`; `script` decides each request's answer.
pub async fn scripted<F>(script: F) -> Scripted
where
    F: Fn(&Seen) -> Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind scripted upstream");
    let addr = listener.local_addr().expect("scripted upstream address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let (recorded, counter) = (seen.clone(), accepted.clone());
    let task = tokio::spawn(async move {
        // Connection tasks end with the accept loop (and the test).
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let conn = counter.fetch_add(1, Ordering::SeqCst);
            conns.spawn(serve(stream, conn, recorded.clone(), script.clone()));
        }
    });
    Scripted {
        addr,
        seen,
        accepted,
        task,
    }
}

async fn serve<F>(mut stream: TcpStream, conn: usize, seen: Arc<Mutex<Vec<Seen>>>, script: Arc<F>)
where
    F: Fn(&Seen) -> Answer + Send + Sync + 'static,
{
    let mut pending = Vec::new();
    loop {
        let end = loop {
            if let Some(end) = find(&pending, b"\r\n\r\n") {
                break end + 4;
            }
            if !fill(&mut stream, &mut pending).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end);
        let request = Seen {
            conn,
            line: head.lines().next().unwrap_or_default().to_owned(),
            head: head.clone(),
        };
        seen.lock().expect("lock").push(request.clone());
        let body = content_length(&head);
        match script(&request) {
            Answer::After(bytes) => {
                if !take(&mut stream, &mut pending, body).await
                    || stream.write_all(&bytes).await.is_err()
                {
                    return;
                }
            }
            Answer::Later(wait, bytes) => {
                if !take(&mut stream, &mut pending, body).await {
                    return;
                }
                tokio::time::sleep(wait).await;
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Answer::Early(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Answer::EarlyThen { first, rest, wait } => {
                if stream.write_all(&first).await.is_err() {
                    return;
                }
                let had = pending.len();
                let _ = tokio::time::timeout(wait, async {
                    while pending.len() == had && fill(&mut stream, &mut pending).await {}
                })
                .await;
                if stream.write_all(&rest).await.is_err() {
                    return;
                }
            }
            Answer::CloseAfter(wait) => {
                let _ = take(&mut stream, &mut pending, body).await;
                tokio::time::sleep(wait).await;
                return;
            }
            Answer::Stall(bytes) => {
                let _ = take(&mut stream, &mut pending, body).await;
                let _ = stream.write_all(&bytes).await;
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Scripted {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request head read so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The request lines read so far.
    pub fn lines(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.line).collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads once more into `pending`; false on close or error.
async fn fill(stream: &mut TcpStream, pending: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 16384];
    match stream.read(&mut buf).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            pending.extend_from_slice(&buf[..n]);
            true
        }
    }
}

/// Reads and drops a body of `len` bytes.
async fn take(stream: &mut TcpStream, pending: &mut Vec<u8>, len: usize) -> bool {
    while pending.len() < len {
        if !fill(stream, pending).await {
            return false;
        }
    }
    pending.drain(..len);
    true
}

fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
