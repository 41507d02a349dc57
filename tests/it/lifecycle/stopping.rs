//! Shutdown: in-flight requests finish, but nothing that is merely open holds it up — not a
//! connection that never sent a request (plain, or TLS after its handshake: a browser's
//! preconnect), not a WebSocket tunnel.

use std::time::{Duration, Instant};

use super::{connect_tls, open_tunnel, setup, setup_tls};
use crate::support::raw;

#[tokio::test]
async fn connections_that_never_sent_a_request_do_not_hold_up_shutdown() {
    // Defaults: 10 s for a first byte, 60 s for a TLS connection's first request, 30 s grace.
    let (pki, _up, mut p) = setup_tls().await;
    let mut plain = raw::connect(p.addr()).await;
    let mut preconnect = connect_tls(&pki, &p).await;
    let started = Instant::now();
    let stopped = p.begin_stop();
    let stopped = tokio::time::timeout(Duration::from_secs(5), stopped).await;
    assert!(
        stopped.is_ok(),
        "shutdown waited for connections that never sent a request"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(plain.closed_within(Duration::from_secs(1)).await);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::AsyncReadExt::read(&mut preconnect, &mut buf),
    )
    .await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
}

#[tokio::test]
async fn a_websocket_tunnel_ends_at_shutdown() {
    let (_up, mut p) = setup("").await;
    let mut tunnel = open_tunnel(&p).await;
    let stopped = p.begin_stop();
    assert!(
        tunnel.closed_within(Duration::from_secs(2)).await,
        "a tunnel outlived the server"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(5), stopped).await;
    assert!(stopped.is_ok(), "shutdown did not finish");
}
