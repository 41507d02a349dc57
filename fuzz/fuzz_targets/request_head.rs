//! The lane's reading of request heads (`server::take_plain_head`) on arbitrary bytes, one
//! after another as on one connection.
//! Oracles: nothing panics; bytes the lane does not take are left exactly as they came (hyper
//! reads them next); a request it takes is a plain one (HTTP/1.1, origin form, not
//! `CONNECT`, no body declared but `Content-Length: 0`, no `Transfer-Encoding`, `Upgrade` or
//! `Expect`), was read from a whole head within the limit, and has exactly the method,
//! target and fields, in order, that httparse reads from the bytes it consumed.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portcullis::body::RequestBody;
use portcullis::server::{take_plain_head, Recall};

const MAX_HEAD: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // Heads one after another (pipelined), read with one connection's memory of long values
    // (`Recall`): each taken one must be what httparse reads, remembered values or not.
    let mut recall = Recall::default();
    let mut read = BytesMut::from(data);
    loop {
        let before = read.clone();
        let Some((request, _close)) = take_plain_head(&mut read, MAX_HEAD, &mut recall) else {
            assert_eq!(read, before, "bytes not taken are left as they came");
            return;
        };
        check(&before, &read, &request);
    }
});

/// `request` was taken from `before`, leaving `after`.
fn check(before: &[u8], after: &[u8], request: &http::Request<RequestBody>) {
    assert!(before.ends_with(after));
    let consumed = &before[..before.len() - after.len()];
    assert!(consumed.len() <= MAX_HEAD);
    assert_eq!(request.version(), http::Version::HTTP_11);
    assert_ne!(request.method(), http::Method::CONNECT);
    assert!(request.uri().path().starts_with('/'));
    let headers = request.headers();
    for refused in ["transfer-encoding", "upgrade", "expect"] {
        assert!(!headers.contains_key(refused), "{refused}");
    }
    assert!(headers.get_all("content-length").iter().all(|v| v == "0"));

    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    let status = parsed
        .parse(consumed)
        .expect("the consumed bytes are a head");
    assert_eq!(status, httparse::Status::Complete(consumed.len()));
    assert_eq!(parsed.method, Some(request.method().as_str()));
    // The target as `http` (and so hyper) reads it: a fragment is no part of it.
    let target = parsed.path.expect("a target").split('#').next();
    assert_eq!(target, request.uri().path_and_query().map(|pq| pq.as_str()));
    let taken: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let mut read_by_httparse: Vec<(String, &[u8])> = parsed
        .headers
        .iter()
        .map(|field| (field.name.to_ascii_lowercase(), field.value))
        .collect();
    // `HeaderMap` iterates by name (in the order names first appear), each name's values in
    // order: compare the same way.
    let mut order: Vec<String> = Vec::new();
    for (name, _) in &read_by_httparse {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    read_by_httparse.sort_by_key(|(name, _)| order.iter().position(|n| n == name));
    let expected: Vec<(&str, &[u8])> = read_by_httparse
        .iter()
        .map(|(name, value)| (name.as_str(), *value))
        .collect();
    assert_eq!(taken, expected);
}
