//! Portcullis itself, started in-process with `portcullis::run(config, listener, shutdown)` on
//! `127.0.0.1:0`, from the same TOML a user would write.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running proxy. Dropping it shuts it down.
pub struct Proxy {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), portcullis::Error>>>,
}

/// Starts Portcullis with `toml` (its `server.listen` is ignored: the test binds the socket).
pub async fn proxy(toml: &str) -> Proxy {
    start(parse(toml)).await
}

/// Starts Portcullis with an already validated configuration.
pub async fn start(config: portcullis::Config) -> Proxy {
    start_on(config, bind().await)
}

/// Starts Portcullis with `toml` on a socket the test bound itself (say, a dual-stack `[::]:0`).
pub fn proxy_on(toml: &str, listener: TcpListener) -> Proxy {
    start_on(parse(toml), listener)
}

fn start_on(config: portcullis::Config, listener: TcpListener) -> Proxy {
    launch(
        config,
        portcullis::Listeners {
            main: vec![listener],
            ..Default::default()
        },
    )
}

/// Starts Portcullis with `toml` and an admin listener (`/healthz`, `/readyz`); returns the
/// proxy and the admin listener's address.
pub async fn proxy_with_admin(toml: &str) -> (Proxy, SocketAddr) {
    let admin = bind().await;
    let admin_addr = admin.local_addr().expect("admin address");
    let listeners = portcullis::Listeners {
        main: vec![bind().await],
        admin: Some(admin),
        ..Default::default()
    };
    (launch(parse(toml), listeners), admin_addr)
}

/// The listeners of [`proxy_with_forward_auth`] besides `server.listen`.
#[derive(Clone, Copy, Debug)]
pub struct Doors {
    pub forward_auth: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts Portcullis with `toml`, a forward-auth listener and an admin listener; returns the
/// proxy (its `addr` is `server.listen`) and the other two addresses.
pub async fn proxy_with_forward_auth(toml: &str) -> (Proxy, Doors) {
    let (forward_auth, admin) = (bind().await, bind().await);
    let doors = Doors {
        forward_auth: forward_auth.local_addr().expect("forward-auth address"),
        admin: admin.local_addr().expect("admin address"),
    };
    let listeners = portcullis::Listeners {
        main: vec![bind().await],
        forward_auth: Some(forward_auth),
        admin: Some(admin),
        ..Default::default()
    };
    (launch(parse(toml), listeners), doors)
}

fn parse(toml: &str) -> portcullis::Config {
    match portcullis::Config::from_toml_str(toml) {
        Ok(config) => config,
        Err(problems) => panic!("test config is invalid:\n{problems}\n---\n{toml}"),
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Runs Portcullis on `listeners` (the first main one is the proxy's address).
fn launch(config: portcullis::Config, listeners: portcullis::Listeners) -> Proxy {
    let addr = listeners.main[0].local_addr().expect("proxy address");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(portcullis::run_all(config, listeners, async move {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl Proxy {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits until the proxy has drained and stopped.
    pub async fn stop(mut self) -> Result<(), portcullis::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("proxy task panicked"),
            None => Ok(()),
        }
    }

    /// Signals shutdown without waiting; returns the task to await.
    pub fn begin_stop(&mut self) -> JoinHandle<Result<(), portcullis::Error>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("proxy already stopped")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A config with one upstream `app` at `upstream_url`, the given JWT section and routes.
/// `extra` is appended verbatim (more sections or `[[routes]]`).
pub fn config(upstream_url: &str, jwt_toml: &str, extra: &str) -> String {
    format!(
        "[upstreams]\napp = {upstream}\n\n{jwt_toml}\n{extra}\n",
        upstream = serde_json::Value::from(upstream_url),
    )
}
