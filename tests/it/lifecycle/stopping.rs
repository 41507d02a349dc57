//! Shutdown: in-flight requests finish, but nothing that is merely open holds it up — not a
//! connection that never sent a request (plain, or TLS after its handshake: a browser's
//! preconnect), not a WebSocket tunnel.

use std::path::Path;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{open_tunnel, setup, ROUTES};
use crate::support::keys::TestKey;
use crate::support::pki::Pki;
use crate::support::proxy::{self, proxy};
use crate::support::{raw, upstream};

fn toml_path(path: &Path) -> String {
    serde_json::Value::from(path.to_string_lossy()).to_string()
}

#[tokio::test]
async fn connections_that_never_sent_a_request_do_not_hold_up_shutdown() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("default", &["a.test"]);
    let up = upstream().run().await;
    let jwt = TestKey::new("HS256");
    // Defaults: 10 s for a first byte, 60 s for a TLS connection's first request, 30 s grace.
    let tls = format!(
        "[server]\ntls = {{ cert = {}, key = {} }}\n",
        toml_path(&cert),
        toml_path(&key)
    );
    let mut p = proxy(&proxy::config(
        &up.url(),
        &jwt.jwt_toml(),
        &format!("{tls}{ROUTES}"),
    ))
    .await;
    let mut plain = raw::connect(p.addr()).await;
    let tcp = TcpStream::connect(p.addr()).await.expect("connect");
    let name = ServerName::try_from("a.test".to_owned()).expect("server name");
    let mut preconnect = pki
        .connector(&[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
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
