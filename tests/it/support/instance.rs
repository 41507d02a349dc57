//! Portcullis as ops run it: the built binary (`CARGO_BIN_EXE_portcullis`) in its own process,
//! with its own configuration file, listener and admin listener on free loopback ports.
//! Killed on drop. The cluster tests start several to stand for replicas behind a load
//! balancer.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::client::Req;
use super::redis::free_port;

pub struct Instance {
    port: u16,
    admin: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Instance {
    /// Starts the binary with `toml` (which must have no `[server]` or `[admin]` section:
    /// those are added here) and waits until `/readyz` answers 200.
    pub async fn start(toml: &str) -> Instance {
        let dir = tempfile::tempdir().expect("a temporary directory for an instance");
        let (port, admin) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nexplain = true\n\n[log]\nlevel = \"info\"\n\n{toml}"
        );
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, config).expect("write the instance's configuration");
        let log = std::fs::File::create(dir.path().join("portcullis.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("PORTCULLIS_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the portcullis binary");
        let mut instance = Instance {
            port,
            admin,
            dir,
            child,
        };
        instance.wait_ready().await;
        instance
    }

    /// Starts `N` instances with `toml` (which has `[cluster]`), and waits until each
    /// reaches Redis.
    pub async fn start_connected<const N: usize>(toml: &str) -> [Instance; N] {
        let mut started = Vec::with_capacity(N);
        for _ in 0..N {
            started.push(Instance::start(toml).await);
        }
        for instance in &started {
            instance.wait_connected(true).await;
        }
        started
            .try_into()
            .unwrap_or_else(|_| unreachable!("exactly N were started"))
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = Req::get(&self.admin_url("/readyz"))
                .timeout(Duration::from_secs(1))
                .try_send()
                .await
                .is_ok_and(|r| r.status == 200);
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("portcullis exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "portcullis was not ready within 10 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT` + `path` on the main listener.
    /// The instance's proxy listener.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The same on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// The instance's configuration file.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    /// Everything the instance logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("portcullis.log")).unwrap_or_default()
    }

    /// The value of an unlabelled metric on `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = Req::get(&self.admin_url("/metrics")).send().await.text();
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
    }

    /// Waits (10 s at most) until `portcullis_cluster_connected` is `up`.
    pub async fn wait_connected(&self, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        self.wait_metric(
            "portcullis_cluster_connected",
            want,
            Duration::from_secs(10),
        )
        .await;
    }

    /// Waits (`within` at most) until the unlabelled metric `name` reads `want`.
    pub async fn wait_metric(&self, name: &str, want: f64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.metric(name).await != Some(want) {
            assert!(
                Instant::now() < deadline,
                "{name} did not become {want} within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /sessions/revoke {"sub": sub}` on the admin listener; its JSON answer.
    pub async fn revoke_subject(&self, sub: &str) -> serde_json::Value {
        let resp = Req::post(&self.admin_url("/sessions/revoke"))
            .json(serde_json::json!({ "sub": sub }))
            .send()
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()
    }
}
