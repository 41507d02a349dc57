//! An upstream that records the exact bytes of every request it receives, for what the
//! recording hyper upstream would normalize away: duplicate headers, header spelling and
//! order, hop-by-hop headers that slipped through.
//!
//! ```ignore
//! let up = raw_upstream().await;
//! // ... a request through the proxy ...
//! assert!(!up.heads()[0].to_ascii_lowercase().contains("\r\nsec-websocket-key:"));
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running raw upstream. Every request gets `200 ok`; the connection is kept alive.
pub struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a raw upstream on `127.0.0.1:0`.
pub async fn raw_upstream() -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw upstream");
    let addr = listener.local_addr().expect("raw upstream address");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    while let Some(end) = head_end(&pending) {
                        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                        let body = body_len(&head);
                        if pending.len() < end + body {
                            break;
                        }
                        pending.drain(..end + body);
                        recorded.lock().expect("lock").push(head);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    RawUpstream { addr, heads, task }
}

impl RawUpstream {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The head (request line and header lines, up to and including the blank line) of
    /// every request received, in order, exactly as sent.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }

    /// The lines of the one request received so far with header `name` (any case).
    pub fn header_lines(&self, name: &str) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.heads()
            .iter()
            .flat_map(|head| head.split("\r\n").map(str::to_owned).collect::<Vec<_>>())
            .filter(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .collect()
    }
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The `Content-Length` of a head (the proxy sends every body it forwards in these tests with
/// one); 0 without one.
fn body_len(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}
