//! An HTTP/2 upstream (h2c, prior knowledge) written frame by frame, for what a well-behaved
//! server library will not do on cue: refuse a stream (`REFUSED_STREAM`), send a `GOAWAY`
//! whose last stream is below one in flight, advertise a low `MAX_CONCURRENT_STREAMS`, or
//! go silent. Every answer is a bodiless `200`.
//!
//! ```ignore
//! let up = raw_h2(None, |request, _conn| if request == 0 { H2Answer::Refuse } else { H2Answer::Ok }).await;
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the upstream does with one request (a `HEADERS` frame opening a stream).
#[derive(Debug, Clone, Copy)]
pub enum H2Answer {
    /// `200`, at once.
    Ok,
    /// `200` after this long.
    After(Duration),
    /// `RST_STREAM` with `REFUSED_STREAM`: the request was not processed.
    Refuse,
    /// `RST_STREAM` with `INTERNAL_ERROR`: it may have been.
    Reset,
    /// A graceful `GOAWAY` (`NO_ERROR`) naming `last` as the last stream processed.
    GoAway { last: u32 },
    /// Nothing, ever: an upstream gone silent on this connection.
    Hold,
}

/// A stream the upstream saw.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub conn: usize,
    pub id: u32,
}

/// A running raw HTTP/2 upstream.
pub struct RawH2 {
    addr: SocketAddr,
    streams: Arc<Mutex<Vec<Stream>>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the upstream on `127.0.0.1:0`. `max_streams` is its `SETTINGS_MAX_CONCURRENT_STREAMS`
/// (none: unlimited); `script` answers the `n`th request overall, arriving on connection
/// `conn`.
pub async fn raw_h2<F>(max_streams: Option<u32>, script: F) -> RawH2
where
    F: Fn(usize, usize) -> H2Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw h2 upstream");
    let addr = listener.local_addr().expect("raw h2 upstream address");
    let streams = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let (seen, counter) = (streams.clone(), accepted.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let conn = counter.fetch_add(1, Ordering::SeqCst);
            conns.spawn(serve(
                stream,
                conn,
                max_streams,
                seen.clone(),
                script.clone(),
            ));
        }
    });
    RawH2 {
        addr,
        streams,
        accepted,
        task,
    }
}

impl RawH2 {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every stream opened so far, in order.
    pub fn streams(&self) -> Vec<Stream> {
        self.streams.lock().expect("lock").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

async fn send(writer: &tokio::sync::Mutex<OwnedWriteHalf>, bytes: &[u8]) {
    let _ = writer.lock().await.write_all(bytes).await;
}

async fn serve<F>(
    stream: TcpStream,
    conn: usize,
    max_streams: Option<u32>,
    seen: Arc<Mutex<Vec<Stream>>>,
    script: Arc<F>,
) where
    F: Fn(usize, usize) -> H2Answer + Send + Sync + 'static,
{
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let mut preface = [0u8; 24];
    if reader.read_exact(&mut preface).await.is_err() {
        return;
    }
    let mut settings = Vec::new();
    if let Some(max) = max_streams {
        settings.extend_from_slice(&3u16.to_be_bytes());
        settings.extend_from_slice(&max.to_be_bytes());
    }
    send(&writer, &frame(SETTINGS, 0, 0, &settings)).await;
    loop {
        let mut head = [0u8; 9];
        if reader.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).await.is_err() {
            return;
        }
        match kind {
            SETTINGS if flags & ACK == 0 => send(&writer, &frame(SETTINGS, ACK, 0, &[])).await,
            PING if flags & ACK == 0 => send(&writer, &frame(PING, ACK, 0, &payload)).await,
            HEADERS => {
                let n = {
                    let mut seen = seen.lock().expect("lock");
                    seen.push(Stream { conn, id });
                    seen.len() - 1
                };
                // `:status: 200` is entry 8 of HPACK's static table.
                let ok = frame(HEADERS, END_HEADERS | END_STREAM, id, &[0x88]);
                match script(n, conn) {
                    H2Answer::Ok => send(&writer, &ok).await,
                    H2Answer::After(wait) => {
                        let writer = writer.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            send(&writer, &ok).await;
                        });
                    }
                    H2Answer::Refuse => {
                        send(&writer, &frame(RST_STREAM, 0, id, &7u32.to_be_bytes())).await
                    }
                    H2Answer::Reset => {
                        send(&writer, &frame(RST_STREAM, 0, id, &2u32.to_be_bytes())).await
                    }
                    H2Answer::GoAway { last } => {
                        let mut body = last.to_be_bytes().to_vec();
                        body.extend_from_slice(&0u32.to_be_bytes());
                        send(&writer, &frame(GOAWAY, 0, 0, &body)).await;
                    }
                    H2Answer::Hold => {}
                }
            }
            // Request bodies, window updates and the rest need no answer here.
            _ => {}
        }
    }
}
