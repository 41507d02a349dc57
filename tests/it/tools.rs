//! The operator's tools: `explain`, `check` as a linter, `demo`, and the admin `/explain`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::keys::{claims, TestKey};
use crate::support::{CookieJar, Req};

fn portcullis() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    for (name, _) in std::env::vars() {
        if name.starts_with("PORTCULLIS_") {
            command.env_remove(name);
        }
    }
    command
}

fn write_config(dir: &Path, key: &TestKey, extra: &str) -> std::path::PathBuf {
    let path = dir.join("portcullis.toml");
    let text = format!(
        "[upstreams]\napp = \"http://127.0.0.1:9\"\n\n{}\n{extra}\n[[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nheaders = {{ \"X-User-Id\" = \"sub\" }}\nupstream = \"app\"\n\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n",
        key.jwt_toml()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn run(command: &mut Command) -> (i32, String) {
    let output = command.output().expect("run portcullis");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn explain_shows_every_step_and_never_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::new("HS256");
    let config = write_config(dir.path(), &key, "");
    let token = key.sign(claims("alice", 300));
    let (code, text) = run(portcullis()
        .args(["explain", "--config"])
        .arg(&config)
        .args(["--cookie", &format!("access_token={token}")])
        .args([
            "-H",
            "X-User-Id: admin",
            "GET",
            "/public/../dashboard?tab=1",
        ]));
    assert_eq!(code, 0, "{text}");
    for expected in [
        "normalized  /dashboard",
        "routes[0] /dashboard/:path* (required): match",
        "signature",
        "action      forward to upstream \"app\" as /dashboard?tab=1",
        "inject      Authorization: Bearer",
        "inject      x-user-id: <claim sub>",
        "strip       x-user-id (client-supplied identity header)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains(&token),
        "the token leaked into explain's output"
    );

    let forged = format!("{}x", &token[..token.len() - 1]);
    let (_, text) = run(portcullis()
        .args(["explain", "--json", "--config"])
        .arg(&config)
        .args([
            "--cookie",
            &format!("access_token={forged}"),
            "GET",
            "/dashboard",
        ]));
    let json: Value = serde_json::from_str(&text).expect("json output");
    assert_eq!(json["status"], 401);
    assert_eq!(json["token"]["valid"], false);

    let (_, text) = run(portcullis()
        .args(["explain", "--json", "--config"])
        .arg(&config)
        .args(["GET", "/dashboard%2fx"]));
    let json: Value = serde_json::from_str(&text).expect("json output");
    assert_eq!(json["status"], 400);
}

#[test]
fn check_strict_fails_on_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::new("HS256");
    let config = write_config(
        dir.path(),
        &key,
        "[server]\ntrusted_proxies = [\"0.0.0.0/0\"]\n",
    );
    let (code, text) = run(portcullis().args(["check", "--config"]).arg(&config));
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: server.trusted_proxies[0]"),
        "{text}"
    );
    let (code, _) = run(portcullis()
        .args(["check", "--strict", "--config"])
        .arg(&config));
    assert_eq!(code, 1);
}

#[test]
fn check_and_start_refuse_unusable_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::new("HS256");
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("write");
    std::fs::write(dir.path().join("key.pem"), "not a key").expect("write");
    std::fs::write(dir.path().join("ca.pem"), "not a CA").expect("write");
    let config = write_config(
        dir.path(),
        &key,
        "[server]
tls = { cert = \"cert.pem\", key = \"key.pem\" }
",
    );
    let (code, text) = run(portcullis().args(["check", "--config"]).arg(&config));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("server.tls:"), "{text}");
    // Starting refuses it too, with the reason.
    let (code, text) = run(portcullis()
        .args(["run", "--config"])
        .arg(&config)
        .env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:0"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("certificate"), "{text}");

    let text = std::fs::read_to_string(&config)
        .expect("read")
        .replace(
            "app = \"http://127.0.0.1:9\"",
            "app = { url = \"https://127.0.0.1:9\", ca_file = \"ca.pem\" }",
        )
        .replace(
            "[server]\ntls = { cert = \"cert.pem\", key = \"key.pem\" }\n",
            "",
        );
    std::fs::write(&config, text).expect("write");
    let (code, text) = run(portcullis().args(["check", "--config"]).arg(&config));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("upstreams.app:"), "{text}");
}

#[test]
fn the_demo_config_passes_check() {
    let (code, text) = run(portcullis().args(["demo", "--print-config"]));
    assert_eq!(code, 0, "{text}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, text).expect("write");
    let (code, text) = run(portcullis().args(["check", "--config"]).arg(&path));
    assert_eq!((code, text.trim()), (0, "ok"));
}

/// Kills the child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_demo_signs_in_and_calls_the_api() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let mut child = Child(
        portcullis()
            .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    // Read the banner's first line, then keep draining stdout so the demo never writes to a
    // closed pipe.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let first = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the demo printed nothing")
        .expect("reader")
        .expect("a line")
        .expect("read");
    assert!(first.contains("Portcullis demo"), "{first}");
    let base = format!("http://127.0.0.1:{port}");
    // The banner is printed once the proxy is bound, so it answers now.
    let page = Req::get(&format!("{base}/dashboard"))
        .header("Accept", "text/html")
        .send()
        .await;
    assert_eq!(page.status, 302);
    let mut jar = CookieJar::new();
    let login = Req::post(&format!("{base}/login"))
        .form(&[("email", "demo@portcullis.dev"), ("password", "portcullis")])
        .send()
        .await;
    assert_eq!(login.status, 303);
    jar.apply(&login);
    let api = Req::get(&format!("{base}/api/items"))
        .jar(&jar)
        .send()
        .await;
    assert_eq!(api.status, 200, "{}", api.text());
    assert_eq!(api.json()["user"], "demo@portcullis.dev");
    let admin = Req::get(&format!("{base}/admin")).jar(&jar).send().await;
    assert_eq!(admin.status, 403);
}

#[tokio::test]
async fn admin_explain_is_off_unless_enabled() {
    use tokio::net::TcpListener;
    let key = TestKey::new("HS256");
    for enabled in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(
            dir.path(),
            &key,
            &format!("[admin]\nlisten = \"127.0.0.1:0\"\nexplain = {enabled}\n"),
        );
        let config = portcullis::Config::load(&path).expect("config");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin_addr = admin.local_addr().expect("addr");
        let listeners = portcullis::Listeners {
            main: vec![TcpListener::bind("127.0.0.1:0").await.expect("bind")],
            admin: Some(admin),
            ..Default::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(portcullis::run_all(config, listeners, async move {
            let _ = rx.await;
        }));
        let resp = Req::get(&format!(
            "http://{admin_addr}/explain?method=GET&url=%2Fdashboard"
        ))
        .send()
        .await;
        if enabled {
            assert_eq!(resp.status, 200);
            assert_eq!(resp.json()["status"], 401);
        } else {
            assert_eq!(resp.status, 404);
        }
        let _ = tx.send(());
    }
}

/// Runs the binary at the most verbose log level through login, a guarded request, a forged
/// token, a refresh and logout, then checks no token, cookie value or password was logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_logs() {
    use crate::support::{backend, upstream};
    const PASSWORD: &str = "hunter2-correct-horse";
    let key = TestKey::new("HS256");
    let backend = backend(&key)
        .user("alice@example.com", PASSWORD)
        .access_ttl(300)
        .run()
        .await;
    let up = upstream().run().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("portcullis.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"trace\"\n[upstreams]\napp = {}\n{}\n[session]\nrefresh_ahead = \"0s\"\n{}\n[[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nupstream = \"app\"\n\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n",
        serde_json::Value::from(up.url()),
        backend.backend_toml(),
        key.jwt_toml()
    );
    std::fs::write(&path, text).expect("write config");
    let mut child = Child(
        portcullis()
            .args(["run", "--config"])
            .arg(&path)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start portcullis"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let collector = std::thread::spawn(move || {
        let mut all = String::new();
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening") {
                if let Some(tx) = addr_tx.take() {
                    let address = line
                        .split("address=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next());
                    let _ = tx.send(address.unwrap_or_default().to_owned());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the proxy's address");
    let base = format!("http://{addr}");

    let login = Req::post(&format!("{base}/login"))
        .form(&[("email", "alice@example.com"), ("password", PASSWORD)])
        .send()
        .await;
    assert_eq!(login.status, 303);
    let mut jar = CookieJar::new();
    jar.apply(&login);
    let access = jar.get("access_token").expect("access cookie").to_owned();
    let refresh = jar.get("refresh_token").expect("refresh cookie").to_owned();
    assert_eq!(
        Req::get(&format!("{base}/dashboard"))
            .jar(&jar)
            .send()
            .await
            .status,
        200
    );
    let forged = format!("{}AAAA", &access[..access.len() - 4]);
    Req::get(&format!("{base}/dashboard"))
        .cookie(&format!("access_token={forged}"))
        .send()
        .await;
    let expired = backend.mint_access("alice@example.com", -120);
    let renewed = Req::get(&format!("{base}/dashboard"))
        .cookie(&format!("access_token={expired}; refresh_token={refresh}"))
        .send()
        .await;
    assert_eq!(renewed.status, 200);
    Req::post(&format!("{base}/logout")).jar(&jar).send().await;
    drop(child);
    let logs = collector.join().expect("log collector");
    assert!(
        logs.contains("login succeeded"),
        "the logs were not captured:\n{logs}"
    );
    eprintln!("scanned {} log lines at trace level", logs.lines().count());
    for (what, secret) in [
        ("the password", PASSWORD),
        ("the access token", access.as_str()),
        ("the refresh token", refresh.as_str()),
        ("the forged token", forged.as_str()),
        ("the expired token", expired.as_str()),
    ] {
        // A JWT's first segment is shared by every token of a key; the signature is unique.
        let unique = secret.rsplit('.').next().unwrap_or(secret);
        assert!(!logs.contains(unique), "{what} was logged");
    }
}

/// `explain`'s decisions for a table of requests, through the library API.
#[test]
fn explain_decision_table() {
    let key = TestKey::new("HS256");
    let text = format!(
        "[upstreams]\napp = \"http://127.0.0.1:9\"\n[backend]\nlogin = \"http://127.0.0.1:9/login\"\nrefresh = \"http://127.0.0.1:9/refresh\"\n{}\n\
         [[routes]]\npath = \"/admin/:path*\"\nauth = \"required\"\nclaims = {{ role = \"admin\" }}\nupstream = \"app\"\n\
         [[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nupstream = \"app\"\n\
         [[routes]]\npath = \"/login\"\nauth = \"guest\"\nupstream = \"app\"\n\
         [[routes]]\npath = \"/public/:path*\"\nupstream = \"app\"\n",
        key.jwt_toml()
    );
    let config = portcullis::Config::from_toml_str(&text).expect("config");
    let now = crate::support::keys::now();
    let valid = format!("access_token={}", key.sign(claims("alice", 300)));
    let expired = format!(
        "access_token={}; refresh_token=r",
        key.sign(serde_json::json!({ "sub": "alice", "exp": now - 600, "iat": now - 900 }))
    );
    let html = ["Accept: text/html".to_owned()];
    let cross_site = ["Origin: https://evil.example".to_owned()];
    let same_origin = ["Sec-Fetch-Site: same-origin".to_owned()];
    // (method, url, cookies, headers, status, a phrase of the action)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a [String],
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/dashboard%2fx", None, &[], 400, "refuse: 400"),
        ("GET", "/nowhere", None, &[], 404, "no rule matches"),
        (
            "GET",
            "/public/x",
            None,
            &[],
            200,
            "forward to upstream \"app\" as /public/x",
        ),
        (
            "GET",
            "/dashboard?tab=2",
            None,
            &html,
            302,
            "302 to /login?next=%2Fdashboard%3Ftab%3D2",
        ),
        ("GET", "/dashboard", None, &[], 401, "401"),
        (
            "GET",
            "/dashboard",
            Some(valid.as_str()),
            &[],
            200,
            "forward",
        ),
        (
            "GET",
            "/dashboard",
            Some(expired.as_str()),
            &[],
            200,
            "renew the session",
        ),
        (
            "GET",
            "/admin/users",
            Some(valid.as_str()),
            &[],
            403,
            "claims not satisfied: role",
        ),
        (
            "GET",
            "/login",
            Some(valid.as_str()),
            &[],
            302,
            "signed-in user",
        ),
        ("POST", "/login", None, &[], 200, "own endpoint login"),
        // The CSRF guard: unsafe, cookie-authenticated, from another origin.
        (
            "POST",
            "/dashboard/save",
            Some(valid.as_str()),
            &cross_site,
            403,
            "csrf",
        ),
        (
            "DELETE",
            "/dashboard/save",
            Some(valid.as_str()),
            &same_origin,
            200,
            "forward",
        ),
        (
            "GET",
            "/dashboard",
            Some(valid.as_str()),
            &cross_site,
            200,
            "forward",
        ),
    ];
    for (method, url, cookies, headers, status, action) in cases {
        let request = portcullis::explain::Request {
            method,
            url,
            cookies,
            headers,
            forward_auth: false,
        };
        let explanation =
            portcullis::explain::explain(&config, &request, now as u64).expect("explain");
        assert_eq!(
            explanation.status, status,
            "{method} {url}: {}",
            explanation.action
        );
        assert!(
            explanation.action.contains(action),
            "{method} {url}: {}",
            explanation.action
        );
        let rendered = portcullis::explain::render(&explanation);
        if let Some(cookies) = cookies {
            let token = cookies
                .split('=')
                .nth(1)
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default();
            assert!(
                !rendered.contains(token),
                "{method} {url}: the token was printed"
            );
        }
    }
}
