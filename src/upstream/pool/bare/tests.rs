//! Reading answers: heads and framing as RFC 9112 has them, fed whole and byte by byte.

use super::*;

fn head(text: &str) -> Result<Parsed, BareError> {
    parse(text.as_bytes(), false)
}

/// The framing and keep-alive of a complete head.
fn framing(text: &str, head_request: bool) -> (Framing, bool) {
    match parse(text.as_bytes(), head_request) {
        Ok(Parsed::Head(len, _, framing, keep_alive)) => {
            assert_eq!(len, text.len(), "{text:?}");
            (framing, keep_alive)
        }
        other => panic!("{text:?}: {other:?}"),
    }
}

fn refused(text: &str) -> bool {
    matches!(head(text), Err(BareError::Malformed(_)))
}

#[test]
fn a_head_is_read_once_whole() {
    let text = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: 1\r\nx-a: 2\r\n\r\n";
    for cut in 0..text.len() {
        assert!(matches!(head(&text[..cut]), Ok(Parsed::Partial)), "{cut}");
    }
    let Ok(Parsed::Head(len, response, framing, keep_alive)) = head(text) else {
        panic!("no head");
    };
    assert_eq!(len, text.len());
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.headers().get_all("x-a").iter().count(), 2);
    assert_eq!(framing, Framing::Length(3));
    assert!(keep_alive);
}

#[test]
fn bodiless_answers_have_no_body_whatever_they_say() {
    let with_length = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    assert_eq!(framing(with_length, true), (Framing::Length(0), true));
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(framing(chunked, true).0, Framing::Length(0));
    for status in ["204 No Content", "304 Not Modified"] {
        let text = format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(framing(&text, false), (Framing::Length(0), true));
    }
}

#[test]
fn transfer_encoding_frames_before_content_length() {
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n";
    assert_eq!(
        framing(chunked, false),
        (Framing::Chunked(Chunk::Size), true)
    );
    // Both at once: chunked wins, and the connection is never reused.
    let both = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(framing(both, false), (Framing::Chunked(Chunk::Size), false));
    // A coding other than chunked last: the body runs to the close.
    let gzip = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n";
    assert_eq!(framing(gzip, false), (Framing::Close, false));
    // The last field decides.
    let two = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(framing(two, false).0, Framing::Chunked(Chunk::Size));
}

#[test]
fn lengths_must_be_lengths_and_agree() {
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", false).0,
        Framing::Length(5)
    );
    assert_eq!(
        framing(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            false
        )
        .0,
        Framing::Length(5)
    );
    for bad in [
        "content-length: 5\r\ncontent-length: 6",
        "content-length: 5, 6",
        "content-length: +5",
        "content-length: -1",
        "content-length: 5a",
        "content-length: 0x5",
        "content-length: ",
        "content-length: 99999999999999999999",
    ] {
        assert!(
            refused(&format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n")),
            "{bad}"
        );
    }
}

#[test]
fn an_answer_without_a_length_runs_to_the_close() {
    assert_eq!(
        framing("HTTP/1.1 200 OK\r\n\r\n", false),
        (Framing::Close, false)
    );
}

#[test]
fn closing_answers_are_not_reused() {
    let close = "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(framing(close, false), (Framing::Length(0), false));
    let old = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(framing(old, false), (Framing::Length(0), false));
}

#[test]
fn interim_answers_are_skipped_and_a_switch_refused() {
    let interim = "HTTP/1.1 100 Continue\r\n\r\n";
    assert!(matches!(head(interim), Ok(Parsed::Interim(n)) if n == interim.len()));
    let hints = "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
    assert!(matches!(head(hints), Ok(Parsed::Interim(n)) if n == hints.len()));
    assert!(refused(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
    ));
}

#[test]
fn malformed_heads_are_refused() {
    let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
    for bad in [
        "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n".to_owned(),
        "HTTP/1.1 2000 OK\r\n\r\n".to_owned(),
        "HTTP/2 200 OK\r\n\r\n".to_owned(),
        "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n".to_owned(),
        "SSH-2.0-OpenSSH\r\n\r\n".to_owned(),
        format!("HTTP/1.1 200 OK\r\n{many}\r\n"),
    ] {
        assert!(refused(&bad), "{bad:?}");
    }
}

/// Everything `framing` decodes from `wire`, fed `step` bytes at a time, and whether it ended.
fn body(wire: &[u8], mut framing: Framing, step: usize) -> Result<(Vec<u8>, bool), BareError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match decode(&mut buf, &mut framing)? {
            Step::Data(data) => {
                assert!(!data.is_empty(), "an empty frame");
                out.extend_from_slice(&data);
            }
            Step::Done => return Ok((out, true)),
            Step::More if fed == wire.len() => return Ok((out, false)),
            Step::More => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

#[test]
fn a_length_takes_that_many_bytes_and_no_more() {
    for step in [1, 3, 100] {
        let (data, done) = body(b"hello", Framing::Length(5), step).expect("body");
        assert_eq!((data.as_slice(), done), (&b"hello"[..], true));
    }
    let mut buf = BytesMut::from(&b"helloEXTRA"[..]);
    let mut framing = Framing::Length(5);
    assert_eq!(
        decode(&mut buf, &mut framing).expect("data"),
        Step::Data(Bytes::from_static(b"hello"))
    );
    assert_eq!(decode(&mut buf, &mut framing).expect("end"), Step::Done);
    assert_eq!(
        &buf[..],
        b"EXTRA",
        "what follows is left for the caller to see"
    );
}

#[test]
fn chunked_bodies_decode_at_any_cut() {
    let wire =
        b"5;ext=1\r\nhello\r\n1A \t;x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: t\r\n\r\n";
    for step in [1, 2, 7, wire.len()] {
        let (data, done) = body(wire, Framing::Chunked(Chunk::Size), step).expect("body");
        assert!(done, "{step}");
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "{step}");
    }
    let (data, done) = body(b"0\r\n\r\n", Framing::Chunked(Chunk::Size), 1).expect("empty");
    assert!(data.is_empty() && done);
    let (_, done) = body(b"5\r\nhello\r\n", Framing::Chunked(Chunk::Size), 1).expect("cut");
    assert!(!done, "a body without its last chunk has not ended");
}

#[test]
fn malformed_chunks_are_refused() {
    for bad in [
        &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
        b"5\rhello",
        b"g\r\n",
        b"\r\n",
        b"5 5\r\nhello\r\n",
        b"-5\r\nhello\r\n",
        b"10000000000000000\r\n",
    ] {
        assert!(
            matches!(
                body(bad, Framing::Chunked(Chunk::Size), 1),
                Err(BareError::Malformed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long_line = [b"5;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
    assert!(body(&long_line, Framing::Chunked(Chunk::Size), 64).is_err());
    let mut trailers = b"0\r\n".to_vec();
    while trailers.len() < MAX_TRAILERS + 64 {
        trailers.extend_from_slice(b"x-t: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert!(body(&trailers, Framing::Chunked(Chunk::Size), 512).is_err());
}

#[test]
fn a_request_head_goes_out_as_written() {
    let request = Request::get("/a/b?c=d")
        .header("host", "up.example")
        .header("x-two", "1")
        .header("x-two", "2")
        .body(UpstreamBody::empty())
        .expect("request");
    assert_eq!(
        String::from_utf8(head_of(&request)).expect("text"),
        "GET /a/b?c=d HTTP/1.1\r\nhost: up.example\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
    );
    let upgrade = Request::get("/ws")
        .header("upgrade", "websocket")
        .body(UpstreamBody::empty())
        .expect("request");
    assert!(!eligible(&upgrade), "a handshake stays on hyper's client");
    let post = Request::post("/p")
        .body(UpstreamBody::empty())
        .expect("request");
    assert!(!eligible(&post));
    for method in [Method::GET, Method::HEAD, Method::OPTIONS, Method::DELETE] {
        let request = Request::builder()
            .method(method.clone())
            .uri("/")
            .body(UpstreamBody::empty())
            .expect("request");
        assert!(eligible(&request), "{method}");
    }
}

/// A trailer section that crosses its cap on a line of its own is refused, not counted past
/// it (the count once wrapped, and the cap with it).
#[test]
fn the_trailer_cap_holds_across_lines() {
    let mut wire = b"0\r\n".to_vec();
    wire.extend_from_slice(&[b'a'; MAX_TRAILERS - 4]);
    wire.extend_from_slice(b"\r\nab\r\n");
    wire.extend_from_slice(&[b'b'; 64 << 10]);
    for step in [1 << 10, wire.len()] {
        assert!(
            matches!(
                body(&wire, Framing::Chunked(Chunk::Size), step),
                Err(BareError::Malformed(_))
            ),
            "{step}"
        );
    }
}
