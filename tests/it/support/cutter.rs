//! A TCP relay in front of a server that can *cut* the connections it carries: after
//! [`Cutter::cut`], the bytes of every connection open at that moment are dropped in both
//! directions while both sockets stay open (no FIN, no RST), as in a network partition or
//! behind a NAT that forgot the flow. Connections made afterwards are relayed normally.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct Cutter {
    addr: SocketAddr,
    generation: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

impl Cutter {
    /// Relays `127.0.0.1:<free port>` to `target`.
    pub async fn start(target: SocketAddr) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let generation = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let current = Arc::clone(&generation);
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let born = current.load(Ordering::SeqCst);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (from, to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read), Box::new(client_write)),
                ] {
                    let current = Arc::clone(&current);
                    connections.spawn(relay(from, to, born, current));
                }
            }
        });
        Cutter {
            addr,
            generation,
            _tasks: tasks,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Silences every connection open now, for good.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` while the relay is in the generation the connection was born in;
/// after a cut, keeps reading (so the sender never notices) and drops what it reads.
async fn relay(
    mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    mut to: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    born: u64,
    current: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                if current.load(Ordering::SeqCst) == born {
                    let _ = to.shutdown().await;
                    return;
                }
                // Cut: the other side never hears of it. Hold the socket open.
                std::future::pending::<()>().await;
                return;
            }
            Ok(n) => n,
        };
        if current.load(Ordering::SeqCst) == born && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
