//! Real ingresses in front of the test upstream: nginx (`auth_request`) and Caddy, started by
//! the test with the documented recipe from `examples/ingress/` (so the recipe cannot rot),
//! each on a free loopback port with its own config, pid, log, temp and data paths in a
//! temporary directory. Never a system service; the process is killed when the handle drops.
//!
//! The recipes serve `app.example.com` (and refuse every other host): requests name it in
//! `Host`, as a browser would. [`Ingress::nginx_sites`] and [`Ingress::caddy_sites`] serve
//! more sites from copies of the recipe's site, to exercise host rules through the ingress.
//!
//! ```ignore
//! let nginx = Ingress::nginx(&Addresses { main, forward_auth, site }).await;
//! let resp = nginx.get("/dashboard").send().await;
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;
use super::Req;

/// The site every recipe serves.
pub const SITE: &str = "app.example.com";

/// Where the recipe's placeholders point: Portcullis's two listeners and the site.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    /// `server.listen` (the recipes' `127.0.0.1:8080`).
    pub main: SocketAddr,
    /// `forward_auth.listen` (`127.0.0.1:9091`).
    pub forward_auth: SocketAddr,
    /// The site (`127.0.0.1:3000`).
    pub site: SocketAddr,
}

/// A documented example file, as shipped.
pub fn recipe(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The recipe's example addresses replaced by the test's, in one pass over the recipe: a
/// replacement is never read again, so a test port such as 30001 cannot be taken for the
/// example `127.0.0.1:3000` followed by a digit.
fn wired(text: &str, to: &Addresses) -> String {
    let examples = [
        ("127.0.0.1:8080", to.main),
        ("127.0.0.1:9091", to.forward_auth),
        ("127.0.0.1:3000", to.site),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for (example, address) in examples {
            let ends_there = rest
                .get(example.len()..)
                .is_some_and(|after| !after.starts_with(|c: char| c.is_ascii_digit()));
            if rest.starts_with(example) && ends_there {
                out.push_str(&address.to_string());
                rest = &rest[example.len()..];
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `text` with the block that starts at `opening` (a line of its own) copied once for each of
/// `hosts`, its `SITE` replaced by that host; the block ends with the first `}` line at the
/// start of a line after it.
fn with_copies(text: &str, opening: &str, hosts: &[&str]) -> String {
    let start = text
        .find(opening)
        .unwrap_or_else(|| panic!("{opening:?} not in the recipe"));
    let end = start
        + text[start..]
            .find("\n}\n")
            .unwrap_or_else(|| panic!("no end to the block at {opening:?}"))
        + 3;
    let block = &text[start..end];
    let mut out = text.to_owned();
    for host in hosts {
        out.push('\n');
        out.push_str(&block.replace(SITE, host));
    }
    out
}

/// A running ingress. Dropping it kills the process.
pub struct Ingress {
    name: &'static str,
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Ingress {
    /// nginx with `examples/ingress/nginx.conf` as its configuration, as shipped.
    pub async fn nginx(to: &Addresses) -> Ingress {
        Ingress::nginx_sites(to, &[]).await
    }

    /// nginx with `examples/ingress/nginx.conf`, and a copy of its site's server block for
    /// each of `more` (another `server_name`).
    pub async fn nginx_sites(to: &Addresses, more: &[&str]) -> Ingress {
        let opening = format!("server {{\n    listen 80;\n    server_name {SITE};\n");
        let site = with_copies(&wired(&recipe("ingress/nginx.conf"), to), &opening, more);
        Ingress::start("nginx", |dir, port| {
            let site = site.replace("listen 80", &format!("listen 127.0.0.1:{port}"));
            std::fs::write(dir.join("site.conf"), site).expect("write site.conf");
            for temp in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(dir.join(temp)).expect("temp dir");
            }
            let d = dir.display();
            let conf = format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
                 include {d}/site.conf;\n}}\n"
            );
            std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
            let mut command = Command::new("nginx");
            command
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                // One process, in the foreground: killing it stops nginx entirely.
                .args(["-g", "daemon off; master_process off;"]);
            (command, dir.join("error.log"))
        })
        .await
    }

    /// Caddy with `examples/ingress/Caddyfile`, its site served over plain HTTP on loopback.
    pub async fn caddy(to: &Addresses) -> Ingress {
        Ingress::caddy_sites(to, &[]).await
    }

    /// Caddy with `examples/ingress/Caddyfile`, and a copy of its site for each of `more`.
    pub async fn caddy_sites(to: &Addresses, more: &[&str]) -> Ingress {
        let opening = format!("\n{SITE} {{\n");
        let site = with_copies(&wired(&recipe("ingress/Caddyfile"), to), &opening, more);
        Ingress::start("caddy", |dir, port| {
            // Each site over plain HTTP on the test's port: `http://host:port`.
            let site = site.replace(
                &format!("\n{SITE} {{"),
                &format!("\nhttp://{SITE}:{port} {{"),
            );
            let site = more.iter().fold(site, |site, host| {
                site.replace(
                    &format!("\n{host} {{"),
                    &format!("\nhttp://{host}:{port} {{"),
                )
            });
            assert!(site.contains(&format!("http://{SITE}:{port} {{")));
            // No admin endpoint, no certificates, loopback only.
            let global = "{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n";
            std::fs::write(dir.join("Caddyfile"), format!("{global}\n{site}")).expect("write");
            for sub in ["home", "data", "config"] {
                std::fs::create_dir_all(dir.join(sub)).expect("caddy dir");
            }
            let mut command = Command::new("caddy");
            command
                .arg("run")
                .arg("--config")
                .arg(dir.join("Caddyfile"))
                .args(["--adapter", "caddyfile"])
                .env("HOME", dir.join("home"))
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"));
            (command, dir.join("output.log"))
        })
        .await
    }

    /// Writes the configuration for a free port, starts the process and waits until it
    /// accepts connections. A port taken between the check and the bind (another session's
    /// test) is retried with another.
    async fn start(
        name: &'static str,
        configure: impl Fn(&Path, u16) -> (Command, PathBuf),
    ) -> Ingress {
        let dir = tempfile::Builder::new()
            .prefix(&format!("portcullis-{name}-"))
            .tempdir()
            .expect("temp dir");
        let mut failures = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let (mut command, log) = configure(dir.path(), port);
            let output = std::fs::File::create(dir.path().join("output.log")).expect("log file");
            let mut child = command
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("log file"))
                .stderr(output)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name} (is it installed?): {e}"));
            match ready(&mut child, port).await {
                Ok(()) => {
                    return Ingress {
                        name,
                        child,
                        port,
                        dir,
                        log,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push_str(&format!(
                        "port {port}: {why}\n{}\n",
                        logs(name, dir.path(), &log)
                    ));
                }
            }
        }
        panic!("{name} did not start:\n{failures}");
    }

    /// The process's output and error log, for failure messages.
    pub fn logs(&self) -> String {
        logs(self.name, self.dir.path(), &self.log)
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `host:PORT`, the `Host` a browser sends for `host` on this ingress.
    pub fn host(&self, host: &str) -> String {
        format!("{host}:{}", self.port)
    }

    /// The site's origin as a browser writes it: `http://app.example.com:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.host(SITE))
    }

    /// A request for `path` on the site (`Host: app.example.com:PORT`).
    pub fn req(&self, method: &str, path: &str) -> Req {
        self.req_for(SITE, method, path)
    }

    /// A request for `path` on the site `host` serves (`Host: host:PORT`).
    pub fn req_for(&self, host: &str, method: &str, path: &str) -> Req {
        Req::new(method, &self.url(path)).header("host", &self.host(host))
    }

    pub fn get(&self, path: &str) -> Req {
        self.req("GET", path)
    }

    pub fn post(&self, path: &str) -> Req {
        self.req("POST", path)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for Ingress {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most 15 s) until `port` accepts connections; `Err` if the process exits first.
async fn ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("not listening after 15 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn logs(name: &str, dir: &Path, log: &Path) -> String {
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    format!(
        "--- {name} output\n{}\n--- {name} log\n{}",
        read(&dir.join("output.log")),
        read(log)
    )
}

#[test]
fn wiring_a_recipe_never_rewrites_a_port_it_just_wrote() {
    let to = Addresses {
        main: "127.0.0.1:30001".parse().expect("an address"),
        forward_auth: "127.0.0.1:30002".parse().expect("an address"),
        site: "127.0.0.1:30003".parse().expect("an address"),
    };
    assert_eq!(
        wired(
            "site 127.0.0.1:3000; main 127.0.0.1:8080; auth 127.0.0.1:9091/x; other 127.0.0.1:30000",
            &to
        ),
        "site 127.0.0.1:30003; main 127.0.0.1:30001; auth 127.0.0.1:30002/x; other 127.0.0.1:30000"
    );
}
