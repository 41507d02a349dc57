//! A WebSocket tunnel: after the upstream's `101`, the two upgraded connections spliced.
//!
//! The tunnel holds the downstream connection's [`ConnInfo`], and so its place under
//! `server.max_connections`, until one side closes, no byte has moved either way for
//! `server.idle_timeout` (as nginx's `proxy_read_timeout` ends an idle tunnel), or the server
//! shuts down.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn};

use crate::{ConnInfo, Upgraded};

/// Splices the upgraded downstream and upstream connections until either closes, the
/// tunnel idles for `idle`, or the server shuts down. The server hands the downstream
/// connection over once it has sent the `101` ([`ConnInfo::on_upgrade`]).
pub async fn splice(
    conn: Arc<ConnInfo>,
    downstream: tokio::sync::oneshot::Receiver<Upgraded>,
    upstream: OnUpgrade,
    idle: Duration,
) {
    // Both come at once after the `101`; `idle` bounds the wait all the same.
    let Ok(both) = tokio::time::timeout(idle, async { tokio::join!(downstream, upstream) }).await
    else {
        warn!(peer = %conn.peer, "protocol upgrade failed: the connections were not handed over in time");
        return;
    };
    let (downstream, upstream) = match both {
        (Ok(downstream), Ok(upstream)) => (downstream, upstream),
        (Err(_), _) => {
            debug!(peer = %conn.peer, "protocol upgrade failed: the client's connection ended before the 101 was sent");
            return;
        }
        (_, Err(err)) => {
            warn!(error = %err, "protocol upgrade failed");
            return;
        }
    };
    let moved = AtomicU64::new(0);
    let mut downstream = Counted {
        io: downstream,
        moved: &moved,
    };
    let mut upstream = Counted {
        io: TokioIo::new(upstream),
        moved: &moved,
    };
    let copy = tokio::io::copy_bidirectional(&mut downstream, &mut upstream);
    let mut copy = std::pin::pin!(copy);
    let shutdown = conn.shutdown.clone();
    let stop = async move {
        match shutdown {
            Some(mut shutdown) => shutdown.wait().await,
            None => std::future::pending().await,
        }
    };
    let mut stop = std::pin::pin!(stop);
    // Sampled four times per idle timeout: an idle tunnel ends between one and one and a
    // quarter idle timeouts after its last byte.
    let step = (idle / 4).max(Duration::from_millis(1));
    let look = tokio::time::sleep(step);
    let mut look = std::pin::pin!(look);
    let mut seen = 0;
    let mut moved_at = Instant::now();
    loop {
        tokio::select! {
            ended = &mut copy => {
                if let Err(err) = ended {
                    debug!(error = %err, "upgraded connection closed");
                }
                break;
            }
            () = &mut stop => {
                debug!("upgraded connection closed: the server is shutting down");
                break;
            }
            () = &mut look => {
                let now = Instant::now();
                let count = moved.load(Ordering::Relaxed);
                if count != seen {
                    seen = count;
                    moved_at = now;
                } else if now.saturating_duration_since(moved_at) >= idle {
                    debug!(peer = %conn.peer, "upgraded connection closed: idle");
                    break;
                }
                look.as_mut().reset((now + step).into());
            }
        }
    }
}

/// One end of the tunnel; every read that brings bytes counts.
struct Counted<'a, T> {
    io: T,
    moved: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
