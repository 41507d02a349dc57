//! The pool against real sockets on loopback, where a test must control what the pool's own
//! tasks get to see: a connection closed by the upstream before its task noticed, responses
//! held unread on a shared HTTP/2 connection.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::*;

/// A pool to `authority` (plain HTTP), HTTP/2 by prior knowledge if `http2`.
fn pool(authority: &str, http2: bool) -> Pool {
    pool_with(authority, http2, Duration::from_secs(30))
}

fn pool_with(authority: &str, http2: bool, keepalive: Duration) -> Pool {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Pool::new(
        connector,
        Scheme::HTTP,
        authority.parse().expect("authority"),
        Settings {
            http2,
            max_buf_size: 64 << 10,
            keepalive,
            max_connections: 100,
        },
    )
}

fn get(path: &str) -> Request<UpstreamBody> {
    Request::get(path)
        .body(UpstreamBody::empty())
        .expect("request")
}

/// A request that goes through hyper's client (a `POST`, though without a body).
fn post(path: &str) -> Request<UpstreamBody> {
    Request::post(path)
        .body(UpstreamBody::empty())
        .expect("request")
}

/// Reads one request head off `stream` (the tests send no bodies).
fn read_head(stream: &mut std::net::TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        seen.push(byte[0]);
    }
}

/// The upstream closed an idle connection, and the request went to it before the
/// connection's task saw the close: hyper hands the request back unsent, and the pool sends
/// it on a new connection. The order is arranged: the test holds the runtime's only thread
/// while the upstream writes a byte on a trigger socket and then closes the connection, so
/// that the next look at the sockets wakes the test (trigger) before the connection's task
/// (its close); the test then queues its request on a connection that looks ready, and the
/// connection's task finds the close before the request. (A `POST`: requests without a body
/// take the pool's own path, where `bare/tests.rs` tests the same close.)
#[tokio::test]
async fn a_request_handed_back_unsent_goes_out_on_a_new_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let triggers = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let trigger_addr = triggers.local_addr().expect("address");
    let (close, closing) = std::sync::mpsc::channel::<()>();
    let upstream = std::thread::spawn(move || {
        let (mut trigger, _) = triggers.accept().expect("accept trigger");
        let mut served = 0;
        for (i, stream) in listener.incoming().take(2).enumerate() {
            let mut stream = stream.expect("accept");
            read_head(&mut stream);
            served += 1;
            let body = if i == 0 { "one" } else { "two" };
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n{body}");
            stream.write_all(answer.as_bytes()).expect("answer");
            if i == 0 {
                let _ = closing.recv();
                trigger.write_all(b"!").expect("trigger");
                drop(stream);
            }
        }
        served
    });
    let mut trigger = tokio::net::TcpStream::connect(trigger_addr)
        .await
        .expect("connect trigger");
    let pool = pool(&addr.to_string(), false);
    let first = pool.send(post("/one"), Duration::from_secs(5)).await;
    let body = first
        .expect("first")
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(body.to_bytes(), "one");
    assert_eq!(
        pool.idle_here(),
        1,
        "a clean exchange leaves its connection idle"
    );

    close.send(()).expect("upstream thread");
    // Blocking on purpose: the trigger and the close land while no task of ours runs.
    std::thread::sleep(Duration::from_millis(200));
    tokio::io::AsyncReadExt::read_u8(&mut trigger)
        .await
        .expect("trigger");
    let second = pool.send(post("/two"), Duration::from_secs(5)).await;
    let body = second
        .expect("the request was not sent again")
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(body.to_bytes(), "two");
    assert_eq!(
        pool.resent(),
        1,
        "the request did not go through the unsent path"
    );
    assert_eq!(
        upstream.join().expect("upstream"),
        2,
        "one request per connection"
    );
}

/// Responses held unread on a shared HTTP/2 connection take at most their stream's window:
/// the connection's window stays open for everyone else.
#[tokio::test]
async fn unread_http2_responses_do_not_starve_the_others() {
    const BODY: usize = 4 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut connection = h2::server::handshake(stream).await.expect("h2 handshake");
        while let Some(Ok((_, mut respond))) = connection.accept().await {
            tokio::spawn(async move {
                let response = http::Response::new(());
                let mut send = respond.send_response(response, false).expect("head");
                let mut left = BODY;
                while left > 0 {
                    send.reserve_capacity(left.min(64 << 10));
                    let Some(Ok(room)) = poll_fn(|cx| send.poll_capacity(cx)).await else {
                        return;
                    };
                    let room = room.min(left);
                    left -= room;
                    if send
                        .send_data(Bytes::from(vec![0u8; room]), left == 0)
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let pool = pool(&addr.to_string(), true);
    let mut held = Vec::new();
    for _ in 0..3 {
        let response = pool.send(get("/held"), Duration::from_secs(5)).await;
        held.push(response.expect("held response"));
    }
    // Let the held streams take whatever window they are given.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let response = pool.send(get("/read"), Duration::from_secs(5)).await;
        let body = response.expect("response").into_body().collect().await;
        body.expect("body").to_bytes().len()
    })
    .await;
    assert_eq!(read, Ok(BODY), "a reader starved behind unread responses");
    drop(held);
}

/// An upstream on loopback that answers the `n`th connection's request with `answers[n]`
/// (written at once, whole), then keeps that connection open until the test ends unless
/// `close_after` says so. Returns its address and the number of connections it accepted,
/// and for each, whether it saw the connection closed by the pool (within `watch`).
fn upstream(
    answers: Vec<&'static [u8]>,
    close_after: bool,
    watch: Duration,
) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<bool>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let served = std::thread::spawn(move || {
        let mut closed = Vec::new();
        for answer in answers {
            let (mut stream, _) = listener.accept().expect("accept");
            read_head(&mut stream);
            stream.write_all(answer).expect("answer");
            if close_after {
                drop(stream);
                closed.push(false);
                continue;
            }
            stream.set_read_timeout(Some(watch)).expect("timeout");
            closed.push(matches!(stream.read(&mut [0u8; 64]), Ok(0)));
        }
        closed
    });
    (addr, served)
}

/// `path` fetched through `pool`, with five seconds for the head.
async fn fetch(pool: &Pool, path: &str) -> Result<Response<PooledBody>, SendError> {
    pool.send(get(path), Duration::from_secs(5)).await
}

fn assert_malformed(answer: Result<Response<PooledBody>, SendError>) {
    assert!(
        matches!(answer, Err(SendError::Exchange(BareError::Malformed(_)))),
        "{:?}",
        answer.map(|r| r.status())
    );
}

/// Which of the upstream's connections it saw the pool close (see [`upstream`]).
async fn closes(upstream: std::thread::JoinHandle<Vec<bool>>) -> Vec<bool> {
    tokio::task::spawn_blocking(move || upstream.join().expect("upstream"))
        .await
        .expect("join")
}

async fn text(response: Result<Response<PooledBody>, SendError>) -> Result<String, String> {
    let body = response.map_err(|err| format!("{err:?}"))?.into_body();
    let bytes = body.collect().await.map_err(|err| err.to_string())?;
    Ok(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
}

/// A request without a body finds its idle connection closed by the upstream: a look at the
/// socket tells, before anything is sent, and the request goes out once, on a new one.
#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_never_taken() {
    let (addr, upstream) = upstream(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo",
        ],
        true,
        Duration::ZERO,
    );
    let pool = pool(&addr.to_string(), false);
    let first = fetch(&pool, "/one").await;
    assert_eq!(text(first).await.as_deref(), Ok("one"));
    assert_eq!(
        pool.idle_here(),
        1,
        "a clean exchange leaves its connection idle"
    );
    // The upstream has closed it by now; the runtime sees the close while it waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = fetch(&pool, "/two").await;
    assert_eq!(text(second).await.as_deref(), Ok("two"));
    assert_eq!(
        pool.resent(),
        0,
        "nothing was sent on the closed connection"
    );
    assert_eq!(upstream.join().expect("upstream").len(), 2);
}

/// Idle connections close once idle for the upstream's `keepalive_timeout`, though no
/// request comes to take them.
#[tokio::test]
async fn idle_connections_close_after_the_keepalive_timeout() {
    let (addr, upstream) = upstream(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"],
        false,
        Duration::from_secs(3),
    );
    let pool = pool_with(&addr.to_string(), false, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let first = fetch(&pool, "/one").await;
    assert_eq!(text(first).await.as_deref(), Ok("one"));
    assert_eq!(pool.idle_here(), 1);
    let closed = closes(upstream).await;
    assert_eq!(
        closed,
        vec![true],
        "the upstream never saw the idle connection close"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pool.idle_here(), 0);
}

/// Bytes after an answer (a second response the upstream was not asked for, as a desync
/// would leave) keep the connection from every later request: the next one gets its own
/// answer on a new connection, never the forged one.
#[tokio::test]
async fn bytes_after_an_answer_keep_its_connection_from_the_next_request() {
    let (addr, upstream) = upstream(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\noneHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo",
        ],
        false,
        Duration::from_secs(2),
    );
    let pool = pool(&addr.to_string(), false);
    let first = fetch(&pool, "/one").await;
    assert_eq!(text(first).await.as_deref(), Ok("one"));
    assert_eq!(
        pool.idle_here(),
        0,
        "the connection with bytes left over was kept"
    );
    let second = fetch(&pool, "/two").await;
    assert_eq!(text(second).await.as_deref(), Ok("two"));
    let closed = closes(upstream).await;
    assert!(closed[0], "the first connection was not closed");
}

/// An answer cut short by the upstream's close is an error, not a shorter body; one with
/// both framings is read as chunked and its connection not reused; a malformed head is an
/// error.
#[tokio::test]
async fn cut_and_ambiguous_answers() {
    let (addr, _upstream) = upstream(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\nabcd",
        ],
        true,
        Duration::ZERO,
    );
    let pool = pool(&addr.to_string(), false);
    let cut = fetch(&pool, "/cut").await;
    assert!(text(cut).await.is_err(), "a cut answer read as whole");
    let both = fetch(&pool, "/both").await;
    assert_eq!(text(both).await.as_deref(), Ok("ok"));
    assert_eq!(pool.idle_here(), 0);
    let malformed = fetch(&pool, "/malformed").await;
    assert_malformed(malformed);
}

/// An upstream that answers with interim responses only gets a bounded number of them read:
/// the request fails rather than spinning on them until the deadline.
#[tokio::test]
async fn endless_interim_answers_are_refused() {
    let interim: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno";
    let few: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (addr, _upstream) = upstream(vec![few, interim], true, Duration::ZERO);
    let pool = pool(&addr.to_string(), false);
    let answer = fetch(&pool, "/few").await;
    assert_eq!(text(answer).await.as_deref(), Ok("ok"));
    // The upstream closed that connection: let the runtime see it, so that the next request
    // opens another rather than racing the close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = fetch(&pool, "/many").await;
    assert_malformed(answer);
}

/// A head held to the end of the scheduler's turn goes out when its task is polled again,
/// not before; one written at once is out after the first poll.
#[tokio::test]
async fn a_head_held_to_the_turns_end_goes_out_on_the_next_poll() {
    use std::sync::atomic::AtomicUsize;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let heads = Arc::new(AtomicUsize::new(0));
    let seen = heads.clone();
    let upstream = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        for answer in [&b"one"[..], b"two", b"six"] {
            read_head(&mut stream);
            seen.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            stream.write_all(head.as_bytes()).expect("head");
            stream.write_all(answer).expect("answer");
        }
    });
    let pool = pool(&addr.to_string(), false);
    assert_eq!(text(fetch(&pool, "/one").await).await.as_deref(), Ok("one"));
    // Both on the idle connection the first left, so the first poll is the exchange's own.
    for (at_once, path, answer) in [(false, "/two", "two"), (true, "/six", "six")] {
        bare::pace::set_here(at_once);
        let before = heads.load(Ordering::SeqCst);
        let mut next = std::pin::pin!(fetch(&pool, path));
        let first = poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "answered before the upstream read it");
        // The runtime's only thread, held: the task cannot be polled again meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        let out = heads.load(Ordering::SeqCst) - before;
        assert_eq!(
            out,
            usize::from(at_once),
            "{path}: heads out after one poll"
        );
        assert_eq!(text(next.await).await.as_deref(), Ok(answer));
    }
    assert_eq!(pool.idle_here(), 1, "all three on one connection");
    upstream.join().expect("upstream");
}
