//! Production transport: TLS termination (ALPN, SNI, HTTPS redirect), HTTPS upstreams with a
//! private CA, hot reload under load, and the admin listener's metrics.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::support::keys::TestKey;
use crate::support::pki::Pki;
use crate::support::proxy::{self, proxy};
use crate::support::{upstream, Req};

fn toml_path(path: &Path) -> String {
    serde_json::Value::from(path.to_string_lossy()).to_string()
}

/// Connects over TLS with SNI `name`, sends GET `path`, returns (ALPN protocol, status).
async fn tls_get(
    pki: &Pki,
    addr: std::net::SocketAddr,
    name: &str,
    alpn: &[&[u8]],
    path: &str,
) -> (String, u16) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    let tls = pki
        .connector(alpn)
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake");
    let protocol =
        String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or(b"")).into_owned();
    let io = TokioIo::new(tls);
    let uri = format!("https://{name}{path}");
    let status = if protocol == "h2" {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2");
        tokio::spawn(conn);
        let request = http::Request::get(uri)
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender
            .send_request(request)
            .await
            .expect("h2 response")
            .status()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
        tokio::spawn(conn);
        let request = http::Request::get(path)
            .header("host", name)
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender
            .send_request(request)
            .await
            .expect("h1 response")
            .status()
    };
    (protocol, status.as_u16())
}

const PUBLIC_ROUTES: &str = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";

#[tokio::test]
async fn tls_termination_alpn_and_sni() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("default", &["a.test"]);
    let (sni_cert, sni_key) = pki.issue("other", &["b.test"]);
    let key_file = TestKey::new("HS256");
    let up = upstream().run().await;
    let tls = format!(
        "[server]\ntls = {{ cert = {}, key = {}, sni = [{{ names = [\"b.test\"], cert = {}, key = {} }}] }}\n",
        toml_path(&cert),
        toml_path(&key),
        toml_path(&sni_cert),
        toml_path(&sni_key)
    );
    let p = proxy(&proxy::config(
        &up.url(),
        &key_file.jwt_toml(),
        &format!("{tls}{PUBLIC_ROUTES}"),
    ))
    .await;
    assert_eq!(
        tls_get(&pki, p.addr(), "a.test", &[b"h2", b"http/1.1"], "/x").await,
        ("h2".into(), 200)
    );
    assert_eq!(
        tls_get(&pki, p.addr(), "a.test", &[b"http/1.1"], "/x").await,
        ("http/1.1".into(), 200)
    );
    // The verifier accepts only a certificate for b.test: the SNI certificate was chosen.
    assert_eq!(
        tls_get(&pki, p.addr(), "b.test", &[b"http/1.1"], "/y")
            .await
            .1,
        200
    );
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn a_tls_connection_silent_after_its_handshake_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncReadExt as _;
    let pki = Pki::new();
    let (cert, key) = pki.issue("default", &["a.test"]);
    let key_file = TestKey::new("HS256");
    let up = upstream().run().await;
    let tls = format!(
        "[server]\ntls = {{ cert = {}, key = {} }}\nheader_read_timeout = \"300ms\"\nidle_timeout = \"1s\"\n",
        toml_path(&cert),
        toml_path(&key),
    );
    let p = proxy(&proxy::config(
        &up.url(),
        &key_file.jwt_toml(),
        &format!("{tls}{PUBLIC_ROUTES}"),
    ))
    .await;
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let tcp = TcpStream::connect(p.addr()).await.expect("connect");
        let server_name = ServerName::try_from("a.test".to_owned()).expect("server name");
        let mut tls = pki
            .connector(&[alpn])
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake");
        let silent = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        // An HTTP/2 server speaks first (SETTINGS); read until the connection ends.
        let closed = tokio::time::timeout(Duration::from_secs(6), async {
            while matches!(tls.read(&mut buf).await, Ok(1..)) {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "a silent TLS connection ({}) stayed open",
            String::from_utf8_lossy(alpn)
        );
        let waited = silent.elapsed();
        assert!(
            waited >= Duration::from_millis(800),
            "closed after {waited:?}: the idle timeout applies, not the header timeout"
        );
    }
}

#[tokio::test]
async fn plain_http_listener_redirects_to_https() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("default", &["a.test"]);
    let key_file = TestKey::new("HS256");
    let up = upstream().run().await;
    let text = proxy::config(
        &up.url(),
        &key_file.jwt_toml(),
        &format!(
            "[server]\ntls = {{ cert = {}, key = {} }}\n{PUBLIC_ROUTES}",
            toml_path(&cert),
            toml_path(&key)
        ),
    );
    let config = portcullis::Config::from_toml_str(&text).expect("config");
    let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let redirect = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let redirect_addr = redirect.local_addr().expect("addr");
    let listeners = portcullis::Listeners {
        main: vec![main],
        redirect_http: Some(redirect),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(portcullis::run_all(config, listeners, async move {
        let _ = rx.await;
    }));
    let resp = Req::get(&format!("http://{redirect_addr}/dashboard?x=1"))
        .header("Host", "a.test")
        .send()
        .await;
    assert_eq!(resp.status, 308);
    assert_eq!(resp.location(), Some("https://a.test:8080/dashboard?x=1"));
    // A Host the certificate is not for is never reflected into a redirect.
    for forged in [
        "evil.example",
        "a.test.evil.example",
        "x.a.test",
        "",
        "a.test@evil.example",
    ] {
        let resp = Req::get(&format!("http://{redirect_addr}/dashboard"))
            .header("Host", forged)
            .send()
            .await;
        assert_eq!(resp.status, 400, "Host {forged:?}");
        assert_eq!(resp.location(), None, "Host {forged:?}");
    }
    assert_eq!(up.requests(), 0);
    let _ = tx.send(());

    // server.hosts names the hosts instead of the certificate.
    let hosts = text.replace(
        "[server]\n",
        "[server]\nhosts = [\"app.example.com\", \"*.apps.example.com\"]\n",
    );
    let config = portcullis::Config::from_toml_str(&hosts).expect("config");
    let redirect = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let redirect_addr = redirect.local_addr().expect("addr");
    let listeners = portcullis::Listeners {
        main: vec![TcpListener::bind("127.0.0.1:0").await.expect("bind")],
        redirect_http: Some(redirect),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(portcullis::run_all(config, listeners, async move {
        let _ = rx.await;
    }));
    for (host, status) in [
        ("app.example.com", 308),
        ("APP.example.com:80", 308),
        ("one.apps.example.com", 308),
        ("a.test", 400),
        ("two.one.apps.example.com", 400),
    ] {
        let resp = Req::get(&format!("http://{redirect_addr}/"))
            .header("Host", host)
            .send()
            .await;
        assert_eq!(resp.status, status, "Host {host:?}");
    }
    let _ = tx.send(());
}

/// An HTTPS upstream with a certificate from `pki`.
async fn https_upstream(pki: &Pki) -> std::net::SocketAddr {
    https_upstream_with(pki, false).await
}

/// An HTTPS upstream; with `require_client_cert`, only clients with a certificate from `pki`.
async fn https_upstream_with(pki: &Pki, require_client_cert: bool) -> std::net::SocketAddr {
    let (cert, key) = pki.issue("upstream", &["localhost"]);
    let certs = rustls_pemfile::certs(&mut &*std::fs::read(cert).expect("read"))
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = rustls_pemfile::private_key(&mut &*std::fs::read(key).expect("read"))
        .expect("key")
        .expect("a key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.ca.der().to_vec()))
            .expect("add ca");
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"tls-ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstream_with_a_private_ca() {
    let pki = Pki::new();
    let upstream_addr = https_upstream(&pki).await;
    let key = TestKey::new("HS256");
    let url = format!("https://localhost:{}", upstream_addr.port());
    let trusted = format!(
        "[upstreams]\napp = {{ url = {}, ca_file = {} }}\n\n{}\n{PUBLIC_ROUTES}",
        serde_json::Value::from(url.as_str()),
        toml_path(&pki.ca_path()),
        key.jwt_toml()
    );
    let p = proxy(&trusted).await;
    let resp = Req::get(&p.url("/x")).send().await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "tls-ok"));

    // Without the private CA the upstream's certificate is refused: 502, never a plain fallback.
    let untrusted = proxy(&proxy::config(&url, &key.jwt_toml(), PUBLIC_ROUTES)).await;
    let resp = Req::get(&untrusted.url("/x")).send().await;
    assert_eq!(resp.status, 502);
}

#[tokio::test]
async fn mutual_tls_to_the_upstream() {
    let pki = Pki::new();
    let upstream_addr = https_upstream_with(&pki, true).await;
    let (client_cert, client_key) = pki.issue("client", &["portcullis.test"]);
    let key = TestKey::new("HS256");
    let url = serde_json::Value::from(format!("https://localhost:{}", upstream_addr.port()));
    let with_cert = format!(
        "[upstreams]\napp = {{ url = {url}, ca_file = {}, client_cert = {}, client_key = {} }}\n\n{}\n{PUBLIC_ROUTES}",
        toml_path(&pki.ca_path()),
        toml_path(&client_cert),
        toml_path(&client_key),
        key.jwt_toml()
    );
    let p = proxy(&with_cert).await;
    let resp = Req::get(&p.url("/x")).send().await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "tls-ok"));

    let without_cert = format!(
        "[upstreams]\napp = {{ url = {url}, ca_file = {} }}\n\n{}\n{PUBLIC_ROUTES}",
        toml_path(&pki.ca_path()),
        key.jwt_toml()
    );
    let p = proxy(&without_cert).await;
    assert_eq!(Req::get(&p.url("/x")).send().await.status, 502);
}

#[tokio::test]
async fn http2_to_a_plain_upstream_by_prior_knowledge() {
    let up = upstream().run().await;
    let key = TestKey::new("HS256");
    let text = format!(
        "[upstreams]\napp = {{ url = {}, http2 = true }}\n\n{}\n{PUBLIC_ROUTES}",
        serde_json::Value::from(up.url()),
        key.jwt_toml()
    );
    let p = proxy(&text).await;
    let resp = Req::get(&p.url("/h2?x=1")).send().await;
    assert_eq!(resp.status, 200);
    let seen = up.last().expect("forwarded");
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.path_and_query(), "/h2?x=1");
}

/// Scrapes `/metrics` and returns the sum of every sample of `name` (all label sets).
async fn metric(admin: std::net::SocketAddr, name: &str) -> f64 {
    let text = Req::get(&format!("http://{admin}/metrics"))
        .send()
        .await
        .text();
    let mut total = 0.0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let metric_name = series.split('{').next().unwrap_or(series);
        if metric_name == name {
            total += value;
        }
    }
    total
}

struct Reloadable {
    dir: tempfile::TempDir,
    admin: std::net::SocketAddr,
    main: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Reloadable {
    async fn start(text: &str) -> Reloadable {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, text).expect("write config");
        let config = portcullis::Config::load(&path).expect("valid config");
        let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (main_addr, admin_addr) = (
            main.local_addr().expect("addr"),
            admin.local_addr().expect("addr"),
        );
        let listeners = portcullis::Listeners {
            main: vec![main],
            admin: Some(admin),
            config_path: Some(path),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(portcullis::run_all(config, listeners, async move {
            let _ = rx.await;
        }));
        Reloadable {
            dir,
            admin: admin_addr,
            main: main_addr,
            _stop: tx,
        }
    }

    async fn reload(&self, text: &str) -> (u16, String) {
        std::fs::write(self.dir.path().join("portcullis.toml"), text).expect("write config");
        let resp = Req::post(&format!("http://{}/reload", self.admin))
            .send()
            .await;
        (resp.status, resp.text())
    }
}

#[tokio::test]
async fn reload_under_load_drops_nothing() {
    let key = TestKey::new("HS256");
    let (a, b) = (upstream().run().await, upstream().run().await);
    let config_for = |target: &str| {
        format!(
            "[upstreams]\na = {}\nb = {}\n\n{}\n[[routes]]\npath = \"/:path*\"\nupstream = \"{target}\"\n",
            serde_json::Value::from(a.url()),
            serde_json::Value::from(b.url()),
            key.jwt_toml()
        )
    };
    let proxy = Reloadable::start(&config_for("a")).await;
    let url = format!("http://{}/load", proxy.main);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, sent, failed) =
                (url.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                // Bounded: at most 20 000 requests per client, and it stops when told.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let resp = Req::get(&url).try_send().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !matches!(resp, Ok(ref r) if r.status == 200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let reloads_before = metric(proxy.admin, "portcullis_config_reloads_total").await;
    for round in 0..5 {
        let target = if round % 2 == 0 { "b" } else { "a" };
        let (status, text) = proxy.reload(&config_for(target)).await;
        assert_eq!(status, 200, "reload {round}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert!(
        sent.load(Ordering::Relaxed) > 50,
        "the load loop barely ran"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    // The fifth swap routed to `b`: new requests go there.
    let before = b.requests();
    assert_eq!(Req::get(&url).send().await.status, 200);
    assert_eq!(b.requests(), before + 1);
    let reloads_after = metric(proxy.admin, "portcullis_config_reloads_total").await;
    assert!(
        reloads_after >= reloads_before + 5.0,
        "{reloads_before} -> {reloads_after}"
    );
}

#[tokio::test]
async fn a_bad_config_on_reload_keeps_the_old_one() {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let good = proxy::config(&up.url(), &key.jwt_toml(), PUBLIC_ROUTES);
    let proxy = Reloadable::start(&good).await;
    let (status, text) = proxy
        .reload(&good.replace("upstream = \"app\"", "upstream = \"nope\""))
        .await;
    assert_eq!(status, 422);
    assert!(text.contains("routes[0].upstream"), "{text}");
    let (status, _) = proxy.reload("this is [not toml").await;
    assert_eq!(status, 422);
    assert_eq!(
        Req::get(&format!("http://{}/x", proxy.main))
            .send()
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn metrics_parse_and_move() {
    let key = TestKey::new("HS256");
    let up = upstream().run().await;
    let routes = "[[routes]]\npath = \"/private/:path*\"\nauth = \"required\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
    let proxy = Reloadable::start(&proxy::config(&up.url(), &key.jwt_toml(), routes)).await;
    let requests = metric(proxy.admin, "portcullis_requests_total").await;
    let denied = metric(proxy.admin, "portcullis_auth_decisions_total").await;
    for _ in 0..3 {
        Req::get(&format!("http://{}/public", proxy.main))
            .send()
            .await;
        Req::get(&format!("http://{}/private/x", proxy.main))
            .send()
            .await;
    }
    assert!(metric(proxy.admin, "portcullis_requests_total").await >= requests + 6.0);
    assert!(metric(proxy.admin, "portcullis_auth_decisions_total").await >= denied + 6.0);
    assert!(metric(proxy.admin, "portcullis_request_duration_seconds_count").await >= 6.0);
    // A request answered within one wake-up of its connection (a 401) is timed too: its
    // duration ends on the clock, not on the time the connection woke.
    let timed = metric(proxy.admin, "portcullis_request_duration_seconds_sum").await;
    for _ in 0..5 {
        Req::get(&format!("http://{}/private/x", proxy.main))
            .send()
            .await;
    }
    assert!(metric(proxy.admin, "portcullis_request_duration_seconds_sum").await > timed);

    // Every family has a # HELP line, and requests are labelled by the route's pattern.
    let text = Req::get(&format!("http://{}/metrics", proxy.admin))
        .send()
        .await
        .text();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() >= 5, "{text}");
    for family in families {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} "))),
            "{family} has no # HELP line:\n{text}"
        );
    }
    assert!(
        text.contains(
            r#"portcullis_requests_total{mode="proxy",route="/private/:path*",status="4xx"}"#
        ),
        "{text}"
    );
    assert!(!text.contains("rule=\""), "{text}");
    let health = Req::get(&format!("http://{}/healthz", proxy.admin))
        .send()
        .await;
    assert_eq!(health.status, 200);
    let ready = Req::get(&format!("http://{}/readyz", proxy.admin))
        .send()
        .await;
    assert_eq!(ready.status, 200);
}
