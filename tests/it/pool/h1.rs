//! HTTP/1.1 upstreams: reuse, the desync an early answer could cause, what is never sent
//! twice, framing after bodiless answers, and the per-upstream connection cap.

use std::time::Duration;

use super::{exchange, get_once, proxy_to, response, until};
use crate::support::raw;
use crate::support::scripted::{ok, scripted, Answer};

/// The request every scripted upstream echoes: its own request line.
fn echo(line: &str) -> Answer {
    Answer::After(ok(line))
}

#[tokio::test]
async fn a_clean_exchange_leaves_its_connection_to_the_next_request() {
    let up = scripted(|seen| echo(&seen.line)).await;
    let p = proxy_to(&up.url(), "", "").await;
    let mut conn = raw::connect(p.addr()).await;
    let get = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        exchange(&mut conn, get).await,
        (200, "GET /one HTTP/1.1".into())
    );
    let post = "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(exchange(&mut conn, post).await.1, "POST /two HTTP/1.1");
    assert_eq!(get_once(&p, "/three").await.1, "GET /three HTTP/1.1");
    assert_eq!(up.connections(), 1, "{:?}", up.seen());
}

/// The review's reproduction: the upstream answers a POST at once without reading its body
/// (a "CL.0" server), the client then sends a body that is a whole request, and another
/// client's request follows. Had the connection been pooled, the smuggled request would
/// reach the upstream past every rule, and its answer would go to the other client.
#[tokio::test]
async fn an_early_answer_never_leaves_the_rest_of_the_body_for_the_next_client() {
    let up = scripted(|seen| {
        if seen.line.starts_with("POST /early") {
            Answer::Early(ok("early"))
        } else if seen.line.contains("smuggled") {
            // Slow enough for the next client's request to be queued behind it.
            Answer::Later(Duration::from_millis(500), ok(&seen.line))
        } else {
            echo(&seen.line)
        }
    })
    .await;
    let p = proxy_to(&up.url(), "", "").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let mut attacker = raw::connect(p.addr()).await;
    attacker
        .write(
            format!(
                "POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                smuggled.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    let (status, _, body) = response(&mut attacker, false).await;
    assert_eq!((status, body.as_slice()), (200, b"early".as_slice()));
    attacker
        .write(smuggled.as_bytes())
        .await
        .expect("write body");
    // Pooled, the connection carries the smuggled request now, and the next request queues
    // behind it; wait for that, or give it a moment (closed, the connection carries nothing).
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        until("", || up.lines().iter().any(|l| l.contains("smuggled"))),
    )
    .await;
    let (status, body) = get_once(&p, "/victim").await;
    assert_eq!((status, body.as_str()), (200, "GET /victim HTTP/1.1"));
    let seen = up.seen();
    let victim = seen
        .iter()
        .find(|s| s.line.contains("/victim"))
        .expect("victim seen");
    assert!(
        !seen
            .iter()
            .any(|s| s.line.contains("smuggled") && s.conn == victim.conn),
        "the smuggled request shared the victim's connection: {seen:?}"
    );
}

/// The same, when the answer is still going out as the body arrives: ordering the two ends
/// is not enough, what counts is that the upstream spoke before it had the whole request.
#[tokio::test]
async fn an_answer_that_began_before_the_body_went_out_is_not_pooled() {
    let up = scripted(|seen| {
        if seen.line.starts_with("POST /early") {
            Answer::EarlyThen {
                first: b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\near".to_vec(),
                rest: b"ly".to_vec(),
                wait: Duration::from_secs(2),
            }
        } else if seen.line.contains("smuggled") {
            Answer::Later(Duration::from_millis(500), ok(&seen.line))
        } else {
            echo(&seen.line)
        }
    })
    .await;
    let p = proxy_to(&up.url(), "", "").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let mut attacker = raw::connect(p.addr()).await;
    attacker
        .write(
            format!(
                "POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
                smuggled.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    attacker
        .read_until(b"\r\n\r\n", Duration::from_secs(5))
        .await;
    attacker
        .write(smuggled.as_bytes())
        .await
        .expect("write body");
    let rest = attacker.read_until(b"ly", Duration::from_secs(5)).await;
    assert!(rest.ends_with("early"), "{rest:?}");
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        until("", || up.lines().iter().any(|l| l.contains("smuggled"))),
    )
    .await;
    let (status, body) = get_once(&p, "/victim").await;
    assert_eq!((status, body.as_str()), (200, "GET /victim HTTP/1.1"));
    let seen = up.seen();
    let victim = seen
        .iter()
        .find(|s| s.line.contains("/victim"))
        .expect("victim seen");
    assert!(
        !seen
            .iter()
            .any(|s| s.line.contains("smuggled") && s.conn == victim.conn),
        "the smuggled request shared the victim's connection: {seen:?}"
    );
}

/// An upstream that reads a request and then closes without answering may have acted on it:
/// whatever the method and however long the connection sat idle, it is sent once (`502`).
#[tokio::test]
async fn a_request_the_upstream_may_have_processed_is_never_sent_twice() {
    let up = scripted(|seen| {
        if seen.line.contains("/crash") {
            Answer::CloseAfter(Duration::from_millis(200))
        } else {
            echo(&seen.line)
        }
    })
    .await;
    let p = proxy_to(&up.url(), "", "").await;
    let mut conn = raw::connect(p.addr()).await;
    for request in [
        "DELETE /crash/1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /crash/2 HTTP/1.1\r\nHost: a\r\n\r\n",
        "PUT /crash/3 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
    ] {
        assert_eq!(
            exchange(&mut conn, "GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .0,
            200
        );
        // Idle long enough that an upstream's keep-alive could be blamed.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(exchange(&mut conn, request).await.0, 502, "{request}");
    }
    let crashes: Vec<String> = up
        .lines()
        .into_iter()
        .filter(|l| l.contains("/crash"))
        .collect();
    assert_eq!(crashes.len(), 3, "a request was sent twice: {crashes:?}");
}

/// `Connection: close`, `HEAD`, `204`, `304` and a response the client abandoned all leave
/// the next exchange correctly framed.
#[tokio::test]
async fn bodiless_and_closing_answers_keep_the_framing() {
    let up = scripted(|seen| {
        let line = seen.line.as_str();
        let bytes: &[u8] = if line.starts_with("GET /close") {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 6\r\n\r\nclosed"
        } else if line.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        } else if line.starts_with("GET /204") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else if line.starts_with("GET /304") {
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"
        } else if line.starts_with("GET /big") {
            return Answer::After(ok(&"x".repeat(1 << 20)));
        } else {
            return echo(line);
        };
        Answer::After(bytes.to_vec())
    })
    .await;
    let p = proxy_to(&up.url(), "", "").await;
    let mut conn = raw::connect(p.addr()).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(
        exchange(&mut conn, &get("/close")).await,
        (200, "closed".into())
    );
    assert_eq!(
        exchange(&mut conn, "HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .0,
        200
    );
    assert_eq!(exchange(&mut conn, &get("/204")).await.0, 204);
    assert_eq!(exchange(&mut conn, &get("/304")).await.0, 304);
    assert_eq!(
        exchange(&mut conn, &get("/after")).await.1,
        "GET /after HTTP/1.1"
    );
    // `Connection: close` cost one connection; the bodiless answers none.
    assert_eq!(up.connections(), 2, "{:?}", up.seen());
    // A client that leaves mid-body: its upstream connection goes too.
    let mut leaving = raw::connect(p.addr()).await;
    leaving.write(get("/big").as_bytes()).await.expect("write");
    leaving
        .read_until(b"\r\n\r\n", Duration::from_secs(5))
        .await;
    drop(leaving);
    assert_eq!(get_once(&p, "/next").await.1, "GET /next HTTP/1.1");
    assert_eq!(
        exchange(&mut conn, &get("/last")).await.1,
        "GET /last HTTP/1.1"
    );
}

/// A `101` hands the upstream connection to the tunnel; the next request gets another.
#[tokio::test]
async fn a_switched_connection_never_returns_to_the_pool() {
    let up = scripted(|seen| {
        if seen.line.starts_with("GET /ws") {
            Answer::Stall(
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                  sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                    .to_vec(),
            )
        } else {
            echo(&seen.line)
        }
    })
    .await;
    let p = proxy_to(&up.url(), "", "").await;
    let mut tunnel = raw::connect(p.addr()).await;
    tunnel
        .write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write upgrade");
    let head = tunnel.read_until(b"\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(get_once(&p, "/after").await.1, "GET /after HTTP/1.1");
    assert_eq!(up.connections(), 2);
}

/// An upstream that sends both `Transfer-Encoding: chunked` and `Content-Length` has a
/// chunked body (RFC 9112 §6.3): the length must not reach the client, which would stop short.
#[tokio::test]
async fn a_chunked_answer_loses_its_content_length() {
    let up = scripted(|_| {
        Answer::After(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n\
              14\r\n01234567890123456789\r\n0\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let p = proxy_to(&up.url(), "", "").await;
    let mut conn = raw::connect(p.addr()).await;
    conn.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (status, head, body) = response(&mut conn, false).await;
    assert_eq!(status, 200);
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert_eq!(body, b"01234567890123456789");
}

/// `max_connections` caps an upstream's connections: requests beyond wait for one (and get
/// it), or get `503` when none frees up in time.
#[tokio::test]
async fn an_upstream_gets_no_more_connections_than_its_cap() {
    let up = scripted(|seen| {
        if seen.line.starts_with("GET /slow") {
            Answer::Later(Duration::from_millis(300), ok("slow"))
        } else if seen.line.starts_with("GET /endless") {
            Answer::Stall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf".to_vec())
        } else {
            echo(&seen.line)
        }
    })
    .await;
    let p = proxy_to(
        &up.url(),
        "max_connections = 2",
        "upstream_timeout = \"3s\"",
    )
    .await;
    let answers = futures_util::future::join_all((0..6).map(|_| get_once(&p, "/slow"))).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert_eq!(up.connections(), 2, "{:?}", up.seen());

    // One connection held by a response that never ends: the next request waits, then 503.
    let p = proxy_to(
        &up.url(),
        "max_connections = 1",
        "upstream_timeout = \"500ms\"",
    )
    .await;
    let mut holder = raw::connect(p.addr()).await;
    holder
        .write(b"GET /endless HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    holder.read_until(b"half", Duration::from_secs(5)).await;
    let (status, body) = get_once(&p, "/waiting").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream_busy"), "{body}");
    // The holder leaves: its connection closes, and the place is free again.
    drop(holder);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get_once(&p, "/free").await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cap never freed up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The deadline for a response head is kept by the upstream connection's own task, not by a
/// timer per request: a pooled connection whose upstream falls silent is answered `504` on
/// time (not at the connection's keep-alive expiry), is closed rather than pooled, and the
/// request is not sent again; the next request gets a fresh connection.
#[tokio::test]
async fn a_silent_upstream_on_a_reused_connection_times_out_on_time() {
    let up = scripted(|seen| {
        if seen.line.starts_with("GET /silent") {
            Answer::Later(Duration::from_secs(30), ok("too late"))
        } else {
            echo(&seen.line)
        }
    })
    .await;
    let p = proxy_to(&up.url(), "", "upstream_timeout = \"400ms\"").await;
    // Several requests first: the connection's timer is then set well past the next deadline
    // only if the deadline were never moved earlier.
    for i in 0..3 {
        assert_eq!(get_once(&p, &format!("/warm{i}")).await.0, 200);
    }
    assert_eq!(up.connections(), 1, "{:?}", up.lines());
    let started = std::time::Instant::now();
    let (status, body) = get_once(&p, "/silent").await;
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"), "{body}");
    assert!(
        waited >= Duration::from_millis(390) && waited < Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    let silent = up
        .lines()
        .iter()
        .filter(|l| l.starts_with("GET /silent"))
        .count();
    assert_eq!(silent, 1, "sent again: {:?}", up.lines());
    assert_eq!(
        get_once(&p, "/after").await,
        (200, "GET /after HTTP/1.1".into())
    );
    assert_eq!(up.connections(), 2, "{:?}", up.lines());
}
