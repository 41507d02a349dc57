//! Resource exhaustion against the real binary in its own process (so its memory is measured
//! alone): slowloris, a connection flood past the cap, and many large uploads to an upstream
//! that will not read. Every load here is bounded in count and time, on loopback only.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::keys::TestKey;
use crate::support::{upstream, Req};

/// The `portcullis` binary serving `config`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(upstream_url: &str, server: &str) -> Server {
        let key = TestKey::new("HS256");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[log]\nformat = \"json\"\nlevel = \"warn,portcullis::server=info\"\n[upstreams]\napp = {}\n\n{}\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n",
            serde_json::Value::from(upstream_url),
            key.jwt_toml()
        );
        std::fs::write(&path, text).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        for (name, _) in std::env::vars() {
            if name.starts_with("PORTCULLIS_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(["run", "--config"])
            .arg(&path)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start portcullis");
        // The first log line names the bound address; later lines are drained so the
        // process never blocks on a full pipe.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                    if json["message"] == "listening" {
                        if let Some(tx) = tx.take() {
                            let _ =
                                tx.send(json["address"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("portcullis did not report its address")
            .parse()
            .expect("an address");
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Resident memory of the proxy process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples the proxy's RSS every 20 ms until `stop` is set; returns the peak.
fn sample_peak(server: &Server, stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut peak = server.rss();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        peak = peak.max(server.rss());
        std::thread::sleep(Duration::from_millis(20));
    }
    peak.max(server.rss())
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_does_not_starve_normal_clients() {
    let up = upstream().run().await;
    let server = Server::start(&up.url(), "header_read_timeout = \"10s\"");
    let mut slow = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let mut conn = TcpStream::connect(server.addr).await.expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .expect("write");
        slow.push(conn);
    }
    let mut latencies = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        let resp = Req::get(&server.url("/ok")).send().await;
        latencies.push(started.elapsed());
        assert_eq!(resp.status, 200);
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    eprintln!("normal client p99 with 2000 slowloris connections: {p99:?}");
    assert!(
        p99 < Duration::from_millis(100),
        "p99 {p99:?} with 2000 slowloris connections open"
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_cap_is_refused_without_memory_growth() {
    let up = upstream().run().await;
    let server = Server::start(&up.url(), "max_connections = 64");
    let before = server.rss();
    let mut conns = Vec::with_capacity(600);
    for _ in 0..600 {
        conns.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let mut closed = 0;
    for conn in &mut conns {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(5), conn.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 500,
        "only {closed} of 536 connections past the cap were refused"
    );
    let growth = server.rss().saturating_sub(before);
    eprintln!(
        "flood of 600 connections past a cap of 64: {closed} refused, RSS growth {} KiB",
        growth / 1024
    );
    assert!(growth < 16 * MIB, "RSS grew by {} KiB", growth / 1024);
    drop(conns);
    // Once the flood is gone, normal service resumes.
    let mut served = false;
    for _ in 0..50 {
        if matches!(Req::get(&server.url("/ok")).try_send().await, Ok(ref r) if r.status == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "not served after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_stalled_upstream_do_not_pile_up_in_memory() {
    // An upstream that accepts connections and never reads: only backpressure keeps the
    // proxy from buffering every upload.
    let stalled = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stalled_url = format!("http://{}", stalled.local_addr().expect("addr"));
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = stalled.accept().await {
            held.push(conn);
        }
    });
    let server = Server::start(
        &stalled_url,
        "upstream_timeout = \"3s\"\nmax_body = \"8MiB\"",
    );
    let before = server.rss();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let pid_server = &server;
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| sample_peak(pid_server, &stop));
            let runtime = tokio::runtime::Handle::current();
            let uploads = (0..1000)
                .map(|_| {
                    let url = server.url("/upload");
                    runtime.spawn(async move {
                        Req::post(&url)
                            .chunked_body_of_len(4 * MIB)
                            .timeout(Duration::from_secs(20))
                            .try_send()
                            .await
                    })
                })
                .collect::<Vec<_>>();
            let results = tokio::task::block_in_place(|| runtime.block_on(futures_join(uploads)));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (handle.join().expect("sampler"), results)
        })
    };
    let (peak, results) = sampler;
    let answered = results
        .iter()
        .filter(|r| matches!(r, Ok(resp) if resp.status == 504))
        .count();
    assert!(
        answered >= 900,
        "only {answered} of 1000 uploads got their 504"
    );
    let growth = peak.saturating_sub(before);
    eprintln!(
        "1000 stalled 4 MiB uploads: peak RSS growth {} MiB",
        growth / MIB
    );
    // 1000 uploads of 4 MiB would be 4000 MiB if buffered; what remains is each connection
    // pair's fixed cost (buffers of both connections, tasks), about 0.2 MiB.
    assert!(growth < 320 * MIB, "RSS grew by {} MiB", growth / MIB);
    holder.abort();
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("upload task"));
    }
    out
}
