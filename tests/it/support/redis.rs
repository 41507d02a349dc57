//! A real `redis-server` (the Debian package) for the cluster tests: started by the test on a
//! free loopback port with its own directory, no persistence (`--save ''`), killed on drop.
//! Never a system service. [`RedisServer::kill`] and [`RedisServer::restart`] take it away
//! and bring it back on the same port, for outage tests; [`RedisServer::pause`] makes it slow.
//! [`RedisServer::assert_no_token`] reads everything Redis holds, and everything published
//! while a [`PubSubRecorder`] listened, for tokens in any form.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `(port, certificate chain, key)` of a TLS listener beside the plain one.
    tls: Option<(u16, PathBuf, PathBuf)>,
}

impl RedisServer {
    /// Starts `redis-server` and waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            tls: None,
        };
        server.spawn().await;
        server
    }

    /// Like [`RedisServer::start`], plus a TLS listener (`rediss://`) with this certificate
    /// chain and key; the plain port stays for the test's own inspection.
    pub async fn start_with_tls(cert: PathBuf, key: PathBuf) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
            tls: Some((free_port(), cert, key)),
        };
        server.spawn().await;
        server
    }

    /// `rediss://127.0.0.1:TLS_PORT/0`.
    pub fn tls_url(&self) -> String {
        let (port, _, _) = self.tls.as_ref().expect("started with TLS");
        format!("rediss://127.0.0.1:{port}/0")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some((port, cert, key)) = &self.tls {
            command
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("redis-server cannot be started ({err}): install the redis-server package (.ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .connection()
                .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "redis-server exited ({status}):\n{}",
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A direct connection, for inspecting what the proxies stored.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// Every key, and every value it holds read by its type (a string; a sorted set's
    /// members and scores; a hash's fields and values; a set's or a list's members), as
    /// Redis hands them to a client: never `DUMP`, whose compression would hide a token.
    pub fn contents(&self) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let mut conn = self.connection().expect("connect to redis-server");
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
        keys.into_iter()
            .map(|key| {
                let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).expect("TYPE");
                let values: Vec<Vec<u8>> = match kind.as_str() {
                    "string" => {
                        let value: Option<Vec<u8>> =
                            redis::cmd("GET").arg(&key).query(&mut conn).expect("GET");
                        value.into_iter().collect()
                    }
                    "zset" => redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query(&mut conn)
                        .expect("ZRANGE"),
                    "hash" => redis::cmd("HGETALL")
                        .arg(&key)
                        .query(&mut conn)
                        .expect("HGETALL"),
                    "set" => redis::cmd("SMEMBERS")
                        .arg(&key)
                        .query(&mut conn)
                        .expect("SMEMBERS"),
                    "list" => redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query(&mut conn)
                        .expect("LRANGE"),
                    // Gone since KEYS (expired).
                    "none" => Vec::new(),
                    other => panic!("a value of type {other} under {key:?}: read it here too"),
                };
                (key, values)
            })
            .collect()
    }

    /// Records every message published on any channel from now on, until dropped, across
    /// restarts of the server.
    pub fn record_pubsub(&self) -> PubSubRecorder {
        let recorder = PubSubRecorder {
            messages: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            subscribed: Arc::new(AtomicBool::new(false)),
        };
        let (messages, stop, subscribed) = (
            Arc::clone(&recorder.messages),
            Arc::clone(&recorder.stop),
            Arc::clone(&recorder.subscribed),
        );
        let url = self.url();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut conn) = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let mut pubsub = conn.as_pubsub();
                if pubsub.psubscribe("*").is_err()
                    || pubsub
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .is_err()
                {
                    continue;
                }
                subscribed.store(true, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    match pubsub.get_message() {
                        Ok(message) => messages.lock().expect("messages").push((
                            message.get_channel_name().as_bytes().to_vec(),
                            message.get_payload_bytes().to_vec(),
                        )),
                        Err(err) if err.is_timeout() => {}
                        Err(_) => break,
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !recorder.subscribed.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "could not subscribe to redis-server"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        recorder
    }

    /// `CLIENT PAUSE <ms> ALL`: every other client's commands wait that long (a slow Redis:
    /// a fork for BGSAVE, a blocked event loop). Returns at once.
    pub fn pause(&self, how_long: Duration) {
        let mut conn = self.connection().expect("connect to redis-server");
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(how_long.as_millis() as u64)
            .arg("ALL")
            .query(&mut conn)
            .expect("CLIENT PAUSE");
    }

    /// Kills the server (SIGKILL): no goodbye to its clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `(channel, payload)` of each message heard.
type Heard = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// Messages published on any channel while it lives (see [`RedisServer::record_pubsub`]).
pub struct PubSubRecorder {
    messages: Heard,
    stop: Arc<AtomicBool>,
    subscribed: Arc<AtomicBool>,
}

impl PubSubRecorder {
    /// `(channel, payload)` of every message so far.
    pub fn messages(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.messages.lock().expect("messages").clone()
    }
}

impl Drop for PubSubRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The forms a token could take in Redis: as it is, its signature alone (without which no
/// JWT is usable), and base64 / base64url of the whole.
fn forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let engines = [
        ("base64", base64::engine::general_purpose::STANDARD),
        (
            "base64 unpadded",
            base64::engine::general_purpose::STANDARD_NO_PAD,
        ),
        ("base64url", base64::engine::general_purpose::URL_SAFE),
        (
            "base64url unpadded",
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ),
    ];
    let mut forms = vec![("raw".to_owned(), secret.as_bytes().to_vec())];
    if let Some(signature) = secret
        .rsplit('.')
        .next()
        .filter(|s| s.len() >= 16 && *s != secret)
    {
        forms.push(("its signature".to_owned(), signature.as_bytes().to_vec()));
    }
    for (name, engine) in engines {
        forms.push((name.to_owned(), engine.encode(secret).into_bytes()));
    }
    forms
}

/// Where any of `secrets`, in any of its [`forms`], occurs in `places` (name, bytes).
pub fn find_secrets(places: &[(String, Vec<u8>)], secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        for (form, needle) in forms(secret) {
            for (place, hay) in places {
                if hay.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    found.push(format!("a token ({form}) in {place}"));
                }
            }
        }
    }
    found
}

impl RedisServer {
    /// Everything Redis holds (keys and values by type) and everything `recorder` heard,
    /// as places to search.
    pub fn places(&self, recorder: Option<&PubSubRecorder>) -> Vec<(String, Vec<u8>)> {
        let mut places = Vec::new();
        for (key, values) in self.contents() {
            let name = String::from_utf8_lossy(&key).into_owned();
            places.push((format!("the key {name}"), key));
            for value in values {
                places.push((format!("a value under {name}"), value));
            }
        }
        for (channel, payload) in recorder.map(PubSubRecorder::messages).unwrap_or_default() {
            let name = String::from_utf8_lossy(&channel).into_owned();
            places.push((format!("a message on {name}"), payload));
        }
        places
    }

    /// Asserts that Redis holds something, and that no key, value or recorded message
    /// contains any of `secrets` in any form.
    pub fn assert_no_token(&self, recorder: Option<&PubSubRecorder>, secrets: &[String]) {
        assert!(!secrets.is_empty(), "no tokens to look for");
        let places = self.places(recorder);
        assert!(
            places.iter().any(|(name, _)| name.starts_with("a value")),
            "the instances stored nothing in Redis"
        );
        let found = find_secrets(&places, secrets);
        assert!(found.is_empty(), "Redis holds tokens: {found:#?}");
    }
}
