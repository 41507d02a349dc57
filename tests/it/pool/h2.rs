//! HTTP/2 upstreams: streams refused or cut off by `GOAWAY` are sent again, one connection
//! opened however many requests want one, the upstream's stream limit respected, a
//! connection a request timed out on retired, and the client's host as `:authority`.

use std::time::Duration;

use super::{get_once, proxy_to, until};
use crate::support::raw_h2::{raw_h2, H2Answer};
use crate::support::upstream;

const H2: &str = "http2 = true";

#[tokio::test]
async fn a_refused_stream_is_sent_again_and_a_reset_one_is_not() {
    let up = raw_h2(None, |n, _| match n {
        0 => H2Answer::Refuse,
        2 => H2Answer::Reset,
        _ => H2Answer::Ok,
    })
    .await;
    let p = proxy_to(&up.url(), H2, "").await;
    assert_eq!(get_once(&p, "/refused").await.0, 200);
    assert_eq!(up.streams().len(), 2, "{:?}", up.streams());
    // INTERNAL_ERROR says nothing about whether the upstream acted: no second try.
    assert_eq!(get_once(&p, "/reset").await.0, 502);
    assert_eq!(up.streams().len(), 3, "{:?}", up.streams());
}

#[tokio::test]
async fn a_stream_above_a_graceful_goaway_is_sent_again() {
    // The first stream is told the upstream processed none (last stream 0).
    let up = raw_h2(None, |n, _| {
        if n == 0 {
            H2Answer::GoAway { last: 0 }
        } else {
            H2Answer::Ok
        }
    })
    .await;
    let p = proxy_to(&up.url(), H2, "").await;
    assert_eq!(get_once(&p, "/goaway").await.0, 200);
    let streams = up.streams();
    assert_eq!(streams.len(), 2, "{streams:?}");
    assert_ne!(
        streams[0].conn, streams[1].conn,
        "sent again on the closing connection"
    );
}

#[tokio::test]
async fn many_requests_at_once_open_one_connection() {
    let up = raw_h2(None, |_, _| H2Answer::After(Duration::from_millis(200))).await;
    let p = proxy_to(&up.url(), H2, "").await;
    let answers = futures_util::future::join_all((0..20).map(|_| get_once(&p, "/x"))).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    // The proxy runs on this test's one thread: one connection for all of them.
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn the_upstreams_stream_limit_opens_another_connection() {
    let up = raw_h2(Some(1), |_, _| H2Answer::After(Duration::from_millis(700))).await;
    let p = proxy_to(&up.url(), H2, "upstream_timeout = \"1s\"").await;
    let first = tokio::spawn({
        let p_addr = p.addr();
        async move {
            let mut conn = crate::support::raw::connect(p_addr).await;
            super::exchange(&mut conn, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n").await
        }
    });
    until("the first stream", || up.streams().len() == 1).await;
    // Queued behind the first on a one-stream connection, the second would take 1.4 s.
    assert_eq!(get_once(&p, "/second").await.0, 200);
    assert_eq!(first.await.expect("first").0, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn a_connection_a_request_timed_out_on_takes_no_new_requests() {
    // The first connection goes silent (no answers, no PING replies).
    let up = raw_h2(None, |_, conn| {
        if conn == 0 {
            H2Answer::Hold
        } else {
            H2Answer::Ok
        }
    })
    .await;
    let p = proxy_to(&up.url(), H2, "upstream_timeout = \"500ms\"").await;
    assert_eq!(get_once(&p, "/lost").await.0, 504);
    assert_eq!(get_once(&p, "/next").await.0, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn an_http2_upstream_sees_the_clients_host_as_its_authority() {
    let up = upstream().run().await;
    let p = proxy_to(&up.url(), H2, "").await;
    let mut conn = crate::support::raw::connect(p.addr()).await;
    let request = "GET /h2 HTTP/1.1\r\nHost: site.example:8443\r\n\r\n";
    assert_eq!(super::exchange(&mut conn, request).await.0, 200);
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.uri, "http://site.example:8443/h2");
    assert!(seen.header("host").is_none(), "{:?}", seen.headers);
}
