use std::future::{ready, Ready};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::body;
use crate::server::activity::Activity;
use crate::ConnInfo;

const MAX_HEAD: usize = 8 << 10;

fn activity() -> Arc<Activity> {
    let addr = "127.0.0.1:1".parse().expect("address");
    Activity::new(
        Instant::now(),
        Duration::from_secs(10),
        Arc::new(ConnInfo::new(addr, addr, false)),
    )
}

fn tracked(body: Body) -> Tracked<Body> {
    Tracked::new(body, activity().begin())
}

/// A body that knows nothing of its length.
fn streaming(chunks: &[&'static str]) -> Body {
    let frames = chunks
        .iter()
        .map(|chunk| Ok::<_, body::BoxError>(http_body::Frame::data(Bytes::from(*chunk))))
        .collect::<Vec<_>>();
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

fn take(bytes: &[u8]) -> (Head, BytesMut) {
    let mut read = BytesMut::from(bytes);
    let head = take_head(&mut read, MAX_HEAD, &mut Recall::default());
    (head, read)
}

fn not_ours(bytes: &[u8]) {
    let (head, read) = take(bytes);
    assert!(
        matches!(head, Head::NotOurs),
        "{:?} was taken",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(
        &read[..],
        bytes,
        "the bytes hyper gets back are the ones read"
    );
}

#[test]
fn a_plain_request_is_taken_as_hyper_would_build_it() {
    let (head, rest) = take(
        b"GET /a/b?c=d HTTP/1.1\r\nHost: site.example\r\nCookie: a=1\r\ncookie: b=2\r\n\
          Content-Length: 0\r\nX-Empty:\r\n\r\nGET /next HTTP/1.1\r\n",
    );
    let Head::Request { request, close } = head else {
        panic!("not taken");
    };
    assert!(!close);
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri(), "/a/b?c=d");
    assert_eq!(request.version(), Version::HTTP_11);
    let headers = request.headers();
    assert_eq!(headers["host"], "site.example");
    let cookies: Vec<_> = headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"], "repeated fields kept, in order");
    assert_eq!(headers["x-empty"], "");
    assert_eq!(headers.len(), 5);
    assert!(request.body().is_end_stream());
    assert_eq!(
        &rest[..],
        b"GET /next HTTP/1.1\r\n",
        "a pipelined request stays"
    );
}

/// Long values repeated from one request to the next are the values remembered (one
/// allocation shared, not a new copy); changed ones are read anew, and a value that is not
/// valid is never taken from memory: the request goes to hyper, as without one.
#[test]
fn long_values_of_the_last_request_are_remembered_byte_for_byte() {
    let cookie = format!("session={}", "t".repeat(300));
    let agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)";
    let mut recall = Recall::default();
    let mut read = |head: String| {
        let mut read = BytesMut::from(head.as_bytes());
        match take_head(&mut read, MAX_HEAD, &mut recall) {
            Head::Request { request, .. } => Some(request),
            _ => None,
        }
    };
    let first = read(format!(
        "GET /a HTTP/1.1\r\nHost: a\r\nUser-Agent: {agent}\r\nCookie: {cookie}\r\n\r\n"
    ))
    .expect("taken");
    let second = read(format!(
        "GET /b HTTP/1.1\r\nCookie: {cookie}\r\nUser-Agent: {agent}\r\nHost: a\r\n\r\n"
    ))
    .expect("taken");
    let value = |request: &Request<RequestBody>, name| request.headers()[name].clone();
    for name in ["cookie", "user-agent"] {
        assert_eq!(value(&first, name), value(&second, name));
        assert_eq!(
            value(&first, name).as_bytes().as_ptr(),
            value(&second, name).as_bytes().as_ptr(),
            "{name}: the remembered value itself"
        );
    }
    // One byte changed: a new value, with the new bytes.
    let changed = format!("{}u", &cookie[..cookie.len() - 1]);
    let third = read(format!(
        "GET /c HTTP/1.1\r\nCookie: {changed}\r\nUser-Agent: {agent}\r\n\r\n"
    ))
    .expect("taken");
    assert_eq!(third.headers()["cookie"], changed.as_str());
    assert_eq!(
        value(&third, "user-agent").as_bytes().as_ptr(),
        value(&second, "user-agent").as_bytes().as_ptr()
    );
    // A value as long, not valid: not taken, remembered or not.
    let bad = format!("{}\x7f", &changed[..changed.len() - 1]);
    assert!(read(format!("GET /d HTTP/1.1\r\nCookie: {bad}\r\n\r\n")).is_none());
    // What is remembered is the last request's, at most RECALL_MAX values, none short.
    let many: String = (0..12)
        .map(|i| format!("X-{i}: {}\r\n", "v".repeat(RECALL_MIN + i)))
        .collect();
    read(format!("GET /e HTTP/1.1\r\nHost: a\r\n{many}\r\n")).expect("taken");
    assert_eq!(recall.values.len(), RECALL_MAX);
    assert!(recall.values.iter().all(|v| v.len() >= RECALL_MIN));
    assert!(recall
        .values
        .iter()
        .all(|v| v.as_bytes() != cookie.as_bytes()));
}

#[test]
fn a_head_in_parts_waits_for_the_rest() {
    let (head, rest) = take(b"GET / HTTP/1.1\r\nHost: a\r\n");
    assert!(matches!(head, Head::Partial));
    assert_eq!(&rest[..], b"GET / HTTP/1.1\r\nHost: a\r\n");
    // A head that has reached the limit unfinished is hyper's to refuse (431).
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD));
    not_ours(long.as_bytes());
    let complete = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    not_ours(complete.as_bytes());
}

#[test]
fn the_client_asks_to_close() {
    for value in ["close", "keep-alive, Close", "  CLOSE "] {
        let request = format!("GET / HTTP/1.1\r\nConnection: {value}\r\n\r\n");
        let (head, _) = take(request.as_bytes());
        assert!(
            matches!(head, Head::Request { close: true, .. }),
            "Connection: {value}"
        );
    }
    let (head, _) = take(b"GET / HTTP/1.1\r\nConnection: keep-alive, closed\r\n\r\n");
    assert!(matches!(head, Head::Request { close: false, .. }));
}

/// Everything that declares a body, changes the connection, or is not a plain HTTP/1.1 head
/// in origin form goes to hyper with every byte: no framing is decided by two readers.
#[test]
fn anything_but_a_plain_request_goes_to_hyper_untouched() {
    let cases: &[&[u8]] = &[
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /x HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
        b"GET /x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nContent-Length: +0\r\n\r\n",
        b"GET /x HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nConnection: keep-alive, upgrade\r\n\r\n",
        b"GET /x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /x HTTP/1.0\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        // Malformed: hyper answers 400 as it always has.
        b"GET /x HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-Cr: a\rb\r\n\r\n",
        b"GET  /x HTTP/1.1\r\n\r\n",
        b"GET /x y HTTP/1.1\r\n\r\n",
        b"G\x01T /x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\n\r\n",
    ];
    for case in cases {
        not_ours(case);
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    not_ours(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
}

fn encoded(response: Response<Body>, head: bool) -> (String, Framing, bool) {
    let (parts, body) = response.into_parts();
    let mut out = BytesMut::new();
    let mut close = false;
    let framing = encode_head(&mut out, parts, &tracked(body), head, &mut close);
    let text = String::from_utf8(out.to_vec()).expect("text");
    (text, framing, close)
}

fn response(status: u16, headers: &[(&str, &str)], body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    for (name, value) in headers {
        response.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    response
}

#[test]
fn a_response_is_framed_as_it_declares_or_as_its_body_knows() {
    let (text, framing, close) = encoded(
        response(200, &[("content-length", "5")], body::full("hello")),
        false,
    );
    assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{text}");
    assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"));
    assert_eq!(framing, Framing::Length(5));
    assert!(!close);

    let (text, framing, _) = encoded(response(404, &[], body::full("nope")), false);
    assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-length: 4\r\n"), "{text}");
    assert_eq!(framing, Framing::Length(4));

    let (text, framing, _) = encoded(
        response(200, &[("transfer-encoding", "gzip")], streaming(&["a"])),
        false,
    );
    assert!(
        text.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    assert!(!text.contains("gzip"), "{text}");
    assert_eq!(framing, Framing::Chunked);

    let (text, _, _) = encoded(
        response(
            200,
            &[("date", "Tue, 01 Dec 2026 00:00:00 GMT")],
            body::empty(),
        ),
        false,
    );
    assert_eq!(text.matches("date:").count(), 1, "{text}");
    assert!(
        text.contains("date: Tue, 01 Dec 2026 00:00:00 GMT\r\n"),
        "{text}"
    );
}

#[test]
fn a_length_that_is_not_one_number_is_replaced_by_the_bodys() {
    for bad in [&["5, 5"][..], &["abc"], &["5", "6"], &[""], &["-1"]] {
        let headers: Vec<_> = bad.iter().map(|v| ("content-length", *v)).collect();
        let (text, framing, _) = encoded(response(200, &headers, body::full("hey")), false);
        assert_eq!(text.matches("content-length").count(), 1, "{bad:?}: {text}");
        assert!(
            text.contains("\r\ncontent-length: 3\r\n"),
            "{bad:?}: {text}"
        );
        assert_eq!(framing, Framing::Length(3), "{bad:?}");
    }
    let (text, framing, _) = encoded(
        response(
            200,
            &[("content-length", "2"), ("content-length", "2")],
            body::full("hi"),
        ),
        false,
    );
    assert_eq!(framing, Framing::Length(2), "{text}");
}

#[test]
fn no_body_goes_after_head_204_or_304() {
    let (text, framing, _) = encoded(response(200, &[], body::full("hello")), true);
    assert!(
        text.contains("\r\ncontent-length: 5\r\n"),
        "HEAD says the length: {text}"
    );
    assert_eq!(framing, Framing::Discard);
    let (text, framing, _) = encoded(
        response(200, &[("content-length", "99")], body::empty()),
        true,
    );
    assert!(text.contains("\r\ncontent-length: 99\r\n"), "{text}");
    assert_eq!(framing, Framing::Discard);
    let (text, framing, _) = encoded(
        response(204, &[("content-length", "5")], body::full("hello")),
        false,
    );
    assert!(
        !text.contains("content-length"),
        "a 204 has no length: {text}"
    );
    assert_eq!(framing, Framing::Discard);
    let (text, framing, _) = encoded(
        response(304, &[("content-length", "5")], body::empty()),
        false,
    );
    assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
    assert_eq!(framing, Framing::Discard);
    // Only an upgrade ends with a 1xx, and upgrades are hyper's.
    let (text, framing, _) = encoded(response(101, &[("upgrade", "x")], body::empty()), false);
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(!text.contains("upgrade"), "{text}");
    assert_eq!(framing, Framing::Discard);
}

#[test]
fn closing_is_said_and_heard() {
    let (parts, body) = response(200, &[], body::empty()).into_parts();
    let mut out = BytesMut::new();
    let mut close = true;
    encode_head(&mut out, parts, &tracked(body), false, &mut close);
    assert!(String::from_utf8_lossy(&out).contains("\r\nconnection: close\r\n"));
    let (text, _, close) = encoded(
        response(200, &[("connection", "close")], body::empty()),
        false,
    );
    assert!(close, "a response that closes closes the connection");
    assert_eq!(text.matches("connection").count(), 1, "{text}");
}

/// The answer to every request: its target echoed, with a length.
type Echo = Ready<Result<Response<Tracked<Body>>, Infallible>>;

fn echo(request: Request<RequestBody>) -> Echo {
    let text = format!("{} {}", request.method(), request.uri());
    ready(Ok(Response::new(tracked(body::full(text)))))
}

/// Serves `io` with a lane until it stops; its outcome and what it left unread.
async fn serve<F, A>(io: DuplexStream, answer: F) -> (Outcome, BytesMut)
where
    F: FnMut(Request<RequestBody>) -> A,
    A: Future<Output = Result<Response<Tracked<Body>>, Infallible>> + Unpin,
{
    let mut lane = Lane::new(Watched::new(io, activity()), answer, MAX_HEAD);
    std::future::poll_fn(|cx| lane.poll_serve(cx))
        .await
        .expect("served");
    let (_, unread, outcome) = lane.into_parts();
    (outcome.expect("the lane stopped of itself"), unread)
}

async fn read_all(client: &mut DuplexStream) -> String {
    let mut text = Vec::new();
    client.read_to_end(&mut text).await.expect("read");
    String::from_utf8(text).expect("text")
}

/// The status lines and bodies of `text`, dates left out.
fn without_dates(text: &str) -> String {
    text.split("\r\n")
        .filter(|line| !line.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("|")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mut client, server) = tokio::io::duplex(64 << 10);
    client
        .write_all(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nHEAD /two HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
        )
        .await
        .expect("write");
    let served = tokio::spawn(serve(server, echo));
    let text = read_all(&mut client).await;
    assert_eq!(
        without_dates(&text),
        "HTTP/1.1 200 OK|content-length: 8||GET /one\
         HTTP/1.1 200 OK|content-length: 9||\
         HTTP/1.1 200 OK|content-length: 10|connection: close||GET /three"
    );
    let (outcome, _) = served.await.expect("lane");
    assert_eq!(outcome, Outcome::Close);
}

#[tokio::test]
async fn the_first_request_the_lane_does_not_take_hands_the_connection_over() {
    let (mut client, server) = tokio::io::duplex(64 << 10);
    let post = b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let mut sent = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    sent.extend_from_slice(post);
    sent.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
    client.write_all(&sent).await.expect("write");
    let (outcome, unread) = serve(server, echo).await;
    assert_eq!(outcome, Outcome::HandOver);
    let mut rest = post.to_vec();
    rest.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
    assert_eq!(
        &unread[..],
        &rest[..],
        "hyper gets every byte from the request on"
    );
    drop(client.shutdown().await);
    let mut answer = vec![0u8; 4096];
    let n = client.read(&mut answer).await.expect("read");
    assert!(String::from_utf8_lossy(&answer[..n]).ends_with("GET /first"));
}

#[tokio::test]
async fn a_client_gone_while_its_answer_is_awaited_ends_the_connection() {
    let (mut client, server) = tokio::io::duplex(64 << 10);
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let served = tokio::spawn(serve(server, |_| {
        std::future::pending::<Result<Response<Tracked<Body>>, Infallible>>()
    }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!served.is_finished(), "the answer is awaited");
    drop(client);
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the lane noticed")
        .expect("lane");
    assert_eq!(outcome, Outcome::Close);
}

#[tokio::test]
async fn a_body_that_breaks_its_length_ends_the_connection() {
    for (declared, chunks) in [("10", &["four"][..]), ("2", &["four"])] {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        client
            .write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let answer = move |_| {
            let body = tracked(streaming(chunks));
            let mut response = Response::new(body);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static(declared));
            ready(Ok::<_, Infallible>(response))
        };
        let (outcome, _) = serve(server, answer).await;
        assert_eq!(outcome, Outcome::Close, "declared {declared}");
        let text = read_all(&mut client).await;
        assert_eq!(
            text.matches("HTTP/1.1").count(),
            1,
            "no second answer after a broken one: {text}"
        );
    }
}

#[tokio::test]
async fn a_body_of_unknown_length_is_chunked() {
    let (mut client, server) = tokio::io::duplex(64 << 10);
    client
        .write_all(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = |_| {
        ready(Ok(Response::new(tracked(streaming(&[
            "hello", "", "world!",
        ])))))
    };
    let (outcome, _) = serve(server, answer).await;
    assert_eq!(outcome, Outcome::Close);
    let text = read_all(&mut client).await;
    assert!(
        without_dates(&text)
            .ends_with("transfer-encoding: chunked|connection: close||5|hello|6|world!|0||"),
        "{text}"
    );
}

/// Every one-byte change to a few heads: no panic, and whatever is not taken is left as read
/// (hyper gets exactly the client's bytes); whatever is taken is a plain request.
#[test]
fn mutated_heads_are_taken_whole_or_left_as_they_are() {
    let seeds: [&[u8]; 3] = [
        b"GET /a?b=c HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz",
    ];
    let replacements = [
        b'\0', b'\r', b'\n', b' ', b':', b'\t', b'/', b'0', b'A', 0x7f, 0x80, 0xff,
    ];
    let (mut tried, mut taken) = (0, 0);
    for seed in seeds {
        for at in 0..seed.len() {
            let mut shorter = seed.to_vec();
            shorter.remove(at);
            let mut variants = vec![shorter];
            for &byte in &replacements {
                let mut changed = seed.to_vec();
                changed[at] = byte;
                variants.push(changed);
            }
            for variant in variants {
                tried += 1;
                let (head, rest) = take(&variant);
                let Head::Request { request, .. } = head else {
                    assert_eq!(&rest[..], &variant[..]);
                    continue;
                };
                taken += 1;
                assert_eq!(request.version(), Version::HTTP_11);
                assert!(request.uri().path().starts_with('/'));
                assert!(variant.ends_with(&rest));
                let consumed = &variant[..variant.len() - rest.len()];
                assert!(
                    consumed.ends_with(b"\n\n") || consumed.ends_with(b"\n\r\n"),
                    "{:?}",
                    String::from_utf8_lossy(consumed)
                );
                let headers = request.headers();
                assert!(headers.get(header::TRANSFER_ENCODING).is_none());
                assert!(headers
                    .get_all(header::CONTENT_LENGTH)
                    .iter()
                    .all(|v| v == "0"));
            }
        }
    }
    assert_eq!(tried, 1_846, "every variant was tried");
    assert!(
        taken > 100,
        "the seeds' harmless variants are taken ({taken})"
    );
}

/// A head longer than one read, with more fields than the lane takes, waiting in the
/// socket's replay (hyper had read it ahead, then the connection was parked): the lane reads
/// part of it, hands over, and hyper reads the whole head in order.
#[tokio::test]
async fn a_head_handed_over_part_way_through_a_replay_stays_in_order() {
    let fields: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!(
        "GET /b HTTP/1.1\r\nHost: a\r\n{fields}X-Pad: {}\r\n\r\n",
        "a".repeat(2 * READ_CHUNK)
    );
    assert!(head.len() > 2 * READ_CHUNK);
    let (_client, server) = tokio::io::duplex(64 << 10);
    let mut io = Watched::new(server, activity());
    io.replay(head.as_bytes());
    let mut lane = Lane::new(io, echo, 16 << 10);
    std::future::poll_fn(|cx| lane.poll_serve(cx))
        .await
        .expect("served");
    let (mut io, unread, outcome) = lane.into_parts();
    let outcome = outcome.expect("the lane stopped of itself");
    assert_eq!(outcome, Outcome::HandOver);
    assert!(unread.len() < head.len(), "the lane stopped part-way");
    io.replay(&unread);
    let mut again = vec![0u8; head.len()];
    io.read_exact(&mut again).await.expect("replayed");
    assert_eq!(again, head.as_bytes());
}

/// An answer that is not ready at its first poll.
struct Later(Option<Response<Tracked<Body>>>, bool);

impl Future for Later {
    type Output = Result<Response<Tracked<Body>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.1 {
            self.1 = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(self.0.take().expect("polled once ready")))
    }
}

/// Pipelined requests and then the client's end of sending: the lane reads no further while
/// a request it has read waits to be taken, so the close is seen only after that request, as
/// under hyper: the first is answered (hyper, without half-close support, stops at the close
/// it sees once the buffered bytes are taken).
#[tokio::test]
async fn pipelined_requests_before_a_half_close_are_answered_up_to_the_close() {
    let (mut client, server) = tokio::io::duplex(64 << 10);
    client
        .write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    client.shutdown().await.expect("half-close");
    let answer = |request: Request<RequestBody>| {
        let text = request.uri().to_string();
        Later(Some(Response::new(tracked(body::full(text)))), false)
    };
    let (outcome, _) = serve(server, answer).await;
    assert_eq!(outcome, Outcome::Close);
    let text = read_all(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\n\r\n/a"), "{text}");
}

pin_project_lite::pin_project! {
    /// A socket that holds what is written until flushed, and whose first flush has to wait
    /// (as TLS may hold a record until the socket takes it).
    struct Holding {
        #[pin]
        inner: DuplexStream,
        held: Vec<u8>,
        flushes: u32,
    }
}

impl AsyncRead for Holding {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for Holding {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        *this.flushes += 1;
        if *this.flushes == 1 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while !this.held.is_empty() {
            let n = ready!(this.inner.as_mut().poll_write(cx, this.held))?;
            this.held.drain(..n);
        }
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// A streamed answer whose next frame is long in coming: what was written is flushed anyway,
/// also when the socket's first flush had to wait.
#[tokio::test]
async fn a_frame_written_is_flushed_while_the_next_is_awaited() {
    let (mut client, server) = tokio::io::duplex(64 << 10);
    client
        .write_all(b"GET /events HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let io = Holding {
        inner: server,
        held: Vec::new(),
        flushes: 0,
    };
    let answer = |_| {
        let first = futures_util::stream::iter([Ok::<_, body::BoxError>(http_body::Frame::data(
            Bytes::from_static(b"event one"),
        ))]);
        let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        let body = StreamBody::new(stream).boxed_unsync();
        ready(Ok(Response::new(tracked(body))))
    };
    let mut lane = Lane::new(Watched::new(io, activity()), answer, MAX_HEAD);
    let serving = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| lane.poll_serve(cx)).await;
    });
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !String::from_utf8_lossy(&seen).contains("event one") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, client.read(&mut chunk))
            .await
            .expect("the first event reached the client")
            .expect("read");
        seen.extend_from_slice(&chunk[..n]);
    }
    serving.abort();
}
